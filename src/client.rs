//! One attempt: send a prepared body, read the answer, and turn every outcome into a `Reply`
//! or a classified `Failure`. Every attempt has connect, read and total timeouts.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::cli::ApiStyle;
use crate::flow::Flow;
use crate::request::stream::{Assembler, Progress, StreamError};
use crate::request::{self, Reply};
use crate::retry::{self, ErrorKind, Failure};
use crate::settings::ApiKey;

/// The longest we wait for a TCP (and TLS) connection, whatever `--timeout` says.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection pool and everything an attempt needs, shared by all workers.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    api: ApiStyle,
    /// Told about exhausted `x-ratelimit-remaining-*` headers.
    flow: std::sync::Arc<Flow>,
    /// Parsed once: a string URL would be parsed again on every request.
    url: reqwest::Url,
    /// The `Authorization` header, marked sensitive so that it is never printed.
    auth: Option<HeaderValue>,
    /// Whether the endpoint is OpenAI's own, where `insufficient_quota` means billing.
    openai: bool,
}

impl Client {
    pub fn new(
        api: ApiStyle,
        base_url: &str,
        key: Option<&ApiKey>,
        timeout: Duration,
        concurrency: usize,
        flow: std::sync::Arc<Flow>,
    ) -> anyhow::Result<Client> {
        // Any provider works; installing fails only when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("batchgen/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .read_timeout(timeout)
            .timeout(timeout)
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let auth = match key {
            Some(k) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                        anyhow::anyhow!("the API key holds characters not allowed in a header")
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Client {
            http,
            api,
            flow,
            url: reqwest::Url::parse(&format!(
                "{}{}",
                base_url.trim_end_matches('/'),
                request::path(api)
            ))
            .map_err(|e| anyhow::anyhow!("--base-url: not a valid URL: {e}"))?,
            auth,
            openai: base_url.contains("api.openai.com"),
        })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Sends one attempt, streamed or not.
    pub async fn attempt(&self, body: &Bytes, stream: bool) -> Result<Reply, Failure> {
        let body_len = body.len();
        let body = if stream {
            request::stream_body(self.api, body)
        } else {
            body.clone()
        };
        let mut req = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if stream {
            req = req.header(ACCEPT, "text/event-stream");
            if self.api == ApiStyle::Dashscope {
                req = req.header("X-DashScope-SSE", "enable");
            }
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = req.send().await.map_err(transport_failure)?;
        let status = resp.status().as_u16();
        self.note_rate_headers(resp.headers(), body_len);
        let request_id = resp
            .headers()
            .get("x-request-id")
            .or_else(|| resp.headers().get("x-dashscope-request-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("text/event-stream"));
        let mut reply = if (200..300).contains(&status) && is_sse {
            self.read_stream(resp).await?
        } else {
            self.read_whole(resp, status).await?
        };
        if reply.request_id.is_none() {
            reply.request_id = request_id;
        }
        Ok(reply)
    }

    /// OpenAI's rate-limit headers (DashScope sends none): see [`rate_header_pause`].
    fn note_rate_headers(&self, headers: &HeaderMap, body_len: usize) {
        if let Some(d) = rate_header_pause(headers, self.flow.estimate(body_len)) {
            self.flow.pause_for(d);
        }
    }

    /// Reads a whole answer: an error answer is classified, a 200 parsed.
    async fn read_whole(&self, resp: reqwest::Response, status: u16) -> Result<Reply, Failure> {
        // Error answers need their headers (Retry-After, x-should-retry); a success does not,
        // so the per-request path skips the copy.
        let headers = if (200..300).contains(&status) {
            HeaderMap::new()
        } else {
            resp.headers().clone()
        };
        let bytes = resp.bytes().await.map_err(|e| {
            let mut f = body_failure(&e);
            f.http_status = Some(status);
            f
        })?;
        if !(200..300).contains(&status) {
            // An error answer is an answer: nothing was lost, so nothing is counted as billed.
            return Err(retry::classify(status, &headers, &bytes, self.openai));
        }
        request::parse(self.api, &bytes).map_err(|why| {
            let is_error_body =
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| {
                    v.get("error").is_some_and(|e| !e.is_null())
                        || request::native::is_error_body(&v)
                });
            let mut f = if is_error_body {
                retry::classify(status, &headers, &bytes, self.openai)
            } else {
                let mut f = Failure::new(ErrorKind::BadResponse, why);
                f.http_status = Some(status);
                f
            };
            f.possibly_billed = true;
            f
        })
    }

    /// Reads an SSE answer through one parser and the style's assembler. The body is followed
    /// by a blank line so that a last event sent without one (DashScope native) still counts.
    async fn read_stream(&self, resp: reqwest::Response) -> Result<Reply, Failure> {
        let tail = futures_util::stream::iter([Ok(Bytes::from_static(b"\n\n"))]);
        let mut events = resp.bytes_stream().chain(tail).eventsource();
        let mut assembler = Assembler::new(self.api);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(EventStreamError::Transport(e)) => {
                    let mut f = body_failure(&e);
                    f.message = format!("stream cut: {}", f.message);
                    f.http_status = Some(200);
                    return Err(f);
                }
                Err(e) => {
                    let mut f = Failure::new(ErrorKind::BadResponse, format!("bad stream: {e}"));
                    f.http_status = Some(200);
                    return Err(f.billed());
                }
            };
            match assembler.event(&event.event, &event.data) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => break,
                Err(StreamError::Api(body)) => {
                    // An error inside a 200 stream (e.g. output moderation): the answer ends
                    // here and is classified like an error body; it was answered, not lost.
                    return Err(retry::classify(200, &HeaderMap::new(), &body, self.openai));
                }
                Err(StreamError::Bad(why)) => {
                    let mut f = Failure::new(ErrorKind::BadResponse, why);
                    f.http_status = Some(200);
                    return Err(f.billed());
                }
            }
        }
        assembler.finish().map_err(|why| {
            let mut f = Failure::new(ErrorKind::Network, format!("stream cut: {why}"));
            f.http_status = Some(200);
            f.billed()
        })
    }
}

/// How long every new attempt should wait, by OpenAI's rate-limit headers: until the window's
/// reset when the requests left are used up, or when the tokens left would not cover the next
/// request (`next_tokens`, its estimate).
pub fn rate_header_pause(headers: &HeaderMap, next_tokens: f64) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| text(name).and_then(|t| t.trim().parse::<f64>().ok());
    let reset = |name: &str| {
        text(name)
            .and_then(retry::parse_reset)
            .map(|d| d.min(retry::MAX_RETRY_AFTER))
    };
    let requests = number("x-ratelimit-remaining-requests")
        .is_some_and(|n| n < 1.0)
        .then(|| reset("x-ratelimit-reset-requests"))
        .flatten();
    let tokens = number("x-ratelimit-remaining-tokens")
        .is_some_and(|n| n < next_tokens)
        .then(|| reset("x-ratelimit-reset-tokens"))
        .flatten();
    requests.max(tokens)
}

/// Classifies an error while reading an answer's body.
fn body_failure(e: &reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::BadResponse
    };
    Failure::new(kind, format!("answer body cut short: {}", chain(e))).billed()
}

/// Classifies an error that left no HTTP answer.
fn transport_failure(e: reqwest::Error) -> Failure {
    let message = chain(&e);
    if e.is_connect() {
        // Never reached the server: nothing was billed.
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Network
        };
        return Failure::new(kind, message);
    }
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    Failure::new(kind, message).billed()
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::tests::headers;

    #[test]
    fn rate_limit_headers_pause_until_the_reset() {
        let plenty = headers(&[
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-remaining-tokens", "90000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(rate_header_pause(&plenty, 500.0), None);
        let no_requests = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1.5s"),
        ]);
        assert_eq!(
            rate_header_pause(&no_requests, 500.0),
            Some(Duration::from_millis(1500))
        );
        let few_tokens = headers(&[
            ("x-ratelimit-remaining-requests", "10"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "300"),
            ("x-ratelimit-reset-tokens", "2s"),
        ]);
        assert_eq!(
            rate_header_pause(&few_tokens, 500.0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(rate_header_pause(&few_tokens, 200.0), None);
        assert_eq!(rate_header_pause(&HeaderMap::new(), 1.0), None);
    }
}

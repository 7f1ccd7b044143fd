//! One attempt: send a prepared body, read the answer, and turn every outcome into a `Reply`
//! or a classified `Failure`. Every attempt has a connect timeout and a total timeout.
//!
//! Requests go straight to the endpoint through hyper's connection pool (rustls for https).
//! `reqwest` would do the same job, but its per-request layers (redirect policy, retry
//! wrapper, two re-parses of the URL) cost about a third of the runner's CPU per row against a
//! fast endpoint. When the environment names a proxy for the endpoint (`HTTPS_PROXY`,
//! `ALL_PROXY`, ... and `NO_PROXY`, as curl reads them), requests go through `reqwest`, which
//! speaks to proxies; the rest of an attempt is the same either way.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::limit::Flow;
use crate::request::Api;
use crate::request::sse::{Step, StreamError};
use crate::request::style::{self, Assembler};
use crate::request::{self, Reply};
use crate::retry::{self, ErrorKind, Failure};
use crate::settings::ApiKey;

/// The longest we wait for a TCP (and TLS) connection, whatever `--timeout` says.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

const AGENT: &str = concat!("batchgen/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An answer's body, from either way of sending.
type Body = BoxBody<Bytes, BoxError>;

type Pool = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// How requests reach the endpoint.
#[derive(Debug, Clone)]
enum Http {
    /// Straight there, through hyper's pool of kept-alive connections.
    Direct(Box<Pool>),
    /// Through the proxy the environment names for the endpoint.
    Proxied(reqwest::Client),
}

/// A connection pool and everything an attempt needs, shared by all workers.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    api: Api,
    /// Told about exhausted `x-ratelimit-remaining-*` headers.
    flow: std::sync::Arc<Flow>,
    /// Parsed once: a string URL would be parsed again on every request.
    uri: hyper::Uri,
    /// The `Authorization` header, marked sensitive so that it is never printed.
    auth: Option<HeaderValue>,
    /// The key, to take out of whatever text the server sends back in a failure.
    key: Option<ApiKey>,
    /// Whether the endpoint is OpenAI's own, where `insufficient_quota` means billing.
    openai: bool,
    /// The most an attempt may take, from connecting to the last byte of the answer.
    timeout: Duration,
}

impl Client {
    pub fn new(
        api: Api,
        base_url: &str,
        key: Option<&ApiKey>,
        timeout: Duration,
        concurrency: usize,
        flow: std::sync::Arc<Flow>,
    ) -> anyhow::Result<Client> {
        let url = format!("{}{}", base_url.trim_end_matches('/'), style::path(api));
        // Checked as a URL first, for the clearer message.
        reqwest::Url::parse(&url)
            .map_err(|e| anyhow::anyhow!("--base-url: not a valid URL: {e}"))?;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--base-url: not a valid URL: {e}"))?;
        let https = uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
        let connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
        // For the proxied way (reqwest); any provider works, and installing fails only when
        // one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let proxied = hyper_util::client::proxy::matcher::Matcher::from_system()
            .intercept(&uri)
            .is_some();
        let http = if proxied {
            Http::Proxied(
                reqwest::Client::builder()
                    .user_agent(AGENT)
                    .connect_timeout(connect_timeout)
                    .pool_max_idle_per_host(concurrency)
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?,
            )
        } else {
            Http::Direct(Box::new(pool(https, connect_timeout, concurrency)?))
        };
        let auth = key.map(bearer).transpose()?;
        Ok(Client {
            http,
            api,
            flow,
            uri,
            auth,
            key: key.cloned(),
            openai: base_url.contains("api.openai.com"),
            timeout,
        })
    }

    /// The URL requests go to, for messages: without any user info or query, which may
    /// carry credentials.
    pub fn url(&self) -> String {
        let host = self.uri.host().unwrap_or_default();
        let port = self.uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        let scheme = self.uri.scheme_str().unwrap_or("http");
        format!("{scheme}://{host}{port}{}", self.uri.path())
    }

    /// Whether requests go through a proxy named by the environment.
    pub fn proxied(&self) -> bool {
        matches!(self.http, Http::Proxied(_))
    }

    /// Sends one attempt, streamed or not, within `--timeout` from start to end. A failure's
    /// text leaves here with the key taken out (a server may echo it), so that no record,
    /// message or summary can show it.
    pub async fn attempt(&self, body: &Bytes, stream: bool) -> Result<Reply, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(body, stream)).await {
            Ok(result) => result.map_err(|f| self.scrubbed(f)),
            // The request was (or may have been) sent: it may be billed.
            Err(_) => Err(Failure::new(
                ErrorKind::Timeout,
                format!(
                    "no complete answer within the timeout of {}",
                    humantime::format_duration(self.timeout)
                ),
            )
            .billed()),
        }
    }

    fn scrubbed(&self, mut f: Failure) -> Failure {
        if let Some(key) = &self.key {
            f.message = key.scrub(&f.message);
            f.code = f.code.map(|c| key.scrub(&c));
        }
        f
    }

    async fn exchange(&self, body: &Bytes, stream: bool) -> Result<Reply, Failure> {
        let body_len = body.len();
        let body = if stream {
            style::stream_body(self.api, body)
        } else {
            body.clone()
        };
        let mut req = hyper::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(AGENT));
        if stream {
            req = req.header(ACCEPT, HeaderValue::from_static("text/event-stream"));
            if self.api == Api::Dashscope {
                req = req.header("X-DashScope-SSE", HeaderValue::from_static("enable"));
            }
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req.body(body).map_err(|e| {
            Failure::new(ErrorKind::Network, format!("cannot build the request: {e}"))
        })?;
        let resp = self.send(req).await?;
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
            self.read_stream(resp.into_body()).await?
        } else {
            self.read_whole(resp, status).await?
        };
        if reply.request_id.is_none() {
            reply.request_id = request_id;
        }
        Ok(reply)
    }

    /// Sends a request and waits for the answer's head.
    async fn send(&self, req: hyper::Request<Bytes>) -> Result<hyper::Response<Body>, Failure> {
        match &self.http {
            Http::Direct(pool) => {
                let resp = pool
                    .request(req.map(http_body_util::Full::new))
                    .await
                    .map_err(|e| transport_failure(&e, e.is_connect()))?;
                Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
            }
            Http::Proxied(client) => {
                let req = reqwest::Request::try_from(req).map_err(|e| {
                    Failure::new(ErrorKind::Network, format!("cannot build the request: {e}"))
                })?;
                let resp = client
                    .execute(req)
                    .await
                    .map_err(|e| transport_failure(&e, e.is_connect()))?;
                Ok(hyper::Response::<reqwest::Body>::from(resp)
                    .map(|b| b.map_err(BoxError::from).boxed()))
            }
        }
    }

    /// OpenAI's rate-limit headers (DashScope sends none): see [`rate_header_pause`].
    fn note_rate_headers(&self, headers: &HeaderMap, body_len: usize) {
        if let Some(d) = rate_header_pause(headers, self.flow.estimate(body_len)) {
            self.flow.pause_for(d);
        }
    }

    /// Reads a whole answer: an error answer is classified, a 200 parsed.
    async fn read_whole(&self, resp: hyper::Response<Body>, status: u16) -> Result<Reply, Failure> {
        // Error answers need their headers (Retry-After, x-should-retry); a success does not,
        // so the per-request path skips the copy.
        let headers = if (200..300).contains(&status) {
            HeaderMap::new()
        } else {
            resp.headers().clone()
        };
        let bytes = match resp.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                let mut f = body_failure(&*e);
                f.http_status = Some(status);
                return Err(f);
            }
        };
        if !(200..300).contains(&status) {
            // An error answer is an answer: nothing was lost, so nothing is counted as billed.
            return Err(retry::classify(status, &headers, &bytes, self.openai));
        }
        style::parse(self.api, &bytes).map_err(|why| {
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
    async fn read_stream(&self, body: Body) -> Result<Reply, Failure> {
        let tail = futures_util::stream::iter([Ok(Bytes::from_static(b"\n\n"))]);
        let mut events = body.into_data_stream().chain(tail).eventsource();
        let mut assembler = Assembler::new(self.api);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(EventStreamError::Transport(e)) => {
                    let mut f = body_failure(&*e);
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
                Ok(Step::More) => {}
                Ok(Step::Done) => break,
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

/// hyper's pool of kept-alive connections, up to `-c` idle ones, HTTP/2 where the server
/// offers it. TLS trusts the system's certificates; it is set up only for an https endpoint,
/// since loading the certificates costs milliseconds at every start.
fn pool(https: bool, connect_timeout: Duration, concurrency: usize) -> anyhow::Result<Pool> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = hyper_rustls::HttpsConnectorBuilder::new();
    let tls = if https {
        tls.with_provider_and_platform_verifier(provider)
            .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?
    } else {
        tls.with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    let connector = tls
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(concurrency)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector),
    )
}

/// With no `x-ratelimit-limit-*` header the refill rate is unknown: the pause is the reset, but
/// at most this long (the next answer's headers tell again).
const UNKNOWN_LIMIT_PAUSE: Duration = Duration::from_secs(1);

/// How long every new attempt should wait, by OpenAI's rate-limit headers: until the next
/// request fits, when the requests left are used up or the tokens left would not cover it
/// (`next_tokens`, its estimate). An `x-ratelimit-reset-*` header says when the whole budget
/// (`x-ratelimit-limit-*`) is back, and it comes back evenly, so `need` units with `remaining`
/// left fit after `reset × (need − remaining) / (limit − remaining)`: near a token limit that
/// is a fraction of a second, where waiting for the full reset stalled the pool for minutes.
pub fn rate_header_pause(headers: &HeaderMap, next_tokens: f64) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let number = |name: &str| text(name).and_then(|t| t.trim().parse::<f64>().ok());
    // Header names as (remaining, reset, limit): no formatting on the per-answer path.
    let pause = |[remaining, reset, limit]: [&str; 3], need: f64| {
        let remaining = number(remaining)?;
        if remaining >= need {
            return None;
        }
        let reset = text(reset)
            .and_then(retry::parse_reset)?
            .min(retry::MAX_RETRY_AFTER);
        Some(match number(limit) {
            Some(limit) if limit > remaining => {
                reset.mul_f64(((need - remaining) / (limit - remaining)).clamp(0.0, 1.0))
            }
            _ => reset.min(UNKNOWN_LIMIT_PAUSE),
        })
    };
    let requests = [
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-requests",
    ];
    let tokens = [
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-limit-tokens",
    ];
    pause(requests, 1.0).max(pause(tokens, next_tokens))
}

/// Classifies an error while reading an answer's body (a timeout ends the whole attempt,
/// in [`Client::attempt`]).
fn body_failure(e: &(dyn std::error::Error + 'static)) -> Failure {
    Failure::new(
        ErrorKind::BadResponse,
        format!("answer body cut short: {}", chain(e)),
    )
    .billed()
}

/// Classifies an error that left no HTTP answer. An error while connecting never reached the
/// server, so nothing was billed. A certificate the system does not trust would fail every
/// row: it stops the run, like a rejected key.
fn transport_failure(e: &(dyn std::error::Error + 'static), connecting: bool) -> Failure {
    let mut kind = ErrorKind::Network;
    let mut untrusted = false;
    let mut cur = Some(e);
    while let Some(err) = cur {
        let io = err.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || err
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
        {
            kind = ErrorKind::Timeout;
        }
        untrusted |= matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        );
        // An io::Error's `source` skips the error it wraps (rustls's, say): step into it.
        cur = match io.and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    let mut f = Failure::new(kind, chain(e));
    if untrusted {
        f.message = format!(
            "the endpoint's TLS certificate is not trusted: {}",
            f.message
        );
        f.fatal = true;
        f.retryable = false;
    }
    if connecting { f } else { f.billed() }
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// The `Authorization: Bearer` header for a key, marked sensitive so that no debug output shows
/// it. Shared by the synchronous client and the Batch API calls.
pub fn bearer(key: &ApiKey) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        .map_err(|_| anyhow::anyhow!("the API key holds characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::tests::headers;

    #[test]
    fn rate_limit_headers_pause_until_the_next_request_fits() {
        // 10 tokens left of a million, whole again in 5 minutes: 490 more come in 0.147 s.
        let near_tpm = headers(&[
            ("x-ratelimit-limit-tokens", "1000000"),
            ("x-ratelimit-remaining-tokens", "10"),
            ("x-ratelimit-reset-tokens", "5m0s"),
        ]);
        let d = rate_header_pause(&near_tpm, 500.0).unwrap_or_default();
        assert!(
            (d.as_secs_f64() - 300.0 * 490.0 / 999_990.0).abs() < 1e-6,
            "{d:?}"
        );
        // The last request of 60 a minute, whole again in 60 s: one more comes in 1 s.
        let last_request = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "60s"),
        ]);
        let d = rate_header_pause(&last_request, 1.0).unwrap_or_default();
        assert!((d.as_secs_f64() - 1.0).abs() < 1e-9, "{d:?}");
        // A request larger than the whole budget waits for all of it.
        let small_budget = headers(&[
            ("x-ratelimit-limit-tokens", "400"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "2s"),
        ]);
        assert_eq!(
            rate_header_pause(&small_budget, 500.0),
            Some(Duration::from_secs(2))
        );
        // Without the limit, the reset is waited for a second at most.
        let no_limit = headers(&[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            rate_header_pause(&no_limit, 500.0),
            Some(UNKNOWN_LIMIT_PAUSE)
        );
    }

    #[test]
    fn rate_limit_headers_pause_only_when_used_up() {
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
            Some(UNKNOWN_LIMIT_PAUSE)
        );
        let few_tokens = headers(&[
            ("x-ratelimit-remaining-requests", "10"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "300"),
            ("x-ratelimit-reset-tokens", "2s"),
        ]);
        assert_eq!(
            rate_header_pause(&few_tokens, 500.0),
            Some(UNKNOWN_LIMIT_PAUSE)
        );
        assert_eq!(rate_header_pause(&few_tokens, 200.0), None);
        assert_eq!(rate_header_pause(&HeaderMap::new(), 1.0), None);
    }
}

//! The Batch API calls (OpenAI's `/files` and `/batches`, which DashScope's compatible mode
//! copies): upload, create, retrieve, list, cancel, and download a file's content. Each call
//! retries 429, 5xx and network errors with the run's backoff (`Retry-After` honoured); the
//! key goes only into a sensitive header and is scrubbed from every message.

use std::path::Path;
use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::retry::{self, ErrorKind, Failure};
use crate::settings::ApiKey;

const AGENT: &str = concat!("batchgen/", env!("CARGO_PKG_VERSION"));

/// Pages read when looking for a batch made from a file: enough for the batches of a busy
/// day (100 a page).
const LIST_PAGES: usize = 20;

/// The retry policy of the control calls.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub retries: u32,
}

/// `request_counts` of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Counts {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub completed: u64,
    #[serde(default)]
    pub failed: u64,
}

/// A batch object. Only `id` is required: servers differ, and an unknown status reads as
/// still running.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Batch {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub input_file_id: Option<String>,
    #[serde(default)]
    pub output_file_id: Option<String>,
    #[serde(default)]
    pub error_file_id: Option<String>,
    #[serde(default)]
    pub request_counts: Option<Counts>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub errors: Option<Value>,
}

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Every line ran (or failed on its own).
    Completed,
    /// Validation refused the file; no line ran.
    Failed,
    /// The window or a cancel ended it; the lines that did not run are to be sent again.
    Ended,
}

impl Batch {
    pub fn phase(&self) -> Phase {
        match self.status.as_deref() {
            Some("completed") => Phase::Completed,
            Some("failed") => Phase::Failed,
            Some("expired" | "cancelled") => Phase::Ended,
            _ => Phase::Running,
        }
    }

    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("unknown")
    }

    /// Whether it was made from this uploaded file, or carries this file's ids tag.
    pub fn made_from(&self, file_id: &str, ids: &str) -> bool {
        self.input_file_id.as_deref() == Some(file_id)
            || self
                .metadata
                .as_ref()
                .and_then(|m| m.get("batchgen_file"))
                .and_then(Value::as_str)
                == Some(ids)
    }

    /// The per-line validation errors: (1-based line, code, message).
    pub fn line_errors(&self) -> Vec<(Option<u64>, Option<String>, String)> {
        let data = self
            .errors
            .as_ref()
            .and_then(|e| e.get("data"))
            .and_then(Value::as_array);
        data.into_iter()
            .flatten()
            .map(|e| {
                (
                    e.get("line").and_then(Value::as_u64),
                    e.get("code").and_then(Value::as_str).map(str::to_string),
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the batch failed validation")
                        .to_string(),
                )
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct FileObject {
    id: String,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Batch>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

/// The Batch API of one endpoint.
#[derive(Debug, Clone)]
pub struct BatchApi {
    http: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
    key: Option<ApiKey>,
    openai: bool,
    backoff: Backoff,
    timeout: Duration,
}

impl BatchApi {
    pub fn new(
        base_url: &str,
        key: Option<&ApiKey>,
        timeout: Duration,
        backoff: Backoff,
    ) -> anyhow::Result<BatchApi> {
        // Any provider works; installing fails only when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(AGENT)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let auth = key.map(crate::client::bearer).transpose()?;
        reqwest::Url::parse(base_url)
            .map_err(|e| anyhow::anyhow!("--base-url: not a valid URL: {e}"))?;
        Ok(BatchApi {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            auth,
            key: key.cloned(),
            openai: base_url.contains("api.openai.com"),
            backoff,
            timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request built by `make` (again for each attempt) and returns the answer's body,
    /// retrying what a synchronous run would retry.
    async fn call<F>(&self, what: &str, make: F) -> Result<bytes::Bytes, Failure>
    where
        F: Fn() -> Result<reqwest::RequestBuilder, Failure>,
    {
        self.retrying(what, || self.once(&make)).await
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries run out, waiting as a
    /// synchronous run waits between attempts; a final failure names `what` and never holds
    /// the key.
    async fn retrying<T, Fut>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, Failure>
    where
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut steps =
            retry::policy(self.backoff.first, self.backoff.max, self.backoff.retries).build();
        loop {
            let failure = match attempt().await {
                Ok(value) => return Ok(value),
                Err(f) => f,
            };
            let wait = match failure.retryable {
                true => retry::next_wait(&failure, steps.next(), self.backoff.first),
                false => None,
            };
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let mut f = failure;
                    f.message = format!("{what}: {}", f.message);
                    if let Some(key) = &self.key {
                        f.message = key.scrub(&f.message);
                    }
                    return Err(f);
                }
            }
        }
    }

    async fn once<F>(&self, make: &F) -> Result<bytes::Bytes, Failure>
    where
        F: Fn() -> Result<reqwest::RequestBuilder, Failure>,
    {
        let mut req = make()?.timeout(self.timeout);
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let resp = req.send().await.map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| transport(&e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(retry::classify(status, &headers, &body, self.openai))
    }

    fn json<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Failure> {
        serde_json::from_slice(body).map_err(|e| {
            let mut f = Failure::new(ErrorKind::BadResponse, format!("{what}: bad answer: {e}"));
            f.retryable = false;
            f
        })
    }

    /// Uploads a batch file (multipart, `purpose=batch`) and returns its file id.
    pub async fn upload(&self, path: &Path) -> Result<String, Failure> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch.jsonl".to_string());
        let what = format!("uploading {}", path.display());
        let make = || {
            // Opened per attempt: a streamed body cannot be sent twice. The file is streamed,
            // never read whole: a batch file may hold hundreds of megabytes.
            let local = |e: std::io::Error| {
                let mut f = Failure::new(ErrorKind::InvalidInput, format!("{e}"));
                f.retryable = false;
                f
            };
            let file = std::fs::File::open(path).map_err(local)?;
            let len = file.metadata().map_err(local)?.len();
            let stream = ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 << 10);
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(stream),
                len,
            )
            .file_name(name.clone())
            .mime_str("application/jsonl")
            .map_err(|e| Failure::new(ErrorKind::InvalidInput, e.to_string()))?;
            let form = reqwest::multipart::Form::new()
                .text("purpose", "batch")
                .part("file", part);
            Ok(self.http.post(self.url("/files")).multipart(form))
        };
        let body = self.call(&what, make).await?;
        Ok(Self::json::<FileObject>(&what, &body)?.id)
    }

    /// The batch of an uploaded file: one already made from it (by its file id or its ids
    /// tag: a crash between create and its journal line left one), else a new one, tagged with
    /// the file's ids hash. `true` with a batch found. A create that fails retryably may still
    /// have made the batch (its answer lost on the way), so each retry looks for it again
    /// first: a file never gets two batches.
    pub async fn find_or_create(
        &self,
        file_id: &str,
        endpoint: &str,
        window: &str,
        ids: &str,
    ) -> Result<(Batch, bool), Failure> {
        let what = format!("creating the batch of {file_id}");
        let body = serde_json::json!({
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": window,
            "metadata": {"batchgen_file": ids},
        });
        let make = || Ok(self.http.post(self.url("/batches")).json(&body));
        self.retrying(&what, || async {
            if let Some(b) = self.find(file_id, ids).await? {
                return Ok((b, true));
            }
            let answer = self.once(&make).await?;
            Ok((Self::json(&what, &answer)?, false))
        })
        .await
    }

    pub async fn retrieve(&self, batch_id: &str) -> Result<Batch, Failure> {
        let what = format!("reading batch {batch_id}");
        let make = || Ok(self.http.get(self.url(&format!("/batches/{batch_id}"))));
        let answer = self.call(&what, make).await?;
        Self::json(&what, &answer)
    }

    pub async fn cancel(&self, batch_id: &str) -> Result<Batch, Failure> {
        let what = format!("cancelling batch {batch_id}");
        let make = || {
            Ok(self
                .http
                .post(self.url(&format!("/batches/{batch_id}/cancel"))))
        };
        let answer = self.call(&what, make).await?;
        Self::json(&what, &answer)
    }

    /// Looks for a batch already made from this file (by its file id or its ids tag): a crash
    /// between create and its journal line left one.
    pub async fn find(&self, file_id: &str, ids: &str) -> Result<Option<Batch>, Failure> {
        let mut after: Option<String> = None;
        for _ in 0..LIST_PAGES {
            let what = "listing batches";
            let mut url = reqwest::Url::parse(&self.url("/batches"))
                .map_err(|e| Failure::new(ErrorKind::InvalidRequest, e.to_string()))?;
            url.query_pairs_mut().append_pair("limit", "100");
            if let Some(a) = &after {
                url.query_pairs_mut().append_pair("after", a);
            }
            let make = || Ok(self.http.get(url.clone()));
            let answer = self.call(what, make).await?;
            let page: Page = Self::json(what, &answer)?;
            if let Some(b) = page.data.iter().find(|b| b.made_from(file_id, ids)) {
                return Ok(Some(b.clone()));
            }
            let last = page
                .last_id
                .or_else(|| page.data.last().map(|b| b.id.clone()));
            match (page.has_more, last) {
                (true, Some(l)) => after = Some(l),
                _ => break,
            }
        }
        Ok(None)
    }

    /// Downloads a file's content to `to`, as a stream (an output file may be large).
    pub async fn download(&self, file_id: &str, to: &Path) -> Result<(), Failure> {
        let what = format!("downloading {file_id}");
        self.retrying(&what, || self.download_once(file_id, to))
            .await
    }

    async fn download_once(&self, file_id: &str, to: &Path) -> Result<(), Failure> {
        let mut req = self
            .http
            .get(self.url(&format!("/files/{file_id}/content")));
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let mut resp = req.send().await.map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let headers: HeaderMap = resp.headers().clone();
            let body = resp.bytes().await.map_err(|e| transport(&e))?;
            return Err(retry::classify(status, &headers, &body, self.openai));
        }
        let local = |e: std::io::Error| {
            let mut f = Failure::new(ErrorKind::InvalidInput, format!("{}: {e}", to.display()));
            f.retryable = false;
            f
        };
        let mut out = tokio::fs::File::create(to).await.map_err(local)?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        Ok(())
    }
}

/// A request that got no answer: retried as a network error.
fn transport(e: &reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Network
    };
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    Failure::new(kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_objects_are_read_liberally() {
        let b: Batch = serde_json::from_str(r#"{"id":"batch_1"}"#).expect("minimal");
        assert_eq!(b.phase(), Phase::Running);
        let b: Batch = serde_json::from_str(
            r#"{"id":"batch_2","status":"validating_v2","metadata":{"batchgen_file":"abc"},
                "input_file_id":"file-9","extra":1}"#,
        )
        .expect("extra fields");
        assert_eq!(b.phase(), Phase::Running);
        assert!(b.made_from("file-x", "abc"));
        assert!(b.made_from("file-9", "zzz"));
        assert!(!b.made_from("file-x", "zzz"));
        let b: Batch = serde_json::from_str(
            r#"{"id":"b","status":"failed","errors":{"object":"list","data":[
                {"code":"mixed_model","message":"model differs","line":3,"param":null}]}}"#,
        )
        .expect("failed");
        assert_eq!(b.phase(), Phase::Failed);
        assert_eq!(
            b.line_errors(),
            [(
                Some(3),
                Some("mixed_model".to_string()),
                "model differs".to_string()
            )]
        );
        for (s, p) in [
            ("completed", Phase::Completed),
            ("expired", Phase::Ended),
            ("cancelled", Phase::Ended),
            ("cancelling", Phase::Running),
        ] {
            let b = Batch {
                status: Some(s.into()),
                ..Batch::default()
            };
            assert_eq!(b.phase(), p, "{s}");
        }
    }
}

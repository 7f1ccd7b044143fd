//! The mock's Batch API, OpenAI's (which DashScope's compatible mode copies): Files (upload,
//! retrieve, content, delete) and Batches (create, retrieve, list, cancel), routed by path
//! suffix like the mock's other routes. The key check and the control-call faults
//! (`batch_faults`) come first; the state lives in memory. `docs/mock.md` (Batch API) is the
//! protocol.

mod batches;
mod files;
mod lines;
mod store;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use self::batches::Request as BatchRequest;
use self::store::{ApiError, Store};
use crate::mock::body::MockBody;
use crate::mock::config::MockConfig;
use crate::mock::errors::{ErrorAnswer, openai_body};
use crate::mock::faults::{Fault, FaultPicker};
use crate::mock::reply::{error_answer, json_response, rate_limited, unavailable};
use crate::mock::stats::Stats;
use crate::mock::wire::{Style, to_json};

/// Largest upload (OpenAI's file limit).
const MAX_UPLOAD: usize = 512 * 1024 * 1024;
/// Largest body of the other calls.
const MAX_CONTROL: usize = 1024 * 1024;
/// Batches a list call returns when it names no `limit`.
const DEFAULT_LIST: usize = 20;

/// One call of the API, with the id its path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Upload,
    File(String),
    FileContent(String),
    DeleteFile(String),
    Create,
    Retrieve(String),
    List,
    Cancel(String),
}

/// The call a method and path make, by the path's last segments (any base path works).
pub(crate) fn route(method: &str, path: &str) -> Option<Call> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segs.len();
    let tail = |k: usize| n.checked_sub(k).and_then(|i| segs.get(i).copied());
    let id = |k: usize| tail(k).unwrap_or_default().to_owned();
    Some(match (method, tail(3), tail(2), tail(1)) {
        ("GET", Some("files"), Some(_), Some("content")) => Call::FileContent(id(2)),
        ("POST", Some("batches"), Some(_), Some("cancel")) => Call::Cancel(id(2)),
        ("GET", _, Some("files"), Some(_)) => Call::File(id(1)),
        ("DELETE", _, Some("files"), Some(_)) => Call::DeleteFile(id(1)),
        ("GET", _, Some("batches"), Some(_)) => Call::Retrieve(id(1)),
        ("POST", _, _, Some("files")) => Call::Upload,
        ("POST", _, _, Some("batches")) => Call::Create,
        ("GET", _, _, Some("batches")) => Call::List,
        _ => return None,
    })
}

/// The Batch API of one server.
pub(crate) struct BatchApi {
    store: Mutex<Store>,
    /// Faults of the control calls; only 429, 500 and 503 are delivered.
    faults: FaultPicker,
    retry_after: Duration,
    api_key: Option<String>,
    stats: Arc<Stats>,
}

/// What a call returns on success.
enum Answer {
    Json(Value),
    Raw(Bytes),
}

impl BatchApi {
    pub(crate) fn new(cfg: &MockConfig, stats: Arc<Stats>) -> BatchApi {
        BatchApi {
            store: Mutex::new(Store::new(cfg.batch_step, cfg.seed)),
            // Attempts are not told apart: every control call draws.
            faults: FaultPicker::new(&cfg.batch_faults, 0, cfg.seed.map(|s| s ^ 0xba7c)),
            retry_after: cfg.retry_after,
            api_key: cfg.api_key.clone(),
            stats,
        }
    }

    /// Answers one call; `id` is the request id of the answer.
    pub(crate) async fn handle(
        &self,
        call: Call,
        req: Request<Incoming>,
        id: &str,
    ) -> Result<Response<MockBody>, io::Error> {
        let key_ok = self.api_key.as_deref().is_none_or(|key| {
            req.headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                == Some(key)
        });
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let query = req.uri().query().unwrap_or_default().to_owned();
        let limit = if call == Call::Upload {
            MAX_UPLOAD
        } else {
            MAX_CONTROL
        };
        // The body is read whole before any answer, so that an early answer (a fault, a
        // 401) does not leave the client writing into a closed connection.
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                let message = format!("The request body is larger than {limit} bytes.");
                return Ok(self.error(&ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message), id));
            }
            Err(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request body")),
        };
        if !key_ok {
            return Ok(error_answer(Style::Chat, ErrorAnswer::InvalidApiKey, id));
        }
        if self.faults.active() {
            match self.faults.pick(b"") {
                Some(Fault::RateLimit) => {
                    return Ok(rate_limited(Style::Chat, id, self.retry_after));
                }
                Some(Fault::ServerError) => {
                    return Ok(error_answer(Style::Chat, ErrorAnswer::Internal, id));
                }
                Some(Fault::Unavailable) => return Ok(unavailable()),
                _ => {}
            }
        }
        let answer = match call {
            Call::Upload => match files::read_form(content_type.as_deref(), body).await {
                Ok(up) => Ok(Answer::Json(self.store().upload(
                    up.filename,
                    up.bytes,
                    &self.stats,
                ))),
                Err(e) => Err(e),
            },
            call => self.control(call, &body, &query),
        };
        Ok(match answer {
            Ok(Answer::Json(v)) => json_response(StatusCode::OK, to_json(&v, 1024), id),
            Ok(Answer::Raw(bytes)) => {
                let mut resp = Response::new(MockBody::full(bytes));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                resp
            }
            Err(e) => self.error(&e, id),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        crate::sync::lock(&self.store)
    }

    /// The calls other than the upload.
    fn control(&self, call: Call, body: &[u8], query: &str) -> Result<Answer, ApiError> {
        let now = Instant::now();
        let stats = &*self.stats;
        let mut store = self.store();
        match call {
            Call::Upload => Err(ApiError::new(StatusCode::BAD_REQUEST, "Upload a form.")),
            Call::File(id) => store.file(&id).map(Answer::Json),
            Call::FileContent(id) => store.content(&id).map(Answer::Raw),
            Call::DeleteFile(id) => store.delete(&id).map(Answer::Json),
            Call::Create => {
                let request = create_request(body)?;
                store.create(request, now, stats).map(Answer::Json)
            }
            Call::Retrieve(id) => store.retrieve(&id, now, stats).map(Answer::Json),
            Call::Cancel(id) => store.cancel(&id, now, stats).map(Answer::Json),
            Call::List => {
                let (limit, after) = list_query(query)?;
                Ok(Answer::Json(store.list(
                    limit,
                    after.as_deref(),
                    now,
                    stats,
                )))
            }
        }
    }

    fn error(&self, e: &ApiError, id: &str) -> Response<MockBody> {
        json_response(
            e.status,
            openai_body(&e.message, "invalid_request_error", None, id),
            id,
        )
    }
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    input_file_id: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    completion_window: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// The body of `POST /batches`.
fn create_request(body: &[u8]) -> Result<BatchRequest, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let missing = |name: &str| bad(format!("Missing required parameter: '{name}'."));
    let raw: CreateBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("The request body is not valid JSON: {e}")))?;
    let input_file_id = raw.input_file_id.ok_or_else(|| missing("input_file_id"))?;
    let endpoint = raw.endpoint.ok_or_else(|| missing("endpoint"))?;
    let style = Style::of_path(&endpoint).ok_or_else(|| {
        bad(format!(
            "Invalid endpoint {endpoint:?}: not served by the mock."
        ))
    })?;
    let completion_window = raw
        .completion_window
        .ok_or_else(|| missing("completion_window"))?;
    let window = humantime::parse_duration(&completion_window)
        .map_err(|_| bad(format!("Invalid completion_window {completion_window:?}.")))?;
    Ok(BatchRequest {
        input_file_id,
        endpoint,
        style,
        completion_window,
        window,
        metadata: raw.metadata.unwrap_or(Value::Null),
    })
}

/// `limit` and `after` of a list call.
fn list_query(query: &str) -> Result<(usize, Option<String>), ApiError> {
    let mut limit = DEFAULT_LIST;
    let mut after = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" => {
                limit = value.parse().map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid limit {value:?}."))
                })?;
            }
            "after" => after = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok((limit, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_suffix() {
        let r = |m, p| route(m, p);
        assert_eq!(r("POST", "/v1/files"), Some(Call::Upload));
        assert_eq!(
            r("GET", "/compatible-mode/v1/files/file-1"),
            Some(Call::File("file-1".into()))
        );
        assert_eq!(
            r("GET", "/v1/files/file-1/content"),
            Some(Call::FileContent("file-1".into()))
        );
        assert_eq!(
            r("DELETE", "/v1/files/f"),
            Some(Call::DeleteFile("f".into()))
        );
        assert_eq!(r("POST", "/v1/batches"), Some(Call::Create));
        assert_eq!(r("GET", "/v1/batches"), Some(Call::List));
        assert_eq!(r("GET", "/v1/batches/b"), Some(Call::Retrieve("b".into())));
        assert_eq!(
            r("POST", "/v1/batches/b/cancel"),
            Some(Call::Cancel("b".into()))
        );
        assert_eq!(r("PUT", "/v1/batches"), None);
        assert_eq!(r("GET", "/v1/stats"), None);
    }

    #[test]
    fn list_query_reads_limit_and_after() {
        assert_eq!(list_query("").ok(), Some((20, None)));
        let (limit, after) = list_query("limit=2&after=batch_x").expect("valid");
        assert_eq!((limit, after.as_deref()), (2, Some("batch_x")));
        assert!(list_query("limit=many").is_err());
    }
}

//! The mock's HTTP side: accept loop, per-connection hyper http1 service, request routing,
//! fault delivery and the atomic counters behind `/stats`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::body::{MockBody, OnComplete};
use super::chat::{self, Answer, Usage};
use super::faults::{Fault, FaultPicker};
use super::{MockConfig, StatsSnapshot};

/// Largest request body accepted (larger ones get a 400 "Payload Too Large").
const MAX_BODY: usize = 32 * 1024 * 1024;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const HTML: HeaderValue = HeaderValue::from_static("text/html");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

const UNAVAILABLE_PAGE: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n\
<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n\
<hr><center>mock-gateway</center>\r\n</body>\r\n</html>\r\n";

/// Counters; every field matches one in [`StatsSnapshot`].
#[derive(Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    unavailable: AtomicU64,
    resets: AtomicU64,
    malformed: AtomicU64,
    truncated: AtomicU64,
    hangs: AtomicU64,
    bad_requests: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn record_ok(&self, input_tokens: u64, output_tokens: u64) {
        self.input_tokens.fetch_add(input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(output_tokens, Ordering::Relaxed);
        bump(&self.ok);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            ok: get(&self.ok),
            rate_limited: get(&self.rate_limited),
            server_errors: get(&self.server_errors),
            unavailable: get(&self.unavailable),
            resets: get(&self.resets),
            malformed: get(&self.malformed),
            truncated: get(&self.truncated),
            hangs: get(&self.hangs),
            bad_requests: get(&self.bad_requests),
            input_tokens: get(&self.input_tokens),
            output_tokens: get(&self.output_tokens),
        }
    }
}

/// State shared by every connection of one server.
struct Shared {
    cfg: MockConfig,
    stats: Arc<Stats>,
    faults: FaultPicker,
    /// Random per server, so ids differ between servers.
    id_nonce: u64,
    id_counter: AtomicU64,
    http: hyper::server::conn::http1::Builder,
}

/// Binds and spawns the accept loop. Returns the bound address and the loop's handle.
pub(crate) async fn spawn(
    cfg: MockConfig,
    addr: SocketAddr,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let faults = FaultPicker::new(&cfg.faults, cfg.fault_attempts, cfg.seed);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let shared = Arc::new(Shared {
        cfg,
        stats,
        faults,
        id_nonce: fastrand::u64(..),
        id_counter: AtomicU64::new(0),
        http,
    });
    let handle = tokio::spawn(accept_loop(listener, shared, cancel));
    Ok((local, handle))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: back off a little, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    drop(listener);
    // Aborts every connection task, including hanging and sleeping requests.
    conns.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ConnIo {
        stream,
        reset: Arc::clone(&reset),
    });
    let http = shared.http.clone();
    let conn = http.serve_connection(
        io,
        hyper::service::service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset), req)),
    );
    // Errors here are client disconnects or injected faults; nothing to report.
    let _ = conn.await;
}

/// The TCP stream, plus a flag that turns the close into a reset (RST, no FIN).
struct ConnIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::Relaxed) {
            // No FIN: the drop below sends a RST instead.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

type HandlerResult = Result<Response<MockBody>, io::Error>;

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> HandlerResult {
    let path = req.uri().path();
    if path.ends_with("/chat/completions") && req.method() == Method::POST {
        chat(&shared, &reset, req).await
    } else if path.ends_with("/stats") && req.method() == Method::GET {
        Ok(stats_response(&shared.stats))
    } else {
        let message = format!("Invalid URL ({} {})", req.method(), path);
        let id = shared.next_id();
        Ok(json_response(
            StatusCode::NOT_FOUND,
            chat::error_body(&message, "invalid_request_error", None, &id),
            &id,
        ))
    }
}

impl Shared {
    fn next_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        chat::request_uuid(self.id_nonce, n)
    }

    fn delay(&self) -> Option<Duration> {
        let (latency, jitter) = (self.cfg.latency, self.cfg.jitter);
        if latency.is_zero() && jitter.is_zero() {
            return None;
        }
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(fastrand::u64(0..=nanos))
        };
        Some(latency.saturating_add(extra))
    }
}

fn stats_response(stats: &Stats) -> Response<MockBody> {
    let body = serde_json::to_vec(&stats.snapshot()).unwrap_or_default();
    let mut resp = Response::new(MockBody::full(body));
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

fn json_response(status: StatusCode, body: Bytes, request_id: &str) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    resp
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn chat(shared: &Shared, reset: &AtomicBool, req: Request<Incoming>) -> HandlerResult {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            bump(&shared.stats.requests);
            bump(&shared.stats.bad_requests);
            let id = shared.next_id();
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                chat::error_body(
                    "Payload Too Large",
                    "invalid_request_error",
                    Some("invalid_request_error"),
                    &id,
                ),
                &id,
            ));
        }
        // The client went away mid-body.
        Err(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request body")),
    };
    let stats = &shared.stats;
    bump(&stats.requests);
    if let Some(d) = shared.delay() {
        tokio::time::sleep(d).await;
    }
    let id = shared.next_id();
    let req = match chat::parse_request(&body) {
        Ok(r) => r,
        Err(message) => {
            bump(&stats.bad_requests);
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                chat::error_body(
                    &message,
                    "invalid_request_error",
                    Some("invalid_parameter_error"),
                    &id,
                ),
                &id,
            ));
        }
    };
    if let Some(resp) = trigger(&req.prompt, &id) {
        bump(&stats.bad_requests);
        return Ok(resp);
    }
    let fault = if shared.faults.active() {
        shared.faults.pick(&body)
    } else {
        None
    };
    match fault {
        None => Ok(success(shared, &req, &id, false)),
        Some(Fault::RateLimit) => {
            bump(&stats.rate_limited);
            let mut resp = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                chat::error_body(
                    "Requests rate limit exceeded, please try again later.",
                    "limit_requests",
                    Some("limit_requests"),
                    &id,
                ),
                &id,
            );
            let nanos = shared.cfg.retry_after.as_nanos();
            let headers = resp.headers_mut();
            headers.insert(
                RETRY_AFTER_MS,
                HeaderValue::from(ceil_div(nanos, 1_000_000)),
            );
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(ceil_div(nanos, 1_000_000_000)),
            );
            Ok(resp)
        }
        Some(Fault::ServerError) => {
            bump(&stats.server_errors);
            Ok(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                chat::error_body(
                    "An internal error has occurred, please try again later.",
                    "internal_error",
                    Some("internal_error"),
                    &id,
                ),
                &id,
            ))
        }
        Some(Fault::Unavailable) => {
            bump(&stats.unavailable);
            let mut resp = Response::new(MockBody::full(Bytes::from_static(
                UNAVAILABLE_PAGE.as_bytes(),
            )));
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp.headers_mut().insert(CONTENT_TYPE, HTML);
            Ok(resp)
        }
        Some(Fault::Reset) => {
            bump(&stats.resets);
            reset.store(true, Ordering::Relaxed);
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock: reset",
            ))
        }
        Some(Fault::Malformed) => {
            bump(&stats.malformed);
            let body = format!(
                r#"{{"id":"chatcmpl-{id}","object":"chat.completion","created":{},"choices":[{{"index":0,"message":"#,
                unix_now()
            );
            Ok(json_response(StatusCode::OK, Bytes::from(body), &id))
        }
        Some(Fault::Truncated) => {
            bump(&stats.truncated);
            Ok(success(shared, &req, &id, true))
        }
        Some(Fault::Hang) => {
            bump(&stats.hangs);
            // Cancelled by shutdown (the connection task is aborted).
            tokio::time::sleep(shared.cfg.hang).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "mock: hang"))
        }
    }
}

fn ceil_div(n: u128, d: u128) -> u64 {
    u64::try_from(n.div_ceil(d)).unwrap_or(u64::MAX)
}

/// The test triggers; see the module docs.
fn trigger(prompt: &str, id: &str) -> Option<Response<MockBody>> {
    if !prompt.contains("[mock:") {
        return None;
    }
    let (status, message, kind, code) = if prompt.contains("[mock:400]") {
        (
            StatusCode::BAD_REQUEST,
            "<400> InternalError.Algo.InvalidParameter: mock-triggered invalid parameter",
            "invalid_request_error",
            "invalid_parameter_error",
        )
    } else if prompt.contains("[mock:moderation]") {
        (
            StatusCode::BAD_REQUEST,
            "Input data may contain inappropriate content.",
            "data_inspection_failed",
            "data_inspection_failed",
        )
    } else if prompt.contains("[mock:401]") {
        (
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. ",
            "invalid_request_error",
            "invalid_api_key",
        )
    } else {
        return None;
    };
    Some(json_response(
        status,
        chat::error_body(message, kind, Some(code), id),
        id,
    ))
}

/// A successful answer, or (with `truncate`) its first half followed by a broken connection.
fn success(
    shared: &Shared,
    req: &chat::ChatRequest<'_>,
    id: &str,
    truncate: bool,
) -> Response<MockBody> {
    let mut content = chat::reply_for(&req.prompt);
    let mut completion_tokens = chat::count_tokens(&content);
    let mut finish_reason = "stop";
    if let Some(max) = req.max_tokens
        && completion_tokens > max
        && chat::clip_to_tokens(&mut content, max)
    {
        completion_tokens = max;
        finish_reason = "length";
    }
    let chat_id = format!("chatcmpl-{id}");
    let answer = Answer {
        id: &chat_id,
        created: unix_now(),
        model: &req.model,
        content: &content,
        finish_reason,
        usage: Usage::new(req.prompt_tokens, completion_tokens),
    };
    let mut resp = if req.stream {
        let mut frames = chat::stream_frames(&answer, req.include_usage);
        let body = if truncate {
            // Role chunk plus about half the content; no finish chunk, no [DONE].
            frames.truncate(frames.len() / 2);
            MockBody::truncated(frames, None)
        } else {
            MockBody::frames(
                frames,
                Some(OnComplete {
                    stats: Arc::clone(&shared.stats),
                    input_tokens: req.prompt_tokens,
                    output_tokens: completion_tokens,
                }),
            )
        };
        let mut resp = Response::new(body);
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, EVENT_STREAM);
        headers.insert(CACHE_CONTROL, NO_CACHE);
        resp
    } else {
        let full = chat::completion_body(&answer);
        let body = if truncate {
            let len = full.len() as u64;
            MockBody::truncated(vec![full.slice(..full.len() / 2)], Some(len))
        } else {
            shared.stats.record_ok(req.prompt_tokens, completion_tokens);
            MockBody::full(full)
        };
        let mut resp = Response::new(body);
        resp.headers_mut().insert(CONTENT_TYPE, JSON);
        resp
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    resp
}

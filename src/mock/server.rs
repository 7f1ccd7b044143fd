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

use super::answer::{Ask, Failure, Generated, Stream, Style};
use super::body::{MockBody, OnComplete};
use super::faults::{Fault, FaultPicker};
use super::limits::Limiter;
use super::{MockConfig, StatsSnapshot, chat, native, responses, text};

/// Largest request body accepted (larger ones get a 400 "Payload Too Large").
const MAX_BODY: usize = 32 * 1024 * 1024;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const HTML: HeaderValue = HeaderValue::from_static("text/html");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const X_DASHSCOPE_SSE: HeaderName = HeaderName::from_static("x-dashscope-sse");

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
    reasoning_tokens: AtomicU64,
    chat_requests: AtomicU64,
    responses_requests: AtomicU64,
    native_requests: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// A complete successful answer; `output_tokens` includes `reasoning_tokens`.
    pub(crate) fn record_ok(&self, input_tokens: u64, output_tokens: u64, reasoning_tokens: u64) {
        self.input_tokens.fetch_add(input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(output_tokens, Ordering::Relaxed);
        if reasoning_tokens > 0 {
            self.reasoning_tokens
                .fetch_add(reasoning_tokens, Ordering::Relaxed);
        }
        bump(&self.ok);
    }

    /// A request whose body was read.
    fn record_request(&self, style: Style) {
        bump(&self.requests);
        bump(match style {
            Style::Chat => &self.chat_requests,
            Style::Responses => &self.responses_requests,
            Style::Native => &self.native_requests,
        });
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
            reasoning_tokens: get(&self.reasoning_tokens),
            chat_requests: get(&self.chat_requests),
            responses_requests: get(&self.responses_requests),
            native_requests: get(&self.native_requests),
        }
    }
}

/// State shared by every connection of one server.
struct Shared {
    cfg: MockConfig,
    stats: Arc<Stats>,
    faults: FaultPicker,
    limiter: Option<Limiter>,
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
    let limiter = cfg.limits.active().then(|| Limiter::new(cfg.limits));
    let shared = Arc::new(Shared {
        limiter,
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
    if req.method() == Method::POST
        && let Some(style) = route(path)
    {
        answer(&shared, &reset, style, req).await
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

/// The style of a POST path, by suffix.
fn route(path: &str) -> Option<Style> {
    if path.ends_with("/chat/completions") {
        Some(Style::Chat)
    } else if path.ends_with("/responses") {
        Some(Style::Responses)
    } else if path.ends_with("/services/aigc/text-generation/generation")
        || path.ends_with("/services/aigc/multimodal-generation/generation")
    {
        Some(Style::Native)
    } else {
        None
    }
}

impl Shared {
    fn next_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed);
        text::request_uuid(self.id_nonce, n)
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

/// An error answer in `style`'s body shape.
fn error_response(
    style: Style,
    failure: Failure,
    message: &str,
    request_id: &str,
) -> Response<MockBody> {
    json_response(
        failure.status(),
        failure.body(style, message, request_id),
        request_id,
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a successful answer is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Whole,
    /// The `truncated` fault.
    Truncated,
    /// `[mock:moderation-output]` on a stream: a few events, then an error event.
    Moderated,
}

async fn answer(
    shared: &Shared,
    reset: &AtomicBool,
    style: Style,
    req: Request<Incoming>,
) -> HandlerResult {
    let key_ok = shared.cfg.api_key.as_deref().is_none_or(|key| {
        req.headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(key)
    });
    // Native streams are asked for by header only (the body has no `stream`).
    let sse = style == Style::Native
        && req
            .headers()
            .get(X_DASHSCOPE_SSE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"enable"));
    let stats = &shared.stats;
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            stats.record_request(style);
            bump(&stats.bad_requests);
            let id = shared.next_id();
            let failure = Failure::TooLarge;
            return Ok(error_response(style, failure, failure.message(style), &id));
        }
        // The client went away mid-body.
        Err(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request body")),
    };
    stats.record_request(style);
    if !key_ok {
        bump(&stats.bad_requests);
        let id = shared.next_id();
        let failure = Failure::InvalidApiKey;
        return Ok(error_response(style, failure, failure.message(style), &id));
    }
    if let Some(d) = shared.delay() {
        tokio::time::sleep(d).await;
    }
    let id = shared.next_id();
    let parsed = match style {
        Style::Chat => chat::parse_request(&body),
        Style::Responses => responses::parse_request(&body),
        Style::Native => native::parse_request(&body, sse),
    };
    let ask = match parsed {
        Ok(ask) => ask,
        Err(message) => {
            bump(&stats.bad_requests);
            return Ok(error_response(
                style,
                Failure::InvalidParameter,
                &message,
                &id,
            ));
        }
    };
    if let Err(message) = ask.check(style) {
        bump(&stats.bad_requests);
        return Ok(error_response(
            style,
            Failure::InvalidParameter,
            message,
            &id,
        ));
    }
    let mut delivery = Delivery::Whole;
    if let Some(failure) = trigger(&ask.prompt) {
        bump(&stats.bad_requests);
        if failure == Failure::OutputModeration && ask.stream {
            delivery = Delivery::Moderated;
        } else {
            return Ok(error_response(style, failure, failure.message(style), &id));
        }
    }
    if let Some(limiter) = &shared.limiter {
        let tokens = if shared.cfg.limits.tokens_per_second.is_some() {
            ask.input_tokens + Generated::new(&ask).output_tokens()
        } else {
            0
        };
        if let Err(wait) = limiter.admit(tokens) {
            bump(&stats.rate_limited);
            return Ok(rate_limited(style, &id, wait));
        }
    }
    let fault = if delivery == Delivery::Whole && shared.faults.active() {
        shared.faults.pick(&body)
    } else {
        None
    };
    match fault {
        None => Ok(success(shared, style, &ask, &id, delivery)),
        Some(Fault::RateLimit) => {
            bump(&stats.rate_limited);
            Ok(rate_limited(style, &id, shared.cfg.retry_after))
        }
        Some(Fault::ServerError) => {
            bump(&stats.server_errors);
            let failure = Failure::Internal;
            Ok(error_response(style, failure, failure.message(style), &id))
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
            let now = unix_now();
            let body = match style {
                Style::Chat => format!(
                    r#"{{"id":"chatcmpl-{id}","object":"chat.completion","created":{now},"choices":[{{"index":0,"message":"#
                ),
                Style::Responses => format!(
                    r#"{{"id":"resp_{id}","object":"response","created_at":{now},"status":"completed","output":[{{"id":"msg_{id}","type":"message","role":"assistant","content":[{{"type":"output_text","text":"Mock"#
                ),
                Style::Native => format!(
                    r#"{{"request_id":"{id}","output":{{"choices":[{{"finish_reason":"stop","message":{{"role":"assistant","content":"Mock"#
                ),
            };
            Ok(json_response(StatusCode::OK, Bytes::from(body), &id))
        }
        Some(Fault::Truncated) => {
            bump(&stats.truncated);
            Ok(success(shared, style, &ask, &id, Delivery::Truncated))
        }
        Some(Fault::Hang) => {
            bump(&stats.hangs);
            // Cancelled by shutdown (the connection task is aborted).
            tokio::time::sleep(shared.cfg.hang).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "mock: hang"))
        }
    }
}

/// A 429 asking the client to wait `wait` (`retry-after-ms`, and `retry-after` in whole
/// seconds rounded up).
fn rate_limited(style: Style, id: &str, wait: Duration) -> Response<MockBody> {
    let failure = Failure::RateLimited;
    let mut resp = error_response(style, failure, failure.message(style), id);
    let nanos = wait.as_nanos();
    let headers = resp.headers_mut();
    headers.insert(
        RETRY_AFTER_MS,
        HeaderValue::from(ceil_div(nanos, 1_000_000)),
    );
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from(ceil_div(nanos, 1_000_000_000)),
    );
    resp
}

fn ceil_div(n: u128, d: u128) -> u64 {
    u64::try_from(n.div_ceil(d)).unwrap_or(u64::MAX)
}

/// The test triggers that fail a request; see the module docs. `[mock:badjson]` is not one:
/// it only changes the content.
fn trigger(prompt: &str) -> Option<Failure> {
    if !prompt.contains("[mock:") {
        return None;
    }
    if prompt.contains("[mock:400]") {
        Some(Failure::InvalidParameter)
    } else if prompt.contains("[mock:moderation]") {
        Some(Failure::InputModeration)
    } else if prompt.contains("[mock:401]") {
        Some(Failure::InvalidApiKey)
    } else if prompt.contains("[mock:moderation-output]") {
        Some(Failure::OutputModeration)
    } else {
        None
    }
}

/// A successful answer delivered whole, truncated (the fault) or cut by output moderation.
fn success(
    shared: &Shared,
    style: Style,
    ask: &Ask<'_>,
    id: &str,
    delivery: Delivery,
) -> Response<MockBody> {
    let g = Generated::new(ask);
    let created = unix_now();
    // `[mock:dated]`: the answer names a dated snapshot of the model asked for, as OpenAI does.
    let dated;
    let model: &str = if ask.prompt.contains("[mock:dated]") {
        dated = format!("{}-2024-07-18", ask.model);
        &dated
    } else {
        &ask.model
    };
    let usage = !ask.prompt.contains("[mock:nousage]");
    let mut resp = if ask.stream {
        let Stream {
            mut frames,
            content_start,
            content_end,
        } = match style {
            Style::Chat => {
                let chat_id = format!("chatcmpl-{id}");
                let meta = chat::Meta {
                    id: &chat_id,
                    created,
                    model,
                    input_tokens: ask.input_tokens,
                };
                chat::stream_frames(&meta, &g, ask.include_usage)
            }
            Style::Responses => {
                let ids = ResponseIds::new(id);
                responses::stream_frames(&ids.meta(created, model, ask.input_tokens), &g)
            }
            Style::Native => native::stream_frames(id, ask, &g),
        };
        let body = match delivery {
            Delivery::Whole => MockBody::frames(
                frames,
                Some(OnComplete {
                    stats: Arc::clone(&shared.stats),
                    input_tokens: ask.input_tokens,
                    output_tokens: g.output_tokens(),
                    reasoning_tokens: g.reasoning_tokens,
                }),
            ),
            Delivery::Truncated => {
                // About half the events: never the finish, the usage or the final event.
                frames.truncate(frames.len() / 2);
                MockBody::truncated(frames, None)
            }
            Delivery::Moderated => {
                // Up to two content deltas, never the final event, then the error event.
                let cut = (content_start + 2)
                    .min(content_end)
                    .min(frames.len().saturating_sub(1));
                frames.truncate(cut);
                frames.push(moderation_event(style, cut, id));
                MockBody::frames(frames, None)
            }
        };
        let mut resp = Response::new(body);
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, EVENT_STREAM);
        headers.insert(CACHE_CONTROL, NO_CACHE);
        resp
    } else {
        let full = match style {
            Style::Chat => {
                let chat_id = format!("chatcmpl-{id}");
                let meta = chat::Meta {
                    id: &chat_id,
                    created,
                    model,
                    input_tokens: ask.input_tokens,
                };
                chat::completion_body(&meta, &g, usage)
            }
            Style::Responses => {
                let ids = ResponseIds::new(id);
                responses::response_body(&ids.meta(created, model, ask.input_tokens), &g)
            }
            Style::Native => native::generation_body(id, ask, &g),
        };
        let body = if delivery == Delivery::Truncated {
            let len = full.len() as u64;
            MockBody::truncated(vec![full.slice(..full.len() / 2)], Some(len))
        } else {
            shared
                .stats
                .record_ok(ask.input_tokens, g.output_tokens(), g.reasoning_tokens);
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

/// The output-moderation error event that replaces the rest of a stream; `at` is its index.
fn moderation_event(style: Style, at: usize, id: &str) -> Bytes {
    let failure = Failure::OutputModeration;
    let message = failure.message(style);
    match style {
        Style::Chat => {
            let (kind, code) = failure.openai();
            chat::stream_error(kind, code, message, id)
        }
        Style::Responses => responses::stream_error(failure.openai().1, message, at),
        Style::Native => native::stream_error(at + 1, failure.native(), message, id),
    }
}

/// The ids of one Responses answer.
struct ResponseIds {
    response: String,
    reasoning: String,
    message: String,
}

impl ResponseIds {
    fn new(id: &str) -> ResponseIds {
        ResponseIds {
            response: format!("resp_{id}"),
            reasoning: format!("rs_{id}"),
            message: format!("msg_{id}"),
        }
    }

    fn meta<'a>(&'a self, created: u64, model: &'a str, input_tokens: u64) -> responses::Meta<'a> {
        responses::Meta {
            id: &self.response,
            reasoning_id: &self.reasoning,
            message_id: &self.message,
            created,
            model,
            input_tokens,
        }
    }
}

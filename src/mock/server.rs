//! The mock's HTTP side: accept loop, per-connection hyper http1 service, request routing
//! (the Batch API's calls go to `batch`) and the order of the checks before an answer (key, parse, triggers, limits, fault draw).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::answer::{Ask, Generated};
use super::batch::{self, BatchApi};
use super::body::MockBody;
use super::config::MockConfig;
use super::errors::{ErrorAnswer, openai_body};
use super::faults::{Fault, FaultPicker};
use super::limits::Limiter;
use super::reply::{
    Delivery, error_answer, error_response, json_response, malformed, parse_request, rate_limited,
    stats_response, success, unavailable,
};
use super::stats::{Stats, bump};
use super::text;
use super::wire::Style;

/// Largest request body accepted (larger ones get a 400 "Payload Too Large").
const MAX_BODY: usize = 32 * 1024 * 1024;

const X_DASHSCOPE_SSE: HeaderName = HeaderName::from_static("x-dashscope-sse");

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
    batch: BatchApi,
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
    let batch = BatchApi::new(&cfg, Arc::clone(&stats));
    let shared = Arc::new(Shared {
        batch,
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
        && let Some(style) = Style::of_path(path)
    {
        answer(&shared, &reset, style, req).await
    } else if let Some(call) = batch::route(req.method().as_str(), path) {
        let id = shared.next_id();
        shared.batch.handle(call, req, &id).await
    } else if path.ends_with("/stats") && req.method() == Method::GET {
        Ok(stats_response(&shared.stats))
    } else {
        let message = format!("Invalid URL ({} {})", req.method(), path);
        let id = shared.next_id();
        Ok(json_response(
            StatusCode::NOT_FOUND,
            openai_body(&message, "invalid_request_error", None, &id),
            &id,
        ))
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
            return Ok(error_answer(style, ErrorAnswer::TooLarge, &id));
        }
        // The client went away mid-body.
        Err(_) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request body")),
    };
    stats.record_request(style);
    if !key_ok {
        bump(&stats.bad_requests);
        let id = shared.next_id();
        return Ok(error_answer(style, ErrorAnswer::InvalidApiKey, &id));
    }
    if let Some(d) = shared.delay() {
        tokio::time::sleep(d).await;
    }
    let id = shared.next_id();
    match parse_request(style, &body, sse) {
        Ok(ask) => respond(shared, reset, style, &body, &ask, &id).await,
        Err(message) => {
            bump(&stats.bad_requests);
            Ok(error_response(
                style,
                ErrorAnswer::InvalidParameter,
                &message,
                &id,
            ))
        }
    }
}

/// A parsed request: the shared checks, the triggers, the rate limits, then the fault draw.
async fn respond(
    shared: &Shared,
    reset: &AtomicBool,
    style: Style,
    body: &[u8],
    ask: &Ask<'_>,
    id: &str,
) -> HandlerResult {
    let stats = &shared.stats;
    if let Err(message) = ask.check(style) {
        bump(&stats.bad_requests);
        return Ok(error_response(
            style,
            ErrorAnswer::InvalidParameter,
            message,
            id,
        ));
    }
    let mut delivery = Delivery::Whole;
    if let Some(error) = ask.trigger() {
        bump(&stats.bad_requests);
        if error == ErrorAnswer::OutputModeration && ask.stream {
            delivery = Delivery::Moderated;
        } else {
            return Ok(error_answer(style, error, id));
        }
    }
    if let Some(limiter) = &shared.limiter {
        let tokens = if shared.cfg.limits.tokens_per_second.is_some() {
            ask.input_tokens + Generated::new(ask).output_tokens()
        } else {
            0
        };
        if let Err(wait) = limiter.admit(tokens) {
            bump(&stats.rate_limited);
            return Ok(rate_limited(style, id, wait));
        }
    }
    let fault = if delivery == Delivery::Whole && shared.faults.active() {
        shared.faults.pick(body)
    } else {
        None
    };
    match fault {
        None => Ok(success(stats, style, ask, id, delivery)),
        Some(fault) => deliver_fault(shared, reset, style, ask, id, fault).await,
    }
}

/// Counts the drawn fault and answers with it.
async fn deliver_fault(
    shared: &Shared,
    reset: &AtomicBool,
    style: Style,
    ask: &Ask<'_>,
    id: &str,
    fault: Fault,
) -> HandlerResult {
    let stats = &shared.stats;
    match fault {
        Fault::RateLimit => {
            bump(&stats.rate_limited);
            Ok(rate_limited(style, id, shared.cfg.retry_after))
        }
        Fault::ServerError => {
            bump(&stats.server_errors);
            Ok(error_answer(style, ErrorAnswer::Internal, id))
        }
        Fault::Unavailable => {
            bump(&stats.unavailable);
            Ok(unavailable())
        }
        Fault::Reset => {
            bump(&stats.resets);
            reset.store(true, Ordering::Relaxed);
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock: reset",
            ))
        }
        Fault::Malformed => {
            bump(&stats.malformed);
            Ok(malformed(style, id))
        }
        Fault::Truncated => {
            bump(&stats.truncated);
            Ok(success(stats, style, ask, id, Delivery::Truncated))
        }
        Fault::Hang => {
            bump(&stats.hangs);
            // Cancelled by shutdown (the connection task is aborted).
            tokio::time::sleep(shared.cfg.hang).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "mock: hang"))
        }
    }
}

//! The mock's HTTP responses: a successful answer delivered whole, truncated (the fault) or
//! cut by output moderation, error answers in each style's shape, 429s with their retry
//! headers, and the bodies of the other faults.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::answer::{Ask, Generated};
use super::body::{MockBody, OnComplete};
use super::errors::ErrorAnswer;
use super::stats::Stats;
use super::wire::{Stream, Style};
use super::{chat, native, responses};

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

pub(crate) fn stats_response(stats: &Stats) -> Response<MockBody> {
    let body = serde_json::to_vec(&stats.snapshot()).unwrap_or_default();
    let mut resp = Response::new(MockBody::full(body));
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

pub(crate) fn json_response(
    status: StatusCode,
    body: Bytes,
    request_id: &str,
) -> Response<MockBody> {
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
pub(crate) fn error_response(
    style: Style,
    error: ErrorAnswer,
    message: &str,
    request_id: &str,
) -> Response<MockBody> {
    json_response(
        error.status(),
        error.body(style, message, request_id),
        request_id,
    )
}

/// An error answer with its kind's own message.
pub(crate) fn error_answer(
    style: Style,
    error: ErrorAnswer,
    request_id: &str,
) -> Response<MockBody> {
    error_response(style, error, error.message(style), request_id)
}

/// A 429 asking the client to wait `wait` (`retry-after-ms`, and `retry-after` in whole
/// seconds rounded up).
pub(crate) fn rate_limited(style: Style, id: &str, wait: Duration) -> Response<MockBody> {
    let mut resp = error_answer(style, ErrorAnswer::RateLimited, id);
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

/// The `unavailable` fault: a gateway's 503 HTML page.
pub(crate) fn unavailable() -> Response<MockBody> {
    let mut resp = Response::new(MockBody::full(Bytes::from_static(
        UNAVAILABLE_PAGE.as_bytes(),
    )));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(CONTENT_TYPE, HTML);
    resp
}

/// The `malformed` fault: a 200 whose JSON, in the style's shape, stops midway.
pub(crate) fn malformed(style: Style, id: &str) -> Response<MockBody> {
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
    json_response(StatusCode::OK, Bytes::from(body), id)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a successful answer is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Whole,
    /// The `truncated` fault.
    Truncated,
    /// `[mock:moderation-output]` on a stream: a few events, then an error event.
    Moderated,
}

/// A successful answer delivered whole, truncated (the fault) or cut by output moderation.
pub(crate) fn success(
    stats: &Arc<Stats>,
    style: Style,
    ask: &Ask<'_>,
    id: &str,
    delivery: Delivery,
) -> Response<MockBody> {
    let g = Generated::new(ask);
    let model = answer_model(ask);
    let reply = Reply {
        style,
        ask,
        g: &g,
        id,
        created: unix_now(),
        model: &model,
    };
    let mut resp = if ask.stream {
        let Stream {
            mut frames,
            content_start,
            content_end,
        } = reply.stream();
        let body = match delivery {
            Delivery::Whole => MockBody::frames(
                frames,
                Some(OnComplete {
                    stats: Arc::clone(stats),
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
        let full = reply.body(!ask.prompt.contains("[mock:nousage]"));
        let body = if delivery == Delivery::Truncated {
            let len = full.len() as u64;
            MockBody::truncated(vec![full.slice(..full.len() / 2)], Some(len))
        } else {
            stats.record_ok(ask.input_tokens, g.output_tokens(), g.reasoning_tokens);
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

/// `[mock:dated]`: the answer names a dated snapshot of the model asked for, as OpenAI does.
fn answer_model<'a>(ask: &'a Ask<'_>) -> Cow<'a, str> {
    if ask.prompt.contains("[mock:dated]") {
        Cow::Owned(format!("{}-2024-07-18", ask.model))
    } else {
        Cow::Borrowed(&ask.model)
    }
}

/// Parses a request body of `style`; the error is the message of a 400 invalid parameter.
/// `sse` is the native stream header.
pub(crate) fn parse_request(style: Style, body: &[u8], sse: bool) -> Result<Ask<'_>, String> {
    match style {
        Style::Chat => chat::parse_request(body),
        Style::Responses => responses::parse_request(body),
        Style::Native => native::parse_request(body, sse),
    }
}

/// A whole (non-streamed) answer, as data rather than an HTTP response.
pub(crate) struct Whole {
    pub status: StatusCode,
    /// The JSON body, success or error.
    pub body: Bytes,
    /// (input, output including reasoning, reasoning) tokens of a success.
    pub tokens: Option<(u64, u64, u64)>,
}

/// What a synchronous request with this body would get, without the delay, the rate limits
/// and the fault draw, and always whole (a `stream` in the body is ignored): the answer the
/// Batch API gives a line. Stats are the caller's.
pub(crate) fn answer_whole(style: Style, body: &[u8], id: &str) -> Whole {
    let error = |kind: ErrorAnswer, message: &str| Whole {
        status: kind.status(),
        body: kind.body(style, message, id),
        tokens: None,
    };
    let mut ask = match parse_request(style, body, false) {
        Ok(ask) => ask,
        Err(message) => return error(ErrorAnswer::InvalidParameter, &message),
    };
    ask.stream = false;
    ask.include_usage = false;
    if let Err(message) = ask.check(style) {
        return error(ErrorAnswer::InvalidParameter, message);
    }
    if let Some(kind) = ask.trigger() {
        return error(kind, kind.message(style));
    }
    let g = Generated::new(&ask);
    let model = answer_model(&ask);
    let reply = Reply {
        style,
        ask: &ask,
        g: &g,
        id,
        created: unix_now(),
        model: &model,
    };
    Whole {
        status: StatusCode::OK,
        body: reply.body(!ask.prompt.contains("[mock:nousage]")),
        tokens: Some((ask.input_tokens, g.output_tokens(), g.reasoning_tokens)),
    }
}

/// One successful answer on its way to a wire format.
struct Reply<'a> {
    style: Style,
    ask: &'a Ask<'a>,
    g: &'a Generated,
    id: &'a str,
    created: u64,
    /// The model the answer names.
    model: &'a str,
}

impl Reply<'_> {
    /// The events of the streamed answer.
    fn stream(&self) -> Stream {
        let (ask, g) = (self.ask, self.g);
        match self.style {
            Style::Chat => {
                let chat_id = format!("chatcmpl-{}", self.id);
                chat::stream_frames(&self.chat_meta(&chat_id), g, ask.include_usage)
            }
            Style::Responses => {
                let ids = ResponseIds::new(self.id);
                responses::stream_frames(&ids.meta(self.created, self.model, ask.input_tokens), g)
            }
            Style::Native => native::stream_frames(self.id, ask, g),
        }
    }

    /// The non-streaming body; `usage: false` leaves the chat `usage` out.
    fn body(&self, usage: bool) -> Bytes {
        let (ask, g) = (self.ask, self.g);
        match self.style {
            Style::Chat => {
                let chat_id = format!("chatcmpl-{}", self.id);
                chat::completion_body(&self.chat_meta(&chat_id), g, usage)
            }
            Style::Responses => {
                let ids = ResponseIds::new(self.id);
                responses::response_body(&ids.meta(self.created, self.model, ask.input_tokens), g)
            }
            Style::Native => native::generation_body(self.id, ask, g),
        }
    }

    fn chat_meta<'a>(&'a self, chat_id: &'a str) -> chat::Meta<'a> {
        chat::Meta {
            id: chat_id,
            created: self.created,
            model: self.model,
            input_tokens: self.ask.input_tokens,
        }
    }
}

/// The output-moderation error event that replaces the rest of a stream; `at` is its index.
fn moderation_event(style: Style, at: usize, id: &str) -> Bytes {
    let error = ErrorAnswer::OutputModeration;
    let message = error.message(style);
    match style {
        Style::Chat => {
            let (kind, code) = error.openai();
            chat::stream_error(kind, code, message, id)
        }
        Style::Responses => responses::stream_error(error.openai().1, message, at),
        Style::Native => native::stream_error(at + 1, error.native(), message, id),
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

//! A simulated Qwen Cloud (DashScope) endpoint speaking its three API styles: OpenAI Chat
//! Completions, the OpenAI Responses API and DashScope native text generation, each plain and
//! streamed (SSE), for `batchgen mock-server`, `batchgen run --base-url mock`, the black-box
//! tests and benchmarks.
//!
//! # Routes
//!
//! POST paths are matched by suffix, so any prefix works (`/v1/…`, `/compatible-mode/v1/…`,
//! `/api/v1/…`, `/api/v2/apps/protocols/compatible-mode/v1/…`):
//!
//! - `…/chat/completions`: Chat Completions ("chat").
//! - `…/responses`: Responses API ("responses").
//! - `…/services/aigc/text-generation/generation` and
//!   `…/services/aigc/multimodal-generation/generation` (same handling): DashScope native
//!   ("native").
//! - `GET …/stats`: the [`StatsSnapshot`] as JSON.
//! - Anything else (other paths, other methods): 404 with an OpenAI-style error body.
//!
//! # Requests
//!
//! - chat: `model`, `messages`, `stream`, `stream_options.include_usage`,
//!   `max_completion_tokens` (else `max_tokens`), `enable_thinking`, `thinking_budget`,
//!   `response_format`.
//! - responses: `model`, `input` (a string = one user message, or an array of
//!   `{role, content}`), `instructions`, `max_output_tokens`, `stream`, `enable_thinking`,
//!   `text.format`. `thinking_budget` is not supported by this API and is ignored.
//! - native: `model`, `input.messages` or else `input.prompt` (= one user message), and under
//!   `parameters`: `result_format`, `incremental_output`, `enable_thinking`, `thinking_budget`,
//!   `max_tokens`, `response_format`. A stream is asked for only by the request header
//!   `X-DashScope-SSE: enable` (value case-insensitive); a `stream` field is ignored.
//!
//! All other fields (`temperature`, `top_p`, `seed`, `stop`, …) are accepted and ignored.
//! `model` defaults to `mock-model` and is echoed back where the style has it. Message
//! `content` is a string, null, or an array of parts whose text is joined with `\n`; a part
//! counts when its `type` is `text`, `input_text` or `output_text`, or when it has no `type`
//! (native multimodal `{"text": …}`).
//!
//! # Answers (all styles)
//!
//! - prompt = the text of the last message with role `user`.
//! - input tokens = sum over all messages of [`count_tokens`]`(content) + 4`; responses
//!   `instructions`, when present, count as one more message; a string `input` or a native
//!   `prompt` is one message.
//! - content = [`reply_for`]`(prompt)`, or in JSON mode / with a JSON schema as below.
//! - thinking (`enable_thinking: true`; native: `parameters.enable_thinking`): reasoning =
//!   [`reasoning_for`]`(prompt)`, cut to its first 4·B chars when `thinking_budget` B is given
//!   (chat top-level; native `parameters`); reasoning tokens = [`count_tokens`]`(reasoning)`, so
//!   `min(count_tokens(reasoning_for(prompt)), B)`. Without thinking there is no reasoning and
//!   0 reasoning tokens.
//! - output tokens = [`count_tokens`]`(content)` + reasoning tokens (the OpenAI convention);
//!   total = input + output.
//! - max tokens M (chat `max_completion_tokens`, else `max_tokens`; responses
//!   `max_output_tokens`; native `parameters.max_tokens`) limits the content only, never the
//!   reasoning: a content longer than M tokens is cut to its first 4·M chars, counts M tokens,
//!   and finishes with `length` (responses: incomplete, below); otherwise `stop`.
//! - JSON mode (chat `response_format: {"type":"json_object"}`; responses
//!   `text: {"format": {"type":"json_object"}}`; native `parameters.response_format` as chat):
//!   if no message content (nor responses `instructions`) contains `json` in any letter case,
//!   400 invalid parameter with the message `'messages' must contain the word 'json' in some
//!   form, to use 'response_format' of type 'json_object'`. Otherwise the content is the compact
//!   JSON `{"answer":<reply_for(prompt) as a JSON string>}`.
//! - JSON schema (chat and native `response_format:
//!   {"type":"json_schema","json_schema":{"name","schema","strict"}}`; responses
//!   `text.format: {"type":"json_schema","name","schema"}`, flat; either place is read in every
//!   style): no "json" word needed; the content is one compact JSON instance of the schema:
//!   - `$ref` to `#/$defs/N` or `#/definitions/N` of the root schema: that definition
//!     (unresolvable: `null`);
//!   - else `const`: that value; else a non-empty `enum`: its first value;
//!   - else by `type` (for an array of types, the first one other than `"null"`): `object` →
//!     every property of `properties` in the order the request lists them, generated
//!     recursively (no `properties`: `{}`); `string` → `reply_for(prompt)`; `integer` →
//!     `count_tokens(prompt)`; `number` → the same as a float (`12.0`); `boolean` → `true`;
//!     `array` → a one-element array of `items` (the first schema if `items` is an array;
//!     none: `[null]`); `null` or an unknown type → `null`;
//!   - no `type`: `properties` present → as `object`; else the first schema of
//!     `anyOf`/`oneOf`/`allOf`; else `null`. A missing `schema` → `null`. Nesting deeper than
//!     32 levels generates `null`.
//! - Any other `response_format` / `text.format` type is plain text.
//! - Partial mode (chat and native; responses ignores `partial`): when the last message has
//!   role `assistant` and `"partial": true`, the content is `reply_for(prompt)` (the
//!   continuation only, without the prefix); the prefix counts toward input tokens like any
//!   message. With thinking on: 400 invalid parameter `partial mode is not supported in
//!   thinking mode`.
//! - Streaming-only models: a model whose name starts with `qwq` or `qvq`, or is
//!   `mock-stream-only`, answers every non-streaming request with 400 invalid parameter `This
//!   model only support stream mode, please enable the stream parameter to access the model.`
//!   Streaming requests work normally.
//! - Native streams with thinking need `parameters.incremental_output: true`, else 400 invalid
//!   parameter `The incremental_output parameter must be "true" when enable_thinking is true`.
//!
//! Other 400 invalid parameter answers: a body that is not JSON or has a wrongly typed field;
//! chat: no or empty `messages`; responses: no `input` or an empty array; native: neither
//! non-empty `input.messages` nor `input.prompt` (`Either "prompt" or "messages" must exist and
//! cannot both be none.`); no user message; a max tokens or `thinking_budget` of 0. A body over
//! 32 MiB: 400 `Payload Too Large` (chat/responses code `invalid_request_error`; native
//! `InvalidParameter`).
//!
//! Checks run in this order, the first failing one answers: parse and the errors just listed,
//! streaming-only model, partial with thinking, native thinking without incremental output,
//! JSON mode without "json"; then the triggers; then the rate limits; then the fault draw.
//!
//! # Keys
//!
//! With [`MockConfig::api_key`] (`mock-server --require-key-env VAR`), a request whose
//! `Authorization` is not `Bearer <key>` gets 401 `invalid_api_key` (native `InvalidApiKey`)
//! before anything else, and counts as `bad_requests`.
//!
//! # Rate limits
//!
//! [`RateLimits`] (`mock-server --rpm N --rps N --tpm N`) are enforced per second, as
//! DashScope enforces RPM/60 and TPM/60: token buckets holding at most one second's worth
//! (at least one request). A request that does not fit (requests, or its input plus output
//! tokens) gets 429 `limit_requests` (native `Throttling.RateQuota`) with `retry-after-ms` and
//! `retry-after` set to the wait until it would fit, and counts as `rate_limited`. With
//! [`RateLimits::sliding`] (`--sliding-window`) the figures are instead the most admitted in
//! any sliding second (requests rounded down, at least one; a request larger than the token
//! figure fits only an empty second).
//!
//! # Chat Completions wire format
//!
//! 200: `{"id":"chatcmpl-<request id>","object":"chat.completion","created","model",
//! "choices":[{"index":0,"message":{"role":"assistant","content"[,"reasoning_content"]},
//! "finish_reason","logprobs":null}],"usage":{"prompt_tokens","completion_tokens",
//! "total_tokens","prompt_tokens_details":{"cached_tokens":0}
//! [,"completion_tokens_details":{"reasoning_tokens"}]}}`; the bracketed parts only with
//! thinking. `completion_tokens` is the output tokens (reasoning included).
//!
//! `"stream": true`: `data: <chunk>\n\n` events, each its own write: a role chunk (`delta`
//! `{"role":"assistant","content":""}`), with thinking 4–8 chunks with `delta`
//! `{"reasoning_content":…}`, 4–8 content chunks (`{"content":…}`), a finish chunk (`delta` `{}`
//! and the `finish_reason`), a usage chunk (`"choices":[]`, usage as above) if
//! `stream_options.include_usage`, then `data: [DONE]`. (Pieces are fewer than 4 only for texts
//! shorter than 4 chars.) With include_usage every other chunk has `"usage":null`; without it
//! no chunk has `usage`.
//!
//! # Responses wire format
//!
//! 200: `{"id":"resp_<request id>","object":"response","created_at","status":"completed",
//! "model","output":[…],"usage":{"input_tokens","input_tokens_details":{"cached_tokens":0},
//! "output_tokens","output_tokens_details":{"reasoning_tokens"},"total_tokens"},
//! "incomplete_details":null}`. `output` is, with thinking, first
//! `{"id":"rs_<request id>","type":"reasoning","summary":[{"type":"summary_text","text":
//! <reasoning>}]}`, then always `{"id":"msg_<request id>","type":"message","role":"assistant",
//! "status":"completed","content":[{"type":"output_text","text":<content>,"annotations":[]}]}`.
//! When max_output_tokens cut the content, the response and the message item have
//! `"status":"incomplete"` and `"incomplete_details":{"reason":"max_output_tokens"}`.
//!
//! `"stream": true`: events `event:<type>\ndata:<json>\n\n` with no space after the colons, no
//! `[DONE]`; each data has `"type"` = the event name and `"sequence_number"` counting from 0:
//! 1. `response.created`, 2. `response.in_progress` (both `{"response": <the object with status
//!    in_progress, "output":[], "usage":null>}`);
//! 3. with thinking (output_index 0): `response.output_item.added` (`{"output_index","item"}`,
//!    the reasoning item with `"summary":[]`), 4–8 `response.reasoning_summary_text.delta`
//!    (`{"item_id","output_index","summary_index":0,"delta"}`),
//!    `response.reasoning_summary_text.done` (`…,"text"` = the whole reasoning),
//!    `response.output_item.done` (the full reasoning item);
//! 4. for the message (output_index 1 with thinking, else 0): `response.output_item.added`
//!    (message item, status in_progress, `"content":[]`), `response.content_part.added`
//!    (`{"item_id","output_index","content_index":0,"part":{"type":"output_text","text":"",
//!    "annotations":[]}}`), 4–8 `response.output_text.delta`
//!    (`{"item_id","output_index","content_index":0,"delta"}`), `response.output_text.done`
//!    (`…,"text"` = the whole content), `response.content_part.done` (the full part),
//!    `response.output_item.done` (the full message item);
//! 5. `response.completed` with `{"response": <the full non-stream object>}`, or, when
//!    max_output_tokens cut the content, `response.incomplete` with the same (incomplete)
//!    object.
//!
//! # DashScope native wire format
//!
//! 200 with `result_format` absent or `"text"`: `{"request_id","output":{"text":<content>,
//! "finish_reason"},"usage"}`; the reasoning is not shown in this format but its tokens count.
//! With `result_format: "message"`: `{"request_id","output":{"text":null,"finish_reason":null,
//! "choices":[{"finish_reason","message":{"role":"assistant","content",
//! "reasoning_content":<reasoning, "" without thinking>}}]},"usage"}`. `usage` is
//! `{"input_tokens","output_tokens","total_tokens","output_tokens_details":{"reasoning_tokens"},
//! "prompt_tokens_details":{"cached_tokens":0}}`.
//!
//! Streams (`X-DashScope-SSE: enable`; `content-type: text/event-stream`, no `[DONE]`): events
//! of the exact form `id:<n>\nevent:result\n:HTTP_STATUS/200\ndata:<json>\n\n`, n from 1, each
//! data shaped like the 200 body of its format. First (message format with thinking) 4–8
//! reasoning chunks (`reasoning_content` pieces, `content` ""), then 4–8 content chunks; every
//! chunk's `finish_reason` is the string `"null"` except the last content chunk's, which is
//! `stop`/`length`. With `incremental_output: true` each chunk carries only its new piece (and
//! content chunks `reasoning_content` ""); otherwise (the native default) each carries the
//! whole text so far. `usage` is on every chunk and cumulative: `input_tokens` constant,
//! `output_tokens` = count_tokens(reasoning so far) + count_tokens(content so far) (in the text
//! format all reasoning tokens count from the first chunk), `reasoning_tokens` = the reasoning
//! part; the last chunk carries the totals. Quirk: the last event of every native stream (also
//! an error event) ends with a single `\n`, no blank line, before the body ends.
//!
//! # Errors
//!
//! Every non-200 JSON answer has `content-type: application/json` and the request id in the
//! `x-request-id` header. chat and responses: `{"error":{"message","type","param":null,"code"},
//! "request_id"}`; native: `{"request_id","code","message"}`.
//!
//! | kind | status | chat/responses `code` (`type`) | native `code` |
//! |---|---|---|---|
//! | invalid parameter | 400 | `invalid_parameter_error` (`invalid_request_error`) | `InvalidParameter` |
//! | input/output moderation | 400 | `data_inspection_failed` (`data_inspection_failed`) | `DataInspectionFailed` |
//! | invalid API key | 401 | `invalid_api_key` (`invalid_request_error`) | `InvalidApiKey` |
//! | rate limit | 429 | `limit_requests` (`limit_requests`) | `Throttling.RateQuota` |
//! | server error | 500 | `internal_error` (`internal_error`) | `InternalError` |
//!
//! # Test triggers (in the prompt)
//!
//! - `[mock:400]`: 400 invalid parameter.
//! - `[mock:moderation]`: input moderation, 400, message "Input data may contain inappropriate
//!   content.".
//! - `[mock:401]`: 401 invalid API key ("Incorrect API key provided. "; native "Invalid API-key
//!   provided.").
//! - `[mock:moderation-output]`: output moderation, message "Output data may contain
//!   inappropriate content.". Non-streaming: 400. Streaming: 200 and the normal events up to
//!   and including the first two content deltas (never the finish, usage or final event), then
//!   one error event, then the body ends cleanly:
//!   - chat: `data: {"error":{"message","type":"data_inspection_failed","param":null,
//!     "code":"data_inspection_failed"},"request_id"}\n\n`, no `[DONE]`;
//!   - responses: `event:error\ndata:{"type":"error","code":"data_inspection_failed",
//!     "message","param":null,"sequence_number"}\n\n`;
//!   - native: `id:<n>\nevent:error\n:HTTP_STATUS/400\ndata:{"request_id",
//!     "code":"DataInspectionFailed","message"}\n` (the last event: one newline).
//! - `[mock:badjson]`: in JSON mode or with a JSON schema, the content is not valid JSON:
//!   `Sure! Here it is: {"answer": ` followed by `reply_for(prompt)` as a JSON string, unclosed;
//!   tokens counted as usual. Without a JSON format it is ignored. Such answers are normal 200s.
//! - `[mock:dated]`: the answer's `model` (chat and responses) is the model asked for with
//!   `-2024-07-18` appended, as OpenAI names a dated snapshot. A normal 200.
//! - `[mock:nousage]`: a non-streaming chat answer has no `usage`. A normal 200.
//!
//! The first four are checked in that order, after the request checks and before any fault is
//! drawn, and count as `bad_requests` (a moderated stream when it starts; it is never `ok` and
//! adds no tokens).
//!
//! # Faults
//!
//! After the optional delay (`latency` + uniform `0..=jitter`), one random draw per request
//! against [`FaultRates`] (only for the first `fault_attempts` sightings of the exact same body
//! when that is non-zero) picks at most one fault, in every style:
//!
//! - `rate_limit`: 429 in the style's error shape, with `retry-after-ms` and `retry-after`
//!   (whole seconds, rounded up).
//! - `server_error`: 500 in the style's error shape.
//! - `unavailable`: 503 with an HTML gateway page (`text/html`).
//! - `reset`: the connection is reset (RST) without any response.
//! - `malformed`: 200 `application/json` whose body is cut-off JSON of the style's shape (also
//!   for stream requests).
//! - `truncated`: 200 announcing the full content-length but closing after half the body; for
//!   streams, the first half (rounded down) of the events, then the connection closes without
//!   ending the body (no finish chunk, usage, `response.completed` or final native event, no
//!   `[DONE]`).
//! - `hang`: nothing is sent for `hang`, then the connection closes.
//!
//! # Stats
//!
//! `requests` counts POSTs to the three routes whose body was read, and `chat_requests`,
//! `responses_requests`, `native_requests` split it by style. Each request ends as exactly one of
//! `ok`, a fault counter or `bad_requests` (a stream the client abandons midway counts as none).
//! `ok` and the token sums (`input_tokens`, `output_tokens` including reasoning,
//! `reasoning_tokens`) count complete successful answers; a stream counts once its last event is
//! produced. 404s and `/stats` are not counted.

mod answer;
mod body;
mod chat;
mod config;
mod errors;
mod faults;
mod limits;
mod message;
mod native;
mod reply;
mod responses;
mod schema;
mod server;
mod stats;
mod text;
mod wire;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::MockConfig;
pub use faults::FaultRates;
pub use limits::RateLimits;
pub use stats::StatsSnapshot;
pub use text::{count_tokens, reasoning_for, reply_for};

/// A running mock endpoint. Dropping it stops the server too (without waiting).
pub struct MockServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: Arc<stats::Stats>,
}

impl MockServer {
    /// Binds `addr` (use 127.0.0.1:0 for a free port) and serves in a spawned task.
    pub async fn start(cfg: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        let stats = Arc::new(stats::Stats::default());
        let cancel = CancellationToken::new();
        let (addr, task) = server::spawn(cfg, addr, Arc::clone(&stats), cancel.clone()).await?;
        Ok(MockServer {
            addr,
            cancel,
            task: Some(task),
            stats,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1` (the loopback address if bound to an unspecified one).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}/v1")
    }

    /// The counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops accepting, ends every connection (hanging requests included) and joins.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// For `batchgen mock-server`: start on 127.0.0.1:`port` (0 = free port), print
/// `mock-server listening on http://127.0.0.1:PORT/v1`, serve until Ctrl-C/SIGTERM, then print
/// the stats as one JSON line and return.
pub async fn run_cli(cfg: MockConfig, port: u16) -> anyhow::Result<()> {
    let server = MockServer::start(cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mock-server listening on {}", server.base_url())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    let stats = Arc::clone(&server.stats);
    server.shutdown().await;
    let line = serde_json::to_string(&stats.snapshot())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

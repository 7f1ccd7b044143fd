//! DashScope native text-generation wire format for the mock: request parsing (options under
//! `parameters`, streaming signalled by the `X-DashScope-SSE: enable` header), the `text` and
//! `message` result formats, cumulative or incremental SSE, and the native error event.

use std::borrow::Cow;
use std::io::Write as _;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::answer::{Ask, Format, Generated};
use super::errors::{MAX_TOKENS_RANGE, NativeError, THINKING_BUDGET_RANGE};
use super::message::{Content, RawFormat, RawMessage, conversation};
use super::text::{count_tokens, split_content};
use super::wire::{CachedTokens, ReasoningTokens, Stream, to_json, write_json};

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<RawInput<'a>>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct RawInput<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<RawMessage<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<Content<'a>>,
}

#[derive(Deserialize, Default)]
struct Parameters {
    #[serde(default)]
    result_format: Option<String>,
    #[serde(default)]
    incremental_output: Option<bool>,
    #[serde(default)]
    enable_thinking: Option<bool>,
    #[serde(default)]
    thinking_budget: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    response_format: Option<RawFormat>,
}

pub(crate) const NO_INPUT: &str =
    "Either \"prompt\" or \"messages\" must exist and cannot both be none.";

/// Parses and validates a request body (`stream`: the request had `X-DashScope-SSE: enable`);
/// the error is the message for a 400.
pub(crate) fn parse_request(body: &[u8], stream: bool) -> Result<Ask<'_>, String> {
    let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        format!("The request body is not valid JSON or has a wrong field type: {e}")
    })?;
    let (messages, prompt) = match raw.input {
        Some(input) => (input.messages, input.prompt),
        None => (None, None),
    };
    let messages = match (messages, prompt) {
        (Some(m), _) if !m.is_empty() => m,
        (_, Some(prompt)) => vec![RawMessage {
            role: Cow::Borrowed("user"),
            content: prompt,
            partial: None,
        }],
        _ => return Err(NO_INPUT.to_owned()),
    };
    let p = raw.parameters.unwrap_or_default();
    if p.max_tokens == Some(0) {
        return Err(MAX_TOKENS_RANGE.to_owned());
    }
    if p.thinking_budget == Some(0) {
        return Err(THINKING_BUDGET_RANGE.to_owned());
    }
    let format = p
        .response_format
        .map_or(Format::Text, RawFormat::into_format);
    let conv = conversation(messages, None, matches!(format, Format::JsonObject))?;
    Ok(Ask {
        model: raw.model.unwrap_or(Cow::Borrowed("mock-model")),
        prompt: conv.prompt,
        input_tokens: conv.input_tokens,
        stream,
        max_tokens: p.max_tokens,
        thinking: p.enable_thinking.unwrap_or(false),
        thinking_budget: p.thinking_budget,
        format,
        partial: conv.partial,
        mentions_json: conv.mentions_json,
        include_usage: false,
        message_format: p.result_format.as_deref() == Some("message"),
        incremental: p.incremental_output.unwrap_or(false),
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Body<'a> {
    request_id: &'a str,
    output: Output<'a>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Output<'a> {
    Text {
        text: &'a str,
        finish_reason: &'a str,
    },
    Message {
        text: Option<()>,
        finish_reason: Option<()>,
        choices: [Choice<'a>; 1],
    },
}

#[derive(Serialize)]
struct Choice<'a> {
    finish_reason: &'a str,
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    reasoning_content: &'a str,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    output_tokens_details: ReasoningTokens,
    prompt_tokens_details: CachedTokens,
}

fn usage(input: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        output_tokens_details: ReasoningTokens {
            reasoning_tokens: reasoning,
        },
        prompt_tokens_details: CachedTokens { cached_tokens: 0 },
    }
}

/// One body (or chunk): content, reasoning, finish reason and token counts.
struct Piece<'a> {
    content: &'a str,
    reasoning: &'a str,
    finish_reason: &'a str,
    output_tokens: u64,
    reasoning_tokens: u64,
}

fn body<'a>(request_id: &'a str, message_format: bool, input: u64, p: &Piece<'a>) -> Body<'a> {
    let output = if message_format {
        Output::Message {
            text: None,
            finish_reason: None,
            choices: [Choice {
                finish_reason: p.finish_reason,
                message: Message {
                    role: "assistant",
                    content: p.content,
                    reasoning_content: p.reasoning,
                },
            }],
        }
    } else {
        Output::Text {
            text: p.content,
            finish_reason: p.finish_reason,
        }
    };
    Body {
        request_id,
        output,
        usage: usage(input, p.output_tokens, p.reasoning_tokens),
    }
}

/// The non-streaming success body.
pub(crate) fn generation_body(request_id: &str, ask: &Ask<'_>, g: &Generated) -> Bytes {
    let piece = Piece {
        content: &g.content,
        reasoning: &g.reasoning,
        finish_reason: g.finish.as_str(),
        output_tokens: g.output_tokens(),
        reasoning_tokens: g.reasoning_tokens,
    };
    to_json(
        &body(request_id, ask.message_format, ask.input_tokens, &piece),
        300 + g.content.len() + g.reasoning.len(),
    )
}

/// Writes one event. The last event of a stream ends in a single `\n`, the others in `\n\n`.
fn event(
    id: usize,
    kind: &str,
    status: u16,
    data: &impl Serialize,
    capacity: usize,
    last: bool,
) -> Bytes {
    let mut buf = Vec::with_capacity(capacity + 64);
    let _ = write!(buf, "id:{id}\nevent:{kind}\n:HTTP_STATUS/{status}\ndata:");
    write_json(&mut buf, data);
    buf.extend_from_slice(if last { b"\n" } else { b"\n\n" });
    Bytes::from(buf)
}

/// The SSE events of a streamed answer: (message format with thinking) the reasoning chunks,
/// then the content chunks, the last one with the finish reason; see `docs/mock.md`.
pub(crate) fn stream_frames(request_id: &str, ask: &Ask<'_>, g: &Generated) -> Stream {
    let reasoning = if g.thinking && ask.message_format {
        split_content(&g.reasoning)
    } else {
        Vec::new()
    };
    let content = split_content(&g.content);
    let total = reasoning.len() + content.len();
    let mut frames = Vec::with_capacity(total);
    let cap = 300 + request_id.len();
    let push = |frames: &mut Vec<Bytes>, p: Piece<'_>| {
        let n = frames.len() + 1;
        let data = body(request_id, ask.message_format, ask.input_tokens, &p);
        let extra = p.content.len() + p.reasoning.len();
        frames.push(event(n, "result", 200, &data, cap + extra, n == total));
    };
    let mut end = 0;
    for piece in &reasoning {
        end += piece.len();
        let so_far = &g.reasoning[..end];
        let tokens = count_tokens(so_far);
        push(
            &mut frames,
            Piece {
                content: "",
                reasoning: if ask.incremental { piece } else { so_far },
                finish_reason: "null",
                output_tokens: tokens,
                reasoning_tokens: tokens,
            },
        );
    }
    let content_start = frames.len();
    let mut end = 0;
    for (i, piece) in content.iter().enumerate() {
        end += piece.len();
        let so_far = &g.content[..end];
        push(
            &mut frames,
            Piece {
                content: if ask.incremental { piece } else { so_far },
                reasoning: if ask.incremental { "" } else { &g.reasoning },
                finish_reason: if i + 1 == content.len() {
                    g.finish.as_str()
                } else {
                    "null"
                },
                output_tokens: g.reasoning_tokens + count_tokens(so_far),
                reasoning_tokens: g.reasoning_tokens,
            },
        );
    }
    let content_end = frames.len();
    Stream {
        frames,
        content_start,
        content_end,
    }
}

/// The stream's final event: an `error` event with id `id` and a `:HTTP_STATUS/400` line.
pub(crate) fn stream_error(id: usize, code: &str, message: &str, request_id: &str) -> Bytes {
    let data = NativeError {
        request_id,
        code,
        message,
    };
    event(id, "error", 400, &data, message.len() + 100, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_or_messages() {
        let ask =
            parse_request(br#"{"model":"m","input":{"prompt":"hi there"}}"#, false).expect("valid");
        assert_eq!(ask.prompt, "hi there");
        assert_eq!(ask.input_tokens, count_tokens("hi there") + 4);
        assert!(!ask.message_format);
        for bad in [
            r#"{"model":"m"}"#,
            r#"{"model":"m","input":{}}"#,
            r#"{"model":"m","input":{"messages":[]}}"#,
        ] {
            assert_eq!(
                parse_request(bad.as_bytes(), false).err().as_deref(),
                Some(NO_INPUT)
            );
        }
        let ask = parse_request(
            br#"{"input":{"messages":[{"role":"user","content":"x"}]},"parameters":{"result_format":"message","incremental_output":true,"enable_thinking":true,"thinking_budget":4}}"#,
            true,
        )
        .expect("valid");
        assert!(ask.message_format && ask.incremental && ask.thinking && ask.stream);
        assert_eq!(ask.thinking_budget, Some(4));
    }
}

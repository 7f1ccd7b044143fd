//! Chat Completions wire format for the mock: request parsing (borrowed, one pass) and the
//! JSON/SSE bodies.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::answer::{Ask, Format, Generated};
use super::errors::{MAX_TOKENS_RANGE, OpenAiError, THINKING_BUDGET_RANGE};
use super::message::{RawFormat, RawMessage, conversation};
use super::text::split_content;
use super::wire::{CachedTokens, ReasoningTokens, Stream, to_json, write_json};

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Vec<RawMessage<'a>>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    enable_thinking: Option<bool>,
    #[serde(default)]
    thinking_budget: Option<u64>,
    #[serde(default)]
    response_format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Parses and validates a request body; the error is the message for a 400.
pub(crate) fn parse_request(body: &[u8]) -> Result<Ask<'_>, String> {
    let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        format!("The request body is not valid JSON or has a wrong field type: {e}")
    })?;
    let messages = match raw.messages {
        Some(m) if !m.is_empty() => m,
        _ => return Err("'messages' must be a non-empty array.".to_owned()),
    };
    let max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
    if max_tokens == Some(0) {
        return Err(MAX_TOKENS_RANGE.to_owned());
    }
    if raw.thinking_budget == Some(0) {
        return Err(THINKING_BUDGET_RANGE.to_owned());
    }
    let format = raw
        .response_format
        .map_or(Format::Text, RawFormat::into_format);
    let conv = conversation(messages, None, matches!(format, Format::JsonObject))?;
    let stream = raw.stream.unwrap_or(false);
    Ok(Ask {
        model: raw.model.unwrap_or(Cow::Borrowed("mock-model")),
        prompt: conv.prompt,
        input_tokens: conv.input_tokens,
        stream,
        max_tokens,
        thinking: raw.enable_thinking.unwrap_or(false),
        thinking_budget: raw.thinking_budget,
        format,
        partial: conv.partial,
        mentions_json: conv.mentions_json,
        include_usage: stream
            && raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        message_format: false,
        incremental: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    /// Only with thinking.
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<ReasoningTokens>,
}

impl Usage {
    fn new(input_tokens: u64, g: &Generated) -> Usage {
        let completion = g.output_tokens();
        Usage {
            prompt_tokens: input_tokens,
            completion_tokens: completion,
            total_tokens: input_tokens + completion,
            prompt_tokens_details: CachedTokens { cached_tokens: 0 },
            completion_tokens_details: g.thinking.then_some(ReasoningTokens {
                reasoning_tokens: g.reasoning_tokens,
            }),
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    /// Absent with `[mock:nousage]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'a str,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
    /// Only with thinking.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent without include_usage; `null` on ordinary chunks with it; the totals at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
    logprobs: Option<()>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

/// The ids and time of one answer.
pub(crate) struct Meta<'a> {
    /// `chatcmpl-<request id>`.
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub input_tokens: u64,
}

/// The non-streaming success body; without `usage` when `usage` is false.
pub(crate) fn completion_body(m: &Meta<'_>, g: &Generated, usage: bool) -> Bytes {
    let body = Completion {
        id: m.id,
        object: "chat.completion",
        created: m.created,
        model: m.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: &g.content,
                reasoning_content: g.thinking.then_some(g.reasoning.as_str()),
            },
            finish_reason: g.finish.as_str(),
            logprobs: None,
        }],
        usage: usage.then(|| Usage::new(m.input_tokens, g)),
    };
    to_json(
        &body,
        360 + g.content.len() + g.reasoning.len() + m.model.len(),
    )
}

fn sse_frame<T: Serialize>(value: &T, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    buf.extend_from_slice(b"data: ");
    write_json(&mut buf, value);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

pub(crate) const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// The SSE events of a streamed answer, each one frame: the role chunk, (with thinking) 4-8
/// `reasoning_content` chunks, 4-8 content chunks, the finish chunk, the usage chunk (if asked
/// for) and `[DONE]`.
pub(crate) fn stream_frames(m: &Meta<'_>, g: &Generated, include_usage: bool) -> Stream {
    let reasoning = if g.thinking {
        split_content(&g.reasoning)
    } else {
        Vec::new()
    };
    let pieces = split_content(&g.content);
    let mut frames = Vec::with_capacity(reasoning.len() + pieces.len() + 4);
    let usage_null = if include_usage { Some(None) } else { None };
    let cap = 200 + m.model.len();
    let chunk = |choices: &[ChunkChoice<'_>], usage: Option<Option<Usage>>, extra: usize| {
        sse_frame(
            &Chunk {
                id: m.id,
                object: "chat.completion.chunk",
                created: m.created,
                model: m.model,
                choices,
                usage,
            },
            cap + extra,
        )
    };
    let one = |delta, finish_reason| {
        [ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            logprobs: None,
        }]
    };
    let role = Delta {
        role: Some("assistant"),
        content: Some(""),
        ..Delta::default()
    };
    frames.push(chunk(&one(role, None), usage_null, 0));
    for piece in &reasoning {
        let delta = Delta {
            reasoning_content: Some(piece),
            ..Delta::default()
        };
        frames.push(chunk(&one(delta, None), usage_null, piece.len()));
    }
    let content_start = frames.len();
    for piece in &pieces {
        let delta = Delta {
            content: Some(piece),
            ..Delta::default()
        };
        frames.push(chunk(&one(delta, None), usage_null, piece.len()));
    }
    let content_end = frames.len();
    frames.push(chunk(
        &one(Delta::default(), Some(g.finish.as_str())),
        usage_null,
        0,
    ));
    if include_usage {
        frames.push(chunk(&[], Some(Some(Usage::new(m.input_tokens, g))), 0));
    }
    frames.push(Bytes::from_static(SSE_DONE));
    Stream {
        frames,
        content_start,
        content_end,
    }
}

/// An error event in a stream: `data: <the error body>`.
pub(crate) fn stream_error(kind: &str, code: &str, message: &str, request_id: &str) -> Bytes {
    sse_frame(
        &OpenAiError::new(message, kind, Some(code), request_id),
        200 + message.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::text::count_tokens;

    #[test]
    fn parses_modes() {
        let body = br#"{"model":"m","enable_thinking":true,"thinking_budget":5,"max_completion_tokens":9,
            "response_format":{"type":"json_object"},
            "messages":[{"role":"system","content":"Reply in JSON"},{"role":"user","content":"q"}]}"#;
        let ask = parse_request(body).expect("valid");
        assert!(ask.thinking);
        assert_eq!(ask.thinking_budget, Some(5));
        assert_eq!(ask.max_tokens, Some(9));
        assert!(matches!(ask.format, Format::JsonObject));
        assert!(ask.mentions_json);
        assert_eq!(ask.prompt, "q");
        assert_eq!(
            ask.input_tokens,
            count_tokens("Reply in JSON") + 4 + count_tokens("q") + 4
        );
        let zero = br#"{"thinking_budget":0,"messages":[{"role":"user","content":"q"}]}"#;
        assert_eq!(
            parse_request(zero).err().as_deref(),
            Some(THINKING_BUDGET_RANGE)
        );
    }
}

//! OpenAI Responses API wire format for the mock: request parsing and the JSON body and SSE
//! events (in DashScope's relay framing: no space after `event:` and `data:`). Error answers
//! use the OpenAI body of `errors`.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::answer::{Ask, Finish, Format, Generated};
use super::message::{Content, RawFormat, RawMessage, conversation};
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
    input: Option<Input<'a>>,
    #[serde(borrow, default)]
    instructions: Option<Content<'a>>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    enable_thinking: Option<bool>,
    #[serde(default)]
    text: Option<TextOptions>,
}

#[derive(Deserialize)]
struct TextOptions {
    #[serde(default)]
    format: Option<RawFormat>,
}

/// `input`: a string (one user message) or an array of messages.
enum Input<'a> {
    Text(Cow<'a, str>),
    Messages(Vec<RawMessage<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Input<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Input<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of messages")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Input<'a>, E> {
                Ok(Input::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Input<'a>, E> {
                Ok(Input::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Input<'a>, E> {
                Ok(Input::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input<'a>, A::Error> {
                let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(m) = seq.next_element::<RawMessage<'a>>()? {
                    messages.push(m);
                }
                Ok(Input::Messages(messages))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Parses and validates a request body; the error is the message for a 400.
pub(crate) fn parse_request(body: &[u8]) -> Result<Ask<'_>, String> {
    let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        format!("The request body is not valid JSON or has a wrong field type: {e}")
    })?;
    let messages = match raw.input {
        Some(Input::Text(text)) => vec![RawMessage {
            role: Cow::Borrowed("user"),
            content: Content(text),
            partial: None,
        }],
        Some(Input::Messages(m)) if !m.is_empty() => m,
        _ => {
            return Err("'input' must be a string or a non-empty array of messages.".to_owned());
        }
    };
    if raw.max_output_tokens == Some(0) {
        return Err("Range of max_output_tokens should be [1, 2147483647].".to_owned());
    }
    let format = raw
        .text
        .and_then(|t| t.format)
        .map_or(Format::Text, RawFormat::into_format);
    let instructions = raw.instructions.map(|c| c.0);
    let conv = conversation(
        messages,
        instructions.as_deref(),
        matches!(format, Format::JsonObject),
    )?;
    Ok(Ask {
        model: raw.model.unwrap_or(Cow::Borrowed("mock-model")),
        prompt: conv.prompt,
        input_tokens: conv.input_tokens,
        stream: raw.stream.unwrap_or(false),
        max_tokens: raw.max_output_tokens,
        thinking: raw.enable_thinking.unwrap_or(false),
        // Not supported by the Responses API.
        thinking_budget: None,
        format,
        // No partial mode in this style.
        partial: false,
        mentions_json: conv.mentions_json,
        include_usage: false,
        message_format: false,
        incremental: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    model: &'a str,
    output: &'a [Item<'a>],
    usage: Option<Usage>,
    incomplete_details: Option<Incomplete>,
}

#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Reasoning {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        summary: &'a [SummaryText<'a>],
    },
    Message {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        role: &'static str,
        status: &'static str,
        content: &'a [OutputText<'a>],
    },
}

#[derive(Serialize)]
struct SummaryText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

fn output_text(text: &str) -> OutputText<'_> {
    OutputText {
        kind: "output_text",
        text,
        annotations: [],
    }
}

/// The ids and time of one answer.
pub(crate) struct Meta<'a> {
    /// `resp_<request id>`.
    pub id: &'a str,
    /// `rs_<request id>`.
    pub reasoning_id: &'a str,
    /// `msg_<request id>`.
    pub message_id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub input_tokens: u64,
}

impl Meta<'_> {
    fn usage(&self, g: &Generated) -> Usage {
        let output = g.output_tokens();
        Usage {
            input_tokens: self.input_tokens,
            input_tokens_details: CachedTokens { cached_tokens: 0 },
            output_tokens: output,
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: g.reasoning_tokens,
            },
            total_tokens: self.input_tokens + output,
        }
    }

    fn object<'a>(
        &'a self,
        status: &'static str,
        output: &'a [Item<'a>],
        usage: Option<Usage>,
        incomplete: bool,
    ) -> ResponseObject<'a> {
        ResponseObject {
            id: self.id,
            object: "response",
            created_at: self.created,
            status,
            model: self.model,
            output,
            usage,
            incomplete_details: incomplete.then_some(Incomplete {
                reason: "max_output_tokens",
            }),
        }
    }
}

fn status(g: &Generated) -> &'static str {
    match g.finish {
        Finish::Stop => "completed",
        Finish::Length => "incomplete",
    }
}

/// Calls `f` with the full final object.
fn with_final<R>(m: &Meta<'_>, g: &Generated, f: impl FnOnce(&ResponseObject<'_>) -> R) -> R {
    let summary = [SummaryText {
        kind: "summary_text",
        text: &g.reasoning,
    }];
    let content = [output_text(&g.content)];
    let reasoning = Item::Reasoning {
        id: m.reasoning_id,
        kind: "reasoning",
        summary: &summary,
    };
    let message = Item::Message {
        id: m.message_id,
        kind: "message",
        role: "assistant",
        status: status(g),
        content: &content,
    };
    let both = [reasoning, message];
    let output = if g.thinking { &both[..] } else { &both[1..] };
    f(&m.object(
        status(g),
        output,
        Some(m.usage(g)),
        g.finish == Finish::Length,
    ))
}

/// The non-streaming success body.
pub(crate) fn response_body(m: &Meta<'_>, g: &Generated) -> Bytes {
    let cap = 500 + g.content.len() + g.reasoning.len() + m.model.len();
    with_final(m, g, |obj| to_json(obj, cap))
}

/// One event: `event:<type>\ndata:{"type":<type>, …payload, "sequence_number":n}\n\n`.
#[derive(Serialize)]
struct Event<'a, P> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    payload: P,
    sequence_number: u64,
}

fn event<P: Serialize>(kind: &str, seq: usize, payload: P, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity + 2 * kind.len() + 64);
    buf.extend_from_slice(b"event:");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\ndata:");
    write_json(
        &mut buf,
        &Event {
            kind,
            payload,
            sequence_number: seq as u64,
        },
    );
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

#[derive(Serialize)]
struct ResponseEvent<'a> {
    response: &'a ResponseObject<'a>,
}

#[derive(Serialize)]
struct ItemEvent<'a> {
    output_index: usize,
    item: &'a Item<'a>,
}

#[derive(Serialize)]
struct PartEvent<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    part: OutputText<'a>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    delta: &'a str,
}

#[derive(Serialize)]
struct TextDone<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    text: &'a str,
}

#[derive(Serialize)]
struct SummaryDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: usize,
    delta: &'a str,
}

#[derive(Serialize)]
struct SummaryDone<'a> {
    item_id: &'a str,
    output_index: usize,
    summary_index: usize,
    text: &'a str,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    code: &'a str,
    message: &'a str,
    param: Option<()>,
}

/// The SSE events of a streamed answer, one frame each, `sequence_number` = frame index.
pub(crate) fn stream_frames(m: &Meta<'_>, g: &Generated) -> Stream {
    let mut frames = Frames {
        frames: Vec::with_capacity(32),
        cap: 300 + m.model.len(),
    };
    let open = m.object("in_progress", &[], None, false);
    frames.push("response.created", &ResponseEvent { response: &open }, 0);
    frames.push(
        "response.in_progress",
        &ResponseEvent { response: &open },
        0,
    );
    let mut output_index = 0;
    if g.thinking {
        reasoning_events(&mut frames, m, g, output_index);
        output_index += 1;
    }
    let (content_start, content_end) = message_events(&mut frames, m, g, output_index);
    let last = match g.finish {
        Finish::Stop => "response.completed",
        Finish::Length => "response.incomplete",
    };
    with_final(m, g, |obj| {
        frames.push(
            last,
            &ResponseEvent { response: obj },
            g.content.len() + g.reasoning.len(),
        );
    });
    Stream {
        frames: frames.frames,
        content_start,
        content_end,
    }
}

/// The frames of a Responses stream so far; each event's sequence number is its index.
struct Frames {
    frames: Vec<Bytes>,
    /// The usual size of an event, before its text.
    cap: usize,
}

impl Frames {
    fn push(&mut self, kind: &str, payload: &dyn ErasedPayload, extra: usize) {
        let seq = self.frames.len();
        self.frames.push(payload.frame(kind, seq, self.cap + extra));
    }
}

/// The reasoning item's events: added, the summary deltas, the summary done, done.
fn reasoning_events(frames: &mut Frames, m: &Meta<'_>, g: &Generated, output_index: usize) {
    let item_id = m.reasoning_id;
    frames.push(
        "response.output_item.added",
        &ItemEvent {
            output_index,
            item: &Item::Reasoning {
                id: item_id,
                kind: "reasoning",
                summary: &[],
            },
        },
        0,
    );
    for delta in split_content(&g.reasoning) {
        frames.push(
            "response.reasoning_summary_text.delta",
            &SummaryDelta {
                item_id,
                output_index,
                summary_index: 0,
                delta,
            },
            delta.len(),
        );
    }
    frames.push(
        "response.reasoning_summary_text.done",
        &SummaryDone {
            item_id,
            output_index,
            summary_index: 0,
            text: &g.reasoning,
        },
        g.reasoning.len(),
    );
    let summary = [SummaryText {
        kind: "summary_text",
        text: &g.reasoning,
    }];
    frames.push(
        "response.output_item.done",
        &ItemEvent {
            output_index,
            item: &Item::Reasoning {
                id: item_id,
                kind: "reasoning",
                summary: &summary,
            },
        },
        g.reasoning.len(),
    );
}

/// The message item's events: added, the content part added, the text deltas, the text done,
/// the part done, done. Returns where the text deltas start and end.
fn message_events(
    frames: &mut Frames,
    m: &Meta<'_>,
    g: &Generated,
    output_index: usize,
) -> (usize, usize) {
    let item_id = m.message_id;
    frames.push(
        "response.output_item.added",
        &ItemEvent {
            output_index,
            item: &Item::Message {
                id: item_id,
                kind: "message",
                role: "assistant",
                status: "in_progress",
                content: &[],
            },
        },
        0,
    );
    frames.push(
        "response.content_part.added",
        &PartEvent {
            item_id,
            output_index,
            content_index: 0,
            part: output_text(""),
        },
        0,
    );
    let content_start = frames.frames.len();
    for delta in split_content(&g.content) {
        frames.push(
            "response.output_text.delta",
            &TextDelta {
                item_id,
                output_index,
                content_index: 0,
                delta,
            },
            delta.len(),
        );
    }
    let content_end = frames.frames.len();
    frames.push(
        "response.output_text.done",
        &TextDone {
            item_id,
            output_index,
            content_index: 0,
            text: &g.content,
        },
        g.content.len(),
    );
    frames.push(
        "response.content_part.done",
        &PartEvent {
            item_id,
            output_index,
            content_index: 0,
            part: output_text(&g.content),
        },
        g.content.len(),
    );
    let content = [output_text(&g.content)];
    frames.push(
        "response.output_item.done",
        &ItemEvent {
            output_index,
            item: &Item::Message {
                id: item_id,
                kind: "message",
                role: "assistant",
                status: status(g),
                content: &content,
            },
        },
        g.content.len(),
    );
    (content_start, content_end)
}

/// Lets `stream_frames` push payloads of different types through one closure.
trait ErasedPayload {
    fn frame(&self, kind: &str, seq: usize, capacity: usize) -> Bytes;
}

impl<P: Serialize> ErasedPayload for P {
    fn frame(&self, kind: &str, seq: usize, capacity: usize) -> Bytes {
        event(kind, seq, self, capacity)
    }
}

/// An `error` event with sequence number `seq`.
pub(crate) fn stream_error(code: &str, message: &str, seq: usize) -> Bytes {
    event(
        "error",
        seq,
        ErrorEvent {
            code,
            message,
            param: None,
        },
        message.len(),
    )
}

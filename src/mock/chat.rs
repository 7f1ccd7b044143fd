//! Chat Completions wire format for the mock: request parsing (borrowed, one pass), the
//! deterministic reply and token count, and the JSON/SSE bodies the endpoint sends.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Longest word echoed from the prompt, in chars (keeps replies to a realistic size).
const MAX_WORD_CHARS: usize = 24;
/// How many prompt words the reply draws from.
const MAX_ECHO_WORDS: usize = 64;

/// Words mixed into replies so that they read a little like prose.
const FILLER: [&str; 24] = [
    "indeed",
    "notably",
    "overall",
    "therefore",
    "clearly",
    "in short",
    "for example",
    "moreover",
    "as noted",
    "briefly",
    "in turn",
    "likewise",
    "that is",
    "in practice",
    "of course",
    "similarly",
    "above all",
    "meanwhile",
    "in fact",
    "again",
    "so",
    "and",
    "also",
    "then",
];

/// FNV-1a, 64 bits: cheap, stable across runs and platforms.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 step: a bijection on u64, used for reply word choice and request ids.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The reply the endpoint gives for a prompt (the text of the last user message).
/// Deterministic and pure: `Mock reply <FNV-1a 64 of the prompt, 16 hex>:` followed by 15–60
/// words echoed from the prompt (backwards, from a prompt-dependent start, each cut to 24 chars)
/// mixed with filler words, ending in a full stop.
pub fn reply_for(prompt: &str) -> String {
    let h = fnv1a64(prompt.as_bytes());
    let mut state = h;
    let mut next = || {
        state = splitmix64(state);
        state
    };
    let words: Vec<&str> = prompt.split_whitespace().take(MAX_ECHO_WORDS).collect();
    // 15..=60 words: longer prompts get somewhat longer replies, the hash varies the rest.
    let base = 15 + words.len().min(20);
    let n = (base + (next() % 26) as usize).min(60);
    let mut out = String::with_capacity(32 + n * 9);
    let _ = write!(out, "Mock reply {h:016x}:");
    let len = words.len();
    let start = if len == 0 {
        0
    } else {
        (next() % len as u64) as usize
    };
    let mut echoed = 0usize;
    for _ in 0..n {
        let r = next();
        out.push(' ');
        // Filler a quarter of the time, half the time for short prompts (less repetition).
        if len == 0 || r % 4 == 0 || (len < 8 && r % 4 == 1) {
            out.push_str(FILLER[((r >> 8) % FILLER.len() as u64) as usize]);
        } else {
            // Walk the prompt backwards from a prompt-dependent start.
            let idx = (start + len - echoed % len) % len;
            echoed += 1;
            push_clipped(&mut out, words[idx], MAX_WORD_CHARS);
        }
    }
    out.push('.');
    out
}

fn push_clipped(out: &mut String, word: &str, max_chars: usize) {
    match word.char_indices().nth(max_chars) {
        Some((cut, _)) => out.push_str(&word[..cut]),
        None => out.push_str(word),
    }
}

/// The token count the endpoint reports for a text: ceil(chars / 4), so 0 for "" and at least 1
/// for any non-empty text.
pub fn count_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Cuts `reply` to `max_tokens` tokens under the ceil(chars/4) rule. Returns true when it cut.
pub(crate) fn clip_to_tokens(reply: &mut String, max_tokens: u64) -> bool {
    let keep = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    match reply.char_indices().nth(keep) {
        Some((cut, _)) => {
            reply.truncate(cut);
            true
        }
        None => false,
    }
}

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
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Content<'a>,
}

/// Message content: a string, an array of parts (text parts joined with `\n`), or null.
#[derive(Default)]
struct Content<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of content parts, or null")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Content::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Content::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut text: Option<Cow<'a, str>> = None;
        while let Some(part) = seq.next_element::<Part<'a>>()? {
            let Some(t) = part.text else { continue };
            text = Some(match text {
                None => t,
                Some(prev) => {
                    let mut s = prev.into_owned();
                    s.push('\n');
                    s.push_str(&t);
                    Cow::Owned(s)
                }
            });
        }
        Ok(Content(text.unwrap_or_default()))
    }
}

/// One content part; only `{"type":"text","text":...}` contributes text.
struct Part<'a> {
    text: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Part<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PartVisitor(std::marker::PhantomData))
    }
}

struct PartVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for PartVisitor<'a> {
    type Value = Part<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut is_text = true;
        let mut text = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "type" => {
                    let kind: Cow<'de, str> = map.next_value::<BorrowedCow<'de>>()?.0;
                    is_text = kind == "text";
                }
                "text" => text = Some(map.next_value::<BorrowedCow<'de>>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Part {
            text: if is_text { text } else { None },
        })
    }
}

/// A string that borrows from the input when it has no escapes.
struct BorrowedCow<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedCow<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BorrowedCow(
            d.deserialize_str(ContentVisitor(std::marker::PhantomData))?
                .0,
        ))
    }
}

/// A parsed, validated chat request.
pub(crate) struct ChatRequest<'a> {
    pub model: Cow<'a, str>,
    /// Text of the last user message.
    pub prompt: Cow<'a, str>,
    pub prompt_tokens: u64,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
}

/// Parses and validates a request body; the error is the message for a 400.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest<'_>, String> {
    let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        format!("The request body is not valid JSON or has a wrong field type: {e}")
    })?;
    let messages = match raw.messages {
        Some(m) if !m.is_empty() => m,
        _ => return Err("'messages' must be a non-empty array.".to_owned()),
    };
    let max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
    if max_tokens == Some(0) {
        return Err("Range of max_tokens should be [1, 2147483647].".to_owned());
    }
    let prompt_tokens = messages
        .iter()
        .map(|m| count_tokens(&m.content.0) + 4)
        .sum();
    let Some(last_user) = messages.into_iter().rev().find(|m| m.role == "user") else {
        return Err("The 'messages' array must contain a message with role 'user'.".to_owned());
    };
    let stream = raw.stream.unwrap_or(false);
    Ok(ChatRequest {
        model: raw.model.unwrap_or(Cow::Borrowed("mock-model")),
        prompt: last_user.content.0,
        prompt_tokens,
        stream,
        include_usage: stream
            && raw
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        max_tokens,
    })
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: CachedTokens,
}

#[derive(Serialize, Clone, Copy)]
pub(crate) struct CachedTokens {
    pub cached_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: CachedTokens { cached_tokens: 0 },
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
    usage: Usage,
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

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInfo<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: Option<&'a str>,
}

/// Fallback if serialization ever fails (it cannot for these plain structs).
const SERIALIZE_FAILED: &[u8] = br#"{"error":{"message":"mock serialization failed","type":"internal_error","param":null,"code":"internal_error"}}"#;

fn to_json<T: Serialize>(value: &T, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => Bytes::from(buf),
        Err(_) => Bytes::from_static(SERIALIZE_FAILED),
    }
}

/// The shared parts of one answer.
pub(crate) struct Answer<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
    pub content: &'a str,
    pub finish_reason: &'static str,
    pub usage: Usage,
}

/// The non-streaming success body.
pub(crate) fn completion_body(a: &Answer<'_>) -> Bytes {
    let body = Completion {
        id: a.id,
        object: "chat.completion",
        created: a.created,
        model: a.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: a.content,
            },
            finish_reason: a.finish_reason,
            logprobs: None,
        }],
        usage: a.usage,
    };
    to_json(&body, 320 + a.content.len() + a.model.len())
}

fn sse_frame(chunk: &Chunk<'_>, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, chunk).is_err() {
        buf.truncate(6);
        buf.extend_from_slice(SERIALIZE_FAILED);
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

pub(crate) const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// The SSE events of a streamed answer, each one frame: role chunk, 4-8 content chunks, the
/// finish chunk, the usage chunk (if asked for) and `[DONE]`.
pub(crate) fn stream_frames(a: &Answer<'_>, include_usage: bool) -> Vec<Bytes> {
    let pieces = split_content(a.content);
    let mut frames = Vec::with_capacity(pieces.len() + 4);
    let usage_null = if include_usage { Some(None) } else { None };
    let cap = 200 + a.model.len();
    let chunk = |choices: &[ChunkChoice<'_>], usage: Option<Option<Usage>>, extra: usize| {
        sse_frame(
            &Chunk {
                id: a.id,
                object: "chat.completion.chunk",
                created: a.created,
                model: a.model,
                choices,
                usage,
            },
            cap + extra,
        )
    };
    let one = |role, content, finish_reason| {
        [ChunkChoice {
            index: 0,
            delta: Delta { role, content },
            finish_reason,
            logprobs: None,
        }]
    };
    frames.push(chunk(
        &one(Some("assistant"), Some(""), None),
        usage_null,
        0,
    ));
    for piece in &pieces {
        frames.push(chunk(
            &one(None, Some(piece), None),
            usage_null,
            piece.len(),
        ));
    }
    frames.push(chunk(
        &one(None, None, Some(a.finish_reason)),
        usage_null,
        0,
    ));
    if include_usage {
        frames.push(chunk(&[], Some(Some(a.usage)), 0));
    }
    frames.push(Bytes::from_static(SSE_DONE));
    frames
}

/// Splits text into 4-8 pieces (fewer for very short text) on char boundaries.
fn split_content(text: &str) -> Vec<&str> {
    let chars = text.chars().count();
    if chars == 0 {
        return vec![text];
    }
    let wanted = 4 + (fnv1a64(text.as_bytes()) % 5) as usize;
    let n = wanted.min(chars);
    let mut pieces = Vec::with_capacity(n);
    let mut rest = text;
    for i in 0..n {
        let remaining_pieces = n - i;
        let take = rest.chars().count().div_ceil(remaining_pieces);
        let cut = rest.char_indices().nth(take).map_or(rest.len(), |(c, _)| c);
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces
}

/// An OpenAI-style error body.
pub(crate) fn error_body(message: &str, kind: &str, code: Option<&str>, request_id: &str) -> Bytes {
    to_json(
        &ErrorBody {
            error: ErrorInfo {
                message,
                kind,
                param: None,
                code,
            },
            request_id,
        },
        160 + message.len(),
    )
}

/// Writes a uuid-shaped id, unique per `n` for a given nonce.
pub(crate) fn request_uuid(nonce: u64, n: u64) -> String {
    let x = splitmix64(n.wrapping_add(nonce));
    let y = splitmix64(x ^ nonce);
    let mut s = String::with_capacity(36);
    let _ = write!(
        s,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xffff,
        y >> 48,
        y & 0xffff_ffff_ffff
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_lossless() {
        for text in [
            "a",
            "ab",
            "hello world",
            "Mock reply: é ü 漢字 and more text here.",
        ] {
            let pieces = split_content(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.len() <= 8);
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn parts_and_escapes() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a\"b"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"c"}]}]}"#;
        let req = parse_request(body).expect("valid");
        assert_eq!(req.prompt, "a\"b\nc");
        assert_eq!(req.prompt_tokens, count_tokens("a\"b\nc") + 4);
    }

    #[test]
    fn uuid_shape() {
        let id = request_uuid(1, 2);
        assert_eq!(id.len(), 36);
        assert_ne!(id, request_uuid(1, 3));
    }
}

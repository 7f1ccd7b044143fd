//! What the three wire formats of the mock share: the style names, JSON serialization that
//! cannot fail, the token-detail objects of the usage blocks and the frames of a stream.

use bytes::Bytes;
use serde::Serialize;

/// The three API styles the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// OpenAI Chat Completions (`…/chat/completions`).
    Chat,
    /// OpenAI Responses (`…/responses`).
    Responses,
    /// DashScope native (`…/services/aigc/{text,multimodal}-generation/generation`).
    Native,
}

impl Style {
    /// The style of a POST path, by suffix (so any base path works).
    pub(crate) fn of_path(path: &str) -> Option<Style> {
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
}

/// Fallback if serialization ever fails (it cannot for these plain structs).
const SERIALIZE_FAILED: &[u8] = br#"{"error":{"message":"mock serialization failed","type":"internal_error","param":null,"code":"internal_error"}}"#;

/// Serializes into a buffer of about `capacity` bytes.
pub(crate) fn to_json<T: Serialize>(value: &T, capacity: usize) -> Bytes {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => Bytes::from(buf),
        Err(_) => Bytes::from_static(SERIALIZE_FAILED),
    }
}

/// Appends the JSON of `value` to `buf`.
pub(crate) fn write_json<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    let start = buf.len();
    if serde_json::to_writer(&mut *buf, value).is_err() {
        buf.truncate(start);
        buf.extend_from_slice(SERIALIZE_FAILED);
    }
}

/// The frames of a streamed answer, and where its content deltas are (for cutting it short).
pub(crate) struct Stream {
    pub frames: Vec<Bytes>,
    /// The frames carrying content deltas (not reasoning) are `content_start..content_end`.
    pub content_start: usize,
    pub content_end: usize,
}

/// The token-detail objects of the usage blocks, spelled alike by all three styles.
#[derive(Serialize, Clone, Copy)]
pub(super) struct CachedTokens {
    pub(super) cached_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
pub(super) struct ReasoningTokens {
    pub(super) reasoning_tokens: u64,
}

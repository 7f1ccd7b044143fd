//! The style-independent middle of the mock: what a parsed request asks for ([`Ask`]), the
//! checks all styles share, the generated answer ([`Generated`]) and the error kinds
//! ([`Failure`]) with their per-style codes.

use std::borrow::Cow;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::schema::Schema;
use super::text::{clip_to_tokens, count_tokens, reasoning_for, reply_for};
use super::{chat, native};

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

/// The requested shape of the content.
#[derive(Debug)]
pub(crate) enum Format {
    Text,
    JsonObject,
    JsonSchema(Box<Schema>),
}

pub(crate) const STREAM_ONLY: &str =
    "This model only support stream mode, please enable the stream parameter to access the model.";
pub(crate) const PARTIAL_THINKING: &str = "partial mode is not supported in thinking mode";
pub(crate) const NATIVE_INCREMENTAL: &str =
    "The incremental_output parameter must be \"true\" when enable_thinking is true";
pub(crate) const JSON_WORD: &str = "'messages' must contain the word 'json' in some form, to use \
     'response_format' of type 'json_object'";
pub(crate) const OUTPUT_MODERATION: &str = "Output data may contain inappropriate content.";

/// A parsed request, in terms common to every style.
pub(crate) struct Ask<'a> {
    pub model: Cow<'a, str>,
    /// Text of the last user message.
    pub prompt: Cow<'a, str>,
    pub input_tokens: u64,
    pub stream: bool,
    /// Limit on the content tokens (not the reasoning).
    pub max_tokens: Option<u64>,
    pub thinking: bool,
    pub thinking_budget: Option<u64>,
    pub format: Format,
    pub partial: bool,
    /// Some message (or the instructions) contains "json"; only computed in JSON mode.
    pub mentions_json: bool,
    /// Chat: `stream_options.include_usage` on a stream.
    pub include_usage: bool,
    /// Native: `result_format: "message"` (else the text format).
    pub message_format: bool,
    /// Native: `incremental_output: true`.
    pub incremental: bool,
}

impl Ask<'_> {
    /// The checks after parsing, in order; the error is the message of a 400 invalid parameter.
    pub(crate) fn check(&self, style: Style) -> Result<(), &'static str> {
        if !self.stream && is_stream_only(&self.model) {
            return Err(STREAM_ONLY);
        }
        if self.partial && self.thinking {
            return Err(PARTIAL_THINKING);
        }
        if style == Style::Native && self.stream && self.thinking && !self.incremental {
            return Err(NATIVE_INCREMENTAL);
        }
        if matches!(self.format, Format::JsonObject) && !self.mentions_json {
            return Err(JSON_WORD);
        }
        Ok(())
    }
}

/// Models that answer only streaming requests.
fn is_stream_only(model: &str) -> bool {
    model.starts_with("qwq") || model.starts_with("qvq") || model == "mock-stream-only"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The answer to an [`Ask`], before any wire format.
pub(crate) struct Generated {
    pub thinking: bool,
    /// Empty unless thinking.
    pub reasoning: String,
    pub reasoning_tokens: u64,
    pub content: String,
    pub content_tokens: u64,
    pub finish: Finish,
}

impl Generated {
    pub(crate) fn new(ask: &Ask<'_>) -> Generated {
        let (reasoning, reasoning_tokens) = if ask.thinking {
            let mut r = reasoning_for(&ask.prompt);
            if let Some(budget) = ask.thinking_budget {
                clip_to_tokens(&mut r, budget);
            }
            let tokens = count_tokens(&r);
            (r, tokens)
        } else {
            (String::new(), 0)
        };
        let mut content = match &ask.format {
            Format::Text => reply_for(&ask.prompt),
            Format::JsonObject | Format::JsonSchema(_) if ask.prompt.contains("[mock:badjson]") => {
                let mut bad = String::from("Sure! Here it is: {\"answer\": ");
                bad.push_str(&json_string(&reply_for(&ask.prompt)));
                bad
            }
            Format::JsonObject => {
                let mut json = String::from("{\"answer\":");
                json.push_str(&json_string(&reply_for(&ask.prompt)));
                json.push('}');
                json
            }
            Format::JsonSchema(schema) => schema.instance(&ask.prompt),
        };
        let mut content_tokens = count_tokens(&content);
        let mut finish = Finish::Stop;
        if let Some(max) = ask.max_tokens
            && content_tokens > max
            && clip_to_tokens(&mut content, max)
        {
            content_tokens = max;
            finish = Finish::Length;
        }
        Generated {
            thinking: ask.thinking,
            reasoning,
            reasoning_tokens,
            content,
            content_tokens,
            finish,
        }
    }

    /// Output tokens include the reasoning tokens (the OpenAI convention).
    pub(crate) fn output_tokens(&self) -> u64 {
        self.content_tokens + self.reasoning_tokens
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The kinds of error answer, each with a fixed status and per-style code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    InvalidParameter,
    TooLarge,
    InputModeration,
    OutputModeration,
    InvalidApiKey,
    RateLimited,
    Internal,
}

impl Failure {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Failure::InvalidParameter
            | Failure::TooLarge
            | Failure::InputModeration
            | Failure::OutputModeration => StatusCode::BAD_REQUEST,
            Failure::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Failure::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// (`type`, `code`) of the OpenAI-style body (chat and responses).
    pub(crate) fn openai(self) -> (&'static str, &'static str) {
        match self {
            Failure::InvalidParameter => ("invalid_request_error", "invalid_parameter_error"),
            Failure::TooLarge => ("invalid_request_error", "invalid_request_error"),
            Failure::InputModeration | Failure::OutputModeration => {
                ("data_inspection_failed", "data_inspection_failed")
            }
            Failure::InvalidApiKey => ("invalid_request_error", "invalid_api_key"),
            Failure::RateLimited => ("limit_requests", "limit_requests"),
            Failure::Internal => ("internal_error", "internal_error"),
        }
    }

    /// `code` of the DashScope native body.
    pub(crate) fn native(self) -> &'static str {
        match self {
            Failure::InvalidParameter | Failure::TooLarge => "InvalidParameter",
            Failure::InputModeration | Failure::OutputModeration => "DataInspectionFailed",
            Failure::InvalidApiKey => "InvalidApiKey",
            Failure::RateLimited => "Throttling.RateQuota",
            Failure::Internal => "InternalError",
        }
    }

    /// The message when the caller has none of its own.
    pub(crate) fn message(self, style: Style) -> &'static str {
        match self {
            Failure::InvalidParameter => {
                "<400> InternalError.Algo.InvalidParameter: mock-triggered invalid parameter"
            }
            Failure::TooLarge => "Payload Too Large",
            Failure::InputModeration => "Input data may contain inappropriate content.",
            Failure::OutputModeration => OUTPUT_MODERATION,
            Failure::InvalidApiKey if style == Style::Native => "Invalid API-key provided.",
            Failure::InvalidApiKey => "Incorrect API key provided. ",
            Failure::RateLimited => "Requests rate limit exceeded, please try again later.",
            Failure::Internal => "An internal error has occurred, please try again later.",
        }
    }

    /// The error body in `style`.
    pub(crate) fn body(self, style: Style, message: &str, request_id: &str) -> Bytes {
        match style {
            Style::Chat | Style::Responses => {
                let (kind, code) = self.openai();
                chat::error_body(message, kind, Some(code), request_id)
            }
            Style::Native => native::error_body(self.native(), message, request_id),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(prompt: &str) -> Ask<'_> {
        Ask {
            model: Cow::Borrowed("m"),
            prompt: Cow::Borrowed(prompt),
            input_tokens: 1,
            stream: false,
            max_tokens: None,
            thinking: false,
            thinking_budget: None,
            format: Format::Text,
            partial: false,
            mentions_json: false,
            include_usage: false,
            message_format: false,
            incremental: false,
        }
    }

    #[test]
    fn thinking_budget_and_max_tokens() {
        let mut a = ask("Explain tides");
        a.thinking = true;
        a.thinking_budget = Some(3);
        a.max_tokens = Some(2);
        let g = Generated::new(&a);
        assert_eq!(
            g.reasoning,
            reasoning_for("Explain tides")
                .chars()
                .take(12)
                .collect::<String>()
        );
        assert_eq!(g.reasoning_tokens, 3);
        assert_eq!(g.content_tokens, 2);
        assert_eq!(g.finish, Finish::Length);
        assert_eq!(g.output_tokens(), 5);
    }

    #[test]
    fn json_modes() {
        let mut a = ask("give json");
        a.format = Format::JsonObject;
        assert_eq!(a.check(Style::Chat), Err(JSON_WORD));
        a.mentions_json = true;
        assert_eq!(a.check(Style::Chat), Ok(()));
        let g = Generated::new(&a);
        let v: serde_json::Value = serde_json::from_str(&g.content).expect("json");
        assert_eq!(v["answer"], reply_for("give json").as_str());
        let b = Ask {
            prompt: Cow::Borrowed("x [mock:badjson]"),
            format: Format::JsonObject,
            ..ask("")
        };
        let g = Generated::new(&b);
        assert!(
            g.content
                .starts_with("Sure! Here it is: {\"answer\": \"Mock reply")
        );
        assert!(serde_json::from_str::<serde_json::Value>(&g.content).is_err());
    }

    #[test]
    fn checks_in_order() {
        let mut a = ask("p");
        a.model = Cow::Borrowed("qwq-plus");
        a.thinking = true;
        a.partial = true;
        assert_eq!(a.check(Style::Chat), Err(STREAM_ONLY));
        a.stream = true;
        assert_eq!(a.check(Style::Chat), Err(PARTIAL_THINKING));
        a.partial = false;
        assert_eq!(a.check(Style::Chat), Ok(()));
        assert_eq!(a.check(Style::Native), Err(NATIVE_INCREMENTAL));
        a.incremental = true;
        assert_eq!(a.check(Style::Native), Ok(()));
        for m in ["qvq-max", "mock-stream-only"] {
            let b = Ask {
                model: Cow::Borrowed(m),
                ..ask("p")
            };
            assert_eq!(b.check(Style::Responses), Err(STREAM_ONLY));
        }
    }
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

//! The style-independent middle of the mock: what a parsed request asks for ([`Ask`]), the
//! checks all styles share and the generated answer ([`Generated`]).

use std::borrow::Cow;

use super::errors::{ErrorAnswer, JSON_WORD, NATIVE_INCREMENTAL, PARTIAL_THINKING, STREAM_ONLY};
use super::schema::Schema;
use super::text::{clip_to_tokens, count_tokens, reasoning_for, reply_for};
use super::wire::Style;

/// The requested shape of the content.
#[derive(Debug)]
pub(crate) enum Format {
    Text,
    JsonObject,
    JsonSchema(Box<Schema>),
}

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

    /// The test trigger in the prompt that fails this request, if any; see `docs/mock.md`.
    /// `[mock:badjson]` is not one: it only changes the content.
    pub(crate) fn trigger(&self) -> Option<ErrorAnswer> {
        let prompt: &str = &self.prompt;
        if !prompt.contains("[mock:") {
            return None;
        }
        if prompt.contains("[mock:400]") {
            Some(ErrorAnswer::InvalidParameter)
        } else if prompt.contains("[mock:moderation]") {
            Some(ErrorAnswer::InputModeration)
        } else if prompt.contains("[mock:401]") {
            Some(ErrorAnswer::InvalidApiKey)
        } else if prompt.contains("[mock:moderation-output]") {
            Some(ErrorAnswer::OutputModeration)
        } else {
            None
        }
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

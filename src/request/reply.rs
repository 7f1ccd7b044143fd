//! What comes back: the answer of any style as one `Reply`, and its token counts read from
//! whichever names the style uses. A leaf, shared by the styles and everything downstream.

use serde_json::Value;

/// Token counts of one answer, in the record's vocabulary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cached_tokens += other.cached_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// Token counts as any of the three styles sends them: chat names them `prompt_tokens` and
/// `completion_tokens` with `prompt_tokens_details`/`completion_tokens_details`; Responses
/// `input_tokens`/`output_tokens` with `input_tokens_details`/`output_tokens_details`; DashScope
/// native `input_tokens`/`output_tokens` with `prompt_tokens_details`/`output_tokens_details`.
/// Every name is its own optional field (not a serde alias), so a gateway that sends both
/// spellings is still read.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<WireDetails>,
    input_tokens_details: Option<WireDetails>,
    completion_tokens_details: Option<WireDetails>,
    output_tokens_details: Option<WireDetails>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct WireDetails {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(crate) fn into_usage(self) -> Usage {
        let input = self.input_tokens.or(self.prompt_tokens).unwrap_or(0);
        let output = self.output_tokens.or(self.completion_tokens).unwrap_or(0);
        let detail =
            |a: Option<WireDetails>, b: Option<WireDetails>, f: fn(&WireDetails) -> Option<u64>| {
                a.as_ref()
                    .and_then(f)
                    .or_else(|| b.as_ref().and_then(f))
                    .unwrap_or(0)
            };
        Usage {
            input_tokens: input,
            output_tokens: output,
            reasoning_tokens: detail(
                self.completion_tokens_details,
                self.output_tokens_details,
                |d| d.reasoning_tokens,
            ),
            cached_tokens: detail(self.prompt_tokens_details, self.input_tokens_details, |d| {
                d.cached_tokens
            }),
            total_tokens: self.total_tokens.unwrap_or(input + output),
        }
    }
}

/// A successful answer, whatever the API style.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub finish_reason: Option<String>,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub request_id: Option<String>,
    pub tool_calls: Option<Value>,
    /// With `--json`/`--json-schema`: the content, parsed and validated.
    pub parsed: Option<Value>,
}

/// The text of a message's `content`: a string, or the `text` of its parts joined.
pub fn content_text(content: Option<Value>) -> Option<String> {
    match content {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        Some(other) => Some(other.to_string()),
    }
}

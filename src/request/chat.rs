//! The OpenAI-compatible Chat Completions style: `POST {base}/chat/completions`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Reply, Usage};
use crate::settings::GenParams;

/// The path appended to the base URL.
pub const PATH: &str = "/chat/completions";

/// Builds a chat body: the run's parameters, then the row's own body (OpenAI Batch lines) for
/// the fields it sets, then the row's `params`, which win over both.
pub fn body(
    params: &GenParams,
    messages: Vec<Value>,
    row_body: Option<Map<String, Value>>,
    row_params: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(params.model.clone()));
    if let Some(t) = params.temperature {
        body.insert("temperature".into(), Value::from(t));
    }
    if let Some(p) = params.top_p {
        body.insert("top_p".into(), Value::from(p));
    }
    if let Some(m) = params.max_tokens {
        body.insert("max_tokens".into(), Value::from(m));
    }
    if let Some(s) = params.seed {
        body.insert("seed".into(), Value::from(s));
    }
    if !params.stop.is_empty() {
        body.insert("stop".into(), Value::from(params.stop.clone()));
    }
    for (k, v) in &params.extra {
        body.insert(k.clone(), v.clone());
    }
    if let Some(row_body) = row_body {
        body.extend(row_body);
    }
    if let Some(p) = row_params {
        for (k, v) in p {
            body.insert(k.clone(), v.clone());
        }
    }
    body.insert("messages".into(), Value::Array(messages));
    // Answers are read whole; a streamed answer would not parse. `--stream` will set these.
    body.remove("stream");
    body.remove("stream_options");
    body
}

#[derive(Deserialize)]
struct Response {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<Value>,
    reasoning_content: Option<String>,
    tool_calls: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    total_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

/// Parses a 200 answer. An `Err` says why the body is not a usable answer.
pub fn parse(body: &[u8]) -> Result<Reply, String> {
    let r: Response =
        serde_json::from_slice(body).map_err(|e| format!("unparsable answer body: {e}"))?;
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| "answer has no choices".to_string())?;
    let message = choice
        .message
        .ok_or_else(|| "answer has no message".to_string())?;
    let content = match message.content {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>(),
        ),
        Some(other) => Some(other.to_string()),
    };
    let usage = r.usage.map(|u| Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        reasoning_tokens: u
            .completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens),
        cached_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        total_tokens: u
            .total_tokens
            .unwrap_or(u.prompt_tokens + u.completion_tokens),
    });
    Ok(Reply {
        content,
        reasoning: message.reasoning_content.filter(|r| !r.is_empty()),
        finish_reason: choice.finish_reason,
        model: r.model,
        usage,
        request_id: r.request_id.or(r.id),
        tool_calls: message.tool_calls.filter(|t| !t.is_null()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_usage_details_and_reasoning() {
        let body = br#"{"id":"chatcmpl-1","model":"qwen-plus","choices":[{"index":0,
            "message":{"role":"assistant","content":"x = 5","reasoning_content":"Subtract"},
            "finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":180,
            "total_tokens":200,"prompt_tokens_details":{"cached_tokens":3},
            "completion_tokens_details":{"reasoning_tokens":170}}}"#;
        let r = parse(body).expect("parse");
        assert_eq!(r.content.as_deref(), Some("x = 5"));
        assert_eq!(r.reasoning.as_deref(), Some("Subtract"));
        let u = r.usage.expect("usage");
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.reasoning_tokens,
                u.cached_tokens
            ),
            (20, 180, 170, 3)
        );
        assert_eq!(r.request_id.as_deref(), Some("chatcmpl-1"));
    }

    #[test]
    fn rejects_bodies_that_are_not_answers() {
        assert!(parse(b"<html>oops</html>").is_err());
        assert!(parse(br#"{"choices":[]}"#).is_err());
        assert!(parse(br#"{"id":"x","choices":[{"message":"#).is_err());
    }
}

//! The OpenAI-compatible Chat Completions style: `POST {base}/chat/completions`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::gen_fields;
use super::reply::{Reply, WireUsage, content_text};
use super::sse::{Step, StreamError, ToolCalls};
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
    body.extend(gen_fields(params, false));
    if let Some(row_body) = row_body {
        body.extend(row_body);
    }
    if let Some(p) = row_params {
        body.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    body.insert("messages".into(), Value::Array(messages));
    // Streaming is the run's choice (`--stream`, or a model that demands it), made per attempt.
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
    Ok(Reply {
        content: content_text(message.content),
        reasoning: message.reasoning_content.filter(|r| !r.is_empty()),
        finish_reason: choice.finish_reason,
        model: r.model,
        usage: r.usage.map(WireUsage::into_usage),
        request_id: r.request_id.or(r.id),
        tool_calls: message.tool_calls.filter(|t| !t.is_null()),
        parsed: None,
    })
}

#[derive(Deserialize)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
    error: Option<Value>,
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    tool_calls: Option<Vec<Value>>,
}

/// Reassembles a streamed chat answer: `content` and `reasoning_content` deltas, tool-call
/// fragments by index, the finish reason, and the usage chunk (whose `choices` is empty).
#[derive(Debug, Default)]
pub struct ChatStream {
    reply: Reply,
    content: String,
    reasoning: String,
    tool_calls: ToolCalls,
    finished: bool,
    done: bool,
}

impl ChatStream {
    pub fn event(&mut self, data: &str) -> Result<Step, StreamError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Step::Done);
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| StreamError::Bad(format!("unparsable stream event: {e}")))?;
        if chunk.error.as_ref().is_some_and(|e| !e.is_null()) {
            return Err(StreamError::Api(data.as_bytes().to_vec()));
        }
        let r = &mut self.reply;
        if r.model.is_none() {
            r.model = chunk.model;
        }
        if r.request_id.is_none() {
            r.request_id = chunk.request_id.or(chunk.id);
        }
        if let Some(u) = chunk.usage {
            r.usage = Some(u.into_usage());
        }
        for choice in chunk.choices {
            if let Some(d) = choice.delta {
                if let Some(c) = d.content {
                    self.content.push_str(&c);
                }
                if let Some(c) = d.reasoning_content {
                    self.reasoning.push_str(&c);
                }
                for call in d.tool_calls.unwrap_or_default() {
                    self.tool_calls.merge(call)?;
                }
            }
            if let Some(f) = choice.finish_reason.filter(|f| !f.is_empty()) {
                r.finish_reason = Some(f);
                self.finished = true;
            }
        }
        // The usage chunk comes after the finish; without `[DONE]` the stream's end closes it.
        Ok(Step::More)
    }

    pub fn finish(mut self) -> Result<Reply, String> {
        if !self.finished && !self.done {
            return Err("stream ended before the answer finished".to_string());
        }
        self.reply.content = Some(self.content);
        self.reply.reasoning = Some(self.reasoning).filter(|r| !r.is_empty());
        self.reply.tool_calls = self.tool_calls.finish();
        Ok(self.reply)
    }
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

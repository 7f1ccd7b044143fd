//! The OpenAI-compatible Responses style: `POST {base}/responses`, with the conversation as
//! `input`, the system prompt as `instructions`, and the answer as `output` items.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::gen_fields;
use super::reply::{Reply, WireUsage};
use super::sse::{Step, StreamError};
use crate::settings::GenParams;

/// The path appended to the base URL.
pub const PATH: &str = "/responses";

/// Builds a Responses body: the run's parameters (`max_output_tokens`, `text.format`), then
/// the row's own body, then its `params`.
pub fn body(
    params: &GenParams,
    messages: Vec<Value>,
    instructions: Option<String>,
    row_body: Option<Map<String, Value>>,
    row_params: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(params.model.clone()));
    if let Some(text) = instructions {
        body.insert("instructions".into(), Value::String(text));
    }
    body.extend(gen_fields(params, true));
    if let Some(row_body) = row_body {
        body.extend(row_body);
    }
    if let Some(p) = row_params {
        body.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let input = messages.into_iter().map(input_item).collect();
    body.insert("input".into(), Value::Array(input));
    body.remove("stream");
    body
}

/// A chat message as a Responses input item: text parts become `input_text` (`output_text`
/// for the assistant's turns); string contents stay strings.
fn input_item(mut m: Value) -> Value {
    let assistant = m.get("role").and_then(Value::as_str) == Some("assistant");
    if let Some(Value::Array(parts)) = m.get_mut("content") {
        for part in parts {
            if let Some(Value::String(t)) = part.get_mut("type")
                && t == "text"
            {
                *t = if assistant {
                    "output_text"
                } else {
                    "input_text"
                }
                .to_string();
            }
        }
    }
    m
}

#[derive(Deserialize)]
struct Response {
    id: Option<String>,
    model: Option<String>,
    status: Option<String>,
    #[serde(default)]
    output: Vec<Value>,
    usage: Option<WireUsage>,
    incomplete_details: Option<Value>,
    error: Option<Value>,
    request_id: Option<String>,
}

/// Texts of the `parts` of an item whose `type` is one of `types`.
fn texts(parts: Option<&Value>, types: &[&str], out: &mut String) {
    for p in parts.and_then(Value::as_array).into_iter().flatten() {
        let t = p.get("type").and_then(Value::as_str).unwrap_or("");
        if types.contains(&t)
            && let Some(text) = p.get("text").and_then(Value::as_str)
        {
            out.push_str(text);
        }
    }
}

impl Response {
    fn into_reply(self) -> Result<Reply, String> {
        if let Some(e) = self.error.filter(|e| !e.is_null()) {
            return Err(format!("response failed: {e}"));
        }
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for item in &self.output {
            match item.get("type").and_then(Value::as_str) {
                Some("message") => texts(item.get("content"), &["output_text"], &mut content),
                Some("reasoning") => {
                    texts(item.get("summary"), &["summary_text"], &mut reasoning);
                    texts(item.get("content"), &["reasoning_text"], &mut reasoning);
                }
                Some("function_call") => calls.push(serde_json::json!({
                    "id": item.get("call_id").or_else(|| item.get("id")),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                })),
                _ => {}
            }
        }
        let finish_reason = match self.status.as_deref() {
            Some("incomplete") => {
                let why = self
                    .incomplete_details
                    .as_ref()
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str);
                Some(match why {
                    Some("max_output_tokens") | None => "length".to_string(),
                    Some(other) => other.to_string(),
                })
            }
            Some("completed") | None if !calls.is_empty() => Some("tool_calls".to_string()),
            Some("completed") | None => Some("stop".to_string()),
            Some(other) => return Err(format!("response status `{other}`")),
        };
        Ok(Reply {
            content: Some(content),
            reasoning: Some(reasoning).filter(|r| !r.is_empty()),
            finish_reason,
            model: self.model,
            usage: self.usage.map(WireUsage::into_usage),
            request_id: self.request_id.or(self.id),
            tool_calls: (!calls.is_empty()).then_some(Value::Array(calls)),
            parsed: None,
        })
    }
}

/// Parses a 200 answer. An `Err` says why the body is not a usable answer.
pub fn parse(body: &[u8]) -> Result<Reply, String> {
    let r: Response =
        serde_json::from_slice(body).map_err(|e| format!("unparsable answer body: {e}"))?;
    if r.output.is_empty() && r.status.is_none() {
        return Err("answer has no `output`".to_string());
    }
    r.into_reply()
}

/// Reassembles a Responses stream: text and reasoning deltas as they come, then the final
/// `response.completed` (or `response.incomplete`) event, whose response object wins.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    content: String,
    reasoning: String,
    reply: Option<Reply>,
}

impl ResponsesStream {
    pub fn event(&mut self, event: &str, data: &str) -> Result<Step, StreamError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| StreamError::Bad(format!("unparsable stream event: {e}")))?;
        // The type is in the data; DashScope's relay may omit or reshape the `event:` line.
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        let delta = || v.get("delta").and_then(Value::as_str).unwrap_or("");
        match kind {
            "response.output_text.delta" => self.content.push_str(delta()),
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.reasoning.push_str(delta());
            }
            "error" => return Err(StreamError::Api(data.as_bytes().to_vec())),
            "response.failed" => {
                let error = v
                    .get("response")
                    .and_then(|r| r.get("error"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let body = serde_json::json!({ "error": error });
                return Err(StreamError::Api(body.to_string().into_bytes()));
            }
            "response.completed" | "response.incomplete" => {
                let response = v.get("response").cloned().unwrap_or(Value::Null);
                let r: Response = serde_json::from_value(response)
                    .map_err(|e| StreamError::Bad(format!("unexpected final event: {e}")))?;
                self.reply = Some(r.into_reply().map_err(StreamError::Bad)?);
                return Ok(Step::Done);
            }
            _ => {}
        }
        Ok(Step::More)
    }

    pub fn finish(self) -> Result<Reply, String> {
        let mut reply = self
            .reply
            .ok_or_else(|| "stream ended before the answer finished".to_string())?;
        // The final event normally repeats the whole text; the deltas stand in if it does not.
        if reply.content.as_deref().is_none_or(str::is_empty) && !self.content.is_empty() {
            reply.content = Some(self.content);
        }
        if reply.reasoning.is_none() && !self.reasoning.is_empty() {
            reply.reasoning = Some(self.reasoning);
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_maps_names() {
        let params = GenParams {
            model: "qwen3-max".into(),
            max_tokens: Some(64),
            format: crate::settings::OutputFormat::JsonObject,
            ..GenParams::default()
        };
        let msgs = vec![
            serde_json::json!({"role": "user", "content": [{"type": "text", "text": "hi json"}]}),
        ];
        let b = Value::Object(body(&params, msgs, Some("Be brief.".into()), None, None));
        assert_eq!(b["instructions"], "Be brief.");
        assert_eq!(b["max_output_tokens"], 64);
        assert_eq!(b["text"]["format"]["type"], "json_object");
        assert_eq!(b["input"][0]["content"][0]["type"], "input_text");
        assert!(b.get("max_tokens").is_none());
    }

    #[test]
    fn parses_output_items() {
        let r = parse(br#"{"id":"resp_1","status":"completed","model":"m","output":[{"type":"reasoning","summary":[{"type":"summary_text","text":"R"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"A"},{"type":"output_text","text":"B"}]}],"usage":{"input_tokens":4,"input_tokens_details":{"cached_tokens":1},"output_tokens":6,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":10}}"#).expect("parse");
        assert_eq!(r.content.as_deref(), Some("AB"));
        assert_eq!(r.reasoning.as_deref(), Some("R"));
        assert_eq!(r.request_id.as_deref(), Some("resp_1"));
        let u = r.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.reasoning_tokens),
            (4, 1, 2)
        );
        let cut = parse(br#"{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[{"type":"message","content":[{"type":"output_text","text":"A"}]}]}"#).expect("incomplete");
        assert_eq!(cut.finish_reason.as_deref(), Some("length"));
        assert!(parse(br#"{"error":{"code":"x","message":"y"}}"#).is_err());
    }
}

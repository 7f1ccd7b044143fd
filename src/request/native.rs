//! The DashScope native style: `POST {base}/services/aigc/text-generation/generation`, with the
//! conversation under `input.messages` and every option under `parameters`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::gen_fields;
use super::reply::{Reply, WireUsage, content_text};
use super::sse::{Step, StreamError, ToolCalls};
use crate::settings::GenParams;

/// The path appended to the base URL.
pub const PATH: &str = "/services/aigc/text-generation/generation";

/// Builds a native body. The run's parameters, the row's own body (OpenAI Batch lines: its
/// fields other than `model` and `messages`) and the row's `params` all go under `parameters`,
/// later ones winning. `result_format` is `message` and `incremental_output` is on, so a
/// streamed answer arrives as pieces (thinking requires it) and the body is the same whether
/// the run streams or not.
pub fn body(
    params: &GenParams,
    messages: Vec<Value>,
    row_body: Option<Map<String, Value>>,
    row_params: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut model = Value::String(params.model.clone());
    let mut parameters = Map::new();
    parameters.insert("result_format".into(), Value::String("message".into()));
    parameters.extend(gen_fields(params, false));
    if let Some(mut row_body) = row_body {
        if let Some(m) = row_body.remove("model") {
            model = m;
        }
        parameters.extend(row_body);
    }
    if let Some(p) = row_params {
        parameters.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    parameters.remove("stream");
    parameters.remove("stream_options");
    parameters.insert("incremental_output".into(), Value::Bool(true));
    let mut input = Map::new();
    input.insert("messages".into(), Value::Array(messages));
    let mut body = Map::new();
    body.insert("model".into(), model);
    body.insert("input".into(), Value::Object(input));
    body.insert("parameters".into(), Value::Object(parameters));
    body
}

#[derive(Deserialize)]
struct Response {
    request_id: Option<String>,
    output: Option<Output>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Output {
    text: Option<String>,
    finish_reason: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
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

/// DashScope sends the string `"null"` for "not finished yet".
fn finish_reason(f: Option<String>) -> Option<String> {
    f.filter(|f| !f.is_empty() && f != "null")
}

/// One answer or stream chunk: content, reasoning, finish reason (if finished), tool calls.
struct Piece {
    content: Option<String>,
    reasoning: Option<String>,
    finish_reason: Option<String>,
    tool_calls: Option<Value>,
}

impl Output {
    fn piece(self) -> Piece {
        match self.choices.into_iter().next() {
            Some(choice) => {
                let m = choice.message;
                let (content, reasoning, tool_calls) = match m {
                    Some(m) => (
                        content_text(m.content),
                        m.reasoning_content,
                        m.tool_calls.filter(|t| !t.is_null()),
                    ),
                    None => (None, None, None),
                };
                Piece {
                    content,
                    reasoning,
                    finish_reason: finish_reason(choice.finish_reason),
                    tool_calls,
                }
            }
            // `result_format: "text"`.
            None => Piece {
                content: self.text,
                reasoning: None,
                finish_reason: finish_reason(self.finish_reason),
                tool_calls: None,
            },
        }
    }
}

/// Parses a 200 answer. An `Err` says why the body is not a usable answer.
pub fn parse(body: &[u8]) -> Result<Reply, String> {
    let r: Response =
        serde_json::from_slice(body).map_err(|e| format!("unparsable answer body: {e}"))?;
    let output = r
        .output
        .ok_or_else(|| "answer has no `output`".to_string())?;
    let piece = output.piece();
    Ok(Reply {
        content: piece.content,
        reasoning: piece.reasoning.filter(|r| !r.is_empty()),
        finish_reason: piece.finish_reason,
        model: None,
        usage: r.usage.map(WireUsage::into_usage),
        request_id: r.request_id,
        tool_calls: piece.tool_calls,
        parsed: None,
    })
}

/// Whether a body is a native error (`{code, message, request_id}`, no `output`).
pub fn is_error_body(v: &Value) -> bool {
    v.get("output").is_none()
        && v.get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty())
}

/// Reassembles a native stream sent with `incremental_output: true`: every `event:result`
/// carries the next piece (tool calls as fragments, as in chat) and the usage so far; the last
/// has a real finish reason.
#[derive(Debug, Default)]
pub struct NativeStream {
    reply: Reply,
    content: String,
    reasoning: String,
    tool_calls: ToolCalls,
    finished: bool,
}

impl NativeStream {
    pub fn event(&mut self, event: &str, data: &str) -> Result<Step, StreamError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| StreamError::Bad(format!("unparsable stream event: {e}")))?;
        if event == "error" || is_error_body(&v) {
            return Err(StreamError::Api(data.as_bytes().to_vec()));
        }
        let r: Response = serde_json::from_value(v)
            .map_err(|e| StreamError::Bad(format!("unexpected stream event: {e}")))?;
        if r.request_id.is_some() {
            self.reply.request_id = r.request_id;
        }
        if let Some(u) = r.usage {
            self.reply.usage = Some(u.into_usage());
        }
        if let Some(output) = r.output {
            let piece = output.piece();
            if let Some(c) = piece.content {
                self.content.push_str(&c);
            }
            if let Some(c) = piece.reasoning {
                self.reasoning.push_str(&c);
            }
            if let Some(calls) = piece.tool_calls {
                self.tool_calls.merge_all(calls)?;
            }
            if let Some(f) = piece.finish_reason {
                self.reply.finish_reason = Some(f);
                self.finished = true;
                return Ok(Step::Done);
            }
        }
        Ok(Step::More)
    }

    pub fn finish(mut self) -> Result<Reply, String> {
        if !self.finished {
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
    fn body_puts_options_under_parameters() {
        let params = GenParams {
            model: "qwen-plus".into(),
            temperature: Some(0.3),
            thinking: Some(true),
            thinking_budget: Some(50),
            ..GenParams::default()
        };
        let msgs = vec![serde_json::json!({"role": "user", "content": "hi"})];
        let mut row = Map::new();
        row.insert("stream".into(), Value::Bool(true));
        row.insert("top_k".into(), Value::from(5));
        let b = Value::Object(body(&params, msgs, None, Some(&row)));
        assert_eq!(b["model"], "qwen-plus");
        assert_eq!(b["input"]["messages"][0]["content"], "hi");
        let p = &b["parameters"];
        assert_eq!(p["result_format"], "message");
        assert_eq!(p["incremental_output"], true);
        assert_eq!(p["enable_thinking"], true);
        assert_eq!(p["thinking_budget"], 50);
        assert_eq!(p["temperature"], 0.3);
        assert_eq!(p["top_k"], 5);
        assert!(p.get("stream").is_none());
        assert!(b.get("enable_thinking").is_none());
    }

    #[test]
    fn parses_message_and_text_forms() {
        let r = parse(br#"{"request_id":"r1","output":{"text":null,"finish_reason":null,"choices":[{"finish_reason":"stop","message":{"role":"assistant","content":"2, 3, 5","reasoning_content":""}}]},"usage":{"input_tokens":25,"output_tokens":7,"total_tokens":32,"output_tokens_details":{"reasoning_tokens":0},"prompt_tokens_details":{"cached_tokens":4}}}"#).expect("parse");
        assert_eq!(r.content.as_deref(), Some("2, 3, 5"));
        assert_eq!(r.reasoning, None);
        assert_eq!(r.request_id.as_deref(), Some("r1"));
        assert_eq!(
            r.usage.map(|u| (u.input_tokens, u.cached_tokens)),
            Some((25, 4))
        );
        let t = parse(br#"{"request_id":"r2","output":{"text":"hello","finish_reason":"length"},"usage":{"input_tokens":1,"output_tokens":2}}"#).expect("text");
        assert_eq!(t.content.as_deref(), Some("hello"));
        assert_eq!(t.finish_reason.as_deref(), Some("length"));
        assert!(parse(br#"{"code":"InvalidParameter","message":"x","request_id":"r"}"#).is_err());
    }
}

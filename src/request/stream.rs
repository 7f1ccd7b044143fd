//! Streamed answers (SSE), whatever the API style: the events come from one SSE parser (the
//! `eventsource-stream` crate) in `client`, and each style's assembler here turns them back
//! into one `Reply`.
//!
//! A stream is complete only when its style says so (chat: a finish reason or `[DONE]`;
//! Responses: `response.completed`; DashScope native: a finish reason other than the string
//! `"null"`). A stream that ends before that was cut, and is retried like a network error.

use serde_json::Value;

use super::api::Api;
use super::{Reply, chat, native, responses};

/// After one event: keep reading, or the answer is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    More,
    Done,
}

/// An event that ends the stream with an error.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The provider reported an error mid-stream; the bytes are its error body, to classify.
    Api(Vec<u8>),
    /// The event is not what the style sends.
    Bad(String),
}

/// Reassembles one streamed answer.
#[derive(Debug)]
pub enum Assembler {
    Chat(chat::Assembler),
    Responses(responses::Assembler),
    Native(native::Assembler),
}

impl Assembler {
    pub fn new(api: Api) -> Assembler {
        match api {
            Api::Chat => Assembler::Chat(chat::Assembler::default()),
            Api::Responses => Assembler::Responses(responses::Assembler::default()),
            Api::Dashscope => Assembler::Native(native::Assembler::default()),
        }
    }

    /// Takes one event: its type (`message` when the event had no `event:` line) and data.
    pub fn event(&mut self, event: &str, data: &str) -> Result<Progress, StreamError> {
        match self {
            Assembler::Chat(a) => a.event(data),
            Assembler::Responses(a) => a.event(event, data),
            Assembler::Native(a) => a.event(event, data),
        }
    }

    /// The answer, once the stream has ended; an `Err` says why it is incomplete.
    pub fn finish(self) -> Result<Reply, String> {
        match self {
            Assembler::Chat(a) => a.finish(),
            Assembler::Responses(a) => a.finish(),
            Assembler::Native(a) => a.finish(),
        }
    }
}

/// The most tool calls one answer may hold. A fragment whose `index` is beyond is not a real
/// answer, and must not make room for billions of calls.
pub const MAX_TOOL_CALLS: u64 = 1000;

/// Tool calls reassembled from streamed fragments, which chat and DashScope native send alike:
/// each fragment names its call by `index` (none: a new call); the first non-empty `id` and
/// `type` stick, and the pieces of `function.name` and `function.arguments` are appended.
#[derive(Debug, Default)]
pub struct ToolCalls(Vec<Value>);

impl ToolCalls {
    /// Merges the fragments of one event (an array of them, as both styles send).
    pub fn merge_all(&mut self, fragments: Value) -> Result<(), StreamError> {
        match fragments {
            Value::Array(items) => items.into_iter().try_for_each(|f| self.merge(f)),
            Value::Null => Ok(()),
            other => self.merge(other),
        }
    }

    /// Merges one fragment into the calls so far, by its `index`.
    pub fn merge(&mut self, fragment: Value) -> Result<(), StreamError> {
        let Value::Object(mut frag) = fragment else {
            return Err(StreamError::Bad(format!(
                "tool-call fragment is not an object: {fragment}"
            )));
        };
        let index = match frag.remove("index") {
            None | Some(Value::Null) => self.0.len() as u64,
            Some(i) => match i.as_u64() {
                Some(i) if i < MAX_TOOL_CALLS => i,
                _ => {
                    return Err(StreamError::Bad(format!(
                        "tool-call index {i} is out of range (at most {MAX_TOOL_CALLS} calls)"
                    )));
                }
            },
        };
        // At most MAX_TOOL_CALLS, so this fits.
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        if index >= self.0.len() {
            self.0.resize_with(index + 1, || {
                serde_json::json!({"id": null, "type": "function",
                    "function": {"name": "", "arguments": ""}})
            });
        }
        let Value::Object(call) = &mut self.0[index] else {
            return Ok(());
        };
        // The first id sticks: later fragments of DashScope's streams carry `"id": ""`.
        if let Some(id) = non_empty(frag.get("id"))
            && non_empty(call.get("id")).is_none()
        {
            call.insert("id".into(), id.clone());
        }
        if let Some(t) = non_empty(frag.get("type")) {
            call.insert("type".into(), t.clone());
        }
        let Some(Value::Object(f)) = frag.get("function") else {
            return Ok(());
        };
        if let Some(Value::Object(target)) = call.get_mut("function") {
            for key in ["name", "arguments"] {
                if let Some(piece) = f.get(key).and_then(Value::as_str)
                    && let Some(Value::String(s)) = target.get_mut(key)
                {
                    s.push_str(piece);
                }
            }
        }
        Ok(())
    }

    /// The calls, if there were any.
    pub fn finish(self) -> Option<Value> {
        (!self.0.is_empty()).then_some(Value::Array(self.0))
    }
}

/// A string field's value, unless it is absent, not a string or empty.
fn non_empty(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(event, data)` pairs and finishes.
    fn run(api: Api, events: &[(&str, &str)]) -> Result<Reply, String> {
        let mut a = Assembler::new(api);
        for (e, d) in events {
            match a.event(e, d) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => break,
                Err(err) => return Err(format!("{err:?}")),
            }
        }
        a.finish()
    }

    #[test]
    fn chat_deltas_usage_chunk_and_no_done() {
        let r = run(
            Api::Chat,
            &[
                ("message", r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":"Th"}}]}"#),
                ("message", r#"{"id":"c1","choices":[{"index":0,"delta":{"reasoning_content":"ink"}}]}"#),
                ("message", r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"x = "}}]}"#),
                ("message", r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"5"},"finish_reason":"stop"}]}"#),
                ("message", r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"completion_tokens_details":{"reasoning_tokens":2}}}"#),
            ],
        )
        .expect("complete");
        assert_eq!(r.content.as_deref(), Some("x = 5"));
        assert_eq!(r.reasoning.as_deref(), Some("Think"));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        let u = r.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.reasoning_tokens),
            (3, 4, 2)
        );
    }

    #[test]
    fn chat_cut_and_error_events() {
        let cut = run(
            Api::Chat,
            &[("message", r#"{"choices":[{"delta":{"content":"half"}}]}"#)],
        );
        assert!(cut.is_err_and(|e| e.contains("before the answer finished")));
        let moderated = run(
            Api::Chat,
            &[
                ("message", r#"{"choices":[{"delta":{"content":"a"}}]}"#),
                (
                    "message",
                    r#"{"error":{"code":"data_inspection_failed","message":"Output data may contain inappropriate content."}}"#,
                ),
            ],
        );
        assert!(moderated.is_err_and(|e| e.contains("Api")));
    }

    #[test]
    fn chat_tool_call_fragments_merge() {
        let r = run(
            Api::Chat,
            &[
                ("message", r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\""}}]}}]}"#),
                ("message", r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#),
                ("message", "[DONE]"),
            ],
        )
        .expect("complete");
        let calls = r.tool_calls.expect("calls");
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["function"]["name"], "get");
        assert_eq!(calls[0]["function"]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn native_incremental_with_string_null_and_cumulative_usage() {
        let r = run(
            Api::Dashscope,
            &[
                ("result", r#"{"output":{"choices":[{"message":{"content":"","reasoning_content":"Hm","role":"assistant"},"finish_reason":"null"}]},"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6,"output_tokens_details":{"reasoning_tokens":1}},"request_id":"rq"}"#),
                ("result", r#"{"output":{"choices":[{"message":{"content":"2, 3","role":"assistant"},"finish_reason":"null"}]},"usage":{"input_tokens":5,"output_tokens":3,"total_tokens":8,"output_tokens_details":{"reasoning_tokens":1}},"request_id":"rq"}"#),
                ("result", r#"{"output":{"choices":[{"message":{"content":", 5","role":"assistant"},"finish_reason":"stop"}]},"usage":{"input_tokens":5,"output_tokens":4,"total_tokens":9,"output_tokens_details":{"reasoning_tokens":1}},"request_id":"rq"}"#),
            ],
        )
        .expect("complete");
        assert_eq!(r.content.as_deref(), Some("2, 3, 5"));
        assert_eq!(r.reasoning.as_deref(), Some("Hm"));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(r.request_id.as_deref(), Some("rq"));
        let u = r.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.reasoning_tokens),
            (5, 4, 1)
        );
    }

    #[test]
    fn native_tool_call_fragments_merge() {
        let r = run(
            Api::Dashscope,
            &[
                ("result", r#"{"output":{"choices":[{"message":{"content":"","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\""}}]},"finish_reason":"null"}]}}"#),
                ("result", r#"{"output":{"choices":[{"message":{"content":"","tool_calls":[{"index":0,"id":"","type":"function","function":{"arguments":":1}"}}]},"finish_reason":"null"}]}}"#),
                ("result", r#"{"output":{"choices":[{"message":{"content":""},"finish_reason":"tool_calls"}]}}"#),
            ],
        )
        .expect("complete");
        let calls = r.tool_calls.expect("calls");
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["function"]["name"], "get");
        assert_eq!(calls[0]["function"]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn absurd_tool_call_indexes_are_bad() {
        for index in ["4000000000", "1000", "-1", "\"0\""] {
            let mut calls = ToolCalls::default();
            let fragment =
                serde_json::from_str(&format!(r#"{{"index":{index},"id":"c"}}"#)).expect("json");
            assert!(
                matches!(calls.merge(fragment), Err(StreamError::Bad(_))),
                "{index}"
            );
        }
        let mut calls = ToolCalls::default();
        let last = serde_json::json!({"index": MAX_TOOL_CALLS - 1});
        assert!(calls.merge(last).is_ok());
        assert_eq!(
            calls.finish().map(|c| c.as_array().map(Vec::len)),
            Some(Some(1000))
        );
    }

    #[test]
    fn native_cut_and_error_event() {
        let cut = run(
            Api::Dashscope,
            &[(
                "result",
                r#"{"output":{"choices":[{"message":{"content":"2"},"finish_reason":"null"}]}}"#,
            )],
        );
        assert!(cut.is_err());
        let err = run(
            Api::Dashscope,
            &[(
                "error",
                r#"{"code":"DataInspectionFailed","message":"Output data may contain inappropriate content.","request_id":"r"}"#,
            )],
        );
        assert!(err.is_err_and(|e| e.contains("Api")));
    }

    #[test]
    fn responses_events() {
        let r = run(
            Api::Responses,
            &[
                ("response.created", r#"{"type":"response.created","response":{"id":"resp_1","status":"in_progress","output":[]}}"#),
                ("response.reasoning_summary_text.delta", r#"{"type":"response.reasoning_summary_text.delta","delta":"Why"}"#),
                ("response.output_text.delta", r#"{"type":"response.output_text.delta","delta":"Hel"}"#),
                ("response.output_text.delta", r#"{"type":"response.output_text.delta","delta":"lo"}"#),
                ("response.completed", r#"{"type":"response.completed","response":{"id":"resp_1","model":"m","status":"completed","output":[{"type":"reasoning","summary":[{"type":"summary_text","text":"Why"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}],"usage":{"input_tokens":3,"output_tokens":5,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":8}}}"#),
            ],
        )
        .expect("complete");
        assert_eq!(r.content.as_deref(), Some("Hello"));
        assert_eq!(r.reasoning.as_deref(), Some("Why"));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(r.usage.map(|u| u.output_tokens), Some(5));
        let cut = run(
            Api::Responses,
            &[(
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","delta":"Hel"}"#,
            )],
        );
        assert!(cut.is_err());
        let err = run(
            Api::Responses,
            &[(
                "error",
                r#"{"type":"error","code":"data_inspection_failed","message":"Output data may contain inappropriate content."}"#,
            )],
        );
        assert!(err.is_err_and(|e| e.contains("Api")));
    }
}

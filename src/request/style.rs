//! The dispatch over the API styles: each function here picks the style module for an
//! [`Api`] (its path, its body, its answer parser, its stream assembler). The style modules
//! know nothing of each other or of this one.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::api::Api;
use super::chat::{self, ChatStream};
use super::native::{self, NativeStream};
use super::reply::Reply;
use super::responses::{self, ResponsesStream};
use super::sse::{Step, StreamError};
use crate::settings::GenParams;

/// Builds the body of a style from the conversation and the row's own body and `params`;
/// `instructions` (the system prompt) is carried only by the Responses style.
pub fn body(
    api: Api,
    params: &GenParams,
    messages: Vec<Value>,
    instructions: Option<String>,
    row_body: Option<Map<String, Value>>,
    row_params: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    match api {
        Api::Chat => chat::body(params, messages, row_body, row_params),
        Api::Responses => responses::body(params, messages, instructions, row_body, row_params),
        Api::Dashscope => native::body(params, messages, row_body, row_params),
    }
}

/// Parses a whole (not streamed) 200 answer of a style.
pub fn parse(api: Api, body: &[u8]) -> Result<Reply, String> {
    match api {
        Api::Chat => chat::parse(body),
        Api::Responses => responses::parse(body),
        Api::Dashscope => native::parse(body),
    }
}

/// The path of a style's endpoint, appended to the base URL.
pub fn path(api: Api) -> &'static str {
    match api {
        Api::Chat => chat::PATH,
        Api::Responses => responses::PATH,
        Api::Dashscope => native::PATH,
    }
}

/// The body of a streamed attempt: chat asks for a stream with its usage, Responses for a
/// stream; DashScope native streams on a header, with the same body.
pub fn stream_body(api: Api, body: &Bytes) -> Bytes {
    let head: &[u8] = match api {
        Api::Chat => br#"{"stream":true,"stream_options":{"include_usage":true},"#,
        Api::Responses => br#"{"stream":true,"#,
        Api::Dashscope => return body.clone(),
    };
    // Bodies are JSON objects with at least `model`, so `{` is followed by a field.
    let mut out = Vec::with_capacity(body.len() + head.len());
    out.extend_from_slice(head);
    out.extend_from_slice(body.get(1..).unwrap_or_default());
    Bytes::from(out)
}

/// Reassembles one streamed answer (SSE), whatever the style: the events come from one SSE
/// parser (the `eventsource-stream` crate) in `client`, and the style's stream here turns
/// them back into one `Reply`.
///
/// A stream is complete only when its style says so (chat: a finish reason or `[DONE]`;
/// Responses: `response.completed`; DashScope native: a finish reason other than the string
/// `"null"`). A stream that ends before that was cut, and is retried like a network error.
#[derive(Debug)]
pub enum Assembler {
    Chat(ChatStream),
    Responses(ResponsesStream),
    Native(NativeStream),
}

impl Assembler {
    pub fn new(api: Api) -> Assembler {
        match api {
            Api::Chat => Assembler::Chat(ChatStream::default()),
            Api::Responses => Assembler::Responses(ResponsesStream::default()),
            Api::Dashscope => Assembler::Native(NativeStream::default()),
        }
    }

    /// Takes one event: its type (`message` when the event had no `event:` line) and data.
    pub fn event(&mut self, event: &str, data: &str) -> Result<Step, StreamError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(event, data)` pairs and finishes.
    fn run(api: Api, events: &[(&str, &str)]) -> Result<Reply, String> {
        let mut a = Assembler::new(api);
        for (e, d) in events {
            match a.event(e, d) {
                Ok(Step::More) => {}
                Ok(Step::Done) => break,
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

//! Streamed answers (SSE), whatever the API style: the events come from one SSE parser (the
//! `eventsource-stream` crate) in `client`, and each style's assembler here turns them back
//! into one `Reply`.
//!
//! A stream is complete only when its style says so (chat: a finish reason or `[DONE]`;
//! Responses: `response.completed`; DashScope native: a finish reason other than the string
//! `"null"`). A stream that ends before that was cut, and is retried like a network error.

use super::{Reply, chat, native, responses};
use crate::cli::ApiStyle;

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
    pub fn new(api: ApiStyle) -> Assembler {
        match api {
            ApiStyle::Chat => Assembler::Chat(chat::Assembler::default()),
            ApiStyle::Responses => Assembler::Responses(responses::Assembler::default()),
            ApiStyle::Dashscope => Assembler::Native(native::Assembler::default()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(event, data)` pairs and finishes.
    fn run(api: ApiStyle, events: &[(&str, &str)]) -> Result<Reply, String> {
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
            ApiStyle::Chat,
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
            ApiStyle::Chat,
            &[("message", r#"{"choices":[{"delta":{"content":"half"}}]}"#)],
        );
        assert!(cut.is_err_and(|e| e.contains("before the answer finished")));
        let moderated = run(
            ApiStyle::Chat,
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
            ApiStyle::Chat,
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
            ApiStyle::Dashscope,
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
    fn native_cut_and_error_event() {
        let cut = run(
            ApiStyle::Dashscope,
            &[(
                "result",
                r#"{"output":{"choices":[{"message":{"content":"2"},"finish_reason":"null"}]}}"#,
            )],
        );
        assert!(cut.is_err());
        let err = run(
            ApiStyle::Dashscope,
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
            ApiStyle::Responses,
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
            ApiStyle::Responses,
            &[(
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","delta":"Hel"}"#,
            )],
        );
        assert!(cut.is_err());
        let err = run(
            ApiStyle::Responses,
            &[(
                "error",
                r#"{"type":"error","code":"data_inspection_failed","message":"Output data may contain inappropriate content."}"#,
            )],
        );
        assert!(err.is_err_and(|e| e.contains("Api")));
    }
}

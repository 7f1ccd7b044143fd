//! What the streaming styles share: the outcome of one event ([`Step`], [`StreamError`]) and
//! the tool calls reassembled from fragments. A leaf: the style modules use it, and the
//! dispatch over them (`style`) is built on them.

use serde_json::Value;

/// After one event: keep reading, or the answer is complete.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
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
}

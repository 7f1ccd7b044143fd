//! Request building: turns a row into the exact bytes sent, in the run's API style.
//!
//! A row gives its request in one of four forms, first match wins: an OpenAI Batch line
//! (`custom_id` + `body`), a `messages` array, the `--template` over its fields, or the text of
//! its `--prompt-field`. The same function serves the validation pass and the run, so a row
//! that validated builds the same request when it is sent.

pub mod api;
pub mod chat;
pub mod fields;
pub mod native;
pub mod reply;
pub mod responses;
pub mod sse;
pub mod style;
pub mod template;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::input::RawRow;
use crate::settings::{GenParams, OutputFormat, Settings};
pub use api::Api;
use reply::content_text;
pub use reply::{Reply, Usage};
pub use template::Template;

/// Largest request body accepted from one row.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A request ready to send, and what the output needs to know about its row.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub line: u64,
    pub body: Bytes,
    /// Hash of the body as sent (the key is not part of it).
    pub hash: u64,
    pub metadata: Option<Value>,
    /// The model the body names (the run's, or the row's own `params.model` / `body.model`):
    /// the answer is priced by it.
    pub model: Arc<str>,
}

/// Added to the conversation by `--json` when no message mentions JSON: DashScope rejects
/// JSON mode unless the word "json" appears in the messages.
pub const JSON_HINT: &str = "Reply in JSON.";

/// Builds requests for every row of a run.
#[derive(Debug, Clone)]
pub struct Builder {
    template: Option<Template>,
    prompt_field: String,
    id_field: String,
    system: Option<String>,
    params: GenParams,
    api: Api,
    /// The run's model, shared by the rows that do not name their own.
    model: Arc<str>,
}

impl Builder {
    pub fn new(settings: &Settings) -> Result<Builder, String> {
        let template = settings
            .template
            .as_deref()
            .map(Template::parse)
            .transpose()?;
        Ok(Builder {
            template,
            prompt_field: settings.prompt_field.clone(),
            id_field: settings.id_field.clone(),
            system: settings.system.clone(),
            params: settings.params.clone(),
            api: settings.api,
            model: Arc::from(settings.params.model.as_str()),
        })
    }

    pub fn id_field(&self) -> &str {
        &self.id_field
    }

    /// Builds the request of one row. `id` was resolved by the caller. Errors are reasons a
    /// person can act on; the caller adds the file and line.
    pub fn build(&self, row: &RawRow, id: String) -> Result<Prepared, String> {
        let fields = &row.fields;
        let row_params = match fields.get("params") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err("`params` must be a JSON object".to_string()),
        };
        let metadata = fields.get("metadata").filter(|v| !v.is_null()).cloned();

        let (mut messages, row_body) = if let Some(batch_body) = batch_line_body(fields)? {
            let mut body = batch_body.clone();
            let messages = match body.remove("messages") {
                Some(Value::Array(m)) => m,
                Some(_) => return Err("`body.messages` must be an array".to_string()),
                None => return Err("`body` has no `messages`".to_string()),
            };
            check_messages(&messages)?;
            (messages, Some(body))
        } else {
            let messages = match fields.get("messages") {
                Some(Value::Array(m)) => {
                    check_messages(m)?;
                    m.clone()
                }
                Some(_) => return Err("`messages` must be an array".to_string()),
                None => vec![message("user", self.prompt(fields)?)],
            };
            (messages, None)
        };
        // The Responses API carries the system prompt as `instructions`.
        let mut instructions = None;
        if self.api == Api::Responses {
            if !has_role(&messages, "system") {
                instructions = self.system.clone();
            }
        } else {
            self.add_system(&mut messages);
        }
        if self.params.format == OutputFormat::JsonObject
            && !mentions_json(&messages)
            && !instructions.as_deref().is_some_and(text_mentions_json)
        {
            match &mut instructions {
                Some(text) => {
                    text.push_str("\n\n");
                    text.push_str(JSON_HINT);
                }
                None if self.api == Api::Responses => instructions = Some(JSON_HINT.into()),
                None => add_json_hint(&mut messages),
            }
        }
        if let Some(prefix) = &self.params.prefix {
            let mut m = message("assistant", prefix.clone());
            if let Value::Object(o) = &mut m {
                o.insert("partial".into(), Value::Bool(true));
            }
            messages.push(m);
        }
        let body = style::body(
            self.api,
            &self.params,
            messages,
            instructions,
            row_body,
            row_params,
        );
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) if m != &*self.model => Arc::from(m),
            _ => self.model.clone(),
        };
        let bytes = serde_json::to_vec(&Value::Object(body))
            .map_err(|e| format!("cannot encode the request: {e}"))?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(format!(
                "request of {} bytes is over the {} MiB limit",
                bytes.len(),
                MAX_BODY_BYTES / (1024 * 1024)
            ));
        }
        Ok(Prepared {
            id,
            line: row.line,
            hash: xxhash_rust::xxh3::xxh3_64(&bytes),
            body: Bytes::from(bytes),
            metadata,
            model,
        })
    }

    /// The prompt of forms 3 and 4.
    fn prompt(&self, fields: &Map<String, Value>) -> Result<String, String> {
        let text = match &self.template {
            Some(t) => t.render(fields)?,
            None => {
                let value = fields.get(&self.prompt_field).ok_or_else(|| {
                    format!(
                        "no prompt: the row has no `{}` field, `messages` or `body` \
                         (choose the field with --prompt-field, or use --template)",
                        self.prompt_field
                    )
                })?;
                crate::input::field_text(value)
                    .map(|c| c.into_owned())
                    .unwrap_or_default()
            }
        };
        if text.trim().is_empty() {
            return Err("empty prompt".to_string());
        }
        Ok(text)
    }

    /// Puts `--system` first unless the conversation already has a system message.
    fn add_system(&self, messages: &mut Vec<Value>) {
        let Some(system) = &self.system else { return };
        if !has_role(messages, "system") {
            messages.insert(0, message("system", system.clone()));
        }
    }
}

/// A rough count of the input tokens of a request body, for `--dry-run`: over the text of its
/// messages (and `instructions`), a token per 4 ASCII bytes (English is about 4 characters a
/// token) plus a token per 3 other bytes (a CJK character is 3 UTF-8 bytes and about one
/// token), plus 4 per message for the roles and separators.
pub fn estimate_tokens(body: &[u8]) -> u32 {
    fn text_tokens(text: &[u8]) -> u64 {
        let non_ascii = text.iter().filter(|b| !b.is_ascii()).count() as u64;
        (text.len() as u64 - non_ascii).div_ceil(4) + non_ascii.div_ceil(3)
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return u32::try_from(text_tokens(body)).unwrap_or(u32::MAX);
    };
    let messages = v
        .get("messages")
        .or_else(|| v.get("input").and_then(|i| i.get("messages")))
        .or_else(|| v.get("input"))
        .and_then(Value::as_array);
    let mut tokens = 0;
    for m in messages.into_iter().flatten() {
        let text = content_text(m.get("content").cloned()).unwrap_or_default();
        tokens += text_tokens(text.as_bytes()) + 4;
    }
    if let Some(Value::String(i)) = v.get("instructions") {
        tokens += text_tokens(i.as_bytes()) + 4;
    }
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

fn message(role: &str, text: String) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), Value::String(role.into()));
    m.insert("content".into(), Value::String(text));
    Value::Object(m)
}

fn has_role(messages: &[Value], role: &str) -> bool {
    messages
        .iter()
        .any(|m| m.get("role").and_then(Value::as_str) == Some(role))
}

fn text_mentions_json(text: &str) -> bool {
    text.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"json"))
}

/// Whether any message's text (a string, or text parts) contains the word "json".
fn mentions_json(messages: &[Value]) -> bool {
    messages.iter().any(|m| match m.get("content") {
        Some(Value::String(s)) => text_mentions_json(s),
        Some(Value::Array(parts)) => parts.iter().any(|p| {
            p.get("text")
                .and_then(Value::as_str)
                .is_some_and(text_mentions_json)
        }),
        _ => false,
    })
}

/// Appends [`JSON_HINT`] to the first system message, or adds one with it.
fn add_json_hint(messages: &mut Vec<Value>) {
    let first_system = messages
        .iter_mut()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("system"));
    if let Some(Value::Object(m)) = first_system
        && let Some(Value::String(text)) = m.get_mut("content")
    {
        text.push_str("\n\n");
        text.push_str(JSON_HINT);
        return;
    }
    messages.insert(0, message("system", JSON_HINT.to_string()));
}

/// The `body` of an OpenAI Batch line, if the row is one.
fn batch_line_body(fields: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, String> {
    let looks_like_batch = fields.contains_key("custom_id") || fields.contains_key("url");
    match fields.get("body") {
        Some(Value::Object(body)) if looks_like_batch => Ok(Some(body)),
        Some(_) if looks_like_batch => Err("`body` must be a JSON object".to_string()),
        _ => Ok(None),
    }
}

/// Checks a conversation: a non-empty array of objects with a string `role` and a `content`.
fn check_messages(messages: &[Value]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("`messages` is empty".to_string());
    }
    for (i, m) in messages.iter().enumerate() {
        let n = i + 1;
        let Some(obj) = m.as_object() else {
            return Err(format!("message {n} is not an object"));
        };
        if !obj.get("role").is_some_and(Value::is_string) {
            return Err(format!("message {n} has no string `role`"));
        }
        let empty = match obj.get("content") {
            Some(Value::String(s)) => s.trim().is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Null) | None => !obj.contains_key("tool_calls"),
            Some(_) => return Err(format!("message {n}: `content` must be text or parts")),
        };
        if empty && n == messages.len() {
            return Err(format!("message {n} has empty content"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builder(template: Option<&str>, system: Option<&str>) -> Builder {
        Builder {
            template: template.map(|t| Template::parse(t).expect("template")),
            prompt_field: "prompt".into(),
            id_field: "id".into(),
            system: system.map(str::to_string),
            params: GenParams {
                model: "qwen-plus".into(),
                temperature: Some(0.5),
                ..GenParams::default()
            },
            api: Api::Chat,
            model: Arc::from("qwen-plus"),
        }
    }

    fn row(v: Value) -> RawRow {
        RawRow {
            line: 3,
            number: 1,
            fields: v.as_object().cloned().unwrap_or_default(),
        }
    }

    fn body_of(p: &Prepared) -> Value {
        serde_json::from_slice(&p.body).unwrap_or(Value::Null)
    }

    #[test]
    fn prompt_field_with_system_and_row_params() {
        let b = builder(None, Some("Be brief."));
        let p = b
            .build(
                &row(json!({"prompt": "hi", "params": {"temperature": 0.1}, "metadata": {"k": 1}})),
                "1".into(),
            )
            .expect("build");
        let body = body_of(&p);
        assert_eq!(body["model"], "qwen-plus");
        assert_eq!(body["temperature"], 0.1);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "hi");
        assert_eq!(p.metadata, Some(json!({"k": 1})));
    }

    #[test]
    fn batch_line_body_wins_over_defaults() {
        let b = builder(None, None);
        let p = b
            .build(
                &row(json!({"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "qwen-flash", "messages": [{"role": "user", "content": "x"}]}})),
                "q1".into(),
            )
            .expect("build");
        let body = body_of(&p);
        assert_eq!(body["model"], "qwen-flash");
        assert_eq!(&*p.model, "qwen-flash");
        assert_eq!(body["temperature"], 0.5);
    }

    #[test]
    fn messages_with_own_system_get_no_extra() {
        let b = builder(None, Some("S"));
        let msgs = json!([{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]);
        let p = b
            .build(&row(json!({"messages": msgs})), "1".into())
            .expect("build");
        assert_eq!(body_of(&p)["messages"], msgs);
    }

    #[test]
    fn problems_are_reported() {
        let b = builder(Some("{text}"), None);
        assert!(b.build(&row(json!({"other": 1})), "1".into()).is_err());
        assert!(
            b.build(&row(json!({"text": "  "})), "1".into())
                .is_err_and(|e| e.contains("empty"))
        );
        let b = builder(None, None);
        assert!(
            b.build(&row(json!({"x": 1})), "1".into())
                .is_err_and(|e| e.contains("no prompt"))
        );
        assert!(b.build(&row(json!({"messages": []})), "1".into()).is_err());
    }

    #[test]
    fn same_row_same_hash() {
        let b = builder(None, None);
        let r = row(json!({"prompt": "p"}));
        let a = b.build(&r, "1".into()).expect("a");
        let c = b.build(&r, "1".into()).expect("c");
        assert_eq!(a.hash, c.hash);
    }
}

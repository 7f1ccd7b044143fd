//! Request pieces shared by the three styles, parsed borrowed in one pass: messages and their
//! content (a string or text parts), `response_format`-like objects, and the summary of a
//! conversation (prompt, input tokens, partial mode, whether it mentions "json").

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::answer::Format;
use super::schema::Schema;
use super::text::{count_tokens, mentions_json};

/// One message of `messages` (chat, native) or `input` (responses).
#[derive(Deserialize)]
pub(crate) struct RawMessage<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(borrow, default)]
    pub content: Content<'a>,
    /// Partial mode (prefix continuation) on a final assistant message.
    #[serde(default)]
    pub partial: Option<bool>,
}

/// Message content: a string, an array of parts (text parts joined with `\n`), or null.
#[derive(Default)]
pub(crate) struct Content<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of content parts, or null")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Content::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Content::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut text: Option<Cow<'a, str>> = None;
        while let Some(part) = seq.next_element::<Part<'a>>()? {
            let Some(t) = part.text else { continue };
            text = Some(match text {
                None => t,
                Some(prev) => {
                    let mut s = prev.into_owned();
                    s.push('\n');
                    s.push_str(&t);
                    Cow::Owned(s)
                }
            });
        }
        Ok(Content(text.unwrap_or_default()))
    }
}

/// One content part. Its `text` counts when `type` is `text`, `input_text` or `output_text`,
/// or when there is no `type` (DashScope native multimodal parts: `{"text": ...}`).
struct Part<'a> {
    text: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Part<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PartVisitor(std::marker::PhantomData))
    }
}

struct PartVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for PartVisitor<'a> {
    type Value = Part<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a content part object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut is_text = true;
        let mut text = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "type" => {
                    let kind: Cow<'de, str> = map.next_value::<BorrowedCow<'de>>()?.0;
                    is_text = matches!(kind.as_ref(), "text" | "input_text" | "output_text");
                }
                "text" => text = Some(map.next_value::<BorrowedCow<'de>>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Part {
            text: if is_text { text } else { None },
        })
    }
}

/// A string that borrows from the input when it has no escapes.
pub(crate) struct BorrowedCow<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedCow<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BorrowedCow(
            d.deserialize_str(ContentVisitor(std::marker::PhantomData))?
                .0,
        ))
    }
}

/// Chat's and native's `response_format`, or Responses' `text.format`: the schema sits under
/// `json_schema.schema` in the first two and flat under `schema` in Responses; either is read.
#[derive(Deserialize)]
pub(crate) struct RawFormat {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    json_schema: Option<JsonSchemaSpec>,
    #[serde(default)]
    schema: Option<Schema>,
}

#[derive(Deserialize)]
struct JsonSchemaSpec {
    #[serde(default)]
    schema: Option<Schema>,
}

impl RawFormat {
    pub(crate) fn into_format(self) -> Format {
        match self.kind.as_deref() {
            Some("json_object") => Format::JsonObject,
            Some("json_schema") => Format::JsonSchema(Box::new(
                self.json_schema
                    .and_then(|j| j.schema)
                    .or(self.schema)
                    .unwrap_or_default(),
            )),
            _ => Format::Text,
        }
    }
}

/// What the answer needs to know about a conversation.
pub(crate) struct Conversation<'a> {
    /// Text of the last user message.
    pub prompt: Cow<'a, str>,
    /// Sum over all messages (and the extra system text) of count_tokens(content) + 4.
    pub input_tokens: u64,
    /// The last message is an assistant message with `"partial": true`.
    pub partial: bool,
    /// Some message (or the extra system text) contains "json"; only looked for when asked.
    pub mentions_json: bool,
}

/// Summarises `messages` plus an optional extra system message (Responses `instructions`).
/// `look_for_json` asks for [`Conversation::mentions_json`]. The error is the message for a 400.
pub(crate) fn conversation<'a>(
    messages: Vec<RawMessage<'a>>,
    extra_system: Option<&str>,
    look_for_json: bool,
) -> Result<Conversation<'a>, String> {
    let extra_tokens = extra_system.map_or(0, |s| count_tokens(s) + 4);
    let input_tokens = extra_tokens
        + messages
            .iter()
            .map(|m| count_tokens(&m.content.0) + 4)
            .sum::<u64>();
    let mentions_json = look_for_json
        && (extra_system.is_some_and(mentions_json)
            || messages.iter().any(|m| mentions_json(&m.content.0)));
    let partial = messages
        .last()
        .is_some_and(|m| m.role == "assistant" && m.partial == Some(true));
    let Some(last_user) = messages.into_iter().rev().find(|m| m.role == "user") else {
        return Err("The 'messages' array must contain a message with role 'user'.".to_owned());
    };
    Ok(Conversation {
        prompt: last_user.content.0,
        input_tokens,
        partial,
        mentions_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_escapes_and_partial() {
        let body = br#"[{"role":"user","content":[{"type":"text","text":"a\"b"},{"type":"image_url","image_url":{"url":"x"}},{"type":"input_text","text":"c"},{"image":"y"},{"text":"d"}]},{"role":"assistant","content":"pre","partial":true}]"#;
        let messages: Vec<RawMessage<'_>> = serde_json::from_slice(body).expect("valid");
        let c = conversation(messages, Some("sys"), true).expect("ok");
        assert_eq!(c.prompt, "a\"b\nc\nd");
        assert_eq!(
            c.input_tokens,
            count_tokens("sys") + 4 + count_tokens("a\"b\nc\nd") + 4 + count_tokens("pre") + 4
        );
        assert!(c.partial);
        assert!(!c.mentions_json);
    }
}

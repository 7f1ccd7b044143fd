//! The JSON Schema subset the mock understands for `json_schema` answers: parsed with the
//! property order kept, then turned into one deterministic instance (the rules are in
//! `docs/mock.md`).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::text::{count_tokens, reply_for};

/// Deeper nesting (or `$ref` chains) than this generates `null`.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
    Null,
    Unknown,
}

impl Kind {
    fn from_name(name: &str) -> Kind {
        match name {
            "object" => Kind::Object,
            "array" => Kind::Array,
            "string" => Kind::String,
            "integer" => Kind::Integer,
            "number" => Kind::Number,
            "boolean" => Kind::Boolean,
            "null" => Kind::Null,
            _ => Kind::Unknown,
        }
    }
}

/// One schema node; only the keywords the generator uses are kept.
#[derive(Debug, Default)]
pub(crate) struct Schema {
    kind: Option<Kind>,
    /// The first `enum` value.
    first_enum: Option<Value>,
    constant: Option<Value>,
    /// `properties`, in the order of the request.
    properties: Option<Vec<(String, Schema)>>,
    items: Option<Box<Schema>>,
    /// The first schema of `anyOf`, `oneOf` or `allOf`.
    first_variant: Option<Box<Schema>>,
    reference: Option<String>,
    /// `$defs` and `definitions` together.
    defs: Vec<(String, Schema)>,
}

impl Schema {
    /// The instance for `prompt`, as compact JSON text.
    pub(crate) fn instance(&self, prompt: &str) -> String {
        let mut out = String::with_capacity(256);
        let mut g = Generator {
            root: self,
            prompt,
            reply: None,
        };
        g.write(self, 0, &mut out);
        out
    }

    fn find_def(&self, reference: &str) -> Option<&Schema> {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"))?;
        self.defs.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

struct Generator<'a> {
    root: &'a Schema,
    prompt: &'a str,
    /// reply_for(prompt), made once on first use.
    reply: Option<String>,
}

impl Generator<'_> {
    fn write(&mut self, s: &Schema, depth: usize, out: &mut String) {
        if depth > MAX_DEPTH {
            out.push_str("null");
            return;
        }
        if let Some(r) = &s.reference {
            match self.root.find_def(r) {
                Some(target) => self.write(target, depth + 1, out),
                None => out.push_str("null"),
            }
            return;
        }
        if let Some(v) = s.constant.as_ref().or(s.first_enum.as_ref()) {
            push_json(out, v);
            return;
        }
        let kind = match s.kind {
            Some(k) => k,
            None if s.properties.is_some() => Kind::Object,
            None => {
                match &s.first_variant {
                    Some(v) => self.write(v, depth + 1, out),
                    None => out.push_str("null"),
                }
                return;
            }
        };
        match kind {
            Kind::Object => {
                out.push('{');
                for (i, (key, value)) in s.properties.iter().flatten().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json(out, key);
                    out.push(':');
                    self.write(value, depth + 1, out);
                }
                out.push('}');
            }
            Kind::Array => {
                out.push('[');
                match &s.items {
                    Some(items) => self.write(items, depth + 1, out),
                    None => out.push_str("null"),
                }
                out.push(']');
            }
            Kind::String => {
                let reply = self.reply.get_or_insert_with(|| reply_for(self.prompt));
                push_json(out, reply.as_str());
            }
            Kind::Integer => out.push_str(&count_tokens(self.prompt).to_string()),
            Kind::Number => push_json(out, &(count_tokens(self.prompt) as f64)),
            Kind::Boolean => out.push_str("true"),
            Kind::Null | Kind::Unknown => out.push_str("null"),
        }
    }
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => out.push_str(&s),
        Err(_) => out.push_str("null"),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SchemaVisitor)
    }
}

struct SchemaVisitor;

impl<'de> Visitor<'de> for SchemaVisitor {
    type Value = Schema;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON schema object")
    }
    // `true`/`false` are valid schemas; they generate null.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Schema, E> {
        Ok(Schema::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Schema, A::Error> {
        let mut s = Schema::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => s.kind = Some(map.next_value::<TypeField>()?.0),
                "enum" => s.first_enum = map.next_value::<Vec<Value>>()?.into_iter().next(),
                "const" => s.constant = Some(map.next_value::<Value>()?),
                "properties" => s.properties = Some(map.next_value::<Ordered>()?.0),
                "items" => s.items = map.next_value::<Items>()?.0.map(Box::new),
                "anyOf" | "oneOf" | "allOf" => {
                    let variants: Vec<Schema> = map.next_value()?;
                    if s.first_variant.is_none() {
                        s.first_variant = variants.into_iter().next().map(Box::new);
                    }
                }
                "$ref" => s.reference = Some(map.next_value::<String>()?),
                "$defs" | "definitions" => s.defs.extend(map.next_value::<Ordered>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(s)
    }
}

/// `type`: a name, or an array of names of which the first other than "null" counts.
struct TypeField(Kind);

impl<'de> Deserialize<'de> for TypeField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TypeField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type name or an array of type names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TypeField, E> {
                Ok(TypeField(Kind::from_name(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TypeField, A::Error> {
                let mut kind = None;
                while let Some(name) = seq.next_element::<String>()? {
                    if kind.is_none() && name != "null" {
                        kind = Some(Kind::from_name(&name));
                    }
                }
                Ok(TypeField(kind.unwrap_or(Kind::Null)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `items`: a schema, or (tuple form) an array of schemas of which the first counts.
struct Items(Option<Schema>);

impl<'de> Deserialize<'de> for Items {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Items;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a schema or an array of schemas")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Items, E> {
                SchemaVisitor.visit_bool(v).map(|s| Items(Some(s)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Items, A::Error> {
                SchemaVisitor.visit_map(map).map(|s| Items(Some(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
                let first = seq.next_element::<Schema>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Items(first))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map of name to schema, in document order.
struct Ordered(Vec<(String, Schema)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of schemas")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Schema>()? {
                    entries.push((k, v));
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(schema: &str, prompt: &str) -> String {
        let s: Schema = serde_json::from_str(schema).expect("schema");
        s.instance(prompt)
    }

    #[test]
    fn object_in_schema_order() {
        let prompt = "Describe a cat";
        let got = instance(
            r#"{"type":"object","properties":{
                "zeta":{"type":"string"},
                "alpha":{"type":"integer"},
                "mid":{"type":"number"},
                "ok":{"type":"boolean"},
                "tags":{"type":"array","items":{"type":"string","enum":["x","y"]}},
                "none":{"type":"null"},
                "odd":{"type":"weird"},
                "untyped":{}
            },"required":["zeta"],"additionalProperties":false}"#,
            prompt,
        );
        let n = count_tokens(prompt);
        let want = format!(
            r#"{{"zeta":{},"alpha":{n},"mid":{n}.0,"ok":true,"tags":["x"],"none":null,"odd":null,"untyped":null}}"#,
            serde_json::to_string(&reply_for(prompt)).expect("string")
        );
        assert_eq!(got, want);
        let v: Value = serde_json::from_str(&got).expect("valid JSON");
        assert!(v.is_object());
    }

    #[test]
    fn enums_consts_refs_and_variants() {
        assert_eq!(instance(r#"{"type":"integer","enum":[7,8]}"#, "p"), "7");
        assert_eq!(instance(r#"{"const":"fixed"}"#, "p"), r#""fixed""#);
        assert_eq!(instance(r#"{"type":["null","integer"]}"#, "abcdefgh"), "2");
        assert_eq!(
            instance(r#"{"anyOf":[{"type":"boolean"},{"type":"null"}]}"#, "p"),
            "true"
        );
        assert_eq!(
            instance(
                r##"{"type":"object","properties":{"pet":{"$ref":"#/$defs/Pet"},"gone":{"$ref":"#/$defs/Nope"}},
                    "$defs":{"Pet":{"type":"object","properties":{"legs":{"type":"integer","enum":[4]}}}}}"##,
                "p"
            ),
            r#"{"pet":{"legs":4},"gone":null}"#
        );
        // A self-referencing schema stops at the depth limit.
        let looped = instance(
            r##"{"$ref":"#/definitions/N","definitions":{"N":{"type":"array","items":{"$ref":"#/definitions/N"}}}}"##,
            "p",
        );
        assert!(serde_json::from_str::<Value>(&looped).is_ok(), "{looped}");
        assert_eq!(instance("{}", "p"), "null");
        assert_eq!(instance(r#"{"type":"array"}"#, "p"), "[null]");
        assert_eq!(instance(r#"{"type":"object"}"#, "p"), "{}");
    }
}

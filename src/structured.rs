//! Structured output: with `--json` an answer must be a JSON object, with `--json-schema` it
//! must validate against the schema (the `jsonschema` crate). The parsed value goes to the
//! record's `parsed`; an answer that fails is retried a bounded number of times, then recorded
//! as `invalid_output`.

use serde_json::Value;

use crate::settings::OutputFormat;

/// Checks answers against the run's output format.
pub struct Structured {
    validator: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for Structured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Structured")
            .field("schema", &self.validator.is_some())
            .finish()
    }
}

/// Errors named in an `invalid_output` message, at most.
const MAX_SCHEMA_ERRORS: usize = 3;

impl Structured {
    /// `None` for plain text output.
    pub fn new(format: &OutputFormat) -> Result<Option<Structured>, String> {
        match format {
            OutputFormat::Text => Ok(None),
            OutputFormat::JsonObject => Ok(Some(Structured { validator: None })),
            OutputFormat::JsonSchema { schema, .. } => {
                let v = jsonschema::validator_for(schema)
                    .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
                Ok(Some(Structured { validator: Some(v) }))
            }
        }
    }

    /// The parsed answer, or why it is not acceptable.
    pub fn check(&self, content: &str) -> Result<Value, String> {
        let text = strip_fence(content);
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let head: String = text.chars().take(60).collect();
            format!("the answer is not valid JSON ({e}); it starts `{head}`")
        })?;
        match &self.validator {
            None if !value.is_object() => Err("the answer is JSON but not an object".to_string()),
            None => Ok(value),
            Some(v) => {
                let errors: Vec<String> = v
                    .iter_errors(&value)
                    .take(MAX_SCHEMA_ERRORS)
                    .map(|e| {
                        let at = e.instance_path().to_string();
                        if at.is_empty() {
                            e.to_string()
                        } else {
                            format!("at {at}: {e}")
                        }
                    })
                    .collect();
                if errors.is_empty() {
                    Ok(value)
                } else {
                    Err(format!(
                        "the answer does not match the schema: {}",
                        errors.join("; ")
                    ))
                }
            }
        }
    }
}

/// The JSON inside a Markdown code fence (```json … ```), which models add now and then;
/// other text is returned trimmed.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let Some(body) = rest.strip_suffix("```") else {
        return t;
    };
    // Drop the info string (`json`) on the opening line.
    match body.split_once('\n') {
        Some((info, inner)) if !info.contains('{') && !info.contains('[') => inner.trim(),
        _ => body.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_object_mode() {
        let s = Structured::new(&OutputFormat::JsonObject)
            .ok()
            .flatten()
            .expect("checker");
        assert_eq!(s.check(r#" {"a": 1} "#), Ok(json!({"a": 1})));
        assert_eq!(s.check("```json\n{\"a\": 2}\n```"), Ok(json!({"a": 2})));
        assert!(s.check("[1]").is_err_and(|e| e.contains("not an object")));
        assert!(
            s.check("Sure! {\"a\"")
                .is_err_and(|e| e.contains("not valid JSON"))
        );
    }

    #[test]
    fn schema_mode() {
        let schema = json!({"type": "object", "required": ["label"],
            "properties": {"label": {"type": "string", "enum": ["pos", "neg"]}}});
        let s = Structured::new(&OutputFormat::JsonSchema {
            name: "x".into(),
            schema,
        })
        .ok()
        .flatten()
        .expect("checker");
        assert!(s.check(r#"{"label":"pos"}"#).is_ok());
        let e = s.check(r#"{"label":"meh"}"#).err().unwrap_or_default();
        assert!(e.contains("/label"), "{e}");
        assert!(s.check(r#"{}"#).is_err());
    }
}

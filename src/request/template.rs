//! Prompt templates: `{field}` placeholders over a row's fields; `{{` and `}}` are literal braces.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

/// A template compiled once per run.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles a template; an unclosed or empty placeholder is an error naming its position.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        name.push(n);
                    }
                    let name = name.trim().to_string();
                    if !closed {
                        return Err(format!(
                            "--template: `{{` at character {} is never closed (write `{{{{` for a literal brace)",
                            at + 1
                        ));
                    }
                    if name.is_empty() {
                        return Err(format!(
                            "--template: empty placeholder `{{}}` at character {}",
                            at + 1
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => {
                    return Err(format!(
                        "--template: `}}` at character {} has no opening `{{` (write `}}}}` for a literal brace)",
                        at + 1
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Renders the template over a row's fields; a missing field is an error naming it.
    pub fn render(&self, fields: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(name) => {
                    let value = fields
                        .get(name)
                        .ok_or_else(|| format!("template field `{name}` is missing"))?;
                    if let Some(text) = crate::input::field_text(value) {
                        out.push_str(&text);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn renders_fields_and_literal_braces() {
        let t = Template::parse("Summarize {text} as {{\"k\": {n}}}").expect("parse");
        let out = t.render(&fields(serde_json::json!({"text": "hi", "n": 3})));
        assert_eq!(out.as_deref(), Ok("Summarize hi as {\"k\": 3}"));
    }

    #[test]
    fn missing_field_is_named() {
        let t = Template::parse("{a} {b}").expect("parse");
        let err = t.render(&fields(serde_json::json!({"a": "x"})));
        assert_eq!(err, Err("template field `b` is missing".to_string()));
    }

    #[test]
    fn unbalanced_braces_are_rejected() {
        assert!(Template::parse("oops {text").is_err());
        assert!(Template::parse("oops }").is_err());
        assert!(Template::parse("{}").is_err());
    }
}

//! The run's generation parameters in each style's field names, shared by the style modules.

use serde_json::{Map, Value};

use crate::settings::{GenParams, OutputFormat};

/// The run's generation parameters in a style's field names: chat and DashScope native share
/// them (native puts them under `parameters`); the Responses API names a few differently.
pub fn gen_fields(params: &GenParams, responses: bool) -> Map<String, Value> {
    let mut f = Map::new();
    if let Some(t) = params.temperature {
        f.insert("temperature".into(), Value::from(t));
    }
    if let Some(p) = params.top_p {
        f.insert("top_p".into(), Value::from(p));
    }
    if let Some(m) = params.max_tokens {
        let name = if responses {
            "max_output_tokens"
        } else {
            "max_tokens"
        };
        f.insert(name.into(), Value::from(m));
    }
    if let Some(s) = params.seed {
        f.insert("seed".into(), Value::from(s));
    }
    if !params.stop.is_empty() {
        f.insert("stop".into(), Value::from(params.stop.clone()));
    }
    if let Some(t) = params.thinking {
        f.insert("enable_thinking".into(), Value::Bool(t));
    }
    if let Some(b) = params.thinking_budget {
        f.insert("thinking_budget".into(), Value::from(b));
    }
    let format = match &params.format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(serde_json::json!({"type": "json_object"})),
        OutputFormat::JsonSchema { name, schema } if responses => Some(serde_json::json!({
            "type": "json_schema", "name": name, "schema": schema, "strict": true
        })),
        OutputFormat::JsonSchema { name, schema } => Some(serde_json::json!({
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": true}
        })),
    };
    if let Some(format) = format {
        if responses {
            f.insert("text".into(), serde_json::json!({ "format": format }));
        } else {
            f.insert("response_format".into(), format);
        }
    }
    for (k, v) in &params.extra {
        f.insert(k.clone(), v.clone());
    }
    f
}

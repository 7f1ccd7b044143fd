//! DashScope's batch lines for hybrid models (which think or not by `enable_thinking`) must
//! set `enable_thinking` explicitly: this is the value a line without it gets, the model's own
//! default, so that the batch does what a synchronous call without the flag does.

use crate::pricing::base_name;

/// The commercial hybrids that do not think unless asked.
const OFF_BY_DEFAULT: [&str; 3] = ["qwen-plus", "qwen-flash", "qwen-turbo"];

/// The `enable_thinking` a DashScope batch line of `model` must carry when its body has none:
/// `Some(default)` for a hybrid model, `None` for a model with one mode only (thinking-only
/// QwQ, QVQ and `-thinking` models, `-instruct` models, and any model not known as hybrid).
pub fn hybrid_default(model: &str) -> Option<bool> {
    let name = model.to_ascii_lowercase();
    let base = base_name(&name).unwrap_or(&name);
    if OFF_BY_DEFAULT.contains(&base) {
        return Some(false);
    }
    if base.contains("-thinking") || base.contains("-instruct") {
        return None;
    }
    // Qwen3.5 and later hybrids think by default, as do the open-source Qwen3 ones
    // (`qwen3-32b`, `qwen3-235b-a22b`, ...).
    let newer = ["qwen3.5", "qwen3.6", "qwen3.7"]
        .iter()
        .any(|family| base.starts_with(family));
    let open_qwen3 = base
        .strip_prefix("qwen3-")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    (newer || open_qwen3).then_some(true)
}

/// `body` (a JSON object) with `"enable_thinking": value` as its first field; `None` when the
/// body is not an object.
pub fn with_thinking(body: &[u8], value: bool) -> Option<Vec<u8>> {
    let rest = body.strip_prefix(b"{")?;
    let field: &[u8] = match value {
        true => b"{\"enable_thinking\":true",
        false => b"{\"enable_thinking\":false",
    };
    let mut out = Vec::with_capacity(body.len() + field.len() + 1);
    out.extend_from_slice(field);
    if !rest.trim_ascii_start().starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_models_get_their_default_and_single_mode_models_nothing() {
        for (model, want) in [
            ("qwen-plus", Some(false)),
            ("qwen-plus-latest", Some(false)),
            ("qwen-flash-2025-07-28", Some(false)),
            ("qwen-turbo", Some(false)),
            ("qwen3.5-plus", Some(true)),
            ("qwen3.6-flash", Some(true)),
            ("qwen3.7-max", Some(true)),
            ("qwen3-32b", Some(true)),
            ("qwen3-235b-a22b", Some(true)),
            ("qwen3-235b-a22b-thinking-2507", None),
            ("qwen3-235b-a22b-instruct-2507", None),
            ("qwq-plus", None),
            ("qvq-max", None),
            ("qwen-max", None),
            ("qwen3-max", None),
            ("batch-test-model", None),
            ("gpt-4.1-mini", None),
        ] {
            assert_eq!(hybrid_default(model), want, "{model}");
        }
    }

    #[test]
    fn the_flag_goes_first_in_the_body() {
        let body = br#"{"model":"m","messages":[]}"#;
        let got = with_thinking(body, false).unwrap_or_default();
        assert_eq!(
            got,
            br#"{"enable_thinking":false,"model":"m","messages":[]}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap_or_default();
        assert_eq!(v["enable_thinking"], false);
        assert_eq!(
            with_thinking(b"{}", true).unwrap_or_default(),
            br#"{"enable_thinking":true}"#
        );
        assert_eq!(with_thinking(b"[1]", true), None);
    }
}

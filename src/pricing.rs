//! Prices and cost: a price table kept as data (`src/prices.toml`), looked up by model name.
//! A model without a price costs `None` (unknown), never zero.

use std::collections::HashMap;

use serde::Deserialize;

use crate::request::Usage;

const BUILT_IN: &str = include_str!("prices.toml");

/// The price of one model, per million tokens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub currency: String,
    pub input: f64,
    pub output: f64,
    /// Output price in thinking mode (applies when the answer carries reasoning tokens).
    pub thinking_output: Option<f64>,
    /// Price of input tokens served from the context cache.
    pub cached_input: Option<f64>,
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Table {
    models: HashMap<String, Price>,
}

/// The price table of a run.
#[derive(Debug)]
pub struct Prices {
    models: HashMap<String, Price>,
}

impl Prices {
    pub fn built_in() -> Prices {
        // The table is part of the binary and covered by a test, so it always parses.
        let table: Table = toml::from_str(BUILT_IN).unwrap_or(Table {
            models: HashMap::new(),
        });
        Prices {
            models: table.models,
        }
    }

    /// The price of a model by its exact name.
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.models.get(model)
    }

    /// The cost of one answer, or `None` when the model has no price or there is no usage.
    pub fn cost(&self, model: &str, usage: Option<&Usage>) -> Option<f64> {
        let p = self.get(model)?;
        let u = usage?;
        let cached = u.cached_tokens.min(u.input_tokens);
        let fresh = u.input_tokens - cached;
        let output_price = if u.reasoning_tokens > 0 {
            p.thinking_output.unwrap_or(p.output)
        } else {
            p.output
        };
        let m = 1_000_000.0;
        Some(
            fresh as f64 * p.input / m
                + cached as f64 * p.cached_input.unwrap_or(p.input) / m
                + u.output_tokens as f64 * output_price / m,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_parses() {
        let t: Result<Table, _> = toml::from_str(BUILT_IN);
        assert!(t.is_ok_and(|t| t.models.len() >= 5));
    }

    #[test]
    fn qwen_plus_cost_and_thinking() {
        let p = Prices::built_in();
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..Usage::default()
        };
        let c = p.cost("qwen-plus", Some(&u)).unwrap_or_default();
        assert!((c - 1.6).abs() < 1e-9);
        let t = Usage {
            reasoning_tokens: 10,
            ..u
        };
        let c = p.cost("qwen-plus", Some(&t)).unwrap_or_default();
        assert!((c - 4.4).abs() < 1e-9);
        assert_eq!(p.cost("no-such-model", Some(&u)), None);
    }
}

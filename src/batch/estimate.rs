//! The `--max-cost` check of batch mode: before anything is uploaded, the rows about to be
//! submitted are priced at their worst case (the input estimate plus `--max-tokens` output
//! tokens, or 256 without it, at the batch price), by the rule the synchronous mode reserves
//! each attempt by. Over the cap, nothing is submitted.

use crate::exit::Stop;
// Output tokens per row when `--max-tokens` is not given: the synchronous mode's bound
// before any answer.
use crate::limit::INITIAL_OUTPUT_GUESS as OUTPUT_GUESS;
use crate::pricing::{self, Prices};
use crate::request::estimate_tokens;
use crate::settings::Settings;

/// The worst case of the rows about to be submitted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    pub rows: u64,
    pub input_tokens: u64,
    /// At the batch price, in `currency`.
    pub cost: f64,
    pub currency: String,
    /// A model of some row that has no price: the estimate is unknown.
    pub unpriced: Option<String>,
}

impl Estimate {
    /// Adds one row: its request body and the model it names.
    pub fn add(&mut self, prices: &Prices, settings: &Settings, model: &str, body: &[u8]) {
        let input = u64::from(estimate_tokens(body));
        self.rows += 1;
        self.input_tokens += input;
        let Some(price) = prices.get(model) else {
            self.unpriced.get_or_insert_with(|| model.to_string());
            return;
        };
        let thinking = pricing::priced_as_thinking(
            super::files::thinking_of(body).or(settings.params.thinking),
            price.thinks_by_default(),
            false,
        );
        let bound = settings.params.max_tokens.unwrap_or(OUTPUT_GUESS);
        match price.upper_bound(input, bound, thinking) {
            Some(c) => self.cost += c * (1.0 - price.batch_discount()),
            None => {
                self.unpriced.get_or_insert_with(|| model.to_string());
            }
        }
        if self.currency.is_empty() {
            self.currency = price.currency().to_string();
        }
    }

    /// The stop of a run whose estimate passes `--max-cost`, if it does.
    pub fn check(&self, settings: &Settings) -> Option<Stop> {
        let cap = settings.max_cost?;
        let over = self.unpriced.is_some() || pricing::round_cost(self.cost) > cap;
        (self.rows > 0 && over).then(|| Stop::BatchEstimate {
            message: self.describe(settings, cap),
        })
    }

    /// The `--dry-run` line of the check: whether the run would stop before uploading.
    pub fn dry_run_line(&self, settings: &Settings) -> Option<String> {
        let cap = settings.max_cost?;
        Some(match self.check(settings) {
            Some(_) if self.unpriced.is_some() => format!(
                "{cap}: the run would stop before uploading: the estimate is unknown (a model \
                 has no price)"
            ),
            Some(_) => format!(
                "{cap}: the run would stop before uploading: the worst case is {:.6} {} at \
                 the batch price (--max-cost rule)",
                pricing::round_cost(self.cost),
                self.currency
            ),
            None => format!(
                "{cap}: within it: the worst case is {:.6} {} at the batch price \
                 (--max-cost rule)",
                pricing::round_cost(self.cost),
                self.currency
            ),
        })
    }

    fn describe(&self, settings: &Settings, cap: f64) -> String {
        let output = match settings.params.max_tokens {
            Some(m) => format!("at most {m} output tokens each (--max-tokens)"),
            None => format!("{OUTPUT_GUESS} output tokens each (no --max-tokens)"),
        };
        let basis = format!(
            "{} rows, about {} input tokens and {output}, at the batch price",
            self.rows, self.input_tokens
        );
        match &self.unpriced {
            Some(model) => format!(
                "--max-cost {cap}: the batch estimate ({basis}) is unknown: model `{model}` \
                 has no price (add one with --pricing); nothing was uploaded"
            ),
            None => format!(
                "--max-cost {cap}: the batch estimate is up to {:.6} {} ({basis}), over the \
                 cap; nothing was uploaded (lower --max-tokens or raise --max-cost; \
                 --dry-run shows the estimate)",
                pricing::round_cost(self.cost),
                self.currency
            ),
        }
    }
}

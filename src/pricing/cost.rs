//! Cost: what one answer or one request costs at a model's price (tiers, thinking, cache,
//! batch), and how costs are rounded for records and summaries.

use std::sync::Arc;

use crate::request::Usage;

/// Prices are per this many tokens.
const PER: f64 = 1_000_000.0;

/// Costs in records and summaries are rounded to a ten-billionth of the currency unit: this
/// many steps per unit (a power of ten that is exact as an `f64`).
pub const COST_PRECISION: f64 = 1e10;

/// A cost rounded to 1 / [`COST_PRECISION`], so that it is written without float noise
/// (`0.0000272`, not `0.000027200000000000004`): dividing by an exact power of ten gives the
/// `f64` nearest to the rounded decimal, which is written as that decimal.
pub fn round_cost(cost: f64) -> f64 {
    // `+ 0.0` turns -0.0 (the sum of no costs, for one) into 0.0, which prints as 0.
    (cost * COST_PRECISION).round() / COST_PRECISION + 0.0
}

/// Whether the worst case of a request prices its output at the thinking price: with
/// `--thinking on`; with no `--thinking` for a model that thinks by default
/// (`thinks_by_default` in its price entry); and once an answer of the run has thought, which
/// proves it. The one rule of `--max-cost` and `--dry-run`.
pub fn priced_as_thinking(
    thinking: Option<bool>,
    thinks_by_default: bool,
    seen_reasoning: bool,
) -> bool {
    thinking.unwrap_or(thinks_by_default) || seen_reasoning
}

/// The cost of one answer, with what the summary reports about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub amount: f64,
    pub currency: Arc<str>,
    pub source: Option<Arc<str>>,
}

/// The prices of one input-length tier, per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    /// Output price when the answer carries reasoning tokens; `None`: same as `output`.
    pub thinking_output: Option<f64>,
    /// Price of cache-hit input tokens; `None`: same as `input`.
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tier {
    /// The largest input (tokens, inclusive) this tier prices; `None`: no limit.
    pub(super) up_to: Option<u64>,
    pub(super) rates: Rates,
}

/// The price of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub currency: Arc<str>,
    /// Where the price comes from and when it was read.
    pub source: Option<Arc<str>>,
    /// Fraction of the price taken off under a Batch API, in 0..=1.
    pub(super) batch_discount: f64,
    /// The model thinks unless `enable_thinking: false` is sent (open-source Qwen3, Qwen3.5 and
    /// later hybrids): its worst case is priced at the thinking price.
    pub(super) thinks_by_default: bool,
    /// At least one; `up_to` increasing, only the last may be `None`.
    pub(super) tiers: Vec<Tier>,
}

impl Price {
    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Whether the model thinks when `enable_thinking` is not sent.
    pub fn thinks_by_default(&self) -> bool {
        self.thinks_by_default
    }

    /// The fraction taken off under a Batch API (0.5: half price).
    pub fn batch_discount(&self) -> f64 {
        self.batch_discount
    }

    /// The rates that price a whole request with this many input tokens, or `None` when the
    /// request is larger than the last tier with a known price.
    pub fn rates(&self, input_tokens: u64) -> Option<&Rates> {
        self.tiers
            .iter()
            .find(|t| t.up_to.is_none_or(|up_to| input_tokens <= up_to))
            .map(|t| &t.rates)
    }

    /// The cost of one answer; `batch` when it was made through a Batch API.
    pub fn cost(&self, usage: &Usage, batch: bool) -> Option<f64> {
        let r = self.rates(usage.input_tokens)?;
        let output_rate = if usage.reasoning_tokens > 0 {
            r.thinking_output.unwrap_or(r.output)
        } else {
            r.output
        };
        let output = usage.output_tokens as f64 * output_rate;
        let cost = if batch {
            (usage.input_tokens as f64 * r.input + output) * (1.0 - self.batch_discount)
        } else {
            let cached = usage.cached_tokens.min(usage.input_tokens);
            let fresh = usage.input_tokens - cached;
            fresh as f64 * r.input + cached as f64 * r.cached_input.unwrap_or(r.input) + output
        };
        Some(cost / PER)
    }

    /// The highest cost a request can have: no cache hits, no batch discount, and every output
    /// token at the dearer of the output and thinking prices.
    pub fn worst_case(&self, input_tokens: u64, max_output_tokens: u64) -> Option<f64> {
        let r = self.rates(input_tokens)?;
        let output_rate = r.output.max(r.thinking_output.unwrap_or(r.output));
        Some((input_tokens as f64 * r.input + max_output_tokens as f64 * output_rate) / PER)
    }

    /// The highest cost of a request when it is known whether it thinks: as
    /// [`Price::worst_case`], but at the plain output price when `thinking` is false.
    pub fn upper_bound(
        &self,
        input_tokens: u64,
        max_output_tokens: u64,
        thinking: bool,
    ) -> Option<f64> {
        if thinking {
            return self.worst_case(input_tokens, max_output_tokens);
        }
        let r = self.rates(input_tokens)?;
        Some((input_tokens as f64 * r.input + max_output_tokens as f64 * r.output) / PER)
    }

    /// This price at the batch price: every rate less the batch discount, cached input priced
    /// as input (batch pricing has no cache discount), no further discount, and `note` after
    /// the source.
    pub(super) fn into_batch_price(mut self, note: &str) -> Price {
        let share = 1.0 - self.batch_discount;
        for t in &mut self.tiers {
            let r = &mut t.rates;
            r.input *= share;
            r.output *= share;
            r.thinking_output = r.thinking_output.map(|o| o * share);
            r.cached_input = None;
        }
        self.batch_discount = 0.0;
        self.source = Some(match &self.source {
            Some(s) => format!("{s}; {note}").into(),
            None => note.into(),
        });
        self
    }

    /// The cost of the input alone (no cache hits, no batch discount): the least a request
    /// can cost.
    pub fn input_only(&self, input_tokens: u64) -> Option<f64> {
        let r = self.rates(input_tokens)?;
        Some(input_tokens as f64 * r.input / PER)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pricing::{Prices, Region};

    #[test]
    fn the_cost_of_nothing_is_zero_not_minus_zero() {
        let none: f64 = std::iter::empty::<f64>().sum();
        assert!(round_cost(none).is_sign_positive(), "{}", round_cost(none));
        assert_eq!(round_cost(1.000_000_000_04), 1.0);
    }

    pub(in crate::pricing) fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    pub(in crate::pricing) fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn qwen_plus_intl_cost_and_thinking() {
        let p = Prices::built_in();
        let u = usage(1_000_000, 1_000_000);
        assert!(close(p.cost_of("qwen-plus", &u, false), 1.6));
        assert!(close(
            p.cost("qwen-plus", None, Some(&u)).map(|c| c.amount),
            1.6
        ));
        let t = Usage {
            reasoning_tokens: 10,
            ..u
        };
        assert!(close(p.cost_of("qwen-plus", &t, false), 4.4));
        assert_eq!(p.cost("qwen-plus", None, None), None);
        // No thinking price: reasoning answers cost the output price.
        assert!(close(p.cost_of("gpt-5-mini", &t, false), 0.25 + 2.0));
    }

    #[test]
    fn one_tier_prices_the_whole_request() {
        let p = Prices::for_region(Region::Cn);
        // 100K input: tier 1 (0.8 / 2.0) for every token.
        assert!(close(
            p.cost_of("qwen-plus", &usage(100_000, 10_000), false),
            0.08 + 0.02
        ));
        // The boundary is inclusive.
        assert!(close(
            p.cost_of("qwen-plus", &usage(128_000, 0), false),
            0.1024
        ));
        // 200K input: tier 2 (2.4 / 20) for every token, not just those above 128K.
        assert!(close(
            p.cost_of("qwen-plus", &usage(200_000, 10_000), false),
            0.48 + 0.2
        ));
        let thinking = Usage {
            reasoning_tokens: 5_000,
            ..usage(200_000, 10_000)
        };
        assert!(close(p.cost_of("qwen-plus", &thinking, false), 0.48 + 0.24));
        // The open-ended last tier.
        assert!(close(
            p.cost_of("qwen-plus", &usage(1_000_000, 0), false),
            4.8
        ));
        assert_eq!(p.get("qwen-plus").map(Price::currency), Some("CNY"));
        // Intl qwen3-max: 40K input is in the 32K-128K tier.
        let i = Prices::built_in();
        assert!(close(i.input_only("qwen3-max", 40_000), 0.096));
        assert!(close(i.input_only("qwen3-max", 32_000), 0.0384));
    }

    #[test]
    fn a_request_above_a_bounded_last_tier_has_no_price() {
        let p = Prices::built_in();
        assert!(
            p.cost_of("qwen3.5-plus", &usage(256_000, 0), false)
                .is_some()
        );
        assert_eq!(p.cost_of("qwen3.5-plus", &usage(256_001, 0), false), None);
        assert_eq!(p.worst_case("qwen3.5-plus", 300_000, 10), None);
    }

    #[test]
    fn cached_tokens_are_priced_once() {
        let p = Prices::built_in();
        let u = Usage {
            cached_tokens: 400_000,
            ..usage(1_000_000, 0)
        };
        // 600K fresh at 0.40 and 400K cached at 0.10.
        assert!(close(p.cost_of("gpt-4.1-mini", &u, false), 0.24 + 0.04));
        // No cache price: cached tokens cost the input price.
        assert!(close(p.cost_of("qwen-max", &u, false), 1.6));
        // More cached tokens than input tokens count as all input cached.
        let over = Usage {
            cached_tokens: 2_000_000,
            ..u
        };
        assert!(close(p.cost_of("gpt-4.1-mini", &over, false), 0.1));
        // The cache price of the tier that applies.
        let c = Prices::for_region(Region::Cn);
        let big = Usage {
            cached_tokens: 100_000,
            ..usage(200_000, 0)
        };
        assert!(close(c.cost_of("qwen-plus", &big, false), 0.24 + 0.05));
    }

    #[test]
    fn batch_halves_the_price_and_drops_the_cache_price() {
        let p = Prices::built_in();
        let u = usage(1_000_000, 1_000_000);
        assert!(close(p.cost_of("qwen-plus", &u, true), 0.8));
        let cached = Usage {
            cached_tokens: 400_000,
            ..usage(1_000_000, 0)
        };
        assert!(close(p.cost_of("gpt-4.1-mini", &cached, true), 0.2));
    }

    #[test]
    fn worst_case_and_input_only() {
        let p = Prices::built_in();
        // Output at the thinking price, 4.0.
        assert!(close(p.worst_case("qwen-plus", 1_000, 1_000), 0.0044));
        assert!(close(p.input_only("qwen-plus", 1_000), 0.0004));
        assert!(close(p.worst_case("gpt-4o-mini", 1_000_000, 0), 0.15));
    }

    #[test]
    fn costs_round_to_a_fixed_precision() {
        assert_eq!(round_cost(0.000027200000000000004), 0.0000272);
        assert_eq!(round_cost(0.1 + 0.2), 0.3);
        assert_eq!(round_cost(0.0), 0.0);
        assert!(
            priced_as_thinking(None, true, false) && priced_as_thinking(Some(true), false, false)
        );
        assert!(!priced_as_thinking(None, false, false) && priced_as_thinking(None, false, true));
        assert!(!priced_as_thinking(Some(false), true, false));
        assert!(priced_as_thinking(Some(false), true, true));
    }
}

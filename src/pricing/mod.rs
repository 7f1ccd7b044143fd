//! Prices and cost: a price table kept as data (`src/prices.toml`, built in) plus a user's
//! `--pricing FILE` in the same format, looked up by model name (see Rules). A model without a
//! price costs `None` (unknown), never zero.
//!
//! # File format
//!
//! Prices are per million tokens. An entry lives in one of three sections:
//!
//! ```toml
//! [models."my-model"]          # any region
//! currency = "USD"
//! input = 1.0
//! output = 2.0
//! thinking_output = 4.0        # optional: output price when the answer has reasoning tokens
//! cached_input = 0.2           # optional: price of cache-hit input tokens
//! batch_discount = 0.5         # optional: fraction taken off under a Batch API
//! aliases = ["my-model-2026-01-01"]  # optional: other names billed the same
//! source = "my contract, 2026-11"    # optional in a user file
//!
//! [cn.models."qwen-plus"]      # only when the region is cn (also: [intl.models."..."])
//! currency = "CNY"
//! tiers = [
//!     { up_to = 128_000, input = 0.8, output = 2.0, thinking_output = 8.0, cached_input = 0.2 },
//!     { input = 4.8, output = 48.0 },
//! ]
//! ```
//!
//! A top-level `batch_discount` is the default of the file's entries; without it an entry gets
//! no batch discount. The built-in file sets 0.5.
//!
//! # Rules
//!
//! - Region: the table of a region is `[models]` with `[<region>.models]` on top. The `us`
//!   region uses the `intl` table.
//! - A user file is resolved the same way and then replaces built-in entries of the same name
//!   whole, whatever section the built-in entry came from: a user `[models.X]` prices X in
//!   every region, since the user knows their contract. Built-in aliases of X follow the
//!   user's X.
//! - Tiers: one tier prices the WHOLE request, the first whose `up_to` (input tokens,
//!   inclusive) covers the request's input tokens. A last tier without `up_to` is open-ended;
//!   with one, larger requests have no known price.
//! - Thinking: when the answer has reasoning tokens and the tier has `thinking_output`, all
//!   output tokens (which include the reasoning tokens) cost `thinking_output`.
//! - Cache: cached tokens (at most the input tokens) cost `cached_input` when given, else
//!   `input`; the rest of the input costs `input`.
//! - Batch: every token costs its real-time price minus `batch_discount`, and cached tokens
//!   are priced as normal input (provider-apis.md trap 9: batch does not combine with the
//!   context-cache discount).
//! - Names: an entry's name or one of its `aliases`; else, for a name with a dated suffix
//!   (`-2024-07-18`, `-0125`, `-latest`), its base name ([`base_name`]). There is no other
//!   prefix matching. An answer is priced by the model its request named, and by the name the
//!   endpoint answered with only when the sent one has no price ([`Prices::cost`]).
//! - Caps and estimates ([`priced_as_thinking`]): the worst case prices output at the thinking
//!   price with `--thinking on`, or without `--thinking` for a model whose entry says
//!   `thinks_by_default = true`, or once an answer of the run has thought.
//! - Costs are written rounded to 1e-10 ([`round_cost`]).

mod cost;
mod file;
mod table;

use std::str::FromStr;

pub use cost::{COST_PRECISION, Cost, Price, Rates, priced_as_thinking, round_cost};
pub use table::{BATCH_CHAT_HOST, Prices, base_name, is_batch_chat_host};

/// Which regional price list applies: the run's region ([`Region::price_list`]).
pub use crate::settings::Region;

impl FromStr for Region {
    type Err = String;

    /// A price list's name: `intl`, `cn` or `us` (any case); `us` uses the international table.
    fn from_str(s: &str) -> Result<Region, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "intl" | "us" => Ok(Region::Intl),
            "cn" => Ok(Region::Cn),
            _ => Err(format!(
                "unknown price region `{s}`: expected intl, cn or us"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_parses() {
        assert_eq!("intl".parse(), Ok(Region::Intl));
        assert_eq!("us".parse(), Ok(Region::Intl));
        assert_eq!("CN".parse(), Ok(Region::Cn));
        let e = "eu".parse::<Region>().err().unwrap_or_default();
        assert!(e.contains("`eu`") && e.contains("intl, cn or us"), "{e}");
        assert_eq!(Region::Cn.to_string(), "cn");
    }
}

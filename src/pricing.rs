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

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::request::Usage;

const BUILT_IN: &str = include_str!("prices.toml");
const BUILT_IN_NAME: &str = "built-in prices.toml";

/// Prices are per this many tokens.
const PER: f64 = 1_000_000.0;

/// Costs in records and summaries are rounded to a ten-billionth of the currency unit: this
/// many steps per unit (a power of ten that is exact as an `f64`).
pub const COST_PRECISION: f64 = 1e10;

/// A cost rounded to 1 / [`COST_PRECISION`], so that it is written without float noise
/// (`0.0000272`, not `0.000027200000000000004`): dividing by an exact power of ten gives the
/// `f64` nearest to the rounded decimal, which is written as that decimal.
pub fn round_cost(cost: f64) -> f64 {
    (cost * COST_PRECISION).round() / COST_PRECISION
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

/// The base name of a model name with a dated suffix: `gpt-4o-mini-2024-07-18`,
/// `qwen-max-0919` and `qwen-plus-latest` give `gpt-4o-mini`, `qwen-max` and `qwen-plus`.
/// `None` when the name has no such suffix.
pub fn base_name(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, tail) = model.rsplit_once('-')?;
    let base = if tail == "latest" || (tail.len() == 4 && digits(tail)) {
        head
    } else if tail.len() == 2 && digits(tail) {
        // -YYYY-MM-DD
        let (head, month) = head.rsplit_once('-')?;
        let (head, year) = head.rsplit_once('-')?;
        (month.len() == 2 && digits(month) && year.len() == 4 && digits(year)).then_some(head)?
    } else {
        return None;
    };
    (!base.is_empty()).then_some(base)
}

/// The cost of one answer, with what the summary reports about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    pub amount: f64,
    pub currency: Arc<str>,
    pub source: Option<Arc<str>>,
}

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
struct Tier {
    /// The largest input (tokens, inclusive) this tier prices; `None`: no limit.
    up_to: Option<u64>,
    rates: Rates,
}

/// The price of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub currency: Arc<str>,
    /// Where the price comes from and when it was read.
    pub source: Option<Arc<str>>,
    /// Fraction of the price taken off under a Batch API, in 0..=1.
    batch_discount: f64,
    /// The model thinks unless `enable_thinking: false` is sent (open-source Qwen3, Qwen3.5 and
    /// later hybrids): its worst case is priced at the thinking price.
    thinks_by_default: bool,
    /// At least one; `up_to` increasing, only the last may be `None`.
    tiers: Vec<Tier>,
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

    /// The cost of the input alone (no cache hits, no batch discount): the least a request
    /// can cost.
    pub fn input_only(&self, input_tokens: u64) -> Option<f64> {
        let r = self.rates(input_tokens)?;
        Some(input_tokens as f64 * r.input / PER)
    }
}

/// The price table of a run, for one region.
#[derive(Debug, Clone)]
pub struct Prices {
    region: Region,
    models: HashMap<String, Price>,
    /// Other names billed like a model: alias -> a key of `models`. No key is in both maps.
    aliases: HashMap<String, String>,
}

impl Prices {
    /// The built-in table of the default region (`intl`).
    pub fn built_in() -> Prices {
        Prices::for_region(Region::default())
    }

    /// The built-in table of a region.
    pub fn for_region(region: Region) -> Prices {
        // The table is part of the binary and a test loads it in every region, so this
        // fallback to an empty table (every cost unknown) is never taken.
        parse(BUILT_IN, BUILT_IN_NAME, None, region).unwrap_or_else(|_| Prices {
            region,
            models: HashMap::new(),
            aliases: HashMap::new(),
        })
    }

    /// This table with the entries of a user's price file on top (see the module docs).
    /// Errors name the file and, where they can, the line.
    pub fn with_overrides(mut self, path: &Path) -> Result<Prices, String> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read price file {name}: {e}"))?;
        let user = parse(
            &text,
            &name,
            Some(&format!("--pricing {name}")),
            self.region,
        )?;
        for (model, price) in user.models {
            self.aliases.remove(&model);
            self.models.insert(model, price);
        }
        for (alias, target) in user.aliases {
            if self.models.remove(&alias).is_some() {
                // Names billed like the replaced model are now billed like its new target.
                for t in self.aliases.values_mut().filter(|t| **t == alias) {
                    t.clone_from(&target);
                }
            }
            self.aliases.insert(alias, target);
        }
        Ok(self)
    }

    pub fn region(&self) -> Region {
        self.region
    }

    /// The price of a model by its name or one of its aliases, else by its [`base_name`].
    pub fn get(&self, model: &str) -> Option<&Price> {
        let exact = |name: &str| {
            self.models.get(name).or_else(|| {
                self.aliases
                    .get(name)
                    .and_then(|target| self.models.get(target))
            })
        };
        exact(model).or_else(|| base_name(model).and_then(exact))
    }

    /// The price of an answer: that of the model its request named (`sent`), or, when that one
    /// has none, of the model the endpoint answered with. Records, the summary and
    /// `--max-cost` all price through this.
    pub fn price_for(&self, sent: &str, answered: Option<&str>) -> Option<&Price> {
        self.get(sent).or_else(|| self.get(answered?))
    }

    /// The real-time cost of one answer (see [`Prices::price_for`]), or `None` when neither
    /// model has a price or there is no usage.
    pub fn cost(&self, sent: &str, answered: Option<&str>, usage: Option<&Usage>) -> Option<Cost> {
        let price = self.price_for(sent, answered)?;
        Some(Cost {
            amount: price.cost(usage?, false)?,
            currency: price.currency.clone(),
            source: price.source.clone(),
        })
    }

    /// The cost of one answer, or `None` when the model (or a request this large) has no
    /// price; `batch` when it was made through a Batch API.
    pub fn cost_of(&self, model: &str, usage: &Usage, batch: bool) -> Option<f64> {
        self.get(model)?.cost(usage, batch)
    }

    /// The highest possible cost of a request (see [`Price::worst_case`]), for spend caps and
    /// the top of a dry-run range.
    pub fn worst_case(
        &self,
        model: &str,
        input_tokens: u64,
        max_output_tokens: u64,
    ) -> Option<f64> {
        self.get(model)?.worst_case(input_tokens, max_output_tokens)
    }

    /// The cost of a request's input alone, the bottom of a dry-run range.
    pub fn input_only(&self, model: &str, input_tokens: u64) -> Option<f64> {
        self.get(model)?.input_only(input_tokens)
    }
}

// ---- The file as written ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    batch_discount: Option<f64>,
    #[serde(default)]
    models: BTreeMap<String, Spanned<RawEntry>>,
    #[serde(default)]
    intl: RawRegion,
    #[serde(default)]
    cn: RawRegion,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(default)]
    models: BTreeMap<String, Spanned<RawEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    currency: String,
    input: Option<f64>,
    output: Option<f64>,
    thinking_output: Option<f64>,
    cached_input: Option<f64>,
    tiers: Option<Vec<RawTier>>,
    batch_discount: Option<f64>,
    source: Option<String>,
    #[serde(default)]
    thinks_by_default: bool,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    up_to: Option<u64>,
    input: f64,
    output: f64,
    thinking_output: Option<f64>,
    cached_input: Option<f64>,
}

/// A checked entry, with what is needed to resolve and report it.
struct Entry {
    price: Price,
    aliases: Vec<String>,
    line: usize,
}

/// Parses and checks a whole price file (every section, so that an error does not depend on
/// the region), and returns its table for `region`.
fn parse(
    text: &str,
    file: &str,
    default_source: Option<&str>,
    region: Region,
) -> Result<Prices, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => format!("{file}:{}: {}", line_col(text, &span), e.message()),
        None => format!("{file}: {}", e.message()),
    })?;
    let discount = raw.batch_discount.unwrap_or(0.0);
    check_discount(discount).map_err(|why| format!("{file}: {why}"))?;
    let section = |models| section(text, file, models, discount, default_source);
    let any = section(raw.models)?;
    let intl = section(raw.intl.models)?;
    let cn = section(raw.cn.models)?;
    let mut wanted = None;
    for r in [Region::Intl, Region::Cn] {
        let regional = match r {
            Region::Intl | Region::Us => &intl,
            Region::Cn => &cn,
        };
        let table = resolve(r, &any, regional).map_err(|why| format!("{file}:{why}"))?;
        if r == region.price_list() {
            wanted = Some(table);
        }
    }
    wanted.ok_or_else(|| format!("{file}: no table for region {region}"))
}

/// Checks the entries of one section.
fn section(
    text: &str,
    file: &str,
    models: BTreeMap<String, Spanned<RawEntry>>,
    file_discount: f64,
    default_source: Option<&str>,
) -> Result<BTreeMap<String, Entry>, String> {
    let mut checked = BTreeMap::new();
    for (name, spanned) in models {
        let line = line_of(text, spanned.span().start);
        let (price, aliases) = entry(spanned.into_inner(), file_discount, default_source)
            .map_err(|why| format!("{file}:{line}: model `{name}`: {why}"))?;
        checked.insert(
            name,
            Entry {
                price,
                aliases,
                line,
            },
        );
    }
    Ok(checked)
}

/// The table of one region: the `[models]` entries with the region's entries on top.
fn resolve(
    region: Region,
    any: &BTreeMap<String, Entry>,
    regional: &BTreeMap<String, Entry>,
) -> Result<Prices, String> {
    let mut entries: BTreeMap<&str, &Entry> = any.iter().map(|(n, e)| (n.as_str(), e)).collect();
    entries.extend(regional.iter().map(|(n, e)| (n.as_str(), e)));
    let mut aliases: HashMap<String, String> = HashMap::new();
    for (name, e) in &entries {
        for alias in &e.aliases {
            if entries.contains_key(alias.as_str()) {
                return Err(format!(
                    "{}: model `{name}`: alias `{alias}` is also the name of a model",
                    e.line
                ));
            }
            if let Some(other) = aliases.insert(alias.clone(), (*name).to_string()) {
                return Err(format!(
                    "{}: model `{name}`: alias `{alias}` is already an alias of `{other}`",
                    e.line
                ));
            }
        }
    }
    let models = entries
        .into_iter()
        .map(|(n, e)| (n.to_string(), e.price.clone()))
        .collect();
    Ok(Prices {
        region,
        models,
        aliases,
    })
}

/// Checks one entry and turns it into a price and its aliases.
fn entry(
    raw: RawEntry,
    file_discount: f64,
    default_source: Option<&str>,
) -> Result<(Price, Vec<String>), String> {
    if raw.currency.trim().is_empty() {
        return Err("`currency` must not be empty".into());
    }
    let flat = [raw.input, raw.output, raw.thinking_output, raw.cached_input];
    let tiers = match raw.tiers {
        Some(tiers) => {
            if flat.iter().any(Option::is_some) {
                return Err(
                    "give either `input`/`output` (with optional `thinking_output`, \
                            `cached_input`) or `tiers`, not both"
                        .into(),
                );
            }
            tiers
        }
        None => vec![RawTier {
            up_to: None,
            input: raw.input.ok_or("missing `input` (or give `tiers`)")?,
            output: raw.output.ok_or("missing `output` (or give `tiers`)")?,
            thinking_output: raw.thinking_output,
            cached_input: raw.cached_input,
        }],
    };
    if tiers.is_empty() {
        return Err("`tiers` must not be empty".into());
    }
    let count = tiers.len();
    let mut previous: Option<u64> = None;
    let mut checked = Vec::with_capacity(count);
    for (i, t) in tiers.into_iter().enumerate() {
        let n = i + 1;
        let tier = |why: String| {
            if count > 1 {
                format!("tier {n}: {why}")
            } else {
                why
            }
        };
        match (t.up_to, previous) {
            (None, _) if n < count => {
                return Err(format!("tier {n} has no `up_to` but is not the last tier"));
            }
            (Some(up_to), Some(prev)) if up_to <= prev => {
                return Err(format!(
                    "tier {n}: `up_to` = {up_to} must be above the previous tier's {prev} \
                     (tiers go in increasing order of input tokens)"
                ));
            }
            _ => {}
        }
        previous = t.up_to;
        for (key, value) in [
            ("input", Some(t.input)),
            ("output", Some(t.output)),
            ("thinking_output", t.thinking_output),
            ("cached_input", t.cached_input),
        ] {
            if let Some(v) = value {
                check_price(key, v).map_err(tier)?;
            }
        }
        checked.push(Tier {
            up_to: t.up_to,
            rates: Rates {
                input: t.input,
                output: t.output,
                thinking_output: t.thinking_output,
                cached_input: t.cached_input,
            },
        });
    }
    let batch_discount = raw.batch_discount.unwrap_or(file_discount);
    check_discount(batch_discount)?;
    let source = raw.source.as_deref().or(default_source).map(Arc::from);
    let price = Price {
        currency: Arc::from(raw.currency),
        source,
        batch_discount,
        thinks_by_default: raw.thinks_by_default,
        tiers: checked,
    };
    Ok((price, raw.aliases))
}

fn check_price(key: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "`{key}` = {v} is not a price: it must be a number >= 0"
        ))
    }
}

fn check_discount(v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "`batch_discount` = {v} must be between 0 and 1 (the fraction taken off under batch)"
        ))
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `line:column` (1-based) of the start of a span.
fn line_col(text: &str, span: &Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_start = text.as_bytes()[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = text
        .get(line_start..start)
        .map_or(1, |s| s.chars().count() + 1);
    format!("{}:{column}", line_of(text, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// Writes a price file and loads it over the built-in table of `region`.
    fn with_file(region: Region, text: &str) -> Result<Prices, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("my-prices.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Prices::for_region(region).with_overrides(&path)
    }

    fn error_of(text: &str) -> String {
        with_file(Region::Intl, text).err().unwrap_or_default()
    }

    #[test]
    fn built_in_table_loads_in_every_region_and_every_entry_has_a_source() {
        for region in [Region::Intl, Region::Cn] {
            let p = parse(BUILT_IN, BUILT_IN_NAME, None, region);
            assert!(p.is_ok(), "{region}: {:?}", p.err());
            let p = Prices::for_region(region);
            for (name, price) in &p.models {
                let source = price.source().unwrap_or_default();
                assert!(!source.trim().is_empty(), "{region} {name} has no source");
                assert!(price.batch_discount() == 0.5, "{region} {name}");
            }
        }
        let intl = [
            "qwen3-max",
            "qwen-max",
            "qwen-plus",
            "qwen-flash",
            "qwen-turbo",
            "qwen3.5-plus",
            "qwen3.5-flash",
            "qwen3.6-plus",
            "qwen3.6-flash",
            "qwen3.7-plus",
            "qwen3.7-max",
            "qwq-plus",
            "qwen3-32b",
        ];
        let cn = [
            "qwen3-max",
            "qwen-flash",
            "qwen-plus",
            "qwen3.5-plus",
            "qwen-max",
            "qwen-turbo",
        ];
        let openai = [
            "gpt-4o-mini",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-5.4-mini",
        ];
        let (pi, pc) = (Prices::built_in(), Prices::for_region(Region::Cn));
        assert_eq!(pi.region(), Region::Intl);
        for m in intl {
            assert_eq!(pi.get(m).map(Price::currency), Some("USD"), "{m}");
        }
        for m in cn {
            assert_eq!(pc.get(m).map(Price::currency), Some("CNY"), "{m}");
        }
        for m in openai {
            assert!(pi.get(m).and_then(|p| p.rates(0)?.cached_input).is_some());
            assert_eq!(pc.get(m).map(Price::currency), Some("USD"), "{m}");
        }
        // Intl-only Qwen models have no China price.
        assert!(pc.get("qwen3.6-plus").is_none());
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
    fn unknown_model_is_none_never_zero() {
        let p = Prices::built_in();
        let u = usage(10, 10);
        assert!(p.get("no-such-model").is_none());
        assert_eq!(p.cost("no-such-model", None, Some(&u)), None);
        assert_eq!(p.cost_of("no-such-model", &u, true), None);
        assert_eq!(p.worst_case("no-such-model", 1, 1), None);
        assert_eq!(p.input_only("no-such-model", 1), None);
        // No prefix matching beyond a dated suffix.
        assert!(p.get("qwen-plu").is_none());
        assert!(p.get("qwen-plus-x").is_none());
        assert!(p.get("qwen-plus-12345").is_none());
    }

    #[test]
    fn dated_names_resolve_to_their_base_entry() {
        for (dated, base) in [
            ("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini")),
            ("qwen-max-0919", Some("qwen-max")),
            ("qwen-plus-latest", Some("qwen-plus")),
            ("qwen-plus", None),
            ("qwen3-32b", None),
            ("m-24-07-18", None),
            ("-latest", None),
        ] {
            assert_eq!(base_name(dated), base, "{dated}");
        }
        let p = Prices::built_in();
        assert_eq!(p.get("gpt-4o-mini-2024-07-18"), p.get("gpt-4o-mini"));
        assert!(p.get("qwen-plus-2025-07-28").is_some());
        // The sent model prices the answer; the answered name only when the sent one has none.
        let u = usage(1_000_000, 0);
        let cost = |sent, answered| p.cost(sent, answered, Some(&u)).map(|c| c.amount);
        assert!(close(cost("qwen-max", Some("gpt-4o-mini")), 1.6));
        assert!(close(
            cost("my-deployment", Some("gpt-4o-mini-2024-07-18")),
            0.15
        ));
        assert_eq!(cost("my-deployment", None), None);
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

    #[test]
    fn override_file_adds_and_replaces_models() -> Result<(), String> {
        let text = r#"
[models."my-model"]
currency = "USD"
input = 1.0            # per million input tokens
output = 2             # integers are prices too
aliases = ["my-model-2026-01-01"]

[models."qwen-plus"]
currency = "EUR"
input = 1.0
output = 1.0
source = "our contract"
"#;
        for region in [Region::Intl, Region::Cn] {
            let p = with_file(region, text)?;
            assert!(close(
                p.cost_of("my-model", &usage(1_000_000, 1_000_000), false),
                3.0
            ));
            assert!(close(
                p.cost_of("my-model-2026-01-01", &usage(0, 1_000_000), false),
                2.0
            ));
            // No batch_discount in the user file: no discount.
            assert!(close(
                p.cost_of("my-model", &usage(1_000_000, 0), true),
                1.0
            ));
            let source = p
                .get("my-model")
                .and_then(Price::source)
                .unwrap_or_default();
            assert!(source.starts_with("--pricing ") && source.ends_with("my-prices.toml"));
            // The user's qwen-plus replaces the built-in one in every region.
            let q = p.get("qwen-plus");
            assert_eq!(q.map(Price::currency), Some("EUR"));
            assert_eq!(q.and_then(Price::source), Some("our contract"));
            // Built-in entries not named stay.
            assert!(p.get("gpt-4o-mini").is_some());
        }
        Ok(())
    }

    #[test]
    fn override_file_regions_tiers_and_aliases() -> Result<(), String> {
        let text = r#"
batch_discount = 0.25

[cn.models."only-cn"]
currency = "CNY"
[[cn.models."only-cn".tiers]]
up_to = 1000
input = 1.0
output = 1.0
[[cn.models."only-cn".tiers]]
input = 2.0
output = 2.0

[models."qwen-max"]
currency = "USD"
input = 0.0
output = 0.0
aliases = ["qwen-plus"]
"#;
        let intl = with_file(Region::Intl, text)?;
        assert!(intl.get("only-cn").is_none());
        let cn = with_file(Region::Cn, text)?;
        assert!(close(cn.cost_of("only-cn", &usage(1000, 0), false), 0.001));
        assert!(close(
            cn.cost_of("only-cn", &usage(1001, 0), false),
            0.002002
        ));
        assert!(close(cn.cost_of("only-cn", &usage(1000, 0), true), 0.00075));
        // A user alias takes the name over from a built-in model.
        assert_eq!(
            cn.get("qwen-plus").map(Price::currency),
            Some("USD"),
            "qwen-plus is now billed like the user's qwen-max"
        );
        Ok(())
    }

    #[test]
    fn bad_override_files_are_rejected_with_file_line_and_reason() {
        let e =
            error_of("[models.\"m\"]\ncurrency = \"USD\"\ninput = 1.0\noutput = 2.0\ninptu = 3\n");
        assert!(e.contains("my-prices.toml:5:1: "), "{e}");
        assert!(e.contains("unknown field `inptu`"), "{e}");

        let e = error_of("[modles.\"m\"]\ncurrency = \"USD\"\n");
        assert!(
            e.contains("my-prices.toml:1:") && e.contains("`modles`"),
            "{e}"
        );

        let e = error_of("\n[models.\"m\"]\ncurrency = \"USD\"\ninput = -1.0\noutput = 2.0\n");
        assert!(
            e.contains("my-prices.toml:2: model `m`: `input` = -1"),
            "{e}"
        );
        assert!(e.contains(">= 0"), "{e}");

        let e = error_of(
            "[models.\"m\"]\ncurrency = \"USD\"\ntiers = [\n\
             { up_to = 200, input = 1.0, output = 1.0 },\n\
             { up_to = 100, input = 2.0, output = 2.0 },\n]\n",
        );
        assert!(e.contains("model `m`: tier 2: `up_to` = 100"), "{e}");
        assert!(e.contains("increasing"), "{e}");

        let e = error_of(
            "[models.\"m\"]\ncurrency = \"USD\"\ntiers = [\n\
             { input = 1.0, output = 1.0 },\n\
             { up_to = 100, input = 2.0, output = 2.0 },\n]\n",
        );
        assert!(e.contains("tier 1 has no `up_to`"), "{e}");

        let e = error_of("[models.\"m\"]\ncurrency = \"USD\"\ninput = 1.0\noutput = \n");
        assert!(e.contains("my-prices.toml:4:"), "{e}");

        let e = error_of("[models.\"m\"]\ncurrency = \"USD\"\ninput = 1.0\n");
        assert!(e.contains("missing `output`"), "{e}");

        let e = error_of("[models.\"m\"]\ninput = 1.0\noutput = 1.0\n");
        assert!(e.contains("missing field `currency`"), "{e}");

        let e = error_of(
            "[models.\"m\"]\ncurrency = \"USD\"\ninput = 1.0\noutput = 1.0\n\
             tiers = [{ input = 1.0, output = 1.0 }]\n",
        );
        assert!(e.contains("not both"), "{e}");

        let e = error_of("batch_discount = 2\n");
        assert!(e.contains("`batch_discount` = 2"), "{e}");

        let e = error_of(
            "[models.\"a\"]\ncurrency = \"USD\"\ninput = 1.0\noutput = 1.0\naliases = [\"b\"]\n\
             [models.\"b\"]\ncurrency = \"USD\"\ninput = 1.0\noutput = 1.0\n",
        );
        assert!(e.contains("alias `b` is also the name of a model"), "{e}");

        let missing = Prices::built_in().with_overrides(Path::new("/no/such/prices.toml"));
        let e = missing.err().unwrap_or_default();
        assert!(
            e.contains("cannot read price file /no/such/prices.toml"),
            "{e}"
        );
    }

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

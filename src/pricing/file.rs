//! The price file as written (`prices.toml` and a `--pricing` file): its TOML shape, and the
//! checks of each entry, whose errors name the file, the line and the model.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::cost::{Price, Rates, Tier};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) batch_discount: Option<f64>,
    #[serde(default)]
    pub(super) models: BTreeMap<String, Spanned<RawEntry>>,
    #[serde(default)]
    pub(super) intl: RawRegion,
    #[serde(default)]
    pub(super) cn: RawRegion,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    #[serde(default)]
    pub(super) models: BTreeMap<String, Spanned<RawEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
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
pub(super) struct Entry {
    pub(super) price: Price,
    pub(super) aliases: Vec<String>,
    pub(super) line: usize,
}

/// Checks the entries of one section.
pub(super) fn section(
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

pub(super) fn check_discount(v: f64) -> Result<(), String> {
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
pub(super) fn line_col(text: &str, span: &Range<usize>) -> String {
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
    use std::path::Path;

    use crate::pricing::{Prices, Region};

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
}

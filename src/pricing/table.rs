//! The price table of a run: the built-in `prices.toml` for a region, a `--pricing` file on
//! top, and the lookup of a model by its name, an alias or its [`base_name`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::Region;
use super::cost::{Cost, Price};
use super::file::{Entry, RawFile, check_discount, line_col, section};
use crate::request::Usage;

const BUILT_IN: &str = include_str!("../prices.toml");
const BUILT_IN_NAME: &str = "built-in prices.toml";

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

/// The host of DashScope's "Batch Chat": synchronous calls billed at the batch price
/// (provider-apis.md 5.3; Beijing, the only one the reference names).
pub const BATCH_CHAT_HOST: &str = "batch.dashscope.aliyuncs.com";

/// Whether a base URL is DashScope's Batch Chat host, whose synchronous calls cost the
/// batch price.
pub fn is_batch_chat_host(base_url: &str) -> bool {
    base_url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
        .is_some_and(|h| h.trim_end_matches('.') == BATCH_CHAT_HOST)
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

    /// This table at the batch price, for synchronous calls billed as batch ones (DashScope's
    /// Batch Chat host): see `Price::into_batch_price`.
    pub fn at_batch_price(mut self, note: &str) -> Prices {
        self.models = std::mem::take(&mut self.models)
            .into_iter()
            .map(|(name, p)| (name, p.into_batch_price(note)))
            .collect();
        self
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

/// Parses and checks a whole price file (every section, so that an error does not depend on
/// the region), and returns its table for `region`.
pub(super) fn parse(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::cost::tests::{close, usage};

    /// Writes a price file and loads it over the built-in table of `region`.
    fn with_file(region: Region, text: &str) -> Result<Prices, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("my-prices.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Prices::for_region(region).with_overrides(&path)
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
    fn the_batch_chat_host_is_priced_at_the_batch_price() {
        assert!(is_batch_chat_host(
            "https://batch.dashscope.aliyuncs.com/compatible-mode/v1"
        ));
        assert!(is_batch_chat_host(
            "https://BATCH.dashscope.aliyuncs.com./v1"
        ));
        for other in [
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            "https://batch.dashscope.aliyuncs.com.example.com/v1",
            "http://127.0.0.1:8080/v1",
            "not a url",
        ] {
            assert!(!is_batch_chat_host(other), "{other}");
        }
        let real = Prices::for_region(Region::Cn);
        let batch = real.clone().at_batch_price("Batch Chat host");
        let usage = Usage {
            input_tokens: 1000,
            output_tokens: 500,
            cached_tokens: 400,
            ..Usage::default()
        };
        let sync = real.cost("qwen-plus", None, Some(&usage)).map(|c| c.amount);
        let as_batch = real.cost_of("qwen-plus", &usage, true);
        let got = batch.cost("qwen-plus", None, Some(&usage));
        assert_eq!(got.as_ref().map(|c| c.amount), as_batch);
        assert!(as_batch < sync);
        let source = got.and_then(|c| c.source).unwrap_or_default();
        assert!(source.ends_with("; Batch Chat host"), "{source}");
        // No second discount when the table is used as a batch table.
        assert_eq!(batch.cost_of("qwen-plus", &usage, true), as_batch);
        let worst = batch.worst_case("qwen-plus", 1000, 100);
        let real_worst = real.worst_case("qwen-plus", 1000, 100).map(|c| c * 0.5);
        assert!(
            worst
                .zip(real_worst)
                .is_some_and(|(a, b)| (a - b).abs() < 1e-12)
        );
    }
}

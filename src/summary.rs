//! The run summary: an accumulator fed by the writer, rendered as text (stderr) and as JSON
//! (`--summary-json`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::pricing::{Cost, Prices, round_cost};
use crate::record::Outcome;

/// Counts of a run, as they accumulate.
#[derive(Debug)]
pub struct Summary {
    pub rows_total: u64,
    pub rows_ok: u64,
    pub rows_failed: u64,
    pub rows_skipped: u64,
    pub requests: u64,
    pub retries: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
    /// The cost of the priced answers, per currency: costs in different currencies are
    /// never added together.
    pub costs: BTreeMap<String, f64>,
    /// Models answered whose price is unknown: their cost makes the total unknown.
    pub unpriced_models: BTreeSet<String>,
    /// Ok answers that came without usage: their cost is unknown too.
    pub rows_without_usage: u64,
    /// The currency of the run's model, for a run that priced no answer.
    pub currency: Option<String>,
    pub price_sources: BTreeSet<String>,
    pub possibly_billed: u64,
    pub truncated: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
    /// With `--shard`: the shard (`K/N`) and the rows of the input that belong to the others,
    /// which `rows_total` leaves out.
    pub shard: Option<(String, u64)>,
    latency: Histogram<u64>,
}

impl Summary {
    pub fn new(rows_total: u64, rows_skipped: u64) -> Summary {
        Summary {
            rows_total,
            rows_ok: 0,
            rows_failed: 0,
            rows_skipped,
            requests: 0,
            retries: 0,
            input_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            cached_tokens: 0,
            costs: BTreeMap::new(),
            unpriced_models: BTreeSet::new(),
            rows_without_usage: 0,
            currency: None,
            price_sources: BTreeSet::new(),
            possibly_billed: 0,
            truncated: 0,
            errors: BTreeMap::new(),
            errors_by_code: BTreeMap::new(),
            shard: None,
            // Three significant figures from 1 ms to an hour; values above are clamped.
            latency: Histogram::new_with_bounds(1, 3_600_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Counts a finished row, with its cost (`None` for errors, unpriced models and answers
    /// without usage).
    pub fn add(&mut self, o: &Outcome) {
        self.add_spend(o);
        match &o.result {
            Ok(r) => {
                self.rows_ok += 1;
                self.latency.saturating_record(o.latency_ms.max(1));
                if r.finish_reason.as_deref() == Some("length") {
                    self.truncated += 1;
                }
            }
            Err(f) => {
                self.rows_failed += 1;
                *self.errors.entry(f.kind.as_str()).or_default() += 1;
                if let Some(code) = &f.code {
                    *self.errors_by_code.entry(code.clone()).or_default() += 1;
                } else if let Some(status) = f.http_status {
                    *self
                        .errors_by_code
                        .entry(format!("http_{status}"))
                        .or_default() += 1;
                }
            }
        }
    }

    /// Counts the attempts of a row that ends without a record (abandoned by a second signal,
    /// or its next attempt not sent after a stop): the row itself stays not sent.
    pub fn add_unrecorded(&mut self, requests: u64, retries: u64, possibly_billed: u64) {
        self.requests += requests;
        self.retries += retries;
        self.possibly_billed += possibly_billed;
    }

    /// Counts what a row spent: its attempts, tokens and cost. [`Summary::add`] counts this
    /// and the row's outcome; alone, it counts a row whose record could not be written, which
    /// stays not sent, so a rerun sends it again.
    pub fn add_spend(&mut self, o: &Outcome) {
        let attempts = u64::from(o.attempts);
        self.add_unrecorded(
            attempts,
            attempts.saturating_sub(1),
            u64::from(o.possibly_billed),
        );
        let answered = o.result.as_ref().ok();
        for u in [
            Some(&o.discarded_usage),
            answered.and_then(|r| r.usage.as_ref()),
        ]
        .into_iter()
        .flatten()
        {
            self.input_tokens += u.input_tokens;
            self.output_tokens += u.output_tokens;
            self.reasoning_tokens += u.reasoning_tokens;
            self.cached_tokens += u.cached_tokens;
        }
        for c in [&o.discarded_cost, &o.cost].into_iter().flatten() {
            self.add_cost(c);
        }
        if let (Some(r), None) = (answered, &o.cost) {
            match &r.usage {
                None => self.rows_without_usage += 1,
                Some(_) => {
                    let model = r.model.as_deref().unwrap_or(&o.model);
                    self.unpriced_models.insert(model.to_string());
                }
            }
        }
    }

    fn add_cost(&mut self, c: &Cost) {
        // Looked up before inserting: no new String per row.
        match self.costs.get_mut(&*c.currency) {
            Some(sum) => *sum += c.amount,
            None => {
                self.costs.insert(c.currency.to_string(), c.amount);
            }
        }
        if let Some(s) = &c.source
            && !self.price_sources.contains(&**s)
        {
            self.price_sources.insert(s.to_string());
        }
    }

    /// Notes the currency and source of the run's model, for the report.
    pub fn note_prices(&mut self, prices: &Prices, model: &str) {
        if let Some(p) = prices.get(model) {
            self.currency
                .get_or_insert_with(|| p.currency().to_string());
            if let Some(s) = p.source() {
                self.price_sources.insert(s.to_string());
            }
        }
    }

    /// The final report.
    pub fn report(&self, wall_s: f64, exit_code: i32, output: &str) -> Report {
        let q = |p: f64| (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(p));
        let per_s = |n: u64| if wall_s > 0.0 { n as f64 / wall_s } else { 0.0 };
        let done = self.rows_ok + self.rows_failed;
        Report {
            rows_total: self.rows_total,
            rows_ok: self.rows_ok,
            rows_failed: self.rows_failed,
            rows_skipped: self.rows_skipped,
            rows_unsent: self.rows_total.saturating_sub(done + self.rows_skipped),
            requests: self.requests,
            retries: self.retries,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cached_tokens: self.cached_tokens,
            cost: (self.unpriced_models.is_empty()
                && self.rows_without_usage == 0
                && self.costs.len() <= 1)
                .then(|| round_cost(self.costs.values().sum())),
            cost_known_part: (self.costs.len() <= 1).then(|| round_cost(self.costs.values().sum())),
            costs: self
                .costs
                .iter()
                .map(|(k, v)| (k.clone(), round_cost(*v)))
                .collect(),
            unpriced_models: self.unpriced_models.iter().cloned().collect(),
            rows_without_usage: self.rows_without_usage,
            currency: match self.costs.len() {
                0 => self.currency.clone(),
                1 => self.costs.keys().next().cloned(),
                _ => None,
            },
            price_source: self
                .price_sources
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
            wall_s,
            rows_per_s: per_s(done),
            tokens_per_s: per_s(self.input_tokens + self.output_tokens),
            latency_ms: Latency {
                p50: q(0.5),
                p95: q(0.95),
                p99: q(0.99),
            },
            errors: self
                .errors
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            errors_by_code: self.errors_by_code.clone(),
            shard: self.shard.as_ref().map(|(s, _)| s.clone()),
            rows_other_shards: self.shard.as_ref().map(|(_, n)| *n),
            possibly_billed: self.possibly_billed,
            truncated: self.truncated,
            exit_code,
            output: output.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
}

/// The summary of a finished run, in the keys of the SPEC.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows_total: u64,
    pub rows_ok: u64,
    pub rows_failed: u64,
    pub rows_skipped: u64,
    pub rows_unsent: u64,
    pub requests: u64,
    pub retries: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
    /// `None` when some answer's cost is unknown (no price, or no usage), or when the costs
    /// are in several currencies.
    pub cost: Option<f64>,
    /// The cost of the rows whose price is known; `None` in several currencies.
    pub cost_known_part: Option<f64>,
    /// The cost of the rows whose price is known, per currency.
    pub costs: BTreeMap<String, f64>,
    pub unpriced_models: Vec<String>,
    /// Ok rows whose answer came without usage.
    pub rows_without_usage: u64,
    /// The currency of `cost`; `None` in several currencies.
    pub currency: Option<String>,
    pub price_source: String,
    pub wall_s: f64,
    pub rows_per_s: f64,
    pub tokens_per_s: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<String, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
    /// With `--shard`: `K/N`. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// With `--shard`: the input's rows that other shards send (not in `rows_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_other_shards: Option<u64>,
    pub possibly_billed: u64,
    pub truncated: u64,
    pub exit_code: i32,
    pub output: String,
}

impl Report {
    /// The human summary, as printed on stderr.
    pub fn render(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "batchgen summary")?;
        writeln!(
            w,
            "  rows       {} total: {} ok, {} failed, {} skipped (done before), {} not sent",
            self.rows_total, self.rows_ok, self.rows_failed, self.rows_skipped, self.rows_unsent
        )?;
        if let (Some(shard), Some(other)) = (&self.shard, self.rows_other_shards) {
            writeln!(
                w,
                "  shard      {shard}: {other} more rows of the input belong to other shards"
            )?;
        }
        writeln!(
            w,
            "  requests   {} ({} retries), {} possibly billed without an answer, {} truncated by max tokens",
            self.requests, self.retries, self.possibly_billed, self.truncated
        )?;
        writeln!(
            w,
            "  tokens     {} input ({} cached), {} output ({} reasoning)",
            self.input_tokens, self.cached_tokens, self.output_tokens, self.reasoning_tokens
        )?;
        let source = if self.price_source.is_empty() {
            String::new()
        } else {
            format!(" (prices: {})", self.price_source)
        };
        // One total per currency.
        let totals = if self.costs.is_empty() {
            let currency = self.currency.as_deref().unwrap_or_default();
            format!("{:.6} {currency}", 0.0).trim_end().to_string()
        } else {
            let each: Vec<String> = self
                .costs
                .iter()
                .map(|(currency, c)| format!("{c:.6} {currency}"))
                .collect();
            each.join(" + ")
        };
        let mut unknown = Vec::new();
        if !self.unpriced_models.is_empty() {
            unknown.push(format!("no price for {}", self.unpriced_models.join(", ")));
        }
        if self.rows_without_usage > 0 {
            let n = self.rows_without_usage;
            let rows = if n == 1 { "row" } else { "rows" };
            unknown.push(format!("the endpoint sent no usage for {n} {rows}"));
        }
        if unknown.is_empty() {
            writeln!(w, "  cost       {totals}{source}")?;
        } else {
            writeln!(
                w,
                "  cost       unknown: {} ({totals} for the priced rows){source}",
                unknown.join("; ")
            )?;
        }
        writeln!(
            w,
            "  speed      {:.1} s wall, {:.1} rows/s, {:.0} tokens/s",
            self.wall_s, self.rows_per_s, self.tokens_per_s
        )?;
        let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        writeln!(
            w,
            "  latency    p50 {}, p95 {}, p99 {}",
            ms(self.latency_ms.p50),
            ms(self.latency_ms.p95),
            ms(self.latency_ms.p99)
        )?;
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(w, "  errors     {}", kinds.join(", "))?;
            let codes: Vec<String> = self
                .errors_by_code
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !codes.is_empty() {
                writeln!(w, "  by code    {}", codes.join(", "))?;
            }
        }
        writeln!(w, "  output     {}", self.output)?;
        Ok(())
    }
}

//! The run summary: an accumulator fed by the writer, rendered as text (stderr) and as JSON
//! (`--summary-json`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::output::Outcome;
use crate::pricing::Prices;

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
    pub cost: f64,
    /// Models answered whose price is unknown: their cost makes the total unknown.
    pub unpriced_models: BTreeSet<String>,
    pub currency: Option<String>,
    pub price_sources: BTreeSet<String>,
    pub possibly_billed: u64,
    pub truncated: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
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
            cost: 0.0,
            unpriced_models: BTreeSet::new(),
            currency: None,
            price_sources: BTreeSet::new(),
            possibly_billed: 0,
            truncated: 0,
            errors: BTreeMap::new(),
            errors_by_code: BTreeMap::new(),
            // Three significant figures from 1 ms to an hour; values above are clamped.
            latency: Histogram::new_with_bounds(1, 3_600_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Counts a finished row. `cost` is `None` for errors and unpriced models.
    pub fn add(&mut self, o: &Outcome, cost: Option<f64>) {
        self.requests += u64::from(o.attempts);
        self.retries += u64::from(o.attempts.saturating_sub(1));
        self.possibly_billed += u64::from(o.possibly_billed);
        let d = &o.discarded_usage;
        self.input_tokens += d.input_tokens;
        self.output_tokens += d.output_tokens;
        self.reasoning_tokens += d.reasoning_tokens;
        self.cached_tokens += d.cached_tokens;
        self.cost += o.discarded_cost;
        match &o.result {
            Ok(r) => {
                self.rows_ok += 1;
                self.latency.saturating_record(o.latency_ms.max(1));
                if let Some(u) = &r.usage {
                    self.input_tokens += u.input_tokens;
                    self.output_tokens += u.output_tokens;
                    self.reasoning_tokens += u.reasoning_tokens;
                    self.cached_tokens += u.cached_tokens;
                }
                if r.finish_reason.as_deref() == Some("length") {
                    self.truncated += 1;
                }
                match cost {
                    Some(c) => self.cost += c,
                    None => {
                        let model = r.model.as_deref().unwrap_or(&o.model);
                        self.unpriced_models.insert(model.to_string());
                    }
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

    /// Counts what a row whose record could not be written spent: its attempts, tokens and
    /// cost. The row stays not sent, and a rerun sends it again.
    pub fn add_unwritten(&mut self, o: &Outcome, cost: Option<f64>) {
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
        self.cost += o.discarded_cost + cost.unwrap_or(0.0);
        if let (Some(r), None) = (answered, cost) {
            let model = r.model.as_deref().unwrap_or(&o.model);
            self.unpriced_models.insert(model.to_string());
        }
    }

    /// Notes the currency and source of the models priced, for the report.
    pub fn note_prices(&mut self, prices: &Prices, model: &str) {
        if let Some(p) = prices.get(model) {
            self.currency.get_or_insert_with(|| p.currency.clone());
            if let Some(s) = &p.source {
                self.price_sources.insert(s.clone());
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
            cost: self.unpriced_models.is_empty().then_some(self.cost),
            cost_known_part: self.cost,
            unpriced_models: self.unpriced_models.iter().cloned().collect(),
            currency: self.currency.clone(),
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
    /// `None` when some answered model has no price.
    pub cost: Option<f64>,
    /// The cost of the rows whose price is known.
    pub cost_known_part: f64,
    pub unpriced_models: Vec<String>,
    pub currency: Option<String>,
    pub price_source: String,
    pub wall_s: f64,
    pub rows_per_s: f64,
    pub tokens_per_s: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<String, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
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
        let currency = self
            .currency
            .as_deref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        let source = if self.price_source.is_empty() {
            String::new()
        } else {
            format!(" (prices: {})", self.price_source)
        };
        match self.cost {
            Some(c) => writeln!(w, "  cost       {c:.6}{currency}{source}")?,
            None => writeln!(
                w,
                "  cost       unknown: no price for {} ({:.6}{currency} for the priced rows){source}",
                self.unpriced_models.join(", "),
                self.cost_known_part
            )?,
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

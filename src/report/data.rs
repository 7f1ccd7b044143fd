//! The report's figures, from record lines alone: counts by outcome, model, file, error kind
//! and code, attempts, a latency histogram, and a tally per tenth of a second that
//! [`timeline`] turns into a few hundred buckets, so that the page stays small whatever the
//! number of records (and a run of a few seconds still gets a curve).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::input::ids::id_key;

/// A stretch this long (ms) with no record finished splits the timeline: the run was
/// stopped and resumed later, or stalled. It is drawn as a gap, not as a flat line.
pub const GAP_MS: u64 = 60_000;

/// The finest time resolution, in ms: records are tallied per tick.
pub const TICK_MS: u64 = 100;

/// About this many time buckets over all sessions: enough to see where a run slowed.
pub const TARGET_BUCKETS: u64 = 200;

/// Bars of the latency histogram, below the overflow bar.
pub const LATENCY_BINS: u64 = 40;

/// Example ids kept per error kind and code.
pub const EXAMPLE_IDS: usize = 3;

/// The fields of a record the report reads; the rest (content above all) is skipped.
#[derive(Deserialize)]
struct Rec<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Tokens>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    latency_ms: Option<u64>,
    #[serde(default, borrow)]
    finished_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<ErrorFields<'a>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default)]
struct Tokens {
    input_tokens: u64,
    output_tokens: u64,
    reasoning_tokens: u64,
    total_tokens: u64,
}

#[derive(Deserialize)]
struct ErrorFields<'a> {
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// Tokens and cost of one model's answers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModelFigures {
    pub rows: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: f64,
    /// Ok rows whose record has no cost (unpriced model, no usage).
    pub unpriced: u64,
}

/// The records of one results file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileFigures {
    pub name: String,
    pub records: u64,
    pub ok: u64,
    pub failed: u64,
    pub tokens: u64,
    pub cost: f64,
    /// First and last `finished_at`, in ms since the epoch.
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
}

/// The failed records of one error kind and code.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ErrorGroup {
    pub count: u64,
    pub example_ids: Vec<String>,
    pub example_message: String,
}

/// What finished within one tick ([`TICK_MS`]).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tick {
    pub ok: u64,
    pub failed: u64,
    pub tokens: u64,
    /// Failed records by kind (an index into [`Figures::kinds`]).
    pub errors: Vec<(usize, u64)>,
}

/// Everything the page shows, gathered in one pass over the records.
#[derive(Debug)]
pub struct Figures {
    pub files: Vec<FileFigures>,
    pub records: u64,
    pub ok: u64,
    pub failed: u64,
    /// Ok rows cut short by the token limit (`finish_reason` = `length`).
    pub truncated: u64,
    /// Records of an id already seen (a file not compacted, or the same rows in two files).
    pub repeated: u64,
    /// Lines that are not records, and the number of those that were torn last lines.
    pub not_records: u64,
    /// Records without a readable `finished_at` (written before it existed).
    pub untimed: u64,
    /// Ok records without `latency_ms`.
    pub without_latency: u64,
    pub cost: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Error kinds in the order first seen; [`Tick::errors`] indexes this.
    pub kinds: Vec<String>,
    /// Failed records by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Failed records by kind and code (`http_NNN` when there is no code, `-` with neither).
    pub errors: BTreeMap<(String, String), ErrorGroup>,
    /// Records by attempts: (ok, failed).
    pub attempts: BTreeMap<u32, (u64, u64)>,
    pub models: BTreeMap<String, ModelFigures>,
    /// Latency of ok rows, in ms.
    pub latency: Histogram<u64>,
    /// Records by the tick (ms since the epoch / [`TICK_MS`]) they finished in.
    pub ticks: BTreeMap<u64, Tick>,
}

impl Figures {
    pub fn new() -> Figures {
        Figures {
            files: Vec::new(),
            records: 0,
            ok: 0,
            failed: 0,
            truncated: 0,
            repeated: 0,
            not_records: 0,
            untimed: 0,
            without_latency: 0,
            cost: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            kinds: Vec::new(),
            by_kind: BTreeMap::new(),
            errors: BTreeMap::new(),
            attempts: BTreeMap::new(),
            models: BTreeMap::new(),
            // The summary's bounds: three significant figures from 1 ms to an hour.
            latency: Histogram::new_with_bounds(1, 3_600_000, 3)
                .expect("constant histogram bounds are valid"),
            ticks: BTreeMap::new(),
        }
    }

    /// Starts the records of another file; [`Collector::add`] counts into the last one.
    pub fn start_file(&mut self, name: String) {
        self.files.push(FileFigures {
            name,
            ..FileFigures::default()
        });
    }

    fn kind_index(&mut self, kind: &str) -> usize {
        match self.kinds.iter().position(|k| k == kind) {
            Some(i) => i,
            None => {
                self.kinds.push(kind.to_string());
                self.kinds.len() - 1
            }
        }
    }
}

impl Default for Figures {
    fn default() -> Self {
        Figures::new()
    }
}

/// Counts record lines into [`Figures`], remembering the ids seen to spot repeated ones.
pub struct Collector {
    pub figures: Figures,
    seen: HashSet<u128>,
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
}

impl Collector {
    pub fn new() -> Collector {
        Collector {
            figures: Figures::new(),
            seen: HashSet::new(),
        }
    }

    /// Counts one record line; `false` when it is not a record (the caller names it).
    pub fn add(&mut self, line: &[u8]) -> bool {
        let Ok(r) = serde_json::from_slice::<Rec>(line) else {
            self.figures.not_records += 1;
            return false;
        };
        if self.figures.files.is_empty() {
            self.figures.start_file(String::new());
        }
        let f = &mut self.figures;
        f.records += 1;
        if !self.seen.insert(id_key(&r.id)) {
            f.repeated += 1;
        }
        let at = r.finished_at.as_deref().and_then(parse_ms);
        let ok = r.status == "ok";
        let tokens = r.usage.unwrap_or_default();
        let total = tokens
            .total_tokens
            .max(tokens.input_tokens + tokens.output_tokens);
        let file = f.files.len() - 1;
        let kind = match (&r.error, ok) {
            (_, true) => None,
            (Some(e), false) => Some(e.kind.as_deref().unwrap_or("unknown")),
            (None, false) => Some("unknown"),
        };
        let kind = kind.map(|k| f.kind_index(k));
        let file = &mut f.files[file];
        file.records += 1;
        if let Some(ms) = at {
            file.first_ms = Some(file.first_ms.map_or(ms, |m| m.min(ms)));
            file.last_ms = Some(file.last_ms.map_or(ms, |m| m.max(ms)));
        }
        let attempts = f.attempts.entry(r.attempts.unwrap_or(1)).or_default();
        if ok {
            f.ok += 1;
            file.ok += 1;
            attempts.0 += 1;
            file.tokens += total;
            let cost = r.cost.filter(|c| c.is_finite()).unwrap_or(0.0);
            file.cost += cost;
            f.cost += cost;
            f.input_tokens += tokens.input_tokens;
            f.output_tokens += tokens.output_tokens;
            let model = r.model.as_deref().unwrap_or("(none)");
            let m = match f.models.get_mut(model) {
                Some(m) => m,
                None => f.models.entry(model.to_string()).or_default(),
            };
            m.rows += 1;
            m.input_tokens += tokens.input_tokens;
            m.output_tokens += tokens.output_tokens;
            m.reasoning_tokens += tokens.reasoning_tokens;
            m.cost += cost;
            if r.cost.is_none() {
                m.unpriced += 1;
            }
            if r.finish_reason.as_deref() == Some("length") {
                f.truncated += 1;
            }
            match r.latency_ms {
                Some(ms) => f.latency.saturating_record(ms.max(1)),
                None => f.without_latency += 1,
            }
        } else {
            f.failed += 1;
            file.failed += 1;
            attempts.1 += 1;
            let e = r.error.as_ref();
            let kind_name = kind.map_or("unknown", |k| f.kinds[k].as_str()).to_string();
            *f.by_kind.entry(kind_name.clone()).or_default() += 1;
            let code = match e {
                Some(ErrorFields { code: Some(c), .. }) => c.to_string(),
                Some(ErrorFields {
                    http_status: Some(s),
                    ..
                }) => format!("http_{s}"),
                _ => "-".to_string(),
            };
            let g = f.errors.entry((kind_name, code)).or_default();
            g.count += 1;
            if g.example_ids.len() < EXAMPLE_IDS {
                g.example_ids.push(r.id.to_string());
            }
            if g.example_message.is_empty()
                && let Some(m) = e.and_then(|e| e.message.as_deref())
            {
                g.example_message = m.chars().take(200).collect();
            }
        }
        match at {
            None => f.untimed += 1,
            Some(ms) => {
                let s = f.ticks.entry(ms / TICK_MS).or_default();
                if ok {
                    s.ok += 1;
                    s.tokens += total;
                } else {
                    s.failed += 1;
                    if let Some(k) = kind {
                        match s.errors.iter_mut().find(|(i, _)| *i == k) {
                            Some((_, n)) => *n += 1,
                            None => s.errors.push((k, 1)),
                        }
                    }
                }
            }
        }
        true
    }
}

/// `finished_at` (RFC 3339) in ms since the epoch.
pub fn parse_ms(stamp: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(stamp).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

// ---- Time buckets ----

/// One time bucket: what finished in `span_ms` from `start_ms`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bucket {
    pub start_ms: u64,
    /// Time the bucket covers: the width, or less for a session's last bucket.
    pub span_ms: u64,
    pub rows: u64,
    pub failed: u64,
    pub tokens: u64,
    /// Failed records by kind index.
    pub errors: Vec<u64>,
}

impl Bucket {
    fn secs(&self) -> f64 {
        self.span_ms.max(1) as f64 / 1000.0
    }

    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.secs()
    }

    pub fn failed_per_s(&self) -> f64 {
        self.failed as f64 / self.secs()
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.secs()
    }
}

/// A stretch of time with records finishing, no gap of [`GAP_MS`] or more inside. Times are
/// those of its first and last ticks (the last one included).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub first_ms: u64,
    pub end_ms: u64,
    pub buckets: Vec<Bucket>,
}

/// The records over time: sessions of equal-width buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub width_ms: u64,
    pub sessions: Vec<Session>,
}

impl Timeline {
    /// Time with records finishing, summed over sessions (first to last record of each).
    pub fn active_ms(&self) -> u64 {
        self.sessions.iter().map(|s| s.end_ms - s.first_ms).sum()
    }

    pub fn buckets(&self) -> impl Iterator<Item = &Bucket> {
        self.sessions.iter().flat_map(|s| s.buckets.iter())
    }
}

/// Bucket widths, in ms: round numbers on a clock.
const WIDTHS: &[u64] = &[
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
];

/// The smallest round width (ms) that splits `active_ms` into at most `target` buckets.
pub fn bucket_width(active_ms: u64, target: u64) -> u64 {
    let want = active_ms.div_ceil(target.max(1)).max(1);
    match WIDTHS.iter().find(|&&w| w >= want) {
        Some(&w) => w,
        None => want.div_ceil(86_400_000) * 86_400_000,
    }
}

/// Splits the ticks into sessions at each gap of `gap_ms` or more, then buckets each session
/// from its first tick, all buckets of one width chosen so that there are about `target`.
/// `None` when no record has a time.
pub fn timeline(
    ticks: &BTreeMap<u64, Tick>,
    kinds: usize,
    gap_ms: u64,
    target: u64,
) -> Option<Timeline> {
    let gap = gap_ms.div_ceil(TICK_MS).max(1);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &t in ticks.keys() {
        match spans.last_mut() {
            Some((_, last)) if t - *last < gap => *last = t,
            _ => spans.push((t, t)),
        }
    }
    if spans.is_empty() {
        return None;
    }
    let active: u64 = spans.iter().map(|(a, b)| (b - a + 1) * TICK_MS).sum();
    let width = bucket_width(active, target);
    let per = width / TICK_MS;
    let sessions = spans
        .into_iter()
        .map(|(first, last)| {
            let n = (last - first) / per + 1;
            let mut buckets: Vec<Bucket> = (0..n)
                .map(|k| {
                    let start = first + k * per;
                    Bucket {
                        start_ms: start * TICK_MS,
                        span_ms: per.min(last + 1 - start) * TICK_MS,
                        errors: vec![0; kinds],
                        ..Bucket::default()
                    }
                })
                .collect();
            for (&t, tick) in ticks.range(first..=last) {
                let b = &mut buckets[((t - first) / per) as usize];
                b.rows += tick.ok + tick.failed;
                b.failed += tick.failed;
                b.tokens += tick.tokens;
                for &(k, n) in &tick.errors {
                    if let Some(e) = b.errors.get_mut(k) {
                        *e += n;
                    }
                }
            }
            Session {
                first_ms: first * TICK_MS,
                end_ms: (last + 1) * TICK_MS,
                buckets,
            }
        })
        .collect();
    Some(Timeline {
        width_ms: width,
        sessions,
    })
}

// ---- Latency ----

/// The latency histogram as bars of equal width, with the percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBins {
    pub bin_ms: u64,
    /// Counts of `[k * bin_ms, (k + 1) * bin_ms)`.
    pub counts: Vec<u64>,
    /// Rows slower than the last bar.
    pub over: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

/// A round number at least `x`: 1, 2 or 5 times a power of ten.
pub fn nice_ceil(x: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            if p.saturating_mul(m) >= x {
                return p.saturating_mul(m);
            }
        }
        if p > u64::MAX / 10 {
            return u64::MAX;
        }
        p *= 10;
    }
}

/// Bars from 0 to about the 99.9th percentile (the slowest tail is one overflow bar, so that a
/// few stuck rows do not flatten the rest). `None` without ok rows.
pub fn latency_bins(h: &Histogram<u64>, bins: u64) -> Option<LatencyBins> {
    if h.is_empty() {
        return None;
    }
    let top = h
        .value_at_quantile(0.999)
        .max(h.value_at_quantile(0.99) + 1);
    let bin_ms = nice_ceil(top.div_ceil(bins.max(1)).max(1));
    let n = top.div_ceil(bin_ms).max(1) as usize;
    let mut counts = vec![0u64; n];
    let mut over = 0;
    for v in h.iter_recorded() {
        // The histogram's value for a slot is its highest equivalent; the slot's lowest one
        // places it in the bar its recorded values fell in.
        let value = h.lowest_equivalent(v.value_iterated_to());
        match counts.get_mut((value / bin_ms) as usize) {
            Some(c) => *c += v.count_at_value(),
            None => over += v.count_at_value(),
        }
    }
    Some(LatencyBins {
        bin_ms,
        counts,
        over,
        p50: h.value_at_quantile(0.50),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_at(id: &str, at: &str, latency: u64) -> String {
        format!(
            r#"{{"id":"{id}","status":"ok","request_hash":"00","content":"x","model":"m","usage":{{"input_tokens":3,"output_tokens":7,"total_tokens":10}},"cost":0.5,"attempts":1,"latency_ms":{latency},"finished_at":"{at}"}}"#
        )
    }

    fn err_at(id: &str, at: &str, kind: &str) -> String {
        format!(
            r#"{{"id":"{id}","status":"error","request_hash":"00","error":{{"kind":"{kind}","http_status":503,"code":null,"message":"busy"}},"attempts":3,"finished_at":"{at}"}}"#
        )
    }

    fn collect(lines: &[String]) -> Figures {
        let mut c = Collector::new();
        for l in lines {
            assert!(c.add(l.as_bytes()), "{l}");
        }
        c.figures
    }

    #[test]
    fn counts_by_outcome_model_kind_code_and_attempts() {
        let f = collect(&[
            ok_at("a", "2026-01-01T00:00:00.100Z", 100),
            ok_at("b", "2026-01-01T00:00:00.900Z", 200),
            err_at("c", "2026-01-01T00:00:01.000Z", "server"),
            err_at("a", "2026-01-01T00:00:02.000Z", "server"),
        ]);
        assert_eq!((f.records, f.ok, f.failed, f.repeated), (4, 2, 2, 1));
        assert_eq!(f.models["m"].rows, 2);
        assert_eq!(f.models["m"].input_tokens, 6);
        assert!((f.cost - 1.0).abs() < 1e-12);
        let g = &f.errors[&("server".to_string(), "http_503".to_string())];
        assert_eq!(g.count, 2);
        assert_eq!(g.example_ids, ["c", "a"]);
        assert_eq!(g.example_message, "busy");
        assert_eq!(f.attempts[&1], (2, 0));
        assert_eq!(f.attempts[&3], (0, 2));
        // Tenths of a second: .1 and .9 fall in different ticks.
        assert_eq!(f.ticks.len(), 4);
        assert_eq!(f.ticks[&17_672_256_001].ok, 1);
        assert_eq!(f.ticks[&17_672_256_009].tokens, 10);
        assert_eq!(f.ticks[&17_672_256_010].failed, 1);
    }

    #[test]
    fn old_records_without_finished_at_are_counted_but_not_timed() {
        let mut c = Collector::new();
        assert!(c.add(br#"{"id":"x","status":"ok","request_hash":"00","attempts":1}"#));
        assert!(!c.add(b"not json"));
        assert_eq!((c.figures.records, c.figures.untimed), (1, 1));
        assert_eq!(c.figures.without_latency, 1);
        assert_eq!(c.figures.not_records, 1);
        assert!(timeline(&c.figures.ticks, 0, GAP_MS, TARGET_BUCKETS).is_none());
    }

    #[test]
    fn bucket_widths_are_round_and_bound_the_count() {
        assert_eq!(bucket_width(1, 200), 100);
        assert_eq!(bucket_width(20_000, 200), 100);
        assert_eq!(bucket_width(20_001, 200), 200);
        assert_eq!(bucket_width(3_600_000, 200), 30_000);
        assert_eq!(bucket_width(8 * 3_600_000, 200), 300_000);
        assert_eq!(bucket_width(400 * 86_400_000, 200), 2 * 86_400_000);
        for active in [1u64, 7_000, 999_999, 12_345_678, 86_400_000 * 3] {
            assert!(active.div_ceil(bucket_width(active, 200)) <= 200);
        }
    }

    /// One tick per second from `from` to `to` (ms, `to` excluded), each made by `tick`.
    fn every_second(ticks: &mut BTreeMap<u64, Tick>, from: u64, to: u64, tick: Tick) {
        for ms in (from..to).step_by(1000) {
            ticks.insert(ms / TICK_MS, tick.clone());
        }
    }

    #[test]
    fn a_pause_splits_the_timeline_into_sessions() {
        let mut ticks = BTreeMap::new();
        // Session one: 100 s with one ok row a second; then an hour's pause.
        let ok = Tick {
            ok: 1,
            tokens: 10,
            ..Tick::default()
        };
        every_second(&mut ticks, 1_000_000, 1_100_000, ok);
        // Session two: 10 s with two failed rows of kind 1 a second.
        let failed = Tick {
            failed: 2,
            errors: vec![(1, 2)],
            ..Tick::default()
        };
        every_second(&mut ticks, 4_700_000, 4_710_000, failed);
        let t = timeline(&ticks, 2, GAP_MS, 20).expect("timed");
        assert_eq!(t.sessions.len(), 2);
        // Each session runs from its first tick to the end of its last.
        assert_eq!(t.active_ms(), 99_100 + 9_100);
        // 108.2 s in at most 20 buckets: 10 s each.
        assert_eq!(t.width_ms, 10_000);
        assert_eq!(t.sessions[0].buckets.len(), 10);
        assert_eq!(t.sessions[1].buckets.len(), 1);
        let first = &t.sessions[0].buckets[0];
        assert_eq!((first.rows, first.span_ms, first.tokens), (10, 10_000, 100));
        assert!((first.rows_per_s() - 1.0).abs() < 1e-12);
        let second = &t.sessions[1].buckets[0];
        assert_eq!((second.rows, second.failed), (20, 20));
        assert_eq!(second.errors, vec![0, 20]);
        // Everything is counted once.
        assert_eq!(t.buckets().map(|b| b.rows).sum::<u64>(), 120);
        // Just under the gap: one session.
        let mut close = BTreeMap::new();
        close.insert(0, Tick::default());
        close.insert(GAP_MS / TICK_MS - 1, Tick::default());
        let one = timeline(&close, 0, GAP_MS, 20).map(|t| t.sessions.len());
        assert_eq!(one, Some(1));
    }

    #[test]
    fn a_short_last_bucket_is_divided_by_the_time_it_covers() {
        let mut ticks = BTreeMap::new();
        // 15 s, four rows a second, in buckets of 10 s: the last one covers 5 s.
        let four = Tick {
            ok: 4,
            ..Tick::default()
        };
        every_second(&mut ticks, 0, 15_000, four);
        ticks.insert(149, Tick::default());
        let t = timeline(&ticks, 0, GAP_MS, 2).expect("timed");
        assert_eq!(t.width_ms, 10_000);
        let b = &t.sessions[0].buckets;
        assert_eq!((b[1].span_ms, b[1].rows), (5_000, 20));
        assert!((b[1].rows_per_s() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn percentiles_and_latency_bars() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("bounds");
        for ms in 1..=1000 {
            h.record(ms).expect("in bounds");
        }
        h.record(3_000_000).expect("in bounds");
        let b = latency_bins(&h, 40).expect("rows");
        assert!((495..=505).contains(&b.p50), "{}", b.p50);
        assert!((945..=955).contains(&b.p95), "{}", b.p95);
        assert!((985..=995).contains(&b.p99), "{}", b.p99);
        assert!(b.max >= 3_000_000);
        // Up to the 99.9th percentile (about 1000 ms) in round bars of 50 ms (1000 / 40 = 25).
        assert_eq!(b.bin_ms, 50);
        assert_eq!(b.counts.iter().sum::<u64>() + b.over, 1001);
        assert!(b.over >= 1, "the stuck row is the overflow bar");
        assert_eq!(b.counts[0], 49, "1..=49 ms");
        assert!(latency_bins(&Histogram::new(3).expect("h"), 40).is_none());
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(0), 1);
        assert_eq!(nice_ceil(3), 5);
        assert_eq!(nice_ceil(25), 50);
        assert_eq!(nice_ceil(101), 200);
        assert_eq!(nice_ceil(5000), 5000);
    }
}

//! The report's charts as inline SVG, written by hand: plain `<rect>`, `<path>` and `<text>`
//! whose colours are CSS classes, so that the page's light and dark styles both apply, and
//! `<title>` tooltips, so that the page needs no script.

use std::fmt::Write as _;

use super::data::{LatencyBins, Timeline};
use super::text::{clock, compact, duration_ms, esc};

/// The drawing area, in viewBox units (the SVG scales to its card's width).
const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// Colour classes of error kinds and series (`.k0` ... in the page's CSS).
pub const SERIES: usize = 8;

fn open(out: &mut String, chart: &str, label: &str, h: f64) {
    let _ = write!(
        out,
        r#"<svg class="chart" data-chart="{chart}" viewBox="0 0 {W} {h}" role="img" aria-label="{}">"#,
        esc(label)
    );
}

/// A round step for about five ticks up to `max`, and the axis top it gives.
pub fn y_ticks(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 1.0);
    }
    let raw = max / 5.0;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p);
    (step, (max / step).ceil() * step)
}

/// The y axis: grid lines and labels; returns the value -> y mapping's top.
fn y_axis(out: &mut String, max: f64, h: f64, unit: &str) -> f64 {
    let (step, top) = y_ticks(max);
    let bottom = h - BOTTOM;
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = bottom - (v / top) * (bottom - TOP);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            compact(v)
        );
        v += step;
    }
    if !unit.is_empty() {
        let _ = write!(
            out,
            r#"<text class="unit" x="4" y="{}">{}</text>"#,
            TOP - 2.0,
            esc(unit)
        );
    }
    top
}

fn y_of(v: f64, top: f64, h: f64) -> f64 {
    let bottom = h - BOTTOM;
    bottom - (v / top).clamp(0.0, 1.0) * (bottom - TOP)
}

/// Where each bucket of a timeline goes on the x axis: sessions side by side, each gap one
/// fixed slot wide whatever its length (a night's pause would otherwise squeeze the runs).
struct TimeX {
    slot: f64,
    /// Slot index of each session's first bucket.
    starts: Vec<usize>,
    gap_slots: usize,
}

impl TimeX {
    fn new(t: &Timeline) -> TimeX {
        let buckets: usize = t.sessions.iter().map(|s| s.buckets.len()).sum();
        let gap_slots = (buckets / 25).max(2);
        let mut starts = Vec::new();
        let mut at = 0;
        for s in &t.sessions {
            starts.push(at);
            at += s.buckets.len() + gap_slots;
        }
        let slots = (at - gap_slots).max(1);
        TimeX {
            slot: (W - LEFT - RIGHT) / slots as f64,
            starts,
            gap_slots,
        }
    }

    fn x(&self, session: usize, bucket: usize) -> f64 {
        LEFT + (self.starts[session] + bucket) as f64 * self.slot
    }
}

/// The time axis: clock labels (UTC) spaced apart, and each gap marked with its length.
fn time_axis(out: &mut String, t: &Timeline, tx: &TimeX, h: f64) {
    let bottom = h - BOTTOM;
    let with_date = t
        .sessions
        .first()
        .zip(t.sessions.last())
        .is_some_and(|(a, b)| a.first_ms / 86_400_000 != b.end_ms / 86_400_000);
    let mut last_label = f64::NEG_INFINITY;
    for (i, s) in t.sessions.iter().enumerate() {
        for (k, b) in s.buckets.iter().enumerate() {
            let x = tx.x(i, k);
            if x - last_label < 80.0 {
                continue;
            }
            last_label = x;
            let _ = write!(
                out,
                r#"<line class="axis" x1="{x:.1}" x2="{x:.1}" y1="{bottom}" y2="{}"/><text class="tick" x="{x:.1}" y="{}">{}</text>"#,
                bottom + 4.0,
                bottom + 16.0,
                clock(b.start_ms, t.width_ms, with_date && k == 0)
            );
        }
        if let Some(next) = t.sessions.get(i + 1) {
            let x0 = tx.x(i, s.buckets.len());
            let x1 = x0 + tx.gap_slots as f64 * tx.slot;
            let mid = (x0 + x1) / 2.0;
            let pause = duration_ms(next.first_ms.saturating_sub(s.end_ms));
            let _ = write!(
                out,
                r#"<g class="gap"><title>no record finished for {pause}: the run was stopped and resumed, or stalled</title><rect class="gapband" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}"/><line x1="{mid:.1}" x2="{mid:.1}" y1="{TOP}" y2="{bottom}"/><text class="gaplabel" x="{mid:.1}" y="{}" text-anchor="middle">{pause}</text></g>"#,
                x1 - x0,
                bottom - TOP,
                TOP + 10.0,
            );
        }
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{bottom}" y2="{bottom}"/>"#,
        W - RIGHT
    );
}

/// Rows per second per bucket (failed rows on top, in the error colour).
pub fn throughput_rows(t: &Timeline) -> String {
    let mut out = String::new();
    open(&mut out, "rows-per-s", "rows per second over time", H);
    let max = t.buckets().map(|b| b.rows_per_s()).fold(0.0, f64::max);
    let top = y_axis(&mut out, max, H, "rows/s");
    let tx = TimeX::new(t);
    for (i, s) in t.sessions.iter().enumerate() {
        for (k, b) in s.buckets.iter().enumerate() {
            if b.rows == 0 {
                continue;
            }
            let x = tx.x(i, k);
            let w = (tx.slot * 0.9).max(0.5);
            let y_ok = y_of(b.rows_per_s() - b.failed_per_s(), top, H);
            let y_all = y_of(b.rows_per_s(), top, H);
            let _ = write!(
                out,
                r#"<g><title>{}: {} rows ({:.2}/s), {} failed</title><rect class="d ok" x="{x:.1}" y="{y_ok:.1}" width="{w:.2}" height="{:.1}"/>"#,
                clock(b.start_ms, t.width_ms, true),
                b.rows,
                b.rows_per_s(),
                b.failed,
                H - BOTTOM - y_ok
            );
            if b.failed > 0 {
                let _ = write!(
                    out,
                    r#"<rect class="d bad" x="{x:.1}" y="{y_all:.1}" width="{w:.2}" height="{:.1}"/>"#,
                    y_ok - y_all
                );
            }
            out.push_str("</g>");
        }
    }
    time_axis(&mut out, t, &tx, H);
    out.push_str("</svg>");
    out
}

/// Tokens per second per bucket, as a line broken at each gap.
pub fn throughput_tokens(t: &Timeline) -> String {
    let mut out = String::new();
    open(&mut out, "tokens-per-s", "tokens per second over time", H);
    let max = t.buckets().map(|b| b.tokens_per_s()).fold(0.0, f64::max);
    let top = y_axis(&mut out, max, H, "tokens/s");
    let tx = TimeX::new(t);
    for (i, s) in t.sessions.iter().enumerate() {
        // Steps, each bucket level across its slot: a session of one bucket still shows.
        let mut d = String::new();
        for (k, b) in s.buckets.iter().enumerate() {
            let x = tx.x(i, k);
            let y = y_of(b.tokens_per_s(), top, H);
            let _ = write!(
                d,
                "{}{x:.1},{y:.1}H{:.1}",
                if k == 0 { "M" } else { "L" },
                x + tx.slot
            );
        }
        let area = format!(
            "{d}L{:.1},{}L{:.1},{}Z",
            tx.x(i, s.buckets.len()),
            H - BOTTOM,
            tx.x(i, 0),
            H - BOTTOM
        );
        let tokens: u64 = s.buckets.iter().map(|b| b.tokens).sum();
        let _ = write!(
            out,
            r#"<g><title>{} tokens from {} (UTC)</title><path class="area" d="{area}"/><path class="d line" d="{d}"/></g>"#,
            compact(tokens as f64),
            clock(s.first_ms, t.width_ms, true)
        );
    }
    time_axis(&mut out, t, &tx, H);
    out.push_str("</svg>");
    out
}

/// Failed rows per bucket, stacked by kind (`kinds` names the colour classes' order).
pub fn errors_over_time(t: &Timeline, kinds: &[String]) -> String {
    let mut out = String::new();
    open(
        &mut out,
        "errors-over-time",
        "failed rows over time by kind",
        H,
    );
    let max = t.buckets().map(|b| b.failed).max().unwrap_or(0) as f64;
    let top = y_axis(&mut out, max, H, "failed rows");
    let tx = TimeX::new(t);
    for (i, s) in t.sessions.iter().enumerate() {
        for (k, b) in s.buckets.iter().enumerate() {
            let mut below = 0u64;
            for (kind, &n) in b.errors.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let y0 = y_of(below as f64, top, H);
                let y1 = y_of((below + n) as f64, top, H);
                below += n;
                let _ = write!(
                    out,
                    r#"<rect class="d k{}" x="{:.1}" y="{y1:.1}" width="{:.2}" height="{:.1}"><title>{}: {n} {}</title></rect>"#,
                    kind % SERIES,
                    tx.x(i, k),
                    (tx.slot * 0.9).max(0.5),
                    y0 - y1,
                    clock(b.start_ms, t.width_ms, true),
                    esc(kinds.get(kind).map_or("?", String::as_str))
                );
            }
        }
    }
    time_axis(&mut out, t, &tx, H);
    out.push_str("</svg>");
    out
}

/// The latency histogram with p50, p95 and p99 marked.
pub fn latency(b: &LatencyBins) -> String {
    let mut out = String::new();
    open(&mut out, "latency", "latency histogram of ok rows", H);
    let max = b.counts.iter().copied().chain([b.over]).max().unwrap_or(0) as f64;
    let top = y_axis(&mut out, max, H, "rows");
    let bars = b.counts.len() + usize::from(b.over > 0);
    let slot = (W - LEFT - RIGHT) / bars.max(1) as f64;
    let span_ms = (b.counts.len() as u64 * b.bin_ms) as f64;
    let x_of_ms = |ms: u64| LEFT + (ms as f64 / span_ms).min(1.0) * b.counts.len() as f64 * slot;
    for (i, &n) in b.counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let y = y_of(n as f64, top, H);
        let lo = i as u64 * b.bin_ms;
        let _ = write!(
            out,
            r#"<rect class="d ok" x="{:.1}" y="{y:.1}" width="{:.2}" height="{:.1}"><title>{}–{}: {n} rows</title></rect>"#,
            LEFT + i as f64 * slot,
            (slot * 0.92).max(0.5),
            H - BOTTOM - y,
            super::text::ms(lo),
            super::text::ms(lo + b.bin_ms)
        );
    }
    if b.over > 0 {
        let y = y_of(b.over as f64, top, H);
        let _ = write!(
            out,
            r#"<rect class="d over" x="{:.1}" y="{y:.1}" width="{:.2}" height="{:.1}"><title>over {}: {} rows (slowest {})</title></rect>"#,
            LEFT + b.counts.len() as f64 * slot,
            (slot * 0.92).max(0.5),
            H - BOTTOM - y,
            super::text::ms(span_ms as u64),
            b.over,
            super::text::ms(b.max)
        );
    }
    let bottom = H - BOTTOM;
    for (i, (name, v)) in [("p50", b.p50), ("p95", b.p95), ("p99", b.p99)]
        .into_iter()
        .enumerate()
    {
        let x = x_of_ms(v);
        // Labels near the right edge go left of their line, so that they are not cut off.
        let (dx, anchor) = if x > W * 0.8 {
            (-3.0, "end")
        } else {
            (3.0, "start")
        };
        let _ = write!(
            out,
            r#"<line class="mark" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{bottom}"/><text class="marklabel" x="{:.1}" y="{}" text-anchor="{anchor}">{name} {}</text>"#,
            x + dx,
            TOP + 10.0 + 12.0 * i as f64,
            super::text::ms(v)
        );
    }
    // Five labels along the axis, at round multiples of the bar width.
    let step = (b.counts.len() / 5).max(1);
    for i in (0..=b.counts.len()).step_by(step) {
        let x = LEFT + i as f64 * slot;
        let _ = write!(
            out,
            r#"<text class="tick" x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 16.0,
            super::text::ms(i as u64 * b.bin_ms)
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{bottom}" y2="{bottom}"/></svg>"#,
        W - RIGHT
    );
    out
}

/// Horizontal bars, one per label, each with its colour class.
pub fn hbars(chart: &str, label: &str, rows: &[(String, u64, String)]) -> String {
    let row_h = 26.0;
    let h = TOP + row_h * rows.len().max(1) as f64 + 8.0;
    let mut out = String::new();
    open(&mut out, chart, label, h);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let left = 150.0;
    let span = W - left - 90.0;
    for (i, (name, n, class)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * row_h;
        let w = (*n as f64 / max * span).max(if *n > 0 { 1.5 } else { 0.0 });
        let _ = write!(
            out,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect class="d {class}" x="{left}" y="{y:.1}" width="{w:.1}" height="{:.1}"><title>{}: {n}</title></rect><text class="value" x="{:.1}" y="{:.1}">{}</text>"#,
            left - 8.0,
            y + row_h * 0.55,
            esc(name),
            row_h * 0.7,
            esc(name),
            left + w + 6.0,
            y + row_h * 0.55,
            compact(*n as f64)
        );
    }
    out.push_str("</svg>");
    out
}

/// Vertical bars of rows by attempts, ok below and failed on top.
pub fn attempts(rows: &[(String, u64, u64)]) -> String {
    let mut out = String::new();
    open(&mut out, "attempts", "rows by number of attempts", H);
    let max = rows.iter().map(|r| r.1 + r.2).max().unwrap_or(0) as f64;
    let top = y_axis(&mut out, max, H, "rows");
    let slot = (W - LEFT - RIGHT) / rows.len().max(1) as f64;
    let bottom = H - BOTTOM;
    for (i, (label, ok, failed)) in rows.iter().enumerate() {
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let w = slot * 0.7;
        let y_ok = y_of(*ok as f64, top, H);
        let y_all = y_of((ok + failed) as f64, top, H);
        let _ = write!(
            out,
            r#"<g><title>{} attempts: {ok} ok, {failed} failed</title><rect class="d ok" x="{x:.1}" y="{y_ok:.1}" width="{w:.1}" height="{:.1}"/><rect class="d bad" x="{x:.1}" y="{y_all:.1}" width="{w:.1}" height="{:.1}"/></g><text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            esc(label),
            bottom - y_ok,
            y_ok - y_all,
            x + w / 2.0,
            bottom + 16.0,
            esc(label)
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{LEFT}" x2="{}" y1="{bottom}" y2="{bottom}"/></svg>"#,
        W - RIGHT
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_ticks_are_round_and_cover_the_maximum() {
        assert_eq!(y_ticks(0.0), (1.0, 1.0));
        assert_eq!(y_ticks(10.0), (2.0, 10.0));
        assert_eq!(y_ticks(11.0), (2.5, 12.5));
        assert_eq!(y_ticks(930.0), (200.0, 1000.0));
        let (step, top) = y_ticks(0.37);
        assert!(top >= 0.37 && (top / step).round() <= 6.0);
    }
}

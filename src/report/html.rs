//! The report page: one self-contained HTML file (inline CSS, inline SVG, no script, no
//! external reference), a headline above the charts, then the tables. Light and dark styles
//! follow `prefers-color-scheme`.

use std::fmt::Write as _;

use serde_json::Value;

use super::data::{self, Figures, LatencyBins, Timeline};
use super::svg;
use super::text::{compact, duration_ms, esc, grouped, money, ms, stamp_ms};

const STYLE: &str = r#"
:root{--bg:#fafafa;--card:#fff;--fg:#1c1e21;--muted:#5f6368;--grid:#e4e6ea;--axis:#9aa0a6;
--ok:#2e7d4f;--bad:#c62828;--over:#8d6e63;--line:#1f6fd1;--area:rgba(31,111,209,.14);--gap:rgba(128,128,128,.12);
--k0:#d62728;--k1:#ff7f0e;--k2:#9467bd;--k3:#8c564b;--k4:#e377c2;--k5:#17becf;--k6:#bcbd22;--k7:#7f7f7f;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#121417;--card:#1d2025;--fg:#e8eaed;--muted:#a8adb4;--grid:#2f343b;--axis:#6b7280;
--ok:#4caf7d;--bad:#ef5350;--over:#bcaaa4;--line:#6ea8ff;--area:rgba(110,168,255,.18);--gap:rgba(200,200,200,.10);
--k0:#ff6b6b;--k1:#ffa94d;--k2:#b197fc;--k3:#c8a27c;--k4:#f783ac;--k5:#3bc9db;--k6:#d8d85a;--k7:#adb5bd}}
*{box-sizing:border-box}
body{margin:0;padding:20px 28px;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
h1{font-size:20px;margin:0 0 2px}h2{font-size:15px;margin:0 0 8px}
.sub,.note,.muted{color:var(--muted)}.sub{margin:0 0 12px;font-size:12px}
.headline{font-size:19px;margin:8px 0 12px}.headline b.ok{color:var(--ok)}.headline b.bad{color:var(--bad)}
.notes{margin:0 0 14px;padding-left:18px;color:var(--muted);font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px;align-items:start}
.card{background:var(--card);border:1px solid var(--grid);border-radius:8px;padding:12px 14px;min-width:0}
.wide{grid-column:1/-1}
svg.chart{width:100%;height:auto;display:block;font-size:11px}
svg .grid{stroke:var(--grid);stroke-width:1}svg .axis{stroke:var(--axis);stroke-width:1}
svg text{fill:var(--muted)}svg text.label,svg text.value{fill:var(--fg);font-size:12px;dominant-baseline:middle}
svg text.tick{font-size:10.5px}svg text.unit{font-size:10.5px}
svg .ok{fill:var(--ok)}svg .bad{fill:var(--bad)}svg .over{fill:var(--over)}
svg .line{fill:none;stroke:var(--line);stroke-width:1.8;stroke-linejoin:round}svg .area{fill:var(--area)}
svg .gapband{fill:var(--gap)}svg .gap line{stroke:var(--axis);stroke-dasharray:3 3}svg text.gaplabel{font-size:10px}
svg .mark{stroke:var(--fg);stroke-dasharray:4 3;stroke-width:1.2}svg text.marklabel{fill:var(--fg);font-size:11px}
.k0{fill:var(--k0);background:var(--k0)}.k1{fill:var(--k1);background:var(--k1)}.k2{fill:var(--k2);background:var(--k2)}
.k3{fill:var(--k3);background:var(--k3)}.k4{fill:var(--k4);background:var(--k4)}.k5{fill:var(--k5);background:var(--k5)}
.k6{fill:var(--k6);background:var(--k6)}.k7{fill:var(--k7);background:var(--k7)}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin-top:6px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--grid);vertical-align:top}
th{color:var(--muted);font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px;word-break:break-all}
.stats{display:flex;flex-wrap:wrap;gap:4px 22px;font-size:13px;margin:6px 0 0}
"#;

/// Most error groups and models listed; the rest are counted in one line.
const MAX_TABLE_ROWS: usize = 50;

/// The page for these figures; `summary` is a run's `--summary-json`, when given.
pub fn page(f: &Figures, summary: Option<&Value>, generated_ms: u64) -> String {
    // Few records get wider buckets (about four records each), not a comb of lone bars.
    let timed = f.records - f.untimed;
    let target = (timed / 4).clamp(10, data::TARGET_BUCKETS);
    let timeline = data::timeline(&f.ticks, f.kinds.len(), data::GAP_MS, target);
    let latency = data::latency_bins(&f.latency, data::LATENCY_BINS);
    let mut out = String::with_capacity(256 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    let _ = write!(
        out,
        "<title>batchgen report: {}</title>",
        esc(&file_names(f))
    );
    let _ = write!(out, "<style>{STYLE}</style></head><body>");
    out.push_str("<h1>batchgen run report</h1>");
    let _ = write!(
        out,
        r#"<p class="sub">{} · {} records · made {} (times in UTC)</p>"#,
        esc(&file_names(f)),
        grouped(f.records),
        stamp_ms(generated_ms)
    );
    headline(&mut out, f, timeline.as_ref(), summary);
    notes(&mut out, f, timeline.as_ref(), latency.is_some());
    out.push_str(r#"<div class="grid">"#);
    charts(&mut out, f, timeline.as_ref(), latency.as_ref());
    error_table(&mut out, f);
    model_table(&mut out, f, summary);
    if f.files.len() > 1 {
        file_table(&mut out, f);
    }
    if let Some(s) = summary {
        summary_card(&mut out, s);
    }
    out.push_str("</div></body></html>\n");
    out
}

fn file_names(f: &Figures) -> String {
    match f.files.len() {
        0 => "no file".to_string(),
        1 => f.files[0].name.clone(),
        n => format!("{} and {} more files", f.files[0].name, n - 1),
    }
}

/// The currency of the costs, when the summary says it: records carry amounts only.
fn currency(summary: Option<&Value>) -> Option<String> {
    let s = summary?;
    if let Some(c) = s.get("currency").and_then(Value::as_str) {
        return Some(c.to_string());
    }
    let costs = s.get("costs")?.as_object()?;
    (costs.len() == 1)
        .then(|| costs.keys().next().cloned())
        .flatten()
}

fn headline(out: &mut String, f: &Figures, t: Option<&Timeline>, summary: Option<&Value>) {
    // A summary's wall time is its own run's: after a resume, the sessions tell more.
    let summary_wall = summary
        .and_then(|s| s.get("wall_s"))
        .and_then(Value::as_f64);
    let wall = match (t, summary_wall) {
        (Some(t), _) if t.sessions.len() > 1 => format!(
            "wall {} in {} sessions",
            duration_ms(t.active_ms()),
            t.sessions.len()
        ),
        (_, Some(w)) => format!("wall {}", duration_ms((w * 1000.0).round() as u64)),
        (Some(t), None) => format!("wall {}", duration_ms(t.active_ms())),
        (None, None) => "wall unknown (no finished_at)".to_string(),
    };
    let cost = match currency(summary) {
        Some(c) => format!("{} {}", money(f.cost), esc(&c)),
        None => format!("{} (currency: see the run's summary)", money(f.cost)),
    };
    let _ = write!(
        out,
        r#"<p class="headline"><b class="ok">{} ok</b> · <b class="bad">{} failed</b> · {wall} · cost {cost}</p>"#,
        grouped(f.ok),
        grouped(f.failed)
    );
}

fn notes(out: &mut String, f: &Figures, t: Option<&Timeline>, latency: bool) {
    let mut notes: Vec<String> = Vec::new();
    if t.is_none() && f.records > 0 {
        notes.push(
            "Could not draw throughput over time nor errors over time: no record has \
             finished_at (written by an older batchgen)."
                .to_string(),
        );
    } else if f.untimed > 0 {
        notes.push(format!(
            "{} records have no finished_at (written by an older batchgen): the charts over \
             time leave them out; every other figure counts them.",
            grouped(f.untimed)
        ));
    }
    if !latency && f.ok > 0 {
        notes.push("Could not draw the latency histogram: no ok record has latency_ms.".into());
    }
    if let Some(t) = t
        && t.sessions.len() > 1
    {
        notes.push(format!(
            "{} sessions: each shaded gap is a stretch of {} or more with no record finished \
             (a stop and a resume, or a stall); gaps are drawn narrow whatever their length.",
            t.sessions.len(),
            duration_ms(data::GAP_MS)
        ));
    }
    if let Some(t) = t {
        notes.push(format!("Time buckets of {} each.", duration_ms(t.width_ms)));
    }
    if f.repeated > 0 {
        notes.push(format!(
            "{} records repeat an id seen before (a file not compacted, or overlapping \
             files): figures count records, not distinct rows.",
            grouped(f.repeated)
        ));
    }
    if f.not_records > 0 {
        notes.push(format!(
            "{} lines are not records and were skipped.",
            grouped(f.not_records)
        ));
    }
    if notes.is_empty() {
        return;
    }
    out.push_str(r#"<ul class="notes">"#);
    for n in notes {
        let _ = write!(out, "<li>{n}</li>");
    }
    out.push_str("</ul>");
}

fn card(out: &mut String, wide: bool, title: &str, body: &str) {
    let _ = write!(
        out,
        r#"<section class="card{}"><h2>{}</h2>{body}</section>"#,
        if wide { " wide" } else { "" },
        esc(title)
    );
}

fn legend(kinds: &[String]) -> String {
    let mut out = String::from(r#"<div class="legend">"#);
    for (i, k) in kinds.iter().enumerate() {
        let _ = write!(
            out,
            r#"<span><i class="k{}"></i>{}</span>"#,
            i % svg::SERIES,
            esc(k)
        );
    }
    out.push_str("</div>");
    out
}

fn charts(out: &mut String, f: &Figures, t: Option<&Timeline>, latency: Option<&LatencyBins>) {
    let mut outcomes = vec![("ok".to_string(), f.ok, "ok".to_string())];
    if f.truncated > 0 {
        outcomes.push(("ok, truncated".into(), f.truncated, "over".into()));
    }
    for (i, k) in f.kinds.iter().enumerate() {
        let n = f.by_kind.get(k).copied().unwrap_or(0);
        outcomes.push((k.clone(), n, format!("k{}", i % svg::SERIES)));
    }
    card(
        out,
        false,
        "Rows by outcome",
        &svg::hbars("outcomes", "rows by outcome", &outcomes),
    );
    let attempts: Vec<(String, u64, u64)> = attempt_rows(f);
    let mut body = svg::attempts(&attempts);
    let retried: u64 = f
        .attempts
        .iter()
        .filter(|(a, _)| **a > 1)
        .map(|(_, (o, e))| o + e)
        .sum();
    let _ = write!(
        body,
        r#"<p class="note">{} of {} rows took more than one attempt (green: ok, red: failed).</p>"#,
        grouped(retried),
        grouped(f.records)
    );
    card(out, false, "Retries per row (attempts)", &body);
    if let Some(t) = t {
        let note = format!(
            r#"<p class="note">Per bucket of {} (UTC); red: failed rows.</p>"#,
            duration_ms(t.width_ms)
        );
        card(
            out,
            false,
            "Rows per second",
            &(svg::throughput_rows(t) + &note),
        );
        card(out, false, "Tokens per second", &svg::throughput_tokens(t));
        if f.failed > 0 {
            let mut body = svg::errors_over_time(t, &f.kinds);
            body.push_str(&legend(&f.kinds));
            card(out, false, "Errors over time by kind", &body);
        }
    }
    if let Some(l) = latency {
        let mut body = svg::latency(l);
        let _ = write!(
            body,
            r#"<div class="stats"><span>p50 <b>{}</b></span><span>p95 <b>{}</b></span><span>p99 <b>{}</b></span><span>max <b>{}</b></span><span class="muted">of {} ok rows, last attempt</span></div>"#,
            ms(l.p50),
            ms(l.p95),
            ms(l.p99),
            ms(l.max),
            grouped(f.latency.len())
        );
        card(out, false, "Latency (ok rows)", &body);
    }
}

/// Rows by attempts, with everything from ten on in one bar.
fn attempt_rows(f: &Figures) -> Vec<(String, u64, u64)> {
    let mut rows: Vec<(String, u64, u64)> = Vec::new();
    let mut many = (0, 0);
    for (&a, &(ok, failed)) in &f.attempts {
        if a >= 10 {
            many = (many.0 + ok, many.1 + failed);
        } else {
            rows.push((a.to_string(), ok, failed));
        }
    }
    if many != (0, 0) {
        rows.push(("10+".into(), many.0, many.1));
    }
    rows
}

fn error_table(out: &mut String, f: &Figures) {
    if f.errors.is_empty() {
        card(
            out,
            false,
            "Errors by kind and code",
            r#"<p class="note">No failed rows.</p>"#,
        );
        return;
    }
    let mut groups: Vec<_> = f.errors.iter().collect();
    groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    let mut body = String::from(
        r#"<table><tr><th>kind</th><th>code</th><th class="n">rows</th><th>example ids</th><th>example message</th></tr>"#,
    );
    for ((kind, code), g) in groups.iter().take(MAX_TABLE_ROWS) {
        let ids: Vec<String> = g.example_ids.iter().map(|i| esc(i)).collect();
        let _ = write!(
            body,
            r#"<tr><td>{}</td><td><code>{}</code></td><td class="n">{}</td><td><code>{}</code></td><td class="muted">{}</td></tr>"#,
            esc(kind),
            esc(code),
            grouped(g.count),
            ids.join(", "),
            esc(&g.example_message)
        );
    }
    body.push_str("</table>");
    if groups.len() > MAX_TABLE_ROWS {
        let _ = write!(
            body,
            r#"<p class="note">and {} more kinds and codes.</p>"#,
            groups.len() - MAX_TABLE_ROWS
        );
    }
    card(out, true, "Errors by kind and code", &body);
}

fn model_table(out: &mut String, f: &Figures, summary: Option<&Value>) {
    let cur = currency(summary)
        .map(|c| format!(" ({})", esc(&c)))
        .unwrap_or_default();
    let mut models: Vec<_> = f.models.iter().collect();
    models.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then(a.0.cmp(b.0)));
    let mut body = format!(
        r#"<table><tr><th>model</th><th class="n">ok rows</th><th class="n">input tokens</th><th class="n">output tokens</th><th class="n">reasoning</th><th class="n">cost{cur}</th></tr>"#
    );
    for (name, m) in models.iter().take(MAX_TABLE_ROWS) {
        let unpriced = if m.unpriced > 0 {
            format!(
                r#" <span class="muted">({} rows unpriced)</span>"#,
                grouped(m.unpriced)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr><td><code>{}</code></td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}{unpriced}</td></tr>"#,
            esc(name),
            grouped(m.rows),
            grouped(m.input_tokens),
            grouped(m.output_tokens),
            grouped(m.reasoning_tokens),
            money(m.cost)
        );
    }
    body.push_str("</table>");
    if models.len() > MAX_TABLE_ROWS {
        let _ = write!(
            body,
            r#"<p class="note">and {} more models.</p>"#,
            models.len() - MAX_TABLE_ROWS
        );
    }
    card(out, false, "Tokens and cost by model", &body);
}

fn file_table(out: &mut String, f: &Figures) {
    let mut body = String::from(
        r#"<table><tr><th>file</th><th class="n">records</th><th class="n">ok</th><th class="n">failed</th><th class="n">tokens</th><th class="n">cost</th><th>first record</th><th>last record</th></tr>"#,
    );
    for file in &f.files {
        let at = |t: Option<u64>| t.map_or_else(|| "-".to_string(), stamp_ms);
        let _ = write!(
            body,
            r#"<tr><td><code>{}</code></td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&file.name),
            grouped(file.records),
            grouped(file.ok),
            grouped(file.failed),
            compact(file.tokens as f64),
            money(file.cost),
            at(file.first_ms),
            at(file.last_ms)
        );
    }
    body.push_str("</table>");
    card(out, true, "By file (shard)", &body);
}

/// The run's own summary (`--summary-json`): its last session, with skipped rows.
fn summary_card(out: &mut String, s: &Value) {
    let mut body = String::from(r#"<div class="stats">"#);
    for key in [
        "rows_total",
        "rows_ok",
        "rows_failed",
        "rows_skipped",
        "rows_unsent",
        "requests",
        "retries",
        "possibly_billed",
        "truncated",
        "wall_s",
        "rows_per_s",
        "tokens_per_s",
        "cost",
        "currency",
        "exit_code",
    ] {
        let Some(v) = s.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let text = match v {
            Value::Number(n) if key == "cost" => n.as_f64().map_or_else(|| n.to_string(), money),
            Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), compact),
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        let _ = write!(body, "<span>{} <b>{}</b></span>", esc(key), esc(&text));
    }
    body.push_str(
        r#"</div><p class="note">From the summary JSON of the run that wrote the file: it counts that run's rows; rows done before it are skipped.</p>"#,
    );
    card(out, true, "The run's summary", &body);
}

//! The first stage of a run, before anything is sent: stdin spooled to a file, the prices,
//! the output's lock and `--fresh`, the scan of the existing output beside the validation of
//! the input, the problems and the resume said to the user; and `--dry-run`'s report.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::exit::{Exit, RunError};
use crate::input;
use crate::output;
use crate::output::lockfile::OutputLock;
use crate::output::resume::Previous;
use crate::plan::{self, Plan};
use crate::pricing::{self, Prices};
use crate::printer::say;
use crate::request::Builder;
use crate::settings::Settings;

/// A run ready to send its rows, handed to `execute`.
pub struct Ready {
    pub settings: Settings,
    /// When the run started: `--deadline` counts from here, and so does the report's time.
    pub started: Instant,
    /// The input as the user named it (`<stdin>` rather than its spooled copy).
    pub input_name: String,
    pub output_name: String,
    pub builder: Builder,
    pub prices: Arc<Prices>,
    /// The plan, joined with the existing output: which rows to skip, which are invalid.
    pub plan: Plan,
    /// Rows the run does not send: done before, and changed without `--rerun-changed`.
    pub rows_skipped: u64,
    /// When the results file needs rewriting to one record per id at the end.
    pub compaction: Compaction,
    pub held: Held,
}

/// What the existing output says about compacting it once the run is done.
#[derive(Debug, Clone, Copy)]
pub struct Compaction {
    /// The file held records before: rows the run sends again leave their older ones behind.
    pub had_records: bool,
    /// The file already holds superseded records (older ones, or ones this run replaces).
    pub superseded: bool,
}

/// What the run keeps until it ends: dropping it lets go of the input and the output.
pub struct Held {
    /// The spooled copy of stdin, which the reader reads; deleted when dropped.
    _spool: Option<tempfile::NamedTempFile>,
    /// No other run appends to the same output until this is dropped, after the compaction
    /// and the report. `None` for a dry run, and for an output that is a device or a pipe.
    _lock: Option<OutputLock>,
}

/// Readies a run: spools stdin, takes the output's lock, scans the output while validating the
/// input, and says what it found. A refused input is an error: nothing was sent.
pub async fn prepare(mut settings: Settings) -> Result<Ready, RunError> {
    let started = Instant::now();
    let input_name = settings.input.display();
    let output_name = settings.output.display().to_string();
    let spool = spool_stdin(&mut settings)?;
    let builder = Builder::new(&settings).map_err(RunError::Request)?;
    let prices = load_prices(&settings)?;
    let lock = lock_output(&settings)?;
    let (prev, mut plan) =
        scan_and_validate(&settings, &builder, &input_name, &output_name).await?;
    if let Some(shard) = settings.shard {
        plan.keep_shard(shard);
    }
    plan.resume(&prev, settings.rerun_changed);
    let compaction = Compaction {
        had_records: prev.records > 0,
        superseded: prev.has_superseded(),
    };
    say_problems(&settings, &plan, &input_name)?;
    say_resume(&settings, &plan, &prev, &output_name);
    let rows_skipped = if settings.rerun_changed {
        plan.rows_done
    } else {
        plan.rows_done + plan.rows_changed
    };
    Ok(Ready {
        settings,
        started,
        input_name,
        output_name,
        builder,
        prices,
        plan,
        rows_skipped,
        compaction,
        held: Held {
            _spool: spool,
            _lock: lock,
        },
    })
}

/// Stdin is spooled to a file beside the output, so that it can be validated before anything
/// is sent; the settings then read the input from there.
fn spool_stdin(settings: &mut Settings) -> Result<Option<tempfile::NamedTempFile>, RunError> {
    if settings.input.path.is_some() {
        return Ok(None);
    }
    let dir = settings
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = input::spool_stdin(dir).map_err(RunError::Spool)?;
    settings.input.path = Some(tmp.path().to_path_buf());
    Ok(Some(tmp))
}

/// The price table of a run: the built-in one for `--region`, with `--pricing` on top. With
/// `--max-cost`, the model must have a price.
fn load_prices(settings: &Settings) -> Result<Arc<Prices>, RunError> {
    let mut prices = Prices::for_region(settings.region);
    if let Some(path) = &settings.pricing {
        prices = prices.with_overrides(path).map_err(RunError::Pricing)?;
    }
    // DashScope's Batch Chat host bills synchronous calls at the batch price.
    if settings.batch.is_none()
        && let crate::settings::Endpoint::Url(url) = &settings.endpoint
        && pricing::is_batch_chat_host(url)
    {
        prices = prices.at_batch_price(&format!(
            "at the batch price ({} is DashScope's Batch Chat)",
            pricing::BATCH_CHAT_HOST
        ));
    }
    let model = &settings.params.model;
    if settings.max_cost.is_some() && prices.get(model).is_none() {
        return Err(RunError::NoPrice {
            model: model.clone(),
        });
    }
    Ok(Arc::new(prices))
}

/// Makes the output's directory, takes its lock, and moves an old file aside for `--fresh`.
fn lock_output(settings: &Settings) -> Result<Option<OutputLock>, RunError> {
    if let Some(dir) = settings
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !settings.dry_run)
    {
        fs_err::create_dir_all(dir).map_err(RunError::OutputNotWritable)?;
    }
    // A dry run writes nothing, so it takes no lock; nor does an output that is a device or a
    // pipe (`-o /dev/null`): there is no file to protect, and no lock file belongs beside it.
    let special = std::fs::metadata(&settings.output).is_ok_and(|m| !m.is_file());
    let lock = match settings.dry_run || special {
        true => None,
        false => Some(output::lockfile::acquire(&settings.output).map_err(RunError::Lock)?),
    };
    if settings.fresh
        && !settings.dry_run
        && let Some(kept) = output::keep_previous(&settings.output).map_err(RunError::Fresh)?
    {
        say(format_args!(
            "--fresh: the previous results are kept as {}",
            kept.display()
        ));
    }
    Ok(lock)
}

/// The output scan and the input validation, reading their files side by side. With records
/// to resume and no shard (nor dry run), validation looks each row up in the scan's table as
/// soon as it has it, keeping 8 bytes a row; otherwise it keeps 32 bytes a row for
/// `Plan::resume` (or 8 when the output is empty). A repair of the output is said as soon
/// as the scan is done, even when the input is then refused.
async fn scan_and_validate(
    settings: &Settings,
    builder: &Builder,
    input_name: &str,
    output_name: &str,
) -> Result<(Arc<Previous>, Plan), RunError> {
    let empty = match std::fs::metadata(&settings.output) {
        Ok(m) => m.is_file() && m.len() == 0,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    let scan = {
        // A dry run with --fresh plans as if the output were already moved aside.
        let path = match settings.dry_run && settings.fresh {
            true => std::path::PathBuf::new(),
            false => settings.output.clone(),
        };
        let repair = !settings.dry_run;
        tokio::task::spawn_blocking(move || output::resume::scan(&path, repair))
    };
    let scanned = |r: Result<std::io::Result<Previous>, tokio::task::JoinError>| {
        r.map_err(RunError::ScanPanicked)?
            .map_err(|source| RunError::ReadOutput {
                output: output_name.to_string(),
                source,
            })
            .map(Arc::new)
    };
    let inline = !empty && settings.shard.is_none() && !settings.dry_run;
    let validate = |keep: plan::Keep| {
        let (spec, builder, skip) = (
            settings.input.clone(),
            builder.clone(),
            settings.skip_invalid,
        );
        let estimate = settings.dry_run;
        tokio::task::spawn_blocking(move || plan::validate(&spec, &builder, skip, estimate, keep))
    };
    let validated = |r: Result<std::io::Result<Plan>, tokio::task::JoinError>| {
        r.map_err(RunError::ValidationPanicked)?
            .map_err(|source| RunError::ReadInput {
                input: input_name.to_string(),
                source,
            })
    };
    let (send, keep) = match (inline, empty && settings.shard.is_none()) {
        (true, _) => {
            let (send, receive) = std::sync::mpsc::sync_channel(1);
            let resumer = plan::Resumer::new(receive, settings.rerun_changed);
            (Some(send), plan::Keep::Resume(resumer))
        }
        (false, true) => (None, plan::Keep::Lean),
        (false, false) => (None, plan::Keep::Rows),
    };
    let validation = validate(keep);
    let prev = scanned(scan.await);
    if let (Some(send), Ok(prev)) = (send, &prev) {
        // Validation is gone only if it failed, which its result says below.
        let _ = send.send(prev.clone());
    }
    let prev = prev?;
    say_repairs(settings, &prev, output_name);
    let plan = validated(validation.await)?;
    Ok((prev, plan))
}

/// Says what the scan repaired in the output (said even with -q), or would repair on a dry run.
fn say_repairs(settings: &Settings, prev: &Previous, output_name: &str) {
    match (prev.torn_bytes > 0, settings.dry_run) {
        (true, false) => say(format_args!(
            "{output_name}: dropped a torn last line ({} bytes) left by an interrupted run; its row runs again",
            prev.torn_bytes
        )),
        (true, true) => say(format_args!(
            "{output_name}: the last line is torn ({} bytes, left by an interrupted run); a run drops it and sends its row again",
            prev.torn_bytes
        )),
        (false, _) => {}
    }
    if prev.newline_added {
        say(format_args!(
            "{output_name}: the last line had no newline; it is a whole record, so it is kept{}",
            if settings.dry_run {
                " (a run adds the newline)"
            } else {
                " and the newline was added"
            }
        ));
    }
}

/// Says the input's problems; without `--skip-invalid` they refuse the input.
fn say_problems(settings: &Settings, plan: &Plan, input_name: &str) -> Result<(), RunError> {
    if plan.problem_count == 0 {
        return Ok(());
    }
    for p in &plan.problems {
        say(format_args!("{input_name}:{}: {}", p.line, p.reason));
    }
    let more = plan.problem_count - plan.problems.len() as u64;
    if more > 0 {
        say(format_args!("... and {more} more problems"));
    }
    if !settings.skip_invalid {
        return Err(RunError::InvalidRows {
            input: input_name.to_string(),
            count: plan.problem_count,
        });
    }
    say(format_args!(
        "--skip-invalid: {} invalid rows get invalid_input records; the rest run",
        plan.invalid.len()
    ));
    Ok(())
}

/// Says what the existing output holds: lines that are not records, rows already done, and
/// done rows whose request changed.
fn say_resume(settings: &Settings, plan: &Plan, prev: &Previous, output_name: &str) {
    if !settings.quiet {
        for line in prev.unreadable.iter().take(plan::MAX_PROBLEMS) {
            say(format_args!(
                "{output_name}:{line}: not a result record; ignored"
            ));
        }
        if plan.rows_done > 0 {
            say(format_args!(
                "resuming: {} of {} rows already done in {output_name}",
                plan.rows_done, plan.rows_total
            ));
        }
    }
    if plan.rows_changed > 0 {
        if settings.rerun_changed {
            say(format_args!(
                "{} done rows would now be sent differently (template, model or parameters changed): sending them again (--rerun-changed)",
                plan.rows_changed
            ));
        } else {
            say(format_args!(
                "warning: {} done rows would now be sent differently (template, model or parameters changed): skipped; --rerun-changed sends them again",
                plan.rows_changed
            ));
        }
    }
}

/// `--dry-run`: what the run would send, and a cost range; nothing is sent or written.
pub fn dry_run(ready: &Ready) -> Result<Exit, RunError> {
    let Ready {
        settings,
        plan,
        rows_skipped,
        prices,
        ..
    } = ready;
    let rows_skipped = *rows_skipped;
    let model = &settings.params.model;
    let to_send = plan
        .rows_total
        .saturating_sub(rows_skipped + plan.invalid.len() as u64);
    let input = plan.est_input_tokens;
    let price = prices.get(model);
    let low = price.and_then(|p| {
        p.input_only(input / to_send.max(1))
            .map(|c| c * to_send as f64)
    });
    // The rule of `--max-cost`.
    let thinking = pricing::priced_as_thinking(
        settings.params.thinking,
        price.is_some_and(|p| p.thinks_by_default()),
        false,
    );
    let high = match (price, settings.params.max_tokens) {
        (Some(p), Some(m)) => p
            .upper_bound(input / to_send.max(1), m, thinking)
            .map(|c| c * to_send as f64),
        _ => None,
    };
    // Batch mode pays the batch price.
    let share = match (&settings.batch, price) {
        (Some(_), Some(p)) => 1.0 - p.batch_discount(),
        _ => 1.0,
    };
    let (low, high) = (
        low.map(|c| pricing::round_cost(c * share)),
        high.map(|c| pricing::round_cost(c * share)),
    );
    let currency = price.map_or("", |p| p.currency());
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "batchgen dry run: nothing was sent");
    let _ = writeln!(
        out,
        "  rows       {} total: {to_send} to send, {rows_skipped} done before, {} invalid",
        plan.rows_total,
        plan.invalid.len()
    );
    if let Some(shard) = settings.shard {
        let _ = writeln!(
            out,
            "  shard      {shard}: {} more rows belong to other shards",
            plan.rows_other_shards
        );
    }
    let _ = writeln!(
        out,
        "  input      about {input} tokens (estimated: a token per 4 ASCII bytes and per 3 \
         other bytes of message text, plus 4 per message)"
    );
    match settings.params.max_tokens {
        Some(m) => {
            let _ = writeln!(
                out,
                "  output     at most {m} tokens per row (--max-tokens)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  output     no bound: set --max-tokens for the upper end of the cost range"
            );
        }
    }
    let range = match (low, high) {
        (Some(l), Some(h)) => format!("{l:.6} to {h:.6} {currency}"),
        (Some(l), None) => format!("at least {l:.6} {currency} (the input alone)"),
        _ => "unknown: the model has no price (add one with --pricing)".to_string(),
    };
    let _ = writeln!(
        out,
        "  cost       {range}, model `{model}`{}{}",
        price
            .and_then(|p| p.source())
            .map(|s| format!(" (prices: {s})"))
            .unwrap_or_default(),
        if settings.batch.is_some() {
            ", at the batch price"
        } else {
            ""
        }
    );
    crate::printer::write_raw(out.as_bytes());
    if let Some(path) = &settings.summary_json {
        let json = serde_json::json!({
            "dry_run": true,
            "rows_total": plan.rows_total,
            "rows_to_send": to_send,
            "rows_skipped": rows_skipped,
            "rows_invalid": plan.invalid.len(),
            "input_tokens_estimate": input,
            "max_tokens": settings.params.max_tokens,
            "cost_min": low,
            "cost_max": high,
            "currency": price.map(|p| p.currency()),
            "model": model,
        });
        let text = serde_json::to_vec_pretty(&json).unwrap_or_default();
        fs_err::write(path, text).map_err(RunError::Summary)?;
    }
    Ok(Exit::Ok)
}

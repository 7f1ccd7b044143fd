//! One batch of the mock's Batch API: its lifecycle in steps of `batch_step` (`validating`,
//! then `failed` or `in_progress`, `finalizing`, `completed` or `expired`; a cancel gives
//! `cancelling`, then `cancelled`), read off the clock whenever it is looked at, and the
//! batch object the API returns.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::lines::{Checked, Usage};
use crate::mock::wire::Style;

/// The states of a batch, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl Phase {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Phase::Validating => "validating",
            Phase::Failed => "failed",
            Phase::InProgress => "in_progress",
            Phase::Finalizing => "finalizing",
            Phase::Completed => "completed",
            Phase::Expired => "expired",
            Phase::Cancelling => "cancelling",
            Phase::Cancelled => "cancelled",
        }
    }

    pub(super) fn terminal(self) -> bool {
        matches!(
            self,
            Phase::Failed | Phase::Completed | Phase::Expired | Phase::Cancelled
        )
    }
}

/// What the lines came to, computed once.
pub(super) struct Outcome {
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub completed: u64,
    pub failed: u64,
    pub usage: Usage,
}

/// What a create call asked for.
pub(super) struct Request {
    pub input_file_id: String,
    pub endpoint: String,
    pub style: Style,
    pub completion_window: String,
    pub window: Duration,
    pub metadata: Value,
}

pub(super) struct Batch {
    pub id: String,
    /// Its place among the server's batches (0 for the first), for the shuffle seed.
    pub seq: u64,
    pub request: Request,
    created: Instant,
    /// Unix time of `created`, in seconds.
    created_unix: f64,
    /// The input file as it was at create (deleting the file later does not change it).
    pub input: Bytes,
    pub checked: Checked,
    /// Time from `created` to the cancel call.
    pub cancelled_after: Option<Duration>,
    pub outcome: Option<Outcome>,
}

/// Whole steps in `elapsed`; with a zero step every state is already behind.
fn steps(elapsed: Duration, step: Duration) -> u128 {
    elapsed
        .as_nanos()
        .checked_div(step.as_nanos())
        .unwrap_or(u128::MAX)
}

impl Batch {
    pub(super) fn new(
        id: String,
        seq: u64,
        request: Request,
        input: Bytes,
        now: Instant,
        created_unix: f64,
    ) -> Batch {
        let checked = super::lines::validate(&input, &request.endpoint);
        Batch {
            id,
            seq,
            request,
            created: now,
            created_unix,
            input,
            checked,
            cancelled_after: None,
            outcome: None,
        }
    }

    pub(super) fn valid(&self) -> bool {
        self.checked.errors.is_empty()
    }

    /// Stops the clock of the lifecycle: `cancelling` from now on, for one step.
    pub(super) fn cancel(&mut self, now: Instant) {
        self.cancelled_after = Some(self.elapsed(now));
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Whether the lines are due to be answered: it left `in_progress`, or was cancelled.
    pub(super) fn due(&self, now: Instant, step: Duration) -> bool {
        self.valid() && (self.cancelled_after.is_some() || steps(self.elapsed(now), step) >= 2)
    }

    pub(super) fn phase(&self, now: Instant, step: Duration) -> Phase {
        let elapsed = self.elapsed(now);
        if let Some(at) = self.cancelled_after {
            return if elapsed < at.saturating_add(step) {
                Phase::Cancelling
            } else {
                Phase::Cancelled
            };
        }
        match steps(elapsed, step) {
            0 => Phase::Validating,
            _ if !self.valid() => Phase::Failed,
            1 => Phase::InProgress,
            2 => Phase::Finalizing,
            _ if self.checked.lines.iter().any(|l| l.expire) => Phase::Expired,
            _ => Phase::Completed,
        }
    }

    /// Unix seconds `after` the creation.
    fn unix(&self, after: Duration) -> u64 {
        // Whole seconds, as the API gives them; the cast saturates.
        (self.created_unix + after.as_secs_f64()) as u64
    }

    /// The batch object at `now`.
    pub(super) fn object(&self, now: Instant, step: Duration) -> Value {
        let phase = self.phase(now, step);
        // States reached before a cancel stopped the clock.
        let horizon = steps(self.cancelled_after.unwrap_or(self.elapsed(now)), step);
        let valid = self.valid();
        let at = |k: u32| self.unix(step.saturating_mul(k));
        let when = |reached: bool, k: u32| reached.then(|| at(k));
        let outcome = self.outcome.as_ref();
        let terminal = phase.terminal();
        let total = if valid && (horizon >= 1 || self.cancelled_after.is_some()) {
            self.checked.lines.len() as u64
        } else {
            0
        };
        let usage = outcome.map(|o| o.usage).unwrap_or_default();
        let shows_errors = !valid && phase != Phase::Validating;
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.request.endpoint,
            "model": self.checked.model,
            "input_file_id": self.request.input_file_id,
            "completion_window": self.request.completion_window,
            "status": phase.as_str(),
            "output_file_id": outcome.filter(|_| terminal).and_then(|o| o.output_file_id.clone()),
            "error_file_id": outcome.filter(|_| terminal).and_then(|o| o.error_file_id.clone()),
            "created_at": at(0),
            "in_progress_at": when(valid && horizon >= 1, 1),
            "finalizing_at": when(valid && horizon >= 2, 2),
            "completed_at": when(phase == Phase::Completed, 3),
            "failed_at": when(phase == Phase::Failed, 1),
            "expired_at": when(phase == Phase::Expired, 3),
            "cancelling_at": self.cancelled_after.map(|c| self.unix(c)),
            "cancelled_at": (phase == Phase::Cancelled)
                .then(|| self.cancelled_after.map(|c| self.unix(c.saturating_add(step))))
                .flatten(),
            "expires_at": self.unix(self.request.window),
            "request_counts": {
                "total": total,
                "completed": outcome.map_or(0, |o| o.completed),
                "failed": outcome.map_or(0, |o| o.failed),
            },
            "metadata": self.request.metadata,
            "errors": shows_errors.then(|| json!({"object": "list", "data": self.checked.errors})),
            "usage": terminal.then(|| json!({
                "input_tokens": usage.input,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.output,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning},
                "total_tokens": usage.input + usage.output,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(text: &str, now: Instant) -> Batch {
        let request = Request {
            input_file_id: "file-1".to_owned(),
            endpoint: "/v1/chat/completions".to_owned(),
            style: Style::Chat,
            completion_window: "24h".to_owned(),
            window: Duration::from_secs(86_400),
            metadata: Value::Null,
        };
        Batch::new(
            "batch_1".to_owned(),
            0,
            request,
            Bytes::from(text.to_owned()),
            now,
            1_000.0,
        )
    }

    const LINE: &str = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}"#;

    #[tokio::test(start_paused = true)]
    async fn lifecycle_steps() {
        let step = Duration::from_secs(2);
        let b = batch(LINE, Instant::now());
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(b.phase(Instant::now(), step));
            tokio::time::advance(step).await;
        }
        assert_eq!(
            seen,
            [
                Phase::Validating,
                Phase::InProgress,
                Phase::Finalizing,
                Phase::Completed
            ]
        );
        let o = b.object(Instant::now(), step);
        assert_eq!(o["in_progress_at"], 1_002);
        assert_eq!(o["completed_at"], 1_006);
        assert_eq!(o["expires_at"], 87_400);
        assert_eq!(o["request_counts"]["total"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_fails_and_cancel_takes_a_step() {
        let step = Duration::from_secs(1);
        let bad = batch("{oops", Instant::now());
        assert_eq!(bad.phase(Instant::now(), step), Phase::Validating);
        let mut b = batch(LINE, Instant::now());
        tokio::time::advance(step).await;
        assert_eq!(bad.phase(Instant::now(), step), Phase::Failed);
        assert_eq!(
            bad.object(Instant::now(), step)["errors"]["data"][0]["line"],
            1
        );
        b.cancelled_after = Some(step);
        assert_eq!(b.phase(Instant::now(), step), Phase::Cancelling);
        assert!(b.due(Instant::now(), step));
        tokio::time::advance(step).await;
        let o = b.object(Instant::now(), step);
        assert_eq!(o["status"], "cancelled");
        assert_eq!(o["cancelled_at"], 1_002);
        assert!(o["finalizing_at"].is_null());
    }
}

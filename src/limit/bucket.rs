//! A token bucket on tokio's clock, for `--rpm` and `--tpm`: it can be refunded and can go
//! into debt, since the TPM limit spends an estimate before sending and corrects it later.

use std::time::Duration;

use tokio::time::Instant;

/// How late a bucket's waiter may wake (the timer rounds up to milliseconds, and a busy
/// runtime adds to that) without the lateness slowing the rate: at 250 requests a second, 1 ms
/// lost per request would cost a fifth of the rate.
const LATE_CREDIT: Duration = Duration::from_millis(5);

/// A token bucket on tokio's clock: `rate` tokens per second up to `capacity`. Waiters are
/// served in order (a fair lock is held while one waits), so a limit is spread evenly.
///
/// With capacity C, no one-second window starts more than C + `rate` units, the first second
/// and the second after any pause included. So the buckets hold about one unit: a bucket
/// holding a second's worth lets twice the rate through in the first second, which an endpoint
/// counting a sliding second refuses. The little above one unit is `LATE_CREDIT`'s worth, so
/// that a waiter woken late does not lose its lateness to the rate.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    state: tokio::sync::Mutex<Fill>,
}

#[derive(Debug)]
struct Fill {
    tokens: f64,
    at: Instant,
}

impl Fill {
    fn refill(&mut self, rate: f64, capacity: f64) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(capacity);
        self.at = now;
    }
}

impl Bucket {
    /// A bucket for `per_minute` requests, enforced per second as DashScope does: it refills
    /// at `per_minute / 60` per second, and no one-second window starts more than RPM/60 + 1
    /// of them. Its capacity of one request plus the late credit stays below what would let a
    /// second whole request into any window (C + rate < floor(rate) + 2).
    pub fn requests_per_minute(per_minute: u64) -> Bucket {
        let rate = per_minute as f64 / 60.0;
        let headroom = (1.0 - rate.fract()) / 2.0;
        Bucket::new(rate, 1.0 + (rate * LATE_CREDIT.as_secs_f64()).min(headroom))
    }

    /// A bucket for `per_minute` tokens, enforced per second. A request waits for at most a
    /// full bucket and may leave it in debt, so no one-second window starts more than TPM/60
    /// tokens plus the request at its edge (or plus the capacity, for a request smaller than
    /// it: one token and `LATE_CREDIT`'s worth).
    pub fn tokens_per_minute(per_minute: u64) -> Bucket {
        let rate = per_minute as f64 / 60.0;
        Bucket::new(rate, 1.0 + rate * LATE_CREDIT.as_secs_f64())
    }

    fn new(rate: f64, capacity: f64) -> Bucket {
        Bucket {
            rate,
            capacity,
            state: tokio::sync::Mutex::new(Fill {
                tokens: capacity,
                at: Instant::now(),
            }),
        }
    }

    /// Units per second.
    pub(super) fn rate(&self) -> f64 {
        self.rate
    }

    /// The most units the bucket holds.
    pub(super) fn capacity(&self) -> f64 {
        self.capacity
    }

    /// Waits until `n` units can be spent, then spends them. A request larger than the bucket
    /// waits for a full bucket and leaves it in debt, which later requests pay off.
    pub async fn acquire(&self, n: f64) {
        let mut fill = self.state.lock().await;
        fill.refill(self.rate, self.capacity);
        let need = n.min(self.capacity);
        if fill.tokens < need {
            let wait = (need - fill.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            fill.refill(self.rate, self.capacity);
        }
        fill.tokens -= n;
    }

    /// Corrects an earlier spend: positive `n` spends more (possibly into debt), negative
    /// gives back.
    pub async fn adjust(&self, n: f64) {
        let mut fill = self.state.lock().await;
        fill.refill(self.rate, self.capacity);
        fill.tokens = (fill.tokens - n).min(self.capacity);
    }
}

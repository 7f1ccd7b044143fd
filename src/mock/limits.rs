//! Rate limits of the simulated endpoint, enforced per second as DashScope enforces its RPM and
//! TPM (RPS = RPM/60, TPS = TPM/60): token buckets that hold at most one second's worth, so a
//! burst fails even below the per-minute figure. A request over a limit is answered 429 with
//! `Retry-After` (the wait until it would fit).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits of a server; `None` fields do not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// Requests per second (`--rps`, or `--rpm`/60, whichever is lower).
    pub requests_per_second: Option<f64>,
    /// Tokens (input plus output) per second (`--tpm`/60).
    pub tokens_per_second: Option<f64>,
}

impl RateLimits {
    pub fn new(rpm: Option<u64>, rps: Option<f64>, tpm: Option<u64>) -> RateLimits {
        let from_rpm = rpm.map(|r| r as f64 / 60.0);
        let requests_per_second = match (from_rpm, rps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        RateLimits {
            requests_per_second,
            tokens_per_second: tpm.map(|t| t as f64 / 60.0),
        }
    }

    pub fn active(&self) -> bool {
        self.requests_per_second.is_some() || self.tokens_per_second.is_some()
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
}

impl Bucket {
    fn new(per_second: f64) -> Bucket {
        let capacity = per_second.max(1.0);
        Bucket {
            rate: per_second,
            capacity,
            tokens: capacity,
        }
    }

    fn refill(&mut self, dt: f64) {
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
    }

    /// How long until `n` would fit (zero if it fits now).
    fn wait_for(&self, n: f64) -> Duration {
        let need = n.min(self.capacity) - self.tokens;
        if need <= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(need / self.rate)
        }
    }
}

/// The buckets of a running server.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<(Option<Bucket>, Option<Bucket>, Instant)>,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Limiter {
        Limiter {
            state: Mutex::new((
                limits.requests_per_second.map(Bucket::new),
                limits.tokens_per_second.map(Bucket::new),
                Instant::now(),
            )),
        }
    }

    /// Admits a request of `tokens` tokens, or says how long to wait.
    pub(crate) fn admit(&self, tokens: u64) -> Result<(), Duration> {
        let mut guard = crate::lock(&self.state);
        let (requests, toks, at) = &mut *guard;
        let now = Instant::now();
        let dt = now.duration_since(*at).as_secs_f64();
        *at = now;
        let mut wait = Duration::ZERO;
        if let Some(b) = requests.as_mut() {
            b.refill(dt);
            wait = wait.max(b.wait_for(1.0));
        }
        if let Some(b) = toks.as_mut() {
            b.refill(dt);
            wait = wait.max(b.wait_for(tokens as f64));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = requests.as_mut() {
            b.tokens -= 1.0;
        }
        if let Some(b) = toks.as_mut() {
            b.tokens -= tokens as f64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_s_worth_then_refusals() {
        let l = Limiter::new(RateLimits::new(None, Some(10.0), None));
        for _ in 0..10 {
            assert_eq!(l.admit(0), Ok(()));
        }
        let wait = l.admit(0).err().unwrap_or_default();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn rpm_is_enforced_per_second_and_tokens_too() {
        let limits = RateLimits::new(Some(1200), Some(50.0), Some(6000));
        assert_eq!(limits.requests_per_second, Some(20.0));
        assert_eq!(limits.tokens_per_second, Some(100.0));
        let l = Limiter::new(limits);
        assert_eq!(l.admit(60), Ok(()));
        assert!(l.admit(60).is_err(), "120 tokens in a 100-token second");
    }
}

//! Rate limits of the simulated endpoint, enforced per second as DashScope enforces its RPM and
//! TPM (RPS = RPM/60, TPS = TPM/60): token buckets that hold at most one second's worth, so a
//! burst fails even below the per-minute figure. A request over a limit is answered 429 with
//! `Retry-After` (the wait until it would fit).
//!
//! With [`RateLimits::sliding`] (`mock-server --sliding-window`) the same figures are instead
//! the most requests (tokens) admitted in any sliding second, counted from a log of the last
//! second's admissions: no burst beyond them even at the start, as some gateways enforce.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits of a server; `None` fields do not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// Requests per second (`--rps`, or `--rpm`/60, whichever is lower).
    pub requests_per_second: Option<f64>,
    /// Tokens (input plus output) per second (`--tpm`/60).
    pub tokens_per_second: Option<f64>,
    /// Count what was admitted in any sliding second rather than refill token buckets.
    pub sliding: bool,
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
            sliding: false,
        }
    }

    /// The same limits over any sliding second: at most the per-second figure (rounded down,
    /// at least one request) admitted in any one-second window.
    pub fn sliding(mut self) -> RateLimits {
        self.sliding = true;
        self
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

/// The admissions of the last second, for [`RateLimits::sliding`].
#[derive(Debug)]
struct Window {
    requests: Option<f64>,
    tokens: Option<f64>,
    /// (when, tokens) of each request admitted within the last second, oldest first.
    log: VecDeque<(Instant, u64)>,
}

const SECOND: Duration = Duration::from_secs(1);

impl Window {
    /// How long until a request of `n` tokens would fit (zero if it fits now).
    fn wait_for(&mut self, now: Instant, n: u64) -> Duration {
        while self.log.front().is_some_and(|(at, _)| *at + SECOND <= now) {
            self.log.pop_front();
        }
        let max_requests = self.requests.map(|r| r.floor().max(1.0) as usize);
        let max_tokens = self.tokens.map(|t| t.floor().max(0.0) as u64);
        let mut count = self.log.len();
        let mut sum: u64 = self.log.iter().map(|(_, t)| t).sum();
        // A request larger than the whole limit fits an empty window.
        let fits = |count: usize, sum: u64| {
            max_requests.is_none_or(|m| count < m)
                && max_tokens.is_none_or(|m| count == 0 || sum + n <= m)
        };
        for (at, t) in &self.log {
            if fits(count, sum) {
                break;
            }
            // Once this admission leaves the window.
            let wait = (*at + SECOND).saturating_duration_since(now);
            count -= 1;
            sum -= t;
            if fits(count, sum) {
                return wait;
            }
        }
        Duration::ZERO
    }
}

#[derive(Debug)]
enum State {
    /// Token buckets for requests and tokens, and when they were last refilled.
    Buckets(Option<Bucket>, Option<Bucket>, Instant),
    Sliding(Window),
}

/// The buckets (or the sliding window) of a running server.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
}

impl Limiter {
    pub(crate) fn new(limits: RateLimits) -> Limiter {
        let state = if limits.sliding {
            State::Sliding(Window {
                requests: limits.requests_per_second,
                tokens: limits.tokens_per_second,
                log: VecDeque::new(),
            })
        } else {
            State::Buckets(
                limits.requests_per_second.map(Bucket::new),
                limits.tokens_per_second.map(Bucket::new),
                Instant::now(),
            )
        };
        Limiter {
            state: Mutex::new(state),
        }
    }

    /// Admits a request of `tokens` tokens, or says how long to wait.
    pub(crate) fn admit(&self, tokens: u64) -> Result<(), Duration> {
        let mut guard = crate::sync::lock(&self.state);
        let now = Instant::now();
        let (requests, toks, at) = match &mut *guard {
            State::Buckets(requests, toks, at) => (requests, toks, at),
            State::Sliding(window) => {
                let wait = window.wait_for(now, tokens);
                if !wait.is_zero() {
                    return Err(wait);
                }
                window.log.push_back((now, tokens));
                return Ok(());
            }
        };
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

    #[test]
    fn a_sliding_second_admits_its_figure_in_any_window() {
        let l = Limiter::new(RateLimits::new(None, Some(5.0), None).sliding());
        for _ in 0..5 {
            assert_eq!(l.admit(0), Ok(()));
        }
        let wait = l.admit(0).err().unwrap_or_default();
        assert!(
            wait > Duration::from_millis(900) && wait <= SECOND,
            "the sixth fits once the first leaves the window: {wait:?}"
        );
    }

    #[test]
    fn a_sliding_window_for_tokens_frees_the_oldest_first() {
        let now = Instant::now();
        let mut w = Window {
            requests: None,
            tokens: Some(100.0),
            log: VecDeque::from([
                (now - Duration::from_millis(800), 60),
                (now - Duration::from_millis(300), 30),
            ]),
        };
        assert_eq!(w.wait_for(now, 10), Duration::ZERO);
        assert_eq!(w.wait_for(now, 20), Duration::from_millis(200));
        assert_eq!(w.wait_for(now, 80), Duration::from_millis(700));
        w.log.clear();
        assert_eq!(w.wait_for(now, 500), Duration::ZERO, "alone, any size fits");
    }
}

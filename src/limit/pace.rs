//! The pace learned from 429s: when the endpoint's limit is unknown, attempts are spaced at a
//! rate under what it admitted over the last second (see the `limit` module's header).

use std::time::Duration;

use tokio::time::Instant;

/// Successes are counted in slots of this length, over [`PACE_SLOTS`] of them (one second).
const PACE_SLOT: Duration = Duration::from_millis(100);
const PACE_SLOTS: usize = 10;
/// The slowest pace a run falls to.
pub(super) const MIN_PACE: f64 = 0.2;
/// 429s slow the pace and the window only when at least this share of the last second's
/// answers, and at least [`RATE_LIMITED_MIN`] of them, were 429s: a rare 429 is noise (or a
/// neighbour's burst), not our rate.
const RATE_LIMITED_SHARE: f64 = 0.25;
const RATE_LIMITED_MIN: f64 = 3.0;

/// The pace learned from 429s.
#[derive(Debug)]
pub(super) struct Pace {
    /// Attempts per second; `None` until the first 429.
    pub(super) rate: Option<f64>,
    /// When the next attempt may start.
    pub(super) next: Instant,
    /// Per slot: (slot number since `origin`, attempts admitted (anything but a 429), 429s),
    /// a ring over the last second.
    slots: [(u64, u32, u32); PACE_SLOTS],
    origin: Instant,
    /// The most attempts admitted in any second so far: the pace never falls below half of
    /// it, so 429s that do not come from our own rate (another job on the same account, a
    /// flaky gateway) cannot spiral a run down to a crawl.
    peak: f64,
}

impl Pace {
    pub(super) fn new() -> Pace {
        let now = Instant::now();
        Pace {
            rate: None,
            next: now,
            slots: [(0, 0, 0); PACE_SLOTS],
            origin: now,
            peak: 0.0,
        }
    }

    fn slot_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / PACE_SLOT.as_nanos()) as u64
    }

    pub(super) fn count(&mut self, now: Instant, limited: bool) {
        let n = self.slot_of(now);
        let i = (n % PACE_SLOTS as u64) as usize;
        if self.slots[i].0 != n {
            // A new slot: the second that just ended is complete.
            let admitted = self.last_second(now).0;
            self.peak = self.peak.max(admitted);
            self.slots[i] = (n, 0, 0);
        }
        let slot = &mut self.slots[i];
        if limited {
            slot.2 += 1;
        } else {
            slot.1 += 1;
            if self.rate.is_some() {
                // About 5% per second while 429s keep coming, 20% after a quiet second.
                let step = if self.last_second(now).1 > 0.0 {
                    0.05
                } else {
                    0.2
                };
                self.rate = self.rate.map(|r| r + step);
            }
        }
    }

    /// (answers, 429s) over the last second, the current slot included.
    fn last_second(&self, now: Instant) -> (f64, f64) {
        let n = self.slot_of(now);
        self.slots
            .iter()
            .filter(|(k, _, _)| *k <= n && *k + PACE_SLOTS as u64 > n)
            .fold((0.0, 0.0), |(a, l), (_, c, r)| {
                (a + f64::from(*c), l + f64::from(*r))
            })
    }

    /// Whether enough of the last second's answers were 429s to slow down.
    pub(super) fn overloaded(&self, now: Instant) -> bool {
        let (ok, limited) = self.last_second(now);
        limited >= RATE_LIMITED_MIN && limited >= RATE_LIMITED_SHARE * (ok + limited)
    }

    /// Answers over the last second (the current slot included). Early in a run this is
    /// less than a second's worth, which errs on the slow side: DashScope admits about one
    /// second's worth of requests in a burst, so the answers before the first 429 are about
    /// its per-second limit.
    fn answer_rate(&self, now: Instant) -> f64 {
        self.last_second(now).0
    }

    /// After a 429: 90% of the recent answer rate, and never faster than before. With no
    /// answers yet there is no rate to learn from; the window and the cool-down act alone.
    pub(super) fn slow_down(&mut self, now: Instant) {
        let measured = 0.9 * self.answer_rate(now);
        let r = match self.rate {
            Some(old) if measured > 0.0 => measured.min(0.9 * old),
            Some(old) => 0.9 * old,
            None if measured > 0.0 => measured,
            None => return,
        };
        self.rate = Some(r.max(0.5 * self.peak).max(MIN_PACE));
    }
}

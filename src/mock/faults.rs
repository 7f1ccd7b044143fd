//! Fault injection for the mock: the `--faults` spec parser and the per-request draw,
//! including the per-body attempt counter behind `fault_attempts`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sync::lock;

use super::text::fnv1a64;

/// Per-request probabilities of each injected fault; see [`FaultRates::parse`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRates {
    /// HTTP 429 `limit_requests` with retry-after headers.
    pub rate_limit: f64,
    /// HTTP 500 `internal_error`.
    pub server_error: f64,
    /// HTTP 503 with an HTML gateway page.
    pub unavailable: f64,
    /// Connection reset without any response.
    pub reset: f64,
    /// HTTP 200 whose body is not valid JSON.
    pub malformed: f64,
    /// HTTP 200 whose body stops halfway, then the connection closes.
    pub truncated: f64,
    /// Nothing is sent for `MockConfig::hang`, then the connection closes.
    pub hang: f64,
}

impl FaultRates {
    /// Parses "429=0.05,500=0.05,503=0.05,reset=0.05,malformed=0.05,truncated=0.05,hang=0.01"
    /// (any subset, any order; also accepts the long names rate_limit/server_error/unavailable).
    /// An empty spec means no faults. Errors name the bad part. Sum must be <= 1.
    pub fn parse(spec: &str) -> Result<FaultRates, String> {
        let mut rates = FaultRates::default();
        let mut seen = [false; 7];
        for part in spec.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "fault spec part `{part}`: expected NAME=RATE, e.g. 429=0.05"
                ));
            };
            let key = key.trim();
            let value = value.trim();
            let (slot, field) = match key.to_ascii_lowercase().as_str() {
                "429" | "rate_limit" => (0, &mut rates.rate_limit),
                "500" | "server_error" => (1, &mut rates.server_error),
                "503" | "unavailable" => (2, &mut rates.unavailable),
                "reset" => (3, &mut rates.reset),
                "malformed" => (4, &mut rates.malformed),
                "truncated" => (5, &mut rates.truncated),
                "hang" => (6, &mut rates.hang),
                _ => {
                    return Err(format!(
                        "fault spec part `{part}`: unknown fault `{key}` (expected 429, 500, 503, \
                         reset, malformed, truncated or hang)"
                    ));
                }
            };
            if seen[slot] {
                return Err(format!("fault spec part `{part}`: `{key}` is given twice"));
            }
            seen[slot] = true;
            let rate: f64 = value
                .parse()
                .map_err(|_| format!("fault spec part `{part}`: `{value}` is not a number"))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "fault spec part `{part}`: rate {value} is outside 0..=1"
                ));
            }
            *field = rate;
        }
        let total = rates.total();
        if total > 1.0 + 1e-9 {
            return Err(format!(
                "fault spec `{spec}`: the rates add up to {total}, more than 1"
            ));
        }
        Ok(rates)
    }

    /// The sum of all rates: the chance that a request gets some fault.
    pub fn total(&self) -> f64 {
        self.as_array().iter().sum()
    }

    fn as_array(&self) -> [f64; 7] {
        [
            self.rate_limit,
            self.server_error,
            self.unavailable,
            self.reset,
            self.malformed,
            self.truncated,
            self.hang,
        ]
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    RateLimit,
    ServerError,
    Unavailable,
    Reset,
    Malformed,
    Truncated,
    Hang,
}

const FAULTS: [Fault; 7] = [
    Fault::RateLimit,
    Fault::ServerError,
    Fault::Unavailable,
    Fault::Reset,
    Fault::Malformed,
    Fault::Truncated,
    Fault::Hang,
];

/// Draws faults: one uniform draw per eligible request against the cumulative rates.
pub(crate) struct FaultPicker {
    cumulative: [f64; 7],
    attempts_limit: u32,
    rng: Mutex<fastrand::Rng>,
    seen: Mutex<HashMap<u64, u32>>,
}

impl FaultPicker {
    pub(crate) fn new(rates: &FaultRates, attempts_limit: u32, seed: Option<u64>) -> FaultPicker {
        let mut cumulative = [0.0; 7];
        let mut sum = 0.0;
        for (c, r) in cumulative.iter_mut().zip(rates.as_array()) {
            sum += r;
            *c = sum;
        }
        FaultPicker {
            cumulative,
            attempts_limit,
            rng: Mutex::new(seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any fault can ever be drawn.
    pub(crate) fn active(&self) -> bool {
        self.cumulative[6] > 0.0
    }

    /// The fault for a request with this exact body, if any.
    pub(crate) fn pick(&self, body: &[u8]) -> Option<Fault> {
        if self.attempts_limit > 0 {
            let h = fnv1a64(body);
            let mut seen = lock(&self.seen);
            let count = seen.entry(h).or_insert(0);
            *count = count.saturating_add(1);
            if *count > self.attempts_limit {
                return None;
            }
        }
        let r = lock(&self.rng).f64();
        self.cumulative
            .iter()
            .position(|&c| r < c)
            .map(|i| FAULTS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_cumulative_rate() {
        let rates = FaultRates {
            hang: 1.0,
            ..FaultRates::default()
        };
        let p = FaultPicker::new(&rates, 0, Some(1));
        assert_eq!(p.pick(b"x"), Some(Fault::Hang));
        let none = FaultPicker::new(&FaultRates::default(), 0, Some(1));
        assert!(!none.active());
        assert_eq!(none.pick(b"x"), None);
    }

    #[test]
    fn fault_rates_parse() {
        let all = FaultRates::parse(
            "429=0.05,500=0.05,503=0.05,reset=0.05,malformed=0.05,truncated=0.05,hang=0.01",
        )
        .expect("full spec");
        assert_eq!(
            all,
            FaultRates {
                rate_limit: 0.05,
                server_error: 0.05,
                unavailable: 0.05,
                reset: 0.05,
                malformed: 0.05,
                truncated: 0.05,
                hang: 0.01,
            }
        );
        assert!((all.total() - 0.31).abs() < 1e-12);
        let long =
            FaultRates::parse(" hang=0.1 , rate_limit=0.2,server_error=0.3,unavailable=0.4 ")
                .expect("long names");
        assert_eq!(
            long,
            FaultRates {
                rate_limit: 0.2,
                server_error: 0.3,
                unavailable: 0.4,
                hang: 0.1,
                ..FaultRates::default()
            }
        );
        assert_eq!(FaultRates::parse("").expect("empty"), FaultRates::default());
        assert_eq!(FaultRates::default().total(), 0.0);

        for (spec, needle) in [
            ("429=0.1,bogus=0.1", "bogus"),
            ("429", "`429`"),
            ("500=abc", "abc"),
            ("503=1.5", "503=1.5"),
            ("reset=-0.1", "reset=-0.1"),
            ("429=0.6,500=0.6", "more than 1"),
            ("hang=0.1,hang=0.2", "hang=0.2"),
        ] {
            let err = FaultRates::parse(spec).expect_err(spec);
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }
}

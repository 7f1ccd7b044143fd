//! How a mock endpoint behaves: delays, faults, rate limits, the key it asks for and the pace
//! of its Batch API.

use std::time::Duration;

use super::faults::FaultRates;
use super::limits::RateLimits;

/// How the mock endpoint behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Fixed delay before answering (default 0).
    pub latency: Duration,
    /// Plus a uniform random delay in `0..=jitter` (default 0).
    pub jitter: Duration,
    /// Fault probabilities (default: all zero).
    pub faults: FaultRates,
    /// 0: faults may hit any attempt. N > 0: faults only on the first N times a given request
    /// body (exact bytes) is seen; later ones always succeed.
    pub fault_attempts: u32,
    /// Sent with 429s as `retry-after-ms` and `retry-after` (seconds, rounded up). Default 1s.
    pub retry_after: Duration,
    /// How long a "hang" fault holds the request before dropping the connection (default 1h).
    pub hang: Duration,
    /// Seed for the fault draws (random if `None`).
    pub seed: Option<u64>,
    /// Requests and tokens per second the endpoint admits (default: unlimited).
    pub limits: RateLimits,
    /// When set, requests must carry `Authorization: Bearer <key>`; others get 401
    /// `invalid_api_key` (native `InvalidApiKey`), counted as `bad_requests`.
    pub api_key: Option<String>,
    /// How long a batch stays in each state of its lifecycle (default 1s).
    pub batch_step: Duration,
    /// Fault rates of the Files and Batches calls; only 429, 500 and 503 apply (default: none).
    pub batch_faults: FaultRates,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: FaultRates::default(),
            fault_attempts: 0,
            retry_after: Duration::from_secs(1),
            hang: Duration::from_secs(3600),
            seed: None,
            limits: RateLimits::default(),
            api_key: None,
            batch_step: Duration::from_secs(1),
            batch_faults: FaultRates::default(),
        }
    }
}

//! `--limits-redis`: the `--rpm`/`--tpm` buckets and the 429 cool-down kept in Redis, so that
//! every process with the same `--limits-key` draws on one budget.
//!
//! Each grant is one atomic Lua script on the Redis server's clock (`TIME`), so processes on
//! machines whose clocks disagree still share one timeline. The script is a token bucket with
//! the semantics of [`super::Bucket`] (the same rate and capacity, about one unit of burst, debt
//! and refunds), but it reserves rather than waits: it answers how long the caller must sleep
//! and books the units for then, so a grant costs one round trip however long the wait is, and
//! callers are served in the order they reached Redis.
//!
//! When Redis stops answering, each process goes on with local buckets at 1/N of the budget
//! (N: the number of shards), says so once, and probes Redis in the background until it
//! answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Bucket;
use crate::printer::say;
use crate::sync::lock;

/// One grant, refund or cool-down. KEYS: the bucket, the cool-down. ARGV: mode (`take`,
/// `adjust`, `pause`), rate per second, capacity, units (seconds for `pause`). Answers the
/// seconds to wait before the units may be spent (`take`), else 0. Times are seconds on the
/// server's clock, written with microseconds (`%.6f`: `tostring` keeps only 14 digits).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]
local rate, cap, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if mode == 'pause' then
  local untl = now + n
  if untl > pause then
    redis.call('SET', KEYS[2], string.format('%.6f', untl), 'PX', math.ceil(n * 1000) + 1000)
  end
  return '0'
end
local start = now
if mode == 'take' and pause > now then start = pause end
if rate <= 0 then return string.format('%.6f', start - now) end
local st = redis.call('HMGET', KEYS[1], 't', 'a')
local tokens, at = tonumber(st[1]), tonumber(st[2])
if tokens == nil or at == nil then tokens, at = cap, start end
tokens = math.min(tokens + (start - at) * rate, cap)
if mode == 'adjust' then
  tokens = math.min(tokens - n, cap)
else
  local need = math.min(n, cap)
  if tokens < need then
    start = start + (need - tokens) / rate
    tokens = need
  end
  tokens = tokens - n
end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'a', string.format('%.6f', start))
redis.call('EXPIRE', KEYS[1], 600)
return string.format('%.6f', start - now)
";

/// How long one round trip may take before Redis counts as lost.
const ROUND_TRIP: Duration = Duration::from_secs(1);
/// How often a process that lost Redis asks it again.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The Redis end of the shared limits, one per run.
#[derive(Debug)]
pub struct Remote {
    /// Reconnects by itself; cloned per call (a handle on one multiplexed connection).
    conn: ConnectionManager,
    script: redis::Script,
    /// The keys' common prefix (`--limits-key`).
    key: String,
    /// The URL without its password, for messages.
    url: String,
    /// Local buckets hold 1/`shards` of the budget while Redis is lost.
    shards: u64,
    /// Set while Redis does not answer: grants come from the local buckets, and one probe
    /// task asks Redis until it answers again.
    lost: Arc<AtomicBool>,
}

impl Remote {
    /// Connects to `url` and checks that it answers (one `PING`); the message names the URL.
    pub async fn connect(url: &str, key: &str, shards: u64) -> Result<Arc<Remote>, String> {
        let shown = redact(url);
        let fail = |e: &dyn std::fmt::Display| format!("--limits-redis {shown}: {e}");
        let client = redis::Client::open(url).map_err(|e| fail(&e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ROUND_TRIP))
            .set_response_timeout(Some(ROUND_TRIP))
            .set_number_of_retries(1)
            .set_max_delay(PROBE_EVERY);
        let conn = tokio::time::timeout(
            ROUND_TRIP * 3,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| fail(&"no answer"))?
        .map_err(|e| fail(&e))?;
        let remote = Remote {
            conn,
            script: redis::Script::new(SCRIPT),
            key: key.to_string(),
            url: shown.clone(),
            shards: shards.max(1),
            lost: Arc::new(AtomicBool::new(false)),
        };
        ping(&remote.conn).await.map_err(|e| fail(&e))?;
        Ok(Arc::new(remote))
    }

    /// The processes that share the budget (`--shard`'s N, 1 without).
    pub fn shards(&self) -> u64 {
        self.shards
    }

    /// Runs the script on the bucket `name`; the seconds to wait.
    async fn call(&self, mode: &str, name: &str, rate: f64, capacity: f64, n: f64) -> Option<f64> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}:{name}", self.key))
            .key(format!("{}:pause", self.key))
            .arg(mode)
            .arg(rate)
            .arg(capacity)
            .arg(n);
        let answer = tokio::time::timeout(ROUND_TRIP, invocation.invoke_async::<String>(&mut conn))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        match answer.ok().and_then(|s| s.parse::<f64>().ok()) {
            Some(wait) => Some(wait.max(0.0)),
            None => {
                self.lose();
                None
            }
        }
    }

    /// Holds every process's new attempts for `d` (never shortens a longer cool-down).
    pub(super) async fn pause_for(&self, d: Duration) {
        if !self.lost.load(Relaxed) {
            self.call("pause", "pause", 0.0, 0.0, d.as_secs_f64()).await;
        }
    }

    /// Waits out the shared cool-down (for a run with neither `--rpm` nor `--tpm`).
    pub(super) async fn wait_pause(&self) {
        if self.lost.load(Relaxed) {
            return;
        }
        if let Some(wait) = self.call("take", "none", 0.0, 0.0, 0.0).await {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    /// Marks Redis lost, says so, and starts the one task that asks it until it answers.
    fn lose(&self) {
        if self.lost.swap(true, Relaxed) {
            return;
        }
        say(format_args!(
            "warning: --limits-redis {} does not answer: going on with local limits at 1/{} of \
             the budget until it does",
            self.url, self.shards
        ));
        let probe = Probe {
            conn: self.conn.clone(),
            url: self.url.clone(),
        };
        let lost = self.lost.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if probe.answers().await {
                    break;
                }
            }
            say(format_args!(
                "--limits-redis {} answers again: the budget is shared again",
                probe.url
            ));
            lost.store(false, Relaxed);
        });
    }
}

/// What the probe task needs: its own handle on the connection.
struct Probe {
    conn: ConnectionManager,
    url: String,
}

impl Probe {
    async fn answers(&self) -> bool {
        ping(&self.conn).await.is_ok()
    }
}

/// One `PING`, within [`ROUND_TRIP`].
async fn ping(conn: &ConnectionManager) -> redis::RedisResult<()> {
    let mut conn = conn.clone();
    let cmd = redis::cmd("PING");
    match tokio::time::timeout(ROUND_TRIP, cmd.query_async::<String>(&mut conn)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer",
    ))
}

/// A Redis URL without the password of its user part.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A bucket shared through Redis, with the local bucket it falls back on.
#[derive(Debug)]
pub struct SharedBucket {
    remote: Arc<Remote>,
    /// `rpm` or `tpm`: the last part of the key.
    name: &'static str,
    rate: f64,
    capacity: f64,
    /// 1/N of the budget, used while Redis is lost.
    fallback: Bucket,
    /// The end of the latest grant Redis booked for this process: workers still sleep on
    /// grants up to then, which spend this process's share of the budget until then, so the
    /// local bucket starts after it (else a loss would double the pace for that long).
    booked_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl SharedBucket {
    pub(super) fn new(
        remote: Arc<Remote>,
        name: &'static str,
        whole: Bucket,
        part: Bucket,
    ) -> Self {
        SharedBucket {
            remote,
            name,
            rate: whole.rate(),
            capacity: whole.capacity(),
            fallback: part,
            booked_until: std::sync::Mutex::new(None),
        }
    }

    pub(super) async fn acquire(&self, n: f64) {
        if !self.remote.lost.load(Relaxed)
            && let Some(wait) = self
                .remote
                .call("take", self.name, self.rate, self.capacity, n)
                .await
        {
            let at = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
            {
                let mut booked = lock(&self.booked_until);
                if booked.is_none_or(|b| b < at) {
                    *booked = Some(at);
                }
            }
            tokio::time::sleep_until(at).await;
            return;
        }
        let booked = *lock(&self.booked_until);
        if let Some(at) = booked {
            tokio::time::sleep_until(at).await;
        }
        self.fallback.acquire(n).await;
    }

    pub(super) async fn adjust(&self, n: f64) {
        if !self.remote.lost.load(Relaxed)
            && self
                .remote
                .call("adjust", self.name, self.rate, self.capacity, n)
                .await
                .is_some()
        {
            return;
        }
        self.fallback.adjust(n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

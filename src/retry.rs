//! Error classes and the retry policy: which failures are retried, which stop the run, and how
//! long to wait (exponential backoff with full jitter, or the server's `Retry-After`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hyper::header::HeaderMap;
use serde::Serialize;

/// The error kinds of the output records (`error.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    RateLimit,
    Server,
    Timeout,
    Network,
    InvalidRequest,
    Auth,
    Billing,
    ContentFilter,
    InvalidOutput,
    InvalidInput,
    BadResponse,
    /// A provider batch ended (expired or cancelled) before the row ran.
    Expired,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimit => "rate_limit",
            ErrorKind::Server => "server",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Auth => "auth",
            ErrorKind::Billing => "billing",
            ErrorKind::ContentFilter => "content_filter",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Expired => "expired",
        }
    }
}

/// Why one attempt failed, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub http_status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
    /// What the server asked us to wait before the next attempt.
    pub retry_after: Option<Duration>,
    pub retryable: bool,
    /// The same error would fail every row (bad key, permission, billing): stop the run.
    pub fatal: bool,
    /// The request reached the server and its answer was lost: it may have been billed.
    pub possibly_billed: bool,
    /// The model answers only streaming requests (or only streams in thinking mode).
    pub needs_stream: bool,
    /// The attempt was never sent (`--max-cost`): the row gets no record.
    pub unsent: bool,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        let retryable = matches!(
            kind,
            ErrorKind::RateLimit
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Network
                | ErrorKind::BadResponse
        );
        Failure {
            kind,
            http_status: None,
            code: None,
            message: message.into(),
            retry_after: None,
            retryable,
            fatal: matches!(kind, ErrorKind::Auth | ErrorKind::Billing),
            possibly_billed: false,
            needs_stream: false,
            unsent: false,
        }
    }

    pub fn billed(mut self) -> Failure {
        self.possibly_billed = true;
        self
    }
}

/// The longest server-requested wait we honour; a larger `Retry-After` is clamped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Reads `retry-after-ms`, then `retry-after` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let wait = if let Some(ms) = text("retry-after-ms").and_then(|t| t.trim().parse::<f64>().ok()) {
        Duration::try_from_secs_f64(ms / 1000.0).ok()?
    } else {
        let t = text("retry-after")?.trim();
        match t.parse::<f64>() {
            Ok(secs) => Duration::try_from_secs_f64(secs).ok()?,
            Err(_) => {
                let at = httpdate::parse_http_date(t).ok()?;
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            }
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Parses the duration form of OpenAI's `x-ratelimit-reset-*` headers: `12ms`, `1s`, `6m0s`,
/// `1h2m3.5s`, or a bare number of seconds.
pub fn parse_reset(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[u_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The error fields of a body: OpenAI's `{"error":{code,type,message}}` or DashScope native
/// `{code,message,request_id}`. A body that is not JSON yields a short description of it.
pub fn error_fields(body: &[u8]) -> (Option<String>, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, describe_non_json(body));
    };
    let text = |v: Option<&serde_json::Value>| -> Option<String> {
        match v? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let (code, message) = match v.get("error") {
        Some(e @ serde_json::Value::Object(_)) => (
            text(e.get("code")).or_else(|| text(e.get("type"))),
            text(e.get("message")),
        ),
        Some(serde_json::Value::String(s)) => (None, Some(s.clone())),
        _ => (
            text(v.get("code")),
            text(v.get("message")).or_else(|| text(v.get("msg"))),
        ),
    };
    (
        code,
        message.unwrap_or_else(|| "no message in the error body".to_string()),
    )
}

fn describe_non_json(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    let lower = text.to_ascii_lowercase();
    if let (Some(a), Some(b)) = (lower.find("<title>"), lower.find("</title>"))
        && a + 7 <= b
    {
        return format!("non-JSON (HTML) body: {}", text[a + 7..b].trim());
    }
    let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let snippet: String = snippet.chars().take(120).collect();
    if snippet.is_empty() {
        "empty body".to_string()
    } else {
        format!("non-JSON body: {snippet}")
    }
}

/// Messages (lower case) of a 400 that a streaming request would not get: models that only
/// stream, and open-source hybrids whose default thinking mode needs a stream.
const NEEDS_STREAM: [&str; 3] = [
    "only support stream mode",
    "must be set to false for non-streaming calls",
    "does not support http call",
];

/// Classifies an error answer by status, code and message (DashScope and OpenAI share some
/// codes with different meanings; `openai` says which provider answered).
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], openai: bool) -> Failure {
    let (code, message) = error_fields(body);
    let c = code.as_deref().unwrap_or("").to_ascii_lowercase();
    let m = message.to_ascii_lowercase();
    let kind = if c.contains("data_inspection_failed") || c.contains("datainspectionfailed") {
        ErrorKind::ContentFilter
    } else if matches!(
        c.as_str(),
        "arrearage"
            | "prepaidbilloverdue"
            | "postpaidbilloverdue"
            | "commoditynotpurchased"
            | "allocationquota.freetieronly"
    ) || m.contains("free allocated quota exceeded")
        || (c == "insufficient_quota" && openai)
    {
        ErrorKind::Billing
    } else {
        match status {
            401 | 403 => ErrorKind::Auth,
            429 => ErrorKind::RateLimit,
            408 => ErrorKind::Timeout,
            409 | 500..=599 => ErrorKind::Server,
            200..=299 => ErrorKind::BadResponse,
            _ => ErrorKind::InvalidRequest,
        }
    };
    let needs_stream = status == 400 && NEEDS_STREAM.iter().any(|s| m.contains(s));
    let mut f = Failure::new(kind, message);
    f.needs_stream = needs_stream;
    f.http_status = Some(status);
    f.code = code;
    f.retry_after = retry_after(headers);
    if !f.fatal {
        match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
            Some("true") => f.retryable = true,
            Some("false") => f.retryable = false,
            _ => {}
        }
    }
    f
}

/// The backoff schedule: exponential from `first`, doubling up to `max`, at most `retries`
/// waits. Full jitter is applied per wait by [`next_wait`].
pub fn policy(first: Duration, max: Duration, retries: u32) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_max_times(retries as usize)
}

/// The wait before the next attempt: the server's `Retry-After` when it gave one, but never
/// less than `floor` (`--retry-delay`), so that `Retry-After: 0` cannot turn backoff off;
/// otherwise a uniformly random share of the exponential step (full jitter). An answer that
/// failed the structured-output check asks for a new sample at once (its own zero wait, not
/// the server's). `None` ends the retries.
pub fn next_wait(failure: &Failure, step: Option<Duration>, floor: Duration) -> Option<Duration> {
    let step = step?;
    Some(match failure.retry_after {
        Some(hint) if failure.kind == ErrorKind::InvalidOutput => hint,
        Some(hint) => hint.max(floor),
        None => step.mul_f64(fastrand::f64()),
    })
}

/// The backoff sleep of a row, `Retry-After` included: it ends early when `stop` is cancelled,
/// and the attempt after it then finds the run stopped and is not sent.
#[derive(Debug, Clone)]
pub struct StopSleeper(pub tokio_util::sync::CancellationToken);

impl backon::Sleeper for StopSleeper {
    type Sleep = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    fn sleep(&self, d: Duration) -> Self::Sleep {
        let stop = self.0.clone();
        Box::pin(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(d) => {}
            }
        })
    }
}

/// The exponential steps of a policy, for tests and documentation.
pub fn steps(first: Duration, max: Duration, retries: u32) -> Vec<Duration> {
    policy(first, max, retries).build().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    /// A header map from pairs (also used by the client's tests).
    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(*k, v);
            }
        }
        h
    }

    #[test]
    fn steps_double_up_to_the_cap() {
        let s = steps(Duration::from_millis(500), Duration::from_secs(4), 6);
        let ms: Vec<u128> = s.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![500, 1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn full_jitter_stays_within_the_step() {
        let f = Failure::new(ErrorKind::Server, "x");
        for _ in 0..1000 {
            let w = next_wait(&f, Some(Duration::from_secs(2)), Duration::from_millis(500))
                .unwrap_or_default();
            assert!(w <= Duration::from_secs(2));
        }
        assert_eq!(next_wait(&f, None, Duration::ZERO), None);
    }

    #[test]
    fn a_server_hint_never_goes_below_the_backoff_floor() {
        let floor = Duration::from_millis(500);
        let step = Some(Duration::from_secs(4));
        let mut f = Failure::new(ErrorKind::RateLimit, "x");
        for hint in [0, 1, 499] {
            f.retry_after = Some(Duration::from_millis(hint));
            assert_eq!(next_wait(&f, step, floor), Some(floor), "{hint} ms");
        }
        f.retry_after = Some(Duration::from_secs(2));
        assert_eq!(next_wait(&f, step, floor), Some(Duration::from_secs(2)));
        let mut resample = Failure::new(ErrorKind::InvalidOutput, "not JSON");
        resample.retry_after = Some(Duration::ZERO);
        assert_eq!(next_wait(&resample, step, floor), Some(Duration::ZERO));
    }

    /// A row's retries under the real policy, with a stop one second in: the wait before the
    /// second attempt ends then. Returns when the retries ended and the attempts made.
    async fn retries_until_a_stop(f: Failure, first: Duration) -> (Duration, u32) {
        use backon::Retryable;
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            s.cancel();
        });
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let attempt = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if stop.is_cancelled() {
                // As the row's attempt does: a stopped run sends nothing.
                let mut unsent = Failure::new(ErrorKind::Billing, "not sent");
                unsent.retryable = false;
                return Err::<(), _>(unsent);
            }
            Err(f.clone())
        };
        let result = attempt
            .retry(policy(first, Duration::from_secs(600), 6))
            .when(|f: &Failure| f.retryable)
            .sleep(StopSleeper(stop.clone()))
            .adjust(|f, step| next_wait(f, step, first))
            .await;
        assert!(result.is_err_and(|f| !f.retryable));
        (start.elapsed(), attempts.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_long_retry_after() {
        let mut f = Failure::new(ErrorKind::RateLimit, "slow down");
        f.retry_after = Some(MAX_RETRY_AFTER);
        let (took, attempts) = retries_until_a_stop(f, Duration::from_millis(500)).await;
        assert_eq!(took, Duration::from_secs(1));
        assert_eq!(attempts, 2, "the one after the stop sends nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_backoff_sleep() {
        // A first step of ten minutes: any jittered share of it outlasts the second.
        let (took, attempts) = retries_until_a_stop(
            Failure::new(ErrorKind::Server, "busy"),
            Duration::from_secs(600),
        )
        .await;
        assert!(took <= Duration::from_secs(1), "{took:?}");
        assert_eq!(attempts, 2);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "100000")])),
            Some(MAX_RETRY_AFTER)
        );
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(&headers(&[("retry-after", &soon)])).unwrap_or_default();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn reset_durations() {
        assert_eq!(parse_reset("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_reset("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_reset("soon"), None);
    }

    #[test]
    fn dashscope_traps() {
        let h = HeaderMap::new();
        let tpm = br#"{"error":{"code":"insufficient_quota","message":"You exceeded your current quota"}}"#;
        let f = classify(429, &h, tpm, false);
        assert_eq!(
            (f.kind, f.retryable, f.fatal),
            (ErrorKind::RateLimit, true, false)
        );
        let f = classify(429, &h, tpm, true);
        assert_eq!((f.kind, f.fatal), (ErrorKind::Billing, true));
        let free =
            br#"{"code":"Throttling.AllocationQuota","message":"Free allocated quota exceeded."}"#;
        assert_eq!(classify(429, &h, free, false).kind, ErrorKind::Billing);
        let tpm2 = br#"{"code":"Throttling.AllocationQuota","message":"Allocated quota exceeded"}"#;
        assert_eq!(classify(429, &h, tpm2, false).kind, ErrorKind::RateLimit);
        let moderated = br#"{"error":{"code":"data_inspection_failed","message":"Input data may contain inappropriate content."}}"#;
        let f = classify(400, &h, moderated, false);
        assert_eq!((f.kind, f.retryable), (ErrorKind::ContentFilter, false));
        let arrears = br#"{"error":{"code":"Arrearage","type":"Arrearage","message":"overdue"}}"#;
        assert_eq!(classify(400, &h, arrears, false).kind, ErrorKind::Billing);
        let key = br#"{"error":{"code":"invalid_api_key","message":"Incorrect API key"}}"#;
        let f = classify(401, &h, key, false);
        assert_eq!((f.kind, f.fatal), (ErrorKind::Auth, true));
    }

    #[test]
    fn html_pages_and_statuses() {
        let h = HeaderMap::new();
        let page = b"<html><head><title>503 Service Temporarily Unavailable</title></head></html>";
        let f = classify(503, &h, page, false);
        assert_eq!((f.kind, f.retryable), (ErrorKind::Server, true));
        assert!(f.message.contains("503 Service Temporarily Unavailable"));
        let f = classify(
            400,
            &h,
            br#"{"error":{"code":"invalid_parameter_error","message":"bad"}}"#,
            false,
        );
        assert_eq!((f.kind, f.retryable), (ErrorKind::InvalidRequest, false));
        assert_eq!(f.code.as_deref(), Some("invalid_parameter_error"));
        assert!(classify(408, &h, b"", false).retryable);
        let stream_only = br#"{"error":{"code":"invalid_parameter_error","message":"This model only support stream mode, please enable the stream parameter to access the model."}}"#;
        let f = classify(400, &h, stream_only, false);
        assert!(f.needs_stream && !f.retryable);
        let thinking = br#"{"code":"InvalidParameter","message":"parameter.enable_thinking must be set to false for non-streaming calls"}"#;
        assert!(classify(400, &h, thinking, false).needs_stream);
        assert!(classify(409, &h, b"", false).retryable);
        let no = headers(&[("x-should-retry", "false")]);
        assert!(!classify(500, &no, b"", false).retryable);
    }
}

//! Durations as the flags take them: humantime text or a bare number of seconds, and
//! `--deadline`'s RFC 3339 time.

use std::time::{Duration, SystemTime};

use super::{ConfigError, bad};

/// The longest duration any flag takes. Longer ones are typos, and would overflow the clock
/// when added to the present.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `--deadline`: a duration from now, or an RFC 3339 time (which must be in the future).
pub fn parse_deadline(text: &str, now: SystemTime) -> Result<Duration, ConfigError> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text.trim()) {
        let d = at
            .duration_since(now)
            .map_err(|_| bad(format!("--deadline {text} has already passed")))?;
        if d > MAX_DURATION {
            return Err(bad(format!("--deadline {text} is more than 365 days away")));
        }
        return Ok(d);
    }
    let d = parse_duration("deadline", text)?;
    if d.is_zero() {
        return Err(bad("--deadline must be in the future"));
    }
    Ok(d)
}

/// Parses a duration flag: humantime (`90s`, `2m`, `500ms`) or a bare number of seconds, at
/// most [`MAX_DURATION`].
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        }
        _ => humantime::parse_duration(t).map_err(|e| {
            bad(format!(
                "--{flag}: `{text}` is not a duration ({e}); use e.g. 30s, 2m or 500ms"
            ))
        })?,
    };
    if d > MAX_DURATION {
        return Err(bad(format!(
            "--{flag}: `{text}` is too long: at most 365 days"
        )));
    }
    Ok(d)
}

/// A duration flag's value, or its default when unset.
pub(super) fn or_default(
    flag: &str,
    text: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    parse_duration(flag, text.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_bare_seconds() {
        assert_eq!(
            parse_duration("timeout", "90").ok(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("timeout", "2m").ok(),
            Some(Duration::from_secs(120))
        );
        assert!(parse_duration("timeout", "soon").is_err());
        assert!(parse_duration("timeout", "365d").is_ok());
        for huge in ["1e20", "366d", "1e300", "600000000000y"] {
            let e = parse_duration("timeout", huge)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(e.is_err_and(|e| e.contains("--timeout")), "{huge}");
        }
    }
}

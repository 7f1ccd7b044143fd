//! How the report writes numbers, times and untrusted text into the page: HTML-escaped, and
//! with every `://` broken so that no address in a record or a price source becomes a link or
//! a reference the page could fetch.

use std::time::{Duration, UNIX_EPOCH};

/// Escapes text for HTML (content and attribute values), and breaks `://` with a zero-width
/// space: `https:/&#8203;/host` reads the same and is no address.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out.replace("://", ":/&#8203;/")
}

/// A count or rate in at most four significant characters: `950`, `1.2k`, `3.4M`, `0.25`.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x.fract() == 0.0 || x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 || !suffix.is_empty() {
        1
    } else if x.abs() >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{x:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// A thousands-separated integer: `1,000,000`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A length of time in its two largest units: `45 s`, `3 m 12 s`, `2 h 5 m`, `3 d 4 h`.
pub fn duration_s(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec} s"),
        (0, 0, _) if sec == 0 => format!("{m} m"),
        (0, 0, _) => format!("{m} m {sec} s"),
        (0, _, _) => format!("{h} h {m} m"),
        _ => format!("{d} d {h} h"),
    }
}

/// Milliseconds, in ms below ten seconds and in seconds above.
pub fn ms(v: u64) -> String {
    if v < 10_000 {
        format!("{v} ms")
    } else {
        format!("{} s", compact(v as f64 / 1000.0))
    }
}

/// A time of day (UTC) from ms since the epoch, as precise as buckets of `width_ms` need:
/// `14:05`, `14:05:09`, `14:05:09.3`; with the date in front when asked.
pub fn clock(ms: u64, width_ms: u64, date: bool) -> String {
    let stamp =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    // 2026-01-01T14:05:09.300Z
    let end = match width_ms {
        0..1_000 => 21,
        1_000..60_000 => 19,
        _ => 16,
    };
    let day = stamp.get(5..10).unwrap_or("");
    let time = stamp.get(11..end).unwrap_or("");
    if date {
        format!("{day} {time}")
    } else {
        time.to_string()
    }
}

/// A length of time from ms: `300 ms`, `2.5 s`, then as [`duration_s`].
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{} s", compact(ms as f64 / 1000.0)),
        _ => duration_s(ms / 1000),
    }
}

/// An RFC 3339 time (UTC, seconds) from ms since the epoch.
pub fn stamp_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A cost: six decimals below 1, two above.
pub fn money(v: f64) -> String {
    if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_addresses_broken() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        let e = esc("see https://example.com and http://x");
        assert!(!e.contains("https://") && !e.contains("http://"), "{e}");
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(3_400_000.0), "3.4M");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(2.5), "2.5");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(999), "999");
        assert_eq!(duration_s(45), "45 s");
        assert_eq!(duration_s(192), "3 m 12 s");
        assert_eq!(duration_s(120), "2 m");
        assert_eq!(duration_s(7500), "2 h 5 m");
        assert_eq!(duration_s(3 * 86400 + 4 * 3600), "3 d 4 h");
        assert_eq!(ms(812), "812 ms");
        assert_eq!(ms(12_500), "12.5 s");
        assert_eq!(clock(1_767_276_309_300, 60_000, false), "14:05");
        assert_eq!(clock(1_767_276_309_300, 1_000, true), "01-01 14:05:09");
        assert_eq!(clock(1_767_276_309_300, 100, false), "14:05:09.3");
        assert_eq!(duration_ms(300), "300 ms");
        assert_eq!(duration_ms(2_500), "2.5 s");
        assert_eq!(duration_ms(192_000), "3 m 12 s");
    }
}

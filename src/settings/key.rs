//! The API key: read from the environment only, redacted in debug output, and scrubbed out of
//! whatever text a server sends back.

use std::fmt;

/// An API key. It never leaves this type except as a sensitive header value.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key as read from the environment (trimmed, not empty).
    pub(super) fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Takes the key out of a text the server sent (an error message may echo what it got,
    /// masked or not: OpenAI's 401 says `sk-proj-****...abcd`). A masked form whose visible
    /// ends match the key's, and every run of [`KEY_PIECE`] or more characters that is part of
    /// the key, become `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub_pieces(&scrub_masked(text, &self.0), &self.0)
    }
}

/// The shortest run of the key's characters that [`ApiKey::scrub`] takes out of a text.
pub const KEY_PIECE: usize = 6;

/// Replaces each word made of key-like characters around a mask (three or more `*`, `.` or
/// `…`) with `***` when its visible start begins the key or its visible end ends it.
fn scrub_masked(text: &str, key: &str) -> String {
    let keyish = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let maskish = |c: char| matches!(c, '*' | '.' | '…');
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let mut j = i;
        while j < chars.len() && keyish(chars[j].1) {
            j += 1;
        }
        let head_end = j;
        while j < chars.len() && maskish(chars[j].1) {
            j += 1;
        }
        let mask_end = j;
        while j < chars.len() && keyish(chars[j].1) {
            j += 1;
        }
        let at = |k: usize| chars.get(k).map_or(text.len(), |c| c.0);
        let head = &text[at(start)..at(head_end)];
        let tail = &text[at(mask_end)..at(j)];
        let masked = mask_end - head_end >= 3
            && ((head.len() >= 2 && key.starts_with(head))
                || (tail.len() >= 2 && key.ends_with(tail)));
        if masked {
            out.push_str("***");
            i = j;
        } else {
            // Not a masked key: keep the first character and look again from the next.
            out.push(chars[start].1);
            i = start + 1;
        }
    }
    out
}

/// Replaces every run of at least [`KEY_PIECE`] characters that is also a run of the key with
/// `***`.
fn scrub_pieces(text: &str, key: &str) -> String {
    let (t, k) = (text.as_bytes(), key.as_bytes());
    let least = KEY_PIECE.min(k.len()).max(1);
    let mut covered = vec![false; t.len()];
    for i in 0..t.len() {
        let longest = (0..k.len())
            .map(|s| {
                t[i..]
                    .iter()
                    .zip(&k[s..])
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .max()
            .unwrap_or(0);
        if longest >= least {
            covered[i..i + longest].fill(true);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (at, c) in text.char_indices() {
        if covered[at..at + c.len_utf8()].contains(&true) {
            if !in_run {
                out.push_str("***");
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_takes_out_pieces_and_masked_forms_of_the_key() {
        let key = ApiKey("sk-proj-Q7vR2mXk9LpZ4tNw8HsJ3cYb".into());
        assert_eq!(
            key.scrub("Incorrect API key provided: sk-proj-**********3cYb. See the docs..."),
            "Incorrect API key provided: ***. See the docs..."
        );
        assert_eq!(key.scrub("got `Xk9LpZ4t` instead"), "got `***` instead");
        assert_eq!(key.scrub("key sk-...3cYb is wrong"), "key *** is wrong");
        assert_eq!(key.scrub("Q7vR2"), "Q7vR2");
        assert_eq!(key.scrub("loading... ** ok"), "loading... ** ok");
        assert_eq!(key.scrub("überQ7vR2mXk9 ✓"), "über*** ✓");
        let text = key.scrub("a sk-proj-Q7vR2mXk9LpZ4tNw8HsJ3cYb b");
        assert_eq!(text, "a *** b");
    }

    #[test]
    fn key_is_redacted_in_debug() {
        let key = ApiKey("sk-secret".into());
        assert!(!format!("{key:?}").contains("secret"));
    }
}

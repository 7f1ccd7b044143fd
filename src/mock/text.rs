//! The mock's deterministic text: the reply and reasoning for a prompt, the token rule, and
//! the helpers that cut and split text and make ids. Pure functions, shared by every style.

use std::fmt::Write as _;

/// Longest word echoed from the prompt, in chars (keeps replies to a realistic size).
const MAX_WORD_CHARS: usize = 24;
/// How many prompt words the reply draws from.
const MAX_ECHO_WORDS: usize = 64;
/// How many prompt words the reasoning quotes.
const REASONING_WORDS: usize = 8;

/// Words mixed into replies so that they read a little like prose.
const FILLER: [&str; 24] = [
    "indeed",
    "notably",
    "overall",
    "therefore",
    "clearly",
    "in short",
    "for example",
    "moreover",
    "as noted",
    "briefly",
    "in turn",
    "likewise",
    "that is",
    "in practice",
    "of course",
    "similarly",
    "above all",
    "meanwhile",
    "in fact",
    "again",
    "so",
    "and",
    "also",
    "then",
];

/// Sentences the reasoning is made of (11, a prime, so any step visits distinct ones).
const REASONING: [&str; 11] = [
    "The user wants a direct answer.",
    "Let me consider the key points first.",
    "I should check what is actually being asked.",
    "There may be more than one reading of this.",
    "The simplest interpretation is probably right.",
    "I will keep the answer short and clear.",
    "An example might help here.",
    "Let me make sure nothing important is missing.",
    "The wording of the question matters.",
    "I should avoid guessing details that were not given.",
    "A structured reply will be easier to follow.",
];
/// The reasoning's last sentence.
const REASONING_END: &str = "That settles it, time to answer.";

/// FNV-1a, 64 bits: cheap, stable across runs and platforms.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 step: a bijection on u64, used for word choice and request ids.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The reply the endpoint gives for a prompt (the text of the last user message).
/// Deterministic and pure: `Mock reply <FNV-1a 64 of the prompt, 16 hex>:` followed by 15–60
/// words echoed from the prompt (backwards, from a prompt-dependent start, each cut to 24 chars)
/// mixed with filler words, ending in a full stop.
pub fn reply_for(prompt: &str) -> String {
    let h = fnv1a64(prompt.as_bytes());
    let mut state = h;
    let mut next = || {
        state = splitmix64(state);
        state
    };
    let words: Vec<&str> = prompt.split_whitespace().take(MAX_ECHO_WORDS).collect();
    // 15..=60 words: longer prompts get somewhat longer replies, the hash varies the rest.
    let base = 15 + words.len().min(20);
    let n = (base + (next() % 26) as usize).min(60);
    let mut out = String::with_capacity(32 + n * 9);
    let _ = write!(out, "Mock reply {h:016x}:");
    let len = words.len();
    let start = if len == 0 {
        0
    } else {
        (next() % len as u64) as usize
    };
    let mut echoed = 0usize;
    for _ in 0..n {
        let r = next();
        out.push(' ');
        // Filler a quarter of the time, half the time for short prompts (less repetition).
        if len == 0 || r % 4 == 0 || (len < 8 && r % 4 == 1) {
            out.push_str(FILLER[((r >> 8) % FILLER.len() as u64) as usize]);
        } else {
            // Walk the prompt backwards from a prompt-dependent start.
            let idx = (start + len - echoed % len) % len;
            echoed += 1;
            push_clipped(&mut out, words[idx], MAX_WORD_CHARS);
        }
    }
    out.push('.');
    out
}

/// The reasoning ("thinking") text the endpoint gives for a prompt when thinking is on.
/// Deterministic and pure, and never equal to [`reply_for`] of the same prompt:
/// `Thinking about: <the first 8 words of the prompt, each cut to 24 chars>…` followed by 2–5
/// distinct sentences picked by a hash of the prompt and `That settles it, time to answer.`
pub fn reasoning_for(prompt: &str) -> String {
    // A different stream of draws than reply_for's for the same prompt.
    let mut state = fnv1a64(prompt.as_bytes()) ^ 0x7468_696e_6b69_6e67;
    let mut next = || {
        state = splitmix64(state);
        state
    };
    let n = 2 + (next() % 4) as usize;
    let len = REASONING.len() as u64;
    let start = next() % len;
    let step = 1 + next() % (len - 1);
    let mut out = String::with_capacity(80 + REASONING_WORDS * 8 + n * 44);
    out.push_str("Thinking about:");
    for word in prompt.split_whitespace().take(REASONING_WORDS) {
        out.push(' ');
        push_clipped(&mut out, word, MAX_WORD_CHARS);
    }
    out.push('…');
    for i in 0..n as u64 {
        out.push(' ');
        out.push_str(REASONING[((start + i * step) % len) as usize]);
    }
    out.push(' ');
    out.push_str(REASONING_END);
    out
}

fn push_clipped(out: &mut String, word: &str, max_chars: usize) {
    match word.char_indices().nth(max_chars) {
        Some((cut, _)) => out.push_str(&word[..cut]),
        None => out.push_str(word),
    }
}

/// The token count the endpoint reports for a text: ceil(chars / 4), so 0 for "" and at least 1
/// for any non-empty text.
pub fn count_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Cuts `text` to `max_tokens` tokens under the ceil(chars/4) rule (its first 4·max chars).
/// Returns true when it cut.
pub(crate) fn clip_to_tokens(text: &mut String, max_tokens: u64) -> bool {
    let keep = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    match text.char_indices().nth(keep) {
        Some((cut, _)) => {
            text.truncate(cut);
            true
        }
        None => false,
    }
}

/// Whether `text` contains "json" in any letter case.
pub(crate) fn mentions_json(text: &str) -> bool {
    text.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"json"))
}

/// Splits text into 4-8 pieces (fewer for text shorter than 4 chars, one for "") on char
/// boundaries; the piece count depends on the text only.
pub(crate) fn split_content(text: &str) -> Vec<&str> {
    let chars = text.chars().count();
    if chars == 0 {
        return vec![text];
    }
    let wanted = 4 + (fnv1a64(text.as_bytes()) % 5) as usize;
    let n = wanted.min(chars);
    let mut pieces = Vec::with_capacity(n);
    let mut rest = text;
    for i in 0..n {
        let remaining_pieces = n - i;
        let take = rest.chars().count().div_ceil(remaining_pieces);
        let cut = rest.char_indices().nth(take).map_or(rest.len(), |(c, _)| c);
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces
}

/// Writes a uuid-shaped id, unique per `n` for a given nonce.
pub(crate) fn request_uuid(nonce: u64, n: u64) -> String {
    let x = splitmix64(n.wrapping_add(nonce));
    let y = splitmix64(x ^ nonce);
    let mut s = String::with_capacity(36);
    let _ = write!(
        s,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xffff,
        y >> 48,
        y & 0xffff_ffff_ffff
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_lossless() {
        for text in [
            "a",
            "ab",
            "hello world",
            "Mock reply: é ü 漢字 and more text here.",
        ] {
            let pieces = split_content(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.len() <= 8);
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn reasoning_differs_from_reply() {
        for prompt in ["", "x", "What is the capital of France?"] {
            let r = reasoning_for(prompt);
            assert_eq!(r, reasoning_for(prompt));
            assert_ne!(r, reply_for(prompt));
            assert!(r.starts_with("Thinking about:"), "{r}");
            assert!(count_tokens(&r) > 10, "{r}");
        }
        assert!(reasoning_for("one two three").starts_with("Thinking about: one two three… "));
    }

    #[test]
    fn json_word() {
        assert!(mentions_json("Answer in JSON please"));
        assert!(mentions_json("jSoN"));
        assert!(!mentions_json("jso n"));
        assert!(!mentions_json(""));
    }

    #[test]
    fn uuid_shape() {
        let id = request_uuid(1, 2);
        assert_eq!(id.len(), 36);
        assert_ne!(id, request_uuid(1, 3));
    }

    #[test]
    fn reply_is_deterministic_and_distinct() {
        let a = reply_for("Translate 'good morning' into French.");
        assert_eq!(a, reply_for("Translate 'good morning' into French."));
        assert_ne!(a, reply_for("Translate 'good night' into French."));
        assert!(a.starts_with("Mock reply "));
        assert!(a.contains("French."), "{a}");
        for prompt in ["", "x", "one two three", &"word ".repeat(500)] {
            let reply = reply_for(prompt);
            let words = reply.split_whitespace().count() - 2; // "Mock reply <hash>:"
            assert!((15..=60).contains(&words), "{words} words for {prompt:?}");
        }
        assert_ne!(reply_for(""), reply_for(" "));
    }

    #[test]
    fn token_counts() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("a"), 1);
        assert_eq!(count_tokens("abcd"), 1);
        assert_eq!(count_tokens("abcde"), 2);
        assert_eq!(count_tokens("漢字漢字漢"), 2);
    }
}

//! The lines of a batch input file: the validation that fails a batch (`errors.data`), and the
//! run that answers each line with the mock's own answer engine into an output and an error
//! file.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

use memchr::memmem;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::mock::errors::ErrorAnswer;
use crate::mock::reply::{Whole, answer_whole};
use crate::mock::wire::{Style, write_json};

/// The largest line accepted (DashScope's limit).
const MAX_LINE: usize = 6 * 1024 * 1024;
/// Marks a line that fails validation.
const INVALID_MARK: &[u8] = b"[mock:batch-invalid]";
/// Marks a line that does not run before the batch expires.
const EXPIRE_MARK: &[u8] = b"[mock:batch-expire]";
/// Marks a line that does not run the first time its custom_id is in a batch of this server,
/// and runs when it is sent again, as lines a provider left when its window closed.
const EXPIRE_ONCE_MARK: &[u8] = b"[mock:batch-expire-once]";
/// Mark lines answered with a 429 or a 500 in the error file, as a provider's overloaded
/// line: a synchronous run would retry them.
const RATE_MARK: &[u8] = b"[mock:batch-429]";
const SERVER_MARK: &[u8] = b"[mock:batch-500]";

/// One valid input line.
pub(super) struct Line {
    pub custom_id: String,
    /// Its bytes in the input file.
    pub span: Range<usize>,
    /// Carries `[mock:batch-expire]`: it does not run.
    pub expire: bool,
    /// Carries `[mock:batch-expire-once]`: see [`Checked::expire_once`].
    pub expire_once: bool,
}

/// One entry of a failed batch's `errors.data`.
#[derive(Serialize, Debug)]
pub(super) struct LineError {
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// 1-based; `None` for an error of the whole file.
    pub line: Option<u64>,
}

/// A validated input file: its lines and model, or why it fails.
pub(super) struct Checked {
    pub lines: Vec<Line>,
    /// The first line's `body.model`.
    pub model: Option<String>,
    /// Empty when the file is valid.
    pub errors: Vec<LineError>,
}

impl Checked {
    /// The `[mock:batch-expire-once]` lines whose custom_id is not yet in `expired` expire,
    /// and go into it; the others run.
    pub(super) fn expire_once(&mut self, expired: &mut HashSet<String>) {
        for line in self.lines.iter_mut().filter(|l| l.expire_once) {
            if expired.insert(line.custom_id.clone()) {
                line.expire = true;
            }
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default)]
    custom_id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<BodyHead<'a>>,
}

#[derive(Deserialize)]
struct BodyHead<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

/// The non-blank lines of `input` with their 1-based numbers (a `\r` before `\n` is dropped).
pub(super) fn lines_of(input: &[u8]) -> impl Iterator<Item = (u64, Range<usize>)> + '_ {
    let mut start = 0;
    let mut number = 0;
    std::iter::from_fn(move || {
        while start < input.len() {
            let end = memchr::memchr(b'\n', &input[start..]).map_or(input.len(), |i| start + i);
            let mut stop = end;
            if stop > start && input[stop - 1] == b'\r' {
                stop -= 1;
            }
            let range = start..stop;
            start = end + 1;
            number += 1;
            if !input[range.clone()].iter().all(u8::is_ascii_whitespace) {
                return Some((number, range));
            }
        }
        None
    })
}

/// Checks every line against the batch's `endpoint`; see `docs/mock.md` (Batch API).
pub(super) fn validate(input: &[u8], endpoint: &str) -> Checked {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut model: Option<Option<String>> = None;
    let invalid = memmem::Finder::new(INVALID_MARK);
    let expire = memmem::Finder::new(EXPIRE_MARK);
    let expire_once = memmem::Finder::new(EXPIRE_ONCE_MARK);
    for (number, span) in lines_of(input) {
        let bytes = &input[span.clone()];
        let fail = |code, message: String, param| LineError {
            code,
            message,
            param,
            line: Some(number),
        };
        if bytes.len() > MAX_LINE {
            let message = format!("The line is larger than {MAX_LINE} bytes.");
            errors.push(fail("request_too_large", message, None));
            continue;
        }
        let head: Head<'_> = match serde_json::from_slice(bytes) {
            Ok(head) => head,
            Err(e) => {
                let message = format!("The line is not valid JSON: {e}");
                errors.push(fail("invalid_json_line", message, None));
                continue;
            }
        };
        let line_model = head.body.and_then(|b| b.model).map(Cow::into_owned);
        let first_model = model.get_or_insert_with(|| line_model.clone());
        let error = if invalid.find(bytes).is_some() {
            Some((
                "mock_invalid_line",
                "The line is marked [mock:batch-invalid].".to_owned(),
                None,
            ))
        } else if let Some(Value::String(id)) = head.custom_id {
            if !seen.insert(id.clone()) {
                let message = format!("The custom_id {id:?} is used by an earlier line.");
                Some(("duplicate_custom_id", message, Some("custom_id")))
            } else if head.method.as_deref() != Some("POST") {
                let message = "Only the POST method is supported.".to_owned();
                Some(("invalid_method", message, Some("method")))
            } else if head.url.as_deref() != Some(endpoint) {
                let message = format!("The line's url must be the batch's endpoint {endpoint}.");
                Some(("invalid_url", message, Some("url")))
            } else if line_model != *first_model {
                let message = "Every line must use the model of the first line.".to_owned();
                Some(("mismatched_model", message, Some("body.model")))
            } else {
                lines.push(Line {
                    custom_id: id,
                    expire: expire.find(bytes).is_some(),
                    expire_once: expire_once.find(bytes).is_some(),
                    span,
                });
                None
            }
        } else {
            let message = "The line has no custom_id string.".to_owned();
            Some(("missing_custom_id", message, Some("custom_id")))
        };
        if let Some((code, message, param)) = error {
            errors.push(fail(code, message, param));
        }
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(LineError {
            code: "empty_file",
            message: "The input file has no lines.".to_owned(),
            param: None,
            line: None,
        });
    }
    Checked {
        lines,
        model: model.flatten(),
        errors,
    }
}

/// Token sums of a batch's answered lines.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Usage {
    pub input: u64,
    /// Including the reasoning tokens.
    pub output: u64,
    pub reasoning: u64,
}

/// The output and error files of a run, and its counts.
pub(super) struct Ran {
    pub output: Vec<u8>,
    pub errors: Vec<u8>,
    /// Lines in the output file.
    pub completed: u64,
    /// Lines in the error file.
    pub failed: u64,
    /// Lines the answer engine ran.
    pub answered: u64,
    pub usage: Usage,
}

/// How far a batch got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// Every line runs but the `[mock:batch-expire]` ones.
    None,
    /// Cancelled: only the lines before the middle run.
    Cancelled,
}

#[derive(Deserialize)]
struct BodyOnly {
    #[serde(default)]
    body: Value,
}

/// Answers the lines. `id` makes a fresh id; the files come out in an order `rng` shuffles
/// (never the input order, when there are two lines or more).
pub(super) fn run(
    input: &[u8],
    lines: &[Line],
    style: Style,
    cut: Cut,
    id: &mut dyn FnMut() -> String,
    rng: &mut fastrand::Rng,
) -> Ran {
    let mut output = Vec::new();
    let mut errors = Vec::new();
    let mut usage = Usage::default();
    let mut answered = 0;
    let half = lines.len() / 2;
    for (i, line) in lines.iter().enumerate() {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"id\":\"batch_req_");
        out.extend_from_slice(id().replace('-', "").as_bytes());
        out.extend_from_slice(b"\",\"custom_id\":");
        write_json(&mut out, &line.custom_id);
        let skipped = if cut == Cut::Cancelled && (i >= half || line.expire) {
            Some((
                "batch_cancelled",
                "The batch was cancelled before this line ran.",
            ))
        } else if line.expire {
            Some(("batch_expired", "The batch expired before this line ran."))
        } else {
            None
        };
        if let Some((code, message)) = skipped {
            out.extend_from_slice(b",\"response\":null,\"error\":");
            write_json(
                &mut out,
                &serde_json::json!({"code": code, "message": message}),
            );
            out.extend_from_slice(b"}\n");
            errors.push(out);
            continue;
        }
        let bytes = &input[line.span.clone()];
        let body = serde_json::from_slice::<BodyOnly>(bytes)
            .map(|b| b.body)
            .unwrap_or_default();
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let request_id = id();
        let overloaded = if memmem::find(bytes, RATE_MARK).is_some() {
            Some(ErrorAnswer::RateLimited)
        } else if memmem::find(bytes, SERVER_MARK).is_some() {
            Some(ErrorAnswer::Internal)
        } else {
            None
        };
        let whole = match overloaded {
            Some(kind) => Whole {
                status: kind.status(),
                body: kind.body(style, kind.message(style), &request_id),
                tokens: None,
            },
            None => answer_whole(style, &body, &request_id),
        };
        answered += 1;
        out.extend_from_slice(b",\"response\":{\"status_code\":");
        out.extend_from_slice(whole.status.as_u16().to_string().as_bytes());
        out.extend_from_slice(b",\"request_id\":");
        write_json(&mut out, &request_id);
        out.extend_from_slice(b",\"body\":");
        out.extend_from_slice(&whole.body);
        out.extend_from_slice(b"},\"error\":null}\n");
        match whole.tokens {
            Some((input, output_tokens, reasoning)) if whole.status.is_success() => {
                usage.input += input;
                usage.output += output_tokens;
                usage.reasoning += reasoning;
                output.push(out);
            }
            _ => errors.push(out),
        }
    }
    let (completed, failed) = (output.len() as u64, errors.len() as u64);
    Ran {
        output: shuffled(output, rng),
        errors: shuffled(errors, rng),
        completed,
        failed,
        answered,
        usage,
    }
}

/// The lines joined in a random order other than the given one.
fn shuffled(lines: Vec<Vec<u8>>, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    rng.shuffle(&mut order);
    if order.len() >= 2 && order.iter().enumerate().all(|(i, &j)| i == j) {
        order.rotate_left(1);
    }
    let mut joined = Vec::with_capacity(lines.iter().map(Vec::len).sum());
    for i in order {
        joined.extend_from_slice(&lines[i]);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, model: &str, prompt: &str) -> String {
        serde_json::json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": prompt}]}})
        .to_string()
    }

    #[test]
    fn validation_names_each_bad_line() {
        let text = [
            line("a", "m", "hi"),
            String::new(),
            "{not json".to_owned(),
            line("a", "m", "again"),
            line("b", "other", "hi"),
            line("c", "m", "x [mock:batch-invalid]"),
            line("d", "m", "fine"),
        ]
        .join("\n");
        let checked = validate(text.as_bytes(), "/v1/chat/completions");
        let got: Vec<_> = checked.errors.iter().map(|e| (e.line, e.code)).collect();
        assert_eq!(
            got,
            [
                (Some(3), "invalid_json_line"),
                (Some(4), "duplicate_custom_id"),
                (Some(5), "mismatched_model"),
                (Some(6), "mock_invalid_line"),
            ]
        );
        assert_eq!(checked.model.as_deref(), Some("m"));
        let wrong_url = validate(line("a", "m", "hi").as_bytes(), "/v1/responses");
        assert_eq!(wrong_url.errors[0].code, "invalid_url");
        assert_eq!(validate(b"\n \n", "/x").errors[0].code, "empty_file");
    }

    /// Validates `text` as a chat batch and runs its lines, with ids 1, 2, ... and a seeded
    /// shuffle.
    fn run_text(text: &str, cut: Cut, seed: u64) -> Ran {
        let checked = validate(text.as_bytes(), "/v1/chat/completions");
        let mut n = 0;
        let mut id = || {
            n += 1;
            n.to_string()
        };
        let mut rng = fastrand::Rng::with_seed(seed);
        run(
            text.as_bytes(),
            &checked.lines,
            Style::Chat,
            cut,
            &mut id,
            &mut rng,
        )
    }

    #[test]
    fn run_cancelled_keeps_the_first_half() {
        let text = (0..4)
            .map(|i| line(&format!("r{i}"), "m", "hello"))
            .collect::<Vec<_>>()
            .join("\n");
        let ran = run_text(&text, Cut::Cancelled, 7);
        assert_eq!((ran.completed, ran.failed, ran.answered), (2, 2, 2));
        let out = String::from_utf8(ran.output).expect("utf8");
        assert!(out.contains("\"r0\"") && out.contains("\"r1\""));
        let errors = String::from_utf8(ran.errors).expect("utf8");
        assert_eq!(errors.matches("batch_cancelled").count(), 2);
        assert!(ran.usage.input > 0 && ran.usage.output > 0);
    }

    #[test]
    fn marked_lines_are_answered_429_and_500() {
        let text = [
            line("a", "m", "x [mock:batch-429]"),
            line("b", "m", "y [mock:batch-500]"),
            line("c", "m", "fine"),
        ]
        .join("\n");
        let ran = run_text(&text, Cut::None, 3);
        assert_eq!((ran.completed, ran.failed, ran.answered), (1, 2, 3));
        let errors = String::from_utf8(ran.errors).expect("utf8");
        assert!(errors.contains("\"status_code\":429") && errors.contains("limit_requests"));
        assert!(errors.contains("\"status_code\":500") && errors.contains("internal_error"));
    }
}

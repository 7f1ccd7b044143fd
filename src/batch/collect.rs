//! Collecting a finished batch: its output and error lines (in any order) become outcomes keyed
//! by `custom_id`, priced at the batch price, each with the batch's id. Lines that did not run
//! (expired, cancelled, absent from both files) and lines a synchronous run would retry (429,
//! 5xx) are to be resubmitted while rounds remain; the others keep their error records.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use hyper::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::files::Row;
use crate::pricing::{Cost, Prices};
use crate::record::Outcome;
use crate::request::style;
use crate::request::{Api, Reply, Usage};
use crate::retry::{ErrorKind, Failure};

/// What one output or error line says about its row.
#[derive(Debug, Clone, PartialEq)]
pub enum LineResult {
    Answered(Reply),
    Failed(Failure),
    /// The row did not run: the batch expired or was cancelled first.
    NotRun(String),
}

#[derive(Deserialize)]
struct WireLine<'a> {
    custom_id: String,
    #[serde(default, borrow)]
    response: Option<WireResponse<'a>>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default, borrow)]
    body: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Reads one line of an output or error file; `None` for a line without a `custom_id`.
pub fn parse_line(line: &[u8], api: Api, openai: bool) -> Option<(String, LineResult)> {
    let w: WireLine = serde_json::from_slice(line).ok()?;
    let result = match (w.response, w.error) {
        (Some(r), _) if r.body.is_some() => {
            let status = r.status_code.unwrap_or(200);
            let body = r.body.map_or(&b""[..], |b| b.get().as_bytes());
            if (200..300).contains(&status) {
                match style::parse(api, body) {
                    Ok(mut reply) => {
                        if reply.request_id.is_none() {
                            reply.request_id = r.request_id;
                        }
                        LineResult::Answered(reply)
                    }
                    Err(why) => {
                        let mut f = Failure::new(ErrorKind::BadResponse, why);
                        f.http_status = Some(status);
                        LineResult::Failed(f)
                    }
                }
            } else {
                LineResult::Failed(crate::retry::classify(
                    status,
                    &HeaderMap::new(),
                    body,
                    openai,
                ))
            }
        }
        (_, Some(e)) => {
            let code = e.code.unwrap_or_default();
            let message = e.message.unwrap_or_else(|| code.clone());
            if code == "batch_expired" || code == "batch_cancelled" {
                LineResult::NotRun(code)
            } else {
                let mut f = Failure::new(ErrorKind::InvalidRequest, message);
                f.code = (!code.is_empty()).then_some(code);
                LineResult::Failed(f)
            }
        }
        _ => {
            let mut f = Failure::new(ErrorKind::BadResponse, "the batch line has no answer");
            f.retryable = false;
            LineResult::Failed(f)
        }
    };
    Some((w.custom_id, result))
}

/// What collecting one batch gave.
#[derive(Debug, Default)]
pub struct Collected {
    /// The records to write.
    pub outcomes: Vec<Outcome>,
    /// Offsets (in the batch file) of the lines to send again.
    pub resubmit: Vec<u64>,
    pub ok: u64,
    pub failed: u64,
    pub not_run: u64,
}

/// How a batch is collected.
pub struct Collector<'a> {
    pub api: Api,
    pub openai: bool,
    pub prices: &'a Prices,
    pub batch_id: Arc<str>,
    /// The batch file's rows by custom_id.
    pub rows: &'a HashMap<String, Row>,
    pub metadata: &'a HashMap<String, Value>,
    /// Whether lines that did not run or failed retryably may go in another round.
    pub may_resubmit: bool,
    /// The attempts so far of each row: its round, plus one.
    pub attempts: u32,
    /// Validation errors of a failed batch, by 1-based line: (code, message).
    pub invalid_lines: HashMap<u64, (Option<String>, String)>,
}

impl Collector<'_> {
    /// Reads the downloaded output and error files (either may be missing) and decides every
    /// row of the batch file, with the records in `outcomes`.
    pub fn collect(&self, output: Option<&Path>, errors: Option<&Path>) -> io::Result<Collected> {
        let mut outcomes = Vec::new();
        let mut got = self.collect_with(output, errors, &mut |o| outcomes.push(o))?;
        got.outcomes = outcomes;
        Ok(got)
    }

    /// As [`Collector::collect`], handing each record to `emit` as soon as it is decided:
    /// memory does not hold a batch's records (`outcomes` stays empty).
    pub fn collect_with(
        &self,
        output: Option<&Path>,
        errors: Option<&Path>,
        emit: &mut dyn FnMut(Outcome),
    ) -> io::Result<Collected> {
        let mut out = Collected::default();
        let mut seen: HashSet<String> = HashSet::new();
        for path in [output, errors].into_iter().flatten() {
            let mut reader = BufReader::new(fs_err::File::open(path)?);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if reader.read_until(b'\n', &mut buf)? == 0 {
                    break;
                }
                let Some((id, result)) = parse_line(&buf, self.api, self.openai) else {
                    continue;
                };
                // A line of another file, or a second line for a row, changes nothing.
                if !self.rows.contains_key(&id) || seen.contains(&id) {
                    continue;
                }
                self.decide(&id, result, &mut out, emit);
                seen.insert(id);
            }
        }
        for (id, row) in self.rows {
            if seen.contains(id) {
                continue;
            }
            let result = match self.invalid_lines.get(&row.line) {
                Some((code, message)) => {
                    let mut f = Failure::new(
                        ErrorKind::InvalidRequest,
                        format!("batch validation, line {}: {message}", row.line),
                    );
                    f.code = code.clone();
                    LineResult::Failed(f)
                }
                None => LineResult::NotRun("absent".to_string()),
            };
            self.decide(id, result, &mut out, emit);
        }
        Ok(out)
    }

    fn decide(
        &self,
        id: &str,
        result: LineResult,
        out: &mut Collected,
        emit: &mut dyn FnMut(Outcome),
    ) {
        let Some(row) = self.rows.get(id) else { return };
        let result = match result {
            LineResult::Answered(reply) => Ok(reply),
            LineResult::Failed(f) => Err(f),
            LineResult::NotRun(why) => {
                let mut f = Failure::new(
                    ErrorKind::Expired,
                    format!(
                        "the batch ended before this row ran ({})",
                        why.trim_start_matches("batch_")
                    ),
                );
                f.code = Some(why);
                f.retryable = true;
                Err(f)
            }
        };
        match &result {
            Ok(_) => out.ok += 1,
            Err(f) if f.kind == ErrorKind::Expired => out.not_run += 1,
            Err(_) => out.failed += 1,
        }
        // A row sent again gets its record from the round that answers it.
        if result.as_ref().is_err_and(|f| f.retryable) && self.may_resubmit {
            out.resubmit.push(row.offset);
            return;
        }
        let cost = result
            .as_ref()
            .ok()
            .and_then(|r| self.batch_cost(&row.model, r));
        emit(Outcome {
            id: id.to_string(),
            hash: row.hash,
            metadata: self.metadata.get(id).cloned(),
            result,
            cost,
            discarded_usage: Usage::default(),
            discarded_cost: None,
            attempts: self.attempts,
            latency_ms: 0,
            possibly_billed: 0,
            model: row.model.clone(),
            batch_id: Some(self.batch_id.clone()),
        });
    }

    /// The cost at the batch price of the model the row named (or, unpriced, the one that
    /// answered).
    fn batch_cost(&self, sent: &str, reply: &Reply) -> Option<Cost> {
        let price = self.prices.price_for(sent, reply.model.as_deref())?;
        Some(Cost {
            amount: price.cost(reply.usage.as_ref()?, true)?,
            currency: price.currency.clone(),
            source: price.source.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_body(text: &str) -> String {
        serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "qwen-plus",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
        })
        .to_string()
    }

    #[test]
    fn output_and_error_lines_of_the_contract_are_read() {
        let ok = format!(
            r#"{{"id":"batch_req_1","custom_id":"r1","response":{{"status_code":200,"request_id":"req_1","body":{}}},"error":null}}"#,
            chat_body("hello")
        );
        let Some((id, LineResult::Answered(r))) = parse_line(ok.as_bytes(), Api::Chat, false)
        else {
            panic!("not an answer: {ok}");
        };
        assert_eq!(id, "r1");
        assert_eq!(r.content.as_deref(), Some("hello"));
        assert_eq!(r.request_id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(r.usage.map(|u| u.input_tokens), Some(1000));

        let err = r#"{"id":"x","custom_id":"r2","response":{"status_code":400,"request_id":"q","body":{"error":{"code":"invalid_parameter","message":"bad"}}},"error":null}"#;
        let Some((_, LineResult::Failed(f))) = parse_line(err.as_bytes(), Api::Chat, false) else {
            panic!("not a failure");
        };
        assert_eq!(
            (f.kind, f.http_status, f.retryable),
            (ErrorKind::InvalidRequest, Some(400), false)
        );
        let busy = r#"{"custom_id":"r3","response":{"status_code":503,"body":{"error":{"message":"busy"}}}}"#;
        let Some((_, LineResult::Failed(f))) = parse_line(busy.as_bytes(), Api::Chat, false) else {
            panic!("not a failure");
        };
        assert!(f.retryable);
        let expired = r#"{"id":"x","custom_id":"r4","response":null,"error":{"code":"batch_expired","message":"not run"}}"#;
        assert_eq!(
            parse_line(expired.as_bytes(), Api::Chat, false),
            Some(("r4".into(), LineResult::NotRun("batch_expired".into())))
        );
        assert_eq!(
            parse_line(b"{\"id\":\"no custom id\"}", Api::Chat, false),
            None
        );
        assert_eq!(parse_line(b"not json", Api::Chat, false), None);
    }

    fn rows(n: u64) -> HashMap<String, Row> {
        (1..=n)
            .map(|i| {
                (
                    format!("r{i}"),
                    Row {
                        hash: i,
                        model: Arc::from("qwen-plus"),
                        offset: i * 100,
                        line: i,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_batch_is_collected_in_any_order_with_the_rest_resubmitted() {
        let dir = tempfile::tempdir().expect("tmp");
        let output = dir.path().join("out.jsonl");
        let errors = dir.path().join("err.jsonl");
        let line = |id: &str| {
            format!(
                r#"{{"custom_id":"{id}","response":{{"status_code":200,"body":{}}}}}"#,
                chat_body("a")
            )
        };
        std::fs::write(&output, format!("{}\n{}\n", line("r3"), line("r1"))).expect("w");
        std::fs::write(
            &errors,
            concat!(
                r#"{"custom_id":"r2","response":null,"error":{"code":"batch_expired"}}"#,
                "\n",
                r#"{"custom_id":"r4","response":{"status_code":400,"body":{"error":{"message":"no"}}}}"#,
                "\n"
            ),
        )
        .expect("w");
        let prices = Prices::built_in();
        let (rows, meta) = (rows(5), HashMap::new());
        let mut c = Collector {
            api: Api::Chat,
            openai: false,
            prices: &prices,
            batch_id: Arc::from("batch_1"),
            rows: &rows,
            metadata: &meta,
            may_resubmit: true,
            attempts: 1,
            invalid_lines: HashMap::new(),
        };
        let got = c.collect(Some(&output), Some(&errors)).expect("collect");
        assert_eq!((got.ok, got.failed, got.not_run), (2, 1, 2));
        let mut again = got.resubmit.clone();
        again.sort_unstable();
        assert_eq!(again, [200, 500]);
        assert_eq!(got.outcomes.len(), 3);
        let r1 = got.outcomes.iter().find(|o| o.id == "r1").expect("r1");
        assert_eq!(r1.batch_id.as_deref(), Some("batch_1"));
        assert_eq!(r1.hash, 1);
        let sync = prices
            .cost(
                "qwen-plus",
                None,
                r1.result.as_ref().ok().and_then(|r| r.usage.as_ref()),
            )
            .map(|c| c.amount);
        assert_eq!(r1.cost.as_ref().map(|c| c.amount * 2.0), sync);

        // The last round: the rows that did not run keep `expired` records.
        c.may_resubmit = false;
        let got = c.collect(Some(&output), Some(&errors)).expect("collect");
        assert!(got.resubmit.is_empty());
        let r5 = got.outcomes.iter().find(|o| o.id == "r5").expect("r5");
        assert!(
            r5.result
                .as_ref()
                .is_err_and(|f| f.kind == ErrorKind::Expired)
        );
    }

    #[test]
    fn validation_errors_name_their_lines() {
        let prices = Prices::built_in();
        let (rows, meta) = (rows(3), HashMap::new());
        let c = Collector {
            api: Api::Chat,
            openai: false,
            prices: &prices,
            batch_id: Arc::from("batch_v"),
            rows: &rows,
            metadata: &meta,
            may_resubmit: true,
            attempts: 1,
            invalid_lines: HashMap::from([(2, (Some("bad_line".into()), "no".into()))]),
        };
        let got = c.collect(None, None).expect("collect");
        assert_eq!(got.resubmit.len(), 2);
        let r2 = &got.outcomes[0];
        assert_eq!(r2.id, "r2");
        let f = r2.result.as_ref().expect_err("error");
        assert_eq!(f.code.as_deref(), Some("bad_line"));
        assert!(f.message.contains("line 2"));
    }
}

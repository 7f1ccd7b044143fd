//! Black-box tests of the rate-limit promises at their edges: no burst at the start against an
//! endpoint that counts requests in a sliding second, a `Retry-After: 0` that still backs off,
//! OpenAI's token headers that pause only until the next request fits, and an endpoint that
//! answers 404 to every request (a wrong base URL, an unknown model) stopping the run early.
//! The endpoints are the project's mock and, where a test needs answers the mock does not give
//! (404s, rate-limit headers), a small HTTP server on loopback in this file.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batchgen::mock::{MockConfig, RateLimits};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

/// One request as the test server saw it: when it arrived, its path and its body.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    path: String,
    body: String,
}

/// What the test server answers: status, extra headers and body, from the request and the
/// requests seen before it.
type Answer = dyn Fn(&Hit, &[Hit]) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync;

/// A loopback HTTP/1.1 server on its own runtime that records every request.
struct Server {
    _rt: tokio::runtime::Runtime,
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Server {
    fn start(
        answer: impl Fn(&Hit, &[Hit]) -> (u16, Vec<(&'static str, String)>, String)
        + Send
        + Sync
        + 'static,
    ) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let answer: Arc<Answer> = Arc::new(answer);
        let seen = hits.clone();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            let answer = answer.clone();
                            async move {
                                let at = Instant::now();
                                let path = req.uri().path().to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                                    .unwrap_or_default();
                                let hit = Hit { at, path, body };
                                let (status, headers, text) = {
                                    let mut all = seen.lock().expect("hits");
                                    let a = answer(&hit, &all);
                                    all.push(hit);
                                    a
                                };
                                let mut resp = Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json");
                                for (k, v) in headers {
                                    resp = resp.header(k, v);
                                }
                                Ok::<_, Infallible>(
                                    resp.body(Full::new(Bytes::from(text))).expect("response"),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Server { _rt: rt, url, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }
}

const OK_BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;

fn ok() -> (u16, Vec<(&'static str, String)>, String) {
    (200, Vec::new(), OK_BODY.to_string())
}

/// OpenAI's answer to an unknown model, or to a path it does not serve.
fn not_found(hit: &Hit) -> (u16, Vec<(&'static str, String)>, String) {
    let message = if hit.body.contains("no-such-model") {
        "The model `no-such-model` does not exist or you do not have access to it."
    } else {
        "Invalid URL"
    };
    (
        404,
        Vec::new(),
        format!(
            r#"{{"error":{{"message":"{message}","type":"invalid_request_error","param":null,"code":"model_not_found"}}}}"#
        ),
    )
}

/// An OpenAI-style endpoint serving only `/v1/chat/completions`, and no model called
/// `no-such-model`.
fn openai_like() -> Server {
    Server::start(|hit, _| {
        if hit.path != "/v1/chat/completions" || hit.body.contains("no-such-model") {
            not_found(hit)
        } else {
            ok()
        }
    })
}

#[test]
fn a_404_on_every_request_stops_the_run_early_naming_the_url_or_model() {
    let server = openai_like();
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(300));
    // A mistyped base URL: every path 404s.
    let out = dir.path().join("wrong-url.jsonl");
    let wrong = format!("{}/v1/chat", server.url);
    let (code, stderr) = run_io(&input, &out, &wrong, &["-c", "4", "-m", "qwen-plus"]);
    assert_eq!(code, 3, "{stderr}");
    let sent = server.hits().len();
    assert!(sent <= 12, "{sent} requests sent to a URL that 404s");
    assert!(
        stderr.contains("404") && stderr.contains("/v1/chat/chat/completions"),
        "{stderr}"
    );
    assert!(records(&out).len() <= sent);
    // An unknown model: every request 404s too.
    let out = dir.path().join("wrong-model.jsonl");
    let before = server.hits().len();
    let (code, stderr) = run_io(
        &input,
        &out,
        &format!("{}/v1", server.url),
        &["-c", "4", "-m", "no-such-model"],
    );
    assert_eq!(code, 3, "{stderr}");
    let sent = server.hits().len() - before;
    assert!(sent <= 12, "{sent} requests for an unknown model");
    assert!(stderr.contains("no-such-model"), "{stderr}");
}

#[test]
fn a_404_on_a_few_rows_among_ok_rows_does_not_stop_the_run() {
    let server = openai_like();
    let dir = tempfile::tempdir().expect("tmp");
    // The first rows and one later row name a model the endpoint does not have.
    let rows: String = (1..=40)
        .map(|i| {
            if [1, 2, 3, 20].contains(&i) {
                format!(
                    "{{\"id\":\"r{i}\",\"prompt\":\"p{i}\",\"params\":{{\"model\":\"no-such-model\"}}}}\n"
                )
            } else {
                format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\"}}\n")
            }
        })
        .collect();
    let input = write(dir.path(), "rows.jsonl", &rows);
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &format!("{}/v1", server.url),
        &["-c", "4", "-m", "qwen-plus"],
    );
    assert_eq!(code, 1, "some rows failed, none stopped the run: {stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 40, "{stderr}");
    for (id, r) in &recs {
        let bad = ["r1", "r2", "r3", "r20"].contains(&id.as_str());
        let want = if bad { "error" } else { "ok" };
        assert_eq!(r["status"], want, "{id}: {r}");
        if bad {
            assert_eq!(r["error"]["http_status"], 404, "{r}");
        }
    }
    assert_eq!(server.hits().len(), 40);
}

#[test]
fn retry_after_zero_still_waits_the_backoff_floor() {
    // The first sighting of each request is a 429 that says "retry at once".
    let server = Server::start(|hit, seen| {
        if seen.iter().any(|h| h.body == hit.body) {
            ok()
        } else {
            (
                429,
                vec![("retry-after", "0".into()), ("retry-after-ms", "0".into())],
                r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
            )
        }
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(3));
    let out = dir.path().join("out.jsonl");
    let status = batchgen()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--base-url", &format!("{}/v1", server.url)])
        .args([
            "-c",
            "3",
            "--retry-delay",
            "400ms",
            "--retry-max-delay",
            "400ms",
        ])
        .output()
        .expect("run batchgen");
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let recs = by_id(&records(&out));
    assert!(recs.values().all(|r| r["attempts"] == 2), "{recs:?}");
    let hits = server.hits();
    assert_eq!(hits.len(), 6);
    for first in 0..hits.len() {
        let Some(second) = (first + 1..hits.len()).find(|&j| hits[j].body == hits[first].body)
        else {
            continue;
        };
        let gap = hits[second].at.duration_since(hits[first].at);
        // The retry waits at least --retry-delay, whatever the server said.
        assert!(gap >= Duration::from_millis(390), "retried after {gap:?}");
    }
}

#[test]
fn a_small_token_budget_pauses_until_the_next_request_fits_not_the_full_reset() {
    // Each answer says 10 tokens are left of a million, and that the budget is whole again in
    // five minutes: about 0.1 s per 300-token request.
    let server = Server::start(|_, _| {
        let (status, _, body) = ok();
        let headers = vec![
            ("x-ratelimit-limit-requests", "10000".to_string()),
            ("x-ratelimit-remaining-requests", "9999".to_string()),
            ("x-ratelimit-reset-requests", "6ms".to_string()),
            ("x-ratelimit-limit-tokens", "1000000".to_string()),
            ("x-ratelimit-remaining-tokens", "10".to_string()),
            ("x-ratelimit-reset-tokens", "5m0s".to_string()),
        ];
        (status, headers, body)
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(3));
    let out = dir.path().join("out.jsonl");
    // A guard against a stall, not a measure of speed: waiting for the full reset after each
    // answer would take ten minutes.
    let status = batchgen()
        .timeout(Duration::from_secs(60))
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .args(["--base-url", &format!("{}/v1", server.url), "-c", "1"])
        .output()
        .expect("run batchgen");
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(records(&out).len(), 3);
    assert_eq!(server.hits().len(), 3);
}

#[test]
fn a_client_rpm_under_a_sliding_second_limit_draws_no_429s_at_the_start() {
    // --rpm 1200 is 20 a second; the endpoint admits 25 in any sliding second.
    let ep = Endpoint::start(MockConfig {
        limits: RateLimits::new(None, Some(25.0), None).sliding(),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(60));
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["--rpm", "1200", "-c", "64"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&out).len(), 60);
    let s = ep.stats();
    assert!(s.rate_limited <= 1, "{} answers were 429", s.rate_limited);
}

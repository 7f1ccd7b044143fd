//! In-process tests of the mock endpoint (`batchgen::mock`) in its three styles (Chat
//! Completions, Responses, DashScope native), driven with reqwest over loopback.

use std::time::{Duration, Instant};

use batchgen::mock::{
    FaultRates, MockConfig, MockServer, StatsSnapshot, count_tokens, reasoning_for, reply_for,
};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`; plain http never uses it, but building a
    // client needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
    MockServer::start(cfg, "127.0.0.1:0".parse().expect("addr")).await
}

fn faults(spec: &str) -> MockConfig {
    MockConfig {
        faults: FaultRates::parse(spec).expect("spec"),
        ..MockConfig::default()
    }
}

fn chat_body(prompt: &str) -> Value {
    json!({"model": "qwen-plus", "messages": [{"role": "user", "content": prompt}]})
}

fn url(server: &MockServer) -> String {
    format!("{}/chat/completions", server.base_url())
}

async fn post(server: &MockServer, body: &Value) -> reqwest::Result<reqwest::Response> {
    client().post(url(server)).json(body).send().await
}

/// Splits an SSE body into its `data:` payloads.
fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data: prefix"))
        .collect()
}

#[tokio::test]
async fn plain_success() -> TestResult {
    let server = start(MockConfig::default()).await?;
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert!(server.base_url().ends_with("/v1"));
    let system = "You are terse.";
    let prompt = "Summarise the plot of Hamlet in two sentences.";
    let body = json!({
        "model": "qwen-plus",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt}
        ]
    });
    let resp = post(&server, &body).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["x-request-id"].to_str()?.to_owned();
    let v: Value = resp.json().await?;
    let reply = reply_for(prompt);
    assert_eq!(v["choices"][0]["message"]["content"], reply.as_str());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["index"], 0);
    assert!(v["choices"][0]["logprobs"].is_null());
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "qwen-plus");
    assert_eq!(v["id"], format!("chatcmpl-{request_id}"));
    assert!(v["created"].as_u64().expect("created") > 1_600_000_000);
    let p = count_tokens(system) + 4 + count_tokens(prompt) + 4;
    let c = count_tokens(&reply);
    assert_eq!(v["usage"]["prompt_tokens"], p);
    assert_eq!(v["usage"]["completion_tokens"], c);
    assert_eq!(v["usage"]["total_tokens"], p + c);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    // Ids are unique per request; the compatible-mode path works too.
    let compat = url(&server).replace("/v1/", "/compatible-mode/v1/");
    let v2: Value = client()
        .post(compat)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    assert_ne!(v2["id"], v["id"]);
    assert_eq!(v2["choices"][0]["message"]["content"], reply.as_str());

    let stats = server.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.ok, 2);
    assert_eq!(stats.input_tokens, 2 * p);
    assert_eq!(stats.output_tokens, 2 * c);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn content_parts_are_joined() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "first \"part\""},
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
        {"type": "text", "text": "second part"}
    ]}]});
    let v: Value = post(&server, &body).await?.json().await?;
    let prompt = "first \"part\"\nsecond part";
    assert_eq!(
        v["choices"][0]["message"]["content"],
        reply_for(prompt).as_str()
    );
    assert_eq!(v["usage"]["prompt_tokens"], count_tokens(prompt) + 4);
    Ok(())
}

#[tokio::test]
async fn max_tokens_cuts_reply() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Write a long essay about the history of tea.";
    let reply = reply_for(prompt);
    assert!(count_tokens(&reply) > 3);
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat_body(prompt);
        body[field] = json!(3);
        let v: Value = post(&server, &body).await?.json().await?;
        let expected: String = reply.chars().take(12).collect();
        assert_eq!(v["choices"][0]["message"]["content"], expected.as_str());
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 3);
    }
    // A generous limit changes nothing.
    let mut body = chat_body(prompt);
    body["max_tokens"] = json!(10_000);
    let v: Value = post(&server, &body).await?.json().await?;
    assert_eq!(v["choices"][0]["message"]["content"], reply.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    Ok(())
}

#[tokio::test]
async fn streaming_with_usage() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Explain how a bicycle stays upright.";
    let mut body = chat_body(prompt);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&server, &body).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await?;
    let events = sse_events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e))
        .collect::<Result<_, _>>()?;
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "qwen-plus");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(first["usage"].is_null());
    let n = chunks.len();
    let content_chunks = &chunks[1..n - 2];
    assert!(
        (4..=8).contains(&content_chunks.len()),
        "{} content chunks",
        content_chunks.len()
    );
    let mut content = String::new();
    for c in content_chunks {
        assert!(c["choices"][0]["finish_reason"].is_null());
        content.push_str(
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content"),
        );
    }
    let reply = reply_for(prompt);
    assert_eq!(content, reply);
    let finish = &chunks[n - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = &chunks[n - 1];
    assert_eq!(usage["choices"], json!([]));
    let p = count_tokens(prompt) + 4;
    let c = count_tokens(&reply);
    assert_eq!(usage["usage"]["prompt_tokens"], p);
    assert_eq!(usage["usage"]["completion_tokens"], c);
    assert_eq!(usage["usage"]["total_tokens"], p + c);
    assert!(chunks.iter().all(|c| c["id"] == first["id"]));

    // Without include_usage there is no usage chunk; max_tokens works on streams too.
    body["stream_options"] = json!({"include_usage": false});
    body["max_tokens"] = json!(2);
    let text = post(&server, &body).await?.text().await?;
    let events = sse_events(&text);
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e))
        .collect::<Result<_, _>>()?;
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, reply.chars().take(8).collect::<String>());

    let stats = server.stats();
    assert_eq!(stats.ok, 2);
    assert_eq!(stats.output_tokens, c + 2);
    Ok(())
}

#[tokio::test]
async fn fault_rate_limit() -> TestResult {
    let server = start(MockConfig {
        retry_after: Duration::from_millis(1500),
        ..faults("429=1")
    })
    .await?;
    let resp = post(&server, &chat_body("hi")).await?;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "limit_requests");
    assert_eq!(v["error"]["type"], "limit_requests");
    assert_eq!(
        v["error"]["message"],
        "Requests rate limit exceeded, please try again later."
    );
    assert!(v["error"]["param"].is_null());
    assert!(v["request_id"].is_string());
    let stats = server.stats();
    assert_eq!((stats.requests, stats.rate_limited, stats.ok), (1, 1, 0));
    Ok(())
}

#[tokio::test]
async fn fault_server_error_and_unavailable() -> TestResult {
    let server = start(faults("server_error=1.0")).await?;
    let resp = post(&server, &chat_body("hi")).await?;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "internal_error");
    assert_eq!(v["error"]["type"], "internal_error");
    assert_eq!(server.stats().server_errors, 1);

    let server = start(faults("503=1.0")).await?;
    let resp = post(&server, &chat_body("hi")).await?;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "text/html");
    let text = resp.text().await?;
    assert!(text.starts_with("<html>"));
    assert!(text.contains("<title>503 Service Temporarily Unavailable</title>"));
    assert_eq!(server.stats().unavailable, 1);
    Ok(())
}

#[tokio::test]
async fn fault_reset_is_a_connection_error() -> TestResult {
    let server = start(faults("reset=1")).await?;
    let err = post(&server, &chat_body("hi"))
        .await
        .expect_err("a reset must not produce a response");
    assert!(!err.is_timeout(), "{err:?}");
    // The server keeps serving new connections afterwards.
    let err = post(&server, &chat_body("again")).await.expect_err("reset");
    assert!(!err.is_status());
    let stats = server.stats();
    assert_eq!((stats.requests, stats.resets, stats.ok), (2, 2, 0));
    Ok(())
}

#[tokio::test]
async fn fault_malformed_body() -> TestResult {
    let server = start(faults("malformed=1")).await?;
    for stream in [false, true] {
        let mut body = chat_body("hi");
        body["stream"] = json!(stream);
        let resp = post(&server, &body).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = resp.text().await?;
        assert!(!text.is_empty());
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
    assert_eq!(server.stats().malformed, 2);
    assert_eq!(server.stats().ok, 0);
    Ok(())
}

#[tokio::test]
async fn fault_truncated_body() -> TestResult {
    let server = start(faults("truncated=1")).await?;
    let resp = post(&server, &chat_body("hi there")).await?;
    assert_eq!(resp.status(), 200);
    let declared = resp.content_length().expect("content-length");
    assert!(declared > 100);
    let err = resp.bytes().await.expect_err("body must fail");
    assert!(err.is_body() || err.is_decode(), "{err:?}");

    // Streams: some events arrive, then the body fails without [DONE].
    let mut body = chat_body("hi there");
    body["stream"] = json!(true);
    let mut resp = post(&server, &body).await?;
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => panic!("stream ended cleanly"),
            Err(e) => break e,
        }
    };
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    let text = String::from_utf8(received)?;
    assert!(text.starts_with("data: {"), "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("finish_reason\":\"stop"));
    let stats = server.stats();
    assert_eq!((stats.truncated, stats.ok, stats.output_tokens), (2, 0, 0));
    Ok(())
}

#[tokio::test]
async fn fault_hang_then_close() -> TestResult {
    let server = start(MockConfig {
        hang: Duration::from_millis(300),
        ..faults("hang=1")
    })
    .await?;
    let client = client();
    let started = Instant::now();
    let err = client
        .post(url(&server))
        .timeout(Duration::from_secs(2))
        .json(&chat_body("hi"))
        .send()
        .await
        .expect_err("hang ends in a closed connection");
    let elapsed = started.elapsed();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(server.stats().hangs, 1);
    Ok(())
}

#[tokio::test]
async fn shutdown_cancels_hanging_requests() -> TestResult {
    let server = start(faults("hang=1")).await?; // default hang: one hour
    let url = url(&server);
    let request =
        tokio::spawn(async move { client().post(url).json(&chat_body("hi")).send().await });
    while server.stats().hangs == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await?;
    let result = tokio::time::timeout(Duration::from_secs(5), request).await??;
    assert!(result.is_err());
    Ok(())
}

#[tokio::test]
async fn fault_attempts_limit_per_body() -> TestResult {
    let server = start(MockConfig {
        fault_attempts: 2,
        ..faults("500=1")
    })
    .await?;
    let a = chat_body("row A");
    let b = chat_body("row B");
    for (body, want) in [
        (&a, 500),
        (&a, 500),
        (&b, 500),
        (&a, 200),
        (&b, 500),
        (&b, 200),
        (&a, 200),
    ] {
        assert_eq!(post(&server, body).await?.status(), want);
    }
    let stats = server.stats();
    assert_eq!((stats.requests, stats.server_errors, stats.ok), (7, 4, 3));
    Ok(())
}

#[tokio::test]
async fn seeded_faults_are_reproducible() -> TestResult {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let server = start(MockConfig {
            seed: Some(42),
            ..faults("429=0.3,500=0.3")
        })
        .await?;
        let mut statuses = Vec::new();
        for i in 0..30 {
            statuses.push(
                post(&server, &chat_body(&format!("row {i}")))
                    .await?
                    .status()
                    .as_u16(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    for status in [200, 429, 500] {
        assert!(runs[0].contains(&status), "{:?}", runs[0]);
    }
    Ok(())
}

#[tokio::test]
async fn triggers_and_bad_requests() -> TestResult {
    // Triggers win over faults.
    let server = start(faults("429=1")).await?;
    let cases = [
        (
            "please [mock:400] now",
            400,
            "invalid_parameter_error",
            "invalid_request_error",
        ),
        (
            "x [mock:moderation]",
            400,
            "data_inspection_failed",
            "data_inspection_failed",
        ),
        (
            "[mock:401]",
            401,
            "invalid_api_key",
            "invalid_request_error",
        ),
    ];
    for (prompt, status, code, kind) in cases {
        let resp = post(&server, &chat_body(prompt)).await?;
        assert_eq!(resp.status(), status);
        let v: Value = resp.json().await?;
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["error"]["type"], kind);
        assert!(v["error"]["param"].is_null());
        assert!(v["request_id"].is_string());
    }
    let resp = post(&server, &chat_body("[mock:moderation]")).await?;
    let v: Value = resp.json().await?;
    assert_eq!(
        v["error"]["message"],
        "Input data may contain inappropriate content."
    );

    let bad_bodies = [
        "{not json".to_owned(),
        json!({"model": "m"}).to_string(),
        json!({"model": "m", "messages": []}).to_string(),
        json!({"model": "m", "messages": [{"role": "system", "content": "s"}]}).to_string(),
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}).to_string(),
    ];
    for body in bad_bodies {
        let resp = client()
            .post(url(&server))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await?;
        assert_eq!(v["error"]["code"], "invalid_parameter_error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let stats = server.stats();
    assert_eq!(stats.requests, 9);
    assert_eq!(stats.bad_requests, 9);
    assert_eq!(stats.rate_limited, 0);
    Ok(())
}

#[tokio::test]
async fn stats_endpoint_and_not_found() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let c = client();
    for i in 0..5 {
        post(&server, &chat_body(&format!("q{i}")))
            .await?
            .error_for_status()?;
    }
    post(&server, &chat_body("[mock:400]")).await?;
    let root = format!("http://{}", server.addr());
    let resp = c.get(format!("{root}/stats")).send().await?;
    assert_eq!(resp.status(), 200);
    let remote: StatsSnapshot = resp.json().await?;
    assert_eq!(remote, server.stats());
    assert_eq!((remote.requests, remote.ok, remote.bad_requests), (6, 5, 1));

    let resp = c.get(format!("{root}/v1/models")).send().await?;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let resp = c.get(url(&server)).send().await?;
    assert_eq!(resp.status(), 404);
    assert_eq!(server.stats().requests, 6);
    Ok(())
}

#[tokio::test]
async fn latency_delays_answers() -> TestResult {
    let server = start(MockConfig {
        latency: Duration::from_millis(150),
        jitter: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await?;
    let started = Instant::now();
    post(&server, &chat_body("slow"))
        .await?
        .error_for_status()?;
    assert!(started.elapsed() >= Duration::from_millis(150));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let c = c.clone();
        let url = url(&server);
        tasks.spawn(async move {
            let prompt = format!("concurrent prompt number {i}");
            let v: Value = c
                .post(url)
                .json(&chat_body(&prompt))
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, reqwest::Error>(
                v["choices"][0]["message"]["content"] == reply_for(&prompt).as_str(),
            )
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r??);
    }
    assert_eq!(server.stats().ok, 200);
    server.shutdown().await;
    Ok(())
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

#[test]
fn fault_rates_parse() {
    let all = FaultRates::parse(
        "429=0.05,500=0.05,503=0.05,reset=0.05,malformed=0.05,truncated=0.05,hang=0.01",
    )
    .expect("full spec");
    assert_eq!(
        all,
        FaultRates {
            rate_limit: 0.05,
            server_error: 0.05,
            unavailable: 0.05,
            reset: 0.05,
            malformed: 0.05,
            truncated: 0.05,
            hang: 0.01,
        }
    );
    assert!((all.total() - 0.31).abs() < 1e-12);
    let long = FaultRates::parse(" hang=0.1 , rate_limit=0.2,server_error=0.3,unavailable=0.4 ")
        .expect("long names");
    assert_eq!(
        long,
        FaultRates {
            rate_limit: 0.2,
            server_error: 0.3,
            unavailable: 0.4,
            hang: 0.1,
            ..FaultRates::default()
        }
    );
    assert_eq!(FaultRates::parse("").expect("empty"), FaultRates::default());
    assert_eq!(FaultRates::default().total(), 0.0);

    for (spec, needle) in [
        ("429=0.1,bogus=0.1", "bogus"),
        ("429", "`429`"),
        ("500=abc", "abc"),
        ("503=1.5", "503=1.5"),
        ("reset=-0.1", "reset=-0.1"),
        ("429=0.6,500=0.6", "more than 1"),
        ("hang=0.1,hang=0.2", "hang=0.2"),
    ] {
        let err = FaultRates::parse(spec).expect_err(spec);
        assert!(err.contains(needle), "{spec}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Responses API and DashScope native styles, and the modes shared by all styles
// ---------------------------------------------------------------------------------------------

const STREAM_ONLY: &str =
    "This model only support stream mode, please enable the stream parameter to access the model.";
const JSON_WORD: &str = "'messages' must contain the word 'json' in some form, to use \
     'response_format' of type 'json_object'";
const OUTPUT_MODERATION: &str = "Output data may contain inappropriate content.";

fn responses_url(server: &MockServer) -> String {
    format!("{}/responses", server.base_url())
}

/// The DashScope path under the `/api/v1` base (the mock matches by suffix).
fn native_url(server: &MockServer) -> String {
    format!(
        "http://{}/api/v1/services/aigc/text-generation/generation",
        server.addr()
    )
}

async fn post_responses(server: &MockServer, body: &Value) -> reqwest::Result<reqwest::Response> {
    client().post(responses_url(server)).json(body).send().await
}

/// A native request; `sse` adds `X-DashScope-SSE: enable`.
async fn post_native(
    server: &MockServer,
    body: &Value,
    sse: bool,
) -> reqwest::Result<reqwest::Response> {
    let mut req = client().post(native_url(server)).json(body);
    if sse {
        req = req.header("X-DashScope-SSE", "enable");
    }
    req.send().await
}

fn native_body(prompt: &str, parameters: Value) -> Value {
    json!({
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "parameters": parameters
    })
}

/// Parses a Responses SSE body (`event:NAME\ndata:JSON`, no spaces) into (name, data) pairs,
/// checking that each data `type` equals the event name and sequence numbers count from 0.
fn responses_events(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"), "{text}");
    let mut out = Vec::new();
    for (i, block) in text.split("\n\n").filter(|b| !b.is_empty()).enumerate() {
        let (event, data) = block.split_once('\n').expect("two lines");
        let name = event.strip_prefix("event:").expect("event: line");
        let data = data.strip_prefix("data:").expect("data: line");
        assert!(!name.starts_with(' ') && !data.starts_with(' '), "{block}");
        let v: Value = serde_json::from_str(data).expect("event JSON");
        assert_eq!(v["type"], name);
        assert_eq!(v["sequence_number"], i as u64, "{block}");
        out.push((name.to_owned(), v));
    }
    out
}

struct NativeEvent {
    id: u64,
    event: String,
    status: String,
    data: Value,
}

/// Parses a native SSE body: blocks of `id:N`, `event:KIND`, `:HTTP_STATUS/NNN`, `data:JSON`.
fn native_events(text: &str) -> Vec<NativeEvent> {
    text.split("\n\n")
        .filter(|b| !b.trim_end().is_empty())
        .map(|block| {
            let lines: Vec<&str> = block.trim_end_matches('\n').split('\n').collect();
            assert_eq!(lines.len(), 4, "{block}");
            NativeEvent {
                id: lines[0]
                    .strip_prefix("id:")
                    .expect("id:")
                    .parse()
                    .expect("id number"),
                event: lines[1].strip_prefix("event:").expect("event:").to_owned(),
                status: lines[2]
                    .strip_prefix(":HTTP_STATUS/")
                    .expect(":HTTP_STATUS/")
                    .to_owned(),
                data: serde_json::from_str(lines[3].strip_prefix("data:").expect("data:"))
                    .expect("data JSON"),
            }
        })
        .collect()
}

/// Reads a body that must fail midway (a truncated answer); returns what arrived.
async fn read_until_broken(
    mut resp: reqwest::Response,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut received = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => panic!("stream ended cleanly"),
            Err(e) => break e,
        }
    };
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    Ok(String::from_utf8(received)?)
}

#[tokio::test]
async fn responses_plain() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Summarise the rules of chess in one paragraph.";
    let instructions = "Be brief.";
    let resp = post_responses(
        &server,
        &json!({"model": "qwen3-max", "input": prompt, "instructions": instructions,
                "temperature": 0.3, "top_p": 0.9}),
    )
    .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["x-request-id"].to_str()?.to_owned();
    let v: Value = resp.json().await?;
    let reply = reply_for(prompt);
    assert_eq!(v["id"], format!("resp_{request_id}"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "qwen3-max");
    assert!(v["created_at"].as_u64().expect("created_at") > 1_600_000_000);
    assert!(v["incomplete_details"].is_null());
    let output = v["output"].as_array().expect("output");
    assert_eq!(output.len(), 1);
    let msg = &output[0];
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["status"], "completed");
    assert!(msg["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(
        msg["content"],
        json!([{"type": "output_text", "text": reply, "annotations": []}])
    );
    let input = count_tokens(instructions) + 4 + count_tokens(prompt) + 4;
    let output_tokens = count_tokens(&reply);
    assert_eq!(
        v["usage"],
        json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": input + output_tokens})
    );

    // Message-array input with input_text parts, on DashScope's path; max_output_tokens clips.
    let url = format!(
        "http://{}/api/v2/apps/protocols/compatible-mode/v1/responses",
        server.addr()
    );
    let body = json!({"model": "m", "max_output_tokens": 3, "input": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "input_text", "text": prompt}]}
    ]});
    let v: Value = client().post(url).json(&body).send().await?.json().await?;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    let text: String = reply.chars().take(12).collect();
    assert_eq!(v["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(v["usage"]["output_tokens"], 3);
    assert_eq!(
        v["usage"]["input_tokens"],
        count_tokens("sys") + 4 + count_tokens(prompt) + 4
    );

    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.responses_requests, stats.ok),
        (2, 2, 2)
    );
    assert_eq!((stats.chat_requests, stats.native_requests), (0, 0));
    assert_eq!(
        stats.input_tokens,
        2 * input - count_tokens(instructions) + count_tokens("sys")
    );
    assert_eq!(stats.output_tokens, output_tokens + 3);
    Ok(())
}

#[tokio::test]
async fn responses_stream() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Why is the sky blue?";
    let resp = post_responses(
        &server,
        &json!({"model": "qwen3-max", "stream": true, "input": prompt}),
    )
    .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await?;
    assert!(!text.contains("[DONE]"));
    let events = responses_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!((4..=8).contains(&deltas), "{deltas} deltas");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let reply = reply_for(prompt);
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| {
            assert_eq!(v["output_index"], 0);
            assert_eq!(v["content_index"], 0);
            v["delta"].as_str().expect("delta").to_owned()
        })
        .collect();
    assert_eq!(streamed, reply);
    let done = &events[4 + deltas].1;
    assert_eq!(done["text"], reply.as_str());
    let completed = &events.last().expect("events").1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["output"][0]["content"][0]["text"], reply.as_str());
    let input = count_tokens(prompt) + 4;
    assert_eq!(completed["usage"]["input_tokens"], input);
    assert_eq!(completed["usage"]["output_tokens"], count_tokens(&reply));
    assert_eq!(
        completed["usage"]["total_tokens"],
        input + count_tokens(&reply)
    );
    let stats = server.stats();
    assert_eq!((stats.responses_requests, stats.ok), (1, 1));
    assert_eq!(stats.output_tokens, count_tokens(&reply));
    Ok(())
}

#[tokio::test]
async fn native_plain_text_and_message_formats() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Name three primes.";
    let reply = reply_for(prompt);
    let input = count_tokens(prompt) + 4;
    let output = count_tokens(&reply);
    let usage = json!({"input_tokens": input, "output_tokens": output,
        "total_tokens": input + output, "output_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens_details": {"cached_tokens": 0}});

    // `input.prompt`, no result_format: the text format.
    let resp = post_native(
        &server,
        &json!({"model": "qwen-turbo", "input": {"prompt": prompt}, "parameters": {}}),
        false,
    )
    .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["x-request-id"].to_str()?.to_owned();
    let v: Value = resp.json().await?;
    assert_eq!(
        v,
        json!({"request_id": request_id, "output": {"text": reply, "finish_reason": "stop"},
               "usage": usage})
    );

    // Messages with result_format message, on the multimodal path.
    let url = native_url(&server).replace("text-generation", "multimodal-generation");
    let body = native_body(prompt, json!({"result_format": "message", "seed": 1}));
    let v: Value = client().post(url).json(&body).send().await?.json().await?;
    assert!(v["output"]["text"].is_null());
    assert!(v["output"]["finish_reason"].is_null());
    assert_eq!(
        v["output"]["choices"],
        json!([{"finish_reason": "stop", "message":
            {"role": "assistant", "content": reply, "reasoning_content": ""}}])
    );
    assert_eq!(v["usage"], usage);

    // max_tokens clips.
    let body = native_body(prompt, json!({"max_tokens": 2}));
    let v: Value = post_native(&server, &body, false).await?.json().await?;
    assert_eq!(v["output"]["finish_reason"], "length");
    assert_eq!(
        v["output"]["text"],
        reply.chars().take(8).collect::<String>().as_str()
    );
    assert_eq!(v["usage"]["output_tokens"], 2);

    // Neither prompt nor messages.
    let resp = post_native(&server, &json!({"model": "m", "input": {}}), false).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["code"], "InvalidParameter");
    assert_eq!(
        v["message"],
        "Either \"prompt\" or \"messages\" must exist and cannot both be none."
    );
    assert!(v["request_id"].is_string());

    let stats = server.stats();
    assert_eq!(
        (stats.native_requests, stats.ok, stats.bad_requests),
        (4, 3, 1)
    );
    assert_eq!(stats.output_tokens, 2 * output + 2);
    Ok(())
}

#[tokio::test]
async fn native_stream_incremental_and_cumulative() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "List the planets of the solar system.";
    let reply = reply_for(prompt);
    let input = count_tokens(prompt) + 4;
    for incremental in [true, false] {
        let mut params = json!({"result_format": "message"});
        if incremental {
            params["incremental_output"] = json!(true);
        }
        let resp = post_native(&server, &native_body(prompt, params), true).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let text = resp.text().await?;
        // The quirk: the last event ends with one newline, no blank line.
        assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{text}");
        assert!(text.starts_with("id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"));
        assert!(!text.contains("[DONE]"));
        let events = native_events(&text);
        assert!((4..=8).contains(&events.len()), "{} events", events.len());
        let mut so_far = String::new();
        let mut last_output = 0;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.id, i as u64 + 1);
            assert_eq!((e.event.as_str(), e.status.as_str()), ("result", "200"));
            let choice = &e.data["output"]["choices"][0];
            let content = choice["message"]["content"].as_str().expect("content");
            if incremental {
                so_far.push_str(content);
            } else {
                assert!(content.starts_with(&so_far) && content.len() > so_far.len());
                so_far = content.to_owned();
            }
            let last = i + 1 == events.len();
            // The string "null" until the last chunk.
            assert_eq!(choice["finish_reason"], if last { "stop" } else { "null" });
            let usage = &e.data["usage"];
            assert_eq!(usage["input_tokens"], input);
            let out = usage["output_tokens"].as_u64().expect("output_tokens");
            assert_eq!(out, count_tokens(&so_far));
            assert!(out > last_output);
            last_output = out;
            assert_eq!(usage["total_tokens"], input + out);
        }
        assert_eq!(so_far, reply);
        assert_eq!(last_output, count_tokens(&reply));
    }

    // The text format streams output.text the same way.
    let body = json!({"model": "m", "input": {"prompt": prompt},
                      "parameters": {"incremental_output": true}});
    let text = post_native(&server, &body, true).await?.text().await?;
    let events = native_events(&text);
    let joined: String = events
        .iter()
        .map(|e| e.data["output"]["text"].as_str().expect("text"))
        .collect();
    assert_eq!(joined, reply);
    assert_eq!(
        events.last().expect("events").data["output"]["finish_reason"],
        "stop"
    );
    let stats = server.stats();
    assert_eq!((stats.native_requests, stats.ok), (3, 3));
    assert_eq!(stats.output_tokens, 3 * count_tokens(&reply));
    Ok(())
}

#[tokio::test]
async fn thinking_in_every_style() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "If 3x + 7 = 22, what is x?";
    let reply = reply_for(prompt);
    let reasoning = reasoning_for(prompt);
    assert_ne!(reasoning, reply);
    let (r, c) = (count_tokens(&reasoning), count_tokens(&reply));
    let input = count_tokens(prompt) + 4;

    // Chat, plain.
    let mut body = chat_body(prompt);
    body["enable_thinking"] = json!(true);
    let v: Value = post(&server, &body).await?.json().await?;
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], reply.as_str());
    assert_eq!(message["reasoning_content"], reasoning.as_str());
    assert_eq!(v["usage"]["completion_tokens"], r + c);
    assert_eq!(v["usage"]["total_tokens"], input + r + c);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        r
    );

    // Chat, stream: reasoning_content deltas first, then content.
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post(&server, &body).await?.text().await?;
    let events = sse_events(&text);
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e))
        .collect::<Result<_, _>>()?;
    let (mut thought, mut said) = (String::new(), String::new());
    for chunk in &chunks {
        let delta = &chunk["choices"][0]["delta"];
        if let Some(t) = delta["reasoning_content"].as_str() {
            assert!(said.is_empty(), "reasoning after content");
            thought.push_str(t);
        }
        if let Some(t) = delta["content"].as_str() {
            said.push_str(t);
        }
    }
    assert_eq!(
        (thought.as_str(), said.as_str()),
        (reasoning.as_str(), reply.as_str())
    );
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens"], r + c);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], r);

    // Responses, plain and stream.
    let body = json!({"model": "qwen3-max", "input": prompt, "enable_thinking": true});
    let v: Value = post_responses(&server, &body).await?.json().await?;
    let output = v["output"].as_array().expect("output");
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["type"], "reasoning");
    assert!(output[0]["id"].as_str().expect("id").starts_with("rs_"));
    assert_eq!(
        output[0]["summary"],
        json!([{"type": "summary_text", "text": reasoning}])
    );
    assert_eq!(output[1]["content"][0]["text"], reply.as_str());
    assert_eq!(v["usage"]["output_tokens"], r + c);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], r);
    let mut body = body;
    body["stream"] = json!(true);
    let events = responses_events(&post_responses(&server, &body).await?.text().await?);
    assert_eq!(events[2].0, "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "reasoning");
    let summary: String = events
        .iter()
        .filter(|(n, _)| n == "response.reasoning_summary_text.delta")
        .map(|(_, v)| {
            assert_eq!(
                (v["output_index"].as_u64(), v["summary_index"].as_u64()),
                (Some(0), Some(0))
            );
            v["delta"].as_str().expect("delta").to_owned()
        })
        .collect();
    assert_eq!(summary, reasoning);
    let done = events
        .iter()
        .find(|(n, _)| n == "response.reasoning_summary_text.done")
        .expect("summary done");
    assert_eq!(done.1["text"], reasoning.as_str());
    let text_delta = events
        .iter()
        .find(|(n, _)| n == "response.output_text.delta")
        .expect("text delta");
    assert_eq!(text_delta.1["output_index"], 1);
    let completed = &events.last().expect("events").1;
    assert_eq!(completed["type"], "response.completed");
    assert_eq!(completed["response"]["usage"]["output_tokens"], r + c);

    // Native, plain and (incremental) stream.
    let params = json!({"result_format": "message", "enable_thinking": true});
    let v: Value = post_native(&server, &native_body(prompt, params.clone()), false)
        .await?
        .json()
        .await?;
    let message = &v["output"]["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], reasoning.as_str());
    assert_eq!(message["content"], reply.as_str());
    assert_eq!(v["usage"]["output_tokens"], r + c);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], r);
    let mut params = params;
    params["incremental_output"] = json!(true);
    let text = post_native(&server, &native_body(prompt, params), true)
        .await?
        .text()
        .await?;
    let events = native_events(&text);
    let (mut thought, mut said) = (String::new(), String::new());
    for e in &events {
        let m = &e.data["output"]["choices"][0]["message"];
        let (t, s) = (
            m["reasoning_content"].as_str().expect("reasoning_content"),
            m["content"].as_str().expect("content"),
        );
        assert!(t.is_empty() || s.is_empty());
        assert!(t.is_empty() || said.is_empty(), "reasoning after content");
        thought.push_str(t);
        said.push_str(s);
        assert_eq!(
            e.data["usage"]["output_tokens"],
            count_tokens(&thought) + count_tokens(&said)
        );
        assert_eq!(
            e.data["usage"]["output_tokens_details"]["reasoning_tokens"],
            count_tokens(&thought)
        );
    }
    assert_eq!(
        (thought.as_str(), said.as_str()),
        (reasoning.as_str(), reply.as_str())
    );

    let stats = server.stats();
    assert_eq!(stats.ok, 6);
    assert_eq!(stats.reasoning_tokens, 6 * r);
    assert_eq!(stats.output_tokens, 6 * (r + c));
    assert_eq!(
        (
            stats.chat_requests,
            stats.responses_requests,
            stats.native_requests
        ),
        (2, 2, 2)
    );

    // Thinking needs incremental_output on native streams.
    let params = json!({"result_format": "message", "enable_thinking": true});
    let resp = post_native(&server, &native_body(prompt, params), true).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["code"], "InvalidParameter");
    assert_eq!(
        v["message"],
        "The incremental_output parameter must be \"true\" when enable_thinking is true"
    );
    assert_eq!(server.stats().bad_requests, 1);
    Ok(())
}

#[tokio::test]
async fn thinking_budget_clips_reasoning() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Plan a three-day trip to Kyoto.";
    let clipped: String = reasoning_for(prompt).chars().take(20).collect();
    let reply = reply_for(prompt);
    let mut body = chat_body(prompt);
    body["enable_thinking"] = json!(true);
    body["thinking_budget"] = json!(5);
    let v: Value = post(&server, &body).await?.json().await?;
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        clipped.as_str()
    );
    assert_eq!(v["choices"][0]["message"]["content"], reply.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        5
    );
    assert_eq!(v["usage"]["completion_tokens"], 5 + count_tokens(&reply));

    let params = json!({"result_format": "message", "enable_thinking": true, "thinking_budget": 5});
    let v: Value = post_native(&server, &native_body(prompt, params), false)
        .await?
        .json()
        .await?;
    assert_eq!(
        v["output"]["choices"][0]["message"]["reasoning_content"],
        clipped.as_str()
    );
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 5 + count_tokens(&reply));
    assert_eq!(server.stats().reasoning_tokens, 10);
    Ok(())
}

#[tokio::test]
async fn json_mode_needs_the_word_json() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Give the capital of France.";
    let content = serde_json::to_string(&json!({"answer": reply_for(prompt)}))?;
    let format = json!({"type": "json_object"});

    // Without the word: 400 in every style.
    let mut chat = chat_body(prompt);
    chat["response_format"] = format.clone();
    let resp = post(&server, &chat).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(
        (
            &v["error"]["code"],
            &v["error"]["type"],
            &v["error"]["message"]
        ),
        (
            &json!("invalid_parameter_error"),
            &json!("invalid_request_error"),
            &json!(JSON_WORD)
        )
    );
    let responses = json!({"model": "m", "input": prompt, "text": {"format": format}});
    let resp = post_responses(&server, &responses).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "invalid_parameter_error");
    assert_eq!(v["error"]["message"], JSON_WORD);
    let native = native_body(prompt, json!({"response_format": format}));
    let resp = post_native(&server, &native, false).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(
        (&v["code"], &v["message"]),
        (&json!("InvalidParameter"), &json!(JSON_WORD))
    );

    // With it (in any message, or in the instructions, any case): `{"answer": reply}`.
    chat["messages"] = json!([{"role": "system", "content": "Reply in JSON."},
                              {"role": "user", "content": prompt}]);
    let v: Value = post(&server, &chat).await?.json().await?;
    assert_eq!(v["choices"][0]["message"]["content"], content.as_str());
    assert_eq!(
        v["usage"]["prompt_tokens"],
        count_tokens("Reply in JSON.") + 4 + count_tokens(prompt) + 4
    );
    assert_eq!(v["usage"]["completion_tokens"], count_tokens(&content));
    let mut responses = responses;
    responses["instructions"] = json!("answer as json");
    let v: Value = post_responses(&server, &responses).await?.json().await?;
    assert_eq!(v["output"][0]["content"][0]["text"], content.as_str());
    assert_eq!(v["usage"]["output_tokens"], count_tokens(&content));
    let native = native_body(
        &format!("{prompt} Use Json."),
        json!({"response_format": {"type": "json_object"}, "result_format": "message"}),
    );
    let v: Value = post_native(&server, &native, false).await?.json().await?;
    let want =
        serde_json::to_string(&json!({"answer": reply_for(&format!("{prompt} Use Json."))}))?;
    assert_eq!(
        v["output"]["choices"][0]["message"]["content"],
        want.as_str()
    );

    let stats = server.stats();
    assert_eq!((stats.bad_requests, stats.ok), (3, 3));
    Ok(())
}

#[tokio::test]
async fn json_schema_instances() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Describe a city.";
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "population": {"type": "integer"},
            "area": {"type": "number"},
            "coastal": {"type": "boolean"},
            "kind": {"type": "string", "enum": ["town", "city"]},
            "districts": {"type": "array", "items": {"type": "string"}},
            "mayor": {"type": "object", "properties": {"age": {"type": "integer", "enum": [52]}}},
            "notes": {}
        },
        "required": ["name"],
        "additionalProperties": false
    });
    let reply = reply_for(prompt);
    let n = count_tokens(prompt);
    // Key order as in the schema, compact.
    let want = format!(
        r#"{{"name":{r},"population":{n},"area":{n}.0,"coastal":true,"kind":"town","districts":[{r}],"mayor":{{"age":52}},"notes":null}}"#,
        r = serde_json::to_string(&reply)?
    );
    // The schema is serialized with sorted keys by serde_json; send it in schema order.
    let schema_text = r#"{"type":"object","properties":{"name":{"type":"string"},"population":{"type":"integer"},"area":{"type":"number"},"coastal":{"type":"boolean"},"kind":{"type":"string","enum":["town","city"]},"districts":{"type":"array","items":{"type":"string"}},"mayor":{"type":"object","properties":{"age":{"type":"integer","enum":[52]}}},"notes":{}},"required":["name"],"additionalProperties":false}"#;
    assert_eq!(serde_json::from_str::<Value>(schema_text)?, schema);

    let chat = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{prompt}"}}],"response_format":{{"type":"json_schema","json_schema":{{"name":"City","strict":true,"schema":{schema_text}}}}}}}"#
    );
    let resp = client()
        .post(url(&server))
        .header("content-type", "application/json")
        .body(chat)
        .send()
        .await?;
    let v: Value = resp.json().await?;
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(v["usage"]["completion_tokens"], count_tokens(&want));

    // Responses: the schema sits flat under text.format; no "json" word needed.
    let responses = format!(
        r#"{{"model":"m","input":"{prompt}","text":{{"format":{{"type":"json_schema","name":"City","schema":{schema_text}}}}}}}"#
    );
    let v: Value = client()
        .post(responses_url(&server))
        .header("content-type", "application/json")
        .body(responses)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v["output"][0]["content"][0]["text"], want.as_str());

    let native = format!(
        r#"{{"model":"m","input":{{"prompt":"{prompt}"}},"parameters":{{"response_format":{{"type":"json_schema","json_schema":{{"name":"City","schema":{schema_text}}}}}}}}}"#
    );
    let v: Value = client()
        .post(native_url(&server))
        .header("content-type", "application/json")
        .body(native)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(v["output"]["text"], want.as_str());
    assert_eq!(server.stats().ok, 3);
    Ok(())
}

#[tokio::test]
async fn badjson_breaks_json_answers_only() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "json please [mock:badjson]";
    let reply = reply_for(prompt);
    let mut body = chat_body(prompt);
    body["response_format"] = json!({"type": "json_object"});
    let resp = post(&server, &body).await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(
        content,
        format!(
            "Sure! Here it is: {{\"answer\": {}",
            serde_json::to_string(&reply)?
        )
    );
    assert!(serde_json::from_str::<Value>(content).is_err());
    assert_eq!(v["usage"]["completion_tokens"], count_tokens(content));

    let schema =
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
    let native = native_body(prompt, json!({"response_format": schema}));
    let v: Value = post_native(&server, &native, false).await?.json().await?;
    assert!(serde_json::from_str::<Value>(v["output"]["text"].as_str().expect("text")).is_err());

    // Without a JSON format the trigger is ignored.
    let v: Value = post(&server, &chat_body(prompt)).await?.json().await?;
    assert_eq!(v["choices"][0]["message"]["content"], reply.as_str());
    let stats = server.stats();
    assert_eq!((stats.ok, stats.bad_requests), (3, 0));
    Ok(())
}

#[tokio::test]
async fn partial_mode() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let prompt = "Finish this function only.";
    let prefix = "def add(a, b):\n    ";
    let messages = json!([
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": prefix, "partial": true}
    ]);
    let input = count_tokens(prompt) + 4 + count_tokens(prefix) + 4;
    let reply = reply_for(prompt);
    let body = json!({"model": "qwen-plus", "messages": messages});
    let v: Value = post(&server, &body).await?.json().await?;
    assert_eq!(v["choices"][0]["message"]["content"], reply.as_str());
    assert_eq!(v["usage"]["prompt_tokens"], input);
    let native = json!({"model": "qwen-plus", "input": {"messages": messages}});
    let v: Value = post_native(&server, &native, false).await?.json().await?;
    assert_eq!(v["output"]["text"], reply.as_str());
    assert_eq!(v["usage"]["input_tokens"], input);

    // Not with thinking.
    let body = json!({"model": "qwen-plus", "messages": messages, "enable_thinking": true});
    let resp = post(&server, &body).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "invalid_parameter_error");
    assert_eq!(
        v["error"]["message"],
        "partial mode is not supported in thinking mode"
    );
    let native = json!({"model": "qwen-plus", "input": {"messages": messages},
                        "parameters": {"enable_thinking": true}});
    let resp = post_native(&server, &native, false).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["code"], "InvalidParameter");
    let stats = server.stats();
    assert_eq!((stats.ok, stats.bad_requests), (2, 2));
    Ok(())
}

#[tokio::test]
async fn stream_only_models() -> TestResult {
    let server = start(MockConfig::default()).await?;
    for model in ["qwq-plus", "qvq-max", "mock-stream-only"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let resp = post(&server, &body).await?;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await?;
        assert_eq!(v["error"]["code"], "invalid_parameter_error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], STREAM_ONLY);
        assert!(v["error"]["param"].is_null());
        assert!(v["request_id"].is_string());
    }
    let resp = post_responses(&server, &json!({"model": "qwq-32b", "input": "hi"})).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["message"], STREAM_ONLY);
    let native = json!({"model": "qwq-plus", "input": {"prompt": "hi"}});
    let resp = post_native(&server, &native, false).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(
        (&v["code"], &v["message"]),
        (&json!("InvalidParameter"), &json!(STREAM_ONLY))
    );
    assert_eq!(server.stats().bad_requests, 5);

    // Streams work.
    let body = json!({"model": "qwq-plus", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let text = post(&server, &body)
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert!(text.ends_with("data: [DONE]\n\n"));
    let body = json!({"model": "qwq-plus", "stream": true, "input": "hi"});
    let text = post_responses(&server, &body)
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert!(text.contains("event:response.completed\n"));
    let text = post_native(&server, &native, true)
        .await?
        .error_for_status()?
        .text()
        .await?;
    assert_eq!(
        native_events(&text).last().expect("events").data["output"]["finish_reason"],
        "stop"
    );
    let stats = server.stats();
    assert_eq!((stats.ok, stats.bad_requests), (3, 5));
    Ok(())
}

#[tokio::test]
async fn output_moderation() -> TestResult {
    let server = start(faults("429=1")).await?; // triggers win over faults
    let prompt = "Tell me a story [mock:moderation-output]";
    let reply = reply_for(prompt);

    // Non-streaming: a plain 400 in each style.
    let resp = post(&server, &chat_body(prompt)).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "data_inspection_failed");
    assert_eq!(v["error"]["type"], "data_inspection_failed");
    assert_eq!(v["error"]["message"], OUTPUT_MODERATION);
    let resp = post_responses(&server, &json!({"model": "m", "input": prompt})).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "data_inspection_failed");
    let native = json!({"model": "m", "input": {"prompt": prompt},
                        "parameters": {"incremental_output": true}});
    let resp = post_native(&server, &native, false).await?;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await?;
    assert_eq!(
        (&v["code"], &v["message"]),
        (&json!("DataInspectionFailed"), &json!(OUTPUT_MODERATION))
    );

    // Chat stream: role chunk, two content chunks, the error event, the end (no [DONE]).
    let mut body = chat_body(prompt);
    body["stream"] = json!(true);
    let resp = post(&server, &body).await?;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await?;
    let events = sse_events(&text);
    assert_eq!(events.len(), 4);
    assert!(!text.contains("[DONE]"));
    let error: Value = serde_json::from_str(events[3])?;
    assert_eq!(
        error["error"],
        json!({"code": "data_inspection_failed", "type": "data_inspection_failed",
               "message": OUTPUT_MODERATION, "param": null})
    );
    assert!(error["request_id"].is_string());
    let mut said = String::new();
    for e in &events[1..3] {
        let chunk: Value = serde_json::from_str(e)?;
        said.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content"),
        );
    }
    assert!(!said.is_empty() && reply.starts_with(&said) && said != reply);

    // Responses stream: ... two text deltas, then `event:error`.
    let body = json!({"model": "m", "input": prompt, "stream": true});
    let text = post_responses(&server, &body).await?.text().await?;
    let events = responses_events(&text);
    let (name, error) = events.last().expect("events");
    assert_eq!(name, "error");
    assert_eq!(
        *error,
        json!({"type": "error", "code": "data_inspection_failed", "message": OUTPUT_MODERATION,
               "param": null, "sequence_number": events.len() - 1})
    );
    let deltas = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 2);
    assert!(!events.iter().any(|(n, _)| n == "response.completed"));

    // Native stream: two results, then the error event (the last, so it ends in one newline).
    let text = post_native(&server, &native, true).await?.text().await?;
    assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{text}");
    let events = native_events(&text);
    assert_eq!(events.len(), 3);
    assert!(
        events[..2]
            .iter()
            .all(|e| e.event == "result" && e.status == "200")
    );
    let e = &events[2];
    assert_eq!(
        (e.id, e.event.as_str(), e.status.as_str()),
        (3, "error", "400")
    );
    assert_eq!(e.data["code"], "DataInspectionFailed");
    assert_eq!(e.data["message"], OUTPUT_MODERATION);
    assert_eq!(e.data["request_id"], events[0].data["request_id"]);

    let stats = server.stats();
    assert_eq!((stats.requests, stats.bad_requests), (6, 6));
    assert_eq!(
        (stats.ok, stats.rate_limited, stats.output_tokens),
        (0, 0, 0)
    );
    Ok(())
}

#[tokio::test]
async fn triggers_in_other_styles() -> TestResult {
    let server = start(MockConfig::default()).await?;
    let cases = [
        (
            "[mock:400]",
            400,
            "invalid_parameter_error",
            "InvalidParameter",
        ),
        (
            "[mock:moderation]",
            400,
            "data_inspection_failed",
            "DataInspectionFailed",
        ),
        ("[mock:401]", 401, "invalid_api_key", "InvalidApiKey"),
    ];
    for (prompt, status, openai_code, native_code) in cases {
        let resp = post_responses(&server, &json!({"model": "m", "input": prompt})).await?;
        assert_eq!(resp.status(), status);
        let v: Value = resp.json().await?;
        assert_eq!(v["error"]["code"], openai_code);
        let native = json!({"model": "m", "input": {"prompt": prompt}});
        let resp = post_native(&server, &native, true).await?;
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: Value = resp.json().await?;
        assert_eq!(v["code"], native_code);
        assert!(v["message"].is_string() && v["request_id"].is_string());
    }
    let stats = server.stats();
    assert_eq!((stats.requests, stats.bad_requests), (6, 6));
    assert_eq!((stats.responses_requests, stats.native_requests), (3, 3));
    Ok(())
}

#[tokio::test]
async fn native_error_bodies() -> TestResult {
    let server = start(MockConfig {
        retry_after: Duration::from_millis(1500),
        ..faults("429=1")
    })
    .await?;
    let native = json!({"model": "m", "input": {"prompt": "hi"}});
    let resp = post_native(&server, &native, false).await?;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    let v: Value = resp.json().await?;
    let id = v["request_id"].as_str().expect("request_id").to_owned();
    assert_eq!(
        v,
        json!({"request_id": id, "code": "Throttling.RateQuota",
               "message": "Requests rate limit exceeded, please try again later."})
    );
    // Responses uses the OpenAI shape.
    let resp = post_responses(&server, &json!({"model": "m", "input": "hi"})).await?;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "limit_requests");

    let server = start(faults("500=1")).await?;
    let resp = post_native(&server, &native, true).await?;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await?;
    assert_eq!(v["code"], "InternalError");
    assert!(v["message"].is_string() && v["request_id"].is_string());

    let server = start(MockConfig::default()).await?;
    let resp = post_native(
        &server,
        &json!({"model": "m", "input": {"prompt": "[mock:401]"}}),
        false,
    )
    .await?;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await?;
    let id = v["request_id"].as_str().expect("request_id").to_owned();
    assert_eq!(
        v,
        json!({"request_id": id, "code": "InvalidApiKey", "message": "Invalid API-key provided."})
    );
    Ok(())
}

#[tokio::test]
async fn truncated_streams_in_every_style() -> TestResult {
    let server = start(faults("truncated=1")).await?;
    let prompt = "Tell me about rivers.";

    let mut body = chat_body(prompt);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = read_until_broken(post(&server, &body).await?).await?;
    assert!(text.starts_with("data: {"), "{text}");
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));

    let body = json!({"model": "m", "input": prompt, "stream": true, "enable_thinking": true});
    let resp = post_responses(&server, &body).await?;
    assert_eq!(resp.status(), 200);
    let text = read_until_broken(resp).await?;
    let events = responses_events(&text);
    assert!(events.len() >= 3, "{text}");
    assert!(!text.contains("response.completed"));

    let native = json!({"model": "m", "input": {"prompt": prompt},
                        "parameters": {"incremental_output": true}});
    let text = read_until_broken(post_native(&server, &native, true).await?).await?;
    let events = native_events(&text);
    assert!(!events.is_empty(), "{text}");
    assert!(
        events
            .iter()
            .all(|e| e.data["output"]["finish_reason"] == "null")
    );

    // Non-streaming native and responses bodies are cut in half too.
    for resp in [
        post_native(&server, &native, false).await?,
        post_responses(&server, &json!({"model": "m", "input": prompt})).await?,
    ] {
        assert!(resp.content_length().expect("content-length") > 100);
        assert!(resp.bytes().await.is_err());
    }
    let stats = server.stats();
    assert_eq!((stats.truncated, stats.ok, stats.output_tokens), (5, 0, 0));
    Ok(())
}

#[tokio::test]
async fn malformed_in_other_styles() -> TestResult {
    let server = start(faults("malformed=1")).await?;
    for resp in [
        post_responses(
            &server,
            &json!({"model": "m", "input": "hi", "stream": true}),
        )
        .await?,
        post_native(
            &server,
            &json!({"model": "m", "input": {"prompt": "hi"}}),
            true,
        )
        .await?,
    ] {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let text = resp.text().await?;
        assert!(text.starts_with('{'));
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
    assert_eq!(server.stats().malformed, 2);
    Ok(())
}

//! In-process tests of the mock Chat Completions endpoint (`batchgen::mock`), driven with
//! reqwest over loopback.

use std::time::{Duration, Instant};

use batchgen::mock::{FaultRates, MockConfig, MockServer, StatsSnapshot, count_tokens, reply_for};
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

//! In-process tests of the mock endpoint's injected faults (429, 500, 503, reset, malformed,
//! truncated, hang), their per-body attempt limit and seeding, in every style.

use std::time::{Duration, Instant};

use batchgen::mock::MockConfig;
use serde_json::{Value, json};

mod mock_common;
use mock_common::{
    TestResult, chat_body, client, faults, native_events, post, post_native, post_responses,
    read_until_broken, responses_events, start, url,
};

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

//! In-process tests of the mock endpoint as a server: `/stats`, 404s, latency and many
//! concurrent requests.

use std::time::{Duration, Instant};

use batchgen::mock::{MockConfig, StatsSnapshot, reply_for};
use serde_json::Value;

mod mock_common;
use mock_common::{TestResult, chat_body, client, post, start, url};

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

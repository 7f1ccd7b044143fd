//! In-process tests of the mock endpoint's Chat Completions style: plain and streamed answers, content
//! parts, max tokens, the triggers and the bad requests.

use batchgen::mock::{MockConfig, count_tokens, reply_for};
use serde_json::{Value, json};

mod mock_common;
use mock_common::{TestResult, chat_body, client, faults, post, sse_events, start, url};

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

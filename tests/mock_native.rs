//! In-process tests of the mock endpoint's DashScope native style: the text and message formats,
//! incremental and cumulative streams, and the native error bodies.

use std::time::Duration;

use batchgen::mock::{MockConfig, count_tokens, reply_for};
use serde_json::{Value, json};

mod mock_common;
use mock_common::{
    TestResult, client, faults, native_body, native_events, native_url, post_native,
    post_responses, start,
};

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

//! In-process tests of the mock endpoint's Responses API style: the plain body and the event
//! stream.

use batchgen::mock::{MockConfig, count_tokens, reply_for};
use serde_json::{Value, json};

mod mock_common;
use mock_common::{TestResult, client, post_responses, responses_events, start};

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

//! In-process tests of the mock endpoint's modes shared by all styles: thinking and its budget,
//! JSON mode and JSON schemas, `[mock:badjson]`, partial mode, streaming-only models, output
//! moderation and the triggers.

use batchgen::mock::{MockConfig, count_tokens, reasoning_for, reply_for};
use serde_json::{Value, json};

mod mock_common;
use mock_common::{
    JSON_WORD, OUTPUT_MODERATION, STREAM_ONLY, TestResult, chat_body, client, faults, native_body,
    native_events, native_url, post, post_native, post_responses, responses_events, responses_url,
    sse_events, start, url,
};

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

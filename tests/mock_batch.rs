//! In-process tests of the mock's Batch API over loopback HTTP: upload, create, the lifecycle
//! to completed and the output file; validation failures; per-line errors; expiry; cancel with
//! partial output; listing; control-call faults; the stats counters.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use batchgen::mock::{FaultRates, MockConfig, MockServer};
use serde_json::{Value, json};

mod mock_common;
use mock_common::{TestResult, chat_body, client, post, start};

const CHAT: &str = "/v1/chat/completions";

fn cfg() -> MockConfig {
    MockConfig {
        batch_step: Duration::from_millis(50),
        seed: Some(11),
        ..MockConfig::default()
    }
}

fn line(id: &str, prompt: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": CHAT, "body": chat_body(prompt)}).to_string()
}

fn jsonl(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Uploads `text` as a multipart form (`purpose`, `file`); returns the response.
async fn upload_as(
    server: &MockServer,
    purpose: &str,
    text: &str,
) -> reqwest::Result<reqwest::Response> {
    let boundary = "mockbatchboundary7f3a";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    client()
        .post(format!("{}/files", server.base_url()))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
}

async fn upload(server: &MockServer, text: &str) -> Result<String, Box<dyn std::error::Error>> {
    let resp = upload_as(server, "batch", text).await?;
    assert_eq!(resp.status(), 200);
    let file: Value = resp.json().await?;
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["bytes"], text.len());
    assert_eq!(file["filename"], "in.jsonl");
    Ok(file["id"].as_str().unwrap_or_default().to_owned())
}

async fn create(
    server: &MockServer,
    file_id: &str,
    endpoint: &str,
) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}/batches", server.base_url()))
        .json(&json!({"input_file_id": file_id, "endpoint": endpoint,
            "completion_window": "24h", "metadata": {"batchgen_file": "h1"}}))
        .send()
        .await
}

/// Uploads `lines` and creates a batch on the chat endpoint; returns the batch object.
async fn submit(
    server: &MockServer,
    lines: &[String],
) -> Result<Value, Box<dyn std::error::Error>> {
    let file_id = upload(server, &jsonl(lines)).await?;
    let resp = create(server, &file_id, CHAT).await?;
    assert_eq!(resp.status(), 200);
    let batch: Value = resp.json().await?;
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["input_file_id"], file_id.as_str());
    Ok(batch)
}

async fn get(server: &MockServer, path: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let resp = client()
        .get(format!("{}{path}", server.base_url()))
        .send()
        .await?;
    assert_eq!(resp.status(), 200, "{path}");
    Ok(resp.json().await?)
}

/// Polls the batch until it is terminal (a few steps), recording each status seen.
async fn wait(
    server: &MockServer,
    batch: &Value,
) -> Result<(Value, Vec<String>), Box<dyn std::error::Error>> {
    let path = format!("/batches/{}", batch["id"].as_str().unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let b = get(server, &path).await?;
        let status = b["status"].as_str().unwrap_or_default().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if ["completed", "failed", "expired", "cancelled"].contains(&status.as_str()) {
            return Ok((b, seen));
        }
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The lines of a file's content.
async fn content(
    server: &MockServer,
    file_id: &Value,
) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let id = file_id.as_str().expect("a file id");
    let text = client()
        .get(format!("{}/files/{id}/content", server.base_url()))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect())
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_batch_runs_to_completed_with_shuffled_output() -> TestResult {
    let server = start(cfg()).await?;
    let lines: Vec<String> = (0..8)
        .map(|i| line(&format!("row-{i}"), &format!("Say {i}")))
        .collect();
    let batch = submit(&server, &lines).await?;
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["model"], "qwen-plus");
    assert_eq!(batch["metadata"]["batchgen_file"], "h1");
    assert!(batch["output_file_id"].is_null() && batch["usage"].is_null());
    let (done, seen) = wait(&server, &batch).await?;
    assert_eq!(seen.last().map(String::as_str), Some("completed"));
    for s in &seen {
        assert!(
            ["validating", "in_progress", "finalizing", "completed"].contains(&s.as_str()),
            "{seen:?}"
        );
    }
    assert_eq!(
        done["request_counts"],
        json!({"total": 8, "completed": 8, "failed": 0})
    );
    assert!(done["error_file_id"].is_null() && done["errors"].is_null());
    for field in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[field].is_u64(), "{field}: {done}");
    }
    assert!(done["failed_at"].is_null() && done["cancelled_at"].is_null());

    let out = content(&server, &done["output_file_id"]).await?;
    let got = ids(&out);
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!((got.len(), unique.len()), (8, 8));
    let input_order: Vec<String> = (0..8).map(|i| format!("row-{i}")).collect();
    assert_ne!(got, input_order, "output in input order");
    let mut input_tokens = 0;
    for l in &out {
        assert!(
            l["id"]
                .as_str()
                .is_some_and(|s| s.starts_with("batch_req_"))
        );
        assert!(l["error"].is_null());
        assert_eq!(l["response"]["status_code"], 200);
        let body = &l["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        input_tokens += body["usage"]["prompt_tokens"].as_u64().expect("usage");
    }
    assert_eq!(done["usage"]["input_tokens"], input_tokens);
    assert!(done["usage"]["output_tokens"].as_u64() > Some(0));

    let stats = server.stats();
    assert_eq!(stats.files_uploaded, 1);
    assert_eq!(stats.batch_lines_uploaded, 8);
    assert_eq!(stats.batches_created, 1);
    assert_eq!(stats.batch_lines_answered, 8);
    assert_eq!(
        (stats.requests, stats.ok),
        (0, 0),
        "batch lines are not sync requests"
    );
    let served: Value = get(&server, "/stats").await?;
    assert_eq!(served["batch_lines_answered"], 8);

    // The same reply a synchronous request with that body gets.
    let sync: Value = post(&server, &chat_body("Say 3")).await?.json().await?;
    let line3 = out
        .iter()
        .find(|l| l["custom_id"] == "row-3")
        .expect("row-3");
    assert_eq!(
        line3["response"]["body"]["choices"][0]["message"]["content"],
        sync["choices"][0]["message"]["content"]
    );
    assert_eq!(line3["response"]["body"]["usage"], sync["usage"]);
    Ok(())
}

#[tokio::test]
async fn the_responses_endpoint_is_served_too() -> TestResult {
    let server = start(cfg()).await?;
    let url = "/v1/responses";
    let text = jsonl(&[json!({"custom_id": "a", "method": "POST", "url": url,
        "body": {"model": "qwen-plus", "input": "Hello there"}})
    .to_string()]);
    let file_id = upload(&server, &text).await?;
    let batch: Value = create(&server, &file_id, url).await?.json().await?;
    let (done, _) = wait(&server, &batch).await?;
    assert_eq!(done["status"], "completed");
    let out = content(&server, &done["output_file_id"]).await?;
    assert_eq!(out[0]["response"]["body"]["object"], "response");
    assert!(out[0]["response"]["body"]["usage"]["input_tokens"].as_u64() > Some(0));
    Ok(())
}

#[tokio::test]
async fn invalid_lines_fail_the_batch_with_their_line_numbers() -> TestResult {
    let server = start(cfg()).await?;
    let other_model = json!({"custom_id": "c", "method": "POST", "url": CHAT,
        "body": {"model": "qwen-max", "messages": [{"role": "user", "content": "x"}]}});
    let lines = [
        line("a", "fine"),
        line("a", "duplicate"),
        other_model.to_string(),
        json!({"method": "POST", "url": CHAT, "body": chat_body("no id")}).to_string(),
        line("e", "bad [mock:batch-invalid]"),
        json!({"custom_id": "f", "method": "GET", "url": CHAT, "body": chat_body("x")}).to_string(),
        json!({"custom_id": "g", "method": "POST", "url": "/v1/responses", "body": chat_body("x")})
            .to_string(),
        "not json".to_owned(),
    ];
    let batch = submit(&server, &lines).await?;
    let (done, _) = wait(&server, &batch).await?;
    assert_eq!(done["status"], "failed");
    assert!(done["failed_at"].is_u64() && done["in_progress_at"].is_null());
    assert!(done["output_file_id"].is_null() && done["error_file_id"].is_null());
    let errors = done["errors"]["data"].as_array().expect("errors.data");
    let got: Vec<(u64, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap_or(0),
                e["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "duplicate_custom_id"),
            (3, "mismatched_model"),
            (4, "missing_custom_id"),
            (5, "mock_invalid_line"),
            (6, "invalid_method"),
            (7, "invalid_url"),
            (8, "invalid_json_line"),
        ]
    );
    assert!(errors.iter().all(|e| e["message"].is_string()));
    assert_eq!(server.stats().batch_lines_answered, 0);
    Ok(())
}

#[tokio::test]
async fn failing_lines_go_to_the_error_file() -> TestResult {
    let server = start(cfg()).await?;
    let lines = [
        line("ok-1", "hello"),
        line("bad", "x [mock:400]"),
        line("ok-2", "hello again"),
        line("mod", "x [mock:moderation]"),
    ];
    let batch = submit(&server, &lines).await?;
    let (done, _) = wait(&server, &batch).await?;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["request_counts"],
        json!({"total": 4, "completed": 2, "failed": 2})
    );
    let mut out = ids(&content(&server, &done["output_file_id"]).await?);
    out.sort();
    assert_eq!(out, ["ok-1", "ok-2"]);
    let errors = content(&server, &done["error_file_id"]).await?;
    assert_eq!(errors.len(), 2);
    for e in &errors {
        assert!(e["error"].is_null());
        assert_eq!(e["response"]["status_code"], 400);
        let code = &e["response"]["body"]["error"]["code"];
        match e["custom_id"].as_str() {
            Some("bad") => assert_eq!(code, "invalid_parameter_error"),
            Some("mod") => assert_eq!(code, "data_inspection_failed"),
            other => panic!("unexpected line {other:?}"),
        }
    }
    assert_eq!(server.stats().batch_lines_answered, 4);
    Ok(())
}

#[tokio::test]
async fn marked_lines_expire_and_the_rest_are_kept() -> TestResult {
    let server = start(cfg()).await?;
    let lines = [
        line("r0", "one"),
        line("r1", "two [mock:batch-expire]"),
        line("r2", "three"),
        line("r3", "four [mock:batch-expire]"),
        line("r4", "five"),
    ];
    let batch = submit(&server, &lines).await?;
    let (done, _) = wait(&server, &batch).await?;
    assert_eq!(done["status"], "expired");
    assert!(done["expired_at"].is_u64() && done["completed_at"].is_null());
    let mut out = ids(&content(&server, &done["output_file_id"]).await?);
    out.sort();
    assert_eq!(out, ["r0", "r2", "r4"]);
    let errors = content(&server, &done["error_file_id"]).await?;
    let mut expired = ids(&errors);
    expired.sort();
    assert_eq!(expired, ["r1", "r3"]);
    for e in &errors {
        assert!(e["response"].is_null());
        assert_eq!(e["error"]["code"], "batch_expired");
    }
    assert_eq!(server.stats().batch_lines_answered, 3);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_batch_keeps_its_first_half() -> TestResult {
    let server = start(MockConfig {
        batch_step: Duration::from_millis(300),
        ..cfg()
    })
    .await?;
    let lines: Vec<String> = (0..4).map(|i| line(&format!("r{i}"), "hello")).collect();
    let batch = submit(&server, &lines).await?;
    let id = batch["id"].as_str().unwrap_or_default();
    let cancel = |id: String| {
        let url = format!("{}/batches/{id}/cancel", server.base_url());
        async move { client().post(url).send().await }
    };
    let resp = cancel(id.to_owned()).await?;
    assert_eq!(resp.status(), 200);
    let cancelling: Value = resp.json().await?;
    assert_eq!(cancelling["status"], "cancelling");
    assert!(cancelling["cancelling_at"].is_u64());
    let (done, seen) = wait(&server, &batch).await?;
    assert_eq!(seen, ["cancelling", "cancelled"]);
    assert!(done["cancelled_at"].is_u64());
    assert_eq!(
        done["request_counts"],
        json!({"total": 4, "completed": 2, "failed": 2})
    );
    let mut out = ids(&content(&server, &done["output_file_id"]).await?);
    out.sort();
    assert_eq!(out, ["r0", "r1"]);
    let errors = content(&server, &done["error_file_id"]).await?;
    let mut rest = ids(&errors);
    rest.sort();
    assert_eq!(rest, ["r2", "r3"]);
    assert!(
        errors
            .iter()
            .all(|e| e["error"]["code"] == "batch_cancelled")
    );
    // A second cancel changes nothing.
    assert_eq!(cancel(id.to_owned()).await?.status(), 200);
    let stats = server.stats();
    assert_eq!(
        (stats.batches_cancelled, stats.batch_lines_answered),
        (1, 2)
    );

    // A finished batch cannot be cancelled.
    let other = submit(&server, &lines[..1]).await?;
    let (finished, _) = wait(&server, &other).await?;
    assert_eq!(finished["status"], "completed");
    let resp = cancel(other["id"].as_str().unwrap_or_default().to_owned()).await?;
    assert_eq!(resp.status(), 409);
    Ok(())
}

#[tokio::test]
async fn list_pages_newest_first() -> TestResult {
    let server = start(cfg()).await?;
    let mut created = Vec::new();
    for i in 0..3 {
        let b = submit(&server, &[line(&format!("r{i}"), "hi")]).await?;
        created.push(b["id"].as_str().unwrap_or_default().to_owned());
    }
    let page = get(&server, "/batches?limit=2").await?;
    assert_eq!(page["object"], "list");
    let data: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| b["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(data, [created[2].as_str(), created[1].as_str()]);
    assert_eq!(page["first_id"], created[2].as_str());
    assert_eq!(page["last_id"], created[1].as_str());
    assert_eq!(page["has_more"], true);
    let rest = get(&server, &format!("/batches?limit=2&after={}", created[1])).await?;
    assert_eq!(rest["data"][0]["id"], created[0].as_str());
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["has_more"], false);
    let all = get(&server, "/batches").await?;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(server.stats().batches_created, 3);
    Ok(())
}

#[tokio::test]
async fn files_are_retrieved_deleted_and_checked() -> TestResult {
    let server = start(cfg()).await?;
    let text = jsonl(&[line("a", "x"), line("b", "y")]);
    let id = upload(&server, &text).await?;
    let file = get(&server, &format!("/files/{id}")).await?;
    assert_eq!(file["id"], id.as_str());
    let raw = client()
        .get(format!("{}/files/{id}/content", server.base_url()))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(raw, text);
    let wrong = upload_as(&server, "fine-tune", &text).await?;
    assert_eq!(wrong.status(), 400);
    let deleted: Value = client()
        .delete(format!("{}/files/{id}", server.base_url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        deleted,
        json!({"id": id, "object": "file", "deleted": true})
    );
    let gone = client()
        .get(format!("{}/files/{id}", server.base_url()))
        .send()
        .await?;
    assert_eq!(gone.status(), 404);
    let v: Value = gone.json().await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&id))
    );
    assert_eq!(create(&server, &id, CHAT).await?.status(), 404);
    assert_eq!(
        client()
            .get(format!("{}/batches/batch_nope", server.base_url()))
            .send()
            .await?
            .status(),
        404
    );
    let stats = server.stats();
    assert_eq!((stats.files_uploaded, stats.batch_lines_uploaded), (1, 2));
    Ok(())
}

#[tokio::test]
async fn batch_faults_hit_the_control_calls_only() -> TestResult {
    let server = start(MockConfig {
        batch_faults: FaultRates::parse("429=1")?,
        retry_after: Duration::from_millis(1500),
        ..cfg()
    })
    .await?;
    let resp = upload_as(&server, "batch", &jsonl(&[line("a", "x")])).await?;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "limit_requests");
    let list = client()
        .get(format!("{}/batches", server.base_url()))
        .send()
        .await?;
    assert_eq!(list.status(), 429);
    assert_eq!(post(&server, &chat_body("hi")).await?.status(), 200);
    assert_eq!(server.stats().files_uploaded, 0);
    Ok(())
}

#[tokio::test]
async fn the_batch_calls_ask_for_the_key() -> TestResult {
    let server = start(MockConfig {
        api_key: Some("sk-batch".to_owned()),
        ..cfg()
    })
    .await?;
    let url = format!("{}/batches", server.base_url());
    let resp = client().get(&url).send().await?;
    assert_eq!(resp.status(), 401);
    let ok = client().get(&url).bearer_auth("sk-batch").send().await?;
    assert_eq!(ok.status(), 200);
    Ok(())
}

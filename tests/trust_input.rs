//! Black-box tests of the edges of input and settings: a BOM and an endless line in JSONL,
//! durations too long for the clock, the loopback check, an error message that echoes the key,
//! and streamed tool calls that are split or absurd.

mod common;

use std::sync::Arc;

use batchgen::mock::MockConfig;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A canned answer: status, content type and body.
type Answer = (u16, &'static str, String);

/// A tiny HTTP/1.1 server on loopback that answers every request with what `answer` makes of
/// its path and `Authorization` header, then closes the connection.
struct TestServer {
    /// Serves the accept loop; dropping it stops the server.
    _rt: tokio::runtime::Runtime,
    url: String,
}

impl TestServer {
    fn start(answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let answer = Arc::new(answer);
        rt.spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let Some((path, auth)) = read_request(&mut sock).await else {
                        return;
                    };
                    let (status, ctype, body) = answer(&path, &auth);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        TestServer { _rt: rt, url }
    }
}

/// Reads one request (head and `content-length` body); returns its path and `Authorization`.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    Some((path, header("authorization")))
}

// 16: JSONL input edges.

#[test]
fn jsonl_with_a_byte_order_mark_runs() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "bom.jsonl",
        "\u{feff}{\"id\":\"a\",\"prompt\":\"first\"}\n{\"id\":\"b\",\"prompt\":\"second\"}\n",
    );
    let out = dir.path().join("bom.results.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 2);
    assert_eq!(recs["a"]["status"], "ok");
    assert_eq!(recs["b"]["status"], "ok");
}

#[test]
fn jsonl_line_over_the_limit_is_named_by_its_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("huge.jsonl");
    let mut text =
        String::from("{\"id\":\"a\",\"prompt\":\"short\"}\n{\"id\":\"big\",\"prompt\":\"");
    text.push_str(&"x".repeat(20_000_000));
    text.push_str("\"}\n{\"id\":\"c\",\"prompt\":\"short\"}\n");
    std::fs::write(&input, text).expect("write");
    let out = dir.path().join("huge.results.jsonl");
    let (code, stderr) = run_io(&input, &out, "mock", &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("huge.jsonl:2:") && stderr.contains("longer than the 16 MiB limit"),
        "{stderr}"
    );
    assert!(!stderr.contains("huge.jsonl:1:") && !stderr.contains("huge.jsonl:3:"));
    assert!(!out.exists() || records(&out).is_empty());
}

// 17: durations too long for the clock.

#[test]
fn huge_durations_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(1));
    for flag in [
        "--timeout",
        "--deadline",
        "--progress-interval",
        "--retry-delay",
        "--retry-max-delay",
    ] {
        for value in ["1e20", "1e15", "100000000000000y"] {
            let (code, stderr) = run(&[path(&input), "--base-url", "mock", flag, value]);
            assert_eq!(code, 2, "{flag} {value}: {stderr}");
            assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        }
    }
    let job = write(
        dir.path(),
        "job.toml",
        &format!(
            "input = \"{}\"\nbase_url = \"mock\"\ntimeout = 1e20\n",
            path(&input)
        ),
    );
    let (code, stderr) = run(&["--job", path(&job)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[test]
fn huge_durations_for_the_mock_server_exit_2() {
    let out = batchgen()
        .args(["mock-server", "--port", "0", "--latency", "1e20"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--latency"));
}

// 18: the loopback check parses the host.

#[test]
fn a_host_that_only_starts_with_127_needs_a_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(1));
    for url in [
        "http://127.evil.example/v1",
        "http://127.0.0.1.evil.example/v1",
        "http://localhost.evil.example/v1",
        "http://127.0.0.1@evil.example/v1",
    ] {
        let out = batchgen()
            .env_remove("DASHSCOPE_API_KEY")
            .args(["run", path(&input), "--dry-run", "--base-url", url])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains("DASHSCOPE_API_KEY is not set"),
            "{url}: {stderr}"
        );
    }
    for url in [
        "http://127.0.0.2:9/v1",
        "http://localhost:9/v1",
        "http://LOCALHOST/v1",
        "http://[::1]:9/v1",
    ] {
        let out = batchgen()
            .env_remove("DASHSCOPE_API_KEY")
            .args(["run", path(&input), "--dry-run", "--base-url", url])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{url}: {stderr}");
    }
}

// 19: a server message that echoes the key is scrubbed everywhere.

const ECHOED_KEY: &str = "sk-proj-Q7vR2mXk9LpZ4tNw8HsJ3cYb6FdG1aEu5WqT0";

/// Every piece of 6 characters of the key.
fn pieces(key: &str) -> Vec<&str> {
    (0..=key.len() - 6).map(|i| &key[i..i + 6]).collect()
}

#[test]
fn a_401_that_echoes_the_key_is_scrubbed_from_every_output() {
    // OpenAI's form (the first 8 and last 4 characters around stars), and a provider that
    // echoes a middle part of what it received.
    let server = TestServer::start(|_, auth| {
        let key = auth.strip_prefix("Bearer ").unwrap_or(auth);
        let masked = format!(
            "{}***************{}",
            key.get(..8).unwrap_or(""),
            key.get(key.len().saturating_sub(4)..).unwrap_or("")
        );
        let body = serde_json::json!({"error": {
            "message": format!(
                "Incorrect API key provided: {masked}. You can find your API key at \
                 https://platform.openai.com/account/api-keys. (got `{}`)",
                key.get(10..24).unwrap_or("")
            ),
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
        }});
        (401, "application/json", body.to_string())
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(5));
    let out = dir.path().join("rows.results.jsonl");
    let summary = dir.path().join("summary.json");
    let output = batchgen()
        .env("DASHSCOPE_API_KEY", ECHOED_KEY)
        .args(["run", path(&input), "-o", path(&out)])
        .args(["--base-url", &server.url, "-c", "1"])
        .args(["--summary-json", path(&summary)])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Incorrect API key provided"), "{stderr}");
    let results = std::fs::read_to_string(&out).expect("results");
    assert!(results.contains("Incorrect API key provided"), "{results}");
    let summary = std::fs::read_to_string(&summary).expect("summary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    for (name, text) in [
        ("stderr", &stderr),
        ("stdout", &stdout),
        ("results", &results),
        ("summary", &summary),
    ] {
        for piece in pieces(ECHOED_KEY) {
            assert!(!text.contains(piece), "{name} holds `{piece}`: {text}");
        }
        assert!(
            !text.contains("5WqT0"),
            "{name} holds the masked tail: {text}"
        );
    }
}

// 20: streamed tool calls.

/// One SSE event of DashScope native, with `incremental_output`.
fn native_event(message: Value, finish: &str, out_tokens: u64) -> String {
    let data = serde_json::json!({
        "output": {"choices": [{"message": message, "finish_reason": finish}]},
        "usage": {"input_tokens": 12, "output_tokens": out_tokens, "total_tokens": 12 + out_tokens},
        "request_id": "rq-tools"
    });
    format!("id:{out_tokens}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n")
}

#[test]
fn native_streamed_tool_call_fragments_are_merged() {
    let server = TestServer::start(|path, _| {
        assert!(path.ends_with("/services/aigc/text-generation/generation"));
        let call =
            |v: Value| serde_json::json!({"role": "assistant", "content": "", "tool_calls": [v]});
        let body = [
            native_event(
                call(
                    serde_json::json!({"index": 0, "id": "call_7", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\": "}}),
                ),
                "null",
                3,
            ),
            native_event(
                call(serde_json::json!({"index": 0, "id": "", "type": "function",
                    "function": {"arguments": "\"Paris\", "}})),
                "null",
                6,
            ),
            native_event(
                call(serde_json::json!({"index": 0, "id": "", "type": "function",
                    "function": {"arguments": "\"unit\": \"C\"}"}})),
                "null",
                9,
            ),
            native_event(
                serde_json::json!({"role": "assistant", "content": ""}),
                "tool_calls",
                10,
            ),
        ]
        .concat();
        (200, "text/event-stream", body)
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "rows.jsonl",
        "{\"id\":\"t\",\"prompt\":\"weather?\"}\n",
    );
    let out = dir.path().join("rows.results.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &server.url,
        &["--api", "dashscope", "--stream"],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    let r = &recs["t"];
    assert_eq!(r["status"], "ok", "{r}");
    let calls = r["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{r}");
    assert_eq!(calls[0]["id"], "call_7", "{r}");
    assert_eq!(calls[0]["function"]["name"], "get_weather", "{r}");
    assert_eq!(
        calls[0]["function"]["arguments"], "{\"city\": \"Paris\", \"unit\": \"C\"}",
        "{r}"
    );
}

#[test]
fn a_chat_tool_call_index_out_of_reason_is_a_bad_response() {
    let server = TestServer::start(|path, _| {
        assert!(path.ends_with("/chat/completions"));
        let chunk = |v: Value| format!("data: {v}\n\n");
        let body = [
            chunk(
                serde_json::json!({"id": "c1", "model": "m", "choices": [{"index": 0,
                "delta": {"role": "assistant", "tool_calls": [{"index": 4_000_000_000u64,
                "id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}}]}),
            ),
            chunk(
                serde_json::json!({"id": "c1", "choices": [{"index": 0, "delta": {},
                "finish_reason": "tool_calls"}]}),
            ),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        (200, "text/event-stream", body)
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "rows.jsonl",
        "{\"id\":\"t\",\"prompt\":\"call\"}\n",
    );
    let out = dir.path().join("rows.results.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &server.url,
        &["--stream", "--max-retries", "0"],
    );
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&out));
    let r = &recs["t"];
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["error"]["kind"], "bad_response", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("4000000000")),
        "{r}"
    );
}

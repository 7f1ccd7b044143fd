//! Helpers shared by the in-process tests of the mock endpoint (`tests/mock_*.rs`): a
//! reqwest client, a server on a free port, request bodies and URLs of the three styles, and
//! parsers of their SSE bodies.
#![allow(dead_code)]

use std::time::Duration;

use batchgen::mock::{FaultRates, MockConfig, MockServer};
use serde_json::{Value, json};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`; plain http never uses it, but building a
    // client needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
    MockServer::start(cfg, "127.0.0.1:0".parse().expect("addr")).await
}

pub fn faults(spec: &str) -> MockConfig {
    MockConfig {
        faults: FaultRates::parse(spec).expect("spec"),
        ..MockConfig::default()
    }
}

pub fn chat_body(prompt: &str) -> Value {
    json!({"model": "qwen-plus", "messages": [{"role": "user", "content": prompt}]})
}

pub fn url(server: &MockServer) -> String {
    format!("{}/chat/completions", server.base_url())
}

pub async fn post(server: &MockServer, body: &Value) -> reqwest::Result<reqwest::Response> {
    client().post(url(server)).json(body).send().await
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data: prefix"))
        .collect()
}

pub const STREAM_ONLY: &str =
    "This model only support stream mode, please enable the stream parameter to access the model.";
pub const JSON_WORD: &str = "'messages' must contain the word 'json' in some form, to use \
     'response_format' of type 'json_object'";
pub const OUTPUT_MODERATION: &str = "Output data may contain inappropriate content.";

pub fn responses_url(server: &MockServer) -> String {
    format!("{}/responses", server.base_url())
}

/// The DashScope path under the `/api/v1` base (the mock matches by suffix).
pub fn native_url(server: &MockServer) -> String {
    format!(
        "http://{}/api/v1/services/aigc/text-generation/generation",
        server.addr()
    )
}

pub async fn post_responses(
    server: &MockServer,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client().post(responses_url(server)).json(body).send().await
}

/// A native request; `sse` adds `X-DashScope-SSE: enable`.
pub async fn post_native(
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

pub fn native_body(prompt: &str, parameters: Value) -> Value {
    json!({
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "parameters": parameters
    })
}

/// Parses a Responses SSE body (`event:NAME\ndata:JSON`, no spaces) into (name, data) pairs,
/// checking that each data `type` equals the event name and sequence numbers count from 0.
pub fn responses_events(text: &str) -> Vec<(String, Value)> {
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

pub struct NativeEvent {
    pub id: u64,
    pub event: String,
    pub status: String,
    pub data: Value,
}

/// Parses a native SSE body: blocks of `id:N`, `event:KIND`, `:HTTP_STATUS/NNN`, `data:JSON`.
pub fn native_events(text: &str) -> Vec<NativeEvent> {
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
pub async fn read_until_broken(
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

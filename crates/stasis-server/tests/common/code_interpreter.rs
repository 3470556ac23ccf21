//! Helpers for the code-interpreter tests: an NDJSON client for port 49999 through the
//! server's proxy.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestServer;

pub const TEMPLATE: &str = "code-interpreter-v1";

/// A request to the code interpreter of sandbox `id`.
pub fn ci(
    s: &TestServer,
    method: reqwest::Method,
    id: &str,
    token: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    s.to_sandbox(method, id, token, 49999, path)
}

/// Waits until the code interpreter answers `/health` through the proxy.
pub async fn wait_ready(s: &TestServer, id: &str, token: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = ci(s, reqwest::Method::GET, id, token, "/health")
            .send()
            .await;
        if r.as_ref().is_ok_and(|r| r.status().as_u16() == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "code interpreter of {id} not ready: {:?}",
            r.map(|r| r.status())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `body` on `/execute` and returns every NDJSON line.
pub async fn execute(s: &TestServer, id: &str, token: &str, body: Value) -> Vec<Value> {
    let resp = ci(s, reqwest::Method::POST, id, token, "/execute")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "execute {body}: {text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    assert_eq!(
        lines.last().map(|l| l["type"].clone()),
        Some(Value::from("end_of_execution")),
        "{lines:?}"
    );
    lines
}

/// `runCode(code)` in the default python context.
pub async fn run(s: &TestServer, id: &str, token: &str, code: &str) -> Vec<Value> {
    execute(
        s,
        id,
        token,
        serde_json::json!({"code": code, "context_id": null, "language": null, "env_vars": null}),
    )
    .await
}

/// The main result's text, as `execution.text`.
pub fn text(lines: &[Value]) -> Option<String> {
    lines
        .iter()
        .find(|l| l["type"] == "result" && l["is_main_result"] == true)
        .and_then(|l| l["text"].as_str().map(str::to_owned))
}

/// Concatenated stdout.
pub fn stdout(lines: &[Value]) -> String {
    lines
        .iter()
        .filter(|l| l["type"] == "stdout")
        .filter_map(|l| l["text"].as_str())
        .collect()
}

/// The error line, if any.
pub fn error(lines: &[Value]) -> Option<&Value> {
    lines.iter().find(|l| l["type"] == "error")
}

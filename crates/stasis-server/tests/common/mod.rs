//! Harness of the server's end-to-end tests: a real server (real runtime, real agent)
//! from `stasis_server::testing`, and a small client for the control API and for
//! commands through the proxy (Connect protocol, JSON codec).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use stasis_server::testing::Serving;
pub use stasis_server::testing::{DataDir, API_KEY};
use stasis_server::ServerConfig;

/// The agent's port in every sandbox.
pub const AGENT_PORT: u16 = 49983;

/// One Connect envelope (flags 0) holding `msg` as JSON.
pub fn envelope(msg: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(msg).unwrap();
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(&payload);
    body
}

/// A running server and a client for it.
pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    serving: Serving,
}

impl TestServer {
    pub async fn start(dir: &DataDir) -> TestServer {
        Self::start_with(dir.config()).await
    }

    pub async fn start_with(cfg: ServerConfig) -> TestServer {
        let serving = Serving::start(cfg).await;
        TestServer {
            url: serving.url.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            serving,
        }
    }

    /// Stops serving (sandboxes keep running, as after a server crash).
    pub async fn stop(self) {
        self.serving.stop().await;
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-KEY", API_KEY)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    /// Creates a sandbox; returns (id, access token).
    pub async fn create(&self, body: Value) -> (String, String) {
        let (s, v) = self
            .call(reqwest::Method::POST, "/v2/sandboxes", Some(body))
            .await;
        assert_eq!(s, 201, "create: {v}");
        (
            v["sandboxID"].as_str().unwrap().to_owned(),
            v["envdAccessToken"].as_str().unwrap().to_owned(),
        )
    }

    /// Pauses a sandbox through the API (204 expected).
    pub async fn pause(&self, id: &str) {
        let path = format!("/sandboxes/{id}/pause");
        let (s, v) = self.call(reqwest::Method::POST, &path, None).await;
        assert_eq!(s, 204, "pause {id}: {v}");
    }

    /// Connects to (and so resumes) a sandbox through the API (201 expected); returns
    /// the answer.
    pub async fn connect(&self, id: &str) -> Value {
        let path = format!("/v2/sandboxes/{id}/connect");
        let (s, v) = self
            .call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
        assert_eq!(s, 201, "connect {id}: {v}");
        v
    }

    /// Sends `process.Process/Start` with `msg` through the proxy (Connect streaming,
    /// JSON codec) and returns the open response stream, checked to be 200.
    pub async fn start_process(&self, id: &str, token: &str, msg: &Value) -> reqwest::Response {
        let resp = self
            .to_sandbox(
                reqwest::Method::POST,
                id,
                token,
                AGENT_PORT,
                "/process.Process/Start",
            )
            .header("Content-Type", "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .body(envelope(msg))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "Start answered {}",
            resp.status()
        );
        resp
    }

    /// Runs `bash -l -c cmd` through the proxy as the SDKs do; returns (exit code,
    /// stdout, stderr).
    pub async fn run(&self, id: &str, token: &str, cmd: &str) -> (i64, String, String) {
        let msg =
            json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": false});
        let resp = self.start_process(id, token, &msg).await;
        let bytes = resp.bytes().await.unwrap();
        let (mut code, mut out, mut err) = (-1, Vec::new(), Vec::new());
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut i = 0;
        while i + 5 <= bytes.len() {
            let flags = bytes[i];
            let len = u32::from_be_bytes(bytes[i + 1..i + 5].try_into().unwrap()) as usize;
            let v: Value = serde_json::from_slice(&bytes[i + 5..i + 5 + len]).unwrap();
            i += 5 + len;
            if flags & 2 != 0 {
                assert!(v.get("error").is_none(), "stream error: {v}");
                continue;
            }
            let ev = &v["event"];
            if let Some(d) = ev.get("data") {
                if let Some(s) = d["stdout"].as_str() {
                    out.extend(b64.decode(s).unwrap());
                }
                if let Some(s) = d["stderr"].as_str() {
                    err.extend(b64.decode(s).unwrap());
                }
            }
            if let Some(e) = ev.get("end") {
                code = e["exitCode"].as_i64().unwrap_or(0);
            }
        }
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// A request through the proxy to `path` on `port` of sandbox `id`, with `token`.
    pub fn to_sandbox(
        &self,
        method: reqwest::Method,
        id: &str,
        token: &str,
        port: u16,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", port.to_string())
            .header("X-Access-Token", token)
    }

    /// A GET through the proxy to `path` on `port` of sandbox `id`.
    pub async fn proxied(&self, id: &str, token: &str, port: u16, path: &str) -> reqwest::Response {
        self.to_sandbox(reqwest::Method::GET, id, token, port, path)
            .send()
            .await
            .unwrap()
    }

    /// The wire state from the list endpoint (which, unlike `GET /sandboxes/{id}`, is
    /// not activity on the sandbox and does not push its timeout).
    pub async fn state(&self, id: &str) -> Option<String> {
        let (s, v) = self.call(reqwest::Method::GET, "/v2/sandboxes", None).await;
        assert_eq!(s, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .find(|x| x["sandboxID"] == id)
            .map(|x| x["state"].as_str().unwrap().to_owned())
    }

    /// Polls until the sandbox has `state` (or is gone, for `None`).
    pub async fn wait_state(&self, id: &str, want: Option<&str>, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.state(id).await;
            if st.as_deref() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: state {st:?}, wanted {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

//! Test harness: runs the agent in-process on 127.0.0.1:0 and speaks Connect to it
//! over real HTTP with a small client.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stasis_envd::{Config, ReapMode};
use stasis_envd_proto::envelope::{self, Decoder, Envelope};
use stasis_envd_proto::error::{ConnectError, EndStream};
use stasis_envd_proto::process::{ProcessEvent, StartResponse};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every test body runs under this limit, so nothing hangs.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `fut` with [`TEST_TIMEOUT`].
pub async fn timed<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, fut)
        .await
        .expect("test timed out")
}

/// An agent running in this process.
pub struct Agent {
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Config used by tests: root as default user (the host has no `user` account),
/// reaping only the agent's own children.
pub fn test_config() -> Config {
    Config {
        default_user: "root".into(),
        reap: ReapMode::Own,
        ..Config::default()
    }
}

impl Agent {
    pub async fn start() -> Agent {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(config: Config) -> Agent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let token = config.access_token.clone();
        let task = tokio::spawn(stasis_envd::serve(listener, config, async move {
            let _ = rx.await;
        }));
        Agent {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            token,
            dir: tempfile::tempdir().unwrap(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A path inside this test's temp dir.
    pub fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_string_lossy().into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self, mut rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(t) = &self.token {
            rb = rb.header("x-access-token", t);
        }
        rb
    }

    /// Raw unary call: status and body.
    pub async fn unary_raw(
        &self,
        method: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<u8>) {
        let mut rb = self
            .auth(self.http.post(self.url(&format!("/{method}"))))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// Unary call with typed messages; errors come back as (status, ConnectError).
    pub async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, (u16, ConnectError)> {
        self.unary_h(method, req, &[]).await
    }

    pub async fn unary_h<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
        headers: &[(&str, &str)],
    ) -> Result<Resp, (u16, ConnectError)> {
        let (status, body) = self
            .unary_raw(method, serde_json::to_vec(req).unwrap(), headers)
            .await;
        if status == 200 {
            Ok(serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("bad response {e}: {}", String::from_utf8_lossy(&body))))
        } else {
            let err: ConnectError = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!("bad error body {e}: {}", String::from_utf8_lossy(&body))
            });
            Err((status, err))
        }
    }

    /// Opens a server stream with a raw request body.
    pub async fn stream_raw(
        &self,
        method: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Stream {
        let mut rb = self
            .auth(self.http.post(self.url(&format!("/{method}"))))
            .header("content-type", "application/connect+json")
            .header("connect-protocol-version", "1")
            .body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "streams always answer 200");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/connect+json"
        );
        Stream {
            body: Box::pin(resp.bytes_stream()),
            decoder: Decoder::new(64 << 20),
            ended: None,
        }
    }

    /// Opens a server stream with one JSON request message.
    pub async fn stream<Req: Serialize>(
        &self,
        method: &str,
        req: &Req,
        headers: &[(&str, &str)],
    ) -> Stream {
        let payload = serde_json::to_vec(req).unwrap();
        self.stream_raw(method, envelope::encode(0, &payload), headers)
            .await
    }

    /// Stops the server and waits for it (its processes are killed).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // On failure paths the runtime drops the server task; the process table's
        // Drop then SIGKILLs every child. Here we only ask for a clean stop.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// A response stream of envelopes.
pub struct Stream {
    body: ByteStream,
    decoder: Decoder,
    pub ended: Option<EndStream>,
}

/// One stream item.
#[derive(Debug)]
pub enum Item {
    Msg(serde_json::Value),
    End(EndStream),
}

impl Stream {
    /// Next envelope (with a 30 s per-message limit); `None` when the body ends.
    pub async fn next_envelope(&mut self) -> Option<Envelope> {
        loop {
            if let Some(env) = self.decoder.next_envelope().expect("valid envelope") {
                return Some(env);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("stream stalled for 30 s");
            match chunk {
                Some(Ok(c)) => self.decoder.push(&c),
                Some(Err(e)) => panic!("stream error: {e}"),
                None => {
                    self.decoder.finish().expect("no partial envelope at end");
                    return None;
                }
            }
        }
    }

    pub async fn next_item(&mut self) -> Option<Item> {
        let env = self.next_envelope().await?;
        if env.is_end_stream() {
            let end: EndStream = serde_json::from_slice(&env.payload).unwrap();
            self.ended = Some(end.clone());
            Some(Item::End(end))
        } else {
            Some(Item::Msg(serde_json::from_slice(&env.payload).unwrap()))
        }
    }

    /// Next process event (panics on end-stream).
    pub async fn next_event(&mut self) -> ProcessEvent {
        match self.next_item().await {
            Some(Item::Msg(v)) => serde_json::from_value::<StartResponse>(v).unwrap().event,
            other => panic!("expected a process event, got {other:?}"),
        }
    }

    /// Next event that is not a keepalive.
    pub async fn next_real_event(&mut self) -> ProcessEvent {
        loop {
            match self.next_event().await {
                ProcessEvent::Keepalive(_) => continue,
                e => return e,
            }
        }
    }

    /// Expects the end-stream next and returns its error, if any.
    pub async fn end_stream(&mut self) -> Option<ConnectError> {
        match self.next_item().await {
            Some(Item::End(e)) => {
                assert!(
                    self.next_envelope().await.is_none(),
                    "nothing after end-stream"
                );
                e.error
            }
            other => panic!("expected end-stream, got {other:?}"),
        }
    }
}

/// Output collected from a process stream until its end.
#[derive(Debug, Default)]
pub struct Collected {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub pty: Vec<u8>,
    pub end: stasis_envd_proto::process::EndEvent,
    pub stream_error: Option<ConnectError>,
}

impl Collected {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Reads start, data…, end and the end-stream.
pub async fn collect(stream: &mut Stream) -> Collected {
    use stasis_envd_proto::process::DataEvent;
    let mut c = Collected::default();
    match stream.next_item().await {
        Some(Item::Msg(v)) => match serde_json::from_value::<StartResponse>(v).unwrap().event {
            ProcessEvent::Start(s) => c.pid = s.pid,
            e => panic!("first event must be start, got {e:?}"),
        },
        Some(Item::End(e)) => {
            c.stream_error = e.error;
            return c;
        }
        None => panic!("empty stream"),
    }
    loop {
        match stream.next_item().await {
            Some(Item::Msg(v)) => match serde_json::from_value::<StartResponse>(v).unwrap().event {
                ProcessEvent::Data(DataEvent::Stdout(d)) => c.stdout.extend(d),
                ProcessEvent::Data(DataEvent::Stderr(d)) => c.stderr.extend(d),
                ProcessEvent::Data(DataEvent::Pty(d)) => c.pty.extend(d),
                ProcessEvent::Keepalive(_) => {}
                ProcessEvent::End(e) => c.end = e,
                ProcessEvent::Start(_) => panic!("second start event"),
            },
            Some(Item::End(e)) => {
                c.stream_error = e.error;
                assert!(stream.next_envelope().await.is_none());
                return c;
            }
            None => panic!("stream ended without end-stream"),
        }
    }
}

/// `Start` request for `bash -c script` (the shape `commands.run` sends).
pub fn bash(script: &str) -> serde_json::Value {
    serde_json::json!({"process":{"cmd":"/bin/bash","args":["-c", script]},"stdin":false})
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether a pid is alive (signal 0).
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

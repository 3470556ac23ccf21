//! The agent (`stasis-envd`) in real sandboxes, through the server's proxy: commands,
//! streaming, re-attach, PTY, stdin, signals, files and watches — and all of it across a
//! pause and resume (the checkpoint story).

mod common;

use common::envelope;

use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A server-streaming Connect call read incrementally.
struct Stream {
    inner:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    ended: bool,
}

impl Stream {
    async fn open(srv: &TestServer, sb: &Sb, method: &str, msg: Value) -> Stream {
        let resp = srv
            .to_sandbox(
                Method::POST,
                &sb.id,
                &sb.token,
                AGENT_PORT,
                &format!("/{method}"),
            )
            .header("Content-Type", "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .header("Keepalive-Ping-Interval", "1")
            .body(envelope(&msg))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{method}");
        Stream {
            inner: Box::pin(resp.bytes_stream()),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next message (skipping keepalives), or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    let v: Value = serde_json::from_slice(&self.buf[5..5 + len]).unwrap();
                    self.buf.drain(..5 + len);
                    if flags & 2 != 0 {
                        assert!(v.get("error").is_none(), "stream ended with {v}");
                        self.ended = true;
                        return None;
                    }
                    if v["event"].get("keepalive").is_some() || v.get("keepalive").is_some() {
                        continue;
                    }
                    return Some(v);
                }
            }
            match tokio::time::timeout(Duration::from_secs(30), self.inner.next()).await {
                Ok(Some(Ok(b))) => self.buf.extend_from_slice(&b),
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("no message within 30 s"),
            }
        }
    }

    /// Reads until the collected output (stdout or pty) contains `want`.
    async fn until_output(&mut self, want: &str) -> String {
        let mut out = String::new();
        while !out.contains(want) {
            let v = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {want:?}; got {out:?}"));
            let d = &v["event"]["data"];
            for k in ["stdout", "pty", "stderr"] {
                if let Some(s) = d[k].as_str() {
                    out.push_str(&String::from_utf8_lossy(&B64.decode(s).unwrap()));
                }
            }
        }
        out
    }

    /// Reads until the end event; returns it.
    async fn until_end(&mut self) -> Value {
        loop {
            let v = self.next().await.expect("end event");
            if let Some(e) = v["event"].get("end") {
                return e.clone();
            }
        }
    }
}

struct Sb {
    id: String,
    token: String,
}

async fn unary(srv: &TestServer, sb: &Sb, method: &str, msg: Value) -> (u16, Value) {
    let resp = srv
        .to_sandbox(
            Method::POST,
            &sb.id,
            &sb.token,
            AGENT_PORT,
            &format!("/{method}"),
        )
        .header("Content-Type", "application/json")
        .body(msg.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn start(srv: &TestServer, sb: &Sb, cmd: &str, extra: Value) -> (Stream, u64) {
    let mut msg = json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}});
    if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    let mut s = Stream::open(srv, sb, "process.Process/Start", msg).await;
    let first = s.next().await.expect("start event");
    let pid = first["event"]["start"]["pid"].as_u64().expect("pid");
    (s, pid)
}

async fn pause_and_resume(srv: &TestServer, sb: &Sb) {
    let (s, v) = srv
        .call(Method::POST, &format!("/sandboxes/{}/pause", sb.id), None)
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/v2/sandboxes/{}/connect", sb.id),
            Some(json!({"timeout": 120})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

async fn new_sandbox(srv: &TestServer) -> Sb {
    let (id, token) = srv
        .create(json!({"templateID": "base", "envVars": {"SANDBOX_WIDE": "yes"}}))
        .await;
    Sb { id, token }
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_stream_and_report_exit_codes_users_and_env() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = new_sandbox(&srv).await;
    // Output arrives while the command runs, not only at its end.
    let (mut s, _) = start(&srv, &sb, "echo first; sleep 2; echo second", json!({})).await;
    let t = Instant::now();
    s.until_output("first").await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "first line was buffered"
    );
    s.until_output("second").await;
    let end = s.until_end().await;
    assert_eq!(end["exited"], true);
    assert!(s.next().await.is_none() && s.ended, "end-stream frame");

    let (code, out, err) = srv
        .run(
            &sb.id,
            &sb.token,
            "whoami; echo $HOME $SANDBOX_WIDE; echo oops >&2; exit 3",
        )
        .await;
    assert_eq!(code, 3);
    assert_eq!(out, "user\n/home/user yes\n");
    assert_eq!(err, "oops\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn background_commands_stdin_signals_and_reattach() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = new_sandbox(&srv).await;
    // A background counter, detached from by dropping the stream.
    let (s, pid) = start(
        &srv,
        &sb,
        "for i in $(seq 1 1000); do echo tick $i; sleep 0.1; done",
        json!({"tag": "ticker"}),
    )
    .await;
    drop(s);
    // Re-attach by tag and by pid: new output keeps coming.
    let mut by_tag = Stream::open(
        &srv,
        &sb,
        "process.Process/Connect",
        json!({"process": {"tag": "ticker"}}),
    )
    .await;
    by_tag.until_output("tick").await;
    let mut by_pid = Stream::open(
        &srv,
        &sb,
        "process.Process/Connect",
        json!({"process": {"pid": pid}}),
    )
    .await;
    by_pid.until_output("tick").await;
    // stdin.
    let (mut cat, cat_pid) = start(&srv, &sb, "cat", json!({"stdin": true})).await;
    let (st, v) = unary(
        &srv,
        &sb,
        "process.Process/SendInput",
        json!({"process": {"pid": cat_pid}, "input": {"stdin": B64.encode("hello stdin\n")}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    cat.until_output("hello stdin").await;
    let (st, _) = unary(
        &srv,
        &sb,
        "process.Process/CloseStdin",
        json!({"process": {"pid": cat_pid}}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(cat.until_end().await["exitCode"].as_i64().unwrap_or(0), 0);
    // Signals.
    let (st, _) = unary(
        &srv,
        &sb,
        "process.Process/SendSignal",
        json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(st, 200);
    let end = by_pid.until_end().await;
    assert!(end["status"].as_str().unwrap().contains("killed"), "{end}");
    // Unknown pid.
    let (st, v) = unary(
        &srv,
        &sb,
        "process.Process/SendSignal",
        json!({"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pty_sessions_resize_and_interrupt() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = new_sandbox(&srv).await;
    let msg = json!({"process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": {"TERM": "xterm"}},
                     "pty": {"size": {"cols": 80, "rows": 24}}});
    let mut s = Stream::open(&srv, &sb, "process.Process/Start", msg).await;
    let pid = s.next().await.unwrap()["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    let send = |text: &'static str| {
        let srv = &srv;
        let sb = &sb;
        async move {
            let (st, v) = unary(
                srv,
                sb,
                "process.Process/SendInput",
                json!({"process": {"pid": pid}, "input": {"pty": B64.encode(text)}}),
            )
            .await;
            assert_eq!(st, 200, "{v}");
        }
    };
    send("stty size\n").await;
    s.until_output("24 80").await;
    let (st, _) = unary(
        &srv,
        &sb,
        "process.Process/Update",
        json!({"process": {"pid": pid}, "pty": {"size": {"cols": 100, "rows": 30}}}),
    )
    .await;
    assert_eq!(st, 200);
    send("stty size\n").await;
    s.until_output("30 100").await;
    // Ctrl-C interrupts the foreground job, and the shell lives on.
    // Wait until the line runs. The signal Ctrl-C raises flushes the terminal's pending
    // input, so a command typed in the same instant can be lost: type it until it runs.
    // (The marker is printed by the foreground job itself, which then becomes the sleep.)
    send("sh -c 'echo started-$((1+1)); exec sleep 1000'\n").await;
    s.until_output("started-2").await;
    send("\x03").await;
    let mut tries = 0;
    loop {
        send("echo after-interrupt-$((6*7))\n").await;
        let ran =
            tokio::time::timeout(Duration::from_secs(2), s.until_output("after-interrupt-42"))
                .await;
        tries += 1;
        if ran.is_ok() {
            break;
        }
        assert!(tries < 5, "the shell never ran a command after Ctrl-C");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_upload_download_and_watch() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = new_sandbox(&srv).await;
    let mut watch = Stream::open(
        &srv,
        &sb,
        "filesystem.Filesystem/WatchDir",
        json!({"path": "/home/user/watched"}),
    )
    .await_or_mkdir(&srv, &sb)
    .await;
    // 50 MB up and down, byte for byte.
    let data: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let r = srv
        .to_sandbox(
            Method::POST,
            &sb.id,
            &sb.token,
            AGENT_PORT,
            "/files?path=/home/user/watched/big.bin",
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let r = srv
        .to_sandbox(
            Method::GET,
            &sb.id,
            &sb.token,
            AGENT_PORT,
            "/files?path=/home/user/watched/big.bin",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let back = r.bytes().await.unwrap();
    assert!(
        back.len() == data.len() && back[..] == data[..],
        "round trip differs"
    );
    // The watch saw the file appear.
    let mut names = Vec::new();
    while !names.iter().any(|n: &String| n == "big.bin") {
        let v = watch.next().await.expect("watch event");
        // WatchDirResponse's oneof is flattened: {"filesystem": {...}}.
        if let Some(n) = v["filesystem"]["name"].as_str() {
            names.push(n.to_owned());
        }
    }
    // Ownership and listing.
    let (st, v) = unary(
        &srv,
        &sb,
        "filesystem.Filesystem/Stat",
        json!({"path": "/home/user/watched/big.bin"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["entry"]["owner"], "user");
    assert_eq!(v["entry"]["size"], (50 * 1024 * 1024).to_string());
    let r = srv
        .to_sandbox(
            Method::GET,
            &sb.id,
            &sb.token,
            AGENT_PORT,
            "/files?path=/nope/missing",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

trait MkdirFirst {
    async fn await_or_mkdir(self, srv: &TestServer, sb: &Sb) -> Stream;
}

impl<F: std::future::Future<Output = Stream>> MkdirFirst for F {
    /// Creates the watched directory before opening the watch.
    async fn await_or_mkdir(self, srv: &TestServer, sb: &Sb) -> Stream {
        let (st, v) = unary(
            srv,
            sb,
            "filesystem.Filesystem/MakeDir",
            json!({"path": "/home/user/watched"}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let mut s = self.await;
        let first = s.next().await.expect("watch start");
        assert!(first.get("start").is_some(), "{first}");
        s
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_pty_state_and_reattach_survive_pause_and_resume() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = new_sandbox(&srv).await;
    let (s, sleep_pid) = start(&srv, &sb, "exec sleep 1000", json!({"tag": "sleeper"})).await;
    drop(s);
    let msg = json!({"process": {"cmd": "/bin/bash", "args": ["-i"], "envs": {"TERM": "dumb"}},
                     "pty": {"size": {"cols": 80, "rows": 24}}, "tag": "shell"});
    let mut pty = Stream::open(&srv, &sb, "process.Process/Start", msg).await;
    let pty_pid = pty.next().await.unwrap()["event"]["start"]["pid"]
        .as_u64()
        .unwrap();
    let (st, _) = unary(&srv, &sb, "process.Process/SendInput",
        json!({"process": {"pid": pty_pid}, "input": {"pty": B64.encode("KEPT=held-in-memory-$((20+22))\n")}})).await;
    assert_eq!(st, 200);
    let (st, _) = unary(
        &srv,
        &sb,
        "process.Process/SendInput",
        json!({"process": {"pid": pty_pid}, "input": {"pty": B64.encode("echo set-$KEPT\n")}}),
    )
    .await;
    assert_eq!(st, 200);
    pty.until_output("set-held-in-memory-42").await;
    drop(pty);

    pause_and_resume(&srv, &sb).await;

    // List still shows both processes.
    let (st, v) = unary(&srv, &sb, "process.Process/List", json!({})).await;
    assert_eq!(st, 200, "{v}");
    let pids: Vec<u64> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(pids.contains(&sleep_pid) && pids.contains(&pty_pid), "{v}");
    // Connect re-attaches to the PTY shell, which still has its variable.
    let mut again = Stream::open(
        &srv,
        &sb,
        "process.Process/Connect",
        json!({"process": {"tag": "shell"}}),
    )
    .await;
    let (st, _) = unary(
        &srv,
        &sb,
        "process.Process/SendInput",
        json!({"process": {"pid": pty_pid}, "input": {"pty": B64.encode("echo after-$KEPT\n")}}),
    )
    .await;
    assert_eq!(st, 200);
    again.until_output("after-held-in-memory-42").await;
    // A command started after the resume works.
    let (code, out, _) = srv
        .run(&sb.id, &sb.token, "echo fresh; pgrep -x sleep")
        .await;
    assert_eq!(code, 0);
    assert!(out.starts_with("fresh\n"), "{out}");
}

//! Faults seen through the API: a sandbox whose PID 1 dies is never reported running
//! again (its files are kept when it pauses on timeout, it is removed when it is killed
//! on timeout), and a kill wins over a pause in progress.

mod common;

use std::time::{Duration, Instant};

use common::{DataDir, TestServer};
use reqwest::Method;
use serde_json::json;

/// The host pid of the sandbox's PID 1: the member of its cgroup whose parent is not.
fn init_pid(id: &str) -> u32 {
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/unified/stasis/{id}/cgroup.procs"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/stasis/{id}/cgroup.procs")))
        .expect("the sandbox's cgroup");
    let members: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    *members
        .iter()
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid: u32 = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            !members.contains(&ppid)
        })
        .expect("a PID 1 in the cgroup")
}

fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_whose_pid1_dies_keeps_its_files_or_is_removed_and_never_says_running() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (keep, tk) = srv
        .create(json!({"templateID": "base", "autoPause": true, "timeout": 300}))
        .await;
    let (gone, tg) = srv.create(json!({"templateID": "base"})).await;
    srv.run(&keep, &tk, "echo kept > /home/user/notes; sleep 1000 &")
        .await;
    srv.run(&gone, &tg, "echo x > /tmp/x").await;

    sigkill(init_pid(&keep));
    sigkill(init_pid(&gone));

    // Seen within seconds: the one that pauses on timeout is paused (files kept)...
    srv.wait_state(&keep, Some("paused"), 10).await;
    // ...the one killed on timeout is gone.
    srv.wait_state(&gone, None, 10).await;
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{gone}/connect"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404, "a dead sandbox is never connected to");

    let (s, events) = srv
        .call(Method::GET, &format!("/events/sandboxes/{keep}"), None)
        .await;
    assert_eq!(s, 200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "sandbox.lifecycle.died"),
        "{events}"
    );

    // Connect starts it afresh, with its files: the background process is gone.
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{keep}/connect"),
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, out, _) = srv
        .run(
            &keep,
            &tk,
            "cat /home/user/notes; pgrep -c -x sleep || true",
        )
        .await;
    assert_eq!(out, "kept\n0\n");
    srv.call(Method::DELETE, &format!("/sandboxes/{keep}"), None)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_wins_over_a_pause_in_progress() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    // Enough memory that the dump takes a while.
    srv.run(
        &id,
        &token,
        "python3 -c 'import os,time; b=os.urandom(300<<20); time.sleep(1000)' >/dev/null 2>&1 &",
    )
    .await;
    let pause = {
        let http = srv.http.clone();
        let url = format!("{}/sandboxes/{id}/pause", srv.url);
        tokio::spawn(async move {
            http.post(url)
                .header("X-API-KEY", common::API_KEY)
                .json(&json!({}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    // Once the pause has started (the sandbox is reported paused while it pauses).
    srv.wait_state(&id, Some("paused"), 10).await;
    let started = Instant::now();
    let (s, _) = srv
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 204);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the kill took {:?}",
        started.elapsed()
    );
    let pause = pause.await.unwrap().unwrap();
    // Done before the kill, or told the sandbox was killed.
    assert!(pause == 204 || pause == 404, "the pause answered {pause}");
    srv.wait_state(&id, None, 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_cuts_open_streams_as_dropped_connections() {
    use futures_util::StreamExt;
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    let msg = json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo started; sleep 600"]}, "stdin": false});
    let resp = srv.start_process(&id, &token, &msg).await;
    let mut stream = resp.bytes_stream();
    // Wait for the command's output: the stream is open and flowing.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("c3RhcnRlZA") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("output within 10 s")
            .expect("stream open")
            .expect("no error yet");
        seen.extend_from_slice(&chunk);
    }
    let (s, _) = srv
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 204);
    // The rest of the stream is an error, not a clean end without the end event.
    let mut ended_with_error = false;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends within 10 s of the kill")
    {
        if item.is_err() {
            ended_with_error = true;
            break;
        }
    }
    assert!(ended_with_error, "the kill ended the stream cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_pause_that_keeps_failing_falls_back_to_keeping_the_files() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv
        .create(json!({"templateID": "base", "autoPause": true, "timeout": 1}))
        .await;
    // A traced process: CRIU cannot save it, so every pause with memory is refused.
    let tracer = "import ctypes, subprocess, time\n\
                  libc = ctypes.CDLL(None, use_errno=True)\n\
                  child = subprocess.Popen(['sleep', '1000'])\n\
                  assert libc.ptrace(16, child.pid, 0, 0) == 0\n\
                  open('/tmp/tracing', 'w').close()\n\
                  time.sleep(1000)\n";
    srv.run(&id, &token, "echo kept > /home/user/notes").await;
    srv.run(
        &id,
        &token,
        &format!("nohup python3 -c \"{tracer}\" >/dev/null 2>&1 & while [ ! -e /tmp/tracing ]; do sleep 0.05; done"),
    )
    .await;
    // Three retries (1 s, 2 s, 4 s apart), then a filesystem-only pause. (A sandbox in
    // the middle of a pause is listed as paused: wait for the event.)
    let until = Instant::now() + Duration::from_secs(40);
    let events = loop {
        let (_, events) = srv
            .call(Method::GET, &format!("/events/sandboxes/{id}"), None)
            .await;
        if events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "sandbox.lifecycle.paused")
        {
            break events;
        }
        assert!(Instant::now() < until, "no pause within 40 s: {events}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    srv.wait_state(&id, Some("paused"), 10).await;
    let kinds: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    let failed = kinds
        .iter()
        .filter(|k| *k == "sandbox.lifecycle.pause_failed")
        .count();
    assert_eq!(failed, 4, "{kinds:?}");
    let last = events.as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "sandbox.lifecycle.paused", "{events}");
    assert_eq!(last["eventData"]["fallback"], "filesystem", "{events}");
    // Connect starts it afresh with its files.
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, out, _) = srv.run(&id, &token, "cat /home/user/notes").await;
    assert_eq!(out, "kept\n");
}

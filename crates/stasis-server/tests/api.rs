//! End-to-end tests of the server: real runtime, real agent, HTTP through the real
//! listener. Run as root with the `base` template built (scripts/test.sh).

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn create_run_pause_connect_cat_kill() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    let (code, _, err) = srv
        .run(&id, &token, "echo \"Hello World\" > /tmp/file.txt")
        .await;
    assert_eq!(code, 0, "{err}");

    srv.pause(&id).await;
    assert_eq!(srv.state(&id).await.as_deref(), Some("paused"));
    // While paused, traffic gets E2B's 502 "not found".
    let r = srv.proxied(&id, &token, 49983, "/health").await;
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.text().await.unwrap().contains("was not found"));

    let v = srv.connect(&id).await;
    assert_eq!(v["envdAccessToken"], token, "same token after resume");
    let (code, out, _) = srv.run(&id, &token, "cat /tmp/file.txt").await;
    assert_eq!((code, out.as_str()), (0, "Hello World\n"));
    // Connect to a running sandbox answers 200.
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/v2/sandboxes/{id}/connect"),
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(s, 200);

    let (s, _) = srv
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = srv
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!((s, v["code"].as_u64()), (404, Some(404)));
    let r = srv.proxied(&id, &token, 49983, "/health").await;
    assert_eq!(r.status().as_u16(), 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn double_pause_conflicts_and_paused_sandboxes_can_be_killed() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, _) = srv.create(json!({"templateID": "base"})).await;
    let path = format!("/sandboxes/{id}/pause");
    // Two pauses at once: one pauses, the other gets 409.
    let (a, b) = tokio::join!(
        srv.call(Method::POST, &path, None),
        srv.call(Method::POST, &path, Some(json!({"memory": true})))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [204, 409], "{a:?} {b:?}");
    let conflict = if a.0 == 409 { &a.1 } else { &b.1 };
    assert_eq!(conflict["code"], 409);
    assert!(conflict["message"]
        .as_str()
        .unwrap()
        .contains("already paused"));

    let (s, _) = srv
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = srv
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!((s, v["code"].as_u64()), (404, Some(404)));
    assert!(
        !dir.0.join("snapshots").join(&id).exists(),
        "snapshot removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_e2b_errors() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    // Wrong or missing API key.
    let r = srv
        .http
        .post(format!("{}/v2/sandboxes", srv.url))
        .header("X-API-KEY", "e2b_0000")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], 401);
    assert!(v["message"].is_string());
    // Malformed JSON.
    let r = srv
        .req(Method::POST, "/v2/sandboxes")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 400);
    // Oversized body: 400; the rest of the body is read and dropped before the answer,
    // so the pooled connection serves the next request below.
    let big = "x".repeat(2 << 20);
    let r = srv
        .req(Method::POST, "/v2/sandboxes")
        .header("content-type", "application/json")
        .body(format!(
            "{{\"templateID\":\"base\",\"metadata\":{{\"k\":\"{big}\"}}}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], 400);
    assert!(
        v["message"].as_str().unwrap().contains("larger than"),
        "{v}"
    );
    // Unknown template, bad timeout.
    let (s, v) = srv
        .call(
            Method::POST,
            "/v2/sandboxes",
            Some(json!({"templateID": "nope"})),
        )
        .await;
    assert_eq!((s, v["code"].as_u64()), (400, Some(400)), "{v}");
    let (s, _) = srv
        .call(
            Method::POST,
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "timeout": -1})),
        )
        .await;
    assert_eq!(s, 400);
    // Unknown ids.
    for (m, p) in [
        (Method::GET, "/sandboxes/nosuchsandbox".to_string()),
        (Method::POST, "/sandboxes/nosuchsandbox/pause".to_string()),
        (
            Method::POST,
            "/v2/sandboxes/nosuchsandbox/connect".to_string(),
        ),
        (Method::DELETE, "/sandboxes/nosuchsandbox".to_string()),
        (Method::DELETE, "/sandboxes/..%2F..%2Fetc".to_string()),
    ] {
        let (s, v) = srv.call(m.clone(), &p, None).await;
        assert_eq!((s, v["code"].as_u64()), (404, Some(404)), "{m} {p}: {v}");
    }
    // Bad list query.
    let (s, v) = srv
        .call(Method::GET, "/v2/sandboxes?limit=1000", None)
        .await;
    assert_eq!((s, v["code"].as_u64()), (400, Some(400)));
    // Nothing was left behind by the failed creates.
    let (_, v) = srv.call(Method::GET, "/v2/sandboxes", None).await;
    assert_eq!(v, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_access_token_is_refused_by_the_agent() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    // Stat of /tmp through the proxy with a given access token.
    let stat = |token: &str| {
        srv.to_sandbox(
            Method::POST,
            &id,
            token,
            AGENT_PORT,
            "/filesystem.Filesystem/Stat",
        )
        .header("content-type", "application/json")
        .body(r#"{"path":"/tmp"}"#)
        .send()
    };
    let r = stat("wrong").await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A large upload refused by the agent before it read the body: the refusal comes
    // through the proxy intact (not a reset turned into 502), and the next request
    // works.
    let r = srv
        .to_sandbox(
            Method::POST,
            &id,
            "wrong",
            AGENT_PORT,
            "/files?path=/tmp/big.bin",
        )
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 8 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = stat(&token).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The agent's /init is for the server only.
    let r = srv
        .to_sandbox(Method::POST, &id, &token, AGENT_PORT, "/init")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_by_state_and_pages() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let (id, _) = srv
            .create(
                json!({"templateID": "base", "metadata": {"n": i.to_string(), "group": "list"}}),
            )
            .await;
        ids.push(id);
    }
    for id in &ids[..4] {
        srv.pause(id).await;
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v2/sandboxes?state=paused&limit=2".to_string();
        if let Some(t) = &next {
            path.push_str(&format!("&nextToken={t}"));
        }
        let r = srv.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        next = r
            .headers()
            .get("x-next-token")
            .map(|v| v.to_str().unwrap().to_owned());
        let items: Vec<serde_json::Value> = r.json().await.unwrap();
        assert!(items.len() <= 2);
        for it in &items {
            assert_eq!(it["state"], "paused");
            for k in [
                "templateID",
                "sandboxID",
                "clientID",
                "startedAt",
                "endAt",
                "cpuCount",
                "memoryMB",
                "diskSizeMB",
                "envdVersion",
            ] {
                assert!(!it[k].is_null(), "{k} missing in {it}");
            }
            seen.push(it["sandboxID"].as_str().unwrap().to_owned());
        }
        pages += 1;
        if next.is_none() {
            break;
        }
        assert!(pages < 10);
    }
    seen.sort();
    let mut want: Vec<String> = ids[..4].to_vec();
    want.sort();
    assert_eq!(seen, want, "every paused sandbox exactly once");
    assert_eq!(pages, 2);
    // Python's percent-encoded comma, and the running filter.
    let (_, v) = srv
        .call(Method::GET, "/v2/sandboxes?state=running%2Cpaused", None)
        .await;
    assert_eq!(v.as_array().unwrap().len(), 7);
    let (_, v) = srv
        .call(Method::GET, "/v2/sandboxes?state=running", None)
        .await;
    assert_eq!(v.as_array().unwrap().len(), 3);
    // Metadata filter (double-encoded, as the SDKs send it).
    let (_, v) = srv
        .call(Method::GET, "/v2/sandboxes?metadata=n%3D5", None)
        .await;
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["sandboxID"], ids[5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_pause_after_inactivity_and_again_after_resume() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv
        .create(json!({"templateID": "base", "timeout": 2, "autoPause": true}))
        .await;
    let (code, _, _) = srv.run(&id, &token, "echo kept > /tmp/state").await;
    assert_eq!(code, 0);
    srv.wait_state(&id, Some("paused"), 30).await;
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/connect"),
            Some(json!({"timeout": 2})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (code, out, _) = srv.run(&id, &token, "cat /tmp/state").await;
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    // The setting survives the resume: it pauses itself again.
    srv.wait_state(&id, Some("paused"), 30).await;
    let (_, v) = srv
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(v["lifecycle"]["onTimeout"], "pause");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_object_form_of_auto_pause_sets_the_inactivity_window() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (s, v) = srv
        .call(
            Method::POST,
            "/sandboxes",
            Some(json!({"templateID": "base", "timeout": 300, "autoPause": {"enabled": true, "timeout": 2000}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["sandboxID"].as_str().unwrap().to_owned();
    srv.wait_state(&id, Some("paused"), 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_without_auto_pause_kills() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, _) = srv
        .create(json!({"templateID": "base", "timeout": 1}))
        .await;
    srv.wait_state(&id, None, 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_resume_through_the_proxy() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv
        .create(json!({"templateID": "base", "autoPause": true, "autoResume": {"enabled": true}}))
        .await;
    srv.run(&id, &token, "echo before > /tmp/x").await;
    srv.pause(&id).await;
    // Traffic for the paused sandbox resumes it, then is served.
    let (code, out, _) = srv.run(&id, &token, "cat /tmp/x").await;
    assert_eq!((code, out.as_str()), (0, "before\n"));
    assert_eq!(srv.state(&id).await.as_deref(), Some("running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_keeps_running_and_paused_sandboxes() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (a, ta) = srv.create(json!({"templateID": "base"})).await;
    let (b, tb) = srv.create(json!({"templateID": "base"})).await;
    srv.run(&a, &ta, "echo A > /tmp/who").await;
    srv.run(&b, &tb, "echo B > /tmp/who; sleep 1000 &").await;
    let (s, _) = srv
        .call(Method::POST, &format!("/sandboxes/{b}/pause"), None)
        .await;
    assert_eq!(s, 204);
    srv.stop().await;

    let srv = TestServer::start(&dir).await;
    assert_eq!(srv.state(&a).await.as_deref(), Some("running"));
    assert_eq!(srv.state(&b).await.as_deref(), Some("paused"));
    let (_, out, _) = srv.run(&a, &ta, "cat /tmp/who").await;
    assert_eq!(out, "A\n");
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{b}/connect"),
            Some(json!({"timeout": 60})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, out, _) = srv.run(&b, &tb, "cat /tmp/who; pgrep -c sleep").await;
    assert_eq!(out, "B\n1\n", "file and background process survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_connect_flow_and_info() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv
        .create(json!({"templateID": "base", "metadata": {"a": "b"}}))
        .await;
    let (s, v) = srv
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["envdAccessToken"], token);
    assert_eq!(v["state"], "running");
    assert_eq!(v["metadata"]["a"], "b");
    srv.call(Method::POST, &format!("/sandboxes/{id}/pause"), None)
        .await;
    // 2.0–2.5 SDKs: timeout fails on a paused sandbox, then resume, then GET.
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/resume"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/resume"),
            Some(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(s, 409, "resume of a running sandbox");
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/timeout"),
            Some(json!({"timeout": 30})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/refreshes"),
            Some(json!({"duration": 30})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = srv
        .call(Method::GET, &format!("/sandboxes/{id}/metrics"), None)
        .await;
    assert_eq!(s, 200);
    let m = &v[0];
    for k in [
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    ] {
        assert!(!m[k].is_null(), "{k} missing in {m}");
    }
    assert!(m["memUsed"].as_u64().unwrap() > 0);
    let (s, v) = srv.call(Method::GET, "/templates", None).await;
    assert_eq!(s, 200);
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["templateID"] == "base"));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_webhooks_are_delivered_signed() {
    use std::sync::{Arc, Mutex};
    // A local receiver that records every delivery.
    let got: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (s, v) = srv
        .call(
            Method::POST,
            "/events/webhooks",
            Some(json!({"name": "test", "url": hook_url, "enabled": true,
                        "events": ["sandbox.lifecycle.created", "sandbox.lifecycle.paused",
                                   "sandbox.lifecycle.resumed", "sandbox.lifecycle.killed"],
                        "signatureSecret": "s3cret"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(v.get("signatureSecret").is_none());
    let (s, v) = srv
        .call(
            Method::POST,
            "/events/webhooks",
            Some(json!({"url": "ftp://x", "signatureSecret": "a"})),
        )
        .await;
    assert_eq!((s, v["code"].as_u64()), (400, Some(400)));

    let (id, _) = srv
        .create(json!({"templateID": "base", "metadata": {"owner": "me"}}))
        .await;
    srv.call(Method::POST, &format!("/sandboxes/{id}/pause"), None)
        .await;
    srv.call(
        Method::POST,
        &format!("/v2/sandboxes/{id}/connect"),
        Some(json!({})),
    )
    .await;
    srv.call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;

    let want = ["created", "paused", "resumed", "killed"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < want.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries: {:?}",
            got.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.lock().unwrap().clone();
    let mut kinds = Vec::new();
    for (headers, body) in &got {
        let sig = headers.get("e2b-signature").unwrap().to_str().unwrap();
        assert_eq!(
            sig,
            stasis_server::webhooks::signature("s3cret", body.as_bytes())
        );
        assert_eq!(headers.get("e2b-signature-version").unwrap(), "v1");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["sandboxId"], id);
        assert_eq!(v["eventData"]["sandbox_metadata"]["owner"], "me");
        kinds.push(
            v["type"]
                .as_str()
                .unwrap()
                .trim_start_matches("sandbox.lifecycle.")
                .to_owned(),
        );
    }
    kinds.sort();
    let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    w.sort();
    assert_eq!(kinds, w);
    // The event log outlives the sandbox.
    let (s, v) = srv
        .call(Method::GET, &format!("/events/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let types: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"sandbox.lifecycle.created"));
    assert_eq!(types.last(), Some(&"sandbox.lifecycle.killed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_reaches_any_port_streams_upgrades_and_is_cut_by_pause() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    // An HTTP server on port 8000 and a raw upgrade-and-echo server on 8001.
    let echo = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8001)); s.listen()
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += c.recv(1024)
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while True:
        d = c.recv(1024)
        if not d: break
        c.sendall(d.upper())
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
    srv.run(
        &id,
        &token,
        "mkdir -p /tmp/www && echo served-from-8000 > /tmp/www/index.html",
    )
    .await;
    let start_bg = |cmd: String| {
        let srv = &srv;
        let (id, token) = (id.clone(), token.clone());
        async move {
            // Started detached: the agent keeps it running after the stream closes.
            let msg = json!({"process": {"cmd": "/bin/bash", "args": ["-c", cmd]}, "stdin": false});
            srv.start_process(&id, &token, &msg).await
        }
    };
    let _http = start_bg("cd /tmp/www && exec python3 -m http.server 8000".into()).await;
    let _echo = start_bg(format!("exec python3 -c '{}'", echo.replace('\'', "'\\''"))).await;
    // Any port, by header and by Host.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = srv.proxied(&id, &token, 8000, "/index.html").await;
        if r.status().as_u16() == 200 {
            assert_eq!(r.text().await.unwrap(), "served-from-8000\n");
            break;
        }
        if std::time::Instant::now() > deadline {
            let st = r.status();
            let (_, ps, _) = srv.run(&id, &token, "ps aux; ss -ltn").await;
            panic!("port 8000 never answered: {st} {:?}\n{ps}", r.text().await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = srv
        .http
        .get(format!("{}/index.html", srv.url))
        .header("Host", format!("8000-{id}.stasis.local"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A protocol upgrade, then bytes both ways.
    let addr = srv.url.trim_start_matches("http://").to_owned();
    let mut upgraded = None;
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: 8001\r\nX-Access-Token: {token}\r\n\r\n"
        ).as_bytes()).await.unwrap();
        let mut head = vec![0u8; 4096];
        let n = c.read(&mut head).await.unwrap();
        if String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101") {
            upgraded = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = upgraded.expect("upgrade through the proxy");
    c.write_all(b"hello through the tunnel").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"HELLO THROUGH THE TUNNEL");

    // A long-running stream is open; the pause cuts it and still succeeds.
    let long = start_bg("sleep 600".into()).await;
    srv.pause(&id).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), long.bytes()).await;
    assert!(rest.is_ok(), "the stream was not closed by the pause");
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the upgraded connection was closed by the pause");
    // After resume the listeners are back.
    srv.connect(&id).await;
    let r = srv.proxied(&id, &token, 8000, "/index.html").await;
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_wins_over_a_concurrent_pause_and_fork_copies() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    srv.run(&id, &token, "echo parent > /tmp/who").await;
    // Fork: independent copies with their own ids and tokens.
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/fork"),
            Some(json!({"count": 2})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let forks = v.as_array().unwrap().clone();
    assert_eq!(forks.len(), 2);
    for f in &forks {
        let (fid, ftok) = (
            f["sandboxID"].as_str().unwrap(),
            f["envdAccessToken"].as_str().unwrap(),
        );
        assert_ne!(fid, id);
        assert_ne!(ftok, token);
        let (code, out, _) = srv
            .run(fid, ftok, &format!("cat /tmp/who; echo {fid} > /tmp/who"))
            .await;
        assert_eq!((code, out.as_str()), (0, "parent\n"));
        // The parent's token does not reach the fork.
        let r = srv
            .to_sandbox(
                Method::POST,
                fid,
                &token,
                AGENT_PORT,
                "/filesystem.Filesystem/Stat",
            )
            .header("content-type", "application/json")
            .body(r#"{"path":"/"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let (_, out, _) = srv.run(&id, &token, "cat /tmp/who").await;
    assert_eq!(out, "parent\n");
    // Pause and kill at once: the kill wins, nothing is left.
    let pause_path = format!("/sandboxes/{id}/pause");
    let kill_path = format!("/sandboxes/{id}");
    let (p, k) = tokio::join!(srv.call(Method::POST, &pause_path, None), async {
        // Once the pause has begun (a pausing sandbox is listed as paused).
        srv.wait_state(&id, Some("paused"), 10).await;
        srv.call(Method::DELETE, &kill_path, None).await
    });
    assert_eq!(k.0, 204, "{k:?}");
    assert!(p.0 == 204 || p.0 == 404, "{p:?}");
    let (s, _) = srv.call(Method::GET, &kill_path, None).await;
    assert_eq!(s, 404);
    assert!(!dir.0.join("sandboxes").join(&id).exists());
    assert!(!dir.0.join("snapshots").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_rules_are_taken_at_create_changed_with_put_and_shown_in_the_detail() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, _) = srv
        .create(json!({"templateID": "base", "network": {
            "allowOut": ["203.0.113.7"], "denyOut": ["203.0.113.0/24"]}}))
        .await;
    let (s, v) = srv
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["network"]["allowOut"], json!(["203.0.113.7"]), "{v}");
    assert_eq!(v["network"]["denyOut"], json!(["203.0.113.0/24"]), "{v}");

    let path = format!("/sandboxes/{id}/network");
    let (s, v) = srv
        .call(Method::PUT, &path, Some(json!({"denyOut": ["0.0.0.0/0"]})))
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, v) = srv
        .call(Method::GET, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(v["network"]["denyOut"], json!(["0.0.0.0/0"]), "{v}");
    assert!(v["network"].get("allowOut").is_none(), "cleared: {v}");

    // What cannot be enforced is refused, saying why.
    for bad in [
        json!({"allowOut": ["10.1.2.3"]}),
        json!({"denyOut": ["::1"]}),
    ] {
        let (s, v) = srv.call(Method::PUT, &path, Some(bad.clone())).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("network rule")
                || v["message"].as_str().unwrap().contains("allowOut"),
            "{v}"
        );
    }
    let (s, _) = srv
        .call(
            Method::POST,
            "/v2/sandboxes",
            Some(json!({"templateID": "base", "network": {"allowOut": ["169.254.169.254"]}})),
        )
        .await;
    assert_eq!(s, 400, "cloud metadata can never be allowed");
    let (s, _) = srv
        .call(
            Method::PUT,
            "/sandboxes/nosuchsandbox/network",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_timeout_ends_the_sandbox_now() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (killed, _) = srv.create(json!({"templateID": "base"})).await;
    let (paused, _) = srv
        .create(json!({"templateID": "base", "autoPause": true}))
        .await;
    for id in [&killed, &paused] {
        let (s, v) = srv
            .call(
                Method::POST,
                &format!("/sandboxes/{id}/timeout"),
                Some(json!({"timeout": 0})),
            )
            .await;
        assert_eq!(s, 204, "{v}");
    }
    srv.wait_state(&killed, None, 10).await;
    srv.wait_state(&paused, Some("paused"), 10).await;
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/sandboxes/{paused}/timeout"),
            Some(json!({"timeout": -1})),
        )
        .await;
    assert_eq!(s, 400);
}

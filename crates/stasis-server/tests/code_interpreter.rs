//! End-to-end tests of the code interpreter (port 49999): a real server, sandboxes from
//! the `code-interpreter-v1` template, real IPython and bash kernels, and real pauses.
//! Run as root with both templates built (scripts/test.sh).

#[path = "common/code_interpreter.rs"]
mod ci_helpers;
mod common;

use std::time::{Duration, Instant};

use ci_helpers::*;
use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

/// A server with a code-interpreter sandbox whose interpreter answers.
async fn sandbox() -> (DataDir, TestServer, String, String) {
    assert!(
        stasis_server::testing::template_built(TEMPLATE),
        "template {TEMPLATE} missing in {}: run scripts/test.sh",
        stasis_server::testing::shared_data_dir().display()
    );
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": TEMPLATE})).await;
    wait_ready(&srv, &id, &token, 60).await;
    (dir, srv, id, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_state_survives_pause_and_resume() {
    let (_dir, srv, id, token) = sandbox().await;
    let lines = run(&srv, &id, &token, "x = 42").await;
    assert_eq!(lines[0]["type"], "number_of_executions", "{lines:?}");
    assert!(text(&lines).is_none());
    assert_eq!(
        text(&run(&srv, &id, &token, "x").await).as_deref(),
        Some("42")
    );

    srv.pause(&id).await;
    srv.connect(&id).await;
    // The same context, the same kernel: no re-creation.
    let lines = run(&srv, &id, &token, "x").await;
    assert_eq!(text(&lines).as_deref(), Some("42"), "{lines:?}");
    let lines = run(&srv, &id, &token, "x += 1; print(x)").await;
    assert_eq!(stdout(&lines), "43\n");
    // Sandbox env vars reach the kernel, per-request ones only for that request.
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "import os; os.environ.get('MY_VAR')", "env_vars": {"MY_VAR": "hello"}}),
    )
    .await;
    assert_eq!(text(&lines).as_deref(), Some("hello"), "{lines:?}");
    let lines = run(
        &srv,
        &id,
        &token,
        "import os; print(os.environ.get('MY_VAR'))",
    )
    .await;
    assert_eq!(stdout(&lines), "None\n");

    // The token is required.
    let r = ci(&srv, Method::POST, &id, "wrong", "/execute")
        .json(&json!({"code": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn rich_outputs_errors_and_streaming() {
    let (_dir, srv, id, token) = sandbox().await;
    // matplotlib → png
    let lines = run(
        &srv,
        &id,
        &token,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()",
    )
    .await;
    let png = lines
        .iter()
        .find(|l| l["type"] == "result" && l["png"].is_string())
        .unwrap_or_else(|| panic!("no png in {lines:?}"));
    assert!(png["png"].as_str().unwrap().starts_with("iVBORw0KGgo"));
    assert_eq!(png["is_main_result"], false);
    // …with the chart described as data.
    assert_eq!(png["chart"]["type"], "line", "{png}");
    let elements = png["chart"]["elements"].as_array().expect("chart elements");
    assert_eq!(elements.len(), 1, "{png}");

    // pandas → html
    let lines = run(
        &srv,
        &id,
        &token,
        "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})",
    )
    .await;
    let r = lines
        .iter()
        .find(|l| l["type"] == "result")
        .unwrap_or_else(|| panic!("no result in {lines:?}"));
    assert!(r["html"].as_str().unwrap().contains("<table"), "{r}");
    assert_eq!(r["is_main_result"], true);
    assert_eq!(
        r["data"],
        serde_json::json!({"a": [1, 2], "b": ["x", "y"]}),
        "{r}"
    );
    assert!(r["text"].as_str().unwrap().contains('a'));

    // an exception is an error line with a traceback, and the kernel goes on
    let lines = run(&srv, &id, &token, "def f():\n    return 1 / 0\nf()").await;
    let e = error(&lines).unwrap_or_else(|| panic!("no error in {lines:?}"));
    assert_eq!(e["name"], "ZeroDivisionError");
    assert_eq!(e["value"], "division by zero");
    // IPython's traceback, ANSI colours included, as E2B sends it
    let tb = e["traceback"].as_str().unwrap();
    assert!(
        tb.contains("ZeroDivisionError") && tb.contains("f()"),
        "{e}"
    );
    assert_eq!(lines.iter().filter(|l| l["type"] == "error").count(), 1);
    assert_eq!(
        text(&run(&srv, &id, &token, "6 * 7").await).as_deref(),
        Some("42")
    );

    // stdout of a slow loop arrives before the execution ends
    let start = Instant::now();
    let resp = ci(&srv, Method::POST, &id, &token, "/execute")
        .json(&json!({"code": "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut first_stdout = None;
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_stdout.is_none() && buf.contains("\"stdout\"") {
            first_stdout = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let first = first_stdout.expect("stdout lines");
    assert!(
        first + Duration::from_millis(1500) < total,
        "first stdout at {first:?}, end at {total:?}"
    );
    let lines: Vec<Value> = buf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(stdout(&lines), "0\n1\n2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn contexts_are_isolated_and_restart_clears_state() {
    let (_dir, srv, id, token) = sandbox().await;
    let create = |body: Value| {
        let req = ci(&srv, Method::POST, &id, &token, "/contexts").json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (status, text)
        }
    };
    let (s, a) = create(json!({"language": "python", "cwd": "/tmp"})).await;
    assert_eq!(s, 200, "{a}");
    let a: Value = serde_json::from_str(&a).unwrap();
    assert_eq!(a["language"], "python");
    assert_eq!(a["cwd"], "/tmp");
    let (s, b) = create(json!({})).await;
    assert_eq!(s, 200, "{b}");
    let b: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(b["cwd"], "/home/user");
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let in_ctx = |ctx: &str, code: &str| json!({"code": code, "context_id": ctx});
    execute(&srv, &id, &token, in_ctx(a_id, "v = 'a'")).await;
    execute(&srv, &id, &token, in_ctx(b_id, "v = 'b'")).await;
    let la = execute(
        &srv,
        &id,
        &token,
        in_ctx(a_id, "import os; (v, os.getcwd())"),
    )
    .await;
    assert_eq!(text(&la).as_deref(), Some("('a', '/tmp')"));
    let lb = execute(&srv, &id, &token, in_ctx(b_id, "v")).await;
    assert_eq!(text(&lb).as_deref(), Some("b"));
    let ld = run(&srv, &id, &token, "'v' in dir()").await;
    assert_eq!(
        text(&ld).as_deref(),
        Some("False"),
        "the default context is separate"
    );

    let r = ci(&srv, Method::GET, &id, &token, "/contexts")
        .send()
        .await
        .unwrap();
    let list: Vec<Value> = r.json().await.unwrap();
    assert!(list.iter().any(|c| c["id"] == a_id) && list.iter().any(|c| c["id"] == b_id));
    assert!(list
        .iter()
        .any(|c| c["language"] == "python" && c["id"] != a_id && c["id"] != b_id));

    // restart clears state, keeps the id
    let r = ci(
        &srv,
        Method::POST,
        &id,
        &token,
        &format!("/contexts/{a_id}/restart"),
    )
    .send()
    .await
    .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let la = execute(&srv, &id, &token, in_ctx(a_id, "v")).await;
    assert_eq!(
        error(&la).map(|e| e["name"].clone()),
        Some(json!("NameError"))
    );
    let lb = execute(&srv, &id, &token, in_ctx(b_id, "v")).await;
    assert_eq!(text(&lb).as_deref(), Some("b"));

    // delete; then the context is unknown
    let r = ci(
        &srv,
        Method::DELETE,
        &id,
        &token,
        &format!("/contexts/{b_id}"),
    )
    .send()
    .await
    .unwrap();
    assert!(r.status().is_success());
    let r = ci(&srv, Method::POST, &id, &token, "/execute")
        .json(&in_ctx(b_id, "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.text().await.unwrap(), format!("Context {b_id} not found"));

    // bash is a real kernel too
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "X=5; echo \"x=$X $HOME $(whoami)\"", "language": "bash"}),
    )
    .await;
    assert_eq!(stdout(&lines), "x=5 /home/user user\n", "{lines:?}");
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "echo $X", "language": "bash"}),
    )
    .await;
    assert_eq!(stdout(&lines), "5\n");

    // a language without a kernel is a clear error
    let r = ci(&srv, Method::POST, &id, &token, "/execute")
        .json(&json!({"code": "1", "language": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("no kernel for language 'r'") && msg.contains("python"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_disconnect_interrupts_the_kernel() {
    let (_dir, srv, id, token) = sandbox().await;
    run(&srv, &id, &token, "n = 0").await;
    let resp = ci(&srv, Method::POST, &id, &token, "/execute")
        .json(&json!({"code": "import time\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.05)"}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    // Read until the loop is visibly running, then hang up.
    let mut seen = String::new();
    while !seen.contains("\"stdout\"") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    // The next execution is queued behind the loop until the interrupt lands.
    let start = Instant::now();
    let first = run(&srv, &id, &token, "n").await;
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let n1: i64 = text(&first).unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n2: i64 = text(&run(&srv, &id, &token, "n").await)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(n1, n2, "the loop stopped");
    assert!(n1 > 0);
}

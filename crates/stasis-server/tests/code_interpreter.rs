//! End-to-end tests of the code interpreter (port 49999): a real server, sandboxes from
//! the `code-interpreter-v1` template, real kernels (IPython, tslab for JavaScript and
//! TypeScript, IRkernel, JJava, bash), and real pauses.
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
    let list = || async {
        let r = ci(&srv, Method::GET, &id, &token, "/contexts")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json::<Vec<Value>>().await.unwrap()
    };
    // The default python and javascript contexts exist from the start, in that order.
    let defaults = list().await;
    let languages: Vec<&str> = defaults
        .iter()
        .map(|c| c["language"].as_str().unwrap())
        .collect();
    assert_eq!(languages, ["python", "javascript"], "{defaults:?}");
    assert!(defaults.iter().all(|c| c["cwd"] == "/home/user"));
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

    // Listed in creation order: the defaults, then ours.
    let ids: Vec<Value> = list().await.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(
        ids,
        [
            defaults[0]["id"].clone(),
            defaults[1]["id"].clone(),
            json!(a_id),
            json!(b_id)
        ]
    );
    // The default context runCode uses is the listed python one.
    let ld = run(&srv, &id, &token, "v = 'default'").await;
    assert!(error(&ld).is_none(), "{ld:?}");
    assert_eq!(ids.len(), list().await.len(), "no new context");

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

    // bash is a real kernel too; kernels run as root, as in E2B
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "X=5; echo \"x=$X $HOME $(whoami) $PWD\"", "language": "bash"}),
    )
    .await;
    assert_eq!(stdout(&lines), "x=5 /root root /home/user\n", "{lines:?}");
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "echo $X", "language": "bash"}),
    )
    .await;
    assert_eq!(stdout(&lines), "5\n");

    // a context in root's home works (it is root's)
    let (s, c) = create(json!({"language": "python", "cwd": "/root"})).await;
    assert_eq!(s, 200, "{c}");
    let c: Value = serde_json::from_str(&c).unwrap();
    let lines = execute(
        &srv,
        &id,
        &token,
        in_ctx(
            c["id"].as_str().unwrap(),
            "import os; open('mine', 'w').write('x'); (os.getcwd(), os.getuid())",
        ),
    )
    .await;
    assert_eq!(text(&lines).as_deref(), Some("('/root', 0)"), "{lines:?}");

    // a language without a kernel is a clear error
    let r = ci(&srv, Method::POST, &id, &token, "/execute")
        .json(&json!({"code": "1", "language": "cobol"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("no kernel for language 'cobol'") && msg.contains("python"),
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

/// `POST /contexts` with `body`; the created context's id.
async fn new_context(srv: &TestServer, id: &str, token: &str, body: Value) -> String {
    let r = ci(srv, Method::POST, id, token, "/contexts")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "create {body}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// The text of the first result, main or not (R and Java kernels show values as
/// display data).
fn first_text(lines: &[Value]) -> Option<String> {
    lines
        .iter()
        .find(|l| l["type"] == "result")
        .and_then(|l| l["text"].as_str().map(str::to_owned))
}

/// `runCode(code, {language})`.
async fn run_in(srv: &TestServer, id: &str, token: &str, language: &str, code: &str) -> Vec<Value> {
    execute(srv, id, token, json!({"code": code, "language": language})).await
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript_and_typescript_run_on_real_kernels() {
    let (_dir, srv, id, token) = sandbox().await;
    // JavaScript (tslab): output, state between runs, ESM imports and top-level await.
    // tslab prints the last expression's value on stdout (E2B's kernel makes it a
    // result: e2b-compat §5.1).
    let lines = run_in(
        &srv,
        &id,
        &token,
        "js",
        "console.log('hi'); const n = 6 * 7; n",
    )
    .await;
    assert_eq!(stdout(&lines), "hi\n42\n", "{lines:?}");
    let lines = run_in(&srv, &id, &token, "javascript", "n + 1").await;
    assert_eq!(stdout(&lines), "43\n", "{lines:?}");
    let lines = run_in(
        &srv,
        &id,
        &token,
        "js",
        "import { readFileSync } from 'fs'\nconsole.log(typeof readFileSync)\nawait Promise.resolve(process.cwd())",
    )
    .await;
    assert_eq!(stdout(&lines), "function\n/home/user\n", "{lines:?}");
    // A runtime error (tslab checks even JavaScript's types before it runs it).
    let lines = run_in(&srv, &id, &token, "js", "JSON.parse('{')").await;
    let e = error(&lines).unwrap_or_else(|| panic!("no error in {lines:?}"));
    assert_eq!(e["name"], "SyntaxError", "{lines:?}");
    assert!(e["value"].as_str().unwrap().contains("JSON"), "{lines:?}");
    // Per-request variables, then back to unset.
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "console.log(process.env.FOO)", "language": "js", "env_vars": {"FOO": "bar"}}),
    )
    .await;
    assert_eq!(stdout(&lines), "bar\n", "{lines:?}");
    let lines = run_in(
        &srv,
        &id,
        &token,
        "js",
        "console.log(process.env.FOO ?? 'unset')",
    )
    .await;
    assert_eq!(stdout(&lines), "unset\n", "{lines:?}");

    // TypeScript: types are checked, and it is a context of its own.
    let lines = run_in(
        &srv,
        &id,
        &token,
        "ts",
        "const message: string = 'typed'; console.log(message)",
    )
    .await;
    assert_eq!(stdout(&lines), "typed\n", "{lines:?}");
    let lines = run_in(&srv, &id, &token, "typescript", "const k: number = 'text'").await;
    let e = error(&lines).unwrap_or_else(|| panic!("a type error is an error: {lines:?}"));
    assert!(
        e["value"].as_str().unwrap().contains("not assignable"),
        "{lines:?}"
    );
    // `n` of the javascript context does not exist here.
    let lines = run_in(&srv, &id, &token, "ts", "console.log(typeof n)").await;
    let e = error(&lines).unwrap_or_else(|| panic!("no error in {lines:?}"));
    assert!(
        e["value"]
            .as_str()
            .unwrap()
            .contains("Cannot find name 'n'"),
        "{lines:?}"
    );

    // A context of its own, in its own directory.
    let ctx = new_context(&srv, &id, &token, json!({"language": "ts", "cwd": "/tmp"})).await;
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "const dir: string = process.cwd(); console.log(dir)", "context_id": ctx}),
    )
    .await;
    assert_eq!(stdout(&lines), "/tmp\n", "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn r_and_java_run_on_real_kernels() {
    let (_dir, srv, id, token) = sandbox().await;
    // R
    let lines = run_in(
        &srv,
        &id,
        &token,
        "r",
        "x <- c(1, 2, 6)\nprint('hi')\nmean(x)",
    )
    .await;
    assert_eq!(first_text(&lines).as_deref(), Some("[1] 3"), "{lines:?}");
    assert!(
        stdout(&lines).contains("[1] \"hi\""),
        "print goes to stdout: {lines:?}"
    );
    let lines = run_in(&srv, &id, &token, "R", "getwd()").await;
    assert_eq!(
        first_text(&lines).as_deref(),
        Some("[1] \"/home/user\""),
        "{lines:?}"
    );
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "Sys.getenv('FOO')", "language": "r", "env_vars": {"FOO": "bar"}}),
    )
    .await;
    assert_eq!(
        first_text(&lines).as_deref(),
        Some("[1] \"bar\""),
        "{lines:?}"
    );
    let lines = run_in(&srv, &id, &token, "r", "Sys.getenv('FOO', unset = 'unset')").await;
    assert_eq!(
        first_text(&lines).as_deref(),
        Some("[1] \"unset\""),
        "{lines:?}"
    );
    let lines = run_in(&srv, &id, &token, "r", "stop('broken')").await;
    assert!(error(&lines).is_some(), "{lines:?}");
    let ctx = new_context(&srv, &id, &token, json!({"language": "r", "cwd": "/tmp"})).await;
    let lines = execute(
        &srv,
        &id,
        &token,
        json!({"code": "getwd()", "context_id": ctx}),
    )
    .await;
    assert_eq!(
        first_text(&lines).as_deref(),
        Some("[1] \"/tmp\""),
        "{lines:?}"
    );

    // Java (JShell): state between runs, output, errors.
    let lines = run_in(&srv, &id, &token, "java", "int a = 40;").await;
    assert!(error(&lines).is_none(), "{lines:?}");
    let lines = run_in(
        &srv,
        &id,
        &token,
        "java",
        "System.out.println(\"hi\");\na + 2",
    )
    .await;
    assert_eq!(stdout(&lines), "hi\n", "{lines:?}");
    assert_eq!(first_text(&lines).as_deref(), Some("42"), "{lines:?}");
    let lines = run_in(
        &srv,
        &id,
        &token,
        "java",
        "System.getProperty(\"user.dir\")",
    )
    .await;
    assert_eq!(
        first_text(&lines).as_deref(),
        Some("/home/user"),
        "{lines:?}"
    );
    let lines = run_in(&srv, &id, &token, "java", "undefinedName + 1").await;
    assert!(error(&lines).is_some(), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_behaves_as_in_e2bs_template() {
    let (_dir, srv, id, token) = sandbox().await;
    // matplotlib as pinned by E2B: boxplot still takes `labels` (later versions raise).
    let lines = run(
        &srv,
        &id,
        &token,
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.set_title('Scores')\n\
         ax.boxplot([[1, 2, 3, 4], [2, 3, 4, 9]], labels=['a', 'b'], patch_artist=True)\nplt.show()",
    )
    .await;
    assert!(error(&lines).is_none(), "{lines:?}");
    let chart = lines
        .iter()
        .find(|l| l["type"] == "result" && l["chart"].is_object())
        .unwrap_or_else(|| panic!("no chart in {lines:?}"));
    assert_eq!(chart["chart"]["type"], "box_and_whisker", "{chart}");
    assert_eq!(chart["chart"]["title"], "Scores", "{chart}");
    let labels: Vec<&Value> = chart["chart"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["label"])
        .collect();
    assert_eq!(labels, [&json!("a"), &json!("b")], "{chart}");

    // A Pillow image saved to a file is shown as a result, and the file is written.
    let lines = run(
        &srv,
        &id,
        &token,
        "from PIL import Image\nImage.new('RGB', (8, 8), 'red').save('red.png')\n\
         import os; print(os.path.getsize('red.png') > 0)",
    )
    .await;
    let png = lines
        .iter()
        .find(|l| l["type"] == "result" && l["png"].is_string())
        .unwrap_or_else(|| panic!("no png in {lines:?}"));
    assert!(png["png"].as_str().unwrap().starts_with("iVBORw0KGgo"));
    assert_eq!(stdout(&lines), "True\n", "{lines:?}");
    // …but not when saved to a stream.
    let lines = run(
        &srv,
        &id,
        &token,
        "import io\nImage.new('RGB', (8, 8)).save(io.BytesIO(), 'PNG')",
    )
    .await;
    assert!(!lines.iter().any(|l| l["type"] == "result"), "{lines:?}");
    // The versions are E2B's.
    let lines = run(
        &srv,
        &id,
        &token,
        "import matplotlib, pandas, numpy, PIL; (matplotlib.__version__, pandas.__version__, numpy.__version__, PIL.__version__)",
    )
    .await;
    assert_eq!(
        text(&lines).as_deref(),
        Some("('3.10.9', '2.2.3', '2.3.5', '12.3.0')"),
        "{lines:?}"
    );
}

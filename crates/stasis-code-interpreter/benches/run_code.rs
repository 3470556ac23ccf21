//! `runCode('1+1')` round trip through a real server, proxy, sandbox and IPython
//! kernel (median, p95), and the first execution after a pause and resume.
//!
//! Needs root, the `code-interpreter-v1` template in `$STASIS_TEST_DATA_DIR` (default
//! `/var/lib/stasis-test`) and `stasis-envd` / `stasis-netns-hook` built next to this
//! bench (`cargo build --workspace --release`, or set `STASIS_TEST_BIN_DIR`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stasis_server::testing::{bin_dir, template_built, DataDir, Serving, API_KEY};

const TEMPLATE: &str = "code-interpreter-v1";

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).min(v.len()) - 1];
    (median, p95)
}

async fn run_code(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    token: &str,
    code: &str,
) -> Vec<Value> {
    let r = http
        .post(format!("{url}/execute"))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", "49999")
        .header("X-Access-Token", token)
        .json(&json!({"code": code}))
        .send()
        .await
        .expect("execute");
    assert_eq!(r.status().as_u16(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::main]
async fn main() {
    if !template_built(TEMPLATE) || !bin_dir().join("stasis-envd").exists() {
        eprintln!(
            "skipped: needs template {TEMPLATE} built and {}",
            bin_dir().join("stasis-envd").display()
        );
        return;
    }
    let dir = DataDir::new();
    let serving = Serving::start(dir.config()).await;
    let url = serving.url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    let t0 = Instant::now();
    let r = http
        .post(format!("{url}/v2/sandboxes"))
        .header("X-API-KEY", API_KEY)
        .json(&json!({"templateID": TEMPLATE}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let id = v["sandboxID"].as_str().unwrap().to_owned();
    let token = v["envdAccessToken"].as_str().unwrap().to_owned();
    // first runCode after create (kernel warm-up included)
    loop {
        let ok = http
            .get(format!("{url}/health"))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", "49999")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run_code(&http, &url, &id, &token, "1+1").await;
    let first_after_create = t0.elapsed();

    let mut rt = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let lines = run_code(&http, &url, &id, &token, "1+1").await;
        rt.push(t.elapsed());
        assert!(lines.iter().any(|l| l["text"] == "2"));
    }
    let (med, p95) = stats(rt);

    run_code(&http, &url, &id, &token, "x = 42").await;
    let mut resume = Vec::new();
    let mut first_exec = Vec::new();
    for _ in 0..5 {
        let r = http
            .post(format!("{url}/sandboxes/{id}/pause"))
            .header("X-API-KEY", API_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v2/sandboxes/{id}/connect"))
            .header("X-API-KEY", API_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let connected = t.elapsed();
        let lines = run_code(&http, &url, &id, &token, "x").await;
        assert!(lines.iter().any(|l| l["text"] == "42"));
        resume.push(t.elapsed());
        first_exec.push(t.elapsed() - connected);
    }
    let (rmed, rp95) = stats(resume);
    let (fmed, fp95) = stats(first_exec);

    println!("| measurement | median | p95 |");
    println!("|---|---|---|");
    println!("| runCode('1+1') round trip (200 runs) | {med:.2?} | {p95:.2?} |");
    println!("| connect + first runCode('x') after pause (5 runs) | {rmed:.2?} | {rp95:.2?} |");
    println!("| first runCode('x') after connect returned (5 runs) | {fmed:.2?} | {fp95:.2?} |");
    println!("| create + first runCode('1+1') (1 run) | {first_after_create:.2?} | – |");

    let _ = http
        .delete(format!("{url}/sandboxes/{id}"))
        .header("X-API-KEY", API_KEY)
        .send()
        .await;
    serving.stop().await;
}

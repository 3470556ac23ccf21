//! Benchmark: `echo` round trip through the agent vs. spawning `bash -c echo` locally,
//! and `/files` upload/download throughput vs. `cp`. Prints a table.
//!
//! `cargo bench -p stasis-envd` (env `ENVD_BENCH_ITERS`, `ENVD_BENCH_MB` to tune).

use std::time::{Duration, Instant};

use stasis_envd::{Config, ReapMode};
use stasis_envd_proto::envelope::{self, Decoder};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.95))
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn agent_echo(http: &reqwest::Client, base: &str) -> Duration {
    let body = br#"{"process":{"cmd":"/bin/bash","args":["-c","echo hi"]},"stdin":false}"#;
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(envelope::encode(0, body))
        .send()
        .await
        .expect("start");
    let bytes = resp.bytes().await.expect("body");
    let elapsed = t.elapsed();
    let mut d = Decoder::new(1 << 20);
    d.push(&bytes);
    let mut saw_output = false;
    while let Some(env) = d.next_envelope().expect("envelope") {
        saw_output |= String::from_utf8_lossy(&env.payload).contains("aGkK");
    }
    assert!(saw_output, "echo output missing");
    elapsed
}

fn local_echo() -> Duration {
    let t = Instant::now();
    let out = std::process::Command::new("/bin/bash")
        .args(["-c", "echo hi"])
        .output()
        .expect("bash");
    assert_eq!(out.stdout, b"hi\n");
    t.elapsed()
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let iters = env_num("ENVD_BENCH_ITERS", 200);
    let mb = env_num("ENVD_BENCH_MB", 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = Config {
            default_user: "root".into(),
            reap: ReapMode::Own,
            ..Config::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(stasis_envd::serve(listener, config, async move {
            let _ = stop_rx.await;
        }));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();

        for _ in 0..10 {
            agent_echo(&http, &base).await;
            local_echo();
        }
        let mut via_agent = Vec::with_capacity(iters);
        let mut local = Vec::with_capacity(iters);
        for _ in 0..iters {
            via_agent.push(agent_echo(&http, &base).await);
            local.push(local_echo());
        }
        let (a50, a95) = stats(via_agent);
        let (l50, l95) = stats(local);

        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..mb << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let up_path = dir.path().join("up.bin");
        let t = Instant::now();
        let r = http
            .post(format!("{base}/files"))
            .query(&[("path", up_path.to_str().unwrap())])
            .header("content-type", "application/octet-stream")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let up = t.elapsed();
        let t = Instant::now();
        let got = http
            .get(format!("{base}/files"))
            .query(&[("path", up_path.to_str().unwrap())])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let down = t.elapsed();
        assert!(got.as_ref() == data.as_slice());
        let t = Instant::now();
        let st = std::process::Command::new("cp")
            .arg(&src)
            .arg(dir.path().join("cp.bin"))
            .status()
            .unwrap();
        assert!(st.success());
        let cp = t.elapsed();

        println!();
        println!("| measurement ({iters} iterations, {mb} MiB file) | median / value | p95 |");
        println!("|---|---|---|");
        println!("| echo via agent (Start stream, bash -c) | {a50:.2?} | {a95:.2?} |");
        println!("| echo local spawn (bash -c) | {l50:.2?} | {l95:.2?} |");
        println!(
            "| upload POST /files octet-stream | {:.0} MiB/s ({up:.2?}) | |",
            mbps(data.len(), up)
        );
        println!(
            "| download GET /files | {:.0} MiB/s ({down:.2?}) | |",
            mbps(data.len(), down)
        );
        println!(
            "| cp (local, page cache) | {:.0} MiB/s ({cp:.2?}) | |",
            mbps(data.len(), cp)
        );

        let _ = stop_tx.send(());
        let _ = server.await;
    });
}

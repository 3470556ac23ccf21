//! API benchmark: create → first command answered, pause, and resume → first command
//! answered, through the server's HTTP API and proxy, next to bare `runc`/CRIU on the
//! same bundle (the engine's floor) in the same run; and list latency with 10,000
//! sandboxes in the catalog.
//!
//! `cargo bench -p stasis-server --bench api` (root, template `base` built,
//! `STASIS_BENCH_ITERS` iterations, default 10).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.95))
}

fn runc(root: &Path, args: &[&str]) {
    let out = Command::new("/usr/sbin/runc")
        .arg("--root")
        .arg(root)
        .args(["--criu", "/usr/local/sbin/criu"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    if !out.status.success() {
        // CRIU's own account, from the work dir it was given.
        let log = args
            .windows(2)
            .find(|w| w[0] == "--work-path")
            .map(|w| {
                Path::new(w[1]).join(if args[0] == "restore" {
                    "restore.log"
                } else {
                    "dump.log"
                })
            })
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("Error")).collect();
        panic!(
            "runc {args:?}: {}\nCRIU: {}",
            String::from_utf8_lossy(&out.stderr),
            errors.join("\n")
        );
    }
}

async fn health(srv: &TestServer, id: &str, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = srv.proxied(id, token, 49983, "/health").await;
        if r.status().is_success() {
            return;
        }
        assert!(Instant::now() < deadline, "agent never answered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() {
    let iters: usize = std::env::var("STASIS_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (mut create, mut pause, mut resume) = (vec![], vec![], vec![]);
    let (mut f_pause, mut f_resume) = (vec![], vec![]);
    for _ in 0..iters {
        let t = Instant::now();
        let (id, token) = srv.create(json!({"templateID": "base"})).await;
        let (code, _, _) = srv.run(&id, &token, "true").await;
        assert_eq!(code, 0);
        create.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        srv.pause(&id).await;
        pause.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        srv.connect(&id).await;
        let (code, _, _) = srv.run(&id, &token, "true").await;
        assert_eq!(code, 0);
        resume.push(t.elapsed().as_secs_f64());

        // Floor: bare runc checkpoint/restore of the same container, until the agent
        // answers again.
        let root = dir.0.join("runc");
        let bundle = dir.0.join("sandboxes").join(&id).join("bundle");
        let img = dir.0.join(format!("bench-{id}"));
        std::fs::create_dir_all(img.join("images")).unwrap();
        std::fs::create_dir_all(img.join("work")).unwrap();
        std::fs::set_permissions(
            img.join("images"),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let (i, w) = (
            img.join("images").display().to_string(),
            img.join("work").display().to_string(),
        );
        let t = Instant::now();
        runc(
            &root,
            &["checkpoint", "--image-path", &i, "--work-path", &w, &id],
        );
        f_pause.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        runc(
            &root,
            &[
                "restore",
                "-d",
                "--bundle",
                &bundle.display().to_string(),
                "--image-path",
                &i,
                "--work-path",
                &w,
                &id,
            ],
        );
        health(&srv, &id, &token).await;
        f_resume.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&img);
        let (s, _) = srv
            .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
            .await;
        assert_eq!(s, 204);
    }
    println!("# API benchmark ({iters} iterations)");
    println!("| op | stasis median | stasis p95 | runc/criu median | runc/criu p95 | ratio |");
    println!("|---|---|---|---|---|---|");
    let (m, p) = stats(create);
    println!("| create → first command answered | {m:.3} s | {p:.3} s | | | |");
    for (op, ours, floor) in [
        ("pause", pause, f_pause),
        ("resume → first command answered", resume, f_resume),
    ] {
        let (m, p) = stats(ours);
        let (fm, fp) = stats(floor);
        println!(
            "| {op} | {m:.3} s | {p:.3} s | {fm:.3} s | {fp:.3} s | {:.2}× |",
            m / fm
        );
    }

    // List latency with 10,000 paused sandboxes in the catalog.
    let catalog = stasis_catalog::Catalog::open(dir.0.join("catalog.db")).unwrap();
    let now = stasis_catalog::Catalog::now();
    let recs: Vec<stasis_catalog::SandboxRecord> = (0..10_000)
        .map(|i| stasis_catalog::SandboxRecord {
            id: stasis_types::SandboxId::generate(),
            template: "base".parse().unwrap(),
            alias: Some("base".into()),
            client_id: "stasis".into(),
            state: stasis_catalog::CatalogState::Paused,
            started_at: now - chrono::Duration::milliseconds(i),
            end_at: None,
            timeout_secs: 300,
            auto_pause: true,
            auto_pause_timeout_ms: None,
            auto_pause_memory: true,
            auto_resume: false,
            metadata: [("n".to_string(), (i % 10).to_string())].into(),
            env_vars: Default::default(),
            envd_access_token: format!("{i:032x}"),
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 10240,
            allow_internet: false,
            paused_at: Some(now),
            created_at: now,
            updated_at: now,
        })
        .collect();
    catalog.insert_many(&recs).unwrap();
    let mut first = vec![];
    let mut page_times = vec![];
    let mut total = 0;
    for round in 0..3 {
        let mut next: Option<String> = None;
        loop {
            let mut path = "/v2/sandboxes?state=paused&limit=100".to_string();
            if let Some(t) = &next {
                path.push_str(&format!("&nextToken={t}"));
            }
            let t = Instant::now();
            let r = srv.req(Method::GET, &path).send().await.unwrap();
            next = r
                .headers()
                .get("x-next-token")
                .map(|v| v.to_str().unwrap().to_owned());
            let items: Vec<serde_json::Value> = r.json().await.unwrap();
            let dt = t.elapsed().as_secs_f64() * 1000.0;
            if next.is_none() && items.is_empty() {
                break;
            }
            if round == 0 {
                total += items.len();
            }
            page_times.push(dt);
            if first.len() <= round {
                first.push(dt);
            }
            if next.is_none() {
                break;
            }
        }
    }
    let (m, p) = stats(page_times);
    let (fm, _) = stats(first);
    println!();
    println!("List of {total} paused sandboxes, 100 per page, 3 full passes:");
    println!("| first page median | any page median | any page p95 |");
    println!("|---|---|---|");
    println!("| {fm:.2} ms | {m:.2} ms | {p:.2} ms |");
    drop(srv);
}

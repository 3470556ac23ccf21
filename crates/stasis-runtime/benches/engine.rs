//! Engine benchmark: create, pause and resume through the runtime, next to the same
//! operations done with bare `runc` (and CRIU) on the same bundle and workload in the
//! same run — the engine's floor. Sandboxes hold ~10 MB, ~100 MB and ~1 GiB.
//!
//! `cargo bench -p stasis-runtime --bench engine` (as root, template `base` built).
//! `STASIS_BENCH_ITERS` sets iterations per size (default 7; 3 for 1 GiB).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use stasis_runtime::{PauseMode, Runtime};
use stasis_types::Resources;

fn runc(args: &[&str]) {
    let dd = data_dir();
    let status = Command::new("/usr/sbin/runc")
        .arg("--root")
        .arg(dd.join("runc"))
        .args(["--criu", "/usr/local/sbin/criu"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runc");
    assert!(status.success(), "runc {args:?} failed");
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.95))
}

#[derive(Default)]
struct Series {
    create: Vec<f64>,
    pause: Vec<f64>,
    resume: Vec<f64>,
    floor_create: Vec<f64>,
    floor_pause: Vec<f64>,
    floor_resume: Vec<f64>,
    image_mb: Vec<f64>,
}

fn main() {
    let rt = runtime();
    let iters: usize = std::env::var("STASIS_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let resources = Resources {
        cpu_millis: 2000,
        memory_bytes: 2048 * Resources::MIB,
        pids: 1024,
    };
    println!("# engine benchmark: {iters} iterations per size (3 at most for 1 GiB)");
    println!(
        "| workload | op | stasis median | stasis p95 | runc/criu median | runc/criu p95 | ratio (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, mb) in [("~10 MB", 0usize), ("~100 MB", 90), ("~1 GiB", 1000)] {
        let n = if mb >= 1000 { iters.min(3) } else { iters };
        let mut s = Series::default();
        for _ in 0..n {
            // Stasis: create (until the workload answers), pause, resume (until it answers).
            let t = Instant::now();
            let info = rt.create(spec_with(resources)).expect("create");
            let g = Guard {
                rt: rt.clone(),
                info,
            };
            g.ready();
            s.create.push(secs(t.elapsed()));
            if mb > 0 {
                g.ask(json!({"op": "hold", "mb": mb}));
            }
            let t = Instant::now();
            let snap = rt.pause(g.id(), PauseMode::Full).expect("pause");
            s.pause.push(secs(t.elapsed()));
            s.image_mb.push(snap.bytes as f64 / 1e6);
            let t = Instant::now();
            rt.resume(g.id()).expect("resume");
            g.ready();
            s.resume.push(secs(t.elapsed()));

            // Floor: bare runc + CRIU on the same bundle, rootfs and memory.
            let id = g.id().to_string();
            let dir = data_dir().join("sandboxes").join(&id);
            let bundle = dir.join("bundle");
            let img = PathBuf::from(format!("/var/tmp/stasis-bench-{id}"));
            let _ = std::fs::remove_dir_all(&img);
            std::fs::create_dir_all(img.join("images")).unwrap();
            std::fs::create_dir_all(img.join("work")).unwrap();
            std::fs::set_permissions(
                img.join("images"),
                std::os::unix::fs::PermissionsExt::from_mode(0o711),
            )
            .unwrap();
            let images = img.join("images");
            let work = img.join("work");
            let t = Instant::now();
            runc(&[
                "checkpoint",
                "--image-path",
                images.to_str().unwrap(),
                "--work-path",
                work.to_str().unwrap(),
                &id,
            ]);
            s.floor_pause.push(secs(t.elapsed()));
            let t = Instant::now();
            runc(&[
                "restore",
                "-d",
                "--bundle",
                bundle.to_str().unwrap(),
                "--image-path",
                images.to_str().unwrap(),
                "--work-path",
                work.to_str().unwrap(),
                &id,
            ]);
            g.ready();
            s.floor_resume.push(secs(t.elapsed()));
            let _ = std::fs::remove_dir_all(&img);
            // Floor create: a fresh container from the same bundle.
            runc(&["kill", &id, "KILL"]);
            wait_until(10, "the container to stop", || {
                !Command::new("/usr/sbin/runc")
                    .arg("--root")
                    .arg(data_dir().join("runc"))
                    .args(["state", &id])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"running\""))
                    .unwrap_or(false)
            });
            runc(&["delete", "--force", &id]);
            let t = Instant::now();
            runc(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
            g.ready();
            s.floor_create.push(secs(t.elapsed()));
            drop(g);
        }
        let rows = [
            ("create", &s.create, &s.floor_create),
            ("pause", &s.pause, &s.floor_pause),
            ("resume", &s.resume, &s.floor_resume),
        ];
        for (op, ours, floor) in rows {
            let (m, p) = stats(ours.clone());
            let (fm, fp) = stats(floor.clone());
            println!(
                "| {label} | {op} | {m:.3} s | {p:.3} s | {fm:.3} s | {fp:.3} s | {:.2}× |",
                m / fm
            );
        }
        let (img, _) = stats(s.image_mb.clone());
        println!("| {label} | snapshot size | {img:.0} MB | | | | |");
    }
}

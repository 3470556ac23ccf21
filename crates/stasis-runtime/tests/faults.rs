//! Crash tests: the runtime's process (standing in for the server), runc, CRIU or the
//! sandbox's PID 1 is killed with SIGKILL at each point of pause, resume and fork (see
//! `stasis_runtime::fault`), then a fresh runtime recovers the data dir and the test
//! checks the crash protocol of docs/snapshot-format.md:
//!
//! * **intact**: the sandbox is running or paused as the protocol says for that point,
//!   with the same processes (same pids, its variable) and files;
//! * **rolled back**: the operation is reported failed and the sandbox is intact in the
//!   state it had before;
//! * **lost**: anything else (gone, broken, memory or files changed);
//! * **leaked**: after the sandbox is killed, anything of it is left on the host.
//!
//! The operation runs in a child process (this test binary, re-run on `fault_child`), so
//! that a kill of "the server" is a real SIGKILL of a real process with runc and CRIU
//! orphaned mid-step. `crash_points_sample` runs in CI; `crash_points_all` (ignored,
//! `scripts/fault-harness.sh`) runs every point and prints the outcome table.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use common::{addr_of, ask, create_plain, traces_in, PrivateDir};
use serde_json::json;
use stasis_runtime::{PauseMode, RuncRuntime, Runtime, SandboxState};
use stasis_types::SandboxId;

const CHILD_ENV: &str = "STASIS_FAULT_CHILD";

/// The child: runs one operation on a data dir (with `STASIS_FAULT` set by the parent).
#[test]
#[ignore = "the child process of the crash tests, run by them"]
fn fault_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let mut cfg = common::config();
    cfg.data_dir = parts[1].into();
    let rt = RuncRuntime::new(cfg).expect("runtime in the child");
    let id: SandboxId = parts[2].parse().unwrap();
    let r = match parts[0] {
        "pause" => rt.pause(&id, PauseMode::Full).map(drop),
        "resume" => rt.resume(&id).map(drop),
        "fork" => rt.fork(&id, &[parts[3].parse().unwrap()]).map(drop),
        "create" => {
            let mut spec = common::spec_with(stasis_types::Resources::default());
            spec.id = id.clone();
            rt.create(spec).map(drop)
        }
        other => panic!("unknown op {other}"),
    };
    if let Err(e) = &r {
        eprintln!("child: {} failed: {e}", parts[0]);
    }
    std::process::exit(if r.is_ok() { 0 } else { 3 });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Pause,
    Resume,
    Fork,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Intact,
    RolledBack,
    Lost,
    Leaked,
}

/// What the protocol promises after a fault at a point: the states the sandbox may be
/// in once recovered.
fn allowed(op: Op, fault: &str) -> &'static [&'static str] {
    let point = fault.split([':', '@']).next().unwrap();
    let target_init = fault.contains(":init");
    match (op, point) {
        _ if target_init => &["stopped", "running", "paused"],
        (Op::Pause, "pause.committed" | "pause.recorded") => &["paused"],
        // A CRIU or runc killed late may still have let the pause commit.
        (Op::Pause, "pause.checkpointing") if fault.contains(":self") => &["running", "paused"],
        (Op::Pause, _) => &["running"],
        (Op::Resume, "resume.restored" | "resume.recorded") => &["running"],
        // Orphaned mid-restore: whatever is really there after recovery.
        (Op::Resume, "resume.restoring") if fault.contains(":self") => &["running", "paused"],
        (Op::Resume, _) => &["paused"],
        (Op::Fork, _) => &["running"],
        // Never acknowledged: the server removes it; here it may be anything but leaked.
        (Op::Create, _) => &["running", "stopped", "gone"],
    }
}

fn state_name(s: &SandboxState) -> &'static str {
    s.name()
}

struct Case {
    op: Op,
    fault: &'static str,
}

struct Result {
    outcome: Outcome,
    detail: String,
}

/// Runs one case in a data dir of its own.
fn run(case: &Case) -> Result {
    if case.op == Op::Create {
        return run_create(case);
    }
    let dir = PrivateDir::new();
    let info = {
        let rt = dir.runtime();
        let info = create_plain(&rt);
        ask(addr_of(&info), &json!({"op": "set", "value": 7}));
        ask(
            addr_of(&info),
            &json!({"op": "write", "path": "/home/kept", "text": "kept"}),
        );
        if case.op == Op::Resume {
            rt.pause(&info.spec.id, PauseMode::Full)
                .expect("pause before the resume");
        }
        info
    };
    let id = info.spec.id.clone();
    let before = if case.op == Op::Resume {
        None
    } else {
        Some(ask(addr_of(&info), &json!({"op": "get"})))
    };
    let fork_id = SandboxId::generate();
    let op = match case.op {
        Op::Pause => "pause",
        Op::Resume => "resume",
        Op::Fork => "fork",
        Op::Create => unreachable!("run_create"),
    };
    let status = child(op, &dir, &id, fork_id.as_str(), case.fault);
    let child_ok = status.status.success();
    let child_log = String::from_utf8_lossy(&status.stderr).into_owned();

    let rt = dir.runtime();
    if let Err(e) = rt.adopt() {
        return Result {
            outcome: Outcome::Lost,
            detail: format!("recovery failed: {e}"),
        };
    }
    let state = match rt.info(&id) {
        Ok(i) => i.state,
        Err(e) => {
            return Result {
                outcome: Outcome::Lost,
                detail: format!("gone after recovery: {e}"),
            }
        }
    };
    let name = state_name(&state);
    // A child that finished did the whole operation; one that reported a failure must
    // have left the sandbox as it was; one killed (a crash) leaves what the protocol says.
    let crashed = status.status.code().is_none();
    let (mut outcome, expected): (Outcome, &[&str]) = if child_ok {
        let done: &[&str] = match case.op {
            Op::Pause => &["paused"],
            Op::Resume | Op::Fork | Op::Create => &["running"],
        };
        (Outcome::Intact, done)
    } else if crashed {
        (Outcome::Intact, allowed(case.op, case.fault))
    } else {
        let before: &[&str] = match case.op {
            Op::Pause | Op::Fork => &["running"],
            Op::Resume => &["paused"],
            Op::Create => &["gone"],
        };
        // The fault killed the sandbox's PID 1: it may be dead.
        let before: &[&str] = if case.fault.contains(":init") {
            &["running", "stopped"]
        } else {
            before
        };
        (Outcome::RolledBack, before)
    };
    // A fault that kills the sandbox's PID 1 may leave it dead whatever the operation
    // did: then its files must be kept.
    let died = case.fault.contains(":init") && name == "stopped";
    if !expected.contains(&name) && !died {
        outcome = Outcome::Lost;
    }
    let mut detail = format!(
        "child {}, recovered as {name}",
        if child_ok {
            "finished"
        } else if crashed {
            "crashed"
        } else {
            "reported a failure"
        }
    );
    // The sandbox must hold what it held: same processes and memory, same files.
    let check = |rt: &RuncRuntime, detail: &mut String| -> bool {
        match rt.info(&id).map(|i| i.state) {
            Ok(SandboxState::Paused { .. }) => {
                if let Err(e) = rt.resume(&id) {
                    *detail += &format!("; resume after recovery failed: {e}");
                    return false;
                }
            }
            Ok(SandboxState::Stopped) => {
                // Its processes died (the fault killed PID 1): the files must be there.
                let kept = dir
                    .0
                    .join("sandboxes")
                    .join(id.as_str())
                    .join("upper/home/kept");
                let ok = std::fs::read_to_string(&kept).is_ok_and(|t| t == "kept");
                if !ok {
                    *detail += "; files of the dead sandbox lost";
                }
                return ok;
            }
            _ => {}
        }
        let Some(now) = answers_within(addr_of(&info), 15) else {
            *detail += &format!("; the workload does not answer: {}", diagnose(&id));
            return false;
        };
        let file = ask(addr_of(&info), &json!({"op": "read", "path": "/home/kept"}));
        let same_procs = before
            .as_ref()
            .is_none_or(|b| b["pid"] == now["pid"] && b["counter_pid"] == now["counter_pid"]);
        let ok = now["x"] == 7 && file["text"] == "kept" && same_procs;
        if !ok {
            *detail += &format!("; state after: {now}, file {file}");
        }
        ok
    };
    if outcome != Outcome::Lost && !check(&rt, &mut detail) {
        outcome = Outcome::Lost;
    }
    if outcome == Outcome::Lost {
        detail += &format!("\n--- child log:\n{}", tail(&child_log, 30));
    }
    // Nothing of it may be left once it is killed: processes, mounts, cgroups, runc
    // state, veth, leases, files.
    let mut ids = vec![id.clone()];
    if case.op == Op::Fork {
        ids.push(fork_id);
    }
    for i in &ids {
        let _ = rt.kill(i);
        let left = traces_in(&dir.0, i);
        if !left.is_empty() {
            outcome = Outcome::Leaked;
            detail += &format!("; left after kill: {left:?}");
        }
    }
    drop(rt);
    Result { outcome, detail }
}

/// The workload's answer, polled for up to `secs` seconds.
fn answers_within(addr: std::net::SocketAddr, secs: u64) -> Option<serde_json::Value> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Ok(v) = common::try_ask(addr, &json!({"op": "get"})) {
            return Some(v);
        }
        if std::time::Instant::now() > until {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The sandbox's processes as the host sees them: state, and whether CRIU's code is
/// still mapped in them.
fn diagnose(id: &SandboxId) -> String {
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/unified/stasis/{id}/cgroup.procs"))
        .unwrap_or_default();
    procs
        .lines()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let state = status
                .lines()
                .find(|l| l.starts_with("State:"))
                .unwrap_or("")
                .to_owned();
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            let criu = maps
                .lines()
                .filter(|l| l.to_lowercase().contains("criu"))
                .count();
            format!("{pid} {state} criu-maps={criu}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `op` on sandbox `id` of `dir` in a child process with `STASIS_FAULT=fault`.
fn child(op: &str, dir: &PrivateDir, id: &SandboxId, extra: &str, fault: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fault_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{op} {} {id} {extra}", dir.0.display()))
        .env("STASIS_FAULT", fault)
        .output()
        .expect("run the child")
}

/// A create interrupted: whatever recovery finds, killing it leaves nothing behind, and
/// a failed create leaves nothing at all.
fn run_create(case: &Case) -> Result {
    let dir = PrivateDir::new();
    let id = SandboxId::generate();
    let status = child("create", &dir, &id, "-", case.fault);
    let rt = dir.runtime();
    if let Err(e) = rt.adopt() {
        return Result {
            outcome: Outcome::Lost,
            detail: format!("recovery failed: {e}"),
        };
    }
    let state = rt.info(&id).map(|i| i.state.name()).unwrap_or("gone");
    let crashed = status.status.code().is_none();
    let mut outcome = match (status.status.success(), crashed) {
        (true, _) if state == "running" => Outcome::Intact,
        (false, false) if state == "gone" => Outcome::RolledBack,
        (false, true) if allowed(Op::Create, case.fault).contains(&state) => Outcome::Intact,
        _ => Outcome::Lost,
    };
    let mut detail = format!("recovered as {state}");
    let _ = rt.kill(&id);
    let left = traces_in(&dir.0, &id);
    if !left.is_empty() {
        outcome = Outcome::Leaked;
        detail += &format!("; left after kill: {left:?}");
    }
    Result { outcome, detail }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every point of every operation, with the server (self), runc, CRIU and the
/// sandbox's PID 1 as targets where they are alive there.
fn all_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for fault in ["create.recorded", "create.started", "create.started:init"] {
        v.push(Case {
            op: Op::Create,
            fault,
        });
    }
    for fault in [
        "pause.journaled",
        "pause.frozen",
        "pause.checkpointing",
        "pause.checkpointing:self@30",
        "pause.checkpointing:self@120",
        "pause.checkpointing:criu@30",
        "pause.checkpointing:criu@120",
        "pause.checkpointing:runc@60",
        "pause.checkpointing:init@30",
        "pause.dumped",
        "pause.manifested",
        "pause.committed",
        "pause.recorded",
        "pause.frozen:init",
    ] {
        v.push(Case {
            op: Op::Pause,
            fault,
        });
    }
    for fault in [
        "resume.journaled",
        "resume.restoring",
        "resume.restoring:self@20",
        "resume.restoring:self@80",
        "resume.restoring:self@150",
        "resume.restoring:criu@20",
        "resume.restoring:criu@80",
        "resume.restoring:criu@150",
        "resume.restoring:runc@60",
        "resume.restored",
        "resume.recorded",
    ] {
        v.push(Case {
            op: Op::Resume,
            fault,
        });
    }
    for fault in ["fork.dumped", "fork.restored", "fork.dumped:init"] {
        v.push(Case {
            op: Op::Fork,
            fault,
        });
    }
    v
}

fn report(cases: &[Case]) {
    let mut table: BTreeMap<(Op, &str), Outcome> = BTreeMap::new();
    let mut bad = Vec::new();
    for c in cases {
        let r = run(c);
        eprintln!("{:?} {:<32} {:?}: {}", c.op, c.fault, r.outcome, r.detail);
        if matches!(r.outcome, Outcome::Lost | Outcome::Leaked) {
            bad.push(format!(
                "{:?} {}: {:?}: {}",
                c.op, c.fault, r.outcome, r.detail
            ));
        }
        table.insert((c.op, c.fault), r.outcome);
    }
    let mut counts: BTreeMap<(Op, Outcome), usize> = BTreeMap::new();
    for ((op, _), o) in &table {
        *counts.entry((*op, *o)).or_default() += 1;
    }
    eprintln!("outcomes: {counts:?}");
    assert!(
        bad.is_empty(),
        "{} case(s) lost or leaked:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn crash_points_sample() {
    // A bounded sample for CI: every server-crash point of pause and resume, and CRIU
    // killed during each.
    let sample: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| {
            !c.fault.contains('@') && !c.fault.contains(":init")
                || c.fault == "pause.checkpointing:criu@30"
                || c.fault == "pause.checkpointing:criu@120"
                || c.fault == "resume.restoring:criu@80"
                || c.fault == "resume.restoring:self@80"
        })
        .collect();
    report(&sample);
}

#[test]
#[ignore = "the whole table (a few minutes): scripts/fault-harness.sh"]
fn crash_points_all() {
    report(&all_cases());
}

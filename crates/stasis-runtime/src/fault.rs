//! Fault injection for the crash tests: named points in each operation where a test can
//! have the process, runc, CRIU or the sandbox's PID 1 killed with SIGKILL.
//!
//! Off unless the environment says `STASIS_FAULT=<point>[:<target>][@<delay ms>]`, read
//! once: at `<point>` the runtime kills `<target>` — `self` (the default: as if the
//! server crashed there), `runc` or `criu` (the programs of that name in the sandbox's
//! ops cgroup), or `init` (the sandbox's PID 1) — after `<delay>` ms on a thread of its
//! own (so a kill can land in the middle of the step that follows the point; for runc
//! and CRIU the delay counts from when that program appears).
//!
//! Points (in order within each operation): `create.recorded`, `create.started`;
//! `pause.journaled`, `pause.frozen`, `pause.checkpointing`, `pause.dumped`,
//! `pause.manifested`, `pause.committed`, `pause.recorded`; `resume.journaled`,
//! `resume.restoring`, `resume.restored`, `resume.recorded`; `fork.dumped`,
//! `fork.restored`.

use std::sync::OnceLock;
use std::time::Duration;

use stasis_types::SandboxId;

use crate::cgroup::{procs, Cgroups};

/// What to kill at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This process (a server crash).
    Myself,
    Runc,
    Criu,
    /// The sandbox's PID 1.
    Init,
}

/// A parsed `STASIS_FAULT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub point: String,
    pub target: Target,
    pub delay: Duration,
}

impl Fault {
    /// Parses `point[:target][@delay_ms]`.
    pub fn parse(s: &str) -> Option<Fault> {
        let (rest, delay) = match s.split_once('@') {
            Some((r, d)) => (r, Duration::from_millis(d.parse().ok()?)),
            None => (s, Duration::ZERO),
        };
        let (point, target) = match rest.split_once(':') {
            Some((p, t)) => (
                p,
                match t {
                    "self" => Target::Myself,
                    "runc" => Target::Runc,
                    "criu" => Target::Criu,
                    "init" => Target::Init,
                    _ => return None,
                },
            ),
            None => (rest, Target::Myself),
        };
        (!point.is_empty()).then(|| Fault {
            point: point.to_owned(),
            target,
            delay,
        })
    }
}

fn configured() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            std::env::var("STASIS_FAULT")
                .ok()
                .and_then(|s| Fault::parse(&s))
        })
        .as_ref()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn sigkill(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::Kill);
    }
}

/// The sandbox's PID 1 on the host: the process of its cgroup whose parent is outside.
fn init_pid(cgroups: &Cgroups, id: &SandboxId) -> Option<u32> {
    let members = procs(&cgroups.sandbox(id));
    members.iter().copied().find(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        ppid.is_some_and(|pp| !members.contains(&pp))
    })
}

fn strike(target: Target, cgroups: &Cgroups, id: &SandboxId) {
    match target {
        Target::Myself => sigkill(std::process::id()),
        Target::Runc | Target::Criu => {
            let want = if target == Target::Runc {
                "runc"
            } else {
                "criu"
            };
            for pid in procs(&cgroups.ops(id)) {
                if comm(pid).starts_with(want) {
                    sigkill(pid);
                }
            }
        }
        Target::Init => {
            if let Some(pid) = init_pid(cgroups, id) {
                sigkill(pid);
            }
        }
    }
}

/// A fault point: does nothing unless `STASIS_FAULT` names it.
pub(crate) fn point(name: &str, cgroups: &Cgroups, id: &SandboxId) {
    let Some(f) = configured() else {
        return;
    };
    if f.point != name {
        return;
    }
    tracing::warn!(sandbox_id = %id, point = name, target = ?f.target, "fault injected");
    if f.delay.is_zero() && f.target != Target::Criu {
        strike(f.target, cgroups, id);
    } else {
        let (target, delay, cgroups, id) = (f.target, f.delay, cgroups.clone(), id.clone());
        std::thread::spawn(move || {
            // A delay counts from when the program to kill exists (runc starts CRIU
            // some tens of milliseconds after it starts itself).
            if matches!(target, Target::Runc | Target::Criu) {
                let want = if target == Target::Runc {
                    "runc"
                } else {
                    "criu"
                };
                let until = std::time::Instant::now() + Duration::from_secs(10);
                while std::time::Instant::now() < until
                    && !procs(&cgroups.ops(&id))
                        .into_iter()
                        .any(|p| comm(p).starts_with(want))
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            std::thread::sleep(delay);
            strike(target, &cgroups, &id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse() {
        assert_eq!(
            Fault::parse("pause.committed"),
            Some(Fault {
                point: "pause.committed".into(),
                target: Target::Myself,
                delay: Duration::ZERO
            })
        );
        assert_eq!(
            Fault::parse("resume.restoring:criu@50"),
            Some(Fault {
                point: "resume.restoring".into(),
                target: Target::Criu,
                delay: Duration::from_millis(50)
            })
        );
        assert_eq!(Fault::parse("x:nobody"), None);
        assert_eq!(Fault::parse(""), None);
        assert_eq!(Fault::parse("p@soon"), None);
    }
}

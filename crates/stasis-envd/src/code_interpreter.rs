//! Supervision of the code interpreter (port 49999): the agent starts it as its own
//! child, through the reaper, and starts it again if it exits, so the service and its
//! kernels always descend from PID 1 and are checkpointed with the sandbox.
//!
//! ```text
//!  Spawning ──ok──► Running ──exit──► Backoff (1 s) ──► Spawning
//!      │ error                │ agent shutdown: SIGTERM, wait 2 s, SIGKILL
//!      └──────► Backoff       ▼
//!                           Stopped
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::process::reaper::Reaper;

/// How to start the interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program (the agent's own binary).
    pub program: PathBuf,
    /// Its arguments (`code-interpreter …`).
    pub args: Vec<String>,
}

impl Launch {
    /// The agent's own binary with the `code-interpreter` subcommand.
    pub fn this_binary(port: u16, envd_port: u16, user: &str) -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: vec![
                "code-interpreter".into(),
                "--port".into(),
                port.to_string(),
                "--envd-port".into(),
                envd_port.to_string(),
                "--user".into(),
                user.into(),
            ],
        })
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Runs the interpreter until `stop`, restarting it after every exit.
pub async fn supervise(
    reaper: Arc<Reaper>,
    launch: Launch,
    internal_token: String,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let spawned = reaper.spawn(
            || {
                Command::new(&launch.program)
                    .args(&launch.args)
                    .env("STASIS_ENVD_INTERNAL_TOKEN", &internal_token)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            },
            |c| c.id(),
        );
        match spawned {
            Ok((child, exit)) => {
                let pid = child.id();
                drop(child); // the reaper collects it
                tracing::info!(pid, "code interpreter started");
                tokio::select! {
                    e = exit => {
                        failures += 1;
                        tracing::warn!(pid, exit = ?e.ok(), "code interpreter exited, restarting");
                    }
                    _ = stop.cancelled() => {
                        signal(pid, rustix::process::Signal::Term);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        signal(pid, rustix::process::Signal::Kill);
                        return;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(program = %launch.program.display(), error = %e, "cannot start the code interpreter");
            }
        }
        let backoff = Duration::from_millis(250 * u64::from(failures.min(20)));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
    }
}

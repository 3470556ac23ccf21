//! A typed wrapper over the `runc` command line (with CRIU for checkpoint/restore).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::cmd;
use crate::error::Cause;

/// `runc` with its state directory and CRIU binary.
#[derive(Debug, Clone)]
pub(crate) struct Runc {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub criu: PathBuf,
}

/// The fields of `runc state` that we use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ContainerState {
    pub pid: i64,
    pub status: String,
}

impl ContainerState {
    pub fn is_live(&self) -> bool {
        matches!(self.status.as_str(), "running" | "paused" | "created")
    }
}

/// The last lines of a CRIU log, appended to errors so they say what CRIU said.
fn criu_log_tail(log: &Path) -> String {
    let Ok(text) = fs::read_to_string(log) else {
        return String::new();
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .collect();
    let pick: Vec<&str> = if errors.is_empty() {
        text.lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    } else {
        errors
            .into_iter()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    };
    format!(" [{}: {}]", log.display(), pick.join(" | "))
}

fn with_log(e: Cause, log: &Path) -> Cause {
    match e {
        Cause::Command {
            program,
            args,
            status,
            stderr,
        } => Cause::Command {
            program,
            args,
            status,
            stderr: stderr + &criu_log_tail(log),
        },
        other => other,
    }
}

impl Runc {
    fn base(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--criu")
            .arg(&self.criu);
        c
    }

    /// `runc run -d`: creates and starts the container.
    pub fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<(), Cause> {
        let mut c = self.base();
        c.args(["run", "-d", "--bundle"]).arg(bundle).arg(id);
        cmd::run_detached(c, log)
    }

    /// `runc state`, or `None` if runc does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<ContainerState>, Cause> {
        if !self.root.join(id).exists() {
            return Ok(None);
        }
        let mut c = self.base();
        c.args(["state", id]);
        match cmd::run(c) {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|source| Cause::Json {
                    path: self.root.join(id),
                    source,
                }),
            Err(Cause::Command { stderr, .. }) if stderr.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `runc checkpoint`: dumps the container into `image` (CRIU logs in `work`).
    pub fn checkpoint(
        &self,
        id: &str,
        image: &Path,
        work: &Path,
        leave_running: bool,
    ) -> Result<(), Cause> {
        let mut c = self.base();
        c.arg("checkpoint")
            .arg("--image-path")
            .arg(image)
            .arg("--work-path")
            .arg(work);
        if leave_running {
            c.arg("--leave-running");
        }
        c.arg(id);
        cmd::run(c)
            .map(drop)
            .map_err(|e| with_log(e, &work.join("dump.log")))
    }

    /// `runc restore -d`: restores the container from `image` with the bundle's config.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        image: &Path,
        work: &Path,
        log: &Path,
    ) -> Result<(), Cause> {
        let mut c = self.base();
        c.args(["restore", "-d", "--bundle"])
            .arg(bundle)
            .arg("--image-path")
            .arg(image)
            .arg("--work-path")
            .arg(work)
            .arg(id);
        cmd::run_detached(c, log).map_err(|e| with_log(e, &work.join("restore.log")))
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<(), Cause> {
        let mut c = self.base();
        c.args(["kill", id, signal]);
        cmd::run(c).map(drop)
    }

    pub fn delete_force(&self, id: &str) -> Result<(), Cause> {
        let mut c = self.base();
        c.args(["delete", "--force", id]);
        match cmd::run(c) {
            Ok(_) => Ok(()),
            Err(Cause::Command { stderr, .. }) if stderr.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Freezes every process of the container.
    pub fn pause(&self, id: &str) -> Result<(), Cause> {
        let mut c = self.base();
        c.args(["pause", id]);
        cmd::run(c).map(drop)
    }

    /// Thaws a frozen container.
    pub fn resume(&self, id: &str) -> Result<(), Cause> {
        let mut c = self.base();
        c.args(["resume", id]);
        cmd::run(c).map(drop)
    }
}

//! A typed wrapper over the `runc` command line (with CRIU for checkpoint/restore).
//!
//! Every call has a deadline, and every call that works on a sandbox's processes runs in
//! the sandbox's ops cgroup (see [`crate::cgroup`]), so an orphaned `runc restore` or
//! `criu` can be found and ended by a later server. Runc's own words are kept apart
//! from ours: [`Runc::freeze`] is `runc pause` (the cgroup freezer; thawing is the
//! runtime's, through the cgroups), [`Runc::checkpoint`] / [`Runc::restore`] are CRIU.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use stasis_types::SandboxId;

use crate::cgroup::Cgroups;
use crate::cmd::{self, Limits};
use crate::error::Cause;
use crate::mounts;

/// Deadline of quick runc calls (`state`, `kill`, `thaw`).
const QUICK: Duration = Duration::from_secs(10);
/// Deadline of `runc pause`: a task in uninterruptible sleep can hold a freeze forever.
const FREEZE: Duration = Duration::from_secs(15);
/// Deadline of `runc run` (its prestart hook has 30 s of its own).
const RUN: Duration = Duration::from_secs(60);
/// Deadline of `runc delete --force`.
const DELETE: Duration = Duration::from_secs(30);

/// The deadline of a checkpoint or restore of a sandbox limited to `memory_bytes`: a
/// fixed part for CRIU's own work plus time to move every byte at a pessimistic
/// 100 MiB/s (measured: ~1 GB/s to the page cache, ~250 MB/s durable).
pub fn image_deadline(memory_bytes: u64) -> Duration {
    let gib = memory_bytes.div_ceil(1 << 30).max(1);
    Duration::from_secs(30 + 10 * gib)
}

/// `runc` with its state directory and CRIU binary.
#[derive(Debug, Clone)]
pub(crate) struct Runc {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub criu: PathBuf,
    pub cgroups: Cgroups,
}

/// The fields of `runc state` that we use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ContainerState {
    pub pid: i64,
    pub status: String,
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

fn sid(id: &str) -> Result<SandboxId, Cause> {
    id.parse()
        .map_err(|_| Cause::Invalid(format!("{id:?} is not a sandbox id")))
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

    /// The limits of a call on sandbox `id`: `within`, in its ops cgroup.
    fn in_ops<'a>(&self, ops: &'a Path, within: Duration) -> Limits<'a> {
        Limits {
            within,
            cgroup: Some(ops),
        }
    }

    fn ops(&self, id: &str) -> Result<PathBuf, Cause> {
        self.cgroups.ensure_ops(&sid(id)?)
    }

    /// `runc run -d`: creates and starts the container. Runs in `cwd` (the sandbox dir).
    pub fn run(&self, id: &str, bundle: &Path, log: &Path, cwd: &Path) -> Result<(), Cause> {
        let ops = self.ops(id)?;
        let mut c = self.base();
        c.args(["run", "-d", "--bundle"])
            .arg(bundle)
            .arg(id)
            .current_dir(cwd);
        cmd::run_detached(c, log, self.in_ops(&ops, RUN))
    }

    /// `runc state`, or `None` if runc does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<ContainerState>, Cause> {
        if !self.root.join(id).join("state.json").exists() {
            return Ok(None);
        }
        let mut c = self.base();
        c.args(["state", id]);
        match cmd::run_limited(c, Limits::within(QUICK)) {
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
    #[allow(clippy::too_many_arguments)]
    pub fn checkpoint(
        &self,
        id: &str,
        image: &Path,
        work: &Path,
        leave_running: bool,
        within: Duration,
        cwd: &Path,
    ) -> Result<(), Cause> {
        let ops = self.ops(id)?;
        let mut c = self.base();
        c.arg("checkpoint")
            .arg("--image-path")
            .arg(image)
            .arg("--work-path")
            .arg(work);
        if leave_running {
            c.arg("--leave-running");
        }
        c.arg(id).current_dir(cwd);
        cmd::run_limited(c, self.in_ops(&ops, within))
            .map(drop)
            .map_err(|e| with_log(e, &work.join("dump.log")))
    }

    /// `runc restore -d`: restores the container from `image` with the bundle's config.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        image: &Path,
        work: &Path,
        log: &Path,
        within: Duration,
        cwd: &Path,
    ) -> Result<(), Cause> {
        let ops = self.ops(id)?;
        let mut c = self.base();
        c.args(["restore", "-d", "--bundle"])
            .arg(bundle)
            .arg("--image-path")
            .arg(image)
            .arg("--work-path")
            .arg(work)
            .arg(id)
            .current_dir(cwd);
        cmd::run_detached(c, log, self.in_ops(&ops, within))
            .map_err(|e| with_log(e, &work.join("restore.log")))
    }

    /// `runc delete --force`, after unmounting whatever an interrupted restore left
    /// mounted in the container's state dir (its `criu-root` bind mount of the rootfs,
    /// through which a recursive delete would remove the sandbox's files).
    pub fn delete_force(&self, id: &str) -> Result<(), Cause> {
        mounts::unmount_under(&self.root.join(id))?;
        if !self.root.join(id).exists() {
            return Ok(());
        }
        let ops = self.ops(id)?;
        let mut c = self.base();
        c.args(["delete", "--force", id]);
        match cmd::run_limited(c, self.in_ops(&ops, DELETE)) {
            Ok(_) => Ok(()),
            Err(Cause::Command { stderr, .. }) if stderr.contains("does not exist") => {
                // runc refuses to delete a state dir without a readable state; what is
                // left is ours to remove, now that nothing is mounted under it.
                let dir = self.root.join(id);
                match fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Cause::io(&dir)(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `runc pause`: freezes every process of the container (the cgroup freezer).
    pub fn freeze(&self, id: &str) -> Result<(), Cause> {
        let ops = self.ops(id)?;
        let mut c = self.base();
        c.args(["pause", id]);
        cmd::run_limited(c, self.in_ops(&ops, FREEZE)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_deadlines_grow_with_memory() {
        assert_eq!(image_deadline(0), Duration::from_secs(40));
        assert_eq!(image_deadline(512 << 20), Duration::from_secs(40));
        assert_eq!(image_deadline(4 << 30), Duration::from_secs(70));
    }
}

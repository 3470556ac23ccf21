//! Inspect: what a sandbox is now (from its record, its snapshots and runc), every
//! sandbox of the data dir, resource usage, and a watch on its PID 1.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use stasis_snapshot::{self as snap, Manifest};
use stasis_types::SandboxId;

use super::RuncRuntime;
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::layout::SandboxPaths;
use crate::spec::{Record, SandboxInfo, SandboxState, SnapshotInfo, Stats};

impl RuncRuntime {
    /// Every complete snapshot generation of a sandbox, oldest first.
    pub(super) fn complete_snapshots(&self, p: &SandboxPaths) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(&p.snapshots) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let g: u64 = e.file_name().to_str()?.parse().ok()?;
                Some((g, e.path()))
            })
            .filter(|(_, path)| path.join(snap::MANIFEST).exists())
            .collect();
        out.sort();
        out
    }

    /// The newest complete snapshot generation of a sandbox.
    pub(super) fn latest_snapshot(&self, p: &SandboxPaths) -> Option<(u64, PathBuf)> {
        self.complete_snapshots(p).pop()
    }

    fn snapshot_info(&self, generation: u64, dir: &Path) -> Result<SnapshotInfo, Cause> {
        let m = Manifest::read(dir)?;
        Ok(SnapshotInfo {
            generation,
            path: dir.to_owned(),
            bytes: m.total_bytes(),
            memory: m.memory,
        })
    }

    pub(super) fn info_of(&self, p: &SandboxPaths, rec: &Record) -> Result<SandboxInfo> {
        let id = &rec.spec.id;
        let state = if let Some(pid) = self.container_pid(id)? {
            SandboxState::Running { pid }
        } else if rec.paused.is_some() {
            match self.latest_snapshot(p) {
                Some((g, dir)) => match self.snapshot_info(g, &dir) {
                    Ok(snapshot) => SandboxState::Paused { snapshot },
                    Err(e) => SandboxState::Broken {
                        reason: format!("snapshot {}: {e}", dir.display()),
                    },
                },
                None => SandboxState::Broken {
                    reason: "paused, but no complete snapshot on disk".into(),
                },
            }
        } else {
            SandboxState::Stopped
        };
        Ok(SandboxInfo {
            spec: rec.spec.clone(),
            address: rec.address,
            uid_base: rec.uid_base,
            state,
        })
    }

    pub(super) fn list(&self) -> Result<Vec<SandboxInfo>> {
        let mut out = Vec::new();
        for id in self.sandbox_ids()? {
            let (p, rec) = match self.record(&id) {
                Ok(r) => r,
                Err(RuntimeError::NotFound(_)) => continue, // being created or removed
                Err(e) => return Err(e),
            };
            out.push(self.info_of(&p, &rec)?);
        }
        Ok(out)
    }

    /// The ids of the sandbox dirs, sorted.
    pub(super) fn sandbox_ids(&self) -> Result<Vec<SandboxId>> {
        let dir = self.layout.sandboxes();
        let entries = fs::read_dir(&dir)
            .map_err(Cause::io(&dir))
            .map_err(|c| RuntimeError::host("read sandboxes dir", c))?;
        let mut ids: Vec<SandboxId> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub(super) fn stats(&self, id: &SandboxId) -> Result<Stats> {
        let (p, rec) = self.record(id)?;
        if self.container_pid(id)?.is_none() {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: if rec.paused.is_some() {
                    "paused"
                } else {
                    "stopped"
                },
                action: "read stats",
            });
        }
        self.read_stats(&p, &rec).at(id, Step::Stats)
    }

    fn read_stats(&self, p: &SandboxPaths, rec: &Record) -> Result<Stats, Cause> {
        let cg = format!("stasis/{}", rec.spec.id);
        let read_u64 =
            |path: PathBuf| -> Option<u64> { fs::read_to_string(path).ok()?.trim().parse().ok() };
        let v1 = Path::new("/sys/fs/cgroup/memory").exists();
        let mut st = Stats::default();
        if v1 {
            let base = Path::new("/sys/fs/cgroup");
            st.cpu_usage_ns =
                read_u64(base.join("cpuacct").join(&cg).join("cpuacct.usage")).unwrap_or(0);
            st.memory_bytes =
                read_u64(base.join("memory").join(&cg).join("memory.usage_in_bytes")).unwrap_or(0);
            st.memory_limit_bytes =
                read_u64(base.join("memory").join(&cg).join("memory.limit_in_bytes")).unwrap_or(0);
            st.pids = read_u64(base.join("pids").join(&cg).join("pids.current")).unwrap_or(0);
        } else {
            let base = Path::new("/sys/fs/cgroup").join(&cg);
            if let Ok(s) = fs::read_to_string(base.join("cpu.stat")) {
                st.cpu_usage_ns = s
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1000;
            }
            st.memory_bytes = read_u64(base.join("memory.current")).unwrap_or(0);
            st.memory_limit_bytes = read_u64(base.join("memory.max")).unwrap_or(0);
            st.pids = read_u64(base.join("pids.current")).unwrap_or(0);
        }
        st.disk_bytes = snap::summarize(&p.upper)?.bytes;
        Ok(st)
    }

    /// A pidfd of the sandbox's PID 1, checked to be the process in the sandbox's
    /// cgroup (so a reused pid cannot be mistaken for it).
    pub(super) fn watch(&self, id: &SandboxId) -> Result<Option<OwnedFd>> {
        let Some(pid) = self.container_pid(id)? else {
            return Ok(None);
        };
        let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
            return Ok(None);
        };
        let fd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::SRCH => return Ok(None),
            Err(e) => {
                return Err(Cause::Sys {
                    what: format!("pidfd_open {pid}"),
                    source: e.into(),
                })
                .at(id, Step::Inspect)
            }
        };
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let ours = format!("/{}/{}", crate::cgroup::SANDBOX_PARENT, id);
        if !cgroup.lines().any(|l| l.ends_with(&ours)) {
            return Ok(None);
        }
        Ok(Some(fd))
    }
}

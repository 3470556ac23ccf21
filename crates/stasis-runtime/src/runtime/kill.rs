//! Kill: every trace of a sandbox goes, in any state, whatever an interrupted operation
//! left — processes (found by cgroup, not by runc's state), runc's state, mounts (an
//! interrupted restore's `criu-root` included), the veth, nftables entries, cgroups in
//! every hierarchy, files and leases. And quarantine: the same, except that the files
//! are moved aside instead of removed.

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use stasis_types::SandboxId;
use tracing::{info, warn};

use super::{mkdir, read_record, remove_dir_all_if_exists, RuncRuntime, KILL_WITHIN};
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::layout::SandboxPaths;
use crate::mounts;
use crate::net;
use crate::spec::Record;

impl RuncRuntime {
    pub(super) fn kill(&self, id: &SandboxId) -> Result<()> {
        let _guard = self.claim(id)?;
        let p = self.layout.sandbox(id);
        if !p.dir.exists() && !p.snapshots.exists() && !self.cgroups.any_exists(id) {
            return Err(RuntimeError::NotFound(id.clone()));
        }
        let rec = read_record(&p.record).ok();
        self.destroy(id, rec.as_ref()).at(id, Step::Kill)?;
        info!(sandbox_id = %id, "killed");
        Ok(())
    }

    /// Ends every process of the sandbox and every host program working on it, then
    /// removes runc's state of it. Whatever runc knows or not: processes are found by
    /// their cgroups.
    pub(super) fn stop_container(&self, id: &SandboxId) -> Result<(), Cause> {
        // The sandbox first: its tasks get SIGKILL while still frozen, so that thawing
        // them (to let them die) runs none of their code after a committed snapshot.
        self.cgroups.kill_sandbox(id, KILL_WITHIN)?;
        self.cgroups.abort_ops(id, KILL_WITHIN)?;
        self.runc.delete_force(id.as_str())
    }

    pub(super) fn set_internet(&self, rec: &Record, on: bool) -> Result<(), Cause> {
        if rec.spec.allow_internet || !on {
            net::set_internet(
                &self.cfg.network,
                rec.address,
                on && rec.spec.allow_internet,
            )?;
        }
        Ok(())
    }

    /// Stops the sandbox and undoes its host setup (mounts, veth, nftables), leaving its
    /// files. Continues past failures and returns the first.
    pub(super) fn stop_everything(
        &self,
        p: &SandboxPaths,
        rec: Option<&Record>,
    ) -> Result<(), Cause> {
        let id = rec
            .map(|r| r.spec.id.clone())
            .or_else(|| p.dir.file_name()?.to_str()?.parse().ok());
        let Some(id) = id else {
            return Err(Cause::Invalid(format!(
                "{} is not a sandbox dir",
                p.dir.display()
            )));
        };
        let mut first: Option<Cause> = None;
        let mut keep = |r: Result<(), Cause>| {
            if let Err(e) = r {
                warn!(sandbox_id = %id, error = %e, "cleanup step failed");
                first.get_or_insert(e);
            }
        };
        keep(self.stop_container(&id));
        keep(self.unmount_root(p));
        // Anything else mounted under the sandbox dir (a CRIU cgroup yard, a stray bind).
        keep(mounts::unmount_under(&p.dir));
        keep(net::delete_link(&net::host_if_name(&id)));
        keep(self.remove_network_policy(&id, rec));
        if let Some(rec) = rec {
            keep(self.set_internet(rec, false));
        }
        keep(self.cgroups.remove_all(&id));
        first.map_or(Ok(()), Err)
    }

    /// Removes every trace of a sandbox, continuing past failures and returning the first.
    pub(super) fn destroy(&self, id: &SandboxId, rec: Option<&Record>) -> Result<(), Cause> {
        let p = self.layout.sandbox(id);
        let mut first: Option<Cause> = None;
        let mut keep = |r: Result<(), Cause>| {
            if let Err(e) = r {
                warn!(sandbox_id = %id, error = %e, "cleanup step failed");
                first.get_or_insert(e);
            }
        };
        keep(self.stop_everything(&p, rec));
        // Never remove a tree that still has something mounted in it.
        if mounts::mounts_under(&p.dir).is_empty() {
            keep(remove_dir_all_if_exists(&p.snapshots));
            keep(remove_dir_all_if_exists(&p.dir));
        } else {
            keep(Err(Cause::Invalid(format!(
                "{} still has mounts; its files are left in place",
                p.dir.display()
            ))));
        }
        if let Some(rec) = rec {
            self.release_leases(rec);
        }
        first.map_or(Ok(()), Err)
    }

    pub(super) fn release_leases(&self, rec: &Record) {
        let owner = self.owner(&rec.spec.id);
        self.ip_pool.release(&rec.address.to_string(), &owner);
        self.uid_pool.release(&Self::uid_key(rec.uid_base), &owner);
    }

    pub(super) fn quarantine(&self, id: &SandboxId) -> Result<PathBuf> {
        let _guard = self.claim(id)?;
        let p = self.layout.sandbox(id);
        let rec = read_record(&p.record).ok();
        // Whatever cannot be undone is logged; the files are moved aside all the same.
        if let Err(e) = self.stop_everything(&p, rec.as_ref()) {
            warn!(sandbox_id = %id, error = %e, "quarantining a sandbox that did not stop cleanly");
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dest = self.layout.quarantine().join(format!("{id}-{at}"));
        mkdir(&dest, 0o700).at(id, Step::Kill)?;
        for (from, name) in [(&p.dir, "sandbox"), (&p.snapshots, "snapshots")] {
            if from.exists() {
                let to = dest.join(name);
                fs::rename(from, &to)
                    .map_err(Cause::io(from))
                    .at(id, Step::Kill)?;
            }
        }
        if let Some(rec) = rec {
            self.release_leases(&rec);
        }
        warn!(sandbox_id = %id, path = %dest.display(), "quarantined a sandbox");
        Ok(dest)
    }
}

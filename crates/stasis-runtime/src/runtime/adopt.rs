//! Recovery at start: finish or roll back what an earlier process left half done, per
//! the crash protocol of docs/snapshot-format.md, then report every sandbox.
//!
//! First, for every sandbox of the data dir, any `runc`/`criu` an earlier server left
//! working on it (found in the sandbox's ops cgroup) is given until its own deadline to
//! finish, then killed: nothing is decided while a program may still write, and a CRIU
//! is not killed in the middle of a dump if it can finish it. Then the record's op says what was in
//! flight:
//!
//! | op | found | outcome |
//! |---|---|---|
//! | pause into g | generation g complete | committed: processes killed, `paused` |
//! | pause into g | no complete g | rolled back: partial dropped, sandbox thawed (`running`), or `stopped` if its processes are gone |
//! | resume from g | runc knows the restored container | committed: `running`, snapshot spent |
//! | resume from g | anything else | rolled back: whatever the restore made is killed and unmounted, `paused` with the snapshot intact |
//! | none, paused | processes still there | the kill after a committed pause: finished |
//! | none, running | frozen | thawed (an interrupted fork froze it) |
//!
//! Nothing that could hold user data is deleted: a sandbox dir whose record cannot be
//! read is quarantined, spent generations (older than the live one) are the only
//! snapshots removed.

use std::fs;

use stasis_snapshot as snap;
use stasis_types::SandboxId;
use tracing::{info, warn};

use super::{read_record, remove_dir_all_if_exists, write_json_durable, RuncRuntime, KILL_WITHIN};
use crate::error::{Cause, Context, Result, Step};
use crate::layout::SandboxPaths;
use crate::mounts;
use crate::runc::image_deadline;
use crate::spec::{Op, Record, SandboxInfo};

impl RuncRuntime {
    /// Finishes or rolls back operations that an earlier process left half done, then
    /// reports every sandbox. Call once at start, before serving (also available as
    /// [`crate::Runtime::adopt`]).
    pub fn adopt(&self) -> Result<Vec<SandboxInfo>> {
        self.clean_orphans();
        let mut out = Vec::new();
        for id in self.sandbox_ids()? {
            let _guard = self.claim(&id)?;
            let p = self.layout.sandbox(&id);
            if !p.record.exists() {
                // A create that died before its record: nothing of a user's is here.
                warn!(sandbox_id = %id, "sandbox dir without a record; removing it");
                if let Err(e) = self.destroy(&id, None) {
                    warn!(sandbox_id = %id, error = %e, "could not remove it");
                }
                continue;
            }
            let mut rec = match read_record(&p.record) {
                Ok(r) => r,
                Err(e) => {
                    warn!(sandbox_id = %id, error = %e, "unreadable sandbox record");
                    drop(_guard);
                    if let Err(e) = self.quarantine(&id) {
                        warn!(sandbox_id = %id, error = %e, "could not quarantine it; left in place");
                    }
                    continue;
                }
            };
            let owner = self.owner(&id);
            // Re-take the leases (after a reboot the lease dir may be empty).
            let _ = self.ip_pool.try_acquire(&rec.address.to_string(), &owner);
            let _ = self
                .uid_pool
                .try_acquire(&Self::uid_key(rec.uid_base), &owner);
            self.recover(&p, &mut rec).at(&id, Step::Inspect)?;
            out.push(self.info_of(&p, &rec)?);
        }
        Ok(out)
    }

    fn recover(&self, p: &SandboxPaths, rec: &mut Record) -> Result<(), Cause> {
        let id = rec.spec.id.clone();
        // No decision while an orphaned runc or CRIU may still be writing: it may
        // finish (within its own deadline), then anything left is killed.
        if self
            .cgroups
            .settle_ops(&id, image_deadline(rec.spec.resources.memory_bytes))?
        {
            info!(sandbox_id = %id, "waited for the programs an earlier process left working on the sandbox");
        }
        self.drop_temporaries(p, rec)?;
        let live = self
            .container_pid(&id)
            .map_err(|e| Cause::Invalid(e.to_string()))?;
        match rec.op {
            Some(Op::Pause { generation, mode }) => {
                if p.generation(generation).join(snap::MANIFEST).exists() {
                    rec.paused = Some(mode);
                    rec.next_generation = generation + 1;
                    rec.op = None;
                    write_json_durable(&p.record, &*rec)?;
                    self.after_pause(p, rec, generation)?;
                    info!(sandbox_id = %id, generation, "finished a pause that had committed");
                } else {
                    rec.op = None;
                    if let Some(pid) = live {
                        if let Err(e) = crate::net::unlock_criu_network(pid) {
                            warn!(sandbox_id = %id, error = %e, "could not remove CRIU's network lock");
                        }
                        let _ = self.thaw(&id);
                        info!(sandbox_id = %id, "rolled back an interrupted pause; the sandbox runs");
                    } else {
                        self.stop_container(&id)?;
                        info!(sandbox_id = %id, "rolled back an interrupted pause; the sandbox's processes are gone");
                    }
                    write_json_durable(&p.record, &*rec)?;
                }
            }
            Some(Op::Resume { generation }) => {
                let restored =
                    live.is_some() && !crate::cgroup::procs(&self.cgroups.sandbox(&id)).is_empty();
                if restored {
                    rec.paused = None;
                    rec.op = None;
                    write_json_durable(&p.record, &*rec)?;
                    self.retire_snapshot(p, &p.generation(generation));
                    info!(sandbox_id = %id, generation, "finished a resume that had completed");
                } else {
                    self.undo_restore(p, rec);
                    info!(sandbox_id = %id, generation, "rolled back an interrupted resume; the snapshot is intact");
                }
            }
            None if rec.paused.is_some() => {
                if live.is_some() || !crate::cgroup::procs(&self.cgroups.sandbox(&id)).is_empty() {
                    let g = rec.next_generation.saturating_sub(1);
                    self.after_pause(p, rec, g)?;
                    info!(sandbox_id = %id, "finished the kill after a committed pause");
                } else {
                    let _ = self.stop_container(&id);
                    let _ = self.unmount_root(p);
                }
                if let Some((g, _)) = self.latest_snapshot(p) {
                    self.remove_spent(p, g);
                }
            }
            None => {
                if live.is_some() {
                    if self.cgroups.is_frozen(&id) {
                        let _ = self.thaw(&id);
                        info!(sandbox_id = %id, "thawed a sandbox an interrupted operation left frozen");
                    }
                } else {
                    self.stop_container(&id)?;
                    let _ = self.unmount_root(p);
                }
                // A resume that committed but crashed before removing its snapshot.
                for (_, dir) in self.complete_snapshots(p) {
                    self.retire_snapshot(p, &dir);
                }
            }
        }
        Ok(())
    }

    /// Removes what only an operation in progress uses: partial generations (putting
    /// back an upper layer that a version-1 pause had moved into one), fork staging dirs,
    /// work dirs.
    fn drop_temporaries(&self, p: &SandboxPaths, rec: &Record) -> Result<(), Cause> {
        let id = &rec.spec.id;
        if let Ok(entries) = fs::read_dir(&p.snapshots) {
            for s in entries.flatten() {
                let name = s.file_name().to_string_lossy().into_owned();
                if name.ends_with(".partial") || name.starts_with("fork-") {
                    let upper = s.path().join(snap::UPPER);
                    if name.ends_with(".partial") && upper.is_dir() && !p.upper.exists() {
                        fs::rename(&upper, &p.upper).map_err(Cause::io(&p.upper))?;
                    }
                    remove_dir_all_if_exists(&s.path())?;
                    info!(sandbox_id = %id, snapshot = %name, "dropped an incomplete snapshot");
                }
            }
        }
        for w in ["dump-work", "fork-work"] {
            remove_dir_all_if_exists(&p.dir.join(w))?;
        }
        Ok(())
    }

    /// What an earlier process left of sandboxes that have no dir any more: programs in
    /// their ops cgroups, processes in their container cgroups, runc state, mounts. Their
    /// snapshots, if any, are quarantined.
    fn clean_orphans(&self) {
        let known: std::collections::BTreeSet<SandboxId> =
            self.sandbox_ids().unwrap_or_default().into_iter().collect();
        let mut orphans: std::collections::BTreeSet<SandboxId> =
            self.cgroups.ops_ids().into_iter().collect();
        if let Ok(rd) = fs::read_dir(self.layout.runc_root()) {
            orphans.extend(
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok()),
            );
        }
        for id in orphans.difference(&known) {
            let _ = self.cgroups.kill_ops(id, KILL_WITHIN);
            let _ = self.cgroups.kill_sandbox(id, KILL_WITHIN);
            let _ = self.runc.delete_force(id.as_str());
            let _ = mounts::unmount_under(&self.layout.sandbox(id).dir);
            let _ = self.cgroups.remove_all(id);
            warn!(sandbox_id = %id, "ended the leftovers of a sandbox that no longer exists");
        }
        if let Ok(rd) = fs::read_dir(self.layout.snapshots()) {
            for e in rd.flatten() {
                let Some(id) = e
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<SandboxId>().ok())
                else {
                    continue;
                };
                if !known.contains(&id) {
                    if let Err(err) = self.quarantine(&id) {
                        warn!(sandbox_id = %id, error = %err, "could not quarantine snapshots without a sandbox");
                    }
                }
            }
        }
    }
}

//! Pause: a durable snapshot first, the processes stopped only after.
//!
//! 1. The record says `op: Pause { generation: g }` (durably).
//! 2. `runc pause` freezes the sandbox; `runc checkpoint --leave-running` dumps it into
//!    `snapshots/<id>/g.partial/images` and leaves it frozen, alive. Nothing in it runs,
//!    so its upper layer cannot change.
//! 3. `config.json`, `sandbox.json`, `syncfs`, then the manifest (images, and every
//!    entry of the upper layer, which stays in the sandbox dir), fsynced; `g.partial` is
//!    renamed to `g` and the snapshots dir fsynced. **This rename commits the pause.**
//! 4. The record says `paused`, `next_generation: g + 1`, no op.
//! 5. The frozen processes are killed; mounts, veth and runc's state go; older
//!    generations are removed.
//!
//! A failure before the commit rolls back: the partial generation goes and the sandbox
//! is thawed — it never stopped running, so a failed pause loses nothing. A crash before
//! the commit is rolled back the same way by recovery; a crash after it is finished by
//! recovery (see `adopt`). A filesystem-only pause skips the dump; it is also how the
//! files of a sandbox whose processes died are kept (no freeze: nothing runs).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use stasis_snapshot::{self as snap, Manifest, Tree};
use tracing::{info, warn};

use super::{mkdir, remove_dir_all_if_exists, write_json_durable, RuncRuntime, SNAPSHOT_FILES};
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::layout::SandboxPaths;
use crate::net;
use crate::runc::image_deadline;
use crate::spec::{Op, PauseMode, Record, SnapshotInfo};

impl RuncRuntime {
    pub(super) fn do_pause(
        &self,
        p: &SandboxPaths,
        rec: &mut Record,
        mode: PauseMode,
    ) -> Result<SnapshotInfo> {
        let id = rec.spec.id.clone();
        let id = &id;
        // The sandbox's PID 1 while it runs.
        let live = match self.runc.state(id.as_str()).at(id, Step::Checkpoint)? {
            Some(s) if s.status == "running" => Some(s.pid as u32),
            Some(s) if s.status == "paused" => {
                return Err(RuntimeError::InvalidState {
                    id: id.clone(),
                    state: "frozen",
                    action: "pause",
                })
            }
            _ if rec.paused.is_some() => {
                return Err(RuntimeError::InvalidState {
                    id: id.clone(),
                    state: "paused",
                    action: "pause",
                })
            }
            _ => None,
        };
        if mode == PauseMode::Full {
            let Some(pid) = live else {
                return Err(RuntimeError::InvalidState {
                    id: id.clone(),
                    state: "stopped",
                    action: "pause with memory",
                });
            };
            self.preflight(id, pid)?;
        }
        let live = live.is_some();
        let generation = rec.next_generation;
        rec.op = Some(Op::Pause { generation, mode });
        write_json_durable(&p.record, &*rec).at(id, Step::Checkpoint)?;
        self.fault("pause.journaled", id);
        let started = Instant::now();
        let info = match self.snapshot_into(p, rec, generation, mode, live) {
            Ok(info) => info,
            Err(e) => {
                warn!(sandbox_id = %id, error = %e, "pause failed before its commit; the sandbox keeps running");
                self.roll_back_pause(p, rec, generation, live);
                return Err(e);
            }
        };
        let committed = started.elapsed();
        rec.paused = Some(mode);
        rec.next_generation = generation + 1;
        rec.op = None;
        if let Err(e) = write_json_durable(&p.record, &*rec) {
            // The snapshot is complete and the journal names it: recovery finishes this.
            warn!(sandbox_id = %id, error = %e, "could not record a committed pause");
        }
        self.fault("pause.recorded", id);
        if let Err(e) = self.after_pause(p, rec, generation) {
            warn!(sandbox_id = %id, error = %e, "cleanup after a committed pause failed");
        }
        info!(sandbox_id = %id, generation, bytes = info.bytes,
              commit_ms = committed.as_millis() as u64,
              total_ms = started.elapsed().as_millis() as u64, "paused");
        Ok(info)
    }

    /// Steps 2–3: everything up to and including the commit.
    fn snapshot_into(
        &self,
        p: &SandboxPaths,
        rec: &Record,
        generation: u64,
        mode: PauseMode,
        live: bool,
    ) -> Result<SnapshotInfo> {
        let id = &rec.spec.id;
        let partial = p.partial(generation);
        remove_dir_all_if_exists(&partial).at(id, Step::Checkpoint)?;
        mkdir(&partial, 0o711).at(id, Step::Checkpoint)?;
        if live {
            self.freeze(id).at(id, Step::Checkpoint)?;
            self.fault("pause.frozen", id);
        }
        if mode == PauseMode::Full {
            let images = partial.join(snap::IMAGES);
            mkdir(&images, 0o711).at(id, Step::Checkpoint)?;
            let work = p.dir.join("dump-work");
            remove_dir_all_if_exists(&work).at(id, Step::Checkpoint)?;
            mkdir(&work, 0o700).at(id, Step::Checkpoint)?;
            self.fault("pause.checkpointing", id);
            self.runc
                .checkpoint(
                    id.as_str(),
                    &images,
                    &work,
                    true,
                    image_deadline(rec.spec.resources.memory_bytes),
                    &p.dir,
                )
                .at(id, Step::Checkpoint)?;
            self.fault("pause.dumped", id);
            // The files must not change between the dump and the kill.
            if !self.cgroups.is_frozen(id) {
                let log = fs::read_to_string(work.join("dump.log")).unwrap_or_default();
                let freezer: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("reez") || l.contains("haw"))
                    .collect();
                return Err(RuntimeError::Failed {
                    id: id.clone(),
                    step: Step::Checkpoint,
                    cause: Box::new(Cause::Invalid(format!(
                        "the sandbox was thawed by its checkpoint (state {:?}; CRIU: {})",
                        self.cgroups.freezer_state(id),
                        freezer.join(" | ")
                    ))),
                });
            }
        }
        let persist = (|| -> Result<SnapshotInfo, Cause> {
            if mode == PauseMode::Full {
                super::restrict_images(&partial.join(snap::IMAGES), rec.uid_base)?;
            }
            fs::copy(&p.config, partial.join("config.json")).map_err(Cause::io(&p.config))?;
            fs::set_permissions(
                partial.join("config.json"),
                fs::Permissions::from_mode(0o600),
            )
            .map_err(Cause::io(partial.join("config.json")))?;
            let mut paused = rec.clone();
            paused.paused = Some(mode);
            paused.next_generation = generation + 1;
            paused.op = None;
            write_json_durable(&partial.join("sandbox.json"), &paused)?;
            let previous = self.previous_tree(p);
            snap::sync_fs(&p.upper)?;
            let manifest = Manifest::build(
                &partial,
                id.clone(),
                generation,
                SNAPSHOT_FILES,
                &p.upper,
                previous.as_ref(),
            )?;
            manifest.write_durable(&partial)?;
            self.fault("pause.manifested", id);
            let dir = p.generation(generation);
            fs::rename(&partial, &dir).map_err(Cause::io(&dir))?;
            snap::sync_dir(&p.snapshots)?;
            self.fault("pause.committed", id);
            Ok(SnapshotInfo {
                generation,
                path: dir,
                bytes: manifest.total_bytes(),
                memory: manifest.memory,
            })
        })();
        persist.at(id, Step::Persist)
    }

    /// The upper-layer manifest of the sandbox's last snapshot, whose hashes the next
    /// one reuses for unchanged files.
    fn previous_tree(&self, p: &SandboxPaths) -> Option<Tree> {
        let body = fs::read(&p.tree_cache).ok()?;
        let m: Manifest = serde_json::from_slice(&body).ok()?;
        m.tree
    }

    /// Undoes a pause that did not commit: the partial (or just renamed) generation goes
    /// and the sandbox, alive and frozen, is thawed.
    fn roll_back_pause(&self, p: &SandboxPaths, rec: &mut Record, generation: u64, live: bool) {
        let id = rec.spec.id.clone();
        // A runc or CRIU that outlived its deadline must not keep working on it.
        self.cgroups.kill_ops(&id, super::KILL_WITHIN).ok();
        for dir in [p.partial(generation), p.generation(generation)] {
            if let Err(e) = remove_dir_all_if_exists(&dir) {
                warn!(sandbox_id = %id, error = %e, "could not remove an uncommitted snapshot");
            }
        }
        if live {
            // A CRIU that died mid-dump leaves its network lock in the sandbox.
            if let Ok(Some(pid)) = self.container_pid(&id) {
                if let Err(e) = net::unlock_criu_network(pid) {
                    warn!(sandbox_id = %id, error = %e, "could not remove CRIU's network lock");
                }
            }
            let _ = self.thaw(&id);
        }
        let _ = remove_dir_all_if_exists(&p.dir.join("dump-work"));
        rec.op = None;
        if let Err(e) = write_json_durable(&p.record, &*rec) {
            warn!(sandbox_id = %id, error = %e, "could not clear the journal of a rolled-back pause");
        }
    }

    /// Step 5: the snapshot is committed; nothing of the running sandbox is needed.
    pub(super) fn after_pause(
        &self,
        p: &SandboxPaths,
        rec: &Record,
        generation: u64,
    ) -> Result<(), Cause> {
        let id = &rec.spec.id;
        self.stop_container(id)?;
        let _ = net::delete_link(&net::host_if_name(id));
        self.unmount_root(p)?;
        let _ = self.set_internet(rec, false);
        for d in [p.work.clone(), p.dir.join("dump-work")] {
            let _ = remove_dir_all_if_exists(&d);
        }
        self.remove_spent(p, generation);
        // `generation`'s manifest replaces the hash cache.
        let _ = fs::remove_file(&p.tree_cache);
        Ok(())
    }

    /// Removes every complete snapshot generation but `keep`.
    pub(super) fn remove_spent(&self, p: &SandboxPaths, keep: u64) {
        for (g, dir) in self.complete_snapshots(p) {
            if g != keep {
                if let Err(e) = remove_dir_all_if_exists(&dir) {
                    warn!(sandbox_id = %p.snapshots.display(), error = %e, "could not remove a spent snapshot");
                }
            }
        }
    }
}

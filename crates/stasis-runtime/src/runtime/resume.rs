//! Resume: verify, then restore, then commit.
//!
//! 1. The snapshot is verified: every image's size and BLAKE3, and the upper layer
//!    (still in the sandbox dir) entry by entry against the manifest.
//! 2. The record says `op: Resume { generation: g }` (durably).
//! 3. Mounts, network, `runc restore -d` (or `runc run` after a filesystem-only pause),
//!    within a deadline scaled to the sandbox's memory, in its ops cgroup.
//! 4. The record says running, no op. **This commits the resume.** The snapshot is
//!    spent: its manifest is kept as the hash cache of the next pause, the rest removed.
//!
//! A failure in 3 ends every process the restore made (by cgroup), unmounts what it
//! mounted (runc's `criu-root` included, before runc's state is deleted), and clears the
//! op: the snapshot and the upper layer are as they were. A crash in 3 is resolved by
//! recovery to what is really there (see `adopt`).

use std::fs;
use std::time::Instant;

use stasis_snapshot::{self as snap, Manifest};
use tracing::{info, warn};

use super::{mkdir, remove_dir_all_if_exists, write_json_durable, RuncRuntime};
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::layout::SandboxPaths;
use crate::net;
use crate::runc::image_deadline;
use crate::spec::{Op, PauseMode, Record, SandboxInfo};

impl RuncRuntime {
    pub(super) fn do_resume(&self, p: &SandboxPaths, rec: &mut Record) -> Result<SandboxInfo> {
        let id = rec.spec.id.clone();
        let id = &id;
        let Some(mode) = rec.paused else {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: "running",
                action: "resume",
            });
        };
        let (generation, dir) = self
            .latest_snapshot(p)
            .ok_or_else(|| RuntimeError::Failed {
                id: id.clone(),
                step: Step::Verify,
                cause: Box::new(Cause::Invalid("no complete snapshot on disk".into())),
            })?;
        let manifest = Manifest::read(&dir).at(id, Step::Verify)?;
        if manifest.upper_inside() && !p.upper.exists() {
            // A version-1 snapshot keeps the upper layer inside the generation.
            let inside = dir.join(snap::UPPER);
            fs::rename(&inside, &p.upper)
                .map_err(Cause::io(&inside))
                .at(id, Step::Mount)?;
        }
        if self.cfg.verify_checksums {
            manifest.verify(&dir).at(id, Step::Verify)?;
            manifest.verify_upper(&p.upper).at(id, Step::Verify)?;
        }
        rec.op = Some(Op::Resume { generation });
        write_json_durable(&p.record, &*rec).at(id, Step::Restore)?;
        self.fault("resume.journaled", id);
        let started = Instant::now();
        let attempt = (|| -> Result<(), Cause> {
            // The restore must see the mounts the dump saw, so the bundle is the one the
            // sandbox ran with; only host paths that may have moved are refreshed.
            self.refresh_bundle(p, rec)?;
            self.mount_root(p, rec)?;
            self.set_internet(rec, true)?;
            self.apply_network_policy(rec, false)?;
            // A container of this id that runc still knows (an interrupted attempt).
            self.runc.delete_force(id.as_str())?;
            match mode {
                PauseMode::Full => {
                    let work = p.dir.join("restore-work");
                    remove_dir_all_if_exists(&work)?;
                    mkdir(&work, 0o700)?;
                    self.fault("resume.restoring", id);
                    self.runc.restore(
                        id.as_str(),
                        &p.bundle,
                        &dir.join(snap::IMAGES),
                        &work,
                        &p.log,
                        image_deadline(rec.spec.resources.memory_bytes),
                        &p.dir,
                    )
                }
                PauseMode::FilesystemOnly => self.runc.run(id.as_str(), &p.bundle, &p.log, &p.dir),
            }
        })();
        if let Err(e) = attempt {
            self.undo_restore(p, rec);
            return Err(e).at(id, Step::Restore);
        }
        self.fault("resume.restored", id);
        rec.paused = None;
        rec.op = None;
        write_json_durable(&p.record, &*rec).at(id, Step::Restore)?;
        self.fault("resume.recorded", id);
        self.retire_snapshot(p, &dir);
        info!(sandbox_id = %id, generation, restore_ms = started.elapsed().as_millis() as u64, "resumed");
        self.info_of(p, rec)
    }

    /// Ends whatever a failed or interrupted restore made and clears the op; the
    /// snapshot and the upper layer stay as they are.
    pub(super) fn undo_restore(&self, p: &SandboxPaths, rec: &mut Record) {
        let id = rec.spec.id.clone();
        if let Err(e) = self.stop_container(&id) {
            warn!(sandbox_id = %id, error = %e, "could not stop what a failed restore left");
        }
        let _ = net::delete_link(&net::host_if_name(&id));
        if let Err(e) = self.unmount_root(p) {
            warn!(sandbox_id = %id, error = %e, "could not unmount after a failed restore");
        }
        let _ = crate::mounts::unmount_under(&p.dir);
        let _ = self.set_internet(rec, false);
        let _ = remove_dir_all_if_exists(&p.dir.join("restore-work"));
        rec.op = None;
        if let Err(e) = write_json_durable(&p.record, &*rec) {
            warn!(sandbox_id = %id, error = %e, "could not clear the journal of a failed resume");
        }
    }

    /// The snapshot a running sandbox was restored from is spent: its manifest becomes
    /// the hash cache, the generation is removed.
    pub(super) fn retire_snapshot(&self, p: &SandboxPaths, dir: &std::path::Path) {
        let _ = fs::copy(dir.join(snap::MANIFEST), &p.tree_cache);
        if let Err(e) = remove_dir_all_if_exists(dir) {
            warn!(sandbox_id = %p.dir.display(), error = %e, "could not remove a spent snapshot");
        }
    }
}

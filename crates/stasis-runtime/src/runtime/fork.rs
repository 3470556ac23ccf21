//! Fork: copies of a running sandbox, which keeps running.
//!
//! The parent is frozen, dumped with `--leave-running` into a temporary dir under its
//! snapshots, its upper layer copied while still frozen, then thawed. Each copy gets its
//! own dir, address, upper layer and cgroup and is restored from the same images with
//! `tcp-close` (its address differs). Nothing of a fork is acknowledged until all copies
//! run: a failure (or, after a crash, recovery) removes every copy and the temporary dir,
//! and the parent is thawed.

use std::path::Path;

use stasis_snapshot as snap;
use stasis_types::SandboxId;

use super::{
    copy_tree, mkdir, read_record, remove_dir_all_if_exists, write_json_durable, RuncRuntime,
};
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::oci;
use crate::runc::image_deadline;
use crate::spec::{Record, SandboxInfo};

impl RuncRuntime {
    pub(super) fn do_fork(&self, src: &Record, new_ids: &[SandboxId]) -> Result<Vec<SandboxInfo>> {
        let id = &src.spec.id;
        let sp = self.layout.sandbox(id);
        if self.container_pid(id)?.is_none() {
            return Err(RuntimeError::InvalidState {
                id: id.clone(),
                state: if src.paused.is_some() {
                    "paused"
                } else {
                    "stopped"
                },
                action: "fork",
            });
        }
        for n in new_ids {
            if self.layout.sandbox(n).dir.exists() || n == id {
                return Err(RuntimeError::AlreadyExists(n.clone()));
            }
        }
        let tmp = sp.snapshots.join(format!("fork-{}", SandboxId::generate()));
        let images = tmp.join(snap::IMAGES);
        mkdir(&images, 0o711).at(id, Step::Fork)?;
        let work = sp.dir.join("fork-work");
        let result = (|| -> Result<Vec<SandboxInfo>> {
            remove_dir_all_if_exists(&work).at(id, Step::Fork)?;
            mkdir(&work, 0o700).at(id, Step::Fork)?;
            // Freeze, dump while frozen, copy the upper layer while still frozen, thaw.
            self.freeze(id).at(id, Step::Fork)?;
            let frozen = (|| -> Result<(), Cause> {
                self.runc.checkpoint(
                    id.as_str(),
                    &images,
                    &work,
                    true,
                    image_deadline(src.spec.resources.memory_bytes),
                    &sp.dir,
                )?;
                super::restrict_images(&images, src.uid_base)?;
                copy_tree(&sp.upper, &tmp.join(snap::UPPER))
            })();
            self.fault("fork.dumped", id);
            let thawed = self.thaw(id);
            frozen.at(id, Step::Fork)?;
            thawed.at(id, Step::Fork)?;

            let mut made: Vec<SandboxInfo> = Vec::new();
            for nid in new_ids {
                match self.restore_fork(src, nid, &tmp) {
                    Ok(info) => {
                        self.fault("fork.restored", id);
                        made.push(info)
                    }
                    Err(e) => {
                        for m in &made {
                            let r = read_record(&self.layout.sandbox(&m.spec.id).record).ok();
                            let _ = self.destroy(&m.spec.id, r.as_ref());
                        }
                        return Err(e);
                    }
                }
            }
            Ok(made)
        })();
        let _ = remove_dir_all_if_exists(&tmp);
        let _ = remove_dir_all_if_exists(&work);
        result
    }

    fn restore_fork(&self, src: &Record, nid: &SandboxId, tmp: &Path) -> Result<SandboxInfo> {
        let _guard = self.claim(nid)?;
        let p = self.layout.sandbox(nid);
        mkdir(&p.dir, 0o711).at(nid, Step::Fork)?;
        let attempt = (|| -> Result<SandboxInfo> {
            let address = self.acquire_address(nid)?;
            let owner = self.owner(nid);
            // A fork shares its parent's uid range: the images carry the id map.
            let _ = self
                .uid_pool
                .try_acquire(&Self::uid_key(src.uid_base), &owner);
            let mut spec = src.spec.clone();
            spec.id = nid.clone();
            let rec = Record {
                spec,
                address,
                uid_base: src.uid_base,
                template_rootfs: src.template_rootfs.clone(),
                agent_path: src.agent_path.clone(),
                next_generation: 1,
                paused: None,
                op: None,
            };
            write_json_durable(&p.record, &rec).at(nid, Step::Fork)?;
            copy_tree(&tmp.join(snap::UPPER), &p.upper).at(nid, Step::Fork)?;
            self.mount_root(&p, &rec).at(nid, Step::Mount)?;
            self.write_bundle(&p, &rec, oci::CRIU_CONF_FORK)
                .at(nid, Step::Bundle)?;
            self.set_internet(&rec, true).at(nid, Step::Network)?;
            self.apply_network_policy(&rec, false)
                .at(nid, Step::Network)?;
            let work = p.dir.join("restore-work");
            mkdir(&work, 0o700).at(nid, Step::Fork)?;
            self.runc
                .restore(
                    nid.as_str(),
                    &p.bundle,
                    &tmp.join(snap::IMAGES),
                    &work,
                    &p.log,
                    image_deadline(rec.spec.resources.memory_bytes),
                    &p.dir,
                )
                .at(nid, Step::Restore)?;
            // Later pauses of the fork keep connections like any sandbox.
            self.write_criu_conf(&p, &rec, oci::CRIU_CONF)
                .at(nid, Step::Fork)?;
            self.info_of(&p, &rec)
        })();
        if attempt.is_err() {
            let rec = read_record(&p.record).ok();
            let _ = self.destroy(nid, rec.as_ref());
        }
        attempt
    }
}

//! Create: claim the sandbox dir, lease an address and a uid range, mount the template
//! through an id-mapped mount with an overlay on top, write the bundle, `runc run`.
//! Any failure removes everything it made. A crash leaves a dir that recovery removes
//! only if the server never handed the sandbox out (the server decides: see `adopt`).

use std::fs;
use std::io;
use std::os::unix::fs::{chown, DirBuilderExt};
use std::time::Instant;

use tracing::{info, warn};

use super::{mkdir, read_record, write_json_durable, RuncRuntime};
use crate::error::{Cause, Context, Result, RuntimeError, Step};
use crate::layout::SandboxPaths;
use crate::oci;
use crate::spec::{Record, SandboxInfo, SandboxSpec, SandboxState};

impl RuncRuntime {
    pub(super) fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let id = spec.id.clone();
        let _guard = self.claim(&id)?;
        let template = self.layout.template_rootfs(&spec.template);
        if !template.join("bin").exists() && !template.join("usr/bin").exists() {
            return Err(RuntimeError::TemplateMissing {
                name: spec.template.to_string(),
                path: template,
            });
        }
        if !spec.agent.binary.is_file() {
            return Err(RuntimeError::Failed {
                id,
                step: Step::Prepare,
                cause: Box::new(Cause::Invalid(format!(
                    "agent binary {} does not exist",
                    spec.agent.binary.display()
                ))),
            });
        }
        let p = self.layout.sandbox(&id);
        match fs::DirBuilder::new().mode(0o711).create(&p.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(id))
            }
            Err(e) => return Err(Cause::io(&p.dir)(e)).at(&id, Step::Prepare),
        }
        let started = Instant::now();
        match self.do_create(&spec, &p) {
            Ok(info) => {
                info!(sandbox_id = %id, address = %info.address, ms = started.elapsed().as_millis() as u64, "created");
                Ok(info)
            }
            Err(e) => {
                let rec = read_record(&p.record).ok();
                if let Err(c) = self.destroy(&id, rec.as_ref()) {
                    warn!(sandbox_id = %id, error = %c, "cleanup after a failed create failed");
                }
                Err(e)
            }
        }
    }

    fn do_create(&self, spec: &SandboxSpec, p: &SandboxPaths) -> Result<SandboxInfo> {
        let id = &spec.id;
        let address = self.acquire_address(id)?;
        let uid_base = self.acquire_uid_range(id)?;
        let agent_path = self.agent_copy(&spec.agent.binary).at(id, Step::Prepare)?;
        let template = self.layout.template_rootfs(&spec.template);
        let template_rootfs = fs::canonicalize(&template)
            .map_err(Cause::io(&template))
            .at(id, Step::Prepare)?;
        let rec = Record {
            spec: spec.clone(),
            address,
            uid_base,
            template_rootfs,
            agent_path,
            next_generation: 1,
            paused: None,
            op: None,
        };
        write_json_durable(&p.record, &rec).at(id, Step::Prepare)?;
        self.fault("create.recorded", id);
        mkdir(&p.upper, 0o755).at(id, Step::Mount)?;
        chown(&p.upper, Some(uid_base), Some(uid_base))
            .map_err(Cause::io(&p.upper))
            .at(id, Step::Mount)?;
        self.mount_root(p, &rec).at(id, Step::Mount)?;
        self.write_bundle(p, &rec, oci::CRIU_CONF)
            .at(id, Step::Bundle)?;
        self.set_internet(&rec, true).at(id, Step::Network)?;
        self.apply_network_policy(&rec, true)
            .at(id, Step::Network)?;
        self.runc
            .run(id.as_str(), &p.bundle, &p.log, &p.dir)
            .at(id, Step::Start)?;
        self.fault("create.started", id);
        let info = self.info_of(p, &rec)?;
        if !matches!(info.state, SandboxState::Running { .. }) {
            return Err(RuntimeError::Failed {
                id: id.clone(),
                step: Step::Start,
                cause: Box::new(Cause::Invalid(format!(
                    "the agent exited right after start (see {})",
                    p.log.display()
                ))),
            });
        }
        Ok(info)
    }
}

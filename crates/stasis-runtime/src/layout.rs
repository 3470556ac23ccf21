//! Paths under the data dir. The one place that knows the disk layout:
//!
//! ```text
//! templates/<name>/rootfs/            read-only lower layer
//! agents/<hash>/<file name>           content-addressed agent binaries
//! runc/                               runc's state directory (--root)
//! sandboxes/<id>/sandbox.json         the runtime's record of the sandbox
//! sandboxes/<id>/bundle/config.json   OCI config
//! sandboxes/<id>/bundle/rootfs/       overlay mount point while running
//! sandboxes/<id>/lower/               id-mapped template mount while running
//! sandboxes/<id>/upper, work/         overlay layers while running
//! sandboxes/<id>/criu.conf            CRIU options (org.criu.config annotation)
//! sandboxes/<id>/etc/hosts, resolv.conf   bind-mounted into the sandbox
//! sandboxes/<id>/runc.log             output of runc for this sandbox
//! sandboxes/<id>/tree-cache.json      the last snapshot's manifest (hashes to reuse)
//! snapshots/<id>/<generation>/        a snapshot (see stasis-snapshot)
//! quarantine/<id>-<time>/             what start-up could not serve, kept, not deleted
//! ```

use std::path::{Path, PathBuf};

use stasis_types::{SandboxId, TemplateName};

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
}

/// Paths of one sandbox.
#[derive(Debug, Clone)]
pub(crate) struct SandboxPaths {
    pub dir: PathBuf,
    pub record: PathBuf,
    pub bundle: PathBuf,
    pub config: PathBuf,
    pub rootfs: PathBuf,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub criu_conf: PathBuf,
    /// `hosts` and `resolv.conf` bind-mounted into the sandbox's `/etc`.
    pub etc: PathBuf,
    pub log: PathBuf,
    /// The manifest of the sandbox's last snapshot, kept after a resume so that the next
    /// pause re-hashes only the files that changed.
    pub tree_cache: PathBuf,
    pub snapshots: PathBuf,
}

impl SandboxPaths {
    pub fn generation(&self, generation: u64) -> PathBuf {
        self.snapshots.join(generation.to_string())
    }

    pub fn partial(&self, generation: u64) -> PathBuf {
        self.snapshots.join(format!("{generation}.partial"))
    }
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn template_rootfs(&self, name: &TemplateName) -> PathBuf {
        self.root
            .join("templates")
            .join(name.as_str())
            .join("rootfs")
    }

    pub fn agents(&self) -> PathBuf {
        self.root.join("agents")
    }

    pub fn runc_root(&self) -> PathBuf {
        self.root.join("runc")
    }

    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub fn sandbox(&self, id: &SandboxId) -> SandboxPaths {
        let dir = self.sandboxes().join(id.as_str());
        let bundle = dir.join("bundle");
        SandboxPaths {
            record: dir.join("sandbox.json"),
            config: bundle.join("config.json"),
            rootfs: bundle.join("rootfs"),
            lower: dir.join("lower"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            criu_conf: dir.join("criu.conf"),
            etc: dir.join("etc"),
            log: dir.join("runc.log"),
            tree_cache: dir.join("tree-cache.json"),
            snapshots: self.snapshots().join(id.as_str()),
            bundle,
            dir,
        }
    }

    /// Where the agent binary `binary` (content hash `hash`) is kept.
    pub fn agent_copy(&self, hash: &str, binary: &Path) -> PathBuf {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent".into());
        self.agents().join(hash).join(name)
    }
}

//! The Stasis sandbox runtime.
//!
//! A sandbox is a runc container with its own user, pid, mount, network, ipc and uts
//! namespaces, cgroup limits, a seccomp allow-list and an overlay root (the template as
//! an id-mapped lower layer, a per-sandbox upper layer). Its PID 1 is an agent, and
//! every process in it descends from the agent.
//!
//! [`Runtime`] is what the server knows; [`RuncRuntime`] implements it with runc and
//! CRIU:
//!
//! ```text
//!   create ──► running ──pause──► paused ──resume──► running
//!                 │                  │
//!                 └──────kill────────┴──► gone (nothing left on disk or in the kernel)
//!   fork(running) ──► n new running sandboxes restored from one checkpoint
//! ```
//!
//! * `pause` is acknowledged only when the snapshot (CRIU images, upper layer, config,
//!   manifest with checksums) is durable. If it fails, the sandbox is running again.
//! * `resume` restores the same processes (same PIDs inside), memory, files, listeners
//!   and address. If it fails, the snapshot is intact and the sandbox stays paused.
//! * Everything is recorded on disk, so a new process can [`RuncRuntime::adopt`] what an
//!   earlier one left: running containers, snapshots, interrupted operations.
//!
//! The runtime is synchronous: each call runs host programs (`runc`, `criu`, `ip`) and
//! returns when they are done. Callers in async code run it on a blocking thread.

mod cgroup;
pub mod cmd;
pub mod error;
pub mod fault;
mod idmap;
mod layout;
mod leases;
pub mod mounts;
pub mod net;
pub mod oci;
pub mod preflight;
mod runc;
mod runtime;
pub mod seccomp;
pub mod spec;
mod sys;
pub mod template;

pub use error::{Cause, Result, RuntimeError, Step};
pub use net::{Destination, NetworkConfig, NetworkPolicy, PolicyError};
pub use runc::image_deadline;
pub use runtime::{RuncRuntime, RuntimeConfig};
pub use spec::{AgentSpec, PauseMode, SandboxInfo, SandboxSpec, SandboxState, SnapshotInfo, Stats};

use stasis_types::SandboxId;

/// What a sandbox runtime can do. Implementations serialize operations on one sandbox
/// themselves (a second concurrent operation on the same sandbox gets
/// [`RuntimeError::Busy`]), and operations on different sandboxes run in parallel.
pub trait Runtime: Send + Sync {
    /// Creates and starts a sandbox. On failure nothing is left behind.
    fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo>;
    /// Pauses a running sandbox into a durable snapshot and frees its memory and CPU.
    fn pause(&self, id: &SandboxId, mode: PauseMode) -> Result<SnapshotInfo>;
    /// Resumes a paused sandbox from its snapshot.
    fn resume(&self, id: &SandboxId) -> Result<SandboxInfo>;
    /// Removes a sandbox in any state, with every trace of it.
    fn kill(&self, id: &SandboxId) -> Result<()>;
    /// Makes `new_ids.len()` independent copies of a running sandbox, which keeps running.
    fn fork(&self, id: &SandboxId, new_ids: &[SandboxId]) -> Result<Vec<SandboxInfo>>;
    /// The sandbox as it is now.
    fn info(&self, id: &SandboxId) -> Result<SandboxInfo>;
    /// Every sandbox the runtime has on disk.
    fn list(&self) -> Result<Vec<SandboxInfo>>;
    /// Resource usage of a running sandbox.
    fn stats(&self, id: &SandboxId) -> Result<Stats>;
    /// Finishes or rolls back what an earlier process left half done, then reports every
    /// sandbox. Called once at start, before anything else.
    fn adopt(&self) -> Result<Vec<SandboxInfo>>;
    /// Ends the host programs (runc, CRIU) working on a sandbox right now, from any
    /// thread: the operation in progress fails promptly and rolls back, so that a kill
    /// queued behind it need not wait for its deadline.
    fn abort(&self, id: &SandboxId);
    /// A pidfd of the sandbox's PID 1 while it runs: readable once that process exits
    /// (the sandbox died). `None` when the sandbox is not running.
    fn watch(&self, id: &SandboxId) -> Result<Option<std::os::fd::OwnedFd>>;
    /// Moves a sandbox that cannot be served (unknown to the server, or unreadable) out
    /// of the way with its files, after stopping its processes: nothing that could hold
    /// user data is deleted. Returns where it went.
    fn quarantine(&self, id: &SandboxId) -> Result<std::path::PathBuf>;
    /// Replaces a sandbox's egress rules: internet access and the allow and deny lists
    /// (E2B's `PUT /sandboxes/{id}/network`). A running sandbox gets them at once; a
    /// paused one at its resume. They are recorded, so they hold across pause, resume and
    /// fork; kill removes them.
    fn set_network(
        &self,
        id: &SandboxId,
        allow_internet: bool,
        policy: NetworkPolicy,
    ) -> Result<SandboxInfo>;
}

//! What a sandbox is made of (the spec a caller gives), what the runtime records about
//! it on disk, and what it reports back.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use stasis_types::{Resources, SandboxId, TemplateName};

use crate::net::NetworkPolicy;

/// The program that runs as PID 1 of the sandbox. Every other process descends from it
/// (processes started from outside with `runc exec` would be left out of checkpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    /// Host path of the agent binary. The runtime keeps a content-addressed copy of it
    /// for as long as any sandbox or snapshot uses it, so the binary on the host can be
    /// upgraded without breaking paused sandboxes.
    pub binary: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
}

/// Everything needed to create a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub template: TemplateName,
    pub agent: AgentSpec,
    pub resources: Resources,
    /// Whether the sandbox may open connections beyond the host.
    pub allow_internet: bool,
    pub hostname: String,
    /// Egress rules on top of `allow_internet` (records of earlier versions have none).
    #[serde(default)]
    pub network: NetworkPolicy,
}

impl SandboxSpec {
    /// A spec with default resources, no internet and hostname `sandbox`.
    pub fn new(id: SandboxId, template: TemplateName, agent: AgentSpec) -> Self {
        Self {
            id,
            template,
            agent,
            resources: Resources::default(),
            allow_internet: false,
            hostname: "sandbox".into(),
            network: NetworkPolicy::default(),
        }
    }
}

/// How much of a sandbox a pause keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseMode {
    /// Memory and filesystem: processes resume where they stopped.
    Full,
    /// Filesystem only: processes are stopped; resume starts the agent afresh.
    FilesystemOnly,
}

/// Where a sandbox is in its life, as seen from disk and runc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxState {
    Running {
        pid: u32,
    },
    Paused {
        snapshot: SnapshotInfo,
    },
    /// The sandbox's processes are gone without a snapshot (crashed, or the host
    /// rebooted without a pause). Its filesystem is still there; kill removes it.
    Stopped,
    /// An operation was interrupted (for example by a crash of the server) in a way the
    /// runtime could not finish or roll back on its own.
    Broken {
        reason: String,
    },
}

impl SandboxState {
    pub fn name(&self) -> &'static str {
        match self {
            SandboxState::Running { .. } => "running",
            SandboxState::Paused { .. } => "paused",
            SandboxState::Stopped => "stopped",
            SandboxState::Broken { .. } => "broken",
        }
    }
}

/// A snapshot of a paused sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub generation: u64,
    pub path: PathBuf,
    /// Bytes of memory images plus the filesystem layer.
    pub bytes: u64,
    pub memory: bool,
}

/// What the runtime reports about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub spec: SandboxSpec,
    pub address: Ipv4Addr,
    /// First host uid of the sandbox's range (its root).
    pub uid_base: u32,
    pub state: SandboxState,
}

/// Resource usage of a running sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// CPU time used since the sandbox (or its last restore) started, nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    /// Bytes written to the sandbox's own filesystem layer.
    pub disk_bytes: u64,
}

/// The runtime's persistent record of one sandbox (`sandboxes/<id>/sandbox.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub spec: SandboxSpec,
    pub address: Ipv4Addr,
    pub uid_base: u32,
    /// The template version the sandbox was made from (its lower layer).
    pub template_rootfs: PathBuf,
    /// The content-addressed copy of the agent that the sandbox runs.
    pub agent_path: PathBuf,
    /// Generation number the next snapshot gets.
    pub next_generation: u64,
    /// The snapshot mode of the current pause, if paused.
    #[serde(default)]
    pub paused: Option<PauseMode>,
    /// The operation in progress, written durably before it starts and cleared when it
    /// ends (either way): what recovery must finish or roll back after a crash. See the
    /// crash protocol in docs/snapshot-format.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
}

/// An operation recorded as in progress (the runtime's journal of one sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub(crate) enum Op {
    /// A pause into snapshot generation `generation`. Committed once that generation is
    /// complete (its manifest renamed into place), whatever the record says.
    Pause { generation: u64, mode: PauseMode },
    /// A resume from snapshot generation `generation`. Committed once runc knows the
    /// restored container.
    Resume { generation: u64 },
}

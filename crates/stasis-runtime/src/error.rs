//! Runtime errors: every failure names the sandbox and the step that failed.

use std::fmt;
use std::io;
use std::path::PathBuf;

use stasis_snapshot::SnapshotError;
use stasis_types::SandboxId;

/// The lifecycle step during which an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Prepare,
    Network,
    Mount,
    Bundle,
    Start,
    Checkpoint,
    Persist,
    Verify,
    Restore,
    Fork,
    Kill,
    Inspect,
    Stats,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Prepare => "prepare",
            Step::Network => "network setup",
            Step::Mount => "mount",
            Step::Bundle => "bundle",
            Step::Start => "start",
            Step::Checkpoint => "checkpoint",
            Step::Persist => "persist snapshot",
            Step::Verify => "verify snapshot",
            Step::Restore => "restore",
            Step::Fork => "fork",
            Step::Kill => "kill",
            Step::Inspect => "inspect",
            Step::Stats => "stats",
        })
    }
}

/// The cause of a failed step.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program} {args} exited with {status}: {stderr}")]
    Command {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{program} {args} did not finish within {after:?} and was killed")]
    TimedOut {
        program: String,
        args: String,
        after: std::time::Duration,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("bad json in {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("oci spec")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("{0}")]
    Invalid(String),
}

impl Cause {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Cause {
        let path = path.into();
        move |source| Cause::Io { path, source }
    }
}

/// An error of the sandbox runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("sandbox {id}: {step} failed")]
    Failed {
        id: SandboxId,
        step: Step,
        #[source]
        cause: Box<Cause>,
    },
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    #[error("sandbox {0} already exists")]
    AlreadyExists(SandboxId),
    #[error("sandbox {id} is {state}; cannot {action}")]
    InvalidState {
        id: SandboxId,
        state: &'static str,
        action: &'static str,
    },
    #[error("sandbox {id} cannot be paused: {obstacles}")]
    Unpausable { id: SandboxId, obstacles: String },
    #[error("sandbox {0} is busy with another operation")]
    Busy(SandboxId),
    #[error(
        "template {name} is not built (no rootfs at {path}); run `stasis template build {name}`"
    )]
    TemplateMissing { name: String, path: PathBuf },
    #[error("no free {what} left in the pool")]
    PoolExhausted { what: &'static str },
    #[error("host setup: {what}")]
    Host {
        what: String,
        #[source]
        cause: Box<Cause>,
    },
}

impl RuntimeError {
    pub(crate) fn host(what: impl Into<String>, cause: Cause) -> Self {
        RuntimeError::Host {
            what: what.into(),
            cause: Box::new(cause),
        }
    }
}

/// Attaches the sandbox and step to a lower-level error.
pub(crate) trait Context<T> {
    fn at(self, id: &SandboxId, step: Step) -> Result<T, RuntimeError>;
}

impl<T, E: Into<Cause>> Context<T> for Result<T, E> {
    fn at(self, id: &SandboxId, step: Step) -> Result<T, RuntimeError> {
        self.map_err(|e| RuntimeError::Failed {
            id: id.clone(),
            step,
            cause: Box::new(e.into()),
        })
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

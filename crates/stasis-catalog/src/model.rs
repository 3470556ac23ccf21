//! What the catalog stores: one [`SandboxRecord`] per sandbox and its [`Event`] log.
//!
//! [`CatalogState`] mirrors the lifecycle of architecture.md §2:
//!
//! ```text
//!   Starting ──► Running ──► Pausing ──► Paused ──► Resuming ──► Running
//!                   ▲           │ failed               │ failed
//!                   └───────────┘          Paused ◄────┘
//!   Running | Paused ──► Killing ──► (row deleted)
//! ```
//!
//! The catalog does not decide which transitions are legal (the supervisor does, in one
//! place); it only applies a transition if the sandbox is still in the state the caller
//! saw ([`crate::Catalog::update_state`]).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use stasis_types::{SandboxId, TemplateName};

/// Lifecycle state of a sandbox as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CatalogState {
    Starting,
    Running,
    Pausing,
    Paused,
    Resuming,
    Killing,
}

impl CatalogState {
    /// Every state, in lifecycle order.
    pub const ALL: [CatalogState; 6] = [
        CatalogState::Starting,
        CatalogState::Running,
        CatalogState::Pausing,
        CatalogState::Paused,
        CatalogState::Resuming,
        CatalogState::Killing,
    ];

    /// States a wire (E2B) `running` sandbox can be in. A starting sandbox is not listed.
    pub const LISTED_AS_RUNNING: [CatalogState; 1] = [CatalogState::Running];

    /// States reported on the wire as `paused` (E2B reports transitions as paused).
    pub const LISTED_AS_PAUSED: [CatalogState; 3] = [
        CatalogState::Pausing,
        CatalogState::Paused,
        CatalogState::Resuming,
    ];

    /// The stored (lowercase) name.
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogState::Starting => "starting",
            CatalogState::Running => "running",
            CatalogState::Pausing => "pausing",
            CatalogState::Paused => "paused",
            CatalogState::Resuming => "resuming",
            CatalogState::Killing => "killing",
        }
    }

    /// Inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for CatalogState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sandbox. Timestamps are stored with millisecond precision; use
/// [`crate::Catalog::now`] (or truncate yourself) so a record reads back equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub template: TemplateName,
    /// Template alias reported to clients.
    pub alias: Option<String>,
    pub client_id: String,
    pub state: CatalogState,
    pub started_at: DateTime<Utc>,
    /// Timeout deadline; `None` while paused (paused time does not count).
    pub end_at: Option<DateTime<Utc>>,
    /// The sandbox's timeout (inactivity window) in seconds; reapplied on resume.
    pub timeout_secs: u32,
    /// Pause instead of kill on timeout.
    pub auto_pause: bool,
    /// Inactivity window before auto-pause, from the object form of `autoPause`.
    pub auto_pause_timeout_ms: Option<u64>,
    /// Whether an auto-pause keeps memory.
    pub auto_pause_memory: bool,
    /// Resume on traffic while paused.
    pub auto_resume: bool,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    /// Unique across all sandboxes (it routes traffic).
    pub envd_access_token: String,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_size_mb: u64,
    pub allow_internet: bool,
    /// When the sandbox last became paused; `None` unless paused.
    pub paused_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Kind of a lifecycle [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Started,
    StartFailed,
    Pausing,
    Paused,
    PauseFailed,
    Resuming,
    Resumed,
    ResumeFailed,
    TimeoutChanged,
    TimedOut,
    Killed,
    /// Anything else, stored by name.
    Other(String),
}

impl EventKind {
    const NAMED: [EventKind; 12] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::StartFailed,
        EventKind::Pausing,
        EventKind::Paused,
        EventKind::PauseFailed,
        EventKind::Resuming,
        EventKind::Resumed,
        EventKind::ResumeFailed,
        EventKind::TimeoutChanged,
        EventKind::TimedOut,
        EventKind::Killed,
    ];

    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::StartFailed => "start_failed",
            EventKind::Pausing => "pausing",
            EventKind::Paused => "paused",
            EventKind::PauseFailed => "pause_failed",
            EventKind::Resuming => "resuming",
            EventKind::Resumed => "resumed",
            EventKind::ResumeFailed => "resume_failed",
            EventKind::TimeoutChanged => "timeout_changed",
            EventKind::TimedOut => "timed_out",
            EventKind::Killed => "killed",
            EventKind::Other(s) => s,
        }
    }

    /// Inverse of [`Self::as_str`]; unknown names become [`EventKind::Other`].
    pub fn from_name(name: &str) -> Self {
        Self::NAMED
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or_else(|| EventKind::Other(name.to_owned()))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a sandbox's lifecycle log. Events outlive the sandbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Global, increasing sequence number.
    pub seq: i64,
    pub sandbox_id: SandboxId,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for s in CatalogState::ALL {
            assert_eq!(CatalogState::parse(s.as_str()), Some(s));
        }
        assert_eq!(CatalogState::parse("gone"), None);
    }

    #[test]
    fn event_kinds_round_trip() {
        for k in EventKind::NAMED {
            assert_eq!(EventKind::from_name(k.as_str()), k);
        }
        assert_eq!(
            EventKind::from_name("snapshotted"),
            EventKind::Other("snapshotted".into())
        );
    }
}

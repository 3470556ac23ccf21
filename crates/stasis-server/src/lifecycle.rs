//! The sandbox lifecycle as the server sees it, and the admission rule for requests.
//!
//! ```text
//!            create                 pause                      
//!   ───────► Starting ──► Running ────────► Pausing ──► Paused
//!                           ▲  ▲              │ failed     │
//!                           │  └──────────────┘            │ connect / resume /
//!                           │                              │ auto-resume
//!                           └──────── Resuming ◄───────────┘
//!                            restored     │ failed → Paused (snapshot intact)
//!
//!   Running ──kill──► Killing ──► (gone) ◄── Killing ◄──kill── Paused
//! ```
//!
//! Each sandbox has one owner task that runs one operation at a time, so an operation
//! always starts from a stable state (`Running` or `Paused`); requests that arrive during
//! a transition wait for it. [`decide`] says what a request means in each stable state.
//! A kill queued behind other requests runs first and answers them "gone".

use serde::{Deserialize, Serialize};

/// Every state a sandbox can be in, including transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Pausing,
    Paused,
    Resuming,
    Killing,
}

impl Phase {
    /// The state on the wire: E2B knows only `running` and `paused`, and reports
    /// transitions towards a pause as paused.
    pub fn wire(self) -> WireState {
        match self {
            Phase::Starting | Phase::Running | Phase::Killing => WireState::Running,
            Phase::Pausing | Phase::Paused | Phase::Resuming => WireState::Paused,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Pausing => "pausing",
            Phase::Paused => "paused",
            Phase::Resuming => "resuming",
            Phase::Killing => "killing",
        }
    }
}

/// `running` or `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireState {
    Running,
    Paused,
}

/// What happens when a sandbox's inactivity timeout expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnTimeout {
    Kill,
    /// Pause; `memory: false` keeps only the filesystem.
    Pause {
        memory: bool,
    },
}

/// A stable state: where every operation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stable {
    Running,
    Paused,
}

/// A request to a sandbox's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Pause,
    /// `connect`: resume if paused, else extend the timeout.
    Connect,
    /// Legacy `resume`: 409 if running.
    Resume,
    /// Traffic for a sandbox with auto-resume.
    AutoResume,
    /// Traffic for a sandbox without auto-resume, that arrived during a transition.
    Route,
    Kill,
    SetTimeout,
    Refresh,
    Fork,
    Metrics,
    /// Replace the egress rules (`PUT /sandboxes/{id}/network`).
    SetNetwork,
    /// The inactivity timeout expired.
    Expire,
}

/// What to do with a request in a stable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Do the operation.
    Run,
    /// Nothing to do; answer success (e.g. connect to a running sandbox extends it).
    AlreadyDone,
    /// 409: already paused.
    AlreadyPaused,
    /// 409: already running (legacy resume).
    AlreadyRunning,
    /// The operation needs a running sandbox (404 for set-timeout, as E2B answers; 409
    /// for fork; empty for metrics; 502 for traffic).
    NotRunning,
}

/// The admission rule. Exhaustive on purpose: a new state or request must be decided here.
pub fn decide(now: Stable, ask: Ask) -> Decision {
    use Decision::*;
    match (now, ask) {
        (Stable::Running, Ask::Pause) => Run,
        (Stable::Paused, Ask::Pause) => AlreadyPaused,
        (Stable::Running, Ask::Connect) => AlreadyDone,
        (Stable::Paused, Ask::Connect) => Run,
        (Stable::Running, Ask::Resume) => AlreadyRunning,
        (Stable::Paused, Ask::Resume) => Run,
        (Stable::Running, Ask::AutoResume) => AlreadyDone,
        (Stable::Paused, Ask::AutoResume) => Run,
        (Stable::Running, Ask::Route) => AlreadyDone,
        (Stable::Paused, Ask::Route) => NotRunning,
        (Stable::Running, Ask::Kill) | (Stable::Paused, Ask::Kill) => Run,
        (Stable::Running, Ask::SetTimeout) => Run,
        (Stable::Paused, Ask::SetTimeout) => NotRunning,
        (Stable::Running, Ask::Refresh) => Run,
        (Stable::Paused, Ask::Refresh) => NotRunning,
        (Stable::Running, Ask::Fork) => Run,
        (Stable::Paused, Ask::Fork) => NotRunning,
        (Stable::Running, Ask::Metrics) => Run,
        (Stable::Paused, Ask::Metrics) => NotRunning,
        // A paused sandbox gets its new rules when it resumes.
        (Stable::Running, Ask::SetNetwork) | (Stable::Paused, Ask::SetNetwork) => Run,
        (Stable::Running, Ask::Expire) => Run,
        (Stable::Paused, Ask::Expire) => AlreadyDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_twice_is_a_conflict_and_connect_resumes() {
        assert_eq!(decide(Stable::Running, Ask::Pause), Decision::Run);
        assert_eq!(decide(Stable::Paused, Ask::Pause), Decision::AlreadyPaused);
        assert_eq!(decide(Stable::Paused, Ask::Connect), Decision::Run);
        assert_eq!(decide(Stable::Running, Ask::Connect), Decision::AlreadyDone);
    }

    #[test]
    fn legacy_flows() {
        // Legacy connect: set-timeout must fail on a paused sandbox, then resume.
        assert_eq!(
            decide(Stable::Paused, Ask::SetTimeout),
            Decision::NotRunning
        );
        assert_eq!(decide(Stable::Paused, Ask::Resume), Decision::Run);
        assert_eq!(
            decide(Stable::Running, Ask::Resume),
            Decision::AlreadyRunning
        );
    }

    #[test]
    fn kill_works_from_both_states_and_paused_time_does_not_count() {
        assert_eq!(decide(Stable::Running, Ask::Kill), Decision::Run);
        assert_eq!(decide(Stable::Paused, Ask::Kill), Decision::Run);
        assert_eq!(decide(Stable::Paused, Ask::Expire), Decision::AlreadyDone);
        assert_eq!(decide(Stable::Paused, Ask::Route), Decision::NotRunning);
        assert_eq!(decide(Stable::Paused, Ask::AutoResume), Decision::Run);
    }

    #[test]
    fn wire_states() {
        assert_eq!(Phase::Pausing.wire(), WireState::Paused);
        assert_eq!(Phase::Resuming.wire(), WireState::Paused);
        assert_eq!(Phase::Killing.wire(), WireState::Running);
    }
}

//! Rust SDK for Stasis, shaped like E2B's classic SDK.
//!
//! ```no_run
//! use stasis_client::Sandbox;
//!
//! # async fn demo() -> stasis_client::Result<()> {
//! // STASIS_API_URL / STASIS_API_KEY (or E2B_API_URL / E2B_API_KEY) say where and who.
//! let sandbox = Sandbox::create().await?;
//! sandbox.commands().run("echo 'Hello World' > /tmp/file.txt").await?;
//! sandbox.pause().await?;                      // memory and files kept on disk
//!
//! let sandbox = Sandbox::connect(sandbox.id()).await?;   // resumed where it stopped
//! let out = sandbox.commands().run("cat /tmp/file.txt").await?;
//! assert_eq!(out.stdout, "Hello World\n");
//! sandbox.kill().await?;
//! # Ok(()) }
//! ```
//!
//! * [`Sandbox`] / [`SandboxBuilder`]: create, connect (resume), pause, kill, list
//!   ([`Paginator`]), set_timeout, get_info, metrics, fork.
//! * [`Commands`] (`sandbox.commands()`): run in the foreground or the background with
//!   streamed output, kill, list, connect, stdin — over envd's Connect protocol.
//! * [`Files`] (`sandbox.files()`): read, write, list, exists, remove, rename, watch.
//! * [`Sandbox::run_code`]: the code interpreter of `code-interpreter-v1` sandboxes.
//! * [`Client`] + [`ConnectionConfig`]: the same calls with explicit settings.
//! * [`Error`]: typed failures (`SandboxNotFound`, `AlreadyPaused`, `CommandExit`, …).
//!
//! The crate depends on no server crate: only the wire types of `stasis-e2b-api` and
//! `stasis-envd-proto`, and `reqwest` (plain HTTP; no TLS stack is compiled in).
#![forbid(unsafe_code)]

pub mod client;
pub mod code;
pub mod commands;
pub mod config;
mod envd;
pub mod error;
pub mod files;
pub mod sandbox;

pub use client::Client;
pub use code::{Context, ExecResult, Execution, ExecutionError, Logs, RunCode};
pub use commands::{Attach, CommandHandle, CommandResult, Commands, ProcessInfo, Run};
pub use config::{ConnectionConfig, DEFAULT_API_URL};
pub use error::{CommandExitError, Error, Result};
pub use files::{EntryInfo, EventType, FileType, Files, FilesystemEvent, WatchHandle, WriteInfo};
pub use sandbox::{
    AutoPause, ListedSandbox, Paginator, Sandbox, SandboxBuilder, SandboxInfo, SandboxMetric,
    SandboxQuery, SandboxState,
};

/// The wire types of the control plane, for callers that need raw bodies.
pub use stasis_e2b_api as wire;

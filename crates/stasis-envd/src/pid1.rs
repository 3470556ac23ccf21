//! Start-up for running as a sandbox's PID 1.
//!
//! Descriptors inherited from runc point at the host (its pipes or a host `/dev/null`
//! mount); CRIU cannot dump them. So, before anything else is opened, the agent closes
//! every inherited descriptor above 2, points stdin/stdout/stderr at the sandbox's own
//! `/dev/null`, and logs to a file inside the sandbox.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Log file used inside a sandbox.
pub const LOG_PATH: &str = "/var/log/stasis-envd.log";
/// Fallback when `/var/log` is not writable.
pub const LOG_FALLBACK: &str = "/tmp/stasis-envd.log";

/// Whether this process is PID 1 of its namespace.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Closes inherited descriptors and points fds 0–2 at `/dev/null`.
pub fn detach_stdio() -> io::Result<()> {
    crate::sys::close_inherited_fds()?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    Ok(())
}

/// Opens the log for appending: `preferred`, else [`LOG_PATH`], else [`LOG_FALLBACK`].
pub fn open_log(preferred: Option<&Path>) -> io::Result<(File, PathBuf)> {
    let candidates: Vec<PathBuf> = match preferred {
        Some(p) => vec![p.to_path_buf()],
        None => vec![LOG_PATH.into(), LOG_FALLBACK.into()],
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no log path");
    for path in candidates {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

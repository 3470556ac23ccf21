//! The one corner with `unsafe`: spawning a child with credentials and a session set in
//! the forked child, and closing inherited descriptors at startup.
//!
//! Everything else in the crate is `#![forbid(unsafe_code)]`-clean and uses `rustix`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rustix::process::{Gid, Uid};
use tokio::io::unix::AsyncFd;

/// How the child's standard streams are connected.
#[derive(Debug)]
pub enum ChildStdio {
    /// stdin a pipe (`true`) or `/dev/null` (`false`); stdout and stderr pipes.
    Pipes {
        /// Whether stdin is a writable pipe.
        stdin: bool,
    },
    /// All three on this PTY slave, which also becomes the controlling terminal.
    Pty(OwnedFd),
}

/// Everything needed to start a process.
#[derive(Debug)]
pub struct SpawnSpec {
    /// Program (searched in the child's `PATH` when it has no slash).
    pub program: String,
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// The complete environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// User id to run as.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Standard streams.
    pub stdio: ChildStdio,
}

/// A started child. Its exit status belongs to the reaper; there is no `wait` here.
#[derive(Debug)]
pub struct Spawned {
    /// Process id.
    pub pid: u32,
    /// Write end of stdin, when piped.
    pub stdin: Option<OwnedFd>,
    /// Read end of stdout, when piped.
    pub stdout: Option<OwnedFd>,
    /// Read end of stderr, when piped.
    pub stderr: Option<OwnedFd>,
}

/// Starts the child: new session (and controlling PTY when asked), then the
/// supplementary groups, gid and uid are set in the child before `exec`.
pub fn spawn(spec: SpawnSpec) -> io::Result<Spawned> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd);
    let pty = match spec.stdio {
        ChildStdio::Pipes { stdin } => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            false
        }
        ChildStdio::Pty(slave) => {
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            true
        }
    };
    if spec.uid == u32::MAX || spec.gid == u32::MAX || spec.groups.contains(&u32::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "id -1 is not a valid user or group",
        ));
    }
    // SAFETY: `from_raw` is unsafe only because -1 means "unchanged" to the id
    // syscalls; it was rejected just above.
    let (uid, gid, groups) = unsafe {
        (
            Uid::from_raw(spec.uid),
            Gid::from_raw(spec.gid),
            spec.groups
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect::<Vec<Gid>>(),
        )
    };
    let switch_user = rustix::process::geteuid().is_root() && (spec.uid != 0 || spec.gid != 0);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe operations are allowed. It performs raw syscalls through rustix
    // (setsid, ioctl, setgroups, setgid, setuid) on values computed before the fork; it
    // allocates nothing, takes no locks and touches no shared state.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            if pty {
                rustix::process::ioctl_tiocsctty(std::io::stdin().as_fd())?;
            }
            if switch_user {
                rustix::thread::set_thread_groups(&groups)?;
                rustix::thread::set_thread_gid(gid)?;
                rustix::thread::set_thread_uid(uid)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    Ok(Spawned {
        pid: child.id(),
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
    // `child` is dropped without waiting: std never reaps on drop, the reaper does.
}

/// Registers an owned descriptor with the tokio reactor.
pub fn register_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` moves into the `AsyncFd`, so the descriptor stays open and
    // refers to the same file description until the `AsyncFd` (which deregisters it
    // first) is dropped; `OwnedFd::as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Closes every descriptor above 2. Call once at startup, before anything else opens a
/// file, so nothing inherited from the host (runc) survives into a checkpoint.
pub fn close_inherited_fds() -> io::Result<usize> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|fd| *fd > 2)
        .collect();
    // The directory handle used above is closed now; its number may be in `fds` and
    // closing it again is harmless (EBADF is ignored by `close`).
    let mut closed = 0;
    for fd in fds {
        if rustix::io::fcntl_getfd(unsafe_borrow(fd)).is_ok() {
            // SAFETY: at startup nothing in this process owns descriptors above 2 (we
            // have opened none yet), so closing them cannot invalidate an owner.
            unsafe { rustix::io::close(fd) };
            closed += 1;
        }
    }
    Ok(closed)
}

fn unsafe_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only used for an `F_GETFD` probe of a descriptor number that may or may
    // not be open; `fcntl` on a closed number fails with EBADF and has no effect.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

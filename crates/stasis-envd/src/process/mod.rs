//! Processes started through `process.Process`: the table, output fan-out, input.
//!
//! Lifecycle of one process:
//!
//! ```text
//!  start ──► Running ──(reaper reports exit)──► Draining ──(pipes at EOF or idle)──► Ended
//!             │ input, signals, resize, subscribe              │ subscribe gets end at once
//!             ▼                                                ▼
//!        listed by List                                 kept (bounded) for Connect only
//! ```
//!
//! Output is read by one pump task per process and fanned out to every subscriber
//! (the `Start` stream and any `Connect` streams) through bounded channels: a slow
//! client slows the process down like a full pipe would, a gone client is dropped, and
//! a process with no subscriber runs on with its output discarded. A client disconnect
//! never kills a process.
#![forbid(unsafe_code)]

pub mod exit;
pub mod reaper;
pub mod rpc;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use stasis_envd_proto::envelope;
use stasis_envd_proto::error::{Code, ConnectError};
use stasis_envd_proto::process::{
    DataEvent, EndEvent, ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, PtySize, Selector,
    StartEvent, StartResponse,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fdio::FdIo;
use crate::sys::{self, ChildStdio, SpawnSpec};
use crate::users::User;
use exit::Exit;
use reaper::Reaper;

/// How many ended processes are remembered for `Connect`.
const RETAINED_ENDED: usize = 256;
/// Output read size.
const CHUNK: usize = 32 * 1024;
/// After the exit, output still arriving is forwarded until the pipes are idle this long…
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// …or at most this long (a grandchild may hold the pipe open forever).
const DRAIN_MAX: Duration = Duration::from_secs(1);
/// Buffered frames per subscriber.
const SUBSCRIBER_QUEUE: usize = 64;

/// Errors of process operations.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// No running process matches the selector.
    #[error("process with {0} not found")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The working directory does not exist.
    #[error("cwd '{0}' does not exist")]
    InvalidCwd(String),
    /// `exec` failed.
    #[error("cannot start '{cmd}': {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No PTY could be allocated.
    #[error("cannot allocate a pty: {0}")]
    Pty(#[source] io::Error),
    /// Stdin was not requested or is closed.
    #[error("stdin of process {0} is not open")]
    StdinClosed(u32),
    /// PTY operation on a process without a PTY.
    #[error("process {0} has no pty")]
    NotPty(u32),
    /// Writing input failed.
    #[error("cannot write input to process {pid}: {source}")]
    Input {
        /// The process.
        pid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A signal or ioctl failed.
    #[error("cannot {op} process {pid}: {source}")]
    Os {
        /// What was attempted.
        op: &'static str,
        /// The process.
        pid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<ProcessError> for ConnectError {
    fn from(e: ProcessError) -> Self {
        let code = match &e {
            ProcessError::NotFound(_) => Code::NotFound,
            ProcessError::Invalid(_) | ProcessError::InvalidCwd(_) => Code::InvalidArgument,
            ProcessError::Spawn { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ) =>
            {
                Code::InvalidArgument
            }
            ProcessError::Spawn { .. } | ProcessError::Pty(_) => Code::Internal,
            ProcessError::StdinClosed(_) | ProcessError::NotPty(_) => Code::FailedPrecondition,
            ProcessError::Input { source, .. } if source.kind() == io::ErrorKind::BrokenPipe => {
                Code::FailedPrecondition
            }
            ProcessError::Os { source, .. }
                if source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) =>
            {
                Code::NotFound
            }
            ProcessError::Input { .. } | ProcessError::Os { .. } => Code::Internal,
        };
        ConnectError::new(code, e.to_string())
    }
}

fn describe(sel: &Selector) -> String {
    match sel {
        Selector::Pid(p) => format!("pid {p}"),
        Selector::Tag(t) => format!("tag '{t}'"),
    }
}

/// A message for a stream subscriber: an encoded `StartResponse` envelope.
#[derive(Debug, Clone)]
pub enum Out {
    /// Data (or keepalive) frame.
    Frame(Bytes),
    /// The final `end` frame; nothing follows.
    End(Bytes),
}

/// Receiving end of a subscription.
pub type Subscription = mpsc::Receiver<Out>;

/// Encodes one process event as an envelope.
pub fn frame(event: ProcessEvent) -> Bytes {
    let payload = serde_json::to_vec(&StartResponse { event }).expect("events serialize");
    Bytes::from(envelope::encode(0, &payload))
}

enum Input {
    /// Stdin pipe.
    Pipe(FdIo),
    /// Input goes to the PTY master.
    Pty,
    /// No stdin (not requested, or closed).
    Closed,
}

#[derive(Default)]
struct Outputs {
    subscribers: Vec<mpsc::Sender<Out>>,
    end: Option<Bytes>,
}

/// One started process.
pub struct Process {
    /// Pid, config and tag as `List` reports them.
    pub info: ProcessInfo,
    input: tokio::sync::Mutex<Input>,
    pty: Option<Arc<FdIo>>,
    outputs: Mutex<Outputs>,
    exited: AtomicBool,
    done: CancellationToken,
}

impl Process {
    /// Pid.
    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    fn outputs(&self) -> std::sync::MutexGuard<'_, Outputs> {
        self.outputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber for live output; gets only the `end` if the process has ended.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut out = self.outputs();
        match &out.end {
            Some(end) => {
                let _ = tx.try_send(Out::End(end.clone()));
            }
            None => out.subscribers.push(tx),
        }
        rx
    }

    async fn publish(&self, msg: Out) {
        let subs = self.outputs().subscribers.clone();
        if subs.is_empty() {
            return;
        }
        let mut gone = false;
        for s in &subs {
            gone |= s.send(msg.clone()).await.is_err();
        }
        if gone {
            self.outputs().subscribers.retain(|s| !s.is_closed());
        }
    }

    async fn finish(&self, end: EndEvent) {
        let frame = frame(ProcessEvent::End(end));
        let subs = {
            let mut out = self.outputs();
            out.end = Some(frame.clone());
            std::mem::take(&mut out.subscribers)
        };
        for s in subs {
            let _ = s.send(Out::End(frame.clone())).await;
        }
        self.done.cancel();
    }

    /// Resolves once the `end` event has been published.
    pub async fn ended(&self) {
        self.done.cancelled().await
    }

    /// Sends input to stdin or the PTY.
    pub async fn write_input(&self, input: ProcessInput) -> Result<(), ProcessError> {
        let pid = self.pid();
        let (data, want_pty) = match input {
            ProcessInput::Stdin(d) => (d, false),
            ProcessInput::Pty(d) => (d, true),
        };
        let guard = self.input.lock().await;
        let target = match (&*guard, want_pty) {
            (Input::Pipe(fd), false) => fd,
            // stdin input for a PTY process goes to the terminal, like typing
            (Input::Pty, _) | (Input::Closed, true) if self.pty.is_some() => {
                self.pty.as_deref().expect("checked")
            }
            (_, true) => return Err(ProcessError::NotPty(pid)),
            (_, false) => return Err(ProcessError::StdinClosed(pid)),
        };
        target
            .write_all(&data)
            .await
            .map_err(|source| ProcessError::Input { pid, source })
    }

    /// Closes stdin (EOF for the process). For a PTY, sends the EOF character (^D).
    pub async fn close_stdin(&self) -> Result<(), ProcessError> {
        let mut guard = self.input.lock().await;
        match &*guard {
            Input::Pipe(_) => {
                *guard = Input::Closed;
                Ok(())
            }
            Input::Pty => {
                let pty = self.pty.as_deref().expect("pty input has a pty");
                pty.write_all(&[0x04])
                    .await
                    .map_err(|source| ProcessError::Input {
                        pid: self.pid(),
                        source,
                    })
            }
            Input::Closed => Ok(()),
        }
    }

    /// Sends a signal unless the process has already exited.
    pub fn signal(&self, sig: rustix::process::Signal) -> Result<(), ProcessError> {
        let pid = self.pid();
        if self.exited.load(Ordering::SeqCst) {
            return Err(ProcessError::NotFound(format!("pid {pid}")));
        }
        let p = rustix::process::Pid::from_raw(pid as i32)
            .ok_or_else(|| ProcessError::Invalid(format!("invalid pid {pid}")))?;
        rustix::process::kill_process(p, sig).map_err(|e| ProcessError::Os {
            op: "signal",
            pid,
            source: e.into(),
        })
    }

    /// Resizes the PTY (the kernel sends SIGWINCH to the foreground job).
    pub fn resize(&self, size: PtySize) -> Result<(), ProcessError> {
        let pid = self.pid();
        let pty = self.pty.as_deref().ok_or(ProcessError::NotPty(pid))?;
        set_size(pty.get_ref(), size).map_err(|source| ProcessError::Os {
            op: "resize the pty of",
            pid,
            source,
        })
    }
}

fn set_size(fd: &OwnedFd, size: PtySize) -> io::Result<()> {
    let ws = Winsize {
        ws_row: size.rows.clamp(1, u16::MAX as u32) as u16,
        ws_col: size.cols.clamp(1, u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, ws).map_err(io::Error::from)
}

/// Everything needed to start a process, already validated and resolved.
#[derive(Debug)]
pub struct StartSpec {
    /// The config as the client sent it (reported by `List`).
    pub config: ProcessConfig,
    /// Tag.
    pub tag: Option<String>,
    /// Give the process a stdin pipe.
    pub stdin: bool,
    /// Run on a PTY of this size.
    pub pty: Option<PtySize>,
    /// Who runs it.
    pub user: User,
    /// Complete environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Kill the process after this long.
    pub lifetime: Option<Duration>,
}

struct Ended {
    pid: u32,
    tag: Option<String>,
    end: Bytes,
}

#[derive(Default)]
struct Table {
    running: HashMap<u32, Arc<Process>>,
    ended: VecDeque<Ended>,
}

/// What `Connect` finds.
pub enum Attach {
    /// A running process and a live subscription.
    Running(Arc<Process>, Subscription),
    /// A recently ended process: its pid and `end` frame.
    Ended(u32, Bytes),
}

/// The process table.
pub struct ProcessManager {
    reaper: Arc<Reaper>,
    table: Mutex<Table>,
}

impl ProcessManager {
    /// A manager whose children are reaped by `reaper`.
    pub fn new(reaper: Arc<Reaper>) -> Arc<Self> {
        Arc::new(Self {
            reaper,
            table: Mutex::new(Table::default()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a process; the returned subscription sees all of its output.
    pub fn start(
        self: &Arc<Self>,
        spec: StartSpec,
    ) -> Result<(Arc<Process>, Subscription), ProcessError> {
        let (master, stdio) = match spec.pty {
            Some(size) => {
                let (master, slave) = open_pty().map_err(ProcessError::Pty)?;
                set_size(&master, size).map_err(ProcessError::Pty)?;
                (Some(master), ChildStdio::Pty(slave))
            }
            None => (None, ChildStdio::Pipes { stdin: spec.stdin }),
        };
        let cmd = spec.config.cmd.clone();
        let sys_spec = SpawnSpec {
            program: spec.config.cmd.clone(),
            args: spec.config.args.clone(),
            env: spec.env,
            cwd: spec.cwd,
            uid: spec.user.uid,
            gid: spec.user.gid,
            groups: spec.user.groups.clone(),
            stdio,
        };
        let (child, exit_rx) = self
            .reaper
            .spawn(|| sys::spawn(sys_spec), |c| c.pid)
            .map_err(|source| ProcessError::Spawn { cmd, source })?;
        let pid = child.pid;
        let io_err = |source| ProcessError::Os {
            op: "set up i/o for",
            pid,
            source,
        };
        let pty = master
            .map(FdIo::new)
            .transpose()
            .map_err(io_err)?
            .map(Arc::new);
        let stdout = child.stdout.map(FdIo::new).transpose().map_err(io_err)?;
        let stderr = child.stderr.map(FdIo::new).transpose().map_err(io_err)?;
        let input = match (&pty, child.stdin) {
            (Some(_), _) => Input::Pty,
            (None, Some(fd)) => Input::Pipe(FdIo::new(fd).map_err(io_err)?),
            (None, None) => Input::Closed,
        };
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let process = Arc::new(Process {
            info: ProcessInfo {
                config: spec.config,
                pid,
                tag: spec.tag,
            },
            input: tokio::sync::Mutex::new(input),
            pty: pty.clone(),
            outputs: Mutex::new(Outputs {
                subscribers: vec![tx],
                end: None,
            }),
            exited: AtomicBool::new(false),
            done: CancellationToken::new(),
        });
        self.table().running.insert(pid, process.clone());
        tracing::info!(pid, cmd = %process.info.config.cmd, "process started");

        let manager = self.clone();
        let p = process.clone();
        tokio::spawn(async move {
            let end = pump(&p, stdout, stderr, pty, exit_rx).await;
            tracing::info!(pid, status = %end.status, "process ended");
            p.finish(end).await;
            manager.retire(&p);
        });
        if let Some(lifetime) = spec.lifetime {
            let p = process.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(lifetime) => {
                        tracing::info!(pid = p.pid(), "process lifetime elapsed, killing it");
                        let _ = p.signal(rustix::process::Signal::Kill);
                    }
                    _ = p.ended() => {}
                }
            });
        }
        Ok((process, rx))
    }

    fn retire(&self, p: &Arc<Process>) {
        let mut t = self.table();
        if t.running.get(&p.pid()).is_some_and(|q| Arc::ptr_eq(q, p)) {
            t.running.remove(&p.pid());
        }
        let end = p
            .outputs()
            .end
            .clone()
            .expect("retired processes have ended");
        t.ended.push_back(Ended {
            pid: p.pid(),
            tag: p.info.tag.clone(),
            end,
        });
        while t.ended.len() > RETAINED_ENDED {
            t.ended.pop_front();
        }
    }

    /// The running process matching `sel`.
    pub fn find(&self, sel: &Selector) -> Result<Arc<Process>, ProcessError> {
        let t = self.table();
        let found = match sel {
            Selector::Pid(pid) => t.running.get(pid).cloned(),
            Selector::Tag(tag) => t
                .running
                .values()
                .filter(|p| p.info.tag.as_deref() == Some(tag.as_str()))
                .min_by_key(|p| p.pid())
                .cloned(),
        };
        found.ok_or_else(|| ProcessError::NotFound(describe(sel)))
    }

    /// Attaches to a running process, or finds the `end` of a recently ended one.
    pub fn attach(&self, sel: &Selector) -> Result<Attach, ProcessError> {
        if let Ok(p) = self.find(sel) {
            let sub = p.subscribe();
            return Ok(Attach::Running(p, sub));
        }
        let t = self.table();
        t.ended
            .iter()
            .rev()
            .find(|e| match sel {
                Selector::Pid(pid) => e.pid == *pid,
                Selector::Tag(tag) => e.tag.as_deref() == Some(tag.as_str()),
            })
            .map(|e| Attach::Ended(e.pid, e.end.clone()))
            .ok_or_else(|| ProcessError::NotFound(describe(sel)))
    }

    /// Running processes, by pid.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut v: Vec<ProcessInfo> = self
            .table()
            .running
            .values()
            .map(|p| p.info.clone())
            .collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    /// SIGKILLs every running process (shutdown, and tests that must not leak).
    pub fn kill_all(&self) {
        for p in self.table().running.values() {
            let _ = p.signal(rustix::process::Signal::Kill);
        }
    }

    /// The reaper.
    pub fn reaper(&self) -> &Arc<Reaper> {
        &self.reaper
    }
}

impl Drop for ProcessManager {
    fn drop(&mut self) {
        self.kill_all();
        self.reaper.reap();
    }
}

fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(s) => s,
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?
        }
    };
    Ok((master, slave))
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
    Pty,
}

/// Forwards output until the process has exited and its output is drained; returns
/// the `end` event.
async fn pump(
    p: &Process,
    stdout: Option<FdIo>,
    stderr: Option<FdIo>,
    pty: Option<Arc<FdIo>>,
    exit_rx: tokio::sync::oneshot::Receiver<Exit>,
) -> EndEvent {
    let (exited_tx, exited_rx) = watch::channel::<Option<Instant>>(None);
    let waiter = async {
        let end = match exit_rx.await {
            Ok(exit) => exit.end_event(),
            Err(_) => EndEvent {
                exit_code: -1,
                exited: false,
                status: "unknown".into(),
                error: Some("exit status could not be collected".into()),
            },
        };
        p.exited.store(true, Ordering::SeqCst);
        let _ = exited_tx.send(Some(Instant::now()));
        end
    };
    let readers = async {
        tokio::join!(
            read_stream(p, stdout.as_ref(), Stream::Stdout, exited_rx.clone()),
            read_stream(p, stderr.as_ref(), Stream::Stderr, exited_rx.clone()),
            read_stream(p, pty.as_deref(), Stream::Pty, exited_rx.clone()),
        )
    };
    let (end, _) = tokio::join!(waiter, readers);
    end
}

async fn read_stream(
    p: &Process,
    fd: Option<&FdIo>,
    which: Stream,
    mut exited: watch::Receiver<Option<Instant>>,
) {
    let Some(fd) = fd else { return };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let exit_at = *exited.borrow();
        let res = match exit_at {
            Some(at) => {
                let deadline = (Instant::now() + DRAIN_IDLE).min(at + DRAIN_MAX);
                match tokio::time::timeout_at(deadline, fd.read(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
            None => tokio::select! {
                r = fd.read(&mut buf) => r,
                changed = exited.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            },
        };
        match res {
            Ok(0) => return,
            Ok(n) => {
                let data = buf[..n].to_vec();
                let ev = match which {
                    Stream::Stdout => DataEvent::Stdout(data),
                    Stream::Stderr => DataEvent::Stderr(data),
                    Stream::Pty => DataEvent::Pty(data),
                };
                p.publish(Out::Frame(frame(ProcessEvent::Data(ev)))).await;
            }
            Err(e) => {
                tracing::debug!(pid = p.pid(), error = %e, "output read failed");
                return;
            }
        }
    }
}

/// The `start` frame for `pid`.
pub fn start_frame(pid: u32) -> Bytes {
    frame(ProcessEvent::Start(StartEvent { pid }))
}

//! `sandbox.commands()`: run processes inside a sandbox (envd's `process.Process`).
//!
//! ```text
//!   run(cmd) ──await──────────────────────────────► CommandResult | CommandExit error
//!      └─.background().await─► CommandHandle ─wait()─► (same)
//!                                    ├─ kill()        SIGKILL through envd
//!                                    ├─ send_stdin()  when started with .stdin(true)
//!                                    └─ disconnect()  stop listening; the process runs on
//! ```
//!
//! `run` sends `Process.Start` exactly as the E2B SDKs do: `/bin/bash -l -c <cmd>`,
//! `"stdin": false` unless asked, the timeout (default 60 s) as `Connect-Timeout-Ms`,
//! which envd enforces as the process's lifetime.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, Instant};

use stasis_envd_proto::process::{
    CloseStdinRequest, ConnectRequest, DataEvent, Empty, ListRequest, ListResponse, ProcessConfig,
    ProcessEvent, ProcessInput, ProcessSelector, SendInputRequest, SendSignalRequest, Signal,
    StartRequest, StartResponse,
};
use tokio::task::JoinHandle;

use crate::envd::{Envd, EnvelopeStream, Utf8Stream};
use crate::error::{CommandExitError, Error, Result};

pub use stasis_envd_proto::process::ProcessInfo;

/// Default lifetime of a command (E2B's default).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the client waits beyond a command's timeout for envd's end event.
const GRACE: Duration = Duration::from_secs(15);

/// A callback receiving output text as it arrives.
pub type OutputCallback = Box<dyn FnMut(String) + Send + 'static>;

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandResult {
    /// 0 (non-zero codes are [`Error::CommandExit`]).
    pub exit_code: i32,
    /// envd's error string, if any.
    pub error: Option<String>,
    pub stdout: String,
    pub stderr: String,
}

/// The process commands of one sandbox.
#[derive(Clone, Debug)]
pub struct Commands {
    pub(crate) envd: Envd,
}

impl Commands {
    /// Runs `cmd` with bash (`bash -l -c cmd`). Await the builder for the result, or
    /// call [`Run::background`] for a handle.
    pub fn run(&self, cmd: impl Into<String>) -> Run {
        Run {
            envd: self.envd.clone(),
            cmd: cmd.into(),
            envs: BTreeMap::new(),
            cwd: None,
            user: None,
            timeout: Some(DEFAULT_COMMAND_TIMEOUT),
            stdin: false,
            tag: None,
            out: Output::default(),
        }
    }

    /// The processes running in the sandbox.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>> {
        let r: ListResponse = self
            .envd
            .unary("/process.Process/List", &ListRequest {}, None, None)
            .await?;
        Ok(r.processes)
    }

    /// Sends SIGKILL to `pid`. `Ok(false)` if there is no such process.
    pub async fn kill(&self, pid: u32) -> Result<bool> {
        signal(&self.envd, pid, Signal::Sigkill).await
    }

    /// Writes to the stdin of `pid` (started with `.stdin(true)`).
    pub async fn send_stdin(&self, pid: u32, data: impl AsRef<[u8]>) -> Result<()> {
        let _: Empty = self
            .envd
            .unary(
                "/process.Process/SendInput",
                &SendInputRequest {
                    process: ProcessSelector::pid(pid),
                    input: Some(ProcessInput::Stdin(data.as_ref().to_vec())),
                },
                None,
                None,
            )
            .await?;
        Ok(())
    }

    /// Closes the stdin of `pid` (end of file for the process).
    pub async fn close_stdin(&self, pid: u32) -> Result<()> {
        let _: Empty = self
            .envd
            .unary(
                "/process.Process/CloseStdin",
                &CloseStdinRequest {
                    process: ProcessSelector::pid(pid),
                },
                None,
                None,
            )
            .await?;
        Ok(())
    }

    /// Attaches to a running process: its output from now on, and its end.
    pub fn connect(&self, pid: u32) -> Attach {
        Attach {
            envd: self.envd.clone(),
            pid,
            timeout: None,
            out: Output::default(),
        }
    }
}

async fn signal(envd: &Envd, pid: u32, signal: Signal) -> Result<bool> {
    let r: Result<Empty> = envd
        .unary(
            "/process.Process/SendSignal",
            &SendSignalRequest {
                process: ProcessSelector::pid(pid),
                signal,
            },
            None,
            None,
        )
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Output callbacks.
#[derive(Default)]
struct Output {
    on_stdout: Option<OutputCallback>,
    on_stderr: Option<OutputCallback>,
}

/// A command about to run; see [`Commands::run`].
#[must_use = "a command runs when awaited or started with .background()"]
pub struct Run {
    envd: Envd,
    cmd: String,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    timeout: Option<Duration>,
    stdin: bool,
    tag: Option<String>,
    out: Output,
}

impl Run {
    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(key.into(), value.into());
        self
    }

    /// Adds environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.envs
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Working directory (default: the user's home).
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs as this user (default: the sandbox's default user, `user`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Lifetime of the process (default 60 s); `Duration::ZERO` means no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Keeps stdin open for [`CommandHandle::send_stdin`].
    pub fn stdin(mut self, open: bool) -> Self {
        self.stdin = open;
        self
    }

    /// A tag to find the process by.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Called with stdout text as it arrives.
    pub fn on_stdout(mut self, f: impl FnMut(String) + Send + 'static) -> Self {
        self.out.on_stdout = Some(Box::new(f));
        self
    }

    /// Called with stderr text as it arrives.
    pub fn on_stderr(mut self, f: impl FnMut(String) + Send + 'static) -> Self {
        self.out.on_stderr = Some(Box::new(f));
        self
    }

    /// Starts the command and returns once it runs.
    pub async fn background(self) -> Result<CommandHandle> {
        let req = StartRequest {
            process: Some(ProcessConfig {
                cmd: "/bin/bash".into(),
                args: vec!["-l".into(), "-c".into(), self.cmd.clone()],
                envs: self.envs,
                cwd: self.cwd,
            }),
            pty: None,
            tag: self.tag,
            stdin: Some(self.stdin),
        };
        let started = Instant::now();
        let mut stream = self
            .envd
            .stream(
                "/process.Process/Start",
                &req,
                self.user.as_deref(),
                self.timeout,
            )
            .await?;
        let pid = expect_start(&mut stream).await?;
        Ok(CommandHandle::spawn(
            self.envd,
            pid,
            stream,
            self.out,
            self.timeout,
            started,
            format!("command {:?}", self.cmd),
        ))
    }
}

impl IntoFuture for Run {
    type Output = Result<CommandResult>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.background().await?.wait().await })
    }
}

/// An attachment to a running process about to be made; see [`Commands::connect`].
#[must_use = "the attachment is made when awaited"]
pub struct Attach {
    envd: Envd,
    pid: u32,
    timeout: Option<Duration>,
    out: Output,
}

impl Attach {
    /// How long to stay attached (default: until the process ends).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Called with stdout text as it arrives.
    pub fn on_stdout(mut self, f: impl FnMut(String) + Send + 'static) -> Self {
        self.out.on_stdout = Some(Box::new(f));
        self
    }

    /// Called with stderr text as it arrives.
    pub fn on_stderr(mut self, f: impl FnMut(String) + Send + 'static) -> Self {
        self.out.on_stderr = Some(Box::new(f));
        self
    }
}

impl IntoFuture for Attach {
    type Output = Result<CommandHandle>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let started = Instant::now();
            let req = ConnectRequest {
                process: ProcessSelector::pid(self.pid),
            };
            let mut stream = self
                .envd
                .stream("/process.Process/Connect", &req, None, self.timeout)
                .await?;
            let pid = expect_start(&mut stream).await?;
            Ok(CommandHandle::spawn(
                self.envd,
                pid,
                stream,
                self.out,
                self.timeout,
                started,
                format!("process {pid}"),
            ))
        })
    }
}

/// Reads the first message, which must be `start`.
async fn expect_start(stream: &mut EnvelopeStream) -> Result<u32> {
    loop {
        match stream.next::<StartResponse>().await? {
            Some(StartResponse {
                event: ProcessEvent::Start(s),
            }) => return Ok(s.pid),
            Some(StartResponse {
                event: ProcessEvent::Keepalive(_),
            }) => continue,
            Some(other) => {
                return Err(Error::Protocol {
                    message: format!("expected a start event, got {other:?}"),
                })
            }
            None => {
                return Err(Error::Protocol {
                    message: "the process stream ended before the start event".into(),
                })
            }
        }
    }
}

/// A running command.
pub struct CommandHandle {
    pid: u32,
    envd: Envd,
    task: Option<JoinHandle<Result<CommandResult>>>,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle")
            .field("pid", &self.pid)
            .finish()
    }
}

impl CommandHandle {
    fn spawn(
        envd: Envd,
        pid: u32,
        stream: EnvelopeStream,
        out: Output,
        timeout: Option<Duration>,
        started: Instant,
        what: String,
    ) -> Self {
        let task = tokio::spawn(collect(stream, out, timeout, started, what));
        Self {
            pid,
            envd,
            task: Some(task),
        }
    }

    /// The process id inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the end. A non-zero exit code is [`Error::CommandExit`].
    pub async fn wait(mut self) -> Result<CommandResult> {
        let task = self.task.take().expect("wait consumes the handle");
        match task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Protocol {
                message: format!("the output reader of process {} failed: {e}", self.pid),
            }),
        }
    }

    /// Kills the process (SIGKILL). `Ok(false)` if it had already ended.
    pub async fn kill(&self) -> Result<bool> {
        signal(&self.envd, self.pid, Signal::Sigkill).await
    }

    /// Writes to the process's stdin (it must have been started with `.stdin(true)`).
    pub async fn send_stdin(&self, data: impl AsRef<[u8]>) -> Result<()> {
        Commands {
            envd: self.envd.clone(),
        }
        .send_stdin(self.pid, data)
        .await
    }

    /// Closes the process's stdin.
    pub async fn close_stdin(&self) -> Result<()> {
        Commands {
            envd: self.envd.clone(),
        }
        .close_stdin(self.pid)
        .await
    }

    /// Stops receiving output; the process keeps running (reattach with
    /// [`Commands::connect`]).
    pub fn disconnect(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for CommandHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Reads the process events to the end, feeding the callbacks.
async fn collect(
    mut stream: EnvelopeStream,
    mut out: Output,
    timeout: Option<Duration>,
    started: Instant,
    what: String,
) -> Result<CommandResult> {
    let limit = timeout.map(|t| t + GRACE);
    let read = async {
        let (mut so, mut se) = (Utf8Stream::default(), Utf8Stream::default());
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let emit = |text: String, acc: &mut String, cb: &mut Option<OutputCallback>| {
            if !text.is_empty() {
                acc.push_str(&text);
                if let Some(cb) = cb {
                    cb(text);
                }
            }
        };
        let mut end = None;
        loop {
            match stream.next::<StartResponse>().await {
                Ok(Some(m)) => match m.event {
                    ProcessEvent::Data(DataEvent::Stdout(b) | DataEvent::Pty(b)) => {
                        emit(so.push(&b), &mut stdout, &mut out.on_stdout)
                    }
                    ProcessEvent::Data(DataEvent::Stderr(b)) => {
                        emit(se.push(&b), &mut stderr, &mut out.on_stderr)
                    }
                    ProcessEvent::End(e) => end = Some(e),
                    ProcessEvent::Start(_) | ProcessEvent::Keepalive(_) => {}
                },
                Ok(None) => break,
                Err(Error::Timeout { .. }) => {
                    return Err(Error::Timeout {
                        what: what.clone(),
                        after: started.elapsed(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        emit(so.finish(), &mut stdout, &mut out.on_stdout);
        emit(se.finish(), &mut stderr, &mut out.on_stderr);
        let Some(end) = end else {
            return Err(Error::Protocol {
                message: format!("{what} ended without an end event"),
            });
        };
        if end.exit_code == 0 && (end.exited || !end.status.starts_with("signal")) {
            return Ok(CommandResult {
                exit_code: 0,
                error: end.error,
                stdout,
                stderr,
            });
        }
        if let Some(t) = timeout {
            if !end.exited && started.elapsed() >= t {
                return Err(Error::Timeout {
                    what: what.clone(),
                    after: t,
                });
            }
        }
        Err(CommandExitError {
            exit_code: if end.exit_code == 0 {
                -1
            } else {
                end.exit_code
            },
            error: end.error.or(Some(end.status)),
            stdout,
            stderr,
        }
        .into())
    };
    match limit {
        Some(l) => tokio::time::timeout(l, read).await.unwrap_or_else(|_| {
            Err(Error::Timeout {
                what,
                after: started.elapsed(),
            })
        }),
        None => read.await,
    }
}

//! One Jupyter kernel process and the ZeroMQ connections to it.
//!
//! ```text
//!  start ──► Starting ──(kernel_info reply + first iopub message)──► Ready
//!               │                                                    │  execute / interrupt
//!               └──────────── exits / times out ──► error            ▼
//!                                                                  Dead (process exited)
//! ```
//!
//! The kernel is its own process group (so an interrupt reaches what it runs, as with
//! `jupyter_client`). Its shell, iopub and control sockets connect over TCP loopback,
//! which CRIU checkpoints with `tcp-established`: a kernel and this client survive a
//! pause together. One task reads iopub and shell and hands every message to whoever
//! runs the current execution; executions are serialized by the caller.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jupyter_protocol::connection_info::Transport;
use jupyter_protocol::{
    ConnectionInfo, ExecuteRequest, InterruptRequest, JupyterMessage, JupyterMessageContent,
    KernelInfoRequest, ReplyStatus,
};
use jupyter_zmq_client::{ClientControlConnection, DealerSendConnection};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::wire::{map_iopub, IoPub, Line};

/// Where kernelspecs are looked up, in order (the first one of a name wins).
pub const KERNEL_DIRS: &[&str] = &[
    "/usr/local/share/jupyter/kernels",
    "/usr/share/jupyter/kernels",
];

/// How long a kernel may take to answer its first `kernel_info_request`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Silence after which an execution stream carries a keepalive line.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How long after a failed execution the next request waits (tslab aborts requests
/// that arrive within 200 ms of a failure).
const AFTER_FAILURE: Duration = Duration::from_millis(250);
/// How long an execute reply may lag behind the kernel's idle status.
const REPLY_GRACE: Duration = Duration::from_secs(5);
/// Messages buffered between the reader task and the execution.
const EVENT_QUEUE: usize = 1024;

/// Why a kernel could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot write connection file {path}: {source}")]
    ConnectionFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start kernel {kernel} ({argv:?}) in {cwd}: {source}")]
    Spawn {
        kernel: String,
        argv: Vec<String>,
        cwd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {kernel}: {op}: {cause}")]
    Zmq {
        kernel: String,
        op: &'static str,
        cause: String,
    },
    #[error("kernel {kernel} did not become ready within {waited:?}")]
    NotReady { kernel: String, waited: Duration },
    #[error("kernel {kernel} exited: {status}")]
    Died { kernel: String, status: String },
    #[error("no free loopback ports for kernel {kernel}: {cause}")]
    Ports { kernel: String, cause: String },
}

/// How a kernel wants to be interrupted (`interrupt_mode` in kernel.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptMode {
    Signal,
    Message,
}

/// A kernelspec found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSpec {
    /// Directory name, e.g. `python3`.
    pub name: String,
    /// `language` from kernel.json, lowercased, e.g. `python`.
    pub language: String,
    /// Command line with `{connection_file}` (and maybe `{resource_dir}`).
    pub argv: Vec<String>,
    /// The kernelspec's directory, for `{resource_dir}` (`None`: not from disk).
    pub resource_dir: Option<PathBuf>,
    pub interrupt_mode: InterruptMode,
    /// Extra environment from kernel.json.
    pub env: BTreeMap<String, String>,
}

/// Parses one `kernel.json`.
pub fn parse_kernelspec(name: &str, json: &str) -> Option<KernelSpec> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let argv: Vec<String> = v["argv"]
        .as_array()?
        .iter()
        .map(|a| a.as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    if argv.is_empty() {
        return None;
    }
    let env = v["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Some(KernelSpec {
        name: name.to_owned(),
        language: v["language"].as_str().unwrap_or(name).to_ascii_lowercase(),
        argv,
        resource_dir: None,
        interrupt_mode: match v["interrupt_mode"].as_str() {
            Some("message") => InterruptMode::Message,
            _ => InterruptMode::Signal,
        },
        env,
    })
}

/// Every kernelspec under `dirs`.
pub fn discover(dirs: &[PathBuf]) -> Vec<KernelSpec> {
    let mut out: Vec<KernelSpec> = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if out.iter().any(|k| k.name == name) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path().join("kernel.json")) else {
                continue;
            };
            if let Some(mut k) = parse_kernelspec(&name, &text) {
                k.resource_dir = Some(e.path());
                out.push(k);
            }
        }
    }
    out
}

/// The default kernelspec directories.
pub fn default_dirs() -> Vec<PathBuf> {
    KERNEL_DIRS.iter().map(PathBuf::from).collect()
}

/// The account kernels run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Looks `name` up in a passwd file's text.
pub fn lookup_user(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(RunAs {
            name: name.to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: PathBuf::from(f[5]),
        })
    })
}

/// Everything needed to start a kernel.
#[derive(Debug, Clone)]
pub struct Launch {
    pub spec: KernelSpec,
    pub cwd: PathBuf,
    /// Environment on top of the base one (sandbox variables).
    pub env: BTreeMap<String, String>,
    pub user: Option<RunAs>,
    /// Directory for connection files.
    pub runtime_dir: PathBuf,
}

/// Something the reader task saw.
#[derive(Debug)]
enum Event {
    IoPub(JupyterMessage),
    Shell(JupyterMessage),
    Exited(String),
}

/// Where execution output goes.
pub enum Sink<'a> {
    /// The client's stream; closing it interrupts the kernel.
    Client(&'a mpsc::Sender<Line>),
    /// Internal executions (environment changes): output dropped.
    Discard,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The error name, when the code raised.
    pub error: Option<String>,
    /// Whether the client went away and the kernel was interrupted.
    pub interrupted: bool,
}

/// A running kernel.
pub struct Kernel {
    name: String,
    pid: u32,
    interrupt_mode: InterruptMode,
    shell: DealerSendConnection,
    control: ClientControlConnection,
    events: mpsc::Receiver<Event>,
    reader: JoinHandle<()>,
    conn_file: PathBuf,
    dead: Option<String>,
    /// When the last execution failed: some kernels (tslab) abort every request that
    /// arrives within 200 ms of a failure, with a reply that does not parse.
    failed_at: Option<Instant>,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
        }
        let _ = std::fs::remove_file(&self.conn_file);
    }
}

fn zmq_err(
    kernel: &str,
    op: &'static str,
) -> impl Fn(jupyter_zmq_client::RuntimeError) -> KernelError {
    let kernel = kernel.to_owned();
    move |e| KernelError::Zmq {
        kernel: kernel.clone(),
        op,
        cause: e.to_string(),
    }
}

/// The environment every kernel starts with.
fn base_env(user: Option<&RunAs>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("LANG".into(), "C.UTF-8".into());
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.insert(
        "MPLBACKEND".into(),
        "module://matplotlib_inline.backend_inline".into(),
    );
    let (name, home) = match user {
        Some(u) => (u.name.clone(), u.home.display().to_string()),
        None => ("root".into(), "/root".into()),
    };
    env.insert("HOME".into(), home);
    env.insert("USER".into(), name.clone());
    env.insert("LOGNAME".into(), name);
    env.insert("SHELL".into(), "/bin/bash".into());
    env
}

/// Waits until something accepts TCP connections on `port` (the kernel binds its
/// sockets as it starts).
async fn wait_port(port: u16, deadline: Instant) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut delay = Duration::from_millis(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

fn parent_id(m: &JupyterMessage) -> Option<&str> {
    m.parent_header.as_ref().map(|h| h.msg_id.as_str())
}

impl Kernel {
    /// Starts a kernel and waits until it answers.
    pub async fn start(launch: Launch) -> Result<Kernel, KernelError> {
        let kname = launch.spec.name.clone();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (ports, listeners) = jupyter_zmq_client::peek_ports_with_listeners(ip, 5)
            .await
            .map_err(|e| KernelError::Ports {
                kernel: kname.clone(),
                cause: e.to_string(),
            })?;
        let info = ConnectionInfo {
            transport: Transport::TCP,
            ip: ip.to_string(),
            stdin_port: ports[0],
            control_port: ports[1],
            hb_port: ports[2],
            shell_port: ports[3],
            iopub_port: ports[4],
            signature_scheme: "hmac-sha256".into(),
            key: uuid::Uuid::new_v4().simple().to_string(),
            kernel_name: Some(kname.clone()),
        };
        let conn_file = launch
            .runtime_dir
            .join(format!("kernel-{}.json", uuid::Uuid::new_v4().simple()));
        write_connection_file(&conn_file, &info, launch.user.as_ref())?;

        let argv: Vec<String> = launch
            .spec
            .argv
            .iter()
            .enumerate()
            .map(|(i, a)| match a.as_str() {
                // pip's kernel.json says `python`; Debian has only `python3`
                "python" if i == 0 => "python3".to_owned(),
                _ => {
                    let a = a.replace("{connection_file}", &conn_file.display().to_string());
                    match &launch.spec.resource_dir {
                        Some(dir) => a.replace("{resource_dir}", &dir.display().to_string()),
                        None => a,
                    }
                }
            })
            .collect();
        let mut env = base_env(launch.user.as_ref());
        env.extend(launch.spec.env.clone());
        env.extend(launch.env.clone());
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&env)
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(u) = &launch.user {
            cmd.uid(u.uid).gid(u.gid);
        }
        drop(listeners);
        let mut child = cmd.spawn().map_err(|source| {
            let _ = std::fs::remove_file(&conn_file);
            KernelError::Spawn {
                kernel: kname.clone(),
                argv: argv.clone(),
                cwd: launch.cwd.display().to_string(),
                source,
            }
        })?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(kernel = %kname, pid, cwd = %launch.cwd.display(), "kernel started");

        let deadline = Instant::now() + START_TIMEOUT;
        for port in [info.shell_port, info.iopub_port, info.control_port] {
            let ready = tokio::select! {
                r = wait_port(port, deadline) => r,
                st = child.wait() => {
                    let _ = std::fs::remove_file(&conn_file);
                    return Err(KernelError::Died {
                        kernel: kname,
                        status: st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    });
                }
            };
            if !ready {
                let _ = std::fs::remove_file(&conn_file);
                return Err(KernelError::NotReady {
                    kernel: kname,
                    waited: START_TIMEOUT,
                });
            }
        }
        let session = uuid::Uuid::new_v4().to_string();
        let err = |op| zmq_err(&kname, op);
        let mut iopub = jupyter_zmq_client::create_client_iopub_connection(&info, "", &session)
            .await
            .map_err(err("connect iopub"))?;
        let identity =
            jupyter_zmq_client::peer_identity_for_session(&session).map_err(err("identity"))?;
        let shell = jupyter_zmq_client::create_client_shell_connection_with_identity(
            &info, &session, identity,
        )
        .await
        .map_err(err("connect shell"))?;
        let control = jupyter_zmq_client::create_client_control_connection(&info, &session)
            .await
            .map_err(err("connect control"))?;
        let (shell_tx, mut shell_rx) = shell.split();
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let reader_name = kname.clone();
        let reader = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let ev = tokio::select! {
                    m = iopub.read() => m.map(Event::IoPub),
                    m = shell_rx.read() => m.map(Event::Shell),
                    st = child.wait() => {
                        let status = st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        tracing::warn!(kernel = %reader_name, %status, "kernel exited");
                        let _ = tx.send(Event::Exited(status)).await;
                        return;
                    }
                };
                match ev {
                    Ok(ev) => {
                        failures = 0;
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(kernel = %reader_name, error = %e, "bad kernel message");
                        if failures > 100 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        let mut kernel = Kernel {
            name: kname,
            pid,
            interrupt_mode: launch.spec.interrupt_mode,
            shell: shell_tx,
            control,
            events,
            reader,
            conn_file,
            dead: None,
            failed_at: None,
        };
        kernel.handshake(deadline).await?;
        tracing::info!(kernel = %kernel.name, pid, "kernel ready");
        Ok(kernel)
    }

    /// Sends `kernel_info_request` until the kernel shows it is serving shell and
    /// publishing on iopub: an iopub message in reply to one of our requests (the
    /// status busy/idle pair every request causes). The reply itself is not required:
    /// some kernels (bash_kernel) send a `language_info` the typed reply cannot hold.
    async fn handshake(&mut self, deadline: Instant) -> Result<(), KernelError> {
        let mut sent: Vec<String> = Vec::new();
        loop {
            if Instant::now() >= deadline {
                return Err(KernelError::NotReady {
                    kernel: self.name.clone(),
                    waited: START_TIMEOUT,
                });
            }
            let req: JupyterMessage = KernelInfoRequest {}.into();
            sent.push(req.header.msg_id.clone());
            self.shell
                .send(req)
                .await
                .map_err(zmq_err(&self.name, "send kernel_info_request"))?;
            let round = Instant::now() + Duration::from_millis(500);
            loop {
                match tokio::time::timeout_at(round, self.events.recv()).await {
                    Err(_) => break,
                    Ok(None) => return Err(self.died("reader stopped".into())),
                    Ok(Some(Event::Exited(status))) => return Err(self.died(status)),
                    Ok(Some(Event::IoPub(m))) => {
                        if parent_id(&m).is_some_and(|p| sent.iter().any(|s| s == p)) {
                            return Ok(());
                        }
                    }
                    Ok(Some(Event::Shell(_))) => {}
                }
            }
        }
    }

    fn died(&mut self, status: String) -> KernelError {
        self.dead = Some(status.clone());
        KernelError::Died {
            kernel: self.name.clone(),
            status,
        }
    }

    /// Whether the process has exited.
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// The kernel's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Interrupts what the kernel runs (SIGINT to its process group, or an
    /// `interrupt_request` on control for kernels that ask for messages).
    pub async fn interrupt(&mut self) {
        tracing::info!(kernel = %self.name, pid = self.pid, "interrupting");
        match self.interrupt_mode {
            InterruptMode::Signal => {
                if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Int);
                }
            }
            InterruptMode::Message => {
                let req: JupyterMessage = InterruptRequest {}.into();
                let _ = self.control.send(req).await;
            }
        }
    }

    /// Runs `code` and streams what it produces into `sink`, until the kernel is idle
    /// and has replied. A closed client stream interrupts the kernel once; the
    /// execution is still followed to its end so the next one starts clean.
    pub async fn execute(
        &mut self,
        code: &str,
        silent: bool,
        sink: Sink<'_>,
    ) -> Result<Finished, KernelError> {
        if let Some(status) = &self.dead {
            return Err(KernelError::Died {
                kernel: self.name.clone(),
                status: status.clone(),
            });
        }
        if let Some(at) = self.failed_at.take() {
            tokio::time::sleep_until(at + AFTER_FAILURE).await;
        }
        let req: JupyterMessage = ExecuteRequest {
            code: code.to_owned(),
            silent,
            store_history: !silent,
            user_expressions: None,
            allow_stdin: false,
            stop_on_error: true,
        }
        .into();
        let id = req.header.msg_id.clone();
        self.shell
            .send(req)
            .await
            .map_err(zmq_err(&self.name, "send execute_request"))?;
        let client = match sink {
            Sink::Client(tx) => Some(tx),
            Sink::Discard => None,
        };
        let mut done = Finished {
            error: None,
            interrupted: false,
        };
        let (mut idle, mut replied) = (false, false);
        let mut stderr = String::new();
        // A failed reply without details (tslab prints its errors): the error is read
        // from stderr once the kernel is idle, because the shell socket's reply can
        // arrive before the stderr output on the iopub socket (no order between the two;
        // on iopub, output always comes before idle).
        let mut error_on_stderr = false;
        let mut reply_by = Instant::now();
        let mut quiet_until = Instant::now() + KEEPALIVE;
        while !(idle && replied) {
            let mut line = None;
            tokio::select! {
                ev = self.events.recv() => match ev {
                    None => return Err(self.died("reader stopped".into())),
                    Some(Event::Exited(status)) => return Err(self.died(status)),
                    Some(Event::IoPub(m)) if parent_id(&m) == Some(id.as_str()) => {
                        match map_iopub(&m) {
                            IoPub::Idle => {
                                idle = true;
                                reply_by = Instant::now() + REPLY_GRACE;
                            }
                            IoPub::Line(l) => {
                                match &l {
                                    Line::Error { name, .. } => done.error = Some(name.clone()),
                                    Line::Stderr { text, .. } if stderr.len() < STDERR_KEEP => {
                                        stderr.push_str(text);
                                    }
                                    _ => {}
                                }
                                line = Some(l);
                            }
                            IoPub::Ignore => {}
                        }
                    }
                    Some(Event::Shell(m)) if parent_id(&m) == Some(id.as_str()) => {
                        if let JupyterMessageContent::ExecuteReply(r) = &m.content {
                            replied = true;
                            if r.status != ReplyStatus::Ok && done.error.is_none() {
                                match &r.error {
                                    Some(e) => {
                                        done.error = Some(e.ename.clone());
                                        line = Some(Line::error(&e.ename, &e.evalue, &e.traceback));
                                    }
                                    // Kernels that only print the error (tslab): read it
                                    // back once idle (see `error_on_stderr`).
                                    None => error_on_stderr = true,
                                }
                            }
                        }
                    }
                    Some(_) => {} // a message of an earlier execution
                },
                _ = async { client.expect("guarded").closed().await }, if client.is_some() && !done.interrupted => {
                    done.interrupted = true;
                    self.interrupt().await;
                }
                _ = tokio::time::sleep_until(quiet_until) => {
                    line = Some(Line::Keepalive);
                }
                // Idle, but the reply never came (or could not be read): do not hold the
                // context forever.
                _ = tokio::time::sleep_until(reply_by), if idle && !replied => {
                    replied = true;
                    if done.error.is_none() {
                        let (n, v, tb) = error_from_stderr(&stderr);
                        done.error = Some(n.clone());
                        line = Some(Line::error(&n, &v, &tb));
                    }
                }
            }
            let mut lines: Vec<Line> = line.into_iter().collect();
            if error_on_stderr && idle && replied && done.error.is_none() {
                let (n, v, tb) = error_from_stderr(&stderr);
                done.error = Some(n.clone());
                lines.push(Line::error(&n, &v, &tb));
            }
            for l in lines {
                quiet_until = Instant::now() + KEEPALIVE;
                if let Some(tx) = client {
                    if tx.send(l).await.is_err() && !done.interrupted {
                        done.interrupted = true;
                        self.interrupt().await;
                    }
                }
            }
        }
        if done.error.is_some() {
            self.failed_at = Some(Instant::now());
        }
        Ok(done)
    }
}

/// How much of an execution's stderr is kept to describe an error the kernel reported
/// without details.
const STDERR_KEEP: usize = 16 * 1024;

/// An error's name, value and traceback from what a kernel printed on stderr, for
/// kernels whose failed `execute_reply` carries no details: the first line of the form
/// `SomeError: message` (Node prints the failing source line before it), else `Error`
/// and the first line.
pub fn error_from_stderr(stderr: &str) -> (String, String, Vec<String>) {
    let traceback: Vec<String> = stderr.trim_end().lines().map(str::to_owned).collect();
    let named = stderr.lines().map(str::trim).find_map(|l| {
        let (name, value) = l.split_once(": ")?;
        let ident = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.');
        (ident && (name.ends_with("Error") || name.ends_with("Exception")))
            .then(|| (name.to_owned(), value.to_owned()))
    });
    match named {
        Some((name, value)) => (name, value, traceback),
        None => {
            let first = stderr.lines().map(str::trim).find(|l| !l.is_empty());
            (
                "Error".into(),
                first.unwrap_or_default().to_owned(),
                traceback,
            )
        }
    }
}

fn write_connection_file(
    path: &Path,
    info: &ConnectionInfo,
    user: Option<&RunAs>,
) -> Result<(), KernelError> {
    let io = |source| KernelError::ConnectionFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_vec(info).expect("connection info serializes");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&text).map_err(io)?;
    }
    if let Some(u) = user {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernelspecs_parse() {
        let k = parse_kernelspec(
            "python3",
            r#"{"argv":["python","-m","ipykernel_launcher","-f","{connection_file}"],
                "display_name":"Python 3 (ipykernel)","language":"python","metadata":{"debugger":true}}"#,
        )
        .unwrap();
        assert_eq!(k.language, "python");
        assert_eq!(k.argv[4], "{connection_file}");
        assert_eq!(k.interrupt_mode, InterruptMode::Signal);
        let b = parse_kernelspec(
            "bash",
            r#"{"argv":["/usr/bin/python3","-m","bash_kernel","-f","{connection_file}"],
                "language":"bash","interrupt_mode":"message","env":{"PS1":"$"}}"#,
        )
        .unwrap();
        assert_eq!(b.interrupt_mode, InterruptMode::Message);
        assert_eq!(b.env["PS1"], "$");
        assert!(parse_kernelspec("x", r#"{"argv":[]}"#).is_none());
        assert!(parse_kernelspec("x", "not json").is_none());
    }

    #[test]
    fn kernelspecs_are_discovered_first_dir_first() {
        let tmp = std::env::temp_dir().join(format!("ci-ks-{}", uuid::Uuid::new_v4().simple()));
        for (dir, name, lang) in [
            ("a", "python3", "python"),
            ("b", "python3", "other"),
            ("b", "bash", "bash"),
        ] {
            let d = tmp.join(dir).join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("kernel.json"),
                format!(r#"{{"argv":["k","{{connection_file}}"],"language":"{lang}"}}"#),
            )
            .unwrap();
        }
        let found = discover(&[tmp.join("a"), tmp.join("b"), tmp.join("missing")]);
        let _ = std::fs::remove_dir_all(&tmp);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "python3");
        assert_eq!(found[0].language, "python");
        assert_eq!(found[1].name, "bash");
        assert_eq!(found[1].resource_dir, Some(tmp.join("b").join("bash")));
    }

    #[test]
    fn errors_printed_on_stderr_are_read_back() {
        let (n, v, tb) = error_from_stderr(
            "TypeError: Cannot read properties of null (reading 'x')\n    at evalmachine.<anonymous>:1:6\n",
        );
        assert_eq!(n, "TypeError");
        assert_eq!(v, "Cannot read properties of null (reading 'x')");
        assert_eq!(tb.len(), 2);
        let (n, v, _) = error_from_stderr(
            "undefined:1\n{\n\nSyntaxError: Unexpected end of JSON input\n    at JSON.parse (<anonymous>)\n",
        );
        assert_eq!(
            (n.as_str(), v.as_str()),
            ("SyntaxError", "Unexpected end of JSON input")
        );
        let (n, v, _) =
            error_from_stderr("\n1:7 - Type 'string' is not assignable to type 'number'.\n");
        assert_eq!(n, "Error");
        assert_eq!(v, "1:7 - Type 'string' is not assignable to type 'number'.");
        assert_eq!(
            error_from_stderr(""),
            ("Error".into(), String::new(), Vec::new())
        );
    }

    #[test]
    fn users_are_looked_up_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n";
        let u = lookup_user(passwd, "user").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, PathBuf::from("/home/user"));
        assert!(lookup_user(passwd, "nobody").is_none());
    }
}

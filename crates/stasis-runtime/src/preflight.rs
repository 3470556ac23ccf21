//! Preflight of a pause: what in a running sandbox CRIU cannot checkpoint, found from
//! the host before anything is frozen, so that the pause is refused at once with a
//! reason that names the process instead of failing (or hanging) inside CRIU.
//!
//! The sandbox's processes are those in the pid namespace of its PID 1 (compared through
//! `/proc/<pid>/ns/pid`). For each thread of each, `/proc/<pid>/task/<tid>/status` gives
//! the name, the pid inside the sandbox (last field of `NSpid`) and the tracer
//! (`TracerPid`); every socket among a process's file descriptors names its protocol in
//! the `system.sockprotoname` attribute (`TCP`, `UNIX-STREAM`, `AF_VSOCK`, ...).
//!
//! What is refused:
//! * a traced thread (strace, gdb, a debugger attached by an IDE): CRIU must be the only
//!   tracer of every task it dumps;
//! * a socket of a protocol CRIU does not checkpoint (anything but unix, inet, inet6,
//!   netlink and packet sockets);
//! * a stopped thread (SIGSTOP, Ctrl-Z), when CRIU will freeze through the cgroup-v1
//!   freezer: the dump would hang in `ptrace_attach` (see `oci::criu_conf`). Under the
//!   cgroup-v2 freezer stopped processes are saved and restored stopped.
//!
//! Processes that exit while they are inspected are skipped: the scan is a snapshot of a
//! running sandbox, and what it cannot see it does not refuse.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Socket protocols (as named by `system.sockprotoname`) that CRIU checkpoints.
pub const SUPPORTED_PROTOCOLS: &[&str] = &[
    "UNIX",
    "UNIX-STREAM",
    "TCP",
    "TCPv6",
    "UDP",
    "UDPv6",
    "UDP-Lite",
    "UDPLITEv6",
    "RAW",
    "RAWv6",
    "PING",
    "PINGv6",
    "NETLINK",
    "PACKET",
];

/// A process of the sandbox, as the sandbox sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The pid inside the sandbox.
    pub pid: i32,
    /// The pid on the host.
    pub host_pid: i32,
    /// The program's name (`comm`).
    pub name: String,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// The freezer CRIU will use for the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freezer {
    /// runc's cgroup-v1 freezer: a stopped process hangs the dump.
    CgroupV1,
    /// The cgroup-v2 freezer (`freeze-cgroup` of `oci::criu_conf`, or a cgroup-v2 host).
    CgroupV2,
}

/// Why a sandbox cannot be paused as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obstacle {
    /// `traced` is traced by `tracer` (`None` if the tracer is outside the sandbox).
    Traced {
        traced: Process,
        tracer: Option<Process>,
    },
    /// `process` is stopped by a signal, and the freezer is cgroup v1.
    Stopped { process: Process },
    /// `process` holds a socket of a protocol CRIU cannot save, at descriptor `fd`.
    Socket {
        process: Process,
        fd: u32,
        protocol: String,
    },
}

impl fmt::Display for Obstacle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obstacle::Traced {
                traced,
                tracer: Some(tracer),
            } => write!(
                f,
                "{tracer} is tracing {traced}: ptraced processes cannot be paused; \
                 stop the tracer and retry"
            ),
            Obstacle::Traced {
                traced,
                tracer: None,
            } => write!(
                f,
                "{traced} is traced from outside the sandbox: ptraced processes cannot be \
                 paused; detach the tracer and retry"
            ),
            Obstacle::Stopped { process } => write!(
                f,
                "{process} is stopped (SIGSTOP or Ctrl-Z), which this host cannot pause; \
                 continue it (kill -CONT {}) or end it, and retry",
                process.pid
            ),
            Obstacle::Socket {
                process,
                fd,
                protocol,
            } => write!(
                f,
                "{process} holds a socket of protocol {protocol} (fd {fd}), which cannot \
                 be saved; close it and retry"
            ),
        }
    }
}

/// Every obstacle found, as one message (`; ` between them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Obstacles(pub Vec<Obstacle>);

impl Obstacles {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Obstacles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

/// A preflight that could not look at the sandbox at all.
#[derive(Debug, Error)]
pub enum PreflightError {
    #[error("cannot read the pid namespace of the sandbox's init (host pid {pid})")]
    Init {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("cannot list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The fields of `/proc/<pid>/status` that the preflight uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    /// `Tgid`: the host pid of the thread's process.
    pub tgid: i32,
    /// The state letter of `State` (`R`, `S`, `T` stopped, `t` traced, `Z`, ...).
    pub state: char,
    /// `TracerPid`, as a host pid (0: not traced).
    pub tracer: i32,
    /// `NSpid`: the pid in each nested pid namespace, outermost first.
    pub ns_pids: Vec<i32>,
}

impl Status {
    /// Parses the text of a `status` file; `None` if a field is missing or malformed.
    pub fn parse(text: &str) -> Option<Status> {
        let (mut name, mut state, mut tgid, mut tracer, mut ns_pids) =
            (None, None, None, None, None);
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key {
                "Name" => name = Some(value.to_owned()),
                "State" => state = value.chars().next(),
                "Tgid" => tgid = value.parse().ok(),
                "TracerPid" => tracer = value.parse().ok(),
                "NSpid" => {
                    ns_pids = value
                        .split_whitespace()
                        .map(str::parse)
                        .collect::<Result<Vec<i32>, _>>()
                        .ok()
                }
                _ => {}
            }
        }
        Some(Status {
            name: name?,
            state: state?,
            tgid: tgid?,
            tracer: tracer?,
            ns_pids: ns_pids.filter(|p| !p.is_empty())?,
        })
    }

    /// The pid inside the innermost pid namespace.
    pub fn inner_pid(&self) -> i32 {
        *self.ns_pids.last().unwrap_or(&0)
    }
}

/// Whether CRIU can checkpoint a socket of this protocol.
pub fn protocol_supported(protocol: &str) -> bool {
    SUPPORTED_PROTOCOLS.contains(&protocol)
}

/// The protocol name of an open socket, from its `system.sockprotoname` attribute.
fn socket_protocol(fd_link: &Path) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(fd_link, "system.sockprotoname", &mut buf).ok()?;
    let name = buf[..n].split(|&b| b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(name).into_owned())
}

fn read_status(path: &Path) -> Option<Status> {
    Status::parse(&fs::read_to_string(path).ok()?)
}

/// Inspects the sandbox whose PID 1 has host pid `init_pid` and returns what would keep
/// CRIU, freezing with `freezer`, from checkpointing it (empty: nothing found).
pub fn check(init_pid: i32, freezer: Freezer) -> Result<Obstacles, PreflightError> {
    check_in(Path::new("/proc"), init_pid, freezer)
}

fn check_in(proc: &Path, init_pid: i32, freezer: Freezer) -> Result<Obstacles, PreflightError> {
    let ns_of = |pid: &str| fs::metadata(proc.join(pid).join("ns/pid")).map(|m| m.ino());
    let ns = ns_of(&init_pid.to_string()).map_err(|source| PreflightError::Init {
        pid: init_pid,
        source,
    })?;
    let entries = fs::read_dir(proc).map_err(|source| PreflightError::List {
        path: proc.to_owned(),
        source,
    })?;
    // Every process of the sandbox, by host pid.
    let mut members: HashMap<i32, Status> = HashMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(host_pid) = name.parse::<i32>() else {
            continue;
        };
        if ns_of(name).ok() != Some(ns) {
            continue;
        }
        if let Some(st) = read_status(&entry.path().join("status")) {
            members.insert(host_pid, st);
        }
    }
    let process = |host_pid: i32, st: &Status| Process {
        pid: st.inner_pid(),
        host_pid,
        name: st.name.clone(),
    };
    let mut pids: Vec<i32> = members.keys().copied().collect();
    pids.sort_unstable();
    let mut found = Vec::new();
    for &host_pid in &pids {
        let dir = proc.join(host_pid.to_string());
        // Threads: a tracer may hold any of them (strace -f, gdb).
        let tasks = fs::read_dir(dir.join("task"))
            .into_iter()
            .flatten()
            .flatten();
        for task in tasks {
            let Some(st) = read_status(&task.path().join("status")) else {
                continue;
            };
            if st.state == 'T' && freezer == Freezer::CgroupV1 {
                let o = Obstacle::Stopped {
                    process: process(host_pid, &members[&host_pid]),
                };
                if !found.contains(&o) {
                    found.push(o);
                }
            }
            if st.tracer == 0 {
                continue;
            }
            // The tracer may be any thread of a process in the sandbox.
            let tracer = read_status(&proc.join(st.tracer.to_string()).join("status"))
                .and_then(|t| members.get_key_value(&t.tgid))
                .map(|(&tgid, t)| process(tgid, t));
            let o = Obstacle::Traced {
                traced: process(host_pid, &members[&host_pid]),
                tracer,
            };
            if !found.contains(&o) {
                found.push(o);
            }
        }
        let fds = fs::read_dir(dir.join("fd")).into_iter().flatten().flatten();
        for fd in fds {
            let path = fd.path();
            let is_socket = fs::read_link(&path)
                .map(|t| t.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false);
            if !is_socket {
                continue;
            }
            let Some(protocol) = socket_protocol(&path) else {
                continue;
            };
            if protocol_supported(&protocol) {
                continue;
            }
            let fd_num = fd.file_name().to_str().and_then(|n| n.parse().ok());
            found.push(Obstacle::Socket {
                process: process(host_pid, &members[&host_pid]),
                fd: fd_num.unwrap_or(u32::MAX),
                protocol,
            });
        }
    }
    Ok(Obstacles(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tstrace\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t2041\n\
        Ngid:\t0\nPid:\t2041\nPPid:\t2040\nTracerPid:\t2039\nUid:\t0\t0\t0\t0\n\
        NSpid:\t2041\t42\nNSpgid:\t2041\t42\n";

    #[test]
    fn status_fields_are_parsed() {
        let st = Status::parse(STATUS).unwrap();
        assert_eq!(st.name, "strace");
        assert_eq!(st.tgid, 2041);
        assert_eq!(st.state, 'S');
        assert_eq!(st.tracer, 2039);
        assert_eq!(st.ns_pids, vec![2041, 42]);
        assert_eq!(st.inner_pid(), 42);
    }

    #[test]
    fn a_status_without_the_needed_fields_is_rejected() {
        assert_eq!(Status::parse(""), None);
        assert_eq!(
            Status::parse("Name:\tx\nState:\tR (running)\nTgid:\t1\nTracerPid:\t0\n"),
            None
        );
        assert_eq!(
            Status::parse("Name:\tx\nState:\tR (running)\nTgid:\t1\nTracerPid:\tbad\nNSpid:\t1\n"),
            None
        );
        assert_eq!(
            Status::parse("Name:\tx\nState:\tR (running)\nTgid:\t1\nTracerPid:\t0\nNSpid:\t\n"),
            None
        );
        // A name with spaces and colons survives.
        let st = Status::parse(
            "State:\tS (sleeping)\nName:\ta: b\nTgid:\t7\nTracerPid:\t0\nNSpid:\t7\n",
        )
        .unwrap();
        assert_eq!((st.name.as_str(), st.inner_pid()), ("a: b", 7));
    }

    #[test]
    fn protocols_criu_cannot_save_are_named() {
        for ok in ["UNIX-STREAM", "UNIX", "TCP", "UDPv6", "NETLINK", "PACKET"] {
            assert!(protocol_supported(ok), "{ok}");
        }
        for bad in ["AF_VSOCK", "ALG", "KEY", "BLUETOOTH", ""] {
            assert!(!protocol_supported(bad), "{bad}");
        }
    }

    #[test]
    fn obstacles_read_as_instructions() {
        let p = |pid, name: &str| Process {
            pid,
            host_pid: pid + 1000,
            name: name.into(),
        };
        let all = Obstacles(vec![
            Obstacle::Traced {
                traced: p(40, "python3"),
                tracer: Some(p(42, "strace")),
            },
            Obstacle::Socket {
                process: p(7, "agent"),
                fd: 5,
                protocol: "AF_VSOCK".into(),
            },
        ]);
        assert_eq!(
            all.to_string(),
            "pid 42 (strace) is tracing pid 40 (python3): ptraced processes cannot be \
             paused; stop the tracer and retry; pid 7 (agent) holds a socket of protocol \
             AF_VSOCK (fd 5), which cannot be saved; close it and retry"
        );
    }

    #[test]
    fn a_missing_init_is_an_error() {
        let dir = std::env::temp_dir().join(format!("preflight-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = check_in(&dir, 4242, Freezer::CgroupV2).unwrap_err();
        let _ = fs::remove_dir_all(&dir);
        assert!(
            matches!(err, PreflightError::Init { pid: 4242, .. }),
            "{err}"
        );
    }

    /// A fake `/proc`: processes share a pid namespace when their `ns/pid` files are
    /// hard links of one file (same inode), as the kernel's are.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "preflight-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("ns")).unwrap();
            fs::write(dir.join("ns/sandbox"), "").unwrap();
            fs::write(dir.join("ns/host"), "").unwrap();
            FakeProc(dir)
        }

        fn process(&self, ns: &str, host: i32, inner: i32, name: &str, threads: &[(i32, i32)]) {
            let d = self.0.join(host.to_string());
            fs::create_dir_all(d.join("ns")).unwrap();
            fs::hard_link(self.0.join("ns").join(ns), d.join("ns/pid")).unwrap();
            let status = |pid: i32, tracer: i32| {
                let state = if tracer < 0 {
                    "T (stopped)"
                } else {
                    "S (sleeping)"
                };
                let tracer = tracer.max(0);
                format!(
                    "Name:\t{name}\nState:\t{state}\nTgid:\t{host}\nPid:\t{pid}\n\
                     TracerPid:\t{tracer}\nNSpid:\t{pid}\t{inner}\n"
                )
            };
            fs::write(d.join("status"), status(host, threads[0].1)).unwrap();
            for &(tid, tracer) in threads {
                let t = d.join("task").join(tid.to_string());
                fs::create_dir_all(&t).unwrap();
                fs::write(t.join("status"), status(tid, tracer)).unwrap();
                if tid != host {
                    // Readable, though not listed, in the real /proc; without `ns` here.
                    let alias = self.0.join(tid.to_string());
                    fs::create_dir_all(&alias).unwrap();
                    fs::write(alias.join("status"), status(tid, tracer)).unwrap();
                }
            }
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn traced_threads_of_the_sandbox_are_found_with_their_tracers() {
        let proc = FakeProc::new();
        proc.process("sandbox", 100, 1, "init", &[(100, 0)]);
        // A traced process whose second thread is traced by strace in the sandbox.
        proc.process("sandbox", 140, 40, "python3", &[(140, 0), (141, 143)]);
        proc.process("sandbox", 142, 42, "strace", &[(142, 0), (143, 0)]);
        // Traced from the host.
        proc.process("sandbox", 150, 50, "node", &[(150, 7)]);
        // A traced process of another namespace is none of this sandbox's business.
        proc.process("host", 160, 160, "gdb-target", &[(160, 7)]);
        // Stopped (a tracer of -1 in this fake): an obstacle only under the v1 freezer.
        proc.process("sandbox", 170, 70, "vim", &[(170, -1)]);
        let found = check_in(&proc.0, 100, Freezer::CgroupV2).unwrap();
        let p = |pid, host_pid, name: &str| Process {
            pid,
            host_pid,
            name: name.into(),
        };
        assert_eq!(
            found.0,
            vec![
                Obstacle::Traced {
                    traced: p(40, 140, "python3"),
                    tracer: Some(p(42, 142, "strace")),
                },
                Obstacle::Traced {
                    traced: p(50, 150, "node"),
                    tracer: None,
                },
            ]
        );
        assert!(check_in(&proc.0, 142, Freezer::CgroupV2).unwrap().0.len() == 2);
        let v1 = check_in(&proc.0, 100, Freezer::CgroupV1).unwrap();
        assert_eq!(v1.0.len(), 3, "{v1}");
        assert_eq!(
            v1.0[2].to_string(),
            "pid 70 (vim) is stopped (SIGSTOP or Ctrl-Z), which this host cannot pause; \
             continue it (kill -CONT 70) or end it, and retry"
        );
    }
}

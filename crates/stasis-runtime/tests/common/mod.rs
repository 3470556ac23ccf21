//! Shared harness of the runtime's end-to-end tests: a real runc + CRIU runtime on a
//! test data dir and bridge, a Python workload inside each sandbox that answers JSON
//! over TCP, and guards that kill sandboxes even when a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stasis_runtime::{
    AgentSpec, NetworkConfig, RuncRuntime, Runtime, RuntimeConfig, RuntimeError, SandboxInfo,
    SandboxSpec,
};
use stasis_types::{Resources, SandboxId};

pub const WORKLOAD: &str = include_str!("workload.py");

/// The data dir of the tests (`STASIS_TEST_DATA_DIR`, default `/var/lib/stasis-test`).
/// `scripts/test.sh` builds the `base` template there first.
pub fn data_dir() -> PathBuf {
    std::env::var_os("STASIS_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/stasis-test"))
}

pub fn config() -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(data_dir(), env!("CARGO_BIN_EXE_stasis-netns-hook"));
    cfg.network = NetworkConfig {
        bridge: "stasist0".into(),
        subnet: Ipv4Addr::new(10, 249, 0, 0),
        prefix: 16,
    };
    cfg
}

/// One runtime per test binary.
pub fn runtime() -> Arc<RuncRuntime> {
    static RT: OnceLock<Arc<RuncRuntime>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = RuncRuntime::new(config()).expect("runtime");
        let base = rt.template_rootfs(&"base".parse().unwrap());
        assert!(
            base.exists(),
            "template `base` missing at {}: run scripts/test.sh, or \
             `stasis template build base --data-dir {}`",
            base.display(),
            data_dir().display()
        );
        Arc::new(rt)
    })
    .clone()
}

/// A sandbox that is killed when the guard drops (also when the test panics).
pub struct Guard {
    pub rt: Arc<RuncRuntime>,
    pub info: SandboxInfo,
}

impl Guard {
    pub fn id(&self) -> &SandboxId {
        &self.info.spec.id
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.info.address, 8080))
    }

    pub fn ask(&self, req: Value) -> Value {
        ask(self.addr(), &req)
    }

    /// Waits until the workload answers.
    pub fn ready(&self) -> Value {
        wait_ready(self.addr())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self.rt.kill(self.id()) {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => eprintln!("cleanup of {} failed: {e:?}", self.id()),
        }
    }
}

pub fn spec_with(resources: Resources) -> SandboxSpec {
    let mut spec = SandboxSpec::new(
        SandboxId::generate(),
        "base".parse().unwrap(),
        AgentSpec {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_stasis-mini-init")),
            args: vec!["python3".into(), "-c".into(), WORKLOAD.into()],
            env: vec![],
        },
    );
    spec.resources = resources;
    spec
}

/// Creates a sandbox running the workload and waits for it to answer.
pub fn create_with(rt: &Arc<RuncRuntime>, resources: Resources) -> Guard {
    let info = rt.create(spec_with(resources)).expect("create");
    let g = Guard {
        rt: rt.clone(),
        info,
    };
    g.ready();
    g
}

pub fn create(rt: &Arc<RuncRuntime>) -> Guard {
    create_with(rt, Resources::default())
}

pub fn try_ask(addr: SocketAddr, req: &Value) -> std::io::Result<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::other(format!("{e}: {line:?}")))
}

pub fn ask(addr: SocketAddr, req: &Value) -> Value {
    try_ask(addr, req).unwrap_or_else(|e| panic!("{addr} did not answer {req}: {e}"))
}

/// Polls until the workload at `addr` answers, for at most 30 s.
pub fn wait_ready(addr: SocketAddr) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_ask(addr, &json!({"op": "get"})) {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{addr} never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Polls `f` until it returns true, for at most `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A data dir of its own (sharing the built template), for tests that need several
/// runtime instances one after another (a runtime locks its data dir). Everything in it
/// is removed on drop, also when the test fails; drop its runtimes first.
pub struct PrivateDir(pub PathBuf);

impl PrivateDir {
    pub fn new() -> Self {
        let dir = data_dir()
            .join("private")
            .join(SandboxId::generate().as_str());
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::os::unix::fs::symlink(
            data_dir().join("templates/base"),
            dir.join("templates/base"),
        )
        .unwrap();
        PrivateDir(dir)
    }

    pub fn config(&self) -> RuntimeConfig {
        let mut cfg = config();
        cfg.data_dir = self.0.clone();
        cfg
    }

    pub fn runtime(&self) -> RuncRuntime {
        RuncRuntime::new(self.config()).expect("runtime")
    }

    /// A runtime whose CRIU always fails.
    pub fn broken_runtime(&self) -> RuncRuntime {
        let mut cfg = self.config();
        cfg.criu = PathBuf::from("/bin/false");
        RuncRuntime::new(cfg).expect("runtime")
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Ok(rt) = RuncRuntime::new(self.config()) {
            if let Ok(all) = rt.adopt() {
                for s in all {
                    let _ = rt.kill(&s.spec.id);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a sandbox running the workload (no guard: the data dir cleans up).
pub fn create_plain(rt: &RuncRuntime) -> SandboxInfo {
    let info = rt.create(spec_with(Resources::default())).expect("create");
    wait_ready(SocketAddr::from((info.address, 8080)));
    info
}

pub fn addr_of(info: &SandboxInfo) -> SocketAddr {
    SocketAddr::from((info.address, 8080))
}

/// Every trace a sandbox can leave on the host, as human-readable findings.
pub fn traces_of(id: &SandboxId) -> Vec<String> {
    traces_in(&data_dir(), id)
}

/// [`traces_of`] for a sandbox of data dir `dd`.
pub fn traces_in(dd: &std::path::Path, id: &SandboxId) -> Vec<String> {
    let mut found = Vec::new();
    for p in [
        dd.join("sandboxes").join(id.as_str()),
        dd.join("snapshots").join(id.as_str()),
        dd.join("runc").join(id.as_str()),
    ] {
        if p.exists() {
            found.push(format!("path {}", p.display()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in mounts.lines().filter(|l| l.contains(id.as_str())) {
        found.push(format!("mount {l}"));
    }
    let veth = stasis_runtime::net::host_if_name(id);
    if std::path::Path::new("/sys/class/net").join(&veth).exists() {
        found.push(format!("link {veth}"));
    }
    // Container cgroups in every hierarchy, and ops groups of any data dir.
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = h.path().join("stasis").join(id.as_str());
        if p.exists() {
            found.push(format!("cgroup {}", p.display()));
        }
        if let Ok(keys) = std::fs::read_dir(h.path().join("stasis-ops")) {
            for k in keys.flatten() {
                if k.path().join(id.as_str()).exists() {
                    found.push(format!(
                        "ops cgroup {}",
                        k.path().join(id.as_str()).display()
                    ));
                }
            }
        }
    }
    // Processes whose cgroup is the sandbox's.
    let needle = format!("/stasis/{id}");
    for pr in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cg) = std::fs::read_to_string(pr.path().join("cgroup")) {
            if cg.lines().any(|l| l.ends_with(&needle)) {
                found.push(format!("process {}", pr.file_name().to_string_lossy()));
            }
        }
    }
    // Leases naming it.
    for pool in std::fs::read_dir("/run/stasis/leases")
        .into_iter()
        .flatten()
        .flatten()
    {
        for lease in std::fs::read_dir(pool.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_to_string(lease.path())
                .is_ok_and(|t| t.lines().nth(1) == Some(id.as_str()))
            {
                found.push(format!("lease {}", lease.path().display()));
            }
        }
    }
    found
}

pub const LAB: &str = include_str!("lab.py");

/// A spec whose workload is the lab (`lab.py`): Python snippets run in one namespace.
pub fn lab_spec(resources: Resources) -> SandboxSpec {
    let mut spec = spec_with(resources);
    spec.agent.args = vec!["python3".into(), "-c".into(), LAB.into()];
    spec
}

/// Creates a sandbox running the lab and waits for it to answer.
pub fn create_lab(rt: &Arc<RuncRuntime>, resources: Resources) -> Guard {
    let info = rt.create(lab_spec(resources)).expect("create");
    let g = Guard {
        rt: rt.clone(),
        info,
    };
    g.ready();
    g
}

impl Guard {
    /// Runs a Python snippet in the lab; its answer is what it assigned to `result`.
    pub fn try_exec(&self, code: &str) -> Result<Value, String> {
        let v = try_ask(self.addr(), &json!({"op": "exec", "code": code}))
            .map_err(|e| format!("no answer: {e}"))?;
        match v.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(v["result"].clone()),
        }
    }

    /// Runs a Python snippet in the lab and panics if it raised.
    pub fn exec(&self, code: &str) -> Value {
        self.try_exec(code)
            .unwrap_or_else(|e| panic!("snippet failed in {}:\n{code}\n{e}", self.id()))
    }

    /// The host pid of the sandbox's PID 1.
    pub fn init_pid(&self) -> i32 {
        match self.rt.info(self.id()).expect("info").state {
            stasis_runtime::SandboxState::Running { pid } => pid as i32,
            other => panic!("{} is not running: {other:?}", self.id()),
        }
    }
}

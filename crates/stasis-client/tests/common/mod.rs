//! Test harness: a real Stasis server (real runtime, real agent) in-process on
//! `127.0.0.1:0`, with a data dir of its own that is cleaned up on drop, also when a
//! test fails. Shared by the SDK tests and the CLI tests (`#[path]` include).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use stasis_runtime::{NetworkConfig, RuncRuntime, Runtime, RuntimeConfig};
use stasis_server::{Server, ServerConfig};
use tokio::sync::oneshot;

pub const API_KEY: &str = "e2b_00000000000000000000000000000000000000cc";

/// The shared test data dir with the built templates (scripts/test.sh builds `base`).
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os("STASIS_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/stasis-test"))
}

/// `target/<profile>`: tests run from `target/<profile>/deps/<test>-<hash>`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

pub fn network() -> NetworkConfig {
    NetworkConfig {
        bridge: "stasist0".into(),
        subnet: Ipv4Addr::new(10, 249, 0, 0),
        prefix: 16,
    }
}

/// A data dir of its own for one test's server, sharing every built template.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let shared = shared_data_dir();
        let dir = shared
            .join("servers")
            .join(stasis_types::SandboxId::generate().as_str());
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        assert!(
            shared.join("templates/base/rootfs").exists(),
            "template base missing in {}: run scripts/test.sh",
            shared.display()
        );
        for t in std::fs::read_dir(shared.join("templates"))
            .unwrap()
            .flatten()
        {
            if t.path().join("rootfs").exists() {
                std::os::unix::fs::symlink(t.path(), dir.join("templates").join(t.file_name()))
                    .unwrap();
            }
        }
        DataDir(dir)
    }

    pub fn config(&self) -> ServerConfig {
        let mut cfg = ServerConfig::new(&self.0, API_KEY.into(), &target_dir());
        cfg.network = network();
        cfg.allow_internet = false;
        assert!(
            cfg.envd_binary.exists(),
            "{} missing: build the workspace first (cargo build --workspace)",
            cfg.envd_binary.display()
        );
        cfg
    }
}

impl Drop for DataDir {
    /// Removes every sandbox of this data dir, then the dir.
    fn drop(&mut self) {
        let mut rc = RuntimeConfig::new(&self.0, target_dir().join("stasis-netns-hook"));
        rc.network = network();
        if let Ok(rt) = RuncRuntime::new(rc) {
            if let Ok(all) = rt.adopt() {
                for s in all {
                    let _ = rt.kill(&s.spec.id);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server serving on `127.0.0.1:0` until dropped. Declare it after its [`DataDir`]
/// so that it stops first.
pub struct TestServer {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(dir: &DataDir) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::start(dir.config()).await.expect("server start");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            url: format!("http://{addr}"),
            stop: Some(tx),
        }
    }

    /// The SDK configuration for this server.
    pub fn config(&self) -> stasis_client::ConnectionConfig {
        stasis_client::ConnectionConfig::new(&self.url, API_KEY)
    }

    pub fn client(&self) -> stasis_client::Client {
        stasis_client::Client::new(self.config()).unwrap()
    }

    /// Environment for a child process talking to this server (and nothing else).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STASIS_API_URL", self.url.clone()),
            ("STASIS_SANDBOX_URL", self.url.clone()),
            ("STASIS_API_KEY", API_KEY.to_owned()),
        ]
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Runs a program with this server's environment (E2B_* and STASIS_* of the test
/// process removed); returns (exit code, stdout, stderr).
pub async fn run_program(
    program: &std::path::Path,
    args: &[&str],
    env: &[(&'static str, String)],
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("E2B_") || k.starts_with("STASIS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish in 300 s", program.display()))
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

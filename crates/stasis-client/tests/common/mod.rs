//! Test harness: a real Stasis server (real runtime, real agent) in-process from
//! `stasis_server::testing`, with a data dir of its own that is cleaned up on drop, also
//! when a test fails. Shared by the SDK tests and the CLI tests (`#[path]` include).
#![allow(dead_code)]

use stasis_server::testing::Serving;
pub use stasis_server::testing::{DataDir, API_KEY};

/// A server serving on `127.0.0.1:0` until dropped. Declare it after its [`DataDir`]
/// so that it stops first.
pub struct TestServer {
    pub url: String,
    _serving: Serving,
}

impl TestServer {
    pub async fn start(dir: &DataDir) -> TestServer {
        let serving = Serving::start(dir.config()).await;
        TestServer {
            url: serving.url.clone(),
            _serving: serving,
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

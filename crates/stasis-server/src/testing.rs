//! Harness for tests and benchmarks that run a real server in-process (feature
//! `testing`): a data dir of its own under the shared test data dir, sharing the
//! templates built there and removed with every sandbox in it on drop (also when a
//! test fails), and a server on `127.0.0.1:0` until stopped or dropped.
//!
//! The shared test data dir is `STASIS_TEST_DATA_DIR` (default `/var/lib/stasis-test`),
//! where `scripts/test.sh` builds the templates; the test bridge is `stasist0` on
//! `10.249.0.0/16`, apart from the default server's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use stasis_runtime::{NetworkConfig, RuncRuntime, Runtime, RuntimeConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Server, ServerConfig};

/// The API key of test servers.
pub const API_KEY: &str = "e2b_00000000000000000000000000000000000000aa";

/// The shared test data dir with the built templates.
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os("STASIS_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/stasis-test"))
}

/// Where `stasis-envd` and `stasis-netns-hook` are: `STASIS_TEST_BIN_DIR`, else
/// `target/<profile>` (tests and benchmarks run from `target/<profile>/deps`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STASIS_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<exe>")
        .to_owned()
}

/// The test bridge and subnet.
pub fn network() -> NetworkConfig {
    NetworkConfig {
        bridge: "stasist0".into(),
        subnet: Ipv4Addr::new(10, 249, 0, 0),
        prefix: 16,
    }
}

/// Whether template `name` is built in the shared test data dir.
pub fn template_built(name: &str) -> bool {
    shared_data_dir()
        .join("templates")
        .join(name)
        .join("rootfs")
        .exists()
}

/// A data dir of its own for one server, under `<shared>/servers/`, with every template
/// built in the shared dir linked in.
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// A new data dir. Panics, saying what to run, when template `base` is not built.
    pub fn new() -> Self {
        let shared = shared_data_dir();
        assert!(
            template_built("base"),
            "template base missing in {}: run scripts/test.sh",
            shared.display()
        );
        let dir = shared
            .join("servers")
            .join(stasis_types::SandboxId::generate().as_str());
        std::fs::create_dir_all(dir.join("templates")).expect("create the data dir");
        let templates = std::fs::read_dir(shared.join("templates")).expect("read templates");
        for t in templates.flatten() {
            if t.path().join("rootfs").exists() {
                std::os::unix::fs::symlink(t.path(), dir.join("templates").join(t.file_name()))
                    .expect("link a template");
            }
        }
        DataDir(dir)
    }

    /// A server configuration on this dir: test key, test network, no internet.
    pub fn config(&self) -> ServerConfig {
        let mut cfg = ServerConfig::new(&self.0, API_KEY.into(), &bin_dir());
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

impl Default for DataDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DataDir {
    /// Kills every sandbox of this data dir, then removes the dir. Stop its server
    /// first (declare the server after the dir): a runtime locks its data dir.
    fn drop(&mut self) {
        let mut rc = RuntimeConfig::new(&self.0, bin_dir().join("stasis-netns-hook"));
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

/// A server serving on `127.0.0.1:0` until [`Serving::stop`] or drop. Sandboxes keep
/// running when it stops, as after a crash; the [`DataDir`] removes them.
pub struct Serving {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Serving {
    /// Starts a server with `cfg` (adopting what its data dir holds).
    pub async fn start(cfg: ServerConfig) -> Serving {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let server = Server::start(cfg).await.expect("server start");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Serving {
            url: format!("http://{addr}"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and waits (up to 10 s) until the server has let go of its data dir.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

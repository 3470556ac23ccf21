//! stasis-envd: the in-sandbox agent, wire-compatible with E2B's envd.
//!
//! It runs as PID 1 of a sandbox and serves, on one HTTP/1.1 listener (default
//! `0.0.0.0:49983`):
//!
//! * `process.Process` and `filesystem.Filesystem` over Connect (JSON codec);
//! * `GET /health`, `GET /envs`, `GET /metrics`, `POST /init`, `GET`/`POST /files`.
//!
//! Everything lives in this process's memory and every descriptor is an ordinary
//! epoll-driven one, so the agent can be checkpointed and restored by CRIU with the
//! rest of the sandbox. [`serve`] is the whole server, with an injectable listener and
//! shutdown, so tests run it in-process.
#![deny(unsafe_code)] // `forbid` everywhere but `sys`, the one audited corner

pub mod auth;
pub mod code_interpreter;
pub mod connect;
pub mod fdio;
pub mod files;
pub mod fsys;
pub mod misc;
pub mod paths;
pub mod pid1;
pub mod process;
#[allow(unsafe_code)]
pub mod sys;
pub mod users;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use stasis_envd_proto::http::HttpError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use process::reaper::ReapMode;
pub use stasis_envd_proto::ENVD_VERSION;

/// Size limits for untrusted input.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest unary request body or streaming request envelope.
    pub max_message: usize,
    /// Largest `/files` upload (after gzip decoding).
    pub max_upload: u64,
    /// Most entries one `ListDir` returns.
    pub max_list_entries: usize,
    /// Most concurrent `CreateWatcher` watchers.
    pub max_watchers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 16 << 20,
            max_upload: 16 << 30,
            max_list_entries: 100_000,
            max_watchers: 128,
        }
    }
}

/// Startup configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Required `X-Access-Token`; `None` leaves the agent open (until `/init` sets one).
    pub access_token: Option<String>,
    /// User for requests that name none (`root` is used if it does not exist).
    pub default_user: String,
    /// Working directory for processes that name none (else the user's home).
    pub default_workdir: Option<PathBuf>,
    /// Sandbox-wide environment variables for every process.
    pub env_vars: BTreeMap<String, String>,
    /// Directory holding `passwd` and `group`.
    pub etc_dir: PathBuf,
    /// Which children the reaper collects.
    pub reap: ReapMode,
    /// Input limits.
    pub limits: Limits,
    /// A code interpreter to run and keep running as a child (`None`: none).
    pub code_interpreter: Option<code_interpreter::Launch>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            access_token: None,
            default_user: "user".into(),
            default_workdir: None,
            env_vars: BTreeMap::new(),
            etc_dir: "/etc".into(),
            reap: ReapMode::Own,
            limits: Limits::default(),
            code_interpreter: None,
        }
    }
}

/// Settings `/init` may change at run time.
#[derive(Debug, Clone)]
pub struct Dynamic {
    /// Current access token.
    pub access_token: Option<String>,
    /// Sandbox-wide env vars.
    pub env_vars: BTreeMap<String, String>,
    /// Default user name.
    pub default_user: String,
    /// Default working directory.
    pub default_workdir: Option<PathBuf>,
    /// Newest `/init` timestamp applied.
    pub last_init: Option<SystemTime>,
}

/// State shared by all handlers.
pub struct Shared {
    dynamic: RwLock<Dynamic>,
    /// Account files.
    pub accounts: users::Accounts,
    /// Processes.
    pub procs: Arc<process::ProcessManager>,
    /// `CreateWatcher` watchers.
    pub watchers: fsys::watch::Registry,
    /// Input limits.
    pub limits: Limits,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// The code interpreter the agent supervises.
    pub code_interpreter: Option<code_interpreter::Launch>,
    /// A random credential the agent gives only to the services it starts (the code
    /// interpreter), accepted like the access token.
    pub internal_token: String,
}

impl Shared {
    /// Reads the run-time settings.
    pub fn dynamic(&self) -> RwLockReadGuard<'_, Dynamic> {
        self.dynamic.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the run-time settings.
    pub fn dynamic_mut(&self) -> RwLockWriteGuard<'_, Dynamic> {
        self.dynamic.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle given to every handler.
pub type AppState = Arc<Shared>;

/// A plain-HTTP error: `{"code": status, "message": …}`.
pub fn http_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(HttpError {
            code: status.as_u16(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// Builds the shared state (and its reaper) from a config.
pub fn state(config: Config) -> AppState {
    let reaper = process::reaper::Reaper::new(config.reap);
    Arc::new(Shared {
        dynamic: RwLock::new(Dynamic {
            access_token: config.access_token.filter(|t| !t.is_empty()),
            env_vars: config.env_vars,
            default_user: config.default_user,
            default_workdir: config.default_workdir,
            last_init: None,
        }),
        accounts: users::Accounts::new(config.etc_dir),
        procs: process::ProcessManager::new(reaper),
        watchers: fsys::watch::Registry::default(),
        limits: config.limits,
        shutdown: CancellationToken::new(),
        code_interpreter: config.code_interpreter,
        internal_token: random_token(),
    })
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The API's table of contents.
pub fn router(state: AppState) -> Router {
    use fsys::rpc as fs;
    use process::rpc as p;
    let max_upload = usize::try_from(state.limits.max_upload).unwrap_or(usize::MAX);
    Router::new()
        .route("/health", get(misc::health))
        .route("/envs", get(misc::envs))
        .route("/metrics", get(misc::metrics))
        .route("/init", post(misc::init))
        .route("/version", get(misc::version))
        .route(
            "/files",
            get(files::download)
                .post(files::upload)
                .layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/process.Process/Start", post(p::start))
        .route("/process.Process/Connect", post(p::connect))
        .route("/process.Process/List", post(p::list))
        .route("/process.Process/SendInput", post(p::send_input))
        .route("/process.Process/StreamInput", post(p::stream_input))
        .route("/process.Process/CloseStdin", post(p::close_stdin))
        .route("/process.Process/SendSignal", post(p::send_signal))
        .route("/process.Process/Update", post(p::update))
        .route("/filesystem.Filesystem/Stat", post(fs::stat))
        .route("/filesystem.Filesystem/MakeDir", post(fs::make_dir))
        .route("/filesystem.Filesystem/Move", post(fs::move_entry))
        .route("/filesystem.Filesystem/ListDir", post(fs::list_dir))
        .route("/filesystem.Filesystem/Remove", post(fs::remove))
        .route("/filesystem.Filesystem/WatchDir", post(fs::watch_dir))
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(fs::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(fs::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(fs::remove_watcher),
        )
        .fallback(|| async { http_error(StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(stasis_http::finish_request_body))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops streams, kills every process it
/// started and returns.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = state(config);
    serve_state(listener, state, shutdown).await
}

/// [`serve`] with prebuilt state.
pub async fn serve_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = state.shutdown.clone();
    let reaper = tokio::spawn(state.procs.reaper().clone().run(stop.clone()));
    let interpreter = state.code_interpreter.clone().map(|launch| {
        tokio::spawn(code_interpreter::supervise(
            state.procs.reaper().clone(),
            launch,
            state.internal_token.clone(),
            stop.clone(),
        ))
    });
    tracing::info!(addr = ?listener.local_addr().ok(), version = ENVD_VERSION, "envd listening");
    let app = router(state.clone());
    let stop2 = stop.clone();
    let graceful = async move {
        shutdown.await;
        stop2.cancel();
    };
    // Streams are many small writes (start, data, end, end-stream): without NODELAY,
    // Nagle plus the client's delayed ACK adds ~40 ms per call.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    // Streams end at shutdown; a client stuck mid-request gets 5 s before we stop waiting.
    let result = tokio::select! {
        r = server => r,
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => Ok(()),
    };
    stop.cancel();
    state.procs.kill_all();
    for _ in 0..20 {
        state.procs.reaper().reap();
        if state.procs.list().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if let Some(i) = interpreter {
        let _ = i.await;
    }
    let _ = reaper.await;
    result
}

//! stasis-code-interpreter: the E2B code-interpreter service (port 49999) on real
//! Jupyter kernels.
//!
//! The agent (`stasis-envd`, PID 1) runs it as `stasis-envd code-interpreter` when the
//! template has kernelspecs, so the service and its kernels are the agent's descendants
//! and a pause checkpoints them with everything else. Kernels are spoken to over the
//! Jupyter messaging protocol (`jupyter-zmq-client`, pure-Rust ZeroMQ over TCP
//! loopback); each execution becomes an NDJSON stream (e2b-compat §5):
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | `"OK"`, open |
//! | `POST /execute` | runs code in a context, streams NDJSON lines |
//! | `POST /contexts`, `GET /contexts` | create (language, cwd), list |
//! | `DELETE /contexts/{id}`, `POST /contexts/{id}/restart` | remove, fresh kernel |
//!
//! Every route but `/health` needs the sandbox's `X-Access-Token` when one is set:
//! envd's `/envs` checks it and gives the sandbox-wide environment in one call.
#![forbid(unsafe_code)]

pub mod contexts;
pub mod envd;
pub mod kernel;
pub mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use contexts::{ContextError, Contexts, KernelDefaults};
use envd::{Envd, EnvdError};
use wire::{CreateContext, ExecuteRequest};

/// The code interpreter's port inside every sandbox.
pub const PORT: u16 = 49999;

/// Startup configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// envd's base URL (`http://127.0.0.1:49983`); `None`: no token check, no env.
    pub envd_url: Option<String>,
    /// A credential envd gave this service (env `STASIS_ENVD_INTERNAL_TOKEN`), used to
    /// read the environment for requests that carry no access token: the SDKs send
    /// `X-Access-Token` on `/execute` only, not on `/contexts`.
    pub internal_token: Option<String>,
    /// Kernelspec directories.
    pub kernel_dirs: Vec<PathBuf>,
    /// Account kernels run as (`None`: as this process, root in a sandbox, as in E2B).
    pub user: Option<kernel::RunAs>,
    /// Working directory of contexts that name none.
    pub default_cwd: PathBuf,
    /// Where connection files go.
    pub runtime_dir: PathBuf,
    /// Create the default python and javascript contexts at start (as E2B does), so
    /// they are listed from the start and their kernels are up when first used.
    pub default_contexts: bool,
}

impl Config {
    /// The settings for a sandbox: envd on loopback, kernels as this process (root, as
    /// in E2B), contexts by default in the home of `user` (from `/etc/passwd`, else `/`).
    pub fn for_sandbox(user: &str) -> Self {
        let default_cwd = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| kernel::lookup_user(&p, user))
            .map(|u| u.home)
            .unwrap_or_else(|| "/".into());
        Config {
            envd_url: Some("http://127.0.0.1:49983".into()),
            internal_token: None,
            kernel_dirs: kernel::default_dirs(),
            user: None,
            default_cwd,
            runtime_dir: "/run/stasis-kernels".into(),
            default_contexts: true,
        }
    }
}

/// Whether any kernelspec is installed under `dirs` (the agent's test for starting us).
pub fn kernels_installed(dirs: &[PathBuf]) -> bool {
    !kernel::discover(dirs).is_empty()
}

/// State shared by the handlers.
pub struct Service {
    pub contexts: Contexts,
    envd: Envd,
}

type AppState = Arc<Service>;

/// Errors at the HTTP edge: plain text bodies, as the real service.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    Envd(#[from] EnvdError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Envd(EnvdError::Unauthorized) => StatusCode::UNAUTHORIZED,
            ApiError::Envd(EnvdError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Context(ContextError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Context(ContextError::NoKernel { .. })
            | ApiError::Context(ContextError::BadEnvName(_))
            | ApiError::Context(ContextError::NoEnvSupport(_))
            | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Context(ContextError::Kernel(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let text = match &self {
            ApiError::Envd(EnvdError::Unauthorized) => "Unauthorized".to_owned(),
            other => other.to_string(),
        };
        if status.is_server_error() {
            tracing::warn!(%status, error = %text, "request failed");
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response()
    }
}

fn token(h: &HeaderMap) -> Option<&str> {
    h.get("x-access-token").and_then(|v| v.to_str().ok())
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))
}

async fn health() -> Json<&'static str> {
    Json("OK")
}

async fn execute(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let sandbox_env = s.envd.envs(token(&headers)).await?;
    let req: ExecuteRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    let ctx = match (&req.context_id, &req.language) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "only one of context_id and language may be given".into(),
            ))
        }
        (Some(id), None) => s.contexts.get(id)?,
        (None, lang) => {
            s.contexts
                .default_for(lang.as_deref(), &sandbox_env)
                .await?
        }
    };
    let request_env = req.env_vars.unwrap_or_default();
    Contexts::check_env(&ctx, &request_env)?;
    let (tx, rx) = mpsc::channel(64);
    let svc = s.clone();
    tokio::spawn(async move {
        svc.contexts
            .run(ctx, req.code, request_env, sandbox_env, tx)
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|l| (Ok::<_, std::io::Error>(l.to_ndjson()), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream.boxed()),
    )
        .into_response())
}

async fn create_context(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Json<wire::ContextInfo>, ApiError> {
    let env = s.envd.envs_or_internal(token(&headers)).await?;
    let req: CreateContext = json_body(&body)?;
    let ctx = s
        .contexts
        .create(req.language.as_deref(), req.cwd.as_deref(), &env)
        .await?;
    Ok(Json(ctx.info.clone()))
}

async fn list_contexts(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<wire::ContextInfo>>, ApiError> {
    s.envd.envs_or_internal(token(&headers)).await?;
    Ok(Json(s.contexts.list()))
}

async fn delete_context(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.envd.envs_or_internal(token(&headers)).await?;
    s.contexts.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_context(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let env = s.envd.envs_or_internal(token(&headers)).await?;
    s.contexts.restart(&id, &env).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The API's table of contents.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/execute", post(execute))
        .route("/contexts", post(create_context).get(list_contexts))
        .route("/contexts/{id}", delete(delete_context))
        .route("/contexts/{id}/restart", post(restart_context))
        .with_state(state)
}

/// Builds the service from a config (no kernel started yet).
pub fn service(config: &Config) -> AppState {
    let specs = kernel::discover(&config.kernel_dirs);
    tracing::info!(kernels = ?specs.iter().map(|k| &k.name).collect::<Vec<_>>(), "kernelspecs");
    Arc::new(Service {
        contexts: Contexts::new(KernelDefaults {
            specs,
            user: config.user.clone(),
            default_cwd: config.default_cwd.clone(),
            runtime_dir: config.runtime_dir.clone(),
        }),
        envd: Envd::new(config.envd_url.clone(), config.internal_token.clone()),
    })
}

/// Serves until `shutdown` resolves; every kernel is killed when the service drops.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = service(&config);
    if config.default_contexts {
        // Listed before the first request; their kernels boot in the background, so
        // /health answers at once and a first runCode waits only for what is left of
        // its kernel's boot.
        let booting = state.contexts.register_defaults(&BTreeMap::new()).await;
        let s = state.clone();
        tokio::spawn(async move { s.contexts.boot(booting).await });
    }
    tracing::info!(addr = ?listener.local_addr().ok(), "code interpreter listening");
    let app = router(state);
    // NDJSON lines are small writes: without NODELAY, Nagle plus the client's delayed
    // ACK adds ~40 ms to every execution.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

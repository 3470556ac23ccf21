//! The Stasis server: one listener for E2B's control API and for sandbox traffic.
//!
//! * [`api`] — the control-plane endpoints (create, connect, pause, kill, list, …);
//! * [`proxy`] — routes everything else to a port inside a sandbox;
//! * [`supervisor`] — one owner task per sandbox; [`lifecycle`] — its state machine;
//! * [`store`] — the SQLite catalog as the supervisor's persistence;
//! * [`envd`] — the host side of the agent protocol.
//!
//! The server is a library: [`Server::start`] reconciles the catalog with the runtime,
//! [`Server::router`] is the table of contents of the API, and [`Server::serve`] takes
//! any bound listener and a shutdown future, so tests bind `127.0.0.1:0`.
#![forbid(unsafe_code)]

pub mod api;
pub mod envd;
pub mod keys;
pub mod lifecycle;
pub mod proxy;
pub mod store;
pub mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhooks;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use stasis_catalog::Catalog;
use stasis_e2b_api as wire;
use stasis_runtime::{template, NetworkConfig, RuncRuntime, Runtime, RuntimeConfig};
use stasis_types::Resources;
use tokio::net::TcpListener;
use tracing::info;

use crate::supervisor::{Supervisor, SupervisorConfig};

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api_key: String,
    /// The agent run as PID 1 of every sandbox.
    pub envd_binary: PathBuf,
    /// The runtime's network hook.
    pub hook_binary: PathBuf,
    pub network: NetworkConfig,
    /// Whether sandboxes may reach beyond the host when they ask for it.
    pub allow_internet: bool,
    pub ready_timeout: Duration,
    pub resources: Resources,
}

impl ServerConfig {
    /// Defaults for a data dir and the binaries installed next to `exe_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, api_key: String, exe_dir: &std::path::Path) -> Self {
        Self {
            data_dir: data_dir.into(),
            api_key,
            envd_binary: exe_dir.join("stasis-envd"),
            hook_binary: exe_dir.join("stasis-netns-hook"),
            network: NetworkConfig::default(),
            allow_internet: true,
            ready_timeout: Duration::from_secs(30),
            resources: Resources::default(),
        }
    }
}

/// Shared state of the handlers.
pub struct AppState {
    pub sup: Supervisor,
    pub webhooks: Arc<webhooks::Webhooks>,
    pub catalog: Arc<Catalog>,
    pub api_key: String,
    pub templates: Vec<wire::Template>,
    pub allow_internet: bool,
}

/// A started server: reconciled and ready to serve.
pub struct Server {
    state: Arc<AppState>,
}

/// The templates this server can create sandboxes from: every built recipe, by name
/// and alias.
type Templates = (
    BTreeMap<String, String>,
    BTreeMap<String, Vec<u16>>,
    Vec<wire::Template>,
);

fn available_templates(data_dir: &std::path::Path) -> Templates {
    let mut names = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let mut list = Vec::new();
    for r in template::RECIPES {
        let name: stasis_types::TemplateName = r.name.parse().expect("recipe names are valid");
        if !template::rootfs_path(data_dir, &name).exists() {
            continue;
        }
        names.insert(r.name.to_owned(), r.name.to_owned());
        ports.insert(r.name.to_owned(), r.ready_ports.to_vec());
        for a in r.aliases {
            names.insert((*a).to_owned(), r.name.to_owned());
        }
        list.push(store::template_body(r));
    }
    (names, ports, list)
}

impl Server {
    /// Opens the data dir (runtime, catalog), reconciles them and starts an owner for
    /// every sandbox found.
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<Server> {
        let mut rcfg = RuntimeConfig::new(&cfg.data_dir, &cfg.hook_binary);
        rcfg.network = cfg.network.clone();
        let runtime = tokio::task::spawn_blocking(move || RuncRuntime::new(rcfg))
            .await?
            .context("starting the sandbox runtime")?;
        Self::start_with(cfg, Arc::new(runtime)).await
    }

    /// Like [`Server::start`] with a given runtime.
    pub async fn start_with(
        cfg: ServerConfig,
        runtime: Arc<dyn Runtime>,
    ) -> anyhow::Result<Server> {
        anyhow::ensure!(
            cfg.envd_binary.is_file(),
            "the agent binary {} does not exist; build it with `cargo build --release -p stasis-envd`",
            cfg.envd_binary.display()
        );
        let db = cfg.data_dir.join("catalog.db");
        let catalog = Arc::new(
            Catalog::open(&db).with_context(|| format!("opening the catalog {}", db.display()))?,
        );
        let (names, ready_ports, templates) = available_templates(&cfg.data_dir);
        let scfg = SupervisorConfig {
            envd_binary: cfg.envd_binary.clone(),
            ready_timeout: cfg.ready_timeout,
            templates: names,
            ready_ports,
            default_resources: cfg.resources,
            disk_size_mb: 10 * 1024,
            client_id: "stasis".into(),
        };
        let hooks = webhooks::Webhooks::open(&cfg.data_dir)?;
        let store = Arc::new(store::CatalogStore::new(catalog.clone(), hooks.clone()));
        let sup = Supervisor::start(scfg, runtime, store).await?;
        Ok(Server {
            state: Arc::new(AppState {
                sup,
                webhooks: hooks,
                catalog,
                api_key: cfg.api_key.clone(),
                templates,
                allow_internet: cfg.allow_internet,
            }),
        })
    }

    /// The supervisor (for tests and embedding).
    pub fn supervisor(&self) -> &Supervisor {
        &self.state.sup
    }

    /// The HTTP application: control routes first, everything else to the proxy.
    pub fn router(&self) -> Router {
        let st = self.state.clone();
        let control = Router::new()
            .route("/sandboxes", post(api::create).get(api::list_legacy))
            .route("/v2/sandboxes", post(api::create).get(api::list_v2))
            .route("/sandboxes/{id}", get(api::info).delete(api::kill))
            .route("/sandboxes/{id}/connect", post(api::connect))
            .route("/v2/sandboxes/{id}/connect", post(api::connect))
            .route("/sandboxes/{id}/resume", post(api::resume))
            .route("/sandboxes/{id}/pause", post(api::pause))
            .route("/sandboxes/{id}/timeout", post(api::set_timeout))
            .route("/sandboxes/{id}/refreshes", post(api::refresh))
            .route("/sandboxes/{id}/metrics", get(api::metrics))
            .route("/sandboxes/{id}/fork", post(api::fork))
            .route(
                "/sandboxes/{id}/network",
                axum::routing::put(api::set_network),
            )
            .route("/templates", get(api::templates))
            .route(
                "/events/webhooks",
                get(api::list_webhooks).post(api::create_webhook),
            )
            .route(
                "/events/webhooks/{id}",
                get(api::get_webhook)
                    .patch(api::update_webhook)
                    .delete(api::delete_webhook),
            )
            .route("/events/sandboxes/{id}", get(api::sandbox_events))
            .route_layer(middleware::from_fn_with_state(
                st.clone(),
                api::require_api_key,
            ));
        Router::new()
            .merge(control)
            .merge(stasis_dashboard::router(&st.catalog, &st.api_key))
            .fallback(dispatch)
            .layer(middleware::from_fn(stasis_http::finish_request_body))
            .with_state(st)
    }

    /// Serves on `listener` until `shutdown` completes. Sandboxes keep running after the
    /// server stops; the next start adopts them.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let addr = listener.local_addr()?;
        info!(%addr, "serving");
        // Streams (command output, NDJSON results) are many small writes: without
        // TCP_NODELAY each would wait for the client's delayed ACK (~40 ms).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        self.state.sup.shutdown();
        served
    }
}

/// Control-plane path prefixes: never proxied, whatever the headers say.
const CONTROL_PREFIXES: &[&str] = &[
    "/sandboxes",
    "/v2/",
    "/templates",
    "/snapshots",
    "/volumes",
    "/secrets",
    "/teams",
    "/api-keys",
];

fn identifies_sandbox(req: &Request<Body>) -> bool {
    let h = req.headers();
    h.contains_key("e2b-sandbox-id")
        || h.contains_key("x-access-token")
        || h.get("host")
            .and_then(|v| v.to_str().ok())
            .and_then(|host| host.split('.').next())
            .and_then(|first| first.split_once('-'))
            .is_some_and(|(p, _)| p.parse::<u16>().is_ok())
}

async fn dispatch(State(st): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let path = req.uri().path();
    if CONTROL_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return api::ApiError(wire::ErrorBody::new(
            404,
            format!("no such endpoint: {} {}", req.method(), path),
        ))
        .into_response();
    }
    if path == "/health" && !identifies_sandbox(&req) {
        return (axum::http::StatusCode::OK, "ok").into_response();
    }
    proxy::forward(&st.sup, req).await
}

impl AppState {
    /// One page of `GET /v2/sandboxes` from the catalog, with live deadlines.
    pub async fn list(&self, q: &wire::ListQuery) -> Result<api::Page, api::ApiError> {
        let (filter, page) = store::list_request(q);
        let catalog = self.catalog.clone();
        let result = tokio::task::spawn_blocking(move || {
            let p = catalog.list(&filter, &page)?;
            let running = catalog
                .count_by_state()?
                .get(&stasis_catalog::CatalogState::Running)
                .copied()
                .unwrap_or(0);
            Ok::<_, stasis_catalog::CatalogError>((p, running))
        })
        .await
        .map_err(|e| api::ApiError(wire::ErrorBody::internal(e.to_string())))?;
        let (p, running) = result.map_err(|e| match e {
            stasis_catalog::CatalogError::InvalidPageToken { .. } => {
                api::ApiError(wire::ErrorBody::bad_request(api::error_chain(&e)))
            }
            other => api::ApiError(wire::ErrorBody::internal(api::error_chain(&other))),
        })?;
        let items = p
            .items
            .iter()
            .map(|r| {
                let mut e = store::from_record(r);
                if let Some(d) = self.sup.deadline_ms(&e.id) {
                    e.end_at_ms = Some(d);
                }
                api::listed(&e)
            })
            .collect();
        Ok(api::Page {
            items,
            next_token: p.next_token,
            total_running: running,
        })
    }
}

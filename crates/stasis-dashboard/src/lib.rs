//! The Stasis web dashboard, served by `stasis serve` under `/dashboard` on the server's
//! own listener.
//!
//! * [`assets`] — the front-end bundle (`web/`, built by `scripts/build-dashboard.sh`
//!   and embedded at compile time), or a page that says how to build it;
//! * [`events`] — `GET /dashboard/api/events`: the catalog's lifecycle events as
//!   server-sent events, tailed as they are appended.
//!
//! The page itself talks to the server's E2B REST API and, for the terminal and the
//! file browser, to the agent of a sandbox through the server's proxy, exactly as the
//! SDKs do. The endpoints here need the API key in `X-API-KEY` like the rest of the
//! control API; the page keeps the key in `sessionStorage` and reads the event stream
//! with `fetch` (an `EventSource` cannot send headers, and a key in a URL ends up in
//! logs and history).
//!
//! Every path on `/dashboard` and below is answered here, whatever the method (axum
//! answers 405 for anything but GET on a known route), so none of it reaches the
//! sandbox proxy behind the server's fallback.
#![forbid(unsafe_code)]

pub mod assets;
pub mod events;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use stasis_catalog::Catalog;

/// What the dashboard's endpoints need from the server.
#[derive(Clone)]
pub struct Dashboard {
    catalog: Arc<Catalog>,
    api_key: Arc<str>,
    tail: events::Tail,
}

impl Dashboard {
    /// The dashboard of a server with this catalog and API key.
    pub fn new(catalog: Arc<Catalog>, api_key: impl Into<String>) -> Self {
        Self {
            catalog,
            api_key: api_key.into().into(),
            tail: events::Tail::default(),
        }
    }

    /// The same with other tailing intervals (tests).
    pub fn with_tail(mut self, tail: events::Tail) -> Self {
        self.tail = tail;
        self
    }

    /// Whether `headers` carry this server's API key.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|k| constant_time_eq(k.as_bytes(), self.api_key.as_bytes()))
    }

    /// The routes under `/dashboard`, to merge into the server's router (any state).
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route(
                "/dashboard",
                get(|| async { Redirect::permanent("/dashboard/") }),
            )
            .route("/dashboard/", get(assets::index))
            .route("/dashboard/api/info", get(info))
            .route("/dashboard/api/events", get(events::stream))
            .route("/dashboard/{*path}", get(assets::file))
            .with_state(self)
    }
}

/// The dashboard's routes for a server with this catalog and API key.
pub fn router<S: Clone + Send + Sync + 'static>(
    catalog: &Arc<Catalog>,
    api_key: &str,
) -> Router<S> {
    Dashboard::new(catalog.clone(), api_key).router()
}

/// `GET /dashboard/api/info`: what the page shows about the server.
async fn info(
    axum::extract::State(d): axum::extract::State<Dashboard>,
    headers: HeaderMap,
) -> Response {
    if !d.authorized(&headers) {
        return unauthorized();
    }
    Json(serde_json::json!({
        "name": "stasis",
        "version": env!("CARGO_PKG_VERSION"),
        "eventsPollMs": d.tail.poll.as_millis() as u64,
    }))
    .into_response()
}

/// E2B's error body, as the control API answers.
fn error_body(code: u16, message: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": code, "message": message }))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        error_body(
            401,
            "missing or wrong X-API-KEY: send the server's key (`stasis api-key`)",
        ),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The longest a single event stream stays open; the page then reconnects from the last
/// event it saw. This bounds how long a stopping server waits for open dashboards.
pub const MAX_STREAM: Duration = Duration::from_secs(30);

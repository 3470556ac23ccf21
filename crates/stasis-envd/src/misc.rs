//! Small plain-HTTP endpoints: `/health`, `/envs`, `/metrics`, `/init`, `/version`.
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use stasis_envd_proto::http::InitRequest;
use stasis_envd_proto::ENVD_VERSION;

use crate::auth::{self, ACCESS_TOKEN_HEADER};
use crate::{http_error, AppState};

/// `GET /health`: 204.
pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /version`: `{"version":"0.6.13"}`.
pub async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": ENVD_VERSION }))
}

/// `GET /envs`: the sandbox-wide environment variables.
pub async fn envs(State(s): State<AppState>) -> impl IntoResponse {
    Json(s.dynamic().env_vars.clone())
}

/// `POST /init`: sets env vars, the access token, the default user and workdir.
///
/// When a token is already set, the caller proves it knows it, either in
/// `X-Access-Token` or as the body's `accessToken`; the host uses the header to hand a
/// forked sandbox its new token. An absent `accessToken` keeps the current token; an
/// empty one clears it. A request whose `timestamp` is older than the newest applied
/// one is acknowledged and ignored. The system clock is never set (a container cannot).
pub async fn init(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let req: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return http_error(StatusCode::BAD_REQUEST, format!("invalid init body: {e}"))
            }
        }
    };
    let header_token = headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let authorized =
        auth::token_ok(&s, header_token) || auth::token_ok(&s, req.access_token.as_deref());
    if !authorized {
        return http_error(StatusCode::UNAUTHORIZED, "access token validation failed");
    }
    let timestamp = match req.timestamp.as_deref().map(humantime::parse_rfc3339_weak) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return http_error(StatusCode::BAD_REQUEST, format!("invalid timestamp: {e}"))
        }
    };
    if let Some(user) = &req.default_user {
        if !user.is_empty() && s.accounts.lookup(user).is_err() {
            tracing::warn!(user, "default user does not exist, root will be used");
        }
    }
    {
        let mut d = s.dynamic_mut();
        if let (Some(t), Some(last)) = (timestamp, d.last_init) {
            if t < last {
                tracing::info!("ignoring stale /init");
                return no_store(StatusCode::NO_CONTENT);
            }
        }
        if let Some(t) = timestamp {
            d.last_init = Some(t);
        }
        if let Some(vars) = req.env_vars {
            d.env_vars.extend(vars);
        }
        if let Some(token) = req.access_token {
            d.access_token = (!token.is_empty()).then_some(token);
        }
        if let Some(user) = req.default_user.filter(|u| !u.is_empty()) {
            d.default_user = user;
        }
        if let Some(dir) = req.default_workdir.filter(|w| !w.is_empty()) {
            d.default_workdir = Some(dir.into());
        }
    }
    tracing::info!("init applied");
    no_store(StatusCode::NO_CONTENT)
}

fn no_store(status: StatusCode) -> Response {
    let mut r = status.into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// `GET /metrics` body (field names as envd reports them).
#[derive(Debug, Serialize)]
pub struct Metrics {
    ts: u64,
    cpu_count: usize,
    cpu_used_pct: f64,
    mem_total: u64,
    mem_used: u64,
    mem_total_mib: u64,
    mem_used_mib: u64,
    disk_used: u64,
    disk_total: u64,
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((v.iter().sum(), idle))
}

fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = get("MemTotal:");
    (total, total.saturating_sub(get("MemAvailable:")))
}

/// `GET /metrics`: CPU (sampled over 100 ms), memory and root-disk usage.
pub async fn metrics() -> Json<Metrics> {
    let a = cpu_times();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = cpu_times();
    let cpu_used_pct = match (a, b) {
        (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
            let busy = (t1 - t0).saturating_sub(i1.saturating_sub(i0));
            ((busy as f64 / (t1 - t0) as f64) * 10000.0).round() / 100.0
        }
        _ => 0.0,
    };
    let (mem_total, mem_used) = meminfo();
    let (disk_total, disk_used) = match rustix::fs::statvfs("/") {
        Ok(v) => (
            v.f_blocks * v.f_frsize,
            (v.f_blocks - v.f_bfree) * v.f_frsize,
        ),
        Err(_) => (0, 0),
    };
    Json(Metrics {
        ts: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cpu_count: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_used_pct,
        mem_total,
        mem_used,
        mem_total_mib: mem_total >> 20,
        mem_used_mib: mem_used >> 20,
        disk_used,
        disk_total,
    })
}

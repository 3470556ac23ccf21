//! The control API: E2B's REST endpoints for all three SDK generations. Handlers parse
//! and validate, then call the supervisor; [`ApiError`] is the one place that turns
//! errors into HTTP answers, always in E2B's shape `{"code": …, "message": …}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use stasis_e2b_api as wire;
use stasis_runtime::{NetworkPolicy, RuntimeError};
use stasis_types::SandboxId;

use crate::envd::ENVD_VERSION;
use crate::lifecycle::{OnTimeout, Phase};
use crate::supervisor::{now_ms, Connected, CreateParams, Entry, SupError};
use crate::AppState;

/// Largest accepted control-plane request body.
pub const MAX_BODY: usize = 1 << 20;
/// Longest sandbox timeout (seconds): 24 hours, as E2B's largest plan.
pub const MAX_TIMEOUT_SECS: u32 = 24 * 3600;

/// An error answer of the control API.
#[derive(Debug)]
pub struct ApiError(pub wire::ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self.0)).into_response();
        if status.is_server_error() {
            // Deterministic failures: retrying the same request does not help.
            resp.headers_mut()
                .insert("should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}

impl From<wire::ErrorBody> for ApiError {
    fn from(b: wire::ErrorBody) -> Self {
        ApiError(b)
    }
}

impl From<SupError> for ApiError {
    fn from(e: SupError) -> Self {
        use wire::ErrorBody as B;
        ApiError(match &e {
            SupError::NotFound(id) | SupError::Gone(id) => B::not_found_sandbox(id),
            SupError::AlreadyPaused(id) => B::already_paused(id),
            SupError::AlreadyRunning(id) => B::already_running(id),
            SupError::NotRunning { id, op } if *op == "fork it" => {
                B::new(409, format!("sandbox {id} is paused; resume it to {op}"))
            }
            SupError::NotRunning { id, .. } => B::sandbox_not_running(id),
            SupError::BadRequest(m) => B::bad_request(m.clone()),
            SupError::TemplateNotFound(t) => B::new(400, format!("template {t:?} not found")),
            SupError::Runtime(RuntimeError::Busy(id)) => B::in_transition(id, "transition"),
            SupError::Runtime(e @ RuntimeError::Unpausable { .. }) => B::new(409, e.to_string()),
            SupError::Runtime(RuntimeError::NotFound(id)) => B::not_found_sandbox(id),
            SupError::Runtime(RuntimeError::TemplateMissing { name, .. }) => B::new(
                400,
                format!("template {name:?} is not built on this server"),
            ),
            SupError::Runtime(r) => B::internal(error_chain(r)),
            SupError::Agent { .. } | SupError::Store(_) | SupError::Internal(_) => {
                B::internal(error_chain(&e))
            }
        })
    }
}

/// An error and its sources, one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

type ApiResult<T> = Result<T, ApiError>;

/// Reads and parses a JSON body of at most [`MAX_BODY`] bytes; empty means `{}`.
async fn body<T: DeserializeOwned>(what: &'static str, req: Request) -> ApiResult<T> {
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| {
            if stasis_http::over_limit(&e) {
                wire::ErrorBody::bad_request(format!(
                    "request body is larger than {MAX_BODY} bytes"
                ))
            } else {
                wire::ErrorBody::bad_request(format!("cannot read request body: {e}"))
            }
        })?;
    wire::parse_body(what, &bytes).map_err(|e| ApiError(wire::ErrorBody::from(e)))
}

fn sandbox_id(raw: &str) -> ApiResult<SandboxId> {
    raw.parse()
        .map_err(|_| ApiError(wire::ErrorBody::not_found_sandbox(raw)))
}

fn time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

fn wire_state(p: Phase) -> wire::SandboxState {
    match p.wire() {
        crate::lifecycle::WireState::Running => wire::SandboxState::Running,
        crate::lifecycle::WireState::Paused => wire::SandboxState::Paused,
    }
}

/// The create/connect answer.
pub fn sandbox_body(e: &Entry) -> wire::Sandbox {
    wire::Sandbox {
        sandbox_id: e.id.clone(),
        template_id: e.template.clone(),
        client_id: e.client_id.clone(),
        envd_version: ENVD_VERSION.into(),
        envd_access_token: Some(e.token.clone()),
        traffic_access_token: None,
        domain: None,
        alias: Some(e.alias.clone()),
    }
}

/// One element of a list answer.
pub fn listed(e: &Entry) -> wire::ListedSandbox {
    wire::ListedSandbox {
        template_id: e.template.clone(),
        alias: Some(e.alias.clone()),
        sandbox_id: e.id.clone(),
        client_id: e.client_id.clone(),
        started_at: time(e.started_at_ms),
        end_at: time(e.end_at_ms.unwrap_or(e.started_at_ms.max(now_ms()))),
        cpu_count: e.resources.cpu_millis.div_ceil(1000),
        memory_mb: e.resources.memory_bytes / (1024 * 1024),
        disk_size_mb: e.disk_size_mb,
        metadata: e.metadata.clone(),
        state: wire_state(e.phase),
        envd_version: ENVD_VERSION.into(),
    }
}

fn detail(e: &Entry) -> wire::SandboxDetail {
    wire::SandboxDetail {
        listed: listed(e),
        envd_access_token: Some(e.token.clone()),
        domain: None,
        allow_internet_access: Some(e.allow_internet),
        network: network_body(&e.network),
        lifecycle: Some(wire::Lifecycle {
            on_timeout: match e.on_timeout {
                OnTimeout::Kill => wire::OnTimeout::Kill,
                OnTimeout::Pause { .. } => wire::OnTimeout::Pause,
            },
            auto_resume: e.auto_resume,
        }),
    }
}

/// The detail's `network`, when the sandbox has egress rules.
fn network_body(p: &NetworkPolicy) -> Option<wire::SandboxNetworkConfig> {
    if p.allow_out.is_empty() && p.deny_out.is_empty() {
        return None;
    }
    let list = |v: &[stasis_runtime::Destination]| {
        (!v.is_empty()).then(|| v.iter().cloned().map(String::from).collect())
    };
    Some(wire::SandboxNetworkConfig {
        allow_out: list(&p.allow_out),
        deny_out: list(&p.deny_out),
        ..Default::default()
    })
}

/// `PUT /sandboxes/{id}/network`: replaces the egress rules (a field left out is
/// cleared). A running sandbox gets them at once, a paused one at its resume.
pub async fn set_network(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<StatusCode> {
    let id = sandbox_id(&id)?;
    let b: wire::SandboxNetworkUpdate = body("update network", req).await?;
    let policy = NetworkPolicy::parse(
        b.allow_out.as_deref().unwrap_or_default(),
        b.deny_out.as_deref().unwrap_or_default(),
    )
    .map_err(|e| ApiError(wire::ErrorBody::bad_request(e.to_string())))?;
    let internet = b.allow_internet_access.unwrap_or(true) && st.allow_internet;
    st.sup.set_network(&id, internet, policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `X-API-KEY` check for every control-plane route.
pub async fn require_api_key(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| constant_time_eq(k.as_bytes(), st.api_key.as_bytes()));
    if !ok {
        return ApiError(wire::ErrorBody::unauthorized()).into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn create(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let b: wire::NewSandbox = body("create sandbox", req).await?;
    let timeout = b.timeout_secs().map_err(|e| ApiError(e.into()))?;
    if timeout > MAX_TIMEOUT_SECS {
        return Err(ApiError(wire::ErrorBody::timeout_too_large(
            MAX_TIMEOUT_SECS / 3600,
        )));
    }
    if b.template_id.trim().is_empty() {
        return Err(ApiError(wire::ErrorBody::bad_request(
            "templateID is required",
        )));
    }
    // The object form `autoPause: {enabled, timeout: ms}` carries its own inactivity
    // window; otherwise the sandbox timeout is the window.
    let window_ms = b
        .auto_pause
        .and_then(|a| a.enabled.then_some(a.timeout_ms).flatten())
        .filter(|ms| *ms > 0)
        .unwrap_or(timeout as u64 * 1000);
    let on_timeout = if b.auto_pause_enabled() {
        OnTimeout::Pause {
            memory: b.auto_pause_memory(),
        }
    } else {
        OnTimeout::Kill
    };
    if b.auto_resume_enabled() && on_timeout == OnTimeout::Kill {
        return Err(ApiError(wire::ErrorBody::bad_request(
            "autoResume requires autoPause",
        )));
    }
    let network = b
        .network
        .as_ref()
        .map(|n| {
            NetworkPolicy::parse(
                n.allow_out.as_deref().unwrap_or_default(),
                n.deny_out.as_deref().unwrap_or_default(),
            )
        })
        .transpose()
        .map_err(|e| ApiError(wire::ErrorBody::bad_request(e.to_string())))?
        .unwrap_or_default();
    let params = CreateParams {
        template: b.template_id.clone(),
        timeout_ms: window_ms,
        on_timeout,
        auto_resume: b.auto_resume_enabled(),
        metadata: b.metadata.clone(),
        env_vars: b.env_vars.clone(),
        allow_internet: b.allow_internet_access.unwrap_or(true) && st.allow_internet,
        network,
    };
    let e = st.sup.create(params).await?;
    Ok((StatusCode::CREATED, Json(sandbox_body(&e))).into_response())
}

pub async fn connect(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let id = sandbox_id(&id)?;
    let b: wire::ConnectSandbox = body("connect", req).await?;
    let timeout = b.timeout_secs().map_err(|e| ApiError(e.into()))?;
    // The timeout (given, or the 300 s default) is the new window.
    let (e, how) = st.sup.connect(&id, Some(timeout as u64 * 1000)).await?;
    let status = match how {
        Connected::AlreadyRunning => StatusCode::OK,
        Connected::Resumed => StatusCode::CREATED,
    };
    Ok((status, Json(sandbox_body(&e))).into_response())
}

pub async fn resume(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let id = sandbox_id(&id)?;
    let b: wire::ResumeSandbox = body("resume", req).await?;
    let timeout = b.timeout_secs().map_err(|e| ApiError(e.into()))?;
    let e = st.sup.resume(&id, Some(timeout as u64 * 1000)).await?;
    Ok((StatusCode::CREATED, Json(sandbox_body(&e))).into_response())
}

pub async fn pause(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<StatusCode> {
    let id = sandbox_id(&id)?;
    let b: wire::PauseSandbox = body("pause", req).await?;
    st.sup.pause(&id, b.keep_memory()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn kill(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = sandbox_id(&id)?;
    st.sup.kill(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn info(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<wire::SandboxDetail>> {
    let id = sandbox_id(&id)?;
    st.sup.touch(&id);
    let e = st
        .sup
        .get(&id)
        .ok_or_else(|| ApiError(wire::ErrorBody::not_found_sandbox(&id)))?;
    Ok(Json(detail(&e)))
}

pub async fn set_timeout(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<StatusCode> {
    let id = sandbox_id(&id)?;
    let b: wire::SetTimeout = body("set timeout", req).await?;
    let secs = b.timeout_secs().map_err(|e| ApiError(e.into()))?;
    if secs > MAX_TIMEOUT_SECS {
        return Err(ApiError(wire::ErrorBody::timeout_too_large(
            MAX_TIMEOUT_SECS / 3600,
        )));
    }
    st.sup.set_timeout(&id, secs as u64 * 1000).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn refresh(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<StatusCode> {
    let id = sandbox_id(&id)?;
    let b: wire::RefreshSandbox = body("refresh", req).await?;
    let secs = b.duration.unwrap_or(60);
    if secs <= 0 || secs > MAX_TIMEOUT_SECS as i64 {
        return Err(ApiError(wire::ErrorBody::bad_request(format!(
            "invalid duration {secs}: must be between 1 and {MAX_TIMEOUT_SECS} seconds"
        ))));
    }
    st.sup.refresh(&id, secs as u64 * 1000).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn metrics(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<wire::SandboxMetric>>> {
    let id = sandbox_id(&id)?;
    let e = st
        .sup
        .get(&id)
        .ok_or_else(|| ApiError(wire::ErrorBody::not_found_sandbox(&id)))?;
    let Some(stats) = st.sup.metrics(&id).await? else {
        return Ok(Json(vec![]));
    };
    let now = Utc::now();
    let mut m = wire::SandboxMetric::at(now);
    let cpus = e.resources.cpu_millis.div_ceil(1000).max(1);
    m.cpu_count = cpus;
    // Average use since the sandbox (or its last restore) started.
    let since = st.sup.running_since_ms(&id).unwrap_or(e.started_at_ms);
    let wall_ns = now_ms().saturating_sub(since).max(1) as f64 * 1e6;
    m.cpu_used_pct = ((stats.cpu_usage_ns as f64 / wall_ns / cpus as f64) * 100.0).min(100.0);
    m.mem_used = stats.memory_bytes;
    m.mem_total = stats.memory_limit_bytes;
    m.disk_used = stats.disk_bytes;
    m.disk_total = e.disk_size_mb * 1024 * 1024;
    Ok(Json(vec![m]))
}

pub async fn fork(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let id = sandbox_id(&id)?;
    let b: wire::ForkSandbox = body("fork", req).await?;
    let made = st.sup.fork(&id, b.count as usize).await?;
    let out: Vec<wire::Sandbox> = made.iter().map(sandbox_body).collect();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn list_v2(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let q = wire::ListQuery::parse(q.as_deref().unwrap_or("")).map_err(|e| ApiError(e.into()))?;
    let page = st.list(&q).await?;
    let mut resp = Json(page.items).into_response();
    if let Some(next) = page.next_token {
        if let Ok(v) = HeaderValue::from_str(&next) {
            resp.headers_mut().insert(wire::NEXT_TOKEN_HEADER, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&page.total_running.to_string()) {
        resp.headers_mut().insert(wire::TOTAL_RUNNING_HEADER, v);
    }
    Ok(resp)
}

/// Legacy `GET /sandboxes`: running sandboxes, optional metadata filter, no paging.
pub async fn list_legacy(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<wire::ListedSandbox>>> {
    let q =
        wire::LegacyListQuery::parse(q.as_deref().unwrap_or("")).map_err(|e| ApiError(e.into()))?;
    let mut items: Vec<Entry> = st
        .sup
        .entries()
        .into_iter()
        .filter(|e| e.phase == Phase::Running)
        .filter(|e| q.metadata.iter().all(|(k, v)| e.metadata.get(k) == Some(v)))
        .collect();
    items.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then(a.id.cmp(&b.id)));
    Ok(Json(items.iter().map(listed).collect()))
}

pub async fn templates(State(st): State<Arc<AppState>>) -> Json<Vec<wire::Template>> {
    Json(st.templates.clone())
}

/// A page of a list answer.
pub struct Page {
    pub items: Vec<wire::ListedSandbox>,
    pub next_token: Option<String>,
    pub total_running: u64,
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(e: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError as W;
        ApiError(match &e {
            W::Invalid(m) => wire::ErrorBody::bad_request(m.clone()),
            W::NotFound(_) => wire::ErrorBody::new(404, e.to_string()),
            W::Io { .. } => wire::ErrorBody::internal(error_chain(&e)),
        })
    }
}

pub async fn list_webhooks(State(st): State<Arc<AppState>>) -> Json<Vec<crate::webhooks::Webhook>> {
    Json(st.webhooks.list())
}

pub async fn create_webhook(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let b: crate::webhooks::WebhookRequest = body("webhook", req).await?;
    let h = st.webhooks.create(b)?;
    Ok((StatusCode::CREATED, Json(h)).into_response())
}

pub async fn get_webhook(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<crate::webhooks::Webhook>> {
    Ok(Json(st.webhooks.get(&id)?))
}

pub async fn update_webhook(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Json<crate::webhooks::Webhook>> {
    let b: crate::webhooks::WebhookRequest = body("webhook", req).await?;
    Ok(Json(st.webhooks.update(&id, b)?))
}

pub async fn delete_webhook(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.webhooks.delete(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /events/sandboxes/{id}`: the sandbox's lifecycle events, oldest first (also
/// after it was killed).
pub async fn sandbox_events(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let id = sandbox_id(&id)?;
    let catalog = st.catalog.clone();
    let sid = id.clone();
    let events = tokio::task::spawn_blocking(move || catalog.events_for(&sid))
        .await
        .map_err(|e| ApiError(wire::ErrorBody::internal(e.to_string())))?
        .map_err(|e| ApiError(wire::ErrorBody::internal(error_chain(&e))))?;
    if events.is_empty() {
        return Err(ApiError(wire::ErrorBody::not_found_sandbox(&id)));
    }
    Ok(Json(
        events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.seq.to_string(),
                    "type": format!("sandbox.lifecycle.{}", e.kind.as_str()),
                    "sandboxId": e.sandbox_id,
                    "timestamp": e.at,
                    "eventData": e.detail,
                })
            })
            .collect(),
    ))
}

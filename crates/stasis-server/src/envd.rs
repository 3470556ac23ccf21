//! The host side of the agent protocol: waiting for a sandbox's agent to answer and
//! configuring it (`POST /init`: access token, environment, default user).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// The agent's port inside every sandbox.
pub const ENVD_PORT: u16 = 49983;
/// Longest answer read from an agent (`/health`, `/init`): they are a few bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// Deadline of one whole call to an agent, answer included.
const CALL_WITHIN: Duration = Duration::from_secs(10);

/// The version reported to SDKs; ≥ 0.6.4 unlocks every SDK feature gate.
pub const ENVD_VERSION: &str = "0.6.13";

/// Why the agent could not be reached or configured.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    #[error("the agent at {addr} did not answer /health within {waited:?}: {last}")]
    NotReady {
        addr: SocketAddr,
        waited: Duration,
        last: String,
    },
    #[error("the agent at {addr} answered {status} to {path}: {body}")]
    Status {
        addr: SocketAddr,
        path: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("request to the agent at {addr} failed: {source}")]
    Request {
        addr: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

fn method_has_body(req: &http::request::Builder) -> bool {
    req.method_ref() == Some(&Method::POST)
}

/// A client for the agents of all sandboxes. It keeps no idle connections: a pooled
/// connection into a sandbox would be open across its checkpoint.
#[derive(Clone)]
pub struct EnvdClient {
    http: Client<HttpConnector, Body>,
}

impl Default for EnvdClient {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitBody<'a> {
    env_vars: &'a BTreeMap<String, String>,
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_user: Option<&'a str>,
}

impl EnvdClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Self { http }
    }

    /// The shared HTTP client (also used by the proxy).
    pub fn http(&self) -> &Client<HttpConnector, Body> {
        &self.http
    }

    async fn call(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &'static str,
        body: Body,
        token: Option<&str>,
    ) -> Result<(StatusCode, String), EnvdError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if method_has_body(&req) {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = token {
            req = req.header("x-access-token", t);
        }
        let req = req.body(body).expect("valid request");
        // The agent runs inside the sandbox and is not trusted: the whole exchange
        // (headers and body) has one deadline, and the body a size limit, so that a
        // hostile agent costs the server at most MAX_ANSWER bytes and CALL_WITHIN.
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|source| EnvdError::Request { addr, source })?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .map_err(|e| EnvdError::Status {
                    addr,
                    path,
                    status: StatusCode::BAD_GATEWAY,
                    body: format!("unusable answer (over {MAX_ANSWER} bytes, or cut): {e}"),
                })?;
            Ok::<_, EnvdError>((status, body))
        };
        tokio::time::timeout(CALL_WITHIN, exchange)
            .await
            .map_err(|_| EnvdError::Status {
                addr,
                path,
                status: StatusCode::GATEWAY_TIMEOUT,
                body: format!("no whole answer within {CALL_WITHIN:?}"),
            })?
    }

    /// Polls `GET /health` until the agent answers 2xx or `timeout` passes.
    pub async fn wait_healthy(&self, ip: Ipv4Addr, timeout: Duration) -> Result<(), EnvdError> {
        self.wait_healthy_port(ip, ENVD_PORT, timeout).await
    }

    /// Polls `GET /health` on `port` until it answers 2xx or `timeout` passes.
    pub async fn wait_healthy_port(
        &self,
        ip: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<(), EnvdError> {
        let addr = SocketAddr::from((ip, port));
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            let last = match self
                .call(addr, Method::GET, "/health", Body::empty(), None)
                .await
            {
                Ok((s, _)) if s.is_success() => return Ok(()),
                Ok((s, b)) => format!("{s} {b}"),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= timeout {
                return Err(EnvdError::NotReady {
                    addr,
                    waited: start.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Sets the access token and sandbox-wide environment of a fresh agent.
    pub async fn init(
        &self,
        ip: Ipv4Addr,
        token: &str,
        env_vars: &BTreeMap<String, String>,
    ) -> Result<(), EnvdError> {
        self.init_with(ip, "", token, env_vars).await
    }

    /// Replaces the access token (`current` is the one the agent has now, empty for
    /// none) and the sandbox-wide environment.
    pub async fn init_with(
        &self,
        ip: Ipv4Addr,
        current: &str,
        token: &str,
        env_vars: &BTreeMap<String, String>,
    ) -> Result<(), EnvdError> {
        let addr = SocketAddr::from((ip, ENVD_PORT));
        let body = serde_json::to_vec(&InitBody {
            env_vars,
            access_token: token,
            default_user: None,
        })
        .expect("init body serializes");
        let (status, text) = self
            .call(
                addr,
                Method::POST,
                "/init",
                Body::from(body),
                Some(current).filter(|c| !c.is_empty()),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(EnvdError::Status {
                addr,
                path: "/init",
                status,
                body: text,
            })
        }
    }
}

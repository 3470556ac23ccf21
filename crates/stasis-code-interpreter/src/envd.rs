//! The agent as seen from the code interpreter: `GET /envs` on envd, with the caller's
//! `X-Access-Token`. One call both checks the token (envd answers 401 to a wrong one)
//! and reads the sandbox-wide environment, so a token changed by `/init` is honoured at
//! once and nothing secret is kept here.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Why envd did not give the environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    #[error("unauthorized")]
    Unauthorized,
    #[error("envd at {url} is unavailable: {cause}")]
    Unavailable { url: String, cause: String },
}

/// A client for envd's `/envs`; `None` base means no agent (local runs, tests).
#[derive(Clone)]
pub struct Envd {
    base: Option<String>,
    internal: Option<String>,
    http: Client<HttpConnector, Body>,
}

impl Envd {
    pub fn new(base: Option<String>, internal: Option<String>) -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            internal,
            http: Client::builder(TokioExecutor::new()).build(c),
        }
    }

    /// The sandbox's environment: with the caller's token when it sent one (a wrong one
    /// is refused), else with this service's own credential.
    pub async fn envs_or_internal(
        &self,
        caller: Option<&str>,
    ) -> Result<BTreeMap<String, String>, EnvdError> {
        match caller {
            Some(t) => self.envs(Some(t)).await,
            None => self.envs(self.internal.as_deref()).await,
        }
    }

    /// The sandbox's environment, if `token` is accepted.
    pub async fn envs(&self, token: Option<&str>) -> Result<BTreeMap<String, String>, EnvdError> {
        let Some(base) = &self.base else {
            return Ok(BTreeMap::new());
        };
        let url = format!("{base}/envs");
        let unavailable = |cause: String| EnvdError::Unavailable {
            url: url.clone(),
            cause,
        };
        let mut req = Request::get(&url);
        if let Some(t) = token {
            req = req.header("x-access-token", t);
        }
        let req = req
            .body(Body::empty())
            .map_err(|e| unavailable(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|_| unavailable("no answer within 10s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => return Err(EnvdError::Unauthorized),
            s => return Err(unavailable(format!("status {s}"))),
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("bad /envs body: {e}")))
    }
}

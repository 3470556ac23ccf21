//! [`Client`]: the control-plane API (create, connect, list, pause, kill, …) over HTTP.
//!
//! A `Client` is cheap to clone (one connection pool behind an `Arc`). [`crate::Sandbox`]'s
//! associated functions build one from the environment; programs with their own
//! settings build one from a [`ConnectionConfig`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stasis_e2b_api as wire;

use crate::config::ConnectionConfig;
use crate::error::{Error, Result};
use crate::sandbox::{Paginator, Sandbox, SandboxBuilder, SandboxQuery};

/// A connection to one Stasis (or E2B-compatible) server.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConnectionConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A control-plane answer: status, next-page token and body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub next_token: Option<String>,
    pub body: bytes::Bytes,
}

impl Client {
    /// A client for `config`.
    pub fn new(config: ConnectionConfig) -> Result<Self> {
        for (name, url) in [("API", &config.api_url), ("sandbox", &config.sandbox_url)] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::Config {
                    message: format!("the {name} URL {url:?} must start with http:// or https://"),
                });
            }
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("stasis-rust-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config {
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner { config, http }),
        })
    }

    /// A client configured from the environment ([`ConnectionConfig::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(ConnectionConfig::from_env()?)
    }

    /// The settings in use.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// A builder for a new sandbox on this server.
    pub fn sandbox(&self) -> SandboxBuilder {
        SandboxBuilder::new().client(self.clone())
    }

    /// Creates a sandbox from a raw request body.
    pub async fn create(&self, req: &wire::NewSandbox) -> Result<Sandbox> {
        let a = self
            .call(Method::POST, "/v2/sandboxes", Some(req), None)
            .await?;
        let body: wire::Sandbox = parse(&a.body, "create")?;
        Ok(Sandbox::from_wire(self.clone(), body))
    }

    /// Connects to a sandbox, resuming it if it is paused. `timeout` (default 300 s)
    /// becomes its new time to live, or extends a running sandbox's.
    pub async fn connect(&self, id: &str, timeout: Option<Duration>) -> Result<Sandbox> {
        self.resume(id, timeout).await.map(|(sandbox, _)| sandbox)
    }

    /// Like [`connect`](Self::connect), and tells whether a paused sandbox was resumed
    /// (`true`) or was already running (`false`).
    pub async fn resume(&self, id: &str, timeout: Option<Duration>) -> Result<(Sandbox, bool)> {
        let body = wire::ConnectSandbox {
            timeout: timeout.map(secs),
            memory: None,
        };
        let a = self
            .call(
                Method::POST,
                &format!("/v2/sandboxes/{}/connect", seg(id)?),
                Some(&body),
                Some(id),
            )
            .await?;
        let body: wire::Sandbox = parse(&a.body, "connect")?;
        Ok((
            Sandbox::from_wire(self.clone(), body),
            a.status == StatusCode::CREATED,
        ))
    }

    /// Lists sandboxes page by page.
    pub fn list(&self, query: SandboxQuery) -> Paginator {
        Paginator::new(self.clone(), query)
    }

    /// One page of `GET /v2/sandboxes`: the items and the next page's token.
    pub(crate) async fn list_page(
        &self,
        query: &wire::ListQuery,
    ) -> Result<(Vec<wire::ListedSandbox>, Option<String>)> {
        let qs = query.to_query_string();
        let path = if qs.is_empty() {
            "/v2/sandboxes".to_owned()
        } else {
            format!("/v2/sandboxes?{qs}")
        };
        let a = self.call::<()>(Method::GET, &path, None, None).await?;
        Ok((parse(&a.body, "list")?, a.next_token))
    }

    /// Pauses a running sandbox with its memory. [`Error::AlreadyPaused`] if it is
    /// paused already.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.call(
            Method::POST,
            &format!("/sandboxes/{}/pause", seg(id)?),
            Some(&wire::PauseSandbox::default()),
            Some(id),
        )
        .await?;
        Ok(())
    }

    /// Kills a sandbox, running or paused. `Ok(false)` if it did not exist.
    pub async fn kill(&self, id: &str) -> Result<bool> {
        match self
            .call::<()>(
                Method::DELETE,
                &format!("/sandboxes/{}", seg(id)?),
                None,
                Some(id),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::SandboxNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Details of one sandbox.
    pub async fn get_info(&self, id: &str) -> Result<wire::SandboxDetail> {
        let a = self
            .call::<()>(
                Method::GET,
                &format!("/sandboxes/{}", seg(id)?),
                None,
                Some(id),
            )
            .await?;
        parse(&a.body, "info")
    }

    /// Sets a running sandbox's time to live to `timeout` from now.
    pub async fn set_timeout(&self, id: &str, timeout: Duration) -> Result<()> {
        self.call(
            Method::POST,
            &format!("/sandboxes/{}/timeout", seg(id)?),
            Some(&wire::SetTimeout {
                timeout: secs(timeout),
            }),
            Some(id),
        )
        .await?;
        Ok(())
    }

    /// Resource samples of a sandbox (empty while it is paused).
    pub async fn metrics(&self, id: &str) -> Result<Vec<wire::SandboxMetric>> {
        let a = self
            .call::<()>(
                Method::GET,
                &format!("/sandboxes/{}/metrics", seg(id)?),
                None,
                Some(id),
            )
            .await?;
        parse(&a.body, "metrics")
    }

    /// Forks a running sandbox into `count` copies (memory and filesystem included).
    pub async fn fork(&self, id: &str, count: u32) -> Result<Vec<Sandbox>> {
        let a = self
            .call(
                Method::POST,
                &format!("/sandboxes/{}/fork", seg(id)?),
                Some(&wire::ForkSandbox { count }),
                Some(id),
            )
            .await?;
        let made: Vec<wire::Sandbox> = parse(&a.body, "fork")?;
        Ok(made
            .into_iter()
            .map(|s| Sandbox::from_wire(self.clone(), s))
            .collect())
    }

    /// The templates the server can create sandboxes from.
    pub async fn templates(&self) -> Result<Vec<wire::Template>> {
        let a = self
            .call::<()>(Method::GET, "/templates", None, None)
            .await?;
        parse(&a.body, "templates")
    }

    /// One control-plane call; maps E2B error bodies to typed errors. `id` names the
    /// sandbox the path is about, for not-found errors.
    pub(crate) async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        id: Option<&str>,
    ) -> Result<Answer> {
        let cfg = &self.inner.config;
        let url = format!("{}{}", cfg.api_url, path);
        let mut req = self
            .http()
            .request(method.clone(), &url)
            .header(wire::API_KEY_HEADER, &cfg.api_key)
            .timeout(cfg.request_timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("{method} {path}");
        let resp = req
            .send()
            .await
            .map_err(|e| Error::transport(&url, &what, cfg.request_timeout, e))?;
        let status = resp.status();
        let next_token = resp
            .headers()
            .get(wire::NEXT_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::transport(&url, &what, cfg.request_timeout, e))?;
        if status.is_success() {
            return Ok(Answer {
                status,
                next_token,
                body,
            });
        }
        Err(api_error(status, &body, id))
    }
}

/// The typed error of a failed control-plane answer.
pub(crate) fn api_error(status: StatusCode, body: &[u8], id: Option<&str>) -> Error {
    let message = serde_json::from_slice::<wire::ErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            }
        });
    match (status.as_u16(), id) {
        (401 | 403, _) => Error::Auth { message },
        (404, Some(id)) => Error::SandboxNotFound {
            id: id.to_owned(),
            message,
        },
        (404, None) => Error::NotFound { message },
        (409, Some(id)) if message.contains("already paused") => Error::AlreadyPaused {
            id: id.to_owned(),
            message,
        },
        (409, _) => Error::Conflict { message },
        (400 | 422, _) => Error::InvalidArgument { message },
        (status, _) => Error::Api { status, message },
    }
}

/// Parses a JSON answer.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol {
        message: format!("unexpected {what} answer: {e}"),
    })
}

/// Whole seconds, at least one (the API's unit).
pub(crate) fn secs(d: Duration) -> i64 {
    (d.as_millis().div_ceil(1000) as i64).max(1)
}

/// A sandbox id as a path segment: refuses anything that would change the path.
fn seg(id: &str) -> Result<&str> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::InvalidArgument {
            message: format!("invalid sandbox id {id:?}"),
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_map_to_typed_errors() {
        let e = api_error(
            StatusCode::CONFLICT,
            br#"{"code":409,"message":"Error pausing sandbox - sandbox 'i1' is already paused"}"#,
            Some("i1"),
        );
        assert!(matches!(e, Error::AlreadyPaused { .. }), "{e:?}");
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"code":404,"message":"x"}"#,
            Some("i1"),
        );
        assert!(matches!(e, Error::SandboxNotFound { ref id, .. } if id == "i1"));
        let e = api_error(StatusCode::UNAUTHORIZED, b"", None);
        assert_eq!(e.to_string(), "authentication failed: Unauthorized");
        let e = api_error(
            StatusCode::BAD_REQUEST,
            br#"{"code":400,"message":"bad"}"#,
            None,
        );
        assert!(matches!(e, Error::InvalidArgument { .. }));
        assert!(seg("../x").is_err());
        assert_eq!(secs(Duration::from_millis(1500)), 2);
        assert_eq!(secs(Duration::ZERO), 1);
    }
}

//! Where the server is and how to authenticate: [`ConnectionConfig`].
//!
//! [`ConnectionConfig::from_env`] reads `STASIS_API_URL`, `STASIS_SANDBOX_URL` and
//! `STASIS_API_KEY`, falling back to E2B's `E2B_API_URL`, `E2B_SANDBOX_URL` and
//! `E2B_API_KEY` (a `STASIS_*` variable wins over its `E2B_*` twin). The sandbox URL
//! defaults to the API URL (one listener serves both), the API URL to
//! [`DEFAULT_API_URL`].

use std::time::Duration;

use crate::error::Error;

/// The server a fresh `stasis serve` listens on.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:3000";

/// Default timeout of one control-plane or unary envd request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection settings shared by every call.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Control-plane base URL, e.g. `http://127.0.0.1:3000` (no trailing slash).
    pub api_url: String,
    /// Base URL of sandbox traffic (envd and the code interpreter), routed by the
    /// `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers.
    pub sandbox_url: String,
    /// The `X-API-KEY` of the control plane.
    pub api_key: String,
    /// Timeout of one request (streams are bounded by their own timeouts instead).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("api_url", &self.api_url)
            .field("sandbox_url", &self.sandbox_url)
            .field("api_key", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ConnectionConfig {
    /// A config for one server serving both the API and sandbox traffic.
    pub fn new(api_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        let api_url = trim_url(api_url.into());
        Self {
            sandbox_url: api_url.clone(),
            api_url,
            api_key: api_key.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets a separate sandbox-traffic URL.
    pub fn with_sandbox_url(mut self, url: impl Into<String>) -> Self {
        self.sandbox_url = trim_url(url.into());
        self
    }

    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Reads the process environment (see the module docs). Fails when no API key is
    /// set.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env) over any variable lookup (for tests and for
    /// programs with their own settings source).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |stasis: &str, e2b: &str| {
            get(stasis)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| get(e2b).filter(|v| !v.trim().is_empty()))
                .map(|v| v.trim().to_owned())
        };
        let api_url =
            var("STASIS_API_URL", "E2B_API_URL").unwrap_or_else(|| DEFAULT_API_URL.into());
        let api_key = var("STASIS_API_KEY", "E2B_API_KEY").ok_or_else(|| Error::Config {
            message:
                "no API key: set STASIS_API_KEY (or E2B_API_KEY) to the key `stasis api-key` prints"
                    .into(),
        })?;
        let mut cfg = Self::new(api_url, api_key);
        if let Some(url) = var("STASIS_SANDBOX_URL", "E2B_SANDBOX_URL") {
            cfg = cfg.with_sandbox_url(url);
        }
        Ok(cfg)
    }
}

fn trim_url(url: String) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn stasis_variables_win_and_sandbox_url_defaults_to_the_api_url() {
        let c = ConnectionConfig::from_lookup(lookup(&[
            ("E2B_API_URL", "http://e2b:1/"),
            ("STASIS_API_URL", "http://stasis:2/"),
            ("E2B_API_KEY", "e2b_1"),
        ]))
        .unwrap();
        assert_eq!(c.api_url, "http://stasis:2");
        assert_eq!(c.sandbox_url, "http://stasis:2");
        assert_eq!(c.api_key, "e2b_1");

        let c = ConnectionConfig::from_lookup(lookup(&[
            ("E2B_SANDBOX_URL", "http://sb:3"),
            ("STASIS_API_KEY", "k"),
            ("E2B_API_KEY", "other"),
        ]))
        .unwrap();
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(c.sandbox_url, "http://sb:3");
        assert_eq!(c.api_key, "k");
        assert!(!format!("{c:?}").contains("\"k\""), "key is redacted");
    }

    #[test]
    fn a_missing_key_says_where_to_get_one() {
        let err = ConnectionConfig::from_lookup(lookup(&[])).unwrap_err();
        assert!(err.to_string().contains("stasis api-key"), "{err}");
    }
}

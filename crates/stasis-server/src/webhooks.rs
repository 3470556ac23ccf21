//! Lifecycle webhooks, as E2B has them: registrations under `/events/webhooks`, and a
//! signed POST to every enabled webhook subscribed to an event (`sandbox.lifecycle.
//! created`, `…killed`, `…updated`, `…paused`, `…resumed`).
//!
//! The signature header `e2b-signature` is the URL-safe, unpadded base64 of
//! SHA-256(secret ‖ body). Deliveries run in the background with retries and never hold
//! up a lifecycle transition. Registrations are kept in `webhooks.json` in the data dir.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use chrono::{DateTime, Utc};
use http::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use stasis_types::SandboxId;
use tracing::{debug, warn};

/// Event types a webhook can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "sandbox.lifecycle.created",
    "sandbox.lifecycle.killed",
    "sandbox.lifecycle.updated",
    "sandbox.lifecycle.paused",
    "sandbox.lifecycle.resumed",
];

/// A registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    #[serde(rename = "teamID")]
    pub team_id: String,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub events: Vec<String>,
    #[serde(skip_serializing, default)]
    pub signature_secret: String,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /events/webhooks` (and, all fields optional, of `PATCH`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    pub name: Option<String>,
    pub url: Option<String>,
    pub enabled: Option<bool>,
    pub events: Option<Vec<String>>,
    pub signature_secret: Option<String>,
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("webhook {0} not found")]
    NotFound(String),
    #[error("cannot store webhooks in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The payload of one delivery.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    version: &'static str,
    id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    event_data: EventData<'a>,
    sandbox_build_id: &'a str,
    sandbox_execution_id: &'a str,
    sandbox_id: &'a str,
    sandbox_team_id: &'static str,
    sandbox_template_id: &'a str,
    timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
struct EventData<'a> {
    sandbox_metadata: &'a BTreeMap<String, String>,
}

/// The signature E2B puts in `e2b-signature`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(secret.as_bytes());
    h.update(body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

fn random_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The registrations and the delivery client.
pub struct Webhooks {
    path: PathBuf,
    hooks: RwLock<Vec<Webhook>>,
    http: Client<HttpConnector, Body>,
}

impl Webhooks {
    /// Loads the registrations kept in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Arc<Self>, WebhookError> {
        let path = data_dir.join("webhooks.json");
        let hooks = match fs::read(&path) {
            Ok(b) => serde_json::from_slice::<Vec<StoredHook>>(&b)
                .map_err(|e| WebhookError::Invalid(format!("{}: {e}", path.display())))?
                .into_iter()
                .map(Webhook::from)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(WebhookError::Io { path, source }),
        };
        // Signing secrets: readable by the owner only (an earlier version wrote 0644).
        {
            use std::os::unix::fs::PermissionsExt;
            match fs::metadata(&path) {
                Ok(m) if m.permissions().mode() & 0o777 != 0o600 => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(
                        |source| WebhookError::Io {
                            path: path.clone(),
                            source,
                        },
                    )?
                }
                _ => {}
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Arc::new(Self {
            path,
            hooks: RwLock::new(hooks),
            http: Client::builder(TokioExecutor::new()).build(connector),
        }))
    }

    fn save(&self, hooks: &[Webhook]) -> Result<(), WebhookError> {
        let io = |source| WebhookError::Io {
            path: self.path.clone(),
            source,
        };
        let stored: Vec<StoredHook> = hooks.iter().cloned().map(StoredHook::from).collect();
        let tmp = self.path.with_extension("json.tmp");
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Created 0600 (never readable by others, not even for a moment); a leftover
        // temporary file keeps its mode, so it is narrowed too.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(&stored).expect("serializes"))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }

    fn validate(url: &str, events: &[String]) -> Result<(), WebhookError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| WebhookError::Invalid(format!("url {url:?} is not a URL")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(WebhookError::Invalid(format!(
                "url {url:?} must be an http:// URL (put a TLS proxy in front for https)"
            )));
        }
        if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(WebhookError::Invalid(format!(
                "unknown event type {bad:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<Webhook> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, id: &str) -> Result<Webhook, WebhookError> {
        self.list()
            .into_iter()
            .find(|h| h.id == id)
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    pub fn create(&self, r: WebhookRequest) -> Result<Webhook, WebhookError> {
        let url = r
            .url
            .ok_or_else(|| WebhookError::Invalid("url is required".into()))?;
        let events = r
            .events
            .unwrap_or_else(|| EVENT_TYPES.iter().map(|s| s.to_string()).collect());
        Self::validate(&url, &events)?;
        let secret = r
            .signature_secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WebhookError::Invalid("signatureSecret is required".into()))?;
        let hook = Webhook {
            id: random_id(),
            team_id: "stasis".into(),
            name: r.name.unwrap_or_default(),
            url,
            enabled: r.enabled.unwrap_or(true),
            events,
            signature_secret: secret,
            created_at: Utc::now(),
        };
        let mut hooks = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        let mut next = hooks.clone();
        next.push(hook.clone());
        self.save(&next)?;
        *hooks = next;
        Ok(hook)
    }

    pub fn update(&self, id: &str, r: WebhookRequest) -> Result<Webhook, WebhookError> {
        let mut hooks = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        let mut next = hooks.clone();
        let h = next
            .iter_mut()
            .find(|h| h.id == id)
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))?;
        if let Some(u) = r.url {
            h.url = u;
        }
        if let Some(e) = r.events {
            h.events = e;
        }
        if let Some(n) = r.name {
            h.name = n;
        }
        if let Some(en) = r.enabled {
            h.enabled = en;
        }
        if let Some(s) = r.signature_secret.filter(|s| !s.is_empty()) {
            h.signature_secret = s;
        }
        Self::validate(&h.url, &h.events)?;
        let out = h.clone();
        self.save(&next)?;
        *hooks = next;
        Ok(out)
    }

    pub fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let mut hooks = self.hooks.write().unwrap_or_else(|p| p.into_inner());
        let next: Vec<Webhook> = hooks.iter().filter(|h| h.id != id).cloned().collect();
        if next.len() == hooks.len() {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        self.save(&next)?;
        *hooks = next;
        Ok(())
    }

    /// Delivers `kind` (a lifecycle event name such as `paused`) about a sandbox to every
    /// subscribed webhook, in the background.
    pub fn notify(
        &self,
        kind: &str,
        id: &SandboxId,
        template: &str,
        metadata: &BTreeMap<String, String>,
    ) {
        let event_type = match kind {
            "created" => "sandbox.lifecycle.created",
            "killed" => "sandbox.lifecycle.killed",
            "paused" => "sandbox.lifecycle.paused",
            "resumed" => "sandbox.lifecycle.resumed",
            "updated" => "sandbox.lifecycle.updated",
            _ => return,
        };
        let targets: Vec<Webhook> = self
            .list()
            .into_iter()
            .filter(|h| h.enabled && h.events.iter().any(|e| e == event_type))
            .collect();
        if targets.is_empty() {
            return;
        }
        let payload = Payload {
            version: "v1",
            id: random_id(),
            kind: event_type,
            event_data: EventData {
                sandbox_metadata: metadata,
            },
            sandbox_build_id: template,
            sandbox_execution_id: id.as_str(),
            sandbox_id: id.as_str(),
            sandbox_team_id: "stasis",
            sandbox_template_id: template,
            timestamp: Utc::now(),
        };
        let body = serde_json::to_vec(&payload).expect("payload serializes");
        for hook in targets {
            let http = self.http.clone();
            let body = body.clone();
            let sandbox = id.clone();
            tokio::spawn(async move {
                let delivery = random_id();
                for attempt in 0..3u32 {
                    let req = Request::builder()
                        .method(Method::POST)
                        .uri(&hook.url)
                        .header("content-type", "application/json")
                        .header("e2b-webhook-id", &hook.id)
                        .header("e2b-delivery-id", &delivery)
                        .header("e2b-signature-version", "v1")
                        .header("e2b-signature", signature(&hook.signature_secret, &body))
                        .body(Body::from(body.clone()));
                    let Ok(req) = req else { return };
                    match tokio::time::timeout(Duration::from_secs(10), http.request(req)).await {
                        Ok(Ok(r)) if r.status().is_success() => {
                            debug!(sandbox_id = %sandbox, webhook = %hook.id, "webhook delivered");
                            return;
                        }
                        Ok(Ok(r)) => {
                            warn!(sandbox_id = %sandbox, webhook = %hook.id, status = %r.status(), attempt, "webhook refused")
                        }
                        Ok(Err(e)) => {
                            warn!(sandbox_id = %sandbox, webhook = %hook.id, error = %e, attempt, "webhook delivery failed")
                        }
                        Err(_) => {
                            warn!(sandbox_id = %sandbox, webhook = %hook.id, attempt, "webhook delivery timed out")
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            });
        }
    }
}

/// The stored form (with the secret, which the API never returns).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredHook {
    id: String,
    name: String,
    url: String,
    enabled: bool,
    events: Vec<String>,
    signature_secret: String,
    created_at: DateTime<Utc>,
}

impl From<StoredHook> for Webhook {
    fn from(s: StoredHook) -> Self {
        Webhook {
            id: s.id,
            team_id: "stasis".into(),
            name: s.name,
            url: s.url,
            enabled: s.enabled,
            events: s.events,
            signature_secret: s.signature_secret,
            created_at: s.created_at,
        }
    }
}

impl From<Webhook> for StoredHook {
    fn from(w: Webhook) -> Self {
        StoredHook {
            id: w.id,
            name: w.name,
            url: w.url,
            enabled: w.enabled,
            events: w.events,
            signature_secret: w.signature_secret,
            created_at: w.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_e2b_docs() {
        // base64url(sha256("secret" + "{}")), unpadded.
        let want = {
            let d = sha2::Sha256::digest(b"secret{}");
            base64::engine::general_purpose::STANDARD
                .encode(d)
                .replace('+', "-")
                .replace('/', "_")
                .trim_end_matches('=')
                .to_owned()
        };
        assert_eq!(signature("secret", b"{}"), want);
    }

    #[test]
    fn registrations_are_validated_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let w = Webhooks::open(dir.path()).unwrap();
        let bad = |url: &str, ev: Vec<String>| {
            w.create(WebhookRequest {
                url: Some(url.into()),
                events: Some(ev),
                signature_secret: Some("s".into()),
                ..Default::default()
            })
            .is_err()
        };
        assert!(bad("ftp://x", vec![]));
        assert!(bad("not a url", vec![]));
        assert!(bad("http://127.0.0.1:9/h", vec!["sandbox.nope".into()]));
        let h = w
            .create(WebhookRequest {
                url: Some("http://127.0.0.1:9/h".into()),
                signature_secret: Some("s".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(h.events.len(), EVENT_TYPES.len());
        let again = Webhooks::open(dir.path()).unwrap();
        assert_eq!(again.get(&h.id).unwrap().signature_secret, "s");
        let json = serde_json::to_value(again.get(&h.id).unwrap()).unwrap();
        assert!(
            json.get("signatureSecret").is_none(),
            "secret is never returned"
        );
        again.delete(&h.id).unwrap();
        assert!(matches!(again.get(&h.id), Err(WebhookError::NotFound(_))));
    }
}

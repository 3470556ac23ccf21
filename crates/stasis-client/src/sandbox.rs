//! [`Sandbox`]: one sandbox, shaped like E2B's classic `Sandbox` class.
//!
//! ```text
//!                pause()
//!   ┌─────────┐ ────────────► ┌────────┐
//!   │ running │               │ paused │
//!   └─────────┘ ◄──────────── └────────┘
//!        │       connect(id)       │
//!        │ kill()           kill() │
//!        ▼                         ▼
//!   ┌───────────────────────────────────┐
//!   │               killed              │
//!   └───────────────────────────────────┘
//! ```
//!
//! The associated functions (`Sandbox::create`, `connect`, `list`, `kill_by_id`) read
//! the connection from the environment; with a [`Client`] the same calls take an
//! explicit [`crate::ConnectionConfig`].

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use stasis_e2b_api as wire;

use crate::client::{secs, Client};
use crate::code::{contexts_call, Context, RunCode};
use crate::commands::Commands;
use crate::envd::Envd;
use crate::error::{Error, Result};
use crate::files::Files;

pub use wire::{ListedSandbox, SandboxDetail as SandboxInfo, SandboxMetric, SandboxState};

/// Template of a sandbox created without one.
pub const DEFAULT_TEMPLATE: &str = "base";

/// Pause (instead of kill) a sandbox after a period of inactivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutoPause {
    pub enabled: bool,
    /// Inactivity before the pause (default: the sandbox timeout).
    pub timeout: Option<Duration>,
}

/// A live sandbox.
#[derive(Clone, Debug)]
pub struct Sandbox {
    client: Client,
    info: wire::Sandbox,
}

impl Sandbox {
    pub(crate) fn from_wire(client: Client, info: wire::Sandbox) -> Self {
        Self { client, info }
    }

    /// Creates a sandbox from the `base` template, configured from the environment.
    pub async fn create() -> Result<Sandbox> {
        Self::builder().create().await
    }

    /// A builder for a sandbox with options.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::new()
    }

    /// Connects to a sandbox by id, resuming it if paused.
    pub async fn connect(id: &str) -> Result<Sandbox> {
        Client::from_env()?.connect(id, None).await
    }

    /// Lists sandboxes (configured from the environment).
    pub fn list(query: SandboxQuery) -> Result<Paginator> {
        Ok(Client::from_env()?.list(query))
    }

    /// Kills a sandbox by id; `Ok(false)` if there was none. (`Sandbox::kill(id)` in
    /// the JavaScript SDK; Rust cannot overload `kill` with the method.)
    pub async fn kill_by_id(id: &str) -> Result<bool> {
        Client::from_env()?.kill(id).await
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        self.info.sandbox_id.as_str()
    }

    /// The sandbox id (E2B's name).
    pub fn sandbox_id(&self) -> &str {
        self.id()
    }

    /// The template it was created from.
    pub fn template_id(&self) -> &str {
        &self.info.template_id
    }

    /// What the server answered at create or connect time.
    pub fn wire(&self) -> &wire::Sandbox {
        &self.info
    }

    /// The client this sandbox talks through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn envd(&self) -> Envd {
        Envd {
            client: self.client.clone(),
            sandbox_id: self.id().to_owned(),
            token: self.info.envd_access_token.clone(),
        }
    }

    /// Processes inside the sandbox.
    pub fn commands(&self) -> Commands {
        Commands { envd: self.envd() }
    }

    /// The sandbox's filesystem.
    pub fn files(&self) -> Files {
        Files {
            envd: self.envd(),
            user: None,
        }
    }

    /// Runs code in the code interpreter (sandboxes of `code-interpreter-v1`).
    pub fn run_code(&self, code: impl Into<String>) -> RunCode {
        RunCode::new(self.envd(), code.into())
    }

    /// Creates an interpreter context (`language` default python, `cwd` default
    /// `/home/user`).
    pub async fn create_code_context(
        &self,
        language: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<Context> {
        let mut body = serde_json::Map::new();
        if let Some(l) = language {
            body.insert("language".into(), json!(l));
        }
        if let Some(c) = cwd {
            body.insert("cwd".into(), json!(c));
        }
        let b = contexts_call(&self.envd(), Method::POST, "/contexts", Some(body.into())).await?;
        crate::client::parse(&b, "create context")
    }

    /// The interpreter contexts.
    pub async fn list_code_contexts(&self) -> Result<Vec<Context>> {
        let b = contexts_call(&self.envd(), Method::GET, "/contexts", None).await?;
        crate::client::parse(&b, "list contexts")
    }

    /// Removes an interpreter context.
    pub async fn remove_code_context(&self, context: &Context) -> Result<()> {
        contexts_call(
            &self.envd(),
            Method::DELETE,
            &format!("/contexts/{}", context.id),
            None,
        )
        .await?;
        Ok(())
    }

    /// Restarts an interpreter context (its state is lost).
    pub async fn restart_code_context(&self, context: &Context) -> Result<()> {
        contexts_call(
            &self.envd(),
            Method::POST,
            &format!("/contexts/{}/restart", context.id),
            None,
        )
        .await?;
        Ok(())
    }

    /// Pauses the sandbox with its memory and processes; resume with
    /// [`Sandbox::connect`]. [`Error::AlreadyPaused`] if it was paused.
    pub async fn pause(&self) -> Result<()> {
        self.client.pause(self.id()).await
    }

    /// Alias of [`pause`](Self::pause) (E2B's `betaPause`).
    pub async fn beta_pause(&self) -> Result<()> {
        self.pause().await
    }

    /// Kills the sandbox. `Ok(false)` if it was already gone.
    pub async fn kill(&self) -> Result<bool> {
        self.client.kill(self.id()).await
    }

    /// Sets the time to live to `timeout` from now.
    pub async fn set_timeout(&self, timeout: Duration) -> Result<()> {
        self.client.set_timeout(self.id(), timeout).await
    }

    /// State, times, resources, metadata and lifecycle.
    pub async fn get_info(&self) -> Result<SandboxInfo> {
        self.client.get_info(self.id()).await
    }

    /// Resource samples.
    pub async fn metrics(&self) -> Result<Vec<SandboxMetric>> {
        self.client.metrics(self.id()).await
    }

    /// A running copy of this sandbox (memory, processes and files).
    pub async fn fork(&self) -> Result<Sandbox> {
        let mut v = self.fork_many(1).await?;
        v.pop().ok_or_else(|| Error::Protocol {
            message: "fork returned no sandbox".into(),
        })
    }

    /// `count` running copies of this sandbox.
    pub async fn fork_many(&self, count: u32) -> Result<Vec<Sandbox>> {
        self.client.fork(self.id(), count).await
    }

    /// Whether envd in the sandbox answers (false when paused or killed).
    pub async fn is_running(&self) -> Result<bool> {
        let envd = self.envd();
        let (url, req) = envd.request(wire::ENVD_PORT, Method::GET, "/health");
        let rt = self.client.config().request_timeout;
        let resp = req
            .timeout(rt)
            .send()
            .await
            .map_err(|e| Error::transport(&url, "health", rt, e))?;
        Ok(resp.status().is_success())
    }
}

/// Options of a new sandbox; see [`Sandbox::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .create() to create the sandbox"]
pub struct SandboxBuilder {
    client: Option<Client>,
    req: wire::NewSandbox,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SandboxBuilder {
    /// Defaults: template `base`, the server's default timeout (300 s).
    pub fn new() -> Self {
        Self {
            client: None,
            req: wire::NewSandbox {
                template_id: DEFAULT_TEMPLATE.into(),
                ..Default::default()
            },
        }
    }

    /// Uses this client instead of one from the environment.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Uses this connection config instead of the environment.
    pub fn config(mut self, config: crate::ConnectionConfig) -> Result<Self> {
        self.client = Some(Client::new(config)?);
        Ok(self)
    }

    /// Template name or alias.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.req.template_id = template.into();
        self
    }

    /// Time to live (whole seconds, at least one).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.req.timeout = Some(secs(timeout));
        self
    }

    /// A metadata pair (for [`SandboxQuery::metadata`] filters).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.metadata.insert(key.into(), value.into());
        self
    }

    /// A sandbox-wide environment variable for every command and execution.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.env_vars.insert(key.into(), value.into());
        self
    }

    /// Sandbox-wide environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.req
            .env_vars
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Pause instead of kill when the sandbox times out; with a `timeout`, after that
    /// much inactivity (sent in E2B's object form `{"enabled", "timeout": ms}`).
    pub fn auto_pause(mut self, auto: AutoPause) -> Self {
        self.req.auto_pause = Some(wire::AutoPause {
            enabled: auto.enabled,
            timeout_ms: auto.timeout.map(|t| t.as_millis() as u64),
        });
        self
    }

    /// Resume a paused sandbox transparently when traffic reaches it (needs
    /// auto-pause).
    pub fn auto_resume(mut self, enabled: bool) -> Self {
        self.req.auto_resume = Some(wire::AutoResume { enabled });
        self
    }

    /// Whether the sandbox may reach the internet (when the server allows it).
    pub fn allow_internet_access(mut self, allow: bool) -> Self {
        self.req.allow_internet_access = Some(allow);
        self
    }

    /// The request body this builder sends.
    pub fn request(&self) -> &wire::NewSandbox {
        &self.req
    }

    /// Creates the sandbox.
    pub async fn create(self) -> Result<Sandbox> {
        let client = match self.client {
            Some(c) => c,
            None => Client::from_env()?,
        };
        client.create(&self.req).await
    }
}

/// Filters of [`Sandbox::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxQuery {
    /// Only these states (default: running and paused).
    pub state: Option<Vec<SandboxState>>,
    /// Only sandboxes with all of these metadata pairs.
    pub metadata: BTreeMap<String, String>,
    /// Page size (1–100, default 100).
    pub limit: Option<u32>,
}

impl SandboxQuery {
    /// Sandboxes in `states`.
    pub fn state(states: impl IntoIterator<Item = SandboxState>) -> Self {
        Self {
            state: Some(states.into_iter().collect()),
            ..Default::default()
        }
    }

    /// Adds a metadata filter.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    fn wire(&self) -> Result<wire::ListQuery> {
        let mut q = wire::ListQuery::default();
        if let Some(states) = &self.state {
            if states.is_empty() {
                return Err(Error::InvalidArgument {
                    message: "an empty state filter matches nothing".into(),
                });
            }
            q.states = wire::StateFilter {
                running: states.contains(&SandboxState::Running),
                paused: states.contains(&SandboxState::Paused),
            };
        }
        q.metadata = self.metadata.clone();
        if let Some(l) = self.limit {
            if !(1..=wire::query::MAX_LIMIT).contains(&l) {
                return Err(Error::InvalidArgument {
                    message: format!("limit {l} is not between 1 and {}", wire::query::MAX_LIMIT),
                });
            }
            q.limit = l;
        }
        Ok(q)
    }
}

/// Pages of a sandbox listing: call [`next_items`](Self::next_items) while
/// [`has_next`](Self::has_next).
#[derive(Debug)]
pub struct Paginator {
    client: Client,
    query: SandboxQuery,
    next_token: Option<String>,
    has_next: bool,
}

impl Paginator {
    pub(crate) fn new(client: Client, query: SandboxQuery) -> Self {
        Self {
            client,
            query,
            next_token: None,
            has_next: true,
        }
    }

    /// Whether another page may be fetched.
    pub fn has_next(&self) -> bool {
        self.has_next
    }

    /// The token of the next page, if the server gave one.
    pub fn next_token(&self) -> Option<&str> {
        self.next_token.as_deref()
    }

    /// The next page.
    pub async fn next_items(&mut self) -> Result<Vec<ListedSandbox>> {
        if !self.has_next {
            return Err(Error::InvalidArgument {
                message: "no more items to fetch".into(),
            });
        }
        let mut q = self.query.wire()?;
        q.next_token = self.next_token.clone();
        let (items, next) = self.client.list_page(&q).await?;
        self.has_next = next.is_some();
        self.next_token = next;
        Ok(items)
    }

    /// Every remaining page, concatenated.
    pub async fn all(mut self) -> Result<Vec<ListedSandbox>> {
        let mut out = Vec::new();
        while self.has_next {
            out.extend(self.next_items().await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sends_the_object_form_of_auto_pause() {
        let b = Sandbox::builder()
            .timeout(Duration::from_secs(600))
            .auto_pause(AutoPause {
                enabled: true,
                timeout: Some(Duration::from_secs(600)),
            })
            .auto_resume(true)
            .metadata("owner", "me")
            .env("A", "1");
        assert_eq!(
            serde_json::to_value(b.request()).unwrap(),
            json!({"templateID": "base", "timeout": 600,
                   "autoPause": {"enabled": true, "timeout": 600000},
                   "autoResume": {"enabled": true},
                   "metadata": {"owner": "me"}, "envVars": {"A": "1"}})
        );
    }

    #[test]
    fn query_strings() {
        let q = SandboxQuery::state([SandboxState::Paused]).metadata("k", "v w");
        let s = q.wire().unwrap().to_query_string();
        assert_eq!(
            wire::ListQuery::parse(&s).unwrap().metadata["k"],
            "v w",
            "{s}"
        );
        assert!(s.starts_with("state=paused"), "{s}");
        assert!(SandboxQuery::state([]).wire().is_err());
        assert!(SandboxQuery::default().limit(0).wire().is_err());
    }
}

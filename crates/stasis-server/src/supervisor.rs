//! The supervisor: one owner task per sandbox, which holds the sandbox's lifecycle and
//! runs its operations one at a time; HTTP handlers and the proxy only send it requests
//! and await the answers.
//!
//! It also keeps the in-memory indexes the proxy needs (id → sandbox, access token →
//! id), persists every transition to the catalog before answering, and on start
//! reconciles the catalog with what the runtime finds on disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde::{Deserialize, Serialize};
use stasis_runtime::{
    AgentSpec, NetworkPolicy, PauseMode, Runtime, RuntimeError, SandboxInfo, SandboxSpec,
    SandboxState, Stats,
};
use stasis_types::{Resources, SandboxId, TemplateName};
use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::envd::{EnvdClient, EnvdError};
use crate::lifecycle::{decide, Ask, Decision, OnTimeout, Phase, Stable};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the server knows about a sandbox; persisted in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: SandboxId,
    pub template: String,
    pub alias: String,
    pub client_id: String,
    pub token: String,
    pub phase: Phase,
    pub started_at_ms: u64,
    /// When the inactivity timeout expires (running sandboxes only).
    pub end_at_ms: Option<u64>,
    /// The inactivity window.
    pub timeout_ms: u64,
    pub on_timeout: OnTimeout,
    pub auto_resume: bool,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub resources: Resources,
    pub disk_size_mb: u64,
    pub allow_internet: bool,
    /// Egress rules beyond `allow_internet`. Kept by the runtime (in its record), which
    /// is where a restart reads them back from; not in the catalog.
    pub network: NetworkPolicy,
    pub address: Option<Ipv4Addr>,
}

/// Persistence of entries (the catalog), as the supervisor needs it.
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces an entry, durably.
    fn put(&self, e: &Entry) -> anyhow::Result<()>;
    fn delete(&self, id: &SandboxId) -> anyhow::Result<()>;
    fn all(&self) -> anyhow::Result<Vec<Entry>>;
    /// Records a lifecycle event about `e` (and announces it to webhooks).
    fn event(&self, e: &Entry, kind: &str, detail: serde_json::Value);
}

/// Errors of supervisor operations; `api::error` maps them to HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum SupError {
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    #[error("sandbox {0} is already paused")]
    AlreadyPaused(SandboxId),
    #[error("sandbox {0} is already running")]
    AlreadyRunning(SandboxId),
    #[error("sandbox {id} is not running; cannot {op}")]
    NotRunning { id: SandboxId, op: &'static str },
    #[error("sandbox {0} was killed")]
    Gone(SandboxId),
    #[error("{0}")]
    BadRequest(String),
    #[error("template {0:?} not found")]
    TemplateNotFound(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("sandbox {id}: the agent is not answering: {source}")]
    Agent {
        id: SandboxId,
        #[source]
        source: EnvdError,
    },
    #[error("catalog: {0:#}")]
    Store(anyhow::Error),
    #[error("{0}")]
    Internal(String),
}

type Reply<T> = oneshot::Sender<Result<T, SupError>>;

/// Whether a connect found the sandbox running or resumed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    AlreadyRunning,
    Resumed,
}

enum Command {
    Pause {
        memory: bool,
        reply: Reply<()>,
    },
    Connect {
        timeout_ms: Option<u64>,
        legacy_resume: bool,
        reply: Reply<Connected>,
    },
    AutoResume {
        reply: Reply<Option<Ipv4Addr>>,
    },
    Route {
        reply: Reply<Option<Ipv4Addr>>,
    },
    Kill {
        reply: Reply<()>,
    },
    SetTimeout {
        timeout_ms: u64,
        reply: Reply<()>,
    },
    Refresh {
        duration_ms: u64,
        reply: Reply<()>,
    },
    Fork {
        count: usize,
        reply: Reply<Vec<Entry>>,
    },
    Metrics {
        reply: Reply<Option<Stats>>,
    },
    SetNetwork {
        allow_internet: bool,
        policy: NetworkPolicy,
        reply: Reply<()>,
    },
}

impl Command {
    fn ask(&self) -> Ask {
        match self {
            Command::Pause { .. } => Ask::Pause,
            Command::Connect {
                legacy_resume: false,
                ..
            } => Ask::Connect,
            Command::Connect {
                legacy_resume: true,
                ..
            } => Ask::Resume,
            Command::AutoResume { .. } => Ask::AutoResume,
            Command::Route { .. } => Ask::Route,
            Command::Kill { .. } => Ask::Kill,
            Command::SetTimeout { .. } => Ask::SetTimeout,
            Command::Refresh { .. } => Ask::Refresh,
            Command::Fork { .. } => Ask::Fork,
            Command::Metrics { .. } => Ask::Metrics,
            Command::SetNetwork { .. } => Ask::SetNetwork,
        }
    }

    /// Answers the request with "the sandbox was killed".
    fn gone(self, id: &SandboxId) {
        let e = || SupError::Gone(id.clone());
        match self {
            Command::Pause { reply, .. } => drop(reply.send(Err(e()))),
            Command::Connect { reply, .. } => drop(reply.send(Err(e()))),
            Command::AutoResume { reply } | Command::Route { reply } => drop(reply.send(Ok(None))),
            Command::Kill { reply } => drop(reply.send(Ok(()))),
            Command::SetTimeout { reply, .. } | Command::Refresh { reply, .. } => {
                drop(reply.send(Err(e())))
            }
            Command::Fork { reply, .. } => drop(reply.send(Err(e()))),
            Command::Metrics { reply } => drop(reply.send(Err(e()))),
            Command::SetNetwork { reply, .. } => drop(reply.send(Err(e()))),
        }
    }
}

/// Inactivity accounting of a running sandbox, shared with the proxy and the handlers.
#[derive(Debug)]
pub struct Activity {
    deadline_ms: AtomicU64,
    window_ms: AtomicU64,
    streams: AtomicUsize,
}

impl Activity {
    fn new(deadline_ms: u64, window_ms: u64) -> Self {
        Self {
            deadline_ms: AtomicU64::new(deadline_ms),
            window_ms: AtomicU64::new(window_ms),
            streams: AtomicUsize::new(0),
        }
    }

    /// Pushes the deadline to at least now + the window.
    pub fn touch(&self) {
        let want = now_ms() + self.window_ms.load(Ordering::Relaxed);
        self.deadline_ms.fetch_max(want, Ordering::Relaxed);
    }

    fn set_deadline(&self, ms: u64) {
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self) -> u64 {
        self.deadline_ms.load(Ordering::Relaxed)
    }

    /// Marks an open stream; the sandbox counts as active until the guard drops.
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.touch();
        StreamGuard(self.clone())
    }

    fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
}

/// See [`Activity::stream`].
pub struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The shared view of one sandbox.
struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    entry: RwLock<Entry>,
    activity: Arc<Activity>,
    /// Cancelled before a pause or kill: ends every proxied connection to the sandbox.
    cancel: Mutex<CancellationToken>,
    /// When the sandbox's processes last started running (create or resume), for CPU
    /// usage percentages.
    since_ms: AtomicU64,
    /// Cancelled when a kill aborts the operation in progress (a new one per operation):
    /// its waits that are not the runtime's (the agent's health after a restore) end at
    /// once, and its failure, the kill's doing, is answered "the sandbox is gone".
    abort: Mutex<CancellationToken>,
}

impl Handle {
    fn entry(&self) -> Entry {
        self.entry.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The abort token of the operation in progress.
    fn abort_token(&self) -> CancellationToken {
        self.abort.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn drop_connections(&self) {
        let mut c = self.cancel.lock().unwrap_or_else(|p| p.into_inner());
        c.cancel();
        *c = CancellationToken::new();
    }
}

/// Where the proxy sends a request.
pub struct Upstream {
    pub address: Ipv4Addr,
    pub cancel: CancellationToken,
    pub activity: Arc<Activity>,
}

/// Settings of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The agent binary (stasis-envd) run as PID 1 of every sandbox.
    pub envd_binary: PathBuf,
    /// How long a new or resumed sandbox's agent has to answer.
    pub ready_timeout: Duration,
    /// Templates that exist, by name and alias → canonical name.
    pub templates: BTreeMap<String, String>,
    /// Per canonical template: ports whose `/health` must answer before a new sandbox
    /// is handed out (the code interpreter's, for example).
    pub ready_ports: BTreeMap<String, Vec<u16>>,
    pub default_resources: Resources,
    pub disk_size_mb: u64,
    pub client_id: String,
}

struct Inner {
    runtime: Arc<dyn Runtime>,
    store: Arc<dyn Store>,
    envd: EnvdClient,
    cfg: SupervisorConfig,
    handles: RwLock<HashMap<SandboxId, Arc<Handle>>>,
    tokens: RwLock<HashMap<String, SandboxId>>,
    /// Ends every owner task (the sandboxes keep running).
    shutdown: CancellationToken,
}

/// The supervisor (cheap to clone).
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// What a create request asks for.
#[derive(Debug, Clone)]
pub struct CreateParams {
    pub template: String,
    pub timeout_ms: u64,
    pub on_timeout: OnTimeout,
    pub auto_resume: bool,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    pub allow_internet: bool,
    pub network: NetworkPolicy,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, SupError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SupError::Internal(format!("runtime task failed: {e}")))?
        .map_err(SupError::from)
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

impl Supervisor {
    /// Reconciles the catalog with the runtime, then starts an owner for every sandbox
    /// that survived. Call before serving.
    pub async fn start(
        cfg: SupervisorConfig,
        runtime: Arc<dyn Runtime>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let sup = Supervisor {
            inner: Arc::new(Inner {
                runtime,
                store,
                envd: EnvdClient::new(),
                cfg,
                handles: RwLock::new(HashMap::new()),
                tokens: RwLock::new(HashMap::new()),
                shutdown: CancellationToken::new(),
            }),
        };
        sup.reconcile().await?;
        Ok(sup)
    }

    /// Reconciles the catalog with what the runtime found on disk. Nothing that may hold
    /// a user's data is deleted: a sandbox the catalog does not know is quarantined, one
    /// whose processes died keeps its files (see [`Owner::died`]), one whose snapshot
    /// cannot be read stays listed as paused and says why when resumed.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let rt = self.inner.runtime.clone();
        let found: Vec<SandboxInfo> = tokio::task::spawn_blocking(move || rt.adopt()).await??;
        let mut on_disk: HashMap<SandboxId, SandboxInfo> =
            found.into_iter().map(|i| (i.spec.id.clone(), i)).collect();
        let entries = self.inner.store.all()?;
        let mut kept = 0;
        for mut e in entries {
            let disk = on_disk.remove(&e.id);
            let state = disk.as_ref().map(|i| &i.state);
            let stable = match (&e.phase, state) {
                // Never handed out (create or fork not acknowledged), or being killed.
                (Phase::Starting | Phase::Killing, _) => None,
                (_, Some(SandboxState::Running { .. })) => Some(Stable::Running),
                (_, Some(SandboxState::Paused { .. } | SandboxState::Broken { .. })) => {
                    Some(Stable::Paused)
                }
                (_, Some(SandboxState::Stopped)) => Some(Stable::Running),
                (_, None) => None,
            };
            let Some(stable) = stable else {
                warn!(sandbox_id = %e.id, phase = e.phase.name(),
                      disk = ?disk.as_ref().map(|d| d.state.name()), "removing a sandbox that was never handed out or was being killed, or has nothing on disk");
                let id = e.id.clone();
                let rt = self.inner.runtime.clone();
                if disk.is_some() {
                    if let Err(err) = blocking(move || rt.kill(&id)).await {
                        error!(sandbox_id = %e.id, error = %err, "could not remove it");
                        continue;
                    }
                }
                self.inner.store.delete(&e.id)?;
                self.inner
                    .store
                    .event(&e, "lost", serde_json::json!({"phase": e.phase.name()}));
                continue;
            };
            if let Some(SandboxState::Broken { reason }) = state {
                warn!(sandbox_id = %e.id, %reason, "a paused sandbox whose snapshot cannot be used; kept");
                self.inner
                    .store
                    .event(&e, "broken", serde_json::json!({"reason": reason}));
            }
            e.address = disk.as_ref().map(|d| d.address).or(e.address);
            if let Some(d) = &disk {
                e.network = d.spec.network.clone();
                e.allow_internet = d.spec.allow_internet;
            }
            match stable {
                Stable::Running => {
                    e.phase = Phase::Running;
                    if e.end_at_ms.is_none() {
                        e.end_at_ms = Some(now_ms() + e.timeout_ms);
                    }
                }
                Stable::Paused => {
                    e.phase = Phase::Paused;
                    e.end_at_ms = None;
                }
            }
            self.inner.store.put(&e)?;
            // A sandbox whose processes are gone starts as running; its owner sees at
            // once that nothing answers its watch and settles it (`Owner::died`).
            self.spawn_owner(e, stable);
            kept += 1;
        }
        for (id, _) in on_disk {
            warn!(sandbox_id = %id, "a sandbox the catalog does not know; quarantining it");
            let rt = self.inner.runtime.clone();
            let qid = id.clone();
            if let Err(err) = blocking(move || rt.quarantine(&qid)).await {
                error!(sandbox_id = %id, error = %err, "could not quarantine it");
            }
        }
        info!(sandboxes = kept, "reconciled catalog with runtime");
        Ok(())
    }

    fn spawn_owner(&self, entry: Entry, stable: Stable) {
        let (tx, rx) = mpsc::unbounded_channel();
        let deadline = entry.end_at_ms.unwrap_or(u64::MAX);
        let handle = Arc::new(Handle {
            tx,
            activity: Arc::new(Activity::new(deadline, entry.timeout_ms)),
            cancel: Mutex::new(CancellationToken::new()),
            since_ms: AtomicU64::new(now_ms()),
            abort: Mutex::new(CancellationToken::new()),
            entry: RwLock::new(entry.clone()),
        });
        self.inner
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.token.clone(), entry.id.clone());
        self.inner
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.id.clone(), handle.clone());
        let owner = Owner {
            sup: self.clone(),
            handle,
            id: entry.id.clone(),
            stable,
            watch: None,
            pause_failures: 0,
        };
        let span = tracing::info_span!("sandbox", sandbox_id = %entry.id);
        tokio::spawn(owner.run(rx).instrument(span));
    }

    fn handle(&self, id: &SandboxId) -> Option<Arc<Handle>> {
        self.inner
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    async fn send<T>(
        &self,
        id: &SandboxId,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, SupError> {
        let h = self
            .handle(id)
            .ok_or_else(|| SupError::NotFound(id.clone()))?;
        let (tx, rx) = oneshot::channel();
        h.tx.send(make(tx))
            .map_err(|_| SupError::NotFound(id.clone()))?;
        rx.await.map_err(|_| SupError::NotFound(id.clone()))?
    }

    /// The current entry of a sandbox.
    pub fn get(&self, id: &SandboxId) -> Option<Entry> {
        self.handle(id).map(|h| h.entry())
    }

    /// When the sandbox's processes last started (create, restore or server start).
    pub fn running_since_ms(&self, id: &SandboxId) -> Option<u64> {
        self.handle(id).map(|h| h.since_ms.load(Ordering::Relaxed))
    }

    /// The current inactivity deadline of a running sandbox.
    pub fn deadline_ms(&self, id: &SandboxId) -> Option<u64> {
        self.handle(id)
            .filter(|h| h.entry().phase == Phase::Running)
            .map(|h| h.activity.deadline())
    }

    /// Every sandbox the supervisor owns.
    pub fn entries(&self) -> Vec<Entry> {
        self.inner
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|h| h.entry())
            .collect()
    }

    /// Stops every owner task once its current operation ends, and forgets the sandboxes
    /// (they keep running; the next start adopts them). This releases the runtime.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.inner
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Records activity on a sandbox (an API call about it).
    pub fn touch(&self, id: &SandboxId) {
        if let Some(h) = self.handle(id) {
            h.activity.touch();
        }
    }

    pub fn sandbox_by_token(&self, token: &str) -> Option<SandboxId> {
        self.inner
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// The first sandbox whose access token satisfies `pred`.
    pub fn find_by_token(&self, pred: impl Fn(&str) -> bool) -> Option<SandboxId> {
        self.inner
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(t, _)| pred(t))
            .map(|(_, id)| id.clone())
    }

    /// The only sandbox, if exactly one exists.
    pub fn only_sandbox(&self) -> Option<SandboxId> {
        let h = self.inner.handles.read().unwrap_or_else(|p| p.into_inner());
        if h.len() == 1 {
            h.keys().next().cloned()
        } else {
            None
        }
    }

    pub fn http(&self) -> &Client<HttpConnector, Body> {
        self.inner.envd.http()
    }

    /// Where to send traffic for `id`: running sandboxes directly; a sandbox in a
    /// transition after it ends; a paused one with auto-resume after resuming it.
    pub async fn upstream(&self, id: &SandboxId) -> Option<Upstream> {
        let h = self.handle(id)?;
        let e = h.entry();
        let address = if e.phase == Phase::Running {
            e.address?
        } else if e.auto_resume {
            self.send(id, |reply| Command::AutoResume { reply })
                .await
                .ok()??
        } else {
            self.send(id, |reply| Command::Route { reply })
                .await
                .ok()??
        };
        let cancel = h.cancel.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(Upstream {
            address,
            cancel,
            activity: h.activity.clone(),
        })
    }

    /// Creates a sandbox and waits until its agent answers.
    pub async fn create(&self, p: CreateParams) -> Result<Entry, SupError> {
        let template = self
            .inner
            .cfg
            .templates
            .get(&p.template)
            .cloned()
            .ok_or_else(|| SupError::TemplateNotFound(p.template.clone()))?;
        let template_name: TemplateName = template
            .parse()
            .map_err(|e| SupError::BadRequest(format!("template: {e}")))?;
        let id = SandboxId::generate();
        let now = now_ms();
        let mut entry = Entry {
            id: id.clone(),
            template: template.clone(),
            alias: p.template.clone(),
            client_id: self.inner.cfg.client_id.clone(),
            token: random_token(),
            phase: Phase::Starting,
            started_at_ms: now,
            end_at_ms: None,
            timeout_ms: p.timeout_ms,
            on_timeout: p.on_timeout,
            auto_resume: p.auto_resume,
            metadata: p.metadata,
            env_vars: p.env_vars,
            resources: self.inner.cfg.default_resources,
            disk_size_mb: self.inner.cfg.disk_size_mb,
            allow_internet: p.allow_internet,
            network: p.network.clone(),
            address: None,
        };
        self.inner.store.put(&entry).map_err(SupError::Store)?;
        let mut spec = SandboxSpec::new(
            id.clone(),
            template_name,
            AgentSpec {
                binary: self.inner.cfg.envd_binary.clone(),
                args: vec![],
                env: vec![],
            },
        );
        spec.resources = entry.resources;
        spec.allow_internet = entry.allow_internet;
        spec.network = entry.network.clone();
        spec.hostname = "e2b.local".into();
        let rt = self.inner.runtime.clone();
        let made = async {
            let info = blocking(move || rt.create(spec)).await?;
            self.inner
                .envd
                .wait_healthy(info.address, self.inner.cfg.ready_timeout)
                .await
                .map_err(|source| SupError::Agent {
                    id: id.clone(),
                    source,
                })?;
            self.inner
                .envd
                .init(info.address, &entry.token, &entry.env_vars)
                .await
                .map_err(|source| SupError::Agent {
                    id: id.clone(),
                    source,
                })?;
            let ports = self.inner.cfg.ready_ports.get(&template);
            for port in ports.into_iter().flatten() {
                self.inner
                    .envd
                    .wait_healthy_port(info.address, *port, self.inner.cfg.ready_timeout)
                    .await
                    .map_err(|source| SupError::Agent {
                        id: id.clone(),
                        source,
                    })?;
            }
            Ok::<_, SupError>(info.address)
        }
        .await;
        match made {
            Ok(address) => {
                entry.address = Some(address);
                entry.phase = Phase::Running;
                entry.end_at_ms = Some(now_ms() + entry.timeout_ms);
                self.inner.store.put(&entry).map_err(SupError::Store)?;
                self.inner.store.event(
                    &entry,
                    "created",
                    serde_json::json!({"template": entry.template, "address": address.to_string()}),
                );
                info!(sandbox_id = %id, template = %entry.template, %address, "sandbox created");
                self.spawn_owner(entry.clone(), Stable::Running);
                Ok(entry)
            }
            Err(e) => {
                warn!(sandbox_id = %id, error = %e, "create failed");
                let rt = self.inner.runtime.clone();
                let kid = id.clone();
                match blocking(move || rt.kill(&kid)).await {
                    Ok(()) | Err(SupError::Runtime(RuntimeError::NotFound(_))) => {}
                    Err(k) => {
                        error!(sandbox_id = %id, error = %k, "cleanup after a failed create failed")
                    }
                }
                let _ = self.inner.store.delete(&id);
                Err(e)
            }
        }
    }

    pub async fn pause(&self, id: &SandboxId, memory: bool) -> Result<(), SupError> {
        self.send(id, |reply| Command::Pause { memory, reply })
            .await
    }

    /// Resumes a paused sandbox or extends a running one's timeout.
    pub async fn connect(
        &self,
        id: &SandboxId,
        timeout_ms: Option<u64>,
    ) -> Result<(Entry, Connected), SupError> {
        let c = self
            .send(id, |reply| Command::Connect {
                timeout_ms,
                legacy_resume: false,
                reply,
            })
            .await?;
        let e = self.get(id).ok_or_else(|| SupError::NotFound(id.clone()))?;
        Ok((e, c))
    }

    /// Legacy resume: 409 if the sandbox is running.
    pub async fn resume(&self, id: &SandboxId, timeout_ms: Option<u64>) -> Result<Entry, SupError> {
        self.send(id, |reply| Command::Connect {
            timeout_ms,
            legacy_resume: true,
            reply,
        })
        .await?;
        self.get(id).ok_or_else(|| SupError::NotFound(id.clone()))
    }

    pub async fn kill(&self, id: &SandboxId) -> Result<(), SupError> {
        self.send(id, |reply| Command::Kill { reply }).await
    }

    pub async fn set_timeout(&self, id: &SandboxId, timeout_ms: u64) -> Result<(), SupError> {
        self.send(id, |reply| Command::SetTimeout { timeout_ms, reply })
            .await
    }

    pub async fn refresh(&self, id: &SandboxId, duration_ms: u64) -> Result<(), SupError> {
        self.send(id, |reply| Command::Refresh { duration_ms, reply })
            .await
    }

    pub async fn fork(&self, id: &SandboxId, count: usize) -> Result<Vec<Entry>, SupError> {
        self.send(id, |reply| Command::Fork { count, reply }).await
    }

    /// Replaces a sandbox's egress rules (at once if it runs, at its resume if paused).
    pub async fn set_network(
        &self,
        id: &SandboxId,
        allow_internet: bool,
        policy: NetworkPolicy,
    ) -> Result<(), SupError> {
        self.send(id, |reply| Command::SetNetwork {
            allow_internet,
            policy,
            reply,
        })
        .await
    }

    /// Resource usage, or `None` for a paused sandbox.
    pub async fn metrics(&self, id: &SandboxId) -> Result<Option<Stats>, SupError> {
        self.send(id, |reply| Command::Metrics { reply }).await
    }
}

/// The owner task of one sandbox.
struct Owner {
    sup: Supervisor,
    handle: Arc<Handle>,
    id: SandboxId,
    stable: Stable,
    /// A pidfd of the sandbox's PID 1 while it runs: readable once it exits.
    watch: Option<AsyncFd<OwnedFd>>,
    /// Auto-pauses that failed in a row (see [`Owner::auto_pause`]).
    pause_failures: u32,
}

/// Retries of a failed auto-pause before falling back to a filesystem-only pause.
const AUTO_PAUSE_RETRIES: u32 = 3;
/// Longest delay between two auto-pause attempts.
const AUTO_PAUSE_MAX_DELAY_MS: u64 = 5 * 60 * 1000;

/// Resolves when the watched process has exited; never without a watch.
async fn exited(watch: &Option<AsyncFd<OwnedFd>>) {
    match watch {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// Awaits `op` while taking the owner's incoming requests: a kill that arrives makes the
/// runtime end the programs working on the sandbox, so the operation fails at once and
/// rolls back instead of holding the kill until its deadline.
async fn while_taking_requests<T>(
    op: impl std::future::Future<Output = T>,
    runtime: Arc<dyn Runtime>,
    handle: Arc<Handle>,
    id: SandboxId,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    queue: &mut VecDeque<Command>,
) -> T {
    tokio::pin!(op);
    loop {
        tokio::select! {
            r = &mut op => return r,
            Some(c) = rx.recv() => {
                let abort = handle.abort_token();
                if c.ask() == Ask::Kill && !abort.is_cancelled() {
                    abort.cancel();
                    warn!("kill requested during an operation; aborting it");
                    let rt = runtime.clone();
                    let id = id.clone();
                    let _ = tokio::task::spawn_blocking(move || rt.abort(&id)).await;
                }
                queue.push_back(c);
            }
        }
    }
}

impl Owner {
    fn inner(&self) -> &Inner {
        &self.sup.inner
    }

    fn update(&self, f: impl FnOnce(&mut Entry)) -> Result<Entry, SupError> {
        let mut e = self.handle.entry.write().unwrap_or_else(|p| p.into_inner());
        f(&mut e);
        self.inner().store.put(&e).map_err(SupError::Store)?;
        Ok(e.clone())
    }

    fn set_phase(&self, phase: Phase) -> Result<Entry, SupError> {
        self.update(|e| e.phase = phase)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut queue: VecDeque<Command> = VecDeque::new();
        if self.stable == Stable::Running && !self.rewatch().await && self.died().await {
            return;
        }
        loop {
            if queue.is_empty() {
                let wait = match self.stable {
                    Stable::Running => {
                        let d = self.handle.activity.deadline();
                        Duration::from_millis(d.saturating_sub(now_ms()))
                    }
                    Stable::Paused => Duration::from_secs(3600),
                };
                tokio::select! {
                    _ = self.sup.inner.shutdown.cancelled() => return,
                    cmd = rx.recv() => match cmd {
                        Some(c) => queue.push_back(c),
                        None => return,
                    },
                    _ = tokio::time::sleep(wait) => {
                        if self.stable == Stable::Running && self.expired() && self.expire().await {
                            return;
                        }
                        continue;
                    }
                    _ = exited(&self.watch) => {
                        if self.died().await {
                            return;
                        }
                        continue;
                    }
                }
            }
            while let Ok(c) = rx.try_recv() {
                queue.push_back(c);
            }
            // A kill supersedes everything queued before it.
            if let Some(pos) = queue.iter().position(|c| c.ask() == Ask::Kill) {
                let kill = queue.remove(pos).expect("position is valid");
                let Command::Kill { reply } = kill else {
                    unreachable!()
                };
                let r = self.kill().await;
                let done = r.is_ok();
                let _ = reply.send(r);
                if done {
                    for c in queue.drain(..) {
                        c.gone(&self.id);
                    }
                    rx.close();
                    while let Ok(c) = rx.try_recv() {
                        c.gone(&self.id);
                    }
                    return;
                }
                continue;
            }
            if let Some(c) = queue.pop_front() {
                let runtime = self.inner().runtime.clone();
                let id = self.id.clone();
                let handle = self.handle.clone();
                while_taking_requests(
                    self.handle_command(c),
                    runtime,
                    handle,
                    id,
                    &mut rx,
                    &mut queue,
                )
                .await;
                *self.handle.abort.lock().unwrap_or_else(|p| p.into_inner()) =
                    CancellationToken::new();
            }
        }
    }

    /// Watches the sandbox's PID 1. False when it is not running (it died).
    async fn rewatch(&mut self) -> bool {
        let rt = self.inner().runtime.clone();
        let id = self.id.clone();
        // `AsyncFd::new` is deprecated because a registered descriptor closed behind
        // tokio's back is unsound; here the `OwnedFd` lives inside the `AsyncFd` and is
        // closed only when it is dropped, after deregistration.
        #[allow(deprecated)]
        let watched = |fd| AsyncFd::new(fd);
        match blocking(move || rt.watch(&id)).await {
            Ok(Some(fd)) => match watched(fd) {
                Ok(fd) => {
                    self.watch = Some(fd);
                    true
                }
                Err(e) => {
                    warn!(error = %e, "cannot watch the sandbox's PID 1");
                    self.watch = None;
                    true
                }
            },
            Ok(None) => {
                self.watch = None;
                false
            }
            Err(e) => {
                warn!(error = %e, "cannot watch the sandbox's PID 1");
                self.watch = None;
                true
            }
        }
    }

    /// The sandbox's PID 1 exited on its own (the agent crashed, or the sandbox was
    /// killed from outside): every process of it is gone, its files are not. Dead is
    /// dead — it is never reported running again. A sandbox that pauses on timeout keeps
    /// its files as a filesystem-only pause (connect starts it afresh with them); one
    /// that is killed on timeout is killed now. Returns true if the sandbox is gone.
    async fn died(&mut self) -> bool {
        self.watch = None;
        if self.rewatch().await {
            // A new PID 1 (it was restored meanwhile): nothing died.
            return false;
        }
        let entry = self.handle.entry();
        warn!("the sandbox's processes exited");
        self.handle.drop_connections();
        match entry.on_timeout {
            OnTimeout::Pause { .. } => {
                let rt = self.inner().runtime.clone();
                let id = self.id.clone();
                match blocking(move || rt.pause(&id, PauseMode::FilesystemOnly)).await {
                    Ok(snap) => {
                        if let Ok(e) = self.update(|e| {
                            e.phase = Phase::Paused;
                            e.end_at_ms = None;
                        }) {
                            self.inner().store.event(
                                &e,
                                "died",
                                serde_json::json!({"kept": "files", "generation": snap.generation}),
                            );
                        }
                        self.stable = Stable::Paused;
                        self.handle.activity.set_deadline(u64::MAX);
                        false
                    }
                    Err(err) => {
                        error!(error = %err, "could not keep the files of a dead sandbox; killing it");
                        self.inner().store.event(
                            &entry,
                            "died",
                            serde_json::json!({"kept": "nothing", "error": err.to_string()}),
                        );
                        self.kill().await.is_ok()
                    }
                }
            }
            OnTimeout::Kill => {
                self.inner()
                    .store
                    .event(&entry, "died", serde_json::json!({"kept": "nothing"}));
                match self.kill().await {
                    Ok(()) => true,
                    Err(e) => {
                        error!(error = %e, "could not remove a dead sandbox");
                        false
                    }
                }
            }
        }
    }

    /// The failure of an operation that a kill aborted is reported as "killed".
    fn unless_aborted<T>(&self, r: Result<T, SupError>) -> Result<T, SupError> {
        match r {
            Err(_) if self.handle.abort_token().is_cancelled() => {
                Err(SupError::Gone(self.id.clone()))
            }
            r => r,
        }
    }

    fn expired(&self) -> bool {
        now_ms() >= self.handle.activity.deadline() && self.handle.activity.open_streams() == 0
    }

    /// The inactivity timeout expired: pause or kill. Returns true if the sandbox is gone.
    async fn expire(&mut self) -> bool {
        let on_timeout = self.handle.entry().on_timeout;
        info!(?on_timeout, "inactivity timeout expired");
        match on_timeout {
            OnTimeout::Pause { memory } => self.auto_pause(memory).await,
            OnTimeout::Kill => match self.kill().await {
                Ok(()) => true,
                Err(e) => {
                    error!(error = %e, "kill on timeout failed; retrying in 30 s");
                    self.handle.activity.set_deadline(now_ms() + 30_000);
                    false
                }
            },
        }
    }

    /// An auto-pause: a failure is retried [`AUTO_PAUSE_RETRIES`] times with growing
    /// delays; then the sandbox is paused keeping only its files; if that fails too, it
    /// is killed, as a sandbox that is killed on timeout. A failing pause never keeps a
    /// sandbox running (and costing) past its timeout for long. Each step is an event.
    /// Returns true if the sandbox is gone.
    async fn auto_pause(&mut self, memory: bool) -> bool {
        let err = match self.pause(memory).await {
            Ok(()) => {
                self.pause_failures = 0;
                return false;
            }
            Err(e) => e,
        };
        self.pause_failures += 1;
        let entry = self.handle.entry();
        self.inner().store.event(
            &entry,
            "pause_failed",
            serde_json::json!({"attempt": self.pause_failures, "error": err.to_string()}),
        );
        if self.pause_failures <= AUTO_PAUSE_RETRIES {
            let delay = entry
                .timeout_ms
                .saturating_mul(1 << (self.pause_failures - 1))
                .clamp(1_000, AUTO_PAUSE_MAX_DELAY_MS);
            warn!(error = %err, attempt = self.pause_failures, delay_ms = delay, "auto-pause failed; retrying");
            self.handle.activity.set_deadline(now_ms() + delay);
            return false;
        }
        self.pause_failures = 0;
        if memory {
            warn!(error = %err, "auto-pause failed again; keeping only the files");
            match self.pause(false).await {
                Ok(()) => {
                    let e = self.handle.entry();
                    self.inner().store.event(
                        &e,
                        "paused",
                        serde_json::json!({"fallback": "filesystem", "reason": err.to_string()}),
                    );
                    return false;
                }
                Err(e) => {
                    error!(error = %e, "a filesystem-only pause failed too; killing the sandbox");
                }
            }
        }
        match self.kill().await {
            Ok(()) => true,
            Err(e) => {
                error!(error = %e, "kill after failed auto-pauses failed; retrying in 30 s");
                self.handle.activity.set_deadline(now_ms() + 30_000);
                false
            }
        }
    }

    async fn handle_command(&mut self, c: Command) {
        let decision = decide(self.stable, c.ask());
        match c {
            Command::Pause { memory, reply } => {
                let r = match decision {
                    Decision::Run => self.pause(memory).await,
                    _ => Err(SupError::AlreadyPaused(self.id.clone())),
                };
                let _ = reply.send(self.unless_aborted(r));
            }
            Command::Connect {
                timeout_ms, reply, ..
            } => {
                let r = match decision {
                    Decision::Run => {
                        let r = self.resume(timeout_ms).await.map(|_| Connected::Resumed);
                        self.unless_aborted(r)
                    }
                    Decision::AlreadyDone => {
                        if let Some(t) = timeout_ms {
                            let want = now_ms() + t;
                            self.handle
                                .activity
                                .deadline_ms
                                .fetch_max(want, Ordering::Relaxed);
                        }
                        self.handle.activity.touch();
                        self.persist_deadline().map(|_| Connected::AlreadyRunning)
                    }
                    _ => Err(SupError::AlreadyRunning(self.id.clone())),
                };
                let _ = reply.send(r);
            }
            Command::AutoResume { reply } => {
                let r = match decision {
                    Decision::Run => self.resume(None).await.map(|e| e.address),
                    _ => Ok(self.handle.entry().address),
                };
                let _ = reply.send(r);
            }
            Command::Route { reply } => {
                let r = match decision {
                    Decision::AlreadyDone => Ok(self.handle.entry().address),
                    _ => Ok(None),
                };
                let _ = reply.send(r);
            }
            Command::Kill { reply } => {
                // Handled in `run` (it ends the task); unreachable in practice.
                let _ = reply.send(self.kill().await);
            }
            Command::SetTimeout { timeout_ms, reply } => {
                let r = match decision {
                    Decision::Run => {
                        self.handle
                            .activity
                            .window_ms
                            .store(timeout_ms, Ordering::Relaxed);
                        self.handle.activity.set_deadline(now_ms() + timeout_ms);
                        self.update(|e| {
                            e.timeout_ms = timeout_ms;
                            e.end_at_ms = Some(now_ms() + timeout_ms);
                        })
                        .map(|e| {
                            self.inner().store.event(
                                &e,
                                "updated",
                                serde_json::json!({"timeoutMs": timeout_ms}),
                            )
                        })
                    }
                    _ => Err(SupError::NotRunning {
                        id: self.id.clone(),
                        op: "set its timeout",
                    }),
                };
                let _ = reply.send(r);
            }
            Command::Refresh { duration_ms, reply } => {
                let r = match decision {
                    Decision::Run => {
                        let want = now_ms() + duration_ms;
                        self.handle
                            .activity
                            .deadline_ms
                            .fetch_max(want, Ordering::Relaxed);
                        self.persist_deadline()
                    }
                    _ => Err(SupError::NotRunning {
                        id: self.id.clone(),
                        op: "refresh it",
                    }),
                };
                let _ = reply.send(r);
            }
            Command::Fork { count, reply } => {
                let r = match decision {
                    Decision::Run => {
                        let r = self.fork(count).await;
                        self.unless_aborted(r)
                    }
                    _ => Err(SupError::NotRunning {
                        id: self.id.clone(),
                        op: "fork it",
                    }),
                };
                let _ = reply.send(r);
            }
            Command::SetNetwork {
                allow_internet,
                policy,
                reply,
            } => {
                let r = match decision {
                    Decision::Run => {
                        let rt = self.inner().runtime.clone();
                        let id = self.id.clone();
                        let p = policy.clone();
                        match blocking(move || rt.set_network(&id, allow_internet, p)).await {
                            Ok(_) => self
                                .update(|e| {
                                    e.allow_internet = allow_internet;
                                    e.network = policy;
                                })
                                .map(|e| {
                                    self.inner().store.event(
                                        &e,
                                        "updated",
                                        serde_json::json!({"network": true}),
                                    )
                                }),
                            Err(e) => Err(e),
                        }
                    }
                    _ => Err(SupError::NotRunning {
                        id: self.id.clone(),
                        op: "change its network",
                    }),
                };
                let _ = reply.send(r);
            }
            Command::Metrics { reply } => {
                let r = match decision {
                    Decision::Run => {
                        let rt = self.inner().runtime.clone();
                        let id = self.id.clone();
                        blocking(move || rt.stats(&id)).await.map(Some)
                    }
                    _ => Ok(None),
                };
                let _ = reply.send(r);
            }
        }
    }

    fn persist_deadline(&self) -> Result<(), SupError> {
        let d = self.handle.activity.deadline();
        self.update(|e| e.end_at_ms = Some(d)).map(drop)
    }

    async fn pause(&mut self, memory: bool) -> Result<(), SupError> {
        self.set_phase(Phase::Pausing)?;
        // The proxy's connections into the sandbox must not be open across the dump.
        self.handle.drop_connections();
        let rt = self.inner().runtime.clone();
        let id = self.id.clone();
        let mode = if memory {
            PauseMode::Full
        } else {
            PauseMode::FilesystemOnly
        };
        match blocking(move || rt.pause(&id, mode)).await {
            Ok(snap) => {
                let e = self.update(|e| {
                    e.phase = Phase::Paused;
                    e.end_at_ms = None;
                })?;
                self.stable = Stable::Paused;
                self.watch = None;
                self.handle.activity.set_deadline(u64::MAX);
                self.inner().store.event(
                    &e,
                    "paused",
                    serde_json::json!({"generation": snap.generation, "bytes": snap.bytes, "memory": snap.memory}),
                );
                info!(
                    generation = snap.generation,
                    bytes = snap.bytes,
                    "sandbox paused"
                );
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "pause failed; the sandbox keeps running");
                self.set_phase(Phase::Running)?;
                Err(e)
            }
        }
    }

    async fn resume(&mut self, timeout_ms: Option<u64>) -> Result<Entry, SupError> {
        let entry = self.set_phase(Phase::Resuming)?;
        let rt = self.inner().runtime.clone();
        let id = self.id.clone();
        let abort = self.handle.abort_token();
        let resumed = async {
            let info = blocking(move || rt.resume(&id)).await?;
            let healthy = self
                .inner()
                .envd
                .wait_healthy(info.address, self.inner().cfg.ready_timeout);
            tokio::select! {
                r = healthy => r.map_err(|source| SupError::Agent {
                    id: self.id.clone(),
                    source,
                })?,
                _ = abort.cancelled() => return Err(SupError::Gone(self.id.clone())),
            }
            Ok::<_, SupError>(info)
        }
        .await;
        match resumed {
            Ok(info) => {
                let window = timeout_ms.unwrap_or(entry.timeout_ms);
                let deadline = now_ms() + window;
                self.handle.activity.set_deadline(deadline);
                let e = self.update(|e| {
                    e.phase = Phase::Running;
                    e.end_at_ms = Some(deadline);
                    e.address = Some(info.address);
                })?;
                self.stable = Stable::Running;
                self.pause_failures = 0;
                self.rewatch().await;
                self.handle.since_ms.store(now_ms(), Ordering::Relaxed);
                self.inner()
                    .store
                    .event(&e, "resumed", serde_json::json!({}));
                info!("sandbox resumed");
                Ok(e)
            }
            Err(e) => {
                warn!(error = %e, "resume failed; the sandbox stays paused");
                // If the restore succeeded but the agent did not answer, pause it again
                // so that the catalog and the runtime agree.
                let rt = self.inner().runtime.clone();
                let id = self.id.clone();
                let killing = self.handle.abort_token().is_cancelled();
                if let Ok(info) = blocking(move || rt.info(&id)).await {
                    // (Not when a kill is waiting: it removes the sandbox anyway.)
                    if matches!(info.state, SandboxState::Running { .. }) && !killing {
                        let rt = self.inner().runtime.clone();
                        let id = self.id.clone();
                        let _ = blocking(move || rt.pause(&id, PauseMode::Full)).await;
                    }
                }
                self.set_phase(Phase::Paused)?;
                Err(e)
            }
        }
    }

    async fn kill(&mut self) -> Result<(), SupError> {
        self.set_phase(Phase::Killing)?;
        self.handle.drop_connections();
        let rt = self.inner().runtime.clone();
        let id = self.id.clone();
        match blocking(move || rt.kill(&id)).await {
            Ok(()) | Err(SupError::Runtime(RuntimeError::NotFound(_))) => {}
            Err(e) => {
                error!(error = %e, "kill failed");
                return Err(e);
            }
        }
        let entry = self.handle.entry();
        let token = entry.token.clone();
        self.inner()
            .tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
        self.inner()
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.inner()
            .store
            .delete(&self.id)
            .map_err(SupError::Store)?;
        self.inner()
            .store
            .event(&entry, "killed", serde_json::json!({}));
        info!("sandbox killed");
        Ok(())
    }

    async fn fork(&mut self, count: usize) -> Result<Vec<Entry>, SupError> {
        if count == 0 || count > 16 {
            return Err(SupError::BadRequest(format!(
                "fork count must be between 1 and 16, got {count}"
            )));
        }
        let parent = self.handle.entry();
        let ids: Vec<SandboxId> = (0..count).map(|_| SandboxId::generate()).collect();
        let mut entries = Vec::new();
        for id in &ids {
            let mut e = parent.clone();
            e.id = id.clone();
            e.token = random_token();
            e.phase = Phase::Starting;
            e.started_at_ms = now_ms();
            e.address = None;
            self.inner().store.put(&e).map_err(SupError::Store)?;
            entries.push(e);
        }
        let rt = self.inner().runtime.clone();
        let pid = self.id.clone();
        let fids = ids.clone();
        let infos = match blocking(move || rt.fork(&pid, &fids)).await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "fork failed; the sandbox keeps running");
                for id in &ids {
                    let _ = self.inner().store.delete(id);
                }
                return Err(e);
            }
        };
        let mut out = Vec::new();
        for (mut e, info) in entries.into_iter().zip(infos) {
            // The fork's agent still has the parent's token: give it its own.
            let ok = self
                .inner()
                .envd
                .init_with(info.address, &parent.token, &e.token, &e.env_vars)
                .await;
            if let Err(err) = ok {
                warn!(fork = %e.id, error = %err, "could not configure a fork; removing it");
                let rt = self.inner().runtime.clone();
                let fid = e.id.clone();
                let _ = blocking(move || rt.kill(&fid)).await;
                let _ = self.inner().store.delete(&e.id);
                continue;
            }
            e.address = Some(info.address);
            e.phase = Phase::Running;
            e.end_at_ms = Some(now_ms() + e.timeout_ms);
            self.inner().store.put(&e).map_err(SupError::Store)?;
            self.inner().store.event(
                &e,
                "created",
                serde_json::json!({"forkOf": self.id.to_string()}),
            );
            self.sup.spawn_owner(e.clone(), Stable::Running);
            out.push(e);
        }
        Ok(out)
    }
}

//! The catalog as the supervisor's [`Store`], and catalog queries for the list endpoint.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use stasis_catalog::{
    Catalog, CatalogState, EventKind, ListFilter, PageRequest, SandboxRecord, SortOrder,
};
use stasis_e2b_api as wire;
use stasis_runtime::template::Recipe;
use stasis_types::{Resources, SandboxId};
use tracing::{info, warn};

use crate::webhooks::Webhooks;

use crate::envd::ENVD_VERSION;
use crate::lifecycle::{OnTimeout, Phase};
use crate::supervisor::{Entry, Store};

/// [`Store`] over the SQLite catalog.
pub struct CatalogStore {
    catalog: Arc<Catalog>,
    webhooks: Arc<Webhooks>,
}

impl CatalogStore {
    pub fn new(catalog: Arc<Catalog>, webhooks: Arc<Webhooks>) -> Self {
        Self { catalog, webhooks }
    }
}

fn phase_to_state(p: Phase) -> CatalogState {
    match p {
        Phase::Starting => CatalogState::Starting,
        Phase::Running => CatalogState::Running,
        Phase::Pausing => CatalogState::Pausing,
        Phase::Paused => CatalogState::Paused,
        Phase::Resuming => CatalogState::Resuming,
        Phase::Killing => CatalogState::Killing,
    }
}

fn state_to_phase(s: CatalogState) -> Phase {
    match s {
        CatalogState::Starting => Phase::Starting,
        CatalogState::Running => Phase::Running,
        CatalogState::Pausing => Phase::Pausing,
        CatalogState::Paused => Phase::Paused,
        CatalogState::Resuming => Phase::Resuming,
        CatalogState::Killing => Phase::Killing,
    }
}

fn time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

/// The catalog row of an entry.
pub fn to_record(e: &Entry) -> anyhow::Result<SandboxRecord> {
    let now = Catalog::now();
    Ok(SandboxRecord {
        id: e.id.clone(),
        template: e.template.parse()?,
        alias: Some(e.alias.clone()),
        client_id: e.client_id.clone(),
        state: phase_to_state(e.phase),
        started_at: time(e.started_at_ms),
        end_at: e.end_at_ms.map(time),
        timeout_secs: e.timeout_ms.div_ceil(1000).min(u32::MAX as u64) as u32,
        auto_pause: matches!(e.on_timeout, OnTimeout::Pause { .. }),
        auto_pause_timeout_ms: Some(e.timeout_ms),
        auto_pause_memory: !matches!(e.on_timeout, OnTimeout::Pause { memory: false }),
        auto_resume: e.auto_resume,
        metadata: e.metadata.clone(),
        env_vars: e.env_vars.clone(),
        envd_access_token: e.token.clone(),
        cpu_count: e.resources.cpu_millis.div_ceil(1000),
        memory_mb: e.resources.memory_bytes / Resources::MIB,
        disk_size_mb: e.disk_size_mb,
        allow_internet: e.allow_internet,
        paused_at: None,
        created_at: now,
        updated_at: now,
    })
}

/// The entry of a catalog row (the address comes from the runtime).
pub fn from_record(r: &SandboxRecord) -> Entry {
    Entry {
        id: r.id.clone(),
        template: r.template.to_string(),
        alias: r.alias.clone().unwrap_or_else(|| r.template.to_string()),
        client_id: r.client_id.clone(),
        token: r.envd_access_token.clone(),
        phase: state_to_phase(r.state),
        started_at_ms: ms(r.started_at),
        end_at_ms: r.end_at.map(ms),
        timeout_ms: r
            .auto_pause_timeout_ms
            .unwrap_or(r.timeout_secs as u64 * 1000),
        on_timeout: if r.auto_pause {
            OnTimeout::Pause {
                memory: r.auto_pause_memory,
            }
        } else {
            OnTimeout::Kill
        },
        auto_resume: r.auto_resume,
        metadata: r.metadata.clone(),
        env_vars: r.env_vars.clone(),
        resources: Resources {
            cpu_millis: r.cpu_count * 1000,
            memory_bytes: r.memory_mb * Resources::MIB,
            pids: Resources::default().pids,
        },
        disk_size_mb: r.disk_size_mb,
        allow_internet: r.allow_internet,
        network: Default::default(),
        address: None,
    }
}

fn event_kind(kind: &str) -> EventKind {
    EventKind::from_name(kind)
}

impl Store for CatalogStore {
    fn put(&self, e: &Entry) -> anyhow::Result<()> {
        let rec = to_record(e)?;
        match self.catalog.get(&e.id)? {
            Some(old) => {
                let mut rec = rec;
                rec.created_at = old.created_at;
                rec.paused_at = match e.phase {
                    Phase::Paused => old.paused_at.or(Some(Catalog::now())),
                    _ => None,
                };
                self.catalog.update(&rec)?;
            }
            None => self.catalog.insert(&rec)?,
        }
        Ok(())
    }

    fn delete(&self, id: &SandboxId) -> anyhow::Result<()> {
        match self.catalog.delete(id) {
            Ok(()) => Ok(()),
            Err(stasis_catalog::CatalogError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn all(&self) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut page = PageRequest {
            limit: 1000,
            order: SortOrder::Asc,
            next_token: None,
        };
        loop {
            let p = self.catalog.list(&ListFilter::default(), &page)?;
            out.extend(p.items.iter().map(from_record));
            match p.next_token {
                Some(t) => page.next_token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    fn event(&self, e: &Entry, kind: &str, detail: serde_json::Value) {
        info!(sandbox_id = %e.id, event = kind, %detail, "lifecycle");
        if let Err(err) = self.catalog.append_event(&e.id, &event_kind(kind), &detail) {
            warn!(sandbox_id = %e.id, error = %err, "could not record event {kind}");
        }
        self.webhooks.notify(kind, &e.id, &e.template, &e.metadata);
    }
}

/// The catalog filter and page of a list query.
pub fn list_request(q: &wire::ListQuery) -> (ListFilter, PageRequest) {
    let mut states = BTreeSet::new();
    if q.states.running {
        states.extend([CatalogState::Running, CatalogState::Killing]);
    }
    if q.states.paused {
        states.extend([
            CatalogState::Pausing,
            CatalogState::Paused,
            CatalogState::Resuming,
        ]);
    }
    let filter = ListFilter {
        states,
        metadata: q.metadata.clone(),
        template: q.template.clone(),
        started_after: q.started_after,
    };
    let page = PageRequest {
        limit: q.limit,
        order: match q.order {
            wire::SortOrder::Asc => SortOrder::Asc,
            wire::SortOrder::Desc => SortOrder::Desc,
        },
        next_token: q.next_token.clone(),
    };
    (filter, page)
}

/// `GET /templates` element of a built recipe.
pub fn template_body(r: &Recipe) -> wire::Template {
    let res = Resources::default();
    let now = Utc::now();
    wire::Template {
        template_id: r.name.to_owned(),
        build_id: r.stamp(),
        cpu_count: res.cpu_millis.div_ceil(1000),
        memory_mb: res.memory_bytes / Resources::MIB,
        disk_size_mb: 10 * 1024,
        public: true,
        aliases: std::iter::once(r.name)
            .chain(r.aliases.iter().copied())
            .map(str::to_owned)
            .collect(),
        names: vec![r.name.to_owned()],
        created_at: now,
        updated_at: now,
        created_by: None,
        last_spawned_at: None,
        spawn_count: 0,
        build_count: 1,
        envd_version: ENVD_VERSION.into(),
        build_status: wire::BuildStatus::Ready,
    }
}

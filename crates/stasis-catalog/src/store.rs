//! [`Catalog`]: the SQLite-backed store and its queries.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};
use stasis_types::{SandboxId, TemplateName};

use crate::migrate;
use crate::model::{CatalogState, Event, EventKind, SandboxRecord};
use crate::token::PageToken;
use crate::CatalogError;

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Columns of `sandboxes`, in the order [`RawRow::read`] expects.
const COLUMNS: &str = "id, template, alias, client_id, state, started_at, end_at, timeout_secs, \
    auto_pause, auto_pause_timeout_ms, auto_pause_memory, auto_resume, metadata, env_vars, \
    envd_access_token, cpu_count, memory_mb, disk_size_mb, allow_internet, paused_at, \
    created_at, updated_at";

/// Sort order of [`Catalog::list`], by `(started_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// Which sandboxes [`Catalog::list`] returns. The default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Allowed states; empty means all.
    pub states: BTreeSet<CatalogState>,
    /// Pairs that must all be present in the sandbox's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Matches the template name or the alias.
    pub template: Option<String>,
    /// Only sandboxes started at or after this instant (inclusive, as E2B's).
    pub started_after: Option<DateTime<Utc>>,
}

/// One page request of [`Catalog::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// At least 1.
    pub limit: u32,
    pub order: SortOrder,
    /// The previous page's [`ListPage::next_token`]; use with the same filter and order.
    pub next_token: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: 100,
            order: SortOrder::Desc,
            next_token: None,
        }
    }
}

/// One page of [`Catalog::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<SandboxRecord>,
    /// Present only when more rows exist after this page.
    pub next_token: Option<String>,
}

/// The catalog. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct Catalog {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

fn sql(op: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> CatalogError {
    let op = op.into();
    move |source| CatalogError::Sql { op, source }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(row: &str, column: &'static str, v: i64) -> Result<DateTime<Utc>, CatalogError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| CatalogError::Corrupt {
        row: row.to_owned(),
        column,
        reason: format!("timestamp {v} out of range"),
    })
}

fn from_ms_opt(
    row: &str,
    column: &'static str,
    v: Option<i64>,
) -> Result<Option<DateTime<Utc>>, CatalogError> {
    v.map(|v| from_ms(row, column, v)).transpose()
}

/// A `sandboxes` row as SQLite returns it, before validation.
struct RawRow {
    id: String,
    template: String,
    alias: Option<String>,
    client_id: String,
    state: String,
    started_at: i64,
    end_at: Option<i64>,
    timeout_secs: u32,
    auto_pause: bool,
    auto_pause_timeout_ms: Option<u64>,
    auto_pause_memory: bool,
    auto_resume: bool,
    metadata: String,
    env_vars: String,
    envd_access_token: String,
    cpu_count: u32,
    memory_mb: u64,
    disk_size_mb: u64,
    allow_internet: bool,
    paused_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl RawRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            template: r.get(1)?,
            alias: r.get(2)?,
            client_id: r.get(3)?,
            state: r.get(4)?,
            started_at: r.get(5)?,
            end_at: r.get(6)?,
            timeout_secs: r.get(7)?,
            auto_pause: r.get(8)?,
            auto_pause_timeout_ms: r.get(9)?,
            auto_pause_memory: r.get(10)?,
            auto_resume: r.get(11)?,
            metadata: r.get(12)?,
            env_vars: r.get(13)?,
            envd_access_token: r.get(14)?,
            cpu_count: r.get(15)?,
            memory_mb: r.get(16)?,
            disk_size_mb: r.get(17)?,
            allow_internet: r.get(18)?,
            paused_at: r.get(19)?,
            created_at: r.get(20)?,
            updated_at: r.get(21)?,
        })
    }

    fn into_record(self) -> Result<SandboxRecord, CatalogError> {
        let row = self.id.clone();
        let corrupt = |column: &'static str, reason: String| CatalogError::Corrupt {
            row: row.clone(),
            column,
            reason,
        };
        let map = |column: &'static str, json: &str| {
            serde_json::from_str::<BTreeMap<String, String>>(json)
                .map_err(|e| corrupt(column, e.to_string()))
        };
        Ok(SandboxRecord {
            id: self
                .id
                .parse::<SandboxId>()
                .map_err(|e| corrupt("id", e.to_string()))?,
            template: self
                .template
                .parse::<TemplateName>()
                .map_err(|e| corrupt("template", e.to_string()))?,
            alias: self.alias,
            client_id: self.client_id,
            state: CatalogState::parse(&self.state)
                .ok_or_else(|| corrupt("state", format!("unknown state {:?}", self.state)))?,
            started_at: from_ms(&row, "started_at", self.started_at)?,
            end_at: from_ms_opt(&row, "end_at", self.end_at)?,
            timeout_secs: self.timeout_secs,
            auto_pause: self.auto_pause,
            auto_pause_timeout_ms: self.auto_pause_timeout_ms,
            auto_pause_memory: self.auto_pause_memory,
            auto_resume: self.auto_resume,
            metadata: map("metadata", &self.metadata)?,
            env_vars: map("env_vars", &self.env_vars)?,
            envd_access_token: self.envd_access_token,
            cpu_count: self.cpu_count,
            memory_mb: self.memory_mb,
            disk_size_mb: self.disk_size_mb,
            allow_internet: self.allow_internet,
            paused_at: from_ms_opt(&row, "paused_at", self.paused_at)?,
            created_at: from_ms(&row, "created_at", self.created_at)?,
            updated_at: from_ms(&row, "updated_at", self.updated_at)?,
        })
    }
}

/// Maps a uniqueness violation on insert to the typed error (the id is checked first,
/// whichever constraint SQLite happened to report), else a plain SQL error.
fn insert_error(conn: &Connection, id: &SandboxId, source: rusqlite::Error) -> CatalogError {
    let unique = matches!(
        &source,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    );
    if unique {
        return match get_in(conn, id) {
            Ok(Some(_)) => CatalogError::AlreadyExists { id: id.clone() },
            Ok(None) => CatalogError::DuplicateToken { id: id.clone() },
            Err(e) => e,
        };
    }
    CatalogError::Sql {
        op: format!("insert sandbox {id}"),
        source,
    }
}

fn encode_map(
    id: &SandboxId,
    what: &'static str,
    map: &BTreeMap<String, String>,
) -> Result<String, CatalogError> {
    serde_json::to_string(map).map_err(|source| CatalogError::Encode {
        id: id.clone(),
        what,
        source,
    })
}

fn get_in(conn: &Connection, id: &SandboxId) -> Result<Option<SandboxRecord>, CatalogError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
        [id.as_str()],
        RawRow::read,
    )
    .optional()
    .map_err(sql(format!("read sandbox {id}")))?
    .map(RawRow::into_record)
    .transpose()
}

/// Writes `rec`'s metadata rows (after removing old ones).
fn write_metadata(conn: &Connection, rec: &SandboxRecord) -> Result<(), CatalogError> {
    let id = rec.id.as_str();
    conn.execute("DELETE FROM sandbox_metadata WHERE sandbox_id = ?1", [id])
        .map_err(sql(format!("clear metadata of sandbox {id}")))?;
    let mut stmt = conn
        .prepare_cached("INSERT INTO sandbox_metadata (sandbox_id, key, value) VALUES (?1, ?2, ?3)")
        .map_err(sql("prepare metadata insert"))?;
    for (k, v) in &rec.metadata {
        stmt.execute(params![id, k, v])
            .map_err(sql(format!("write metadata {k:?} of sandbox {id}")))?;
    }
    Ok(())
}

fn insert_in(conn: &Connection, rec: &SandboxRecord) -> Result<(), CatalogError> {
    let metadata = encode_map(&rec.id, "metadata", &rec.metadata)?;
    let env_vars = encode_map(&rec.id, "env_vars", &rec.env_vars)?;
    conn.prepare_cached(&format!(
        "INSERT INTO sandboxes ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
          ?19, ?20, ?21, ?22)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            rec.id.as_str(),
            rec.template.as_str(),
            rec.alias,
            rec.client_id,
            rec.state.as_str(),
            ms(rec.started_at),
            rec.end_at.map(ms),
            rec.timeout_secs,
            rec.auto_pause,
            rec.auto_pause_timeout_ms,
            rec.auto_pause_memory,
            rec.auto_resume,
            metadata,
            env_vars,
            rec.envd_access_token,
            rec.cpu_count,
            rec.memory_mb,
            rec.disk_size_mb,
            rec.allow_internet,
            rec.paused_at.map(ms),
            ms(rec.created_at),
            ms(rec.updated_at),
        ])
    })
    .map_err(|e| insert_error(conn, &rec.id, e))?;
    write_metadata(conn, rec)
}

/// Mode of the catalog's files.
const FILE_MODE: u32 = 0o600;

/// Creates the catalog file with [`FILE_MODE`] if it is missing, and narrows the file and
/// its `-wal` and `-shm` companions to it if an earlier version left them wider.
fn restrict_files(db: &Path) -> Result<(), CatalogError> {
    let failed = |p: &Path, e: io::Error| CatalogError::Open {
        path: db.to_owned(),
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot make {} readable by its owner only: {e}",
                p.display()
            )),
        ),
    };
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(db)
        .map_err(|e| failed(db, e))?;
    let name = db.file_name().unwrap_or_default().to_string_lossy();
    for p in [
        db.to_owned(),
        db.with_file_name(format!("{name}-wal")),
        db.with_file_name(format!("{name}-shm")),
    ] {
        match fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o777 != FILE_MODE => {
                fs::set_permissions(&p, fs::Permissions::from_mode(FILE_MODE))
                    .map_err(|e| failed(&p, e))?
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&p, e)),
        }
    }
    Ok(())
}

impl Catalog {
    /// Opens (creating if needed) the catalog file at `path` and brings its schema up to
    /// date. The parent directory must exist. The file and its `-wal` and `-shm` companions
    /// are readable by their owner only (0600), whatever the umask: the catalog holds every
    /// sandbox's access token.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref().to_path_buf();
        // SQLite creates the -wal and -shm files with the database file's mode.
        restrict_files(&path)?;
        let conn = Connection::open(&path).map_err(|source| CatalogError::Open {
            path: path.clone(),
            source,
        })?;
        let catalog = Self::setup(conn, Some(path.clone()))?;
        restrict_files(&path)?;
        Ok(catalog)
    }

    /// A private in-memory catalog, for tests.
    pub fn open_in_memory() -> Result<Self, CatalogError> {
        let conn = Connection::open_in_memory().map_err(|source| CatalogError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::setup(conn, None)
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, CatalogError> {
        // journal_mode returns a row, so read it back rather than "update".
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql("set journal_mode=WAL"))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::NotWal {
                path: path.unwrap_or_default(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql("enable foreign keys"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("set busy timeout"))?;
        migrate::migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The file this catalog lives in (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current time at the catalog's (millisecond) precision.
    pub fn now() -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied write: an open
        // transaction is rolled back when dropped during unwinding.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, CatalogError> {
        migrate::current_version(&self.lock())
    }

    /// Adds a sandbox. Fails with [`CatalogError::AlreadyExists`] for a known id and
    /// [`CatalogError::DuplicateToken`] for an access token already in use.
    pub fn insert(&self, rec: &SandboxRecord) -> Result<(), CatalogError> {
        self.insert_many(std::slice::from_ref(rec))
    }

    /// Adds several sandboxes in one transaction (all or none).
    pub fn insert_many(&self, recs: &[SandboxRecord]) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("begin insert"))?;
        for rec in recs {
            insert_in(&tx, rec)?;
        }
        tx.commit().map_err(sql("commit insert"))
    }

    /// The sandbox with this id, if any.
    pub fn get(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, CatalogError> {
        get_in(&self.lock(), id)
    }

    /// Moves `id` from `expected` to `new` if it is still in `expected`; otherwise fails
    /// with [`CatalogError::StateMismatch`] (or [`CatalogError::NotFound`]). Returns the
    /// updated record.
    ///
    /// Side effects: entering `Paused` sets `paused_at` to now and clears `end_at`
    /// (paused time does not count); entering `Running` clears `paused_at`. Set the new
    /// deadline after a resume with [`Catalog::set_end_at`].
    pub fn update_state(
        &self,
        id: &SandboxId,
        expected: CatalogState,
        new: CatalogState,
    ) -> Result<SandboxRecord, CatalogError> {
        let now = ms(Self::now());
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(format!("begin state change of sandbox {id}")))?;
        let changed = tx
            .execute(
                "UPDATE sandboxes SET
                    state = ?3,
                    updated_at = ?4,
                    paused_at = CASE WHEN ?3 = 'paused' THEN ?4
                                     WHEN ?3 = 'running' THEN NULL
                                     ELSE paused_at END,
                    end_at = CASE WHEN ?3 = 'paused' THEN NULL ELSE end_at END
                 WHERE id = ?1 AND state = ?2",
                params![id.as_str(), expected.as_str(), new.as_str(), now],
            )
            .map_err(sql(format!(
                "change state of sandbox {id} from {expected} to {new}"
            )))?;
        if changed == 0 {
            return Err(match get_in(&tx, id)? {
                None => CatalogError::NotFound { id: id.clone() },
                Some(rec) => CatalogError::StateMismatch {
                    id: id.clone(),
                    expected,
                    actual: rec.state,
                },
            });
        }
        let rec = get_in(&tx, id)?.ok_or_else(|| CatalogError::NotFound { id: id.clone() })?;
        tx.commit()
            .map_err(sql(format!("commit state change of sandbox {id}")))?;
        Ok(rec)
    }

    /// Sets (or clears) the timeout deadline of `id`.
    pub fn set_end_at(
        &self,
        id: &SandboxId,
        end_at: Option<DateTime<Utc>>,
    ) -> Result<(), CatalogError> {
        let changed = self
            .lock()
            .execute(
                "UPDATE sandboxes SET end_at = ?2, updated_at = ?3 WHERE id = ?1",
                params![id.as_str(), end_at.map(ms), ms(Self::now())],
            )
            .map_err(sql(format!("set end_at of sandbox {id}")))?;
        if changed == 0 {
            return Err(CatalogError::NotFound { id: id.clone() });
        }
        Ok(())
    }

    /// Replaces the whole record of an existing sandbox (matched by `rec.id`), stamping
    /// `updated_at` with now. Returns what was stored.
    pub fn update(&self, rec: &SandboxRecord) -> Result<SandboxRecord, CatalogError> {
        let mut stored = rec.clone();
        stored.updated_at = Self::now();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(format!("begin update of sandbox {}", rec.id)))?;
        let gone = tx
            .execute("DELETE FROM sandboxes WHERE id = ?1", [rec.id.as_str()])
            .map_err(sql(format!("update sandbox {}", rec.id)))?
            == 0;
        if gone {
            return Err(CatalogError::NotFound { id: rec.id.clone() });
        }
        insert_in(&tx, &stored)?;
        tx.commit()
            .map_err(sql(format!("commit update of sandbox {}", rec.id)))?;
        Ok(stored)
    }

    /// Removes a sandbox and its metadata. Its events stay.
    pub fn delete(&self, id: &SandboxId) -> Result<(), CatalogError> {
        let changed = self
            .lock()
            .execute("DELETE FROM sandboxes WHERE id = ?1", [id.as_str()])
            .map_err(sql(format!("delete sandbox {id}")))?;
        if changed == 0 {
            return Err(CatalogError::NotFound { id: id.clone() });
        }
        Ok(())
    }

    /// One page of sandboxes matching `filter`, ordered by `(started_at, id)`, using
    /// keyset pagination: pass the returned `next_token` back with the same filter and
    /// order to get the next page. Rows inserted or deleted between pages never cause
    /// duplicates or skips of other rows.
    pub fn list(&self, filter: &ListFilter, page: &PageRequest) -> Result<ListPage, CatalogError> {
        if page.limit == 0 {
            return Err(CatalogError::InvalidLimit { limit: page.limit });
        }
        let after = page
            .next_token
            .as_deref()
            .map(PageToken::decode)
            .transpose()?;

        let mut where_sql = String::from("1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if !filter.states.is_empty() {
            let marks = vec!["?"; filter.states.len()].join(", ");
            where_sql.push_str(&format!(" AND s.state IN ({marks})"));
            args.extend(
                filter
                    .states
                    .iter()
                    .map(|s| Value::Text(s.as_str().to_owned())),
            );
        }
        if let Some(t) = &filter.template {
            where_sql.push_str(" AND (s.template = ? OR s.alias = ?)");
            args.push(Value::Text(t.clone()));
            args.push(Value::Text(t.clone()));
        }
        if let Some(at) = filter.started_after {
            // Inclusive, as E2B's `startedAfter`.
            where_sql.push_str(" AND s.started_at >= ?");
            args.push(Value::Integer(ms(at)));
        }
        for (k, v) in &filter.metadata {
            where_sql.push_str(
                " AND s.id IN (SELECT m.sandbox_id FROM sandbox_metadata m \
                 WHERE m.key = ? AND m.value = ?)",
            );
            args.push(Value::Text(k.clone()));
            args.push(Value::Text(v.clone()));
        }
        let (cmp, dir) = match page.order {
            SortOrder::Asc => (">", "ASC"),
            SortOrder::Desc => ("<", "DESC"),
        };
        if let Some(t) = &after {
            where_sql.push_str(&format!(" AND (s.started_at, s.id) {cmp} (?, ?)"));
            args.push(Value::Integer(t.s));
            args.push(Value::Text(t.i.as_str().to_owned()));
        }
        args.push(Value::Integer(i64::from(page.limit) + 1));
        let query = format!(
            "SELECT {} FROM sandboxes s WHERE {where_sql} \
             ORDER BY s.started_at {dir}, s.id {dir} LIMIT ?",
            COLUMNS
                .split(", ")
                .map(|c| format!("s.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );

        let conn = self.lock();
        let mut stmt = conn.prepare(&query).map_err(sql("prepare list"))?;
        let raws = stmt
            .query_map(params_from_iter(args), RawRow::read)
            .map_err(sql("list sandboxes"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql("list sandboxes"))?;
        drop(stmt);
        drop(conn);

        let mut items = raws
            .into_iter()
            .map(RawRow::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        let next_token = if items.len() > page.limit as usize {
            items.truncate(page.limit as usize);
            items
                .last()
                .map(|last| PageToken::new(ms(last.started_at), last.id.clone()).encode())
        } else {
            None
        };
        Ok(ListPage { items, next_token })
    }

    /// The sandbox whose envd access token is `token`, if any.
    pub fn find_by_token(&self, token: &str) -> Result<Option<SandboxRecord>, CatalogError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE envd_access_token = ?1"),
                [token],
                RawRow::read,
            )
            .optional()
            .map_err(sql("find sandbox by access token"))?
            .map(RawRow::into_record)
            .transpose()
    }

    /// Number of sandboxes in each state (every state present, zero if none).
    pub fn count_by_state(&self) -> Result<BTreeMap<CatalogState, u64>, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT state, count(*) FROM sandboxes GROUP BY state")
            .map_err(sql("prepare count by state"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
            .map_err(sql("count by state"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql("count by state"))?;
        let mut counts: BTreeMap<CatalogState, u64> =
            CatalogState::ALL.into_iter().map(|s| (s, 0)).collect();
        for (state, n) in rows {
            let state = CatalogState::parse(&state).ok_or_else(|| CatalogError::Corrupt {
                row: "count by state".into(),
                column: "state",
                reason: format!("unknown state {state:?}"),
            })?;
            counts.insert(state, n);
        }
        Ok(counts)
    }

    /// Appends a lifecycle event for `sandbox_id` (which need not exist any more).
    /// Returns its sequence number.
    pub fn append_event(
        &self,
        sandbox_id: &SandboxId,
        kind: &EventKind,
        detail: &serde_json::Value,
    ) -> Result<i64, CatalogError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO events (sandbox_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![
                sandbox_id.as_str(),
                ms(Self::now()),
                kind.as_str(),
                detail.to_string()
            ],
        )
        .map_err(sql(format!("append {kind} event of sandbox {sandbox_id}")))?;
        Ok(conn.last_insert_rowid())
    }

    /// Every event of `sandbox_id`, oldest first.
    pub fn events_for(&self, sandbox_id: &SandboxId) -> Result<Vec<Event>, CatalogError> {
        let conn = self.lock();
        let what = format!("read events of sandbox {sandbox_id}");
        let mut stmt = conn
            .prepare(
                "SELECT seq, sandbox_id, at, kind, detail FROM events WHERE sandbox_id = ?1 \
                 ORDER BY seq",
            )
            .map_err(sql("prepare events query"))?;
        let rows = stmt
            .query_map([sandbox_id.as_str()], RawEvent::read)
            .map_err(sql(what.clone()))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql(what))?;
        rows.into_iter().map(RawEvent::into_event).collect()
    }

    /// Up to `limit` events of any sandbox with a sequence number above `seq`, oldest
    /// first: the way to follow the log as it grows (start from 0 for all of it, then
    /// from the last `seq` seen).
    pub fn events_since(&self, seq: i64, limit: u32) -> Result<Vec<Event>, CatalogError> {
        let conn = self.lock();
        let what = format!("read events after {seq}");
        let mut stmt = conn
            .prepare(
                "SELECT seq, sandbox_id, at, kind, detail FROM events WHERE seq > ?1 \
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(sql("prepare events query"))?;
        let rows = stmt
            .query_map(params![seq, limit], RawEvent::read)
            .map_err(sql(what.clone()))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql(what))?;
        rows.into_iter().map(RawEvent::into_event).collect()
    }
}

/// One row of `events` as SQLite returns it, before its columns are checked.
struct RawEvent {
    seq: i64,
    sandbox_id: String,
    at: i64,
    kind: String,
    detail: String,
}

impl RawEvent {
    /// Reads `seq, sandbox_id, at, kind, detail`.
    fn read(r: &Row<'_>) -> rusqlite::Result<RawEvent> {
        Ok(RawEvent {
            seq: r.get(0)?,
            sandbox_id: r.get(1)?,
            at: r.get(2)?,
            kind: r.get(3)?,
            detail: r.get(4)?,
        })
    }

    fn into_event(self) -> Result<Event, CatalogError> {
        let row = format!("event {}", self.seq);
        let corrupt = |column, reason: String| CatalogError::Corrupt {
            row: row.clone(),
            column,
            reason,
        };
        Ok(Event {
            seq: self.seq,
            sandbox_id: self
                .sandbox_id
                .parse()
                .map_err(|e: stasis_types::IdError| corrupt("sandbox_id", e.to_string()))?,
            at: from_ms(&row, "at", self.at)?,
            kind: EventKind::from_name(&self.kind),
            detail: serde_json::from_str(&self.detail)
                .map_err(|e| corrupt("detail", e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod events_since_tests {
    use super::*;

    fn sid(s: &str) -> SandboxId {
        s.parse().unwrap()
    }

    #[test]
    fn events_since_follows_the_log_of_every_sandbox_in_order_and_in_pages() {
        let c = Catalog::open_in_memory().unwrap();
        assert!(c.events_since(0, 10).unwrap().is_empty());
        let (a, b) = (sid("ievsa1"), sid("ievsb2"));
        let s1 = c
            .append_event(&a, &EventKind::Created, &serde_json::json!({}))
            .unwrap();
        let s2 = c
            .append_event(&b, &EventKind::Created, &serde_json::json!({"n": 1}))
            .unwrap();
        let s3 = c
            .append_event(&a, &EventKind::Paused, &serde_json::json!({}))
            .unwrap();
        assert!(s1 < s2 && s2 < s3);

        let all = c.events_since(0, 10).unwrap();
        let seen: Vec<_> = all
            .iter()
            .map(|e| (e.seq, e.sandbox_id.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (s1, "ievsa1", "created"),
                (s2, "ievsb2", "created"),
                (s3, "ievsa1", "paused")
            ]
        );
        assert_eq!(all[1].detail, serde_json::json!({"n": 1}));

        // A page stops at the limit; the next one starts after its last seq.
        let first = c.events_since(0, 2).unwrap();
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [s1, s2]);
        let rest = c.events_since(first[1].seq, 2).unwrap();
        assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [s3]);
        assert!(c.events_since(s3, 2).unwrap().is_empty());

        // What is appended later shows up after the last seq seen.
        let s4 = c
            .append_event(&b, &EventKind::Killed, &serde_json::json!({}))
            .unwrap();
        let new = c.events_since(s3, 10).unwrap();
        assert_eq!(new.len(), 1);
        assert_eq!((new[0].seq, new[0].sandbox_id.as_str()), (s4, "ievsb2"));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod permission_tests {
    use super::*;

    /// Runs the test named `name` again in a child process whose umask is 022, the
    /// permissive default, and returns false; returns true in that child.
    fn in_child_with_umask_022(name: &str) -> bool {
        const CHILD: &str = "STASIS_TEST_UMASK_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let status = fs::read_to_string("/proc/self/status").unwrap();
            assert!(status.contains("Umask:\t0022"), "{status}");
            return true;
        }
        let st = std::process::Command::new("sh")
            .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .status()
            .unwrap();
        assert!(st.success(), "the test failed in the child with umask 022");
        false
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn catalog_files_are_private_under_a_permissive_umask() {
        if !in_child_with_umask_022(
            "store::permission_tests::catalog_files_are_private_under_a_permissive_umask",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("catalog.db");
        let c = Catalog::open(&db).unwrap();
        // A write makes SQLite create the -wal and -shm files.
        c.lock()
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
            let p = dir.path().join(name);
            assert!(p.exists(), "{name} missing");
            assert_eq!(format!("{:o}", mode(&p)), "600", "{name}");
        }
        drop(c);
        // Files an earlier version left readable are narrowed at the next open.
        for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
            let p = dir.path().join(name);
            if p.exists() {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let _c = Catalog::open(&db).unwrap();
        for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
            let p = dir.path().join(name);
            if p.exists() {
                assert_eq!(format!("{:o}", mode(&p)), "600", "{name} after reopen");
            }
        }
    }
}

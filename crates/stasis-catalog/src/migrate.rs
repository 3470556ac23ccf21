//! Schema migrations, tracked in SQLite's `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Each runs in its own
//! transaction together with the version bump, so a crash leaves the schema at a whole
//! version. Never edit a released migration; append a new one.
//!
//! The SQL is kept portable: INTEGER/TEXT columns, epoch milliseconds, 0/1 booleans,
//! JSON as TEXT. For PostgreSQL, `events.seq INTEGER PRIMARY KEY` becomes `BIGSERIAL`
//! and INTEGER becomes BIGINT; the rest carries over.

use rusqlite::Connection;

use crate::CatalogError;

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const MIGRATIONS: &[&str] = &[
    // 1: sandboxes, their metadata, events.
    r#"
    CREATE TABLE sandboxes (
        id                    TEXT    NOT NULL PRIMARY KEY,
        template              TEXT    NOT NULL,
        alias                 TEXT,
        client_id             TEXT    NOT NULL,
        state                 TEXT    NOT NULL CHECK (state IN
                                ('starting','running','pausing','paused','resuming','killing')),
        started_at            INTEGER NOT NULL,
        end_at                INTEGER,
        timeout_secs          INTEGER NOT NULL,
        auto_pause            INTEGER NOT NULL,
        auto_pause_timeout_ms INTEGER,
        auto_pause_memory     INTEGER NOT NULL,
        auto_resume           INTEGER NOT NULL,
        metadata              TEXT    NOT NULL,
        env_vars              TEXT    NOT NULL,
        envd_access_token     TEXT    NOT NULL UNIQUE,
        cpu_count             INTEGER NOT NULL,
        memory_mb             INTEGER NOT NULL,
        disk_size_mb          INTEGER NOT NULL,
        allow_internet        INTEGER NOT NULL,
        paused_at             INTEGER,
        created_at            INTEGER NOT NULL,
        updated_at            INTEGER NOT NULL
    );
    CREATE INDEX sandboxes_by_start ON sandboxes (started_at, id);
    CREATE INDEX sandboxes_by_state_start ON sandboxes (state, started_at, id);
    CREATE INDEX sandboxes_by_template_start ON sandboxes (template, started_at, id);

    -- Copy of sandboxes.metadata, one row per pair, for indexed filtering.
    CREATE TABLE sandbox_metadata (
        sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
        key        TEXT NOT NULL,
        value      TEXT NOT NULL,
        PRIMARY KEY (sandbox_id, key)
    );
    CREATE INDEX sandbox_metadata_by_pair ON sandbox_metadata (key, value, sandbox_id);

    -- No foreign key: the log outlives the sandbox row.
    CREATE TABLE events (
        seq        INTEGER NOT NULL PRIMARY KEY,
        sandbox_id TEXT    NOT NULL,
        at         INTEGER NOT NULL,
        kind       TEXT    NOT NULL,
        detail     TEXT    NOT NULL
    );
    CREATE INDEX events_by_sandbox ON events (sandbox_id, seq);
    "#,
];

/// The schema version recorded in the database.
pub(crate) fn current_version(conn: &Connection) -> Result<u32, CatalogError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
        .map_err(|source| CatalogError::Sql {
            op: "read schema version".into(),
            source,
        })
}

/// Applies every migration newer than the database's version. Returns how many ran.
pub(crate) fn migrate(conn: &mut Connection) -> Result<usize, CatalogError> {
    let found = current_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(CatalogError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let mut ran = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        let err = |source| CatalogError::Migrate { version, source };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        ran += 1;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(current_version(&conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len());
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(current_version(&conn).unwrap(), SCHEMA_VERSION);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('sandboxes', 'sandbox_metadata', 'events')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 3);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(CatalogError::SchemaTooNew { found, .. }) if found == SCHEMA_VERSION + 1
        ));
    }
}

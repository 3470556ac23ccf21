//! Errors of the catalog.

use std::path::PathBuf;

use stasis_types::SandboxId;

use crate::model::CatalogState;

/// Everything that can go wrong in the catalog. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot open catalog {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog {path} refused WAL journaling (journal_mode is {mode})")]
    NotWal { path: PathBuf, mode: String },
    #[error("catalog migration to schema version {version} failed")]
    Migrate {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("catalog: {op} failed")]
    Sql {
        op: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("sandbox {id} is not in the catalog")]
    NotFound { id: SandboxId },
    #[error("sandbox {id} is already in the catalog")]
    AlreadyExists { id: SandboxId },
    #[error("envd access token of sandbox {id} is already used by another sandbox")]
    DuplicateToken { id: SandboxId },
    #[error("sandbox {id} is {actual}, expected {expected}")]
    StateMismatch {
        id: SandboxId,
        expected: CatalogState,
        actual: CatalogState,
    },
    #[error("malformed page token {token:?}: {reason}")]
    InvalidPageToken { token: String, reason: String },
    #[error("invalid page limit {limit}: must be at least 1")]
    InvalidLimit { limit: u32 },
    #[error("cannot encode {what} of sandbox {id}")]
    Encode {
        id: SandboxId,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalog row {row:?} has a bad {column}: {reason}")]
    Corrupt {
        row: String,
        column: &'static str,
        reason: String,
    },
}

//! The persistent catalog of sandboxes: the source of truth for what exists.
//!
//! One SQLite file (`<data dir>/catalog.db`, architecture.md §3) holds a row per sandbox,
//! its metadata in an indexed side table, and an append-only log of lifecycle events.
//! The server reconciles it with runc and the disk at start-up.
//!
//! * [`Catalog`] — open / migrate, CRUD, compare-and-set state transitions, filtered
//!   keyset-paginated listing, lookup by envd access token, events.
//! * [`model`] — [`SandboxRecord`], [`CatalogState`], [`Event`], [`EventKind`].
//! * [`ListFilter`], [`PageRequest`], [`ListPage`] — listing; the page token is opaque.
//! * [`CatalogError`] — every failure, carrying the sandbox id, token or operation.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a write has reached the disk when
//! the call returns (a pause is acknowledged only when durable). The API is synchronous;
//! call it from `spawn_blocking` or a dedicated thread. [`Catalog`] is `Send + Sync`
//! (one connection behind a mutex).
//!
//! Portability: timestamps are integer milliseconds since the epoch, booleans 0/1,
//! maps JSON text, so the same schema can later be created in PostgreSQL.
#![forbid(unsafe_code)]

mod error;
mod migrate;
pub mod model;
mod store;
mod token;

pub use error::CatalogError;
pub use migrate::SCHEMA_VERSION;
pub use model::{CatalogState, Event, EventKind, SandboxRecord};
pub use store::{Catalog, ListFilter, ListPage, PageRequest, SortOrder};

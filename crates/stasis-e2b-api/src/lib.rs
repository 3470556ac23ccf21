//! E2B control-plane REST wire types, shared by the Stasis server and the Rust SDK.
//!
//! Everything here is plain data plus parsing: serde structs whose JSON field names are
//! exactly the ones the official E2B SDKs send and expect (see `docs/e2b-compat.md`
//! §3), the one error body shape, and the query-string parser of `GET /v2/sandboxes`.
//! There is no I/O and no HTTP framework dependency, so a client crate can use it too.
//!
//! * [`request`] — bodies the SDKs send (`NewSandbox`, `ConnectSandbox`, `PauseSandbox`, …)
//!   and [`request::parse_body`], which treats an empty body as `{}`.
//! * [`response`] — bodies the server answers with (`Sandbox`, `ListedSandbox`,
//!   `SandboxDetail`, `SandboxMetric`, `Template`).
//! * [`network`] — the `network` object of a create body and of the sandbox detail, and
//!   the body of `PUT /sandboxes/{id}/network` ([`SandboxNetworkUpdate`]).
//! * [`error`] — [`ErrorBody`], the only error shape of the control plane, with E2B's exact
//!   messages, and [`ProxyNotFound`], the sandbox proxy's 502 body.
//! * [`query`] — [`ListQuery`] and [`LegacyListQuery`]: the list endpoints' query strings,
//!   including E2B's double-encoded `metadata` filter.
//!
//! Unknown JSON fields are ignored everywhere, because every SDK generation adds some.
//! Timestamps are [`chrono::DateTime<Utc>`](chrono::DateTime) and serialize as RFC 3339
//! with a `Z` suffix.
#![forbid(unsafe_code)]

pub mod error;
pub mod network;
pub mod query;
pub mod request;
pub mod response;

pub use chrono;
pub use error::{ErrorBody, ProxyNotFound};
pub use network::{
    EgressProxy, NetworkRule, NetworkTransform, SandboxNetworkConfig, SandboxNetworkUpdate,
};
pub use query::{LegacyListQuery, ListQuery, QueryError, SortOrder, StateFilter};
pub use request::{
    parse_body, AutoPause, AutoResume, BodyError, ConnectSandbox, ForkSandbox, NewSandbox,
    PauseSandbox, RefreshSandbox, ResumeSandbox, SetTimeout,
};
pub use response::{
    BuildStatus, Lifecycle, ListedSandbox, OnTimeout, Sandbox, SandboxDetail, SandboxMetric,
    SandboxState, Template, TemplateCreator,
};

/// Sandbox timeout applied when a create or connect request omits `timeout` (seconds).
pub const DEFAULT_TIMEOUT_SECS: u32 = 300;
/// Port of envd, the in-sandbox process and filesystem service.
pub const ENVD_PORT: u16 = 49983;
/// Port of the code-interpreter (Jupyter) service inside a sandbox.
pub const CODE_INTERPRETER_PORT: u16 = 49999;
/// Response header of `GET /v2/sandboxes` that carries the next page's token; present
/// only when another page exists (the SDKs set `hasNext` from its presence).
pub const NEXT_TOKEN_HEADER: &str = "X-Next-Token";
/// Optional response header of `GET /v2/sandboxes` with the number of running sandboxes.
pub const TOTAL_RUNNING_HEADER: &str = "X-Total-Running";
/// Request header with the control-plane API key.
pub const API_KEY_HEADER: &str = "X-API-KEY";
/// Request header with the per-sandbox envd access token.
pub const ACCESS_TOKEN_HEADER: &str = "X-Access-Token";
/// Request header naming the target sandbox on proxied traffic.
pub const SANDBOX_ID_HEADER: &str = "E2b-Sandbox-Id";
/// Request header naming the target port on proxied traffic.
pub const SANDBOX_PORT_HEADER: &str = "E2b-Sandbox-Port";

//! Wire types of envd, E2B's in-sandbox agent, and the Connect protocol framing it speaks.
//!
//! Pure data: no I/O beyond byte buffers. The server (`stasis-envd`) and any client
//! (tests, the Rust SDK) share these definitions.
//!
//! * [`envelope`]: Connect streaming envelopes (`[flags][u32 BE length][payload]`).
//! * [`error`]: Connect error codes, their HTTP statuses and the end-stream message.
//! * [`process`], [`filesystem`]: the `process.Process` and `filesystem.Filesystem`
//!   messages in proto3 canonical JSON (lowerCamelCase, enums as names, `bytes` as
//!   base64, 64-bit integers as strings, default values omitted).
//! * [`http`]: bodies of envd's plain-HTTP endpoints (`/init`, `/files`, errors).
#![forbid(unsafe_code)]

pub mod envelope;
pub mod error;
pub mod filesystem;
pub mod http;
pub mod json;
pub mod process;

/// The envd version this agent reports. Anything at or above 0.6.4 unlocks every
/// SDK feature gate; 0.6.13 is the current upstream envd (see e2b-compat §6).
pub const ENVD_VERSION: &str = "0.6.13";

/// Default TCP port of envd inside a sandbox.
pub const ENVD_PORT: u16 = 49983;

/// `Content-Type` of unary Connect calls (JSON codec).
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// `Content-Type` of streaming Connect calls (JSON codec).
pub const CONTENT_TYPE_CONNECT_JSON: &str = "application/connect+json";

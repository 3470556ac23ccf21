//! Request bodies of the E2B control plane, as every SDK generation sends them.
//!
//! The server should read bodies as raw bytes and call [`parse_body`]: old SDKs send
//! `POST /sandboxes/{id}/pause` with `Content-Length: 0` and no `Content-Type`, which a
//! strict JSON extractor would reject. Unknown fields are ignored; `null` is accepted
//! wherever a field is optional.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::DEFAULT_TIMEOUT_SECS;

/// Why a request body was rejected. Becomes a 400 [`crate::ErrorBody`] via
/// [`crate::ErrorBody::from`].
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not valid JSON for the expected type.
    #[error("invalid {what} body: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A timeout that is zero or negative.
    #[error("invalid {field} {value}: must be a positive number of seconds")]
    NonPositiveTimeout { field: &'static str, value: i64 },
}

/// Parses a JSON request body, treating an empty or all-whitespace body as `{}`.
///
/// `what` names the body in the error (e.g. `"pause"`).
pub fn parse_body<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, BodyError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|source| BodyError::Json { what, source })
}

/// Resolves an optional wire timeout (seconds) to a positive value, defaulting to
/// [`DEFAULT_TIMEOUT_SECS`].
fn timeout_or_default(field: &'static str, timeout: Option<i64>) -> Result<u32, BodyError> {
    match timeout {
        None => Ok(DEFAULT_TIMEOUT_SECS),
        Some(value) if value <= 0 => Err(BodyError::NonPositiveTimeout { field, value }),
        Some(value) => Ok(u32::try_from(value).unwrap_or(u32::MAX)),
    }
}

/// Deserializes `null` as the type's default (for maps the SDKs may send as null).
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// The `autoPause` field of a create request.
///
/// Current SDKs send a bool. JS e2b 2.0–2.13 `betaCreate` forwarded its option verbatim,
/// so an object `{"enabled": bool, "timeout": ms}` arrives too; its `timeout` means
/// "auto-pause after this many milliseconds of inactivity" and is kept. An object
/// without `enabled` counts as enabled, as later SDKs treated any object as truthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AutoPause {
    pub enabled: bool,
    /// Inactivity window in milliseconds, only from the object form.
    pub timeout_ms: Option<u64>,
}

impl<'de> Deserialize<'de> for AutoPause {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            enabled: Option<bool>,
            #[serde(default)]
            timeout: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Bool(bool),
            Object(Object),
        }
        Ok(match Wire::deserialize(de)? {
            Wire::Bool(enabled) => AutoPause {
                enabled,
                timeout_ms: None,
            },
            Wire::Object(o) => AutoPause {
                enabled: o.enabled.unwrap_or(true),
                timeout_ms: o.timeout,
            },
        })
    }
}

impl Serialize for AutoPause {
    /// A bool (what the real API accepts) unless an inactivity timeout is set.
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Object {
            enabled: bool,
            timeout: u64,
        }
        match self.timeout_ms {
            None => ser.serialize_bool(self.enabled),
            Some(timeout) => Object {
                enabled: self.enabled,
                timeout,
            }
            .serialize(ser),
        }
    }
}

/// The `autoResume` field: `{"enabled": bool}` on the wire; a bare bool is tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct AutoResume {
    pub enabled: bool,
}

impl<'de> Deserialize<'de> for AutoResume {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            enabled: bool,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Bool(bool),
            Object(Object),
        }
        Ok(match Wire::deserialize(de)? {
            Wire::Bool(enabled) => AutoResume { enabled },
            Wire::Object(o) => AutoResume { enabled: o.enabled },
        })
    }
}

/// Body of `POST /v2/sandboxes` (`NewSandboxV2`) and `POST /sandboxes` (`NewSandbox`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewSandbox {
    /// Template name, alias or id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Timeout in seconds; v2 SDKs omit it (server default [`DEFAULT_TIMEOUT_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(rename = "autoPause", default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<AutoPause>,
    /// `false` = filesystem-only snapshot on auto-pause.
    #[serde(
        rename = "autoPauseMemory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_pause_memory: Option<bool>,
    #[serde(
        rename = "autoResume",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_resume: Option<AutoResume>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "envVars", default, deserialize_with = "null_as_default")]
    pub env_vars: BTreeMap<String, String>,
    /// Legacy (v1) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// snake_case on the wire, unlike everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    /// Egress rules and proxy settings (see [`crate::network`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::SandboxNetworkConfig>,
    /// MCP gateway config, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<serde_json::Value>,
    /// IAM token config, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<serde_json::Value>,
    /// Volume mounts, kept raw.
    #[serde(
        rename = "volumeMounts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub volume_mounts: Option<serde_json::Value>,
}

impl NewSandbox {
    /// The requested timeout in seconds, or [`DEFAULT_TIMEOUT_SECS`] when omitted.
    pub fn timeout_secs(&self) -> Result<u32, BodyError> {
        timeout_or_default("timeout", self.timeout)
    }

    /// Whether the sandbox pauses (rather than dies) on timeout.
    pub fn auto_pause_enabled(&self) -> bool {
        self.auto_pause.is_some_and(|a| a.enabled)
    }

    /// Whether an auto-pause keeps memory (absent means yes).
    pub fn auto_pause_memory(&self) -> bool {
        self.auto_pause_memory.unwrap_or(true)
    }

    /// Whether traffic to the paused sandbox resumes it.
    pub fn auto_resume_enabled(&self) -> bool {
        self.auto_resume.is_some_and(|a| a.enabled)
    }
}

/// Body of `POST /v2/sandboxes/{id}/connect` and `POST /sandboxes/{id}/connect`.
/// May be empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// `false` = reboot from the filesystem snapshot instead of restoring memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}

impl ConnectSandbox {
    /// The requested timeout in seconds, or [`DEFAULT_TIMEOUT_SECS`] when omitted.
    pub fn timeout_secs(&self) -> Result<u32, BodyError> {
        timeout_or_default("timeout", self.timeout)
    }
}

/// Body of `POST /sandboxes/{id}/resume` (only used by the 2.0–2.5 connect flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResumeSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Deprecated on the wire; the sandbox keeps its create-time setting when absent.
    #[serde(rename = "autoPause", default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<AutoPause>,
}

impl ResumeSandbox {
    /// The requested timeout in seconds, or [`DEFAULT_TIMEOUT_SECS`] when omitted.
    pub fn timeout_secs(&self) -> Result<u32, BodyError> {
        timeout_or_default("timeout", self.timeout)
    }
}

/// Body of `POST /sandboxes/{id}/pause`; an empty body parses as the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PauseSandbox {
    /// `false` = filesystem-only snapshot; absent means keep memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_healthy_guest: Option<bool>,
}

impl PauseSandbox {
    /// Whether the snapshot keeps memory and processes (absent `memory` means yes).
    pub fn keep_memory(&self) -> bool {
        self.memory.unwrap_or(true)
    }
}

/// Body of `POST /sandboxes/{id}/timeout`: the new endAt is now + `timeout` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTimeout {
    pub timeout: i64,
}

impl SetTimeout {
    /// The timeout in seconds; `0` (as E2B accepts) means "now", negative is rejected.
    pub fn timeout_secs(&self) -> Result<u32, BodyError> {
        if self.timeout == 0 {
            return Ok(0);
        }
        timeout_or_default("timeout", Some(self.timeout))
    }
}

/// Body of `POST /sandboxes/{id}/refreshes`: extend the TTL by `duration` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RefreshSandbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
}

/// Body of `POST /sandboxes/{id}/fork`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkSandbox {
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl Default for ForkSandbox {
    fn default() -> Self {
        Self { count: 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(json: &str) -> NewSandbox {
        parse_body("create", json.as_bytes()).unwrap()
    }

    #[test]
    fn observed_create_bodies_parse() {
        // e2b-compat §3.3, §9.
        let b = create(r#"{"templateID":"base"}"#);
        assert_eq!(b.template_id, "base");
        assert_eq!(b.timeout_secs().unwrap(), DEFAULT_TIMEOUT_SECS);
        assert!(!b.auto_pause_enabled());
        assert!(b.metadata.is_empty());

        let b = create(r#"{"templateID":"base","timeout":600,"autoPause":true}"#);
        assert_eq!(b.timeout_secs().unwrap(), 600);
        assert_eq!(
            b.auto_pause,
            Some(AutoPause {
                enabled: true,
                timeout_ms: None
            })
        );

        let b = create(r#"{"templateID":"base","metadata":{},"envVars":{}}"#);
        assert!(b.env_vars.is_empty());

        let b = create(
            r#"{"templateID":"base","timeout":300,"secure":true,"allow_internet_access":true,"autoPause":false}"#,
        );
        assert_eq!(b.secure, Some(true));
        assert_eq!(b.allow_internet_access, Some(true));
        assert!(!b.auto_pause_enabled());

        let b = create(
            r#"{"templateID":"base","timeout":600,"autoPause":true,"metadata":{},"envVars":{}}"#,
        );
        assert!(b.auto_pause_enabled());

        let b = create(
            r#"{"templateID":"base","timeout":300,"secure":true,"allow_internet_access":true,"autoPause":true,"autoResume":{"enabled":false}}"#,
        );
        assert!(b.auto_pause_enabled());
        assert_eq!(b.auto_resume, Some(AutoResume { enabled: false }));

        let b = create(
            r#"{"templateID":"base","allow_internet_access":true,"autoPause":true,"envVars":{},"metadata":{},"secure":true,"timeout":600}"#,
        );
        assert_eq!(b.timeout_secs().unwrap(), 600);

        let b = create(r#"{"templateID":"code-interpreter-v1"}"#);
        assert_eq!(b.template_id, "code-interpreter-v1");
    }

    #[test]
    fn auto_pause_object_form_keeps_its_timeout() {
        // JS e2b 2.0–2.13 betaCreate forwarded the object verbatim (e2b-compat §9e).
        let b = create(r#"{"templateID":"base","autoPause":{"enabled":true,"timeout":600000}}"#);
        assert_eq!(
            b.auto_pause,
            Some(AutoPause {
                enabled: true,
                timeout_ms: Some(600_000)
            })
        );
        let b = create(r#"{"templateID":"base","autoPause":{"enabled":false}}"#);
        assert!(!b.auto_pause_enabled());
        let b = create(r#"{"templateID":"base","autoPause":{"timeout":5}}"#);
        assert!(b.auto_pause_enabled());
        // Serialization goes back to the shape it came in.
        let json = serde_json::to_value(AutoPause {
            enabled: true,
            timeout_ms: Some(600_000),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"enabled": true, "timeout": 600000})
        );
        assert_eq!(
            serde_json::to_value(AutoPause {
                enabled: true,
                timeout_ms: None
            })
            .unwrap(),
            serde_json::json!(true)
        );
    }

    #[test]
    fn create_accepts_every_documented_field_and_ignores_unknown_ones() {
        let b = create(
            r#"{"templateID":"base","timeout":60,"autoPause":true,"autoPauseMemory":false,
                "autoResume":{"enabled":true},"metadata":{"a":"1"},"envVars":{"K":"V"},
                "secure":true,"allow_internet_access":false,
                "network":{"allowOut":["1.1.1.1"],"denyOut":["0.0.0.0/0"],"allowPublicTraffic":false,
                           "rules":{"api.example.com":[{"transform":{"headers":{"x":"y"}}}]}},
                "mcp":null,"iam":{"tokens":{"t":{"audience":"a","tokenType":"jwt"}}},
                "volumeMounts":[{"name":"v","path":"/data"}],"somethingNew":42}"#,
        );
        assert!(!b.auto_pause_memory());
        assert!(b.auto_resume_enabled());
        assert_eq!(b.metadata["a"], "1");
        assert_eq!(b.env_vars["K"], "V");
        assert_eq!(b.allow_internet_access, Some(false));
        let network = b.network.unwrap();
        assert_eq!(network.allow_out, Some(vec!["1.1.1.1".to_string()]));
        assert_eq!(network.deny_out, Some(vec!["0.0.0.0/0".to_string()]));
        assert_eq!(network.allow_public_traffic, Some(false));
        assert!(network.rules.unwrap().contains_key("api.example.com"));
        assert!(b.mcp.is_none());
        assert!(b.iam.is_some());
        assert!(b.volume_mounts.is_some());
        let b = create(r#"{"templateID":"base","metadata":null,"envVars":null}"#);
        assert!(b.metadata.is_empty());
    }

    #[test]
    fn a_zero_timeout_means_now_only_for_set_timeout() {
        assert_eq!(SetTimeout { timeout: 0 }.timeout_secs().unwrap(), 0);
        assert!(SetTimeout { timeout: -1 }.timeout_secs().is_err());
        assert_eq!(SetTimeout { timeout: 30 }.timeout_secs().unwrap(), 30);
    }

    #[test]
    fn bad_create_bodies_are_errors() {
        assert!(parse_body::<NewSandbox>("create", b"{}").is_err());
        assert!(parse_body::<NewSandbox>("create", b"not json").is_err());
        let b = create(r#"{"templateID":"base","timeout":0}"#);
        assert!(matches!(
            b.timeout_secs(),
            Err(BodyError::NonPositiveTimeout { value: 0, .. })
        ));
        let b = create(r#"{"templateID":"base","timeout":-5}"#);
        assert!(b.timeout_secs().is_err());
    }

    #[test]
    fn observed_pause_bodies_parse() {
        // e2b-compat §3.6: no body, {"memory":true}, {}, {"memory":false}, require_healthy_guest.
        let p: PauseSandbox = parse_body("pause", b"").unwrap();
        assert_eq!(p, PauseSandbox::default());
        assert!(p.keep_memory());
        let p: PauseSandbox = parse_body("pause", b"  \n").unwrap();
        assert!(p.keep_memory());
        let p: PauseSandbox = parse_body("pause", br#"{"memory":true}"#).unwrap();
        assert!(p.keep_memory());
        let p: PauseSandbox = parse_body("pause", b"{}").unwrap();
        assert!(p.keep_memory());
        let p: PauseSandbox = parse_body("pause", br#"{"memory":false}"#).unwrap();
        assert!(!p.keep_memory());
        let p: PauseSandbox =
            parse_body("pause", br#"{"memory":true,"require_healthy_guest":true}"#).unwrap();
        assert_eq!(p.require_healthy_guest, Some(true));
    }

    #[test]
    fn observed_connect_resume_and_timeout_bodies_parse() {
        let c: ConnectSandbox = parse_body("connect", b"{}").unwrap();
        assert_eq!(c.timeout_secs().unwrap(), DEFAULT_TIMEOUT_SECS);
        let c: ConnectSandbox = parse_body("connect", b"").unwrap();
        assert_eq!(c, ConnectSandbox::default());
        let c: ConnectSandbox = parse_body("connect", br#"{"timeout":300}"#).unwrap();
        assert_eq!(c.timeout, Some(300));
        let c: ConnectSandbox = parse_body("connect", br#"{"timeout":60,"memory":false}"#).unwrap();
        assert_eq!(c.memory, Some(false));

        let r: ResumeSandbox =
            parse_body("resume", br#"{"autoPause": false, "timeout": 300}"#).unwrap();
        assert_eq!(r.timeout_secs().unwrap(), 300);
        assert_eq!(r.auto_pause.map(|a| a.enabled), Some(false));
        let r: ResumeSandbox = parse_body("resume", br#"{"timeout": 300}"#).unwrap();
        assert!(r.auto_pause.is_none());

        let t: SetTimeout = parse_body("timeout", br#"{"timeout":300}"#).unwrap();
        assert_eq!(t.timeout_secs().unwrap(), 300);
        assert!(parse_body::<SetTimeout>("timeout", b"").is_err());

        let r: RefreshSandbox = parse_body("refresh", b"").unwrap();
        assert_eq!(r.duration, None);
        let r: RefreshSandbox = parse_body("refresh", br#"{"duration":30}"#).unwrap();
        assert_eq!(r.duration, Some(30));

        let f: ForkSandbox = parse_body("fork", b"").unwrap();
        assert_eq!(f.count, 1);
        let f: ForkSandbox = parse_body("fork", br#"{"count":3}"#).unwrap();
        assert_eq!(f.count, 3);
    }

    #[test]
    fn body_errors_name_the_body() {
        let err = parse_body::<PauseSandbox>("pause", b"{").unwrap_err();
        assert!(err.to_string().starts_with("invalid pause body"), "{err}");
    }
}

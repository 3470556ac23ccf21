//! Response bodies of the E2B control plane.
//!
//! Field names are exact. Fields the Python SDK requires are never skipped; nullable ones
//! the SDKs expect to see (`domain`, `trafficAccessToken`) serialize as `null`; optional
//! ones (`alias`, `network`, …) are left out when absent. Timestamps serialize as
//! RFC 3339 with a `Z` suffix.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stasis_types::SandboxId;

/// Wire state of a sandbox. Only these two exist on the wire; transient internal states
/// are reported as E2B does (pausing and resuming as `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    Running,
    Paused,
}

impl SandboxState {
    /// The exact wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
        }
    }
}

/// Answer to create (201), connect (200 running / 201 resumed) and resume (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: SandboxId,
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Plain `X.Y.Z`; ≥ 0.6.4 unlocks every SDK feature gate.
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    /// Must be the same on every connect as at create time.
    #[serde(rename = "envdAccessToken", default)]
    pub envd_access_token: Option<String>,
    /// Always serialized; `null` unless private ports are implemented.
    #[serde(rename = "trafficAccessToken", default)]
    pub traffic_access_token: Option<String>,
    /// Always serialized; keep `null` (it would replace the SDK's host suffix).
    #[serde(default)]
    pub domain: Option<String>,
    /// Template alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// One element of the `GET /v2/sandboxes` (and legacy `GET /sandboxes`) array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: SandboxId,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "startedAt")]
    pub started_at: DateTime<Utc>,
    /// The timeout deadline. For a paused sandbox, the deadline it had when it paused
    /// (E2B always sends a value here; Python requires it).
    #[serde(rename = "endAt")]
    pub end_at: DateTime<Utc>,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub state: SandboxState,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
}

/// `onTimeout` of [`Lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Kill,
    Pause,
}

/// Lifecycle policy reported by `GET /sandboxes/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(rename = "onTimeout")]
    pub on_timeout: OnTimeout,
    #[serde(rename = "autoResume")]
    pub auto_resume: bool,
}

/// Answer to `GET /sandboxes/{id}`: the listed fields plus connection details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    /// Needed by the 2.0–2.5 connect flow, which rebuilds its envd client from it.
    #[serde(rename = "envdAccessToken", default)]
    pub envd_access_token: Option<String>,
    /// Always serialized; keep `null`.
    #[serde(default)]
    pub domain: Option<String>,
    /// Always serialized; `null` means "not explicitly set".
    #[serde(rename = "allowInternetAccess", default)]
    pub allow_internet_access: Option<bool>,
    /// The sandbox's network configuration (see [`crate::network`]); build it with
    /// [`SandboxNetworkConfig::redacted`](crate::SandboxNetworkConfig::redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::SandboxNetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

/// One element of `GET /sandboxes/{id}/metrics`. Python requires all nine keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    /// Deprecated on the wire but still required.
    pub timestamp: DateTime<Utc>,
    /// Seconds since the epoch.
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    /// Bytes.
    pub mem_used: u64,
    pub mem_total: u64,
    /// Page cache, bytes.
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

impl SandboxMetric {
    /// A metric sample at `at`, with `timestampUnix` derived from it.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self {
            timestamp: at,
            timestamp_unix: at.timestamp(),
            cpu_count: 0,
            cpu_used_pct: 0.0,
            mem_used: 0,
            mem_total: 0,
            mem_cache: 0,
            disk_used: 0,
            disk_total: 0,
        }
    }
}

/// Build status of a [`Template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Waiting,
    Building,
    Ready,
    Error,
}

/// `createdBy` of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateCreator {
    /// A UUID on E2B.
    pub id: String,
    pub email: String,
}

/// One element of `GET /templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Last successful build.
    #[serde(rename = "buildID")]
    pub build_id: String,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub public: bool,
    /// Deprecated on the wire, still required.
    pub aliases: Vec<String>,
    /// `namespace/alias` when namespaced, else the alias.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    /// Always serialized, usually `null` on a self-hosted server.
    #[serde(rename = "createdBy", default)]
    pub created_by: Option<TemplateCreator>,
    /// Always serialized; `null` when never used.
    #[serde(rename = "lastSpawnedAt", default)]
    pub last_spawned_at: Option<DateTime<Utc>>,
    #[serde(rename = "spawnCount")]
    pub spawn_count: u64,
    #[serde(rename = "buildCount")]
    pub build_count: u32,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(rename = "buildStatus")]
    pub build_status: BuildStatus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 8, 22, h, m, 0).unwrap()
    }

    fn id() -> SandboxId {
        "i1a2b3c4d5e6f7g8h9j0k".parse().unwrap()
    }

    fn listed(state: SandboxState) -> ListedSandbox {
        ListedSandbox {
            template_id: "base".into(),
            alias: Some("base".into()),
            sandbox_id: id(),
            client_id: "6532622b".into(),
            started_at: t(10, 0),
            end_at: t(10, 5),
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            metadata: BTreeMap::new(),
            state,
            envd_version: "0.6.13".into(),
        }
    }

    #[test]
    fn sandbox_serializes_with_exact_field_names_and_nulls() {
        let s = Sandbox {
            sandbox_id: id(),
            template_id: "base".into(),
            client_id: "6532622b".into(),
            envd_version: "0.6.13".into(),
            envd_access_token: Some("tok".into()),
            traffic_access_token: None,
            domain: None,
            alias: Some("base".into()),
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "sandboxID": "i1a2b3c4d5e6f7g8h9j0k",
                "templateID": "base",
                "clientID": "6532622b",
                "envdVersion": "0.6.13",
                "envdAccessToken": "tok",
                "trafficAccessToken": null,
                "domain": null,
                "alias": "base"
            })
        );
        let back: Sandbox = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn listed_sandbox_matches_the_documented_example() {
        // e2b-compat §3.8.
        let doc = json!({"sandboxID":"i1a2b3c4d5e6f7g8h9j0k","templateID":"base","alias":"base","clientID":"6532622b",
            "startedAt":"2026-08-22T10:00:00Z","endAt":"2026-08-22T10:05:00Z",
            "cpuCount":2,"memoryMB":512,"diskSizeMB":1024,"metadata":{},"state":"paused","envdVersion":"0.6.13"});
        assert_eq!(
            serde_json::to_value(listed(SandboxState::Paused)).unwrap(),
            doc
        );
        let parsed: ListedSandbox = serde_json::from_value(doc).unwrap();
        assert_eq!(parsed, listed(SandboxState::Paused));
        assert_eq!(
            serde_json::to_value(SandboxState::Running).unwrap(),
            json!("running")
        );
        assert!(serde_json::from_value::<SandboxState>(json!("pausing")).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_with_z() {
        let at = Utc.timestamp_millis_opt(1_787_392_800_123).unwrap();
        let v = serde_json::to_value(SandboxMetric::at(at)).unwrap();
        let s = v["timestamp"].as_str().unwrap();
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(s, "2026-08-22T10:00:00.123Z");
        // Offsets on input are normalized to UTC.
        let parsed: DateTime<Utc> =
            serde_json::from_value(json!("2026-08-22T12:00:00+02:00")).unwrap();
        assert_eq!(parsed, t(10, 0));
    }

    #[test]
    fn detail_has_listed_fields_and_lifecycle() {
        let d = SandboxDetail {
            listed: listed(SandboxState::Running),
            envd_access_token: Some("tok".into()),
            domain: None,
            allow_internet_access: Some(true),
            network: None,
            lifecycle: Some(Lifecycle {
                on_timeout: OnTimeout::Pause,
                auto_resume: false,
            }),
        };
        let v = serde_json::to_value(&d).unwrap();
        for key in [
            "templateID",
            "sandboxID",
            "clientID",
            "startedAt",
            "endAt",
            "cpuCount",
            "memoryMB",
            "diskSizeMB",
            "state",
            "envdVersion",
            "envdAccessToken",
            "domain",
            "allowInternetAccess",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["domain"], json!(null));
        assert_eq!(v["state"], json!("running"));
        assert_eq!(
            v["lifecycle"],
            json!({"onTimeout": "pause", "autoResume": false})
        );
        let back: SandboxDetail = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn detail_carries_the_network_config_as_the_sdks_read_it() {
        let network: crate::SandboxNetworkConfig = serde_json::from_value(json!({
            "allowOut": ["1.1.1.1"], "denyOut": ["0.0.0.0/0"], "allowPublicTraffic": true,
            "egressProxy": {"address": "p:1080", "password": "secret"}
        }))
        .unwrap();
        let d = SandboxDetail {
            listed: listed(SandboxState::Running),
            envd_access_token: None,
            domain: None,
            allow_internet_access: Some(true),
            network: Some(network.redacted()),
            lifecycle: None,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v["network"],
            json!({"allowOut": ["1.1.1.1"], "denyOut": ["0.0.0.0/0"],
                   "allowPublicTraffic": true, "egressProxy": {"address": "p:1080"}})
        );
        let back: SandboxDetail = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn metric_has_all_nine_keys() {
        let v = serde_json::to_value(SandboxMetric::at(t(10, 0))).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "timestamp",
            "timestampUnix",
            "cpuCount",
            "cpuUsedPct",
            "memUsed",
            "memTotal",
            "memCache",
            "diskUsed",
            "diskTotal",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["timestampUnix"], json!(t(10, 0).timestamp()));
    }

    #[test]
    fn template_serializes_with_exact_field_names() {
        let tpl = Template {
            template_id: "base".into(),
            build_id: "b1".into(),
            cpu_count: 2,
            memory_mb: 512,
            disk_size_mb: 1024,
            public: false,
            aliases: vec!["base".into()],
            names: vec!["base".into()],
            created_at: t(9, 0),
            updated_at: t(9, 30),
            created_by: None,
            last_spawned_at: None,
            spawn_count: 3,
            build_count: 1,
            envd_version: "0.6.13".into(),
            build_status: BuildStatus::Ready,
        };
        assert_eq!(
            serde_json::to_value(&tpl).unwrap(),
            json!({
                "templateID": "base", "buildID": "b1", "cpuCount": 2, "memoryMB": 512,
                "diskSizeMB": 1024, "public": false, "aliases": ["base"], "names": ["base"],
                "createdAt": "2026-08-22T09:00:00Z", "updatedAt": "2026-08-22T09:30:00Z",
                "createdBy": null, "lastSpawnedAt": null, "spawnCount": 3, "buildCount": 1,
                "envdVersion": "0.6.13", "buildStatus": "ready"
            })
        );
    }
}

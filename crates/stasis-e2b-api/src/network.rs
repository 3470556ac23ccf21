//! The sandbox network configuration on the wire: the create body's `network` object
//! and the sandbox detail's (E2B's `SandboxNetworkConfig`), and the body of
//! `PUT /sandboxes/{id}/network` (E2B's `SandboxNetworkUpdateConfig`).
//!
//! Field names are exactly the SDKs' (JS `e2b` 2.51 `buildNetworkEgress` /
//! `buildNetworkUpdateBody`, Python `e2b` 2.63 `SandboxNetworkConfig` /
//! `SandboxNetworkUpdateConfig`); `allow_internet_access` is snake_case on the wire,
//! everything else camelCase. Entries of `allowOut` / `denyOut` stay strings here; what
//! they may contain (addresses, CIDRs, names) is the server's and the runtime's to check.
//! Unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `network` in `POST /sandboxes` / `POST /v2/sandboxes` and in `GET /sandboxes/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetworkConfig {
    /// Destinations allowed for egress: CIDRs, bare IPv4 addresses or domain names. They
    /// win over `deny_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Destinations denied for egress: CIDRs or bare addresses (no names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Whether sandbox URLs answer without the traffic access token (E2B's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// Host header sent to sandbox services; `${PORT}` is replaced by the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
    /// Sandbox ports that serve HTTPS rather than plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_ports: Option<Vec<u16>>,
    /// Resolvers the sandbox may reach when `allow_out` names a domain (Python SDK only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    /// SOCKS5 proxy for the sandbox's outbound TCP; `null` and absent both mean none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
    /// Per-domain transforms of outbound HTTPS requests, keyed by domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<NetworkRule>>>,
}

impl SandboxNetworkConfig {
    /// The configuration as `GET /sandboxes/{id}` may show it: without the egress
    /// proxy's password, which the API never returns.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        if let Some(p) = c.egress_proxy.as_mut() {
            p.password = None;
        }
        c
    }
}

/// Body of `PUT /sandboxes/{id}/network` (answered with 204). It replaces the whole
/// egress configuration: a field left out is cleared, not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxNetworkUpdate {
    /// snake_case on the wire. `false` is the same as `denyOut: ["0.0.0.0/0"]`.
    #[serde(
        rename = "allow_internet_access",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_internet_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Python SDK only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<EgressProxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<NetworkRule>>>,
}

/// E2B's `SandboxEgressProxyConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressProxy {
    /// `host:port`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// E2B's `SandboxNetworkRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<NetworkTransform>,
}

/// E2B's `SandboxNetworkTransform`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTransform {
    /// Headers injected into (or replaced in) matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_body;

    #[test]
    fn the_js_sdks_create_network_object_parses() {
        // What `Sandbox.create({ network: … })` of JS e2b 2.51 sends.
        let c: SandboxNetworkConfig = serde_json::from_str(
            r#"{"allowOut":["1.1.1.1","api.example.com"],"denyOut":["0.0.0.0/0"],
                "egressProxy":{"address":"proxy.example.com:1080","username":"u","password":"p"},
                "rules":{"api.example.com":[{"transform":{"headers":{"Authorization":"Bearer t"}}}]},
                "allowPublicTraffic":false,"maskRequestHost":"${PORT}-x.example.com",
                "httpsPorts":[3000]}"#,
        )
        .unwrap();
        assert_eq!(
            c.allow_out.as_deref(),
            Some(&["1.1.1.1".to_string(), "api.example.com".into()][..])
        );
        assert_eq!(c.deny_out.as_deref(), Some(&["0.0.0.0/0".to_string()][..]));
        assert_eq!(c.allow_public_traffic, Some(false));
        assert_eq!(
            c.mask_request_host.as_deref(),
            Some("${PORT}-x.example.com")
        );
        assert_eq!(c.https_ports, Some(vec![3000]));
        let proxy = c.egress_proxy.as_ref().unwrap();
        assert_eq!(proxy.address, "proxy.example.com:1080");
        assert_eq!(proxy.password.as_deref(), Some("p"));
        let rule = &c.rules.as_ref().unwrap()["api.example.com"][0];
        assert_eq!(
            rule.transform.as_ref().unwrap().headers.as_ref().unwrap()["Authorization"],
            "Bearer t"
        );
    }

    #[test]
    fn the_python_sdks_network_object_parses_with_nulls_and_unknown_fields() {
        let c: SandboxNetworkConfig = serde_json::from_str(
            r#"{"allowOut":["8.8.8.0/24"],"dnsServers":["8.8.8.8"],"egressProxy":null,
                "somethingNew":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(c.dns_servers, Some(vec!["8.8.8.8".to_string()]));
        assert_eq!(c.egress_proxy, None);
        assert_eq!(c.deny_out, None);
        assert_eq!(
            serde_json::from_str::<SandboxNetworkConfig>("{}").unwrap(),
            SandboxNetworkConfig::default()
        );
    }

    #[test]
    fn bad_network_objects_are_refused() {
        for bad in [
            r#"{"allowOut":"1.1.1.1"}"#,
            r#"{"denyOut":[1]}"#,
            r#"{"httpsPorts":[70000]}"#,
            r#"{"egressProxy":{"username":"u"}}"#,
            r#"{"allowPublicTraffic":"yes"}"#,
        ] {
            assert!(
                serde_json::from_str::<SandboxNetworkConfig>(bad).is_err(),
                "{bad} was accepted"
            );
        }
        let e = parse_body::<SandboxNetworkUpdate>("network update", br#"{"allowOut":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("network update") && e.contains("expected a sequence"),
            "{e}"
        );
    }

    #[test]
    fn the_update_body_parses_as_both_sdks_send_it() {
        // JS `sandbox.updateNetwork({ allowOut, denyOut, allowInternetAccess })`.
        let u: SandboxNetworkUpdate = parse_body(
            "network update",
            br#"{"allowOut":["1.1.1.1"],"denyOut":["0.0.0.0/0"],"allow_internet_access":false}"#,
        )
        .unwrap();
        assert_eq!(u.allow_internet_access, Some(false));
        assert_eq!(u.allow_out, Some(vec!["1.1.1.1".to_string()]));
        assert_eq!(u.deny_out, Some(vec!["0.0.0.0/0".to_string()]));
        // Python adds dnsServers; an empty body clears everything.
        let u: SandboxNetworkUpdate =
            parse_body("network update", br#"{"dnsServers":[],"egressProxy":null}"#).unwrap();
        assert_eq!(u.dns_servers, Some(vec![]));
        assert_eq!(
            parse_body::<SandboxNetworkUpdate>("network update", b"").unwrap(),
            SandboxNetworkUpdate::default()
        );
        // The camelCase spelling of the internet switch is not E2B's and is ignored.
        let u: SandboxNetworkUpdate =
            parse_body("network update", br#"{"allowInternetAccess":false}"#).unwrap();
        assert_eq!(u.allow_internet_access, None);
        assert_eq!(
            serde_json::to_value(SandboxNetworkUpdate {
                allow_internet_access: Some(true),
                ..Default::default()
            })
            .unwrap(),
            serde_json::json!({"allow_internet_access": true})
        );
    }

    /// Bodies captured from JS `e2b` 2.51.0 and Python `e2b` 2.63.0 talking to a
    /// recording HTTP server: `Sandbox.create({ network, allowInternetAccess })` and
    /// `Sandbox.updateNetwork(id, …)` / `update_network`.
    #[test]
    fn bodies_captured_from_the_sdks_parse() {
        let js_create = r#"{"templateID":"base","allow_internet_access":true,"network":{"allowOut":["1.1.1.1","api.example.com"],"denyOut":["0.0.0.0/0"],"egressProxy":{"address":"proxy.example.com:1080","username":"u","password":"p"},"rules":{"api.example.com":[{"transform":{"headers":{"Authorization":"Bearer t"}}}]},"allowPublicTraffic":false,"maskRequestHost":"${PORT}-x.example.com","httpsPorts":[3000]}}"#;
        let py_create = r#"{"templateID":"base","allow_internet_access":true,"network":{"allowPublicTraffic":false,"allowOut":["1.1.1.1","api.example.com"],"denyOut":["0.0.0.0/0"],"dnsServers":["8.8.8.8"]},"metadata":{},"envVars":{}}"#;
        for body in [js_create, py_create] {
            let b: crate::NewSandbox = parse_body("create", body.as_bytes()).unwrap();
            let n = b.network.expect("network");
            assert_eq!(n.allow_out.unwrap(), ["1.1.1.1", "api.example.com"]);
            assert_eq!(n.deny_out.unwrap(), ["0.0.0.0/0"]);
            assert_eq!(n.allow_public_traffic, Some(false));
        }
        // Both SDKs send the same update body.
        let u: SandboxNetworkUpdate = parse_body(
            "network update",
            br#"{"allowOut":["1.1.1.1"],"denyOut":["0.0.0.0/0"],"allow_internet_access":false}"#,
        )
        .unwrap();
        assert_eq!(u.allow_internet_access, Some(false));
        assert_eq!(u.allow_out.unwrap(), ["1.1.1.1"]);
        let u: SandboxNetworkUpdate = parse_body("network update", b"{}").unwrap();
        assert_eq!(u, SandboxNetworkUpdate::default());
    }

    #[test]
    fn the_detail_shows_the_config_without_the_proxy_password() {
        let c = SandboxNetworkConfig {
            allow_out: Some(vec!["1.1.1.1".into()]),
            deny_out: Some(vec!["0.0.0.0/0".into()]),
            egress_proxy: Some(EgressProxy {
                address: "p:1080".into(),
                username: Some("u".into()),
                password: Some("secret".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(c.redacted()).unwrap(),
            serde_json::json!({
                "allowOut": ["1.1.1.1"],
                "denyOut": ["0.0.0.0/0"],
                "egressProxy": {"address": "p:1080", "username": "u"}
            })
        );
    }
}

//! Sandbox networking.
//!
//! Every sandbox has its own network namespace, created by runc inside the sandbox's
//! user namespace (so CRIU can dump it). A prestart hook ([`prestart_hook`]), which runc
//! runs at `run` and again at `restore`, plugs a veth pair into it: the inner end is
//! `eth0` with the sandbox's address, the outer end joins the bridge as an *isolated*
//! port (sandboxes cannot reach each other). nftables rules on the host drop new
//! connections from sandboxes to the host; what a sandbox may reach beyond the host is
//! its [`NetworkPolicy`], installed by `apply_policy` and removed by `remove_policy`.
//!
//! Egress, per sandbox, in the table's forward chain (first match wins):
//!
//! ```text
//!   saddr ─vmap @policies─► chain sb_<hash>:
//!     DNS (53/udp,tcp) to the sandbox's resolvers, if it has internet ─► accept
//!     daddr in @blocked (private, CGNAT, link-local, loopback, multicast,
//!                        reserved, the sandbox subnet)              ─► reject
//!     daddr in sb_<hash>_allow (allow_out; names resolved)          ─► accept
//!     daddr in sb_<hash>_deny  (deny_out)                           ─► reject
//!     saddr in @internet (the sandbox has internet)                 ─► accept
//!     otherwise                                                     ─► reject
//! ```
//!
//! Forwarding is switched on per interface (the bridge, and the uplinks of the default
//! routes), never host-wide; on an uplink it switched on, the table forwards only replies
//! to connections that sandboxes opened.
//!
//! At restore CRIU recreates the namespace empty (runc dumps it with `empty-ns`), so the
//! hook sets up the same address again and restored listeners answer as before.

use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use stasis_types::SandboxId;

use crate::cmd;
use crate::error::Cause;

/// Annotation keys in config.json that carry the hook's parameters.
pub mod annotation {
    pub const BRIDGE: &str = "io.stasis.net.bridge";
    pub const ADDRESS: &str = "io.stasis.net.address";
    pub const PREFIX: &str = "io.stasis.net.prefix";
    pub const GATEWAY: &str = "io.stasis.net.gateway";
    pub const HOST_IF: &str = "io.stasis.net.host-if";
}

/// The host side of sandbox networking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Bridge the sandboxes' veths join.
    pub bridge: String,
    /// Network address of the sandbox subnet; the gateway (the bridge) is `.1`.
    pub subnet: Ipv4Addr,
    /// Prefix length of the subnet (8..=30).
    pub prefix: u8,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: "stasis0".into(),
            subnet: Ipv4Addr::new(10, 248, 0, 0),
            prefix: 16,
        }
    }
}

impl NetworkConfig {
    pub fn validate(&self) -> Result<(), Cause> {
        let ok_name = !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && self
                .bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok_name {
            return Err(Cause::Invalid(format!(
                "bridge name {:?} must be 1-15 characters of [A-Za-z0-9_-]",
                self.bridge
            )));
        }
        if !(8..=30).contains(&self.prefix) {
            return Err(Cause::Invalid(format!(
                "subnet prefix /{} must be between /8 and /30",
                self.prefix
            )));
        }
        if u32::from(self.subnet) & !self.mask() != 0 {
            return Err(Cause::Invalid(format!(
                "{}/{} is not a network address",
                self.subnet, self.prefix
            )));
        }
        Ok(())
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The bridge's own address, the sandboxes' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// The bridge's MAC address: fixed, locally administered and derived from its name.
    /// A Linux bridge left to itself takes the lowest MAC among its ports, so adding or
    /// removing one sandbox's veth would change the gateway's MAC under every other
    /// sandbox, whose ARP entries would then send replies nowhere until they expire.
    pub fn bridge_mac(&self) -> String {
        let h = blake3::hash(self.bridge.as_bytes());
        let b = h.as_bytes();
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4]
        )
    }

    /// Addresses that may be given to sandboxes, in order.
    pub fn host_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.subnet);
        let size = 1u32 << (32 - self.prefix);
        (2..size - 1).map(move |i| Ipv4Addr::from(base + i))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.subnet)
    }

    fn nft_table(&self) -> String {
        format!("stasis_{}", self.bridge.replace('-', "_"))
    }
}

/// The host-side interface name of a sandbox's veth (at most 15 bytes, stable per id).
pub fn host_if_name(id: &SandboxId) -> String {
    let h = blake3::hash(id.as_str().as_bytes());
    format!("stv{}", &h.to_hex()[..12])
}

fn ip() -> Command {
    Command::new("ip")
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a host link if it exists.
pub(crate) fn delete_link(name: &str) -> Result<(), Cause> {
    if !link_exists(name) {
        return Ok(());
    }
    let mut c = ip();
    c.args(["link", "del", name]);
    match cmd::run(c) {
        Ok(_) => Ok(()),
        Err(_) if !link_exists(name) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the bridge and the nftables table if they are missing. Idempotent, and
/// serialised host-wide: runtimes starting at the same moment on a fresh host (a test
/// suite's parallel servers) would otherwise both add the gateway address (one fails
/// with "Address already assigned") and both load the table (its rules twice).
pub(crate) fn ensure_host_network(cfg: &NetworkConfig) -> Result<(), Cause> {
    cfg.validate()?;
    let _setup = lock_host_network(&cfg.bridge)?;
    if !link_exists(&cfg.bridge) {
        let mut c = ip();
        c.args(["link", "add", &cfg.bridge, "type", "bridge"]);
        if let Err(e) = cmd::run(c) {
            // Another runtime may have created it at the same moment.
            if !link_exists(&cfg.bridge) {
                return Err(e);
            }
        }
    }
    let mac = cfg.bridge_mac();
    let mac_file = Path::new("/sys/class/net")
        .join(&cfg.bridge)
        .join("address");
    let current = fs::read_to_string(&mac_file).map_err(Cause::io(&mac_file))?;
    if current.trim() != mac {
        let mut c = ip();
        c.args(["link", "set", "dev", &cfg.bridge, "address", &mac]);
        cmd::run(c)?;
    }
    let gw = format!("{}/{}", cfg.gateway(), cfg.prefix);
    let addrs = {
        let mut c = ip();
        c.args(["-o", "-4", "addr", "show", "dev", &cfg.bridge]);
        cmd::run(c)?
    };
    if !addrs.contains(&format!(" {gw} ")) {
        let mut c = ip();
        c.args(["addr", "add", &gw, "dev", &cfg.bridge]);
        if let Err(e) = cmd::run(c) {
            if !e.to_string().contains("File exists") {
                return Err(e);
            }
        }
    }
    let mut c = ip();
    c.args(["link", "set", &cfg.bridge, "up"]);
    cmd::run(c)?;

    let table = cfg.nft_table();
    let mut probe = Command::new("nft");
    probe.args(["list", "table", "inet", &table]);
    let script = if cmd::run(probe).is_err() {
        Some(nft_ruleset(cfg))
    } else {
        // A table of an earlier version has no per-sandbox policies yet.
        let mut probe = Command::new("nft");
        probe.args(["list", "map", "inet", &table, "policies"]);
        cmd::run(probe).is_err().then(|| nft_upgrade(cfg))
    };
    if let Some(script) = script {
        let mut c = Command::new("nft");
        c.args(["-f", "-"]);
        cmd::run_with_input(c, script.as_bytes())?;
    }
    Ok(())
}

/// Holds `/run/stasis/net-{bridge}.lock` until dropped (waits for another holder).
fn lock_host_network(bridge: &str) -> Result<fs::File, Cause> {
    let dir = Path::new("/run/stasis");
    fs::create_dir_all(dir).map_err(Cause::io(dir))?;
    crate::leases::hold_lock(&dir.join(format!("net-{bridge}.lock")))
}

/// Destinations no sandbox may reach, whatever its policy (an `allow_out` entry cannot
/// open them, as in E2B): "this network", private ranges, CGNAT, loopback, link-local
/// (cloud metadata services included), multicast and the reserved block up to the
/// broadcast address. The sandbox subnet is added per host network.
pub const ALWAYS_BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The nftables table that confines sandbox traffic: input to the host only for replies;
/// forwarding decided per source address by the sandbox's policy chain (`policies`);
/// uplinks whose forwarding the runtime switched on forward only replies to connections
/// that sandboxes opened.
/// The `internet` set holds the addresses of sandboxes with internet access.
fn nft_ruleset(cfg: &NetworkConfig) -> String {
    let t = cfg.nft_table();
    let br = &cfg.bridge;
    let net = format!("{}/{}", cfg.subnet, cfg.prefix);
    let upgrade = nft_upgrade(cfg);
    format!(
        r#"table inet {t} {{
  set internet {{ type ipv4_addr; }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{br}" ct state established,related accept
    iifname "{br}" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname "{br}" ct state established,related accept
    iifname "{br}" drop
    oifname "{br}" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {net} oifname != "{br}" masquerade
  }}
}}
{upgrade}"#
    )
}

/// What turns a table of an earlier version (no `policies` map) into the current one;
/// also the second half of a fresh table.
fn nft_upgrade(cfg: &NetworkConfig) -> String {
    let t = cfg.nft_table();
    let br = &cfg.bridge;
    let blocked = ALWAYS_BLOCKED
        .iter()
        .map(|s| s.to_string())
        .chain([format!("{}/{}", cfg.subnet, cfg.prefix)])
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"add set inet {t} blocked {{ type ipv4_addr; flags interval; auto-merge; }}
add element inet {t} blocked {{ {blocked} }}
add set inet {t} uplinks {{ type ifname; }}
add map inet {t} policies {{ type ipv4_addr : verdict; }}
insert rule inet {t} forward iifname "{br}" oifname != "{br}" ip saddr vmap @policies
add rule inet {t} forward iifname @uplinks ct state != {{ established, related }} drop
"#
    )
}

/// Records whether `addr` has internet access (the `internet` set its policy chain
/// consults), and switches forwarding on for the bridge and its uplinks when it does.
pub(crate) fn set_internet(cfg: &NetworkConfig, addr: Ipv4Addr, allow: bool) -> Result<(), Cause> {
    let table = cfg.nft_table();
    let elem = format!("{{ {addr} }}");
    let mut c = Command::new("nft");
    if allow {
        enable_forwarding(cfg)?;
        c.args(["add", "element", "inet", &table, "internet", &elem]);
        cmd::run(c).map(drop)
    } else {
        c.args(["delete", "element", "inet", &table, "internet", &elem]);
        // Deleting an absent element fails; that is the state we want.
        let _ = cmd::run(c);
        Ok(())
    }
}

fn forwarding_path(ifname: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf")
        .join(ifname)
        .join("forwarding")
}

/// Switches IPv4 forwarding on for the bridge and for the interfaces of the default
/// routes, never host-wide (`net.ipv4.ip_forward` stays as it is). Linux checks the
/// interface a packet arrives on, so both are needed: the bridge for a sandbox's
/// packets, the uplink for the replies. An uplink switched on here joins `@uplinks`
/// first, so it forwards nothing but replies to connections that sandboxes opened.
pub(crate) fn enable_forwarding(cfg: &NetworkConfig) -> Result<(), Cause> {
    let table = cfg.nft_table();
    for ifname in std::iter::once(cfg.bridge.clone()).chain(default_route_interfaces()?) {
        let path = forwarding_path(&ifname);
        let on = fs::read_to_string(&path)
            .map(|s| s.trim() == "1")
            .map_err(Cause::io(&path))?;
        if on {
            continue;
        }
        if ifname != cfg.bridge {
            let mut c = Command::new("nft");
            c.args([
                "add",
                "element",
                "inet",
                &table,
                "uplinks",
                &format!("{{ \"{ifname}\" }}"),
            ]);
            cmd::run(c)?;
        }
        fs::write(&path, "1").map_err(Cause::io(&path))?;
    }
    Ok(())
}

/// Interfaces that carry an IPv4 default route (`/proc/net/route`).
fn default_route_interfaces() -> Result<Vec<String>, Cause> {
    let path = Path::new("/proc/net/route");
    let body = fs::read_to_string(path).map_err(Cause::io(path))?;
    let mut out: Vec<String> = Vec::new();
    for line in body.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 8
            && f[1] == "00000000"
            && f[7] == "00000000"
            && !out.iter().any(|o| o == f[0])
        {
            out.push(f[0].to_owned());
        }
    }
    Ok(out)
}

/// The IPv4 resolvers a sandbox with internet access is given (the host's, minus
/// loopback ones, which a sandbox cannot reach).
pub fn sandbox_resolvers() -> Vec<Ipv4Addr> {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback())
        .collect()
}

/// Why an allow or deny list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("network rule {entry:?}: {reason}")]
    Invalid { entry: String, reason: &'static str },
    #[error("network rule {entry:?}: IPv6 is not supported (sandboxes have IPv4 only)")]
    Ipv6 { entry: String },
    #[error("network rule {entry:?}: ports are not supported; give the address or CIDR alone")]
    Port { entry: String },
    #[error(
        "network rule {entry:?}: wildcard names are not supported (names are resolved when \
         the policy is applied); list each name"
    )]
    Wildcard { entry: String },
    #[error("denyOut entry {entry:?}: domain names are not supported in deny rules; give a CIDR")]
    DomainInDenyOut { entry: String },
    #[error(
        "allowOut entry {entry:?} lies in {range}, which sandboxes can never reach (private, \
         link-local, loopback, multicast or reserved addresses)"
    )]
    AlwaysBlocked { entry: String, range: &'static str },
}

/// One entry of an allow or deny list: an IPv4 network (a bare address is a /32) or a
/// domain name (allow lists only), resolved to its IPv4 addresses when the policy is
/// applied. Serialized as the string it was written as (normalized).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    Net { addr: Ipv4Addr, prefix: u8 },
    Domain(String),
}

impl Destination {
    /// Whether `a` lies in this network (always false for a name).
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        match self {
            Destination::Net { addr, prefix } => {
                let mask = prefix_mask(*prefix);
                u32::from(a) & mask == u32::from(*addr)
            }
            Destination::Domain(_) => false,
        }
    }

    /// Whether this network lies entirely inside `other`.
    fn within(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Net { addr, prefix }, Destination::Net { prefix: op, .. }) => {
                prefix >= op && other.contains(*addr)
            }
            _ => false,
        }
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl std::str::FromStr for Destination {
    type Err = PolicyError;

    fn from_str(raw: &str) -> Result<Self, PolicyError> {
        let entry = raw.trim();
        let invalid = |reason| PolicyError::Invalid {
            entry: raw.to_owned(),
            reason,
        };
        if entry.is_empty() {
            return Err(invalid("empty entry"));
        }
        if entry.contains(':') {
            let host = entry.split('/').next().unwrap_or(entry);
            return Err(if host.parse::<std::net::Ipv6Addr>().is_ok() {
                PolicyError::Ipv6 {
                    entry: raw.to_owned(),
                }
            } else {
                PolicyError::Port {
                    entry: raw.to_owned(),
                }
            });
        }
        if let Some((a, p)) = entry.split_once('/') {
            let addr: Ipv4Addr = a
                .parse()
                .map_err(|_| invalid("not an IPv4 address before the '/'"))?;
            let prefix: u8 = p
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or_else(|| invalid("the prefix length must be a number from 0 to 32"))?;
            let addr = Ipv4Addr::from(u32::from(addr) & prefix_mask(prefix));
            return Ok(Destination::Net { addr, prefix });
        }
        if let Ok(addr) = entry.parse::<Ipv4Addr>() {
            return Ok(Destination::Net { addr, prefix: 32 });
        }
        if entry.starts_with("*.") || entry == "*" {
            return Err(PolicyError::Wildcard {
                entry: raw.to_owned(),
            });
        }
        let name = entry.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.len() > 253 || !labels.iter().all(label_ok) {
            return Err(invalid(
                "neither an IPv4 address, a CIDR nor a domain name (letters, digits, '-', '.')",
            ));
        }
        if labels
            .last()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid("not a valid IPv4 address"));
        }
        Ok(Destination::Domain(name))
    }
}

impl TryFrom<String> for Destination {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Net { addr, prefix: 32 } => write!(f, "{addr}"),
            Destination::Net { addr, prefix } => write!(f, "{addr}/{prefix}"),
            Destination::Domain(d) => f.write_str(d),
        }
    }
}

/// A sandbox's egress rules, on top of its internet switch (`SandboxSpec::allow_internet`),
/// with E2B's semantics: `allow_out` wins over `deny_out`; without internet access the
/// sandbox behaves as if `deny_out` held `0.0.0.0/0`, so `allow_out` still reaches its
/// destinations; the [`ALWAYS_BLOCKED`] ranges stay closed whatever the lists say.
/// `deny_out: ["0.0.0.0/0"]` with a few `allow_out` entries is "only these".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    #[serde(default)]
    pub allow_out: Vec<Destination>,
    #[serde(default)]
    pub deny_out: Vec<Destination>,
}

impl NetworkPolicy {
    /// Parses the wire's lists (E2B's `allowOut` / `denyOut`), refusing what cannot be
    /// enforced: IPv6, ports, wildcard names, names in the deny list, and allow entries
    /// inside the always-blocked ranges.
    pub fn parse<A: AsRef<str>, D: AsRef<str>>(
        allow_out: &[A],
        deny_out: &[D],
    ) -> Result<Self, PolicyError> {
        let blocked: Vec<(&'static str, Destination)> = ALWAYS_BLOCKED
            .iter()
            .map(|r| (*r, r.parse().expect("valid built-in range")))
            .collect();
        let mut policy = NetworkPolicy::default();
        for raw in allow_out {
            let d: Destination = raw.as_ref().parse()?;
            if let Some((range, _)) = blocked.iter().find(|(_, b)| d.within(b)) {
                return Err(PolicyError::AlwaysBlocked {
                    entry: raw.as_ref().to_owned(),
                    range,
                });
            }
            policy.allow_out.push(d);
        }
        for raw in deny_out {
            let d: Destination = raw.as_ref().parse()?;
            if matches!(d, Destination::Domain(_)) {
                return Err(PolicyError::DomainInDenyOut {
                    entry: raw.as_ref().to_owned(),
                });
            }
            policy.deny_out.push(d);
        }
        Ok(policy)
    }

    /// Whether the policy names any domain (which must be resolved to be applied).
    pub fn has_domains(&self) -> bool {
        self.allow_out
            .iter()
            .any(|d| matches!(d, Destination::Domain(_)))
    }
}

/// How long one name may take to resolve when a policy is applied.
pub const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves `name` to its IPv4 addresses with the host's resolver, within
/// [`RESOLVE_TIMEOUT`] (the lookup runs on a thread of its own, abandoned on timeout).
pub fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, Cause> {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let query = format!("{name}:0");
    std::thread::Builder::new()
        .name("stasis-resolve".into())
        .spawn(move || {
            let r = query.to_socket_addrs().map(|it| {
                let mut v: Vec<Ipv4Addr> = it
                    .filter_map(|a| match a.ip() {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                v.sort();
                v.dedup();
                v
            });
            let _ = tx.send(r);
        })
        .map_err(|source| Cause::Sys {
            what: format!("start a thread to resolve {name}"),
            source,
        })?;
    let what = format!("resolve allowOut name {name} (check the name, or give its address)");
    match rx.recv_timeout(RESOLVE_TIMEOUT) {
        Ok(Ok(v)) if !v.is_empty() => Ok(v),
        Ok(Ok(_)) => Err(Cause::Sys {
            what,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no IPv4 address"),
        }),
        Ok(Err(source)) => Err(Cause::Sys { what, source }),
        Err(_) => Err(Cause::Sys {
            what,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", RESOLVE_TIMEOUT.as_secs()),
            ),
        }),
    }
}

/// A policy ready for nftables: names resolved to addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResolvedPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl ResolvedPolicy {
    /// Resolves the policy's names. `strict`: a name that does not resolve is an error;
    /// otherwise it is left out with a warning (re-applying a policy at resume must not
    /// keep a sandbox paused because a name stopped resolving).
    pub fn resolve(p: &NetworkPolicy, strict: bool) -> Result<Self, Cause> {
        let mut allow = Vec::new();
        for d in &p.allow_out {
            match d {
                Destination::Net { .. } => allow.push(d.to_string()),
                Destination::Domain(name) => match resolve(name) {
                    Ok(addrs) => allow.extend(addrs.iter().map(Ipv4Addr::to_string)),
                    Err(e) if !strict => {
                        tracing::warn!(name = %name, error = %e, "allowOut name left out")
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        let deny = p.deny_out.iter().map(Destination::to_string).collect();
        Ok(Self { allow, deny })
    }
}

/// The per-sandbox nftables names: the policy chain and its two sets.
fn policy_names(id: &SandboxId) -> (String, String, String) {
    let h = &host_if_name(id)[3..];
    (
        format!("sb_{h}"),
        format!("sb_{h}_allow"),
        format!("sb_{h}_deny"),
    )
}

/// The nft script that (re)builds a sandbox's policy chain and points its address at it,
/// in one transaction.
fn policy_script(
    cfg: &NetworkConfig,
    id: &SandboxId,
    addr: Ipv4Addr,
    p: &ResolvedPolicy,
    resolvers: &[Ipv4Addr],
) -> String {
    let t = cfg.nft_table();
    let (chain, allow, deny) = policy_names(id);
    let mut s = format!("add chain inet {t} {chain}\nflush chain inet {t} {chain}\n");
    for (set, elems) in [(&allow, &p.allow), (&deny, &p.deny)] {
        s += &format!(
            "add set inet {t} {set} {{ type ipv4_addr; flags interval; auto-merge; }}\n\
             flush set inet {t} {set}\n"
        );
        if !elems.is_empty() {
            s += &format!("add element inet {t} {set} {{ {} }}\n", elems.join(", "));
        }
    }
    let reject = "reject with icmpx type admin-prohibited";
    if !resolvers.is_empty() {
        let ns = resolvers
            .iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        s += &format!(
            "add rule inet {t} {chain} ip saddr @internet ip daddr {{ {ns} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n"
        );
    }
    s += &format!(
        "add rule inet {t} {chain} ip daddr @blocked {reject}\n\
         add rule inet {t} {chain} ip daddr @{allow} accept\n\
         add rule inet {t} {chain} ip daddr @{deny} {reject}\n\
         add rule inet {t} {chain} ip saddr @internet accept\n\
         add rule inet {t} {chain} {reject}\n\
         add element inet {t} policies {{ {addr} : jump {chain} }}\n"
    );
    s
}

/// Installs (or replaces, atomically) the egress policy of the sandbox `id` at `addr`.
/// Switches forwarding on when the policy can forward anything.
pub(crate) fn apply_policy(
    cfg: &NetworkConfig,
    id: &SandboxId,
    addr: Ipv4Addr,
    internet: bool,
    policy: &ResolvedPolicy,
) -> Result<(), Cause> {
    if internet || !policy.allow.is_empty() {
        enable_forwarding(cfg)?;
    }
    // The address may still point at the chain of an earlier owner (after a crash).
    unmap_address(cfg, addr);
    let script = policy_script(cfg, id, addr, policy, &sandbox_resolvers());
    let mut c = Command::new("nft");
    c.args(["-f", "-"]);
    cmd::run_with_input(c, script.as_bytes()).map(drop)
}

fn unmap_address(cfg: &NetworkConfig, addr: Ipv4Addr) {
    let mut c = Command::new("nft");
    c.args([
        "delete",
        "element",
        "inet",
        &cfg.nft_table(),
        "policies",
        &format!("{{ {addr} }}"),
    ]);
    // Absent is the state we want.
    let _ = cmd::run(c);
}

/// Removes the egress policy of the sandbox `id` (its chain, its sets and, when the
/// address is known, the address's entry). Idempotent.
pub(crate) fn remove_policy(
    cfg: &NetworkConfig,
    id: &SandboxId,
    addr: Option<Ipv4Addr>,
) -> Result<(), Cause> {
    let t = cfg.nft_table();
    let (chain, allow, deny) = policy_names(id);
    let mut c = Command::new("nft");
    c.args(["list", "table", "inet", &t]);
    let listing = cmd::run(c)?;
    // The address's entry, known or found in the map (a record that cannot be read).
    let jump = format!(": jump {chain}");
    let mapped = listing.split([',', '{', '}', '\n']).find_map(|e| {
        e.trim()
            .strip_suffix(jump.as_str())
            .and_then(|a| a.trim().parse::<Ipv4Addr>().ok())
    });
    for a in addr.into_iter().chain(mapped) {
        unmap_address(cfg, a);
    }
    let has = |kind: &str, name: &str| listing.contains(&format!("\t{kind} {name} {{"));
    let mut script = String::new();
    if has("chain", &chain) {
        script += &format!("delete chain inet {t} {chain}\n");
    }
    for set in [&allow, &deny] {
        if has("set", set) {
            script += &format!("delete set inet {t} {set}\n");
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    let mut c = Command::new("nft");
    c.args(["-f", "-"]);
    cmd::run_with_input(c, script.as_bytes()).map(drop)
}

/// The part of the OCI state that runc passes to hooks on stdin.
#[derive(Debug, Deserialize)]
struct HookState {
    pid: u32,
    bundle: PathBuf,
}

/// The network parameters the hook reads from the bundle's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookParams {
    pub bridge: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub host_if: String,
}

impl HookParams {
    pub fn annotations(&self) -> Vec<(String, String)> {
        vec![
            (annotation::BRIDGE.into(), self.bridge.clone()),
            (annotation::ADDRESS.into(), self.address.to_string()),
            (annotation::PREFIX.into(), self.prefix.to_string()),
            (annotation::GATEWAY.into(), self.gateway.to_string()),
            (annotation::HOST_IF.into(), self.host_if.clone()),
        ]
    }

    fn from_config(config: &Path) -> Result<Self, Cause> {
        let body = fs::read(config).map_err(Cause::io(config))?;
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&body).map_err(|source| Cause::Json {
                path: config.to_owned(),
                source,
            })?;
        let ann = spec.annotations().clone().unwrap_or_default();
        let get = |k: &str| {
            ann.get(k).cloned().ok_or_else(|| {
                Cause::Invalid(format!("{} has no annotation {k}", config.display()))
            })
        };
        let parse_ip = |k: &str| -> Result<Ipv4Addr, Cause> {
            get(k)?
                .parse()
                .map_err(|_| Cause::Invalid(format!("annotation {k} is not an IPv4 address")))
        };
        let host_if = get(annotation::HOST_IF)?;
        let bridge = get(annotation::BRIDGE)?;
        for name in [&host_if, &bridge] {
            if name.is_empty()
                || name.len() > 15
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(Cause::Invalid(format!("bad interface name {name:?}")));
            }
        }
        Ok(Self {
            bridge,
            address: parse_ip(annotation::ADDRESS)?,
            prefix: get(annotation::PREFIX)?
                .parse()
                .map_err(|_| Cause::Invalid("annotation prefix is not a number".into()))?,
            gateway: parse_ip(annotation::GATEWAY)?,
            host_if,
        })
    }
}

/// The OCI prestart hook: reads the container state from `input`, then plugs the veth
/// into the container's network namespace and configures both ends.
pub fn prestart_hook(input: impl Read) -> Result<(), Cause> {
    let state: HookState = serde_json::from_reader(input).map_err(|source| Cause::Json {
        path: PathBuf::from("<hook stdin>"),
        source,
    })?;
    let params = HookParams::from_config(&state.bundle.join("config.json"))?;
    plug(&params, state.pid)
}

fn plug(p: &HookParams, pid: u32) -> Result<(), Cause> {
    let netns = format!("/proc/{pid}/ns/net");
    // A leftover from a previous run of this sandbox would block the name.
    delete_link(&p.host_if)?;
    let pid_s = pid.to_string();
    let mut c = ip();
    c.args([
        "link", "add", &p.host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid_s,
    ]);
    cmd::run(c)?;
    let mut c = ip();
    c.args(["link", "set", &p.host_if, "master", &p.bridge, "up"]);
    cmd::run(c)?;
    let mut c = Command::new("bridge");
    c.args(["link", "set", "dev", &p.host_if, "isolated", "on"]);
    cmd::run(c)?;
    // The address may have belonged to another sandbox moments ago: forget its MAC.
    let mut c = ip();
    c.args([
        "neigh",
        "flush",
        "to",
        &p.address.to_string(),
        "dev",
        &p.bridge,
    ]);
    let _ = cmd::run(c);
    let batch = format!(
        "addr add {}/{} dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {}\n",
        p.address, p.prefix, p.gateway
    );
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={netns}")).args(["ip", "-batch", "-"]);
    cmd::run_with_input(c, batch.as_bytes())?;
    Ok(())
}

/// Removes the network lock CRIU puts into a sandbox's network namespace while it dumps
/// (its `CRIU` iptables chain, or a `CRIU…` nftables table): CRIU removes it when it
/// finishes, but one killed in the middle leaves every packet of the sandbox dropped.
/// `init_pid` is the sandbox's PID 1 on the host. Does nothing where there is no lock.
pub(crate) fn unlock_criu_network(init_pid: u32) -> Result<(), Cause> {
    let ns = format!("--net=/proc/{init_pid}/ns/net");
    let inside = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(&ns).args(args);
        cmd::run_limited(c, cmd::Limits::within(std::time::Duration::from_secs(30)))
    };
    for tool in ["iptables", "ip6tables"] {
        if inside(&[tool, "-w", "-S", "CRIU"]).is_err() {
            continue; // no such chain (or no such tool)
        }
        for hook in ["INPUT", "OUTPUT"] {
            while inside(&[tool, "-w", "-D", hook, "-j", "CRIU"]).is_ok() {}
        }
        inside(&[tool, "-w", "-F", "CRIU"])?;
        inside(&[tool, "-w", "-X", "CRIU"])?;
    }
    if let Ok(tables) = inside(&["nft", "list", "tables"]) {
        for line in tables.lines() {
            let mut w = line.split_whitespace();
            if let (Some("table"), Some(family), Some(name)) = (w.next(), w.next(), w.next()) {
                if name.starts_with("CRIU") {
                    inside(&["nft", "delete", "table", family, name])?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_arithmetic() {
        let cfg = NetworkConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 248, 0, 1));
        let mut it = cfg.host_addresses();
        assert_eq!(it.next(), Some(Ipv4Addr::new(10, 248, 0, 2)));
        assert_eq!(cfg.host_addresses().count(), 65536 - 3);
        assert!(cfg.contains(Ipv4Addr::new(10, 248, 255, 254)));
        assert!(!cfg.contains(Ipv4Addr::new(10, 249, 0, 1)));
        let bad = NetworkConfig {
            subnet: Ipv4Addr::new(10, 248, 0, 1),
            ..NetworkConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = NetworkConfig {
            bridge: "bad name".into(),
            ..NetworkConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn bridge_macs_are_unicast_local_and_per_bridge() {
        let a = NetworkConfig::default();
        let mac = a.bridge_mac();
        assert_eq!(mac.len(), 17);
        assert!(mac.starts_with("02:"), "{mac}");
        assert_eq!(mac, NetworkConfig::default().bridge_mac());
        let b = NetworkConfig {
            bridge: "stasist0".into(),
            ..NetworkConfig::default()
        };
        assert_ne!(mac, b.bridge_mac());
    }

    #[test]
    fn host_if_names_fit_and_are_stable() {
        let id: SandboxId = "abcdefghijklmnopqrst".parse().unwrap();
        let n = host_if_name(&id);
        assert!(n.len() <= 15);
        assert_eq!(n, host_if_name(&id));
        assert_ne!(n, host_if_name(&"other".parse().unwrap()));
    }

    #[test]
    fn hook_params_round_trip_through_annotations() {
        let p = HookParams {
            bridge: "stasis0".into(),
            address: Ipv4Addr::new(10, 248, 0, 7),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 248, 0, 1),
            host_if: "stv0123456789ab".into(),
        };
        let mut spec = oci_spec::runtime::Spec::default();
        spec.set_annotations(Some(p.annotations().into_iter().collect()));
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("config.json");
        fs::write(&cfg, serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(HookParams::from_config(&cfg).unwrap(), p);
    }

    #[test]
    fn destinations_parse_and_normalize() {
        let d = |s: &str| s.parse::<Destination>();
        assert_eq!(
            d("8.8.8.8").unwrap(),
            Destination::Net {
                addr: Ipv4Addr::new(8, 8, 8, 8),
                prefix: 32
            }
        );
        assert_eq!(d(" 8.8.8.0/24 ").unwrap().to_string(), "8.8.8.0/24");
        // Host bits are masked, as CIDR parsers do.
        assert_eq!(d("8.8.8.8/24").unwrap().to_string(), "8.8.8.0/24");
        assert_eq!(d("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            d("API.Example.com.").unwrap(),
            Destination::Domain("api.example.com".into())
        );
        assert!(matches!(d("::1"), Err(PolicyError::Ipv6 { .. })));
        assert!(matches!(d("fc00::/7"), Err(PolicyError::Ipv6 { .. })));
        assert!(matches!(d("8.8.8.8:53"), Err(PolicyError::Port { .. })));
        assert!(matches!(
            d("*.example.com"),
            Err(PolicyError::Wildcard { .. })
        ));
        for bad in [
            "",
            "8.8.8.8/33",
            "8.8.8/24",
            "1.2.3",
            "bad_name.com",
            "-a.com",
            "a..b",
        ] {
            assert!(
                matches!(d(bad), Err(PolicyError::Invalid { .. })),
                "{bad:?} → {:?}",
                d(bad)
            );
        }
        let e = d("8.8.8.8/40").unwrap_err().to_string();
        assert!(e.contains("8.8.8.8/40") && e.contains("0 to 32"), "{e}");
    }

    #[test]
    fn destinations_round_trip_through_json() {
        let p = NetworkPolicy::parse(&["1.1.1.1", "api.example.com"], &["0.0.0.0/0"]).unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(
            j,
            r#"{"allowOut":["1.1.1.1","api.example.com"],"denyOut":["0.0.0.0/0"]}"#
        );
        assert_eq!(serde_json::from_str::<NetworkPolicy>(&j).unwrap(), p);
        assert_eq!(
            serde_json::from_str::<NetworkPolicy>("{}").unwrap(),
            NetworkPolicy::default()
        );
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"allowOut":["x:1"]}"#).is_err());
    }

    #[test]
    fn policies_refuse_what_cannot_be_enforced() {
        let e = NetworkPolicy::parse(&["10.1.2.3"], &[] as &[&str]).unwrap_err();
        assert_eq!(
            e,
            PolicyError::AlwaysBlocked {
                entry: "10.1.2.3".into(),
                range: "10.0.0.0/8"
            }
        );
        assert!(NetworkPolicy::parse(&["169.254.169.254"], &[] as &[&str]).is_err());
        // Wider than a blocked range is fine: the blocked part stays blocked.
        NetworkPolicy::parse(&["0.0.0.0/0", "8.0.0.0/7"], &[] as &[&str]).unwrap();
        let e = NetworkPolicy::parse(&[] as &[&str], &["example.com"]).unwrap_err();
        assert!(matches!(e, PolicyError::DomainInDenyOut { .. }), "{e}");
    }

    #[test]
    fn names_resolve_strictly_or_are_left_out() {
        // `localhost` comes from /etc/hosts: no query leaves the host.
        let p = NetworkPolicy {
            allow_out: vec![
                Destination::Domain("localhost".into()),
                "1.1.1.0/24".parse().unwrap(),
            ],
            deny_out: vec!["0.0.0.0/0".parse().unwrap()],
        };
        let r = ResolvedPolicy::resolve(&p, true).unwrap();
        assert_eq!(r.allow, vec!["127.0.0.1".to_string(), "1.1.1.0/24".into()]);
        assert_eq!(r.deny, vec!["0.0.0.0/0".to_string()]);
    }

    #[test]
    fn the_policy_script_checks_blocked_then_allow_then_deny_then_internet() {
        let cfg = NetworkConfig::default();
        let id: SandboxId = "abcdefghijklmnopqrst".parse().unwrap();
        let r = ResolvedPolicy {
            allow: vec!["203.0.113.7".into()],
            deny: vec![],
        };
        let s = policy_script(
            &cfg,
            &id,
            Ipv4Addr::new(10, 248, 0, 9),
            &r,
            &[Ipv4Addr::new(10, 0, 0, 53)],
        );
        let (chain, allow, deny) = policy_names(&id);
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        assert!(at("th dport 53 accept") < at("@blocked"));
        assert!(at("@blocked") < at(&format!("@{allow} accept")));
        assert!(at(&format!("@{allow} accept")) < at(&format!("@{deny} reject")));
        assert!(at(&format!("@{deny} reject")) < at("ip saddr @internet accept\n"));
        assert!(s.contains(&format!(
            "add element inet stasis_stasis0 {allow} {{ 203.0.113.7 }}"
        )));
        assert!(!s.contains(&format!("add element inet stasis_stasis0 {deny}")));
        assert!(s.ends_with(&format!("policies {{ 10.248.0.9 : jump {chain} }}\n")));
    }

    /// Loads a fresh table and a policy into a network namespace of the test's own, so
    /// the kernel and nft of this host check the scripts' syntax and semantics.
    #[test]
    fn a_fresh_table_and_a_policy_load_and_unload_on_this_kernel() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to make a network namespace");
            return;
        }
        struct Ns(String);
        impl Drop for Ns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns = Ns(format!("stasis-nft-check-{}", std::process::id()));
        let ok = Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap();
        assert!(ok.success());
        let nft = |script: &str| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.0, "nft", "-f", "-"]);
            cmd::run_with_input(c, script.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{script}"))
        };
        let list = || {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.0, "nft", "list", "ruleset"]);
            cmd::run(c).unwrap()
        };
        let cfg = NetworkConfig::default();
        nft(&nft_ruleset(&cfg));
        let id: SandboxId = "abcdefghijklmnopqrst".parse().unwrap();
        let addr = Ipv4Addr::new(10, 248, 0, 9);
        let p = ResolvedPolicy {
            allow: vec!["203.0.113.7".into(), "203.0.113.0/24".into()],
            deny: vec!["0.0.0.0/0".into()],
        };
        let resolvers = [Ipv4Addr::new(10, 0, 0, 53)];
        nft(&policy_script(&cfg, &id, addr, &p, &resolvers));
        // Applying again replaces, it does not add.
        nft(&policy_script(
            &cfg,
            &id,
            addr,
            &ResolvedPolicy::default(),
            &resolvers,
        ));
        let (chain, allow, _) = policy_names(&id);
        let listing = list();
        assert_eq!(
            listing.matches(&format!("jump {chain}")).count(),
            1,
            "{listing}"
        );
        assert!(!listing.contains("203.0.113"), "{listing}");
        assert!(listing.contains(&format!("\tset {allow} {{")), "{listing}");
        // Removing the element, the chain and its sets leaves nothing of the sandbox.
        let t = cfg.nft_table();
        let script = format!(
            "delete element inet {t} policies {{ {addr} }}\n\
             delete chain inet {t} {chain}\n\
             delete set inet {t} {allow}\n\
             delete set inet {t} {}\n",
            policy_names(&id).2
        );
        nft(&script);
        assert!(!list().contains("sb_"));
    }
}

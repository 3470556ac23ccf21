//! Sandbox networking.
//!
//! Every sandbox has its own network namespace, created by runc inside the sandbox's
//! user namespace (so CRIU can dump it). A prestart hook ([`prestart_hook`]), which runc
//! runs at `run` and again at `restore`, plugs a veth pair into it: the inner end is
//! `eth0` with the sandbox's address, the outer end joins the bridge as an *isolated*
//! port (sandboxes cannot reach each other). nftables rules on the host drop new
//! connections from sandboxes to the host and forward to the outside world only for
//! sandboxes whose address is in the `internet` set.
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
    if cmd::run(probe).is_err() {
        let ruleset = nft_ruleset(cfg);
        let mut c = Command::new("nft");
        c.args(["-f", "-"]);
        cmd::run_with_input(c, ruleset.as_bytes())?;
    }
    Ok(())
}

/// Holds `/run/stasis/net-{bridge}.lock` until dropped (waits for another holder).
fn lock_host_network(bridge: &str) -> Result<fs::File, Cause> {
    use rustix::fs::{flock, FlockOperation};
    let dir = Path::new("/run/stasis");
    fs::create_dir_all(dir).map_err(Cause::io(dir))?;
    let path = dir.join(format!("net-{bridge}.lock"));
    let f = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Cause::io(&path))?;
    flock(&f, FlockOperation::LockExclusive).map_err(|e| Cause::Sys {
        what: format!("flock {}", path.display()),
        source: e.into(),
    })?;
    Ok(f)
}

/// The nftables table that confines sandbox traffic (input to the host: replies only;
/// forwarding: only for addresses in the `internet` set).
fn nft_ruleset(cfg: &NetworkConfig) -> String {
    let t = cfg.nft_table();
    let br = &cfg.bridge;
    let net = format!("{}/{}", cfg.subnet, cfg.prefix);
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
    iifname "{br}" oifname != "{br}" ip saddr @internet accept
    iifname "{br}" drop
    oifname "{br}" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {net} oifname != "{br}" masquerade
  }}
}}
"#
    )
}

/// Lets `addr` reach the outside world (or not). Enables IPv4 forwarding on the host the
/// first time it is needed.
pub(crate) fn set_internet(cfg: &NetworkConfig, addr: Ipv4Addr, allow: bool) -> Result<(), Cause> {
    let table = cfg.nft_table();
    let elem = format!("{{ {addr} }}");
    let mut c = Command::new("nft");
    if allow {
        let fwd = Path::new("/proc/sys/net/ipv4/ip_forward");
        if fs::read_to_string(fwd)
            .map(|s| s.trim() != "1")
            .unwrap_or(true)
        {
            fs::write(fwd, "1").map_err(Cause::io(fwd))?;
        }
        c.args(["add", "element", "inet", &table, "internet", &elem]);
        cmd::run(c).map(drop)
    } else {
        c.args(["delete", "element", "inet", &table, "internet", &elem]);
        // Deleting an absent element fails; that is the state we want.
        let _ = cmd::run(c);
        Ok(())
    }
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
}

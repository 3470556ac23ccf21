//! Egress policies end to end: real sandboxes, real nftables, and a small world the test
//! builds itself — network namespaces behind veths on the host standing in for "the
//! internet" (two TEST-NET-3 addresses), a private-range service and a link-local one,
//! each with a listener. Every namespace, veth and listener is removed when the test
//! ends, also when it fails; no packet goes to an address the test did not create.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use stasis_runtime::{NetworkPolicy, PauseMode, RuncRuntime, Runtime, SandboxSpec};
use stasis_types::Resources;

/// The port every service of the world listens on.
const PORT: u16 = 8089;

/// Runs a host program, failing the test with its stderr.
fn run(prog: &str, args: &[&str]) {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One namespace behind a veth: the host end gets `host_addr`, the namespace's end
/// `addrs` (all on one /29), and a listener on `PORT` answers on all of them.
struct Service {
    ns: String,
    host_if: String,
    host_addr: Ipv4Addr,
    addrs: Vec<Ipv4Addr>,
    listener: Option<Child>,
}

impl Service {
    fn new(tag: &str, net: Ipv4Addr, n: u8) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let k = std::process::id() % 10_000 * 100 + SEQ.fetch_add(1, Ordering::Relaxed);
        let ns = format!("stasis-nwt-{tag}-{k}");
        let host_if = format!("nwt{tag}{k}");
        assert!(host_if.len() <= 15, "{host_if}");
        let base = u32::from(net);
        let host_addr = Ipv4Addr::from(base + 1);
        let addrs: Vec<Ipv4Addr> = (0..n)
            .map(|i| Ipv4Addr::from(base + 2 + u32::from(i)))
            .collect();
        let mut s = Service {
            ns: ns.clone(),
            host_if: host_if.clone(),
            host_addr,
            addrs: addrs.clone(),
            listener: None,
        };
        run("ip", &["netns", "add", &ns]);
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host_addr}/29"), "dev", &host_if],
        );
        run("ip", &["link", "set", &host_if, "up"]);
        for a in &addrs {
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{a}/29"), "dev", "eth0"],
            );
        }
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        // Replies to the sandboxes come back through this veth: it is this world's uplink,
        // configured as a host's administrator configures one.
        std::fs::write(
            Path::new("/proc/sys/net/ipv4/conf")
                .join(&host_if)
                .join("forwarding"),
            "1",
        )
        .unwrap();
        let listener = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c"])
            .arg(format!(
                "import socket\n\
                 s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('0.0.0.0', {PORT})); s.listen(64)\n\
                 while True:\n    c, _ = s.accept(); c.close()\n"
            ))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        s.listener = Some(listener);
        // Ready when the host reaches every address.
        for a in &addrs {
            let addr = SocketAddr::from((*a, PORT));
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "listener at {addr} never came up"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        s
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = l.kill();
            let _ = l.wait();
        }
        // Deleting the namespace deletes its veth end, and with it the host's.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// The world of one test: "the internet" (two addresses), a private service, a
/// link-local one.
struct World {
    internet: Service,
    private: Service,
    link_local: Service,
}

impl World {
    fn new() -> Self {
        // Distinct /29s per test process and test, so parallel tests do not collide.
        static N: AtomicU32 = AtomicU32::new(0);
        let i = (std::process::id() * 3 + N.fetch_add(1, Ordering::Relaxed)) % 30;
        let slot = |a: u8, b: u8, c: u8| Ipv4Addr::new(a, b, c, (i * 8) as u8);
        World {
            internet: Service::new("i", slot(203, 0, 113), 2),
            private: Service::new("p", slot(172, 31, 250), 1),
            link_local: Service::new("l", slot(169, 254, 250), 1),
        }
    }

    fn a(&self) -> Ipv4Addr {
        self.internet.addrs[0]
    }

    fn b(&self) -> Ipv4Addr {
        self.internet.addrs[1]
    }
}

fn reaches(g: &Guard, addr: Ipv4Addr) -> bool {
    reaches_port(g, addr, PORT)
}

fn reaches_port(g: &Guard, addr: Ipv4Addr, port: u16) -> bool {
    let r = g.ask(json!({"op": "connect", "host": addr.to_string(), "port": port}));
    r["connected"].as_bool().unwrap_or_else(|| panic!("{r}"))
}

fn create_spec(rt: &Arc<RuncRuntime>, spec: SandboxSpec) -> Guard {
    let info = rt.create(spec).expect("create");
    let g = Guard {
        rt: rt.clone(),
        info,
    };
    g.ready();
    g
}

fn sandbox(rt: &Arc<RuncRuntime>, internet: bool, allow: &[String], deny: &[String]) -> Guard {
    let mut spec = spec_with(Resources::default());
    spec.allow_internet = internet;
    spec.network = NetworkPolicy::parse(allow, deny).unwrap();
    create_spec(rt, spec)
}

fn policy(allow: &[String], deny: &[String]) -> NetworkPolicy {
    NetworkPolicy::parse(allow, deny).unwrap()
}

/// The nftables objects of the test bridge's table that belong to a sandbox: its policy
/// chain, its two sets and its address's entry in `policies`.
fn nft_objects_of(id: &stasis_types::SandboxId) -> Vec<&'static str> {
    let h = &stasis_runtime::net::host_if_name(id)[3..];
    let listing = nft_table();
    [
        ("chain", format!("chain sb_{h} {{")),
        ("allow set", format!("set sb_{h}_allow {{")),
        ("deny set", format!("set sb_{h}_deny {{")),
        ("policies entry", format!(": jump sb_{h}")),
    ]
    .into_iter()
    .filter(|(_, needle)| listing.contains(needle.as_str()))
    .map(|(what, _)| what)
    .collect()
}

fn nft_table() -> String {
    let table = format!("stasis_{}", config().network.bridge);
    let out = Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read_sysctl(path: &str) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn by_default_a_sandbox_reaches_the_internet_but_no_private_link_local_or_host_address() {
    let rt = runtime();
    let w = World::new();
    let ip_forward_before = read_sysctl("/proc/sys/net/ipv4/ip_forward");
    let g = sandbox(&rt, true, &[], &[]);
    assert!(reaches(&g, w.a()), "the internet");
    assert!(reaches(&g, w.b()), "the internet");
    assert!(!reaches(&g, w.private.addrs[0]), "a private-range service");
    assert!(!reaches(&g, w.link_local.addrs[0]), "a link-local service");
    // The host's own addresses, here the uplink's, with a listener on it.
    let host = TcpListener::bind((w.internet.host_addr, 0)).unwrap();
    let port = host.local_addr().unwrap().port();
    assert!(!reaches_port(&g, w.internet.host_addr, port), "the host");

    // Forwarding is on for the bridge, and was not switched on host-wide.
    let bridge = config().network.bridge;
    assert_eq!(
        read_sysctl(&format!("/proc/sys/net/ipv4/conf/{bridge}/forwarding")),
        "1"
    );
    if ip_forward_before == "0" {
        assert_eq!(read_sysctl("/proc/sys/net/ipv4/ip_forward"), "0");
    }
}

#[test]
fn without_internet_only_allow_out_destinations_are_reachable() {
    let rt = runtime();
    let w = World::new();
    let none = sandbox(&rt, false, &[], &[]);
    let some = sandbox(&rt, false, &[w.a().to_string()], &[]);
    assert!(!reaches(&none, w.a()));
    assert!(!reaches(&none, w.b()));
    assert!(reaches(&some, w.a()), "allowOut wins over no internet");
    assert!(!reaches(&some, w.b()));
    assert!(!reaches(&some, w.private.addrs[0]));
}

#[test]
fn deny_out_blocks_a_cidr_and_allow_out_is_the_exception() {
    let rt = runtime();
    let w = World::new();
    let deny_a = sandbox(&rt, true, &[], &[format!("{}/32", w.a())]);
    assert!(!reaches(&deny_a, w.a()));
    assert!(reaches(&deny_a, w.b()));
    // "Only these": deny everything, allow one.
    let only_b = sandbox(&rt, true, &[w.b().to_string()], &["0.0.0.0/0".into()]);
    assert!(!reaches(&only_b, w.a()));
    assert!(reaches(&only_b, w.b()));
    assert!(!reaches(&only_b, w.private.addrs[0]));
    assert!(!reaches(&only_b, w.link_local.addrs[0]));
}

#[test]
fn a_policy_set_on_a_running_sandbox_applies_at_once_and_holds_across_pause_resume_and_fork() {
    let rt = runtime();
    let w = World::new();
    let g = sandbox(&rt, true, &[], &[]);
    assert!(reaches(&g, w.a()));

    let only_b = policy(&[w.b().to_string()], &["0.0.0.0/0".into()]);
    let info = rt.set_network(g.id(), true, only_b.clone()).unwrap();
    assert_eq!(info.spec.network, only_b);
    assert!(
        !reaches(&g, w.a()),
        "the change applies to a running sandbox"
    );
    assert!(reaches(&g, w.b()));

    rt.pause(g.id(), PauseMode::Full).unwrap();
    rt.resume(g.id()).unwrap();
    g.ready();
    assert!(
        !reaches(&g, w.a()),
        "the policy holds across pause and resume"
    );
    assert!(reaches(&g, w.b()));

    let fork = rt
        .fork(g.id(), &[stasis_types::SandboxId::generate()])
        .unwrap()
        .remove(0);
    let fork = Guard {
        rt: rt.clone(),
        info: fork,
    };
    fork.ready();
    assert_eq!(fork.info.spec.network, only_b);
    assert!(!reaches(&fork, w.a()), "a fork keeps the policy");
    assert!(reaches(&fork, w.b()));

    // Changed while paused: applied at resume. Internet off: nothing but allowOut.
    rt.pause(g.id(), PauseMode::Full).unwrap();
    rt.set_network(g.id(), false, policy(&[w.a().to_string()], &[]))
        .unwrap();
    rt.resume(g.id()).unwrap();
    g.ready();
    assert!(reaches(&g, w.a()));
    assert!(!reaches(&g, w.b()));
    let resolv = g.ask(json!({"op": "read", "path": "/etc/resolv.conf"}));
    assert!(
        resolv["text"].as_str().unwrap().contains("no internet"),
        "{resolv}"
    );
    // The fork was not touched.
    assert!(!reaches(&fork, w.a()));
    assert!(reaches(&fork, w.b()));

    // Back to the default.
    rt.set_network(g.id(), true, NetworkPolicy::default())
        .unwrap();
    assert!(reaches(&g, w.a()));
    assert!(reaches(&g, w.b()));
}

#[test]
fn kill_leaves_no_nftables_objects_behind() {
    let rt = runtime();
    let w = World::new();
    let all = vec!["chain", "allow set", "deny set", "policies entry"];
    let g = sandbox(&rt, true, &[w.a().to_string()], &["0.0.0.0/0".into()]);
    assert_eq!(nft_objects_of(g.id()), all);
    rt.kill(g.id()).unwrap();
    assert_eq!(nft_objects_of(g.id()), Vec::<&str>::new(), "left behind");
    // A paused sandbox's policy goes with it too.
    let g = sandbox(&rt, false, &[w.b().to_string()], &[]);
    rt.pause(g.id(), PauseMode::Full).unwrap();
    assert_eq!(nft_objects_of(g.id()), all);
    rt.kill(g.id()).unwrap();
    assert_eq!(nft_objects_of(g.id()), Vec::<&str>::new(), "left behind");
}

#[test]
fn set_network_refuses_unknown_sandboxes() {
    let rt = runtime();
    let e = rt
        .set_network(
            &stasis_types::SandboxId::generate(),
            true,
            NetworkPolicy::default(),
        )
        .unwrap_err();
    assert!(
        matches!(e, stasis_runtime::RuntimeError::NotFound(_)),
        "{e:?}"
    );
}

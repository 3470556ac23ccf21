//! End-to-end tests of the runc + CRIU runtime: real sandboxes, real checkpoints.
//! Run as root on a host prepared by `scripts/setup.sh` with the `base` template built.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::*;
use serde_json::json;
use stasis_runtime::{PauseMode, RuncRuntime, Runtime, RuntimeError, SandboxState};
use stasis_types::{Resources, SandboxId};

fn paused(rt: &RuncRuntime, id: &SandboxId) -> bool {
    matches!(rt.info(id).unwrap().state, SandboxState::Paused { .. })
}

#[test]
fn memory_processes_and_files_survive_pause_and_resume() {
    let rt = runtime();
    let sb = create(&rt);
    sb.ask(json!({"op": "set", "value": 42}));
    sb.ask(json!({"op": "write", "path": "/tmp/file.txt", "text": "Hello World\n"}));
    let before = sb.ask(json!({"op": "get"}));
    assert!(
        before["pid"].as_i64().unwrap() > 1,
        "the workload is not PID 1"
    );

    let snap = rt.pause(sb.id(), PauseMode::Full).unwrap();
    assert!(snap.memory && snap.bytes > 0);
    assert!(paused(&rt, sb.id()));
    // While paused the listener is gone.
    assert!(try_ask(sb.addr(), &json!({"op": "get"})).is_err());

    rt.resume(sb.id()).unwrap();
    let after = sb.ready();
    assert_eq!(after["x"], 42, "the Python variable survived");
    assert_eq!(after["pid"], before["pid"], "same process, same PID");
    assert_eq!(after["counter_pid"], before["counter_pid"]);
    let c0 = after["counter"].as_i64().unwrap();
    assert!(
        c0 >= before["counter"].as_i64().unwrap(),
        "the counter did not restart"
    );
    // The background process keeps counting after resume.
    wait_until(10, "the background counter to advance", || {
        sb.ask(json!({"op": "get"}))["counter"].as_i64().unwrap() > c0 + 5
    });
    let text = sb.ask(json!({"op": "read", "path": "/tmp/file.txt"}));
    assert_eq!(text["text"], "Hello World\n");
    // The snapshot is spent after a resume.
    assert!(!snap.path.exists());
}

#[test]
fn five_consecutive_cycles() {
    let rt = runtime();
    let sb = create(&rt);
    sb.ask(json!({"op": "set", "value": "cycle"}));
    for i in 0..5 {
        sb.ask(json!({"op": "write", "path": format!("/tmp/c{i}"), "text": i.to_string()}));
        let s = rt.pause(sb.id(), PauseMode::Full).unwrap();
        assert_eq!(s.generation, i + 1);
        rt.resume(sb.id()).unwrap();
        let v = sb.ready();
        assert_eq!(v["x"], "cycle", "cycle {i}");
        for j in 0..=i {
            let t = sb.ask(json!({"op": "read", "path": format!("/tmp/c{j}")}));
            assert_eq!(
                t["text"],
                j.to_string(),
                "file of cycle {j} after cycle {i}"
            );
        }
    }
}

#[test]
fn a_fresh_runtime_adopts_and_resumes_a_paused_sandbox() {
    let dir = PrivateDir::new();
    let (paused_sb, running_sb) = {
        let rt = dir.runtime();
        let a = create_plain(&rt);
        let b = create_plain(&rt);
        ask(addr_of(&a), &json!({"op": "set", "value": 7}));
        rt.pause(&a.spec.id, PauseMode::Full).unwrap();
        (a, b)
    }; // the first runtime is gone, as after a server restart

    let fresh = dir.runtime();
    let adopted = fresh.adopt().unwrap();
    let find = |id: &SandboxId| adopted.iter().find(|i| &i.spec.id == id).cloned().unwrap();
    assert!(matches!(
        find(&paused_sb.spec.id).state,
        SandboxState::Paused { .. }
    ));
    assert!(matches!(
        find(&running_sb.spec.id).state,
        SandboxState::Running { .. }
    ));
    assert_eq!(find(&paused_sb.spec.id).address, paused_sb.address);

    fresh.resume(&paused_sb.spec.id).unwrap();
    assert_eq!(wait_ready(addr_of(&paused_sb))["x"], 7);
    assert!(ask(addr_of(&running_sb), &json!({"op": "get"}))["pid"].is_number());
}

#[test]
fn a_second_runtime_on_the_same_data_dir_is_refused() {
    let dir = PrivateDir::new();
    let _rt = dir.runtime();
    let mut cfg = dir.config();
    cfg.data_dir = dir.0.clone();
    let started = std::time::Instant::now();
    let err = RuncRuntime::new(cfg).err().expect("second runtime refused");
    assert!(started.elapsed() >= std::time::Duration::from_secs(9));
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("in use by another runtime"), "{text}");
}

#[test]
fn killing_a_paused_sandbox_leaves_nothing_behind() {
    let rt = runtime();
    let sb = create(&rt);
    let id = sb.id().clone();
    rt.pause(&id, PauseMode::Full).unwrap();
    rt.kill(&id).unwrap();
    assert_eq!(traces_of(&id), Vec::<String>::new());
    assert!(matches!(rt.info(&id), Err(RuntimeError::NotFound(_))));
    assert!(matches!(rt.kill(&id), Err(RuntimeError::NotFound(_))));
}

#[test]
fn killing_a_running_sandbox_leaves_nothing_behind() {
    let rt = runtime();
    let sb = create(&rt);
    let id = sb.id().clone();
    rt.kill(&id).unwrap();
    // (Its address may already serve another test's sandbox: the traces say it is gone.)
    assert_eq!(traces_of(&id), Vec::<String>::new());
}

#[test]
fn sandboxes_are_isolated_from_each_other_and_the_host() {
    let rt = runtime();
    let a = create(&rt);
    let b = create(&rt);
    a.ask(json!({"op": "write", "path": "/tmp/secret", "text": "a's"}));
    assert!(b.ask(json!({"op": "read", "path": "/tmp/secret"}))["error"].is_string());

    // Own pid namespace: b sees only its agent, its workload, its counter and children.
    let pids = b.ask(json!({"op": "pids"}))["pids"]
        .as_array()
        .unwrap()
        .len();
    assert!(pids < 10, "b sees {pids} processes");

    // No traffic between sandboxes…
    let r = a.ask(json!({"op": "connect", "host": b.info.address.to_string(), "port": 8080}));
    assert_eq!(r["connected"], false, "{r}");
    // …nor from a sandbox to the host (a listener on the bridge address).
    let host = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let gw = stasis_runtime::NetworkConfig { ..config().network }.gateway();
    let r = a.ask(json!({"op": "connect", "host": gw.to_string(), "port": port}));
    assert_eq!(r["connected"], false, "{r}");
    // The host reaches both.
    assert!(b.ask(json!({"op": "get"}))["pid"].is_number());
}

#[test]
fn sandbox_root_is_an_unprivileged_host_uid() {
    let rt = runtime();
    let sb = create(&rt);
    assert_eq!(sb.ask(json!({"op": "get"}))["uid"], 0, "root inside");
    let SandboxState::Running { pid } = rt.info(sb.id()).unwrap().state else {
        panic!("not running")
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let host_uid: u32 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(host_uid, sb.info.uid_base);
    assert!(host_uid >= 65536, "host uid {host_uid}");
}

#[test]
fn seccomp_and_capabilities_hold_after_resume() {
    let rt = runtime();
    let sb = create(&rt);
    for phase in ["before", "after"] {
        let m = sb.ask(json!({"op": "mount"}));
        assert_eq!(m["result"], -1, "{phase}: mount succeeded");
        assert_eq!(m["errno"], 1, "{phase}: mount errno"); // EPERM
        let u = sb.ask(json!({"op": "unshare"}));
        assert_eq!(u["result"], -1, "{phase}: unshare succeeded");
        if phase == "before" {
            rt.pause(sb.id(), PauseMode::Full).unwrap();
            rt.resume(sb.id()).unwrap();
            sb.ready();
        }
    }
}

#[test]
fn memory_and_pids_limits_hold_after_resume() {
    let rt = runtime();
    let sb = create_with(
        &rt,
        Resources {
            cpu_millis: 1000,
            memory_bytes: 192 * Resources::MIB,
            pids: 48,
        },
    );
    for phase in ["before", "after"] {
        let oom = sb.ask(json!({"op": "alloc_child", "mb": 400}));
        assert_eq!(
            oom["returncode"], -9,
            "{phase}: a 400 MB child under a 192 MB limit"
        );
        let ok = sb.ask(json!({"op": "alloc_child", "mb": 32}));
        assert_eq!(ok["returncode"], 0, "{phase}: a 32 MB child");
        let spawned = sb.ask(json!({"op": "spawn", "n": 100}))["spawned"]
            .as_i64()
            .unwrap();
        assert!(
            spawned > 0 && spawned < 48,
            "{phase}: spawned {spawned} under pids.max 48"
        );
        sb.ask(json!({"op": "reap"}));
        if phase == "before" {
            rt.pause(sb.id(), PauseMode::Full).unwrap();
            rt.resume(sb.id()).unwrap();
            sb.ready();
        }
    }
    let st = rt.stats(sb.id()).unwrap();
    assert_eq!(st.memory_limit_bytes, 192 * Resources::MIB);
    assert!(st.memory_bytes > 0 && st.pids > 0);
}

#[test]
fn fork_gives_independent_copies() {
    let rt = runtime();
    let sb = create(&rt);
    sb.ask(json!({"op": "set", "value": "parent"}));
    sb.ask(json!({"op": "write", "path": "/tmp/shared", "text": "before fork"}));
    let ids = [SandboxId::generate(), SandboxId::generate()];
    let forks = rt.fork(sb.id(), &ids).unwrap();
    let guards: Vec<Guard> = forks
        .into_iter()
        .map(|info| Guard {
            rt: rt.clone(),
            info,
        })
        .collect();
    assert_ne!(guards[0].info.address, guards[1].info.address);
    assert_ne!(guards[0].info.address, sb.info.address);
    for g in &guards {
        let v = g.ready();
        assert_eq!(v["x"], "parent", "memory copied into {}", g.id());
        let t = g.ask(json!({"op": "read", "path": "/tmp/shared"}));
        assert_eq!(t["text"], "before fork");
    }
    // The copies diverge independently.
    guards[0].ask(json!({"op": "set", "value": "fork0"}));
    guards[0].ask(json!({"op": "write", "path": "/tmp/only0", "text": "0"}));
    assert_eq!(guards[1].ask(json!({"op": "get"}))["x"], "parent");
    assert!(guards[1].ask(json!({"op": "read", "path": "/tmp/only0"}))["error"].is_string());
    assert!(sb.ask(json!({"op": "read", "path": "/tmp/only0"}))["error"].is_string());
    // The original kept running throughout.
    assert_eq!(sb.ask(json!({"op": "get"}))["x"], "parent");
    // A fork pauses and resumes like any sandbox.
    rt.pause(guards[1].id(), PauseMode::Full).unwrap();
    rt.resume(guards[1].id()).unwrap();
    assert_eq!(guards[1].ready()["x"], "parent");
}

#[test]
fn a_failed_pause_leaves_the_sandbox_running() {
    let dir = PrivateDir::new();
    let sb = {
        let rt = dir.runtime();
        let sb = create_plain(&rt);
        ask(addr_of(&sb), &json!({"op": "set", "value": 1}));
        sb
    };
    {
        let broken = dir.broken_runtime();
        let err = broken.pause(&sb.spec.id, PauseMode::Full).unwrap_err();
        assert!(
            matches!(
                err,
                RuntimeError::Failed {
                    step: stasis_runtime::Step::Checkpoint,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(ask(addr_of(&sb), &json!({"op": "get"}))["x"], 1);
    }
    let rt = dir.runtime();
    assert!(matches!(
        rt.info(&sb.spec.id).unwrap().state,
        SandboxState::Running { .. }
    ));
    let before = ask(addr_of(&sb), &json!({"op": "get"}));
    // And it still pauses normally.
    let snap = rt.pause(&sb.spec.id, PauseMode::Full).unwrap();
    let resumed = rt.resume(&sb.spec.id).unwrap();
    let after = wait_ready(addr_of(&sb));
    assert_eq!(
        after["x"], 1,
        "before pause {before}, after resume {after}; snapshot {snap:?}; resumed {resumed:?}"
    );
}

#[test]
fn a_failed_resume_leaves_the_snapshot_intact() {
    let dir = PrivateDir::new();
    let sb = {
        let rt = dir.runtime();
        let sb = create_plain(&rt);
        ask(addr_of(&sb), &json!({"op": "set", "value": 2}));
        ask(
            addr_of(&sb),
            &json!({"op": "write", "path": "/tmp/keep", "text": "kept"}),
        );
        rt.pause(&sb.spec.id, PauseMode::Full).unwrap();
        sb
    };
    {
        let broken = dir.broken_runtime();
        let err = broken.resume(&sb.spec.id).unwrap_err();
        assert!(
            matches!(
                err,
                RuntimeError::Failed {
                    step: stasis_runtime::Step::Restore,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            paused(&broken, &sb.spec.id),
            "still paused after a failed resume"
        );
        let SandboxState::Paused { snapshot } = broken.info(&sb.spec.id).unwrap().state else {
            unreachable!()
        };
        stasis_snapshot::Manifest::read(&snapshot.path)
            .unwrap()
            .verify(&snapshot.path)
            .unwrap();
    }
    let rt = dir.runtime();
    rt.resume(&sb.spec.id).unwrap();
    assert_eq!(wait_ready(addr_of(&sb))["x"], 2);
    assert_eq!(
        ask(addr_of(&sb), &json!({"op": "read", "path": "/tmp/keep"}))["text"],
        "kept"
    );
}

#[test]
fn a_corrupt_snapshot_is_refused_with_a_precise_error() {
    let rt = runtime();
    let sb = create(&rt);
    let snap = rt.pause(sb.id(), PauseMode::Full).unwrap();
    let pages = std::fs::read_dir(snap.path.join("images"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&pages).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&pages, &bytes).unwrap();
    let err = rt.resume(sb.id()).unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("verify snapshot") && text.contains("checksum"),
        "{text}"
    );
    assert!(paused(&rt, sb.id()));
}

#[test]
fn a_changed_files_layer_is_refused_and_the_snapshot_kept() {
    let rt = runtime();
    let sb = create(&rt);
    sb.ask(json!({"op": "write", "path": "/home/notes", "text": "hello world"}));
    let before = sb.ask(json!({"op": "get"}));
    rt.pause(sb.id(), PauseMode::Full).unwrap();
    // One flipped byte in the paused sandbox's files, same size.
    let f = data_dir()
        .join("sandboxes")
        .join(sb.id().as_str())
        .join("upper/home/notes");
    std::fs::write(&f, "hello wOrld").unwrap();
    let err = rt.resume(sb.id()).unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("verify snapshot") && text.contains("upper/home/notes"),
        "{text}"
    );
    assert!(paused(&rt, sb.id()), "still paused, snapshot kept");
    // Put it back: the snapshot resumes.
    std::fs::write(&f, "hello world").unwrap();
    rt.resume(sb.id()).unwrap();
    assert_eq!(sb.ready()["pid"], before["pid"], "the same process answers");
    assert_eq!(
        sb.ask(json!({"op": "read", "path": "/home/notes"}))["text"],
        "hello world"
    );
}

#[test]
fn start_up_quarantines_what_it_cannot_read_instead_of_deleting_it() {
    let dir = PrivateDir::new();
    let id = {
        let rt = dir.runtime();
        let info = create_plain(&rt);
        ask(
            addr_of(&info),
            &json!({"op": "write", "path": "/home/keep", "text": "user data"}),
        );
        rt.pause(&info.spec.id, PauseMode::Full).unwrap();
        info.spec.id
    };
    let record = dir
        .0
        .join("sandboxes")
        .join(id.as_str())
        .join("sandbox.json");
    std::fs::write(&record, b"{ not json").unwrap();
    let rt = dir.runtime();
    let found = rt.adopt().unwrap();
    assert!(found.iter().all(|s| s.spec.id != id));
    let q: Vec<_> = std::fs::read_dir(dir.0.join("quarantine"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(q.len(), 1);
    let kept = q[0].path().join("sandbox/upper/home/keep");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "user data");
    assert!(q[0].path().join("snapshots").is_dir(), "its snapshot too");
}

#[test]
fn a_snapshot_s_memory_is_readable_by_no_other_user() {
    use std::os::unix::fs::MetadataExt;
    let rt = runtime();
    let sb = create(&rt);
    sb.ask(json!({"op": "set", "value": 99}));
    let snap = rt.pause(sb.id(), PauseMode::Full).unwrap();
    let images: Vec<_> = std::fs::read_dir(snap.path.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!images.is_empty());
    for img in &images {
        let m = std::fs::metadata(img).unwrap();
        // Group (the sandbox's root) may read; nobody else may do anything.
        assert_eq!(
            m.mode() & 0o037,
            0,
            "{} is mode {:o}",
            img.display(),
            m.mode()
        );
        assert_eq!(
            (m.uid(), m.gid()),
            (0, sb.info.uid_base),
            "{}: owner root, group the sandbox's root",
            img.display()
        );
    }
    let pages = images
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pages-")
        })
        .unwrap();
    let read = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(pages)
        .output()
        .unwrap();
    assert!(!read.status.success(), "nobody read the sandbox's memory");
    // And the restore can still read them.
    rt.resume(sb.id()).unwrap();
    assert_eq!(sb.ready()["x"], 99);
}

#[test]
fn filesystem_only_pause_keeps_files_and_restarts_processes() {
    let rt = runtime();
    let sb = create(&rt);
    sb.ask(json!({"op": "set", "value": 3}));
    sb.ask(json!({"op": "write", "path": "/tmp/fs-only", "text": "on disk"}));
    let snap = rt.pause(sb.id(), PauseMode::FilesystemOnly).unwrap();
    assert!(!snap.memory);
    rt.resume(sb.id()).unwrap();
    let v = sb.ready();
    assert_eq!(v["x"], serde_json::Value::Null, "memory is not kept");
    assert_eq!(
        sb.ask(json!({"op": "read", "path": "/tmp/fs-only"}))["text"],
        "on disk"
    );
}

#[test]
fn bad_requests_get_typed_errors() {
    let rt = runtime();
    let sb = create(&rt);
    let missing = SandboxId::generate();
    assert!(matches!(
        rt.pause(&missing, PauseMode::Full),
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.resume(&missing),
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.resume(sb.id()),
        Err(RuntimeError::InvalidState {
            state: "running",
            ..
        })
    ));
    rt.pause(sb.id(), PauseMode::Full).unwrap();
    assert!(matches!(
        rt.pause(sb.id(), PauseMode::Full),
        Err(RuntimeError::InvalidState {
            state: "paused",
            ..
        })
    ));
    let mut spec = spec_with(Resources::default());
    spec.template = "no-such-template".parse().unwrap();
    let id = spec.id.clone();
    assert!(matches!(
        rt.create(spec),
        Err(RuntimeError::TemplateMissing { .. })
    ));
    assert_eq!(traces_of(&id), Vec::<String>::new());
    let mut spec = spec_with(Resources::default());
    spec.id = sb.id().clone();
    assert!(matches!(
        rt.create(spec),
        Err(RuntimeError::AlreadyExists(_))
    ));
    let _ = SocketAddr::from(([127, 0, 0, 1], 0));
}

/// Removes a bridge and its nftables table, also when the test fails.
struct HostNetwork(&'static str);

impl Drop for HostNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", self.0])
            .output();
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &format!("stasis_{}", self.0)])
            .output();
    }
}

#[test]
fn runtimes_starting_together_on_a_fresh_host_set_up_one_network() {
    // A bridge of this test's own, so that it is new and no other test uses it.
    let net = HostNetwork("stasisq0");
    drop(HostNetwork(net.0));
    let dirs: Vec<PrivateDir> = (0..4).map(|_| PrivateDir::new()).collect();
    let configs: Vec<_> = dirs
        .iter()
        .map(|d| {
            let mut cfg = d.config();
            cfg.network.bridge = net.0.into();
            cfg.network.subnet = std::net::Ipv4Addr::new(10, 251, 0, 0);
            cfg
        })
        .collect();
    let barrier = std::sync::Barrier::new(configs.len());
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = configs
            .into_iter()
            .map(|cfg| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    RuncRuntime::new(cfg).map(drop)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        r.expect("every runtime starts");
    }
    let table = std::process::Command::new("nft")
        .args(["list", "table", "inet", "stasis_stasisq0"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.matches("masquerade").count(), 1, "{table}");
    let addrs = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", net.0])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert_eq!(addrs.matches("10.251.0.1/16").count(), 1, "{addrs}");
}

#[test]
fn the_gateway_mac_stays_put_as_sandboxes_come_and_go() {
    // A bridge takes the lowest MAC of its ports unless it has one of its own; then a
    // sandbox's veth coming or going changes the gateway's MAC under the other
    // sandboxes, and their replies go nowhere until their ARP entries expire.
    let rt = runtime();
    let mac_file = format!("/sys/class/net/{}/address", config().network.bridge);
    let want = config().network.bridge_mac();
    let mac = || {
        std::fs::read_to_string(&mac_file)
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(mac(), want);
    let a = create(&rt);
    let b = create(&rt);
    assert_eq!(mac(), want);
    rt.kill(a.id()).unwrap();
    assert_eq!(mac(), want);
    // The other sandbox still answers.
    assert_eq!(b.ask(json!({"op": "set", "value": 7}))["ok"], true);
    drop(b);
    assert_eq!(mac(), want);
}

//! The SDK against a real server: commands, files, lifecycle calls and typed errors.
//! Run as root with the `base` template built (scripts/test.sh).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use stasis_client::{
    Client, ConnectionConfig, Error, EventType, FileType, SandboxQuery, SandboxState,
};

fn collected() -> (Arc<Mutex<String>>, impl FnMut(String) + Send + 'static) {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    (buf, move |s: String| b.lock().unwrap().push_str(&s))
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_foreground_background_stdin_kill_and_errors() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = srv
        .client()
        .sandbox()
        .env("SANDBOX_WIDE", "yes")
        .create()
        .await
        .unwrap();
    let cmds = sb.commands();

    // Foreground with envs, cwd and user; streamed callbacks see what the result holds.
    let (seen, on_out) = collected();
    let r = cmds
        .run("echo $SANDBOX_WIDE $PER_CMD $(pwd) $(whoami); echo oops >&2")
        .env("PER_CMD", "1")
        .cwd("/tmp")
        .user("root")
        .on_stdout(on_out)
        .await
        .unwrap();
    assert_eq!(r.stdout, "yes 1 /tmp root\n");
    assert_eq!(r.stderr, "oops\n");
    assert_eq!(*seen.lock().unwrap(), r.stdout);
    assert_eq!(cmds.run("whoami").await.unwrap().stdout, "user\n");

    // Non-zero exit: CommandExit with code and stderr.
    match cmds.run("echo bad >&2; exit 3").await {
        Err(Error::CommandExit(e)) => {
            assert_eq!((e.exit_code, e.stderr.as_str()), (3, "bad\n"));
        }
        other => panic!("expected CommandExit, got {other:?}"),
    }
    // A cwd that does not exist: InvalidArgument.
    let err = cmds.run("true").cwd("/nope").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    // The timeout is the process's lifetime.
    let t0 = Instant::now();
    let err = cmds
        .run("sleep 30")
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(20));

    // Background with stdin: listed, fed, closed, finished.
    let h = cmds.run("cat").stdin(true).background().await.unwrap();
    let listed = cmds.list().await.unwrap();
    assert!(listed.iter().any(|p| p.pid == h.pid()), "{listed:?}");
    h.send_stdin("hello ").await.unwrap();
    h.send_stdin("stdin").await.unwrap();
    h.close_stdin().await.unwrap();
    assert_eq!(h.wait().await.unwrap().stdout, "hello stdin");

    // Background, reattached with connect, then killed.
    let h = cmds
        .run("for i in $(seq 1 300); do echo tick; sleep 0.1; done")
        .timeout(Duration::ZERO)
        .background()
        .await
        .unwrap();
    let pid = h.pid();
    h.disconnect();
    let (seen, on_out) = collected();
    let attached = cmds.connect(pid).on_stdout(on_out).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.lock().unwrap().contains("tick") {
        assert!(Instant::now() < deadline, "no output after connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cmds.kill(pid).await.unwrap());
    match attached.wait().await {
        Err(Error::CommandExit(e)) => assert_eq!(e.exit_code, -1, "{e:?}"),
        other => panic!("expected a killed process, got {other:?}"),
    }
    assert!(!cmds.kill(pid).await.unwrap(), "already gone");
    assert!(sb.kill().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_read_write_list_rename_remove_watch() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let sb = srv.client().sandbox().create().await.unwrap();
    let files = sb.files();

    let w = files.write("/tmp/d/a.txt", "héllo").await.unwrap();
    assert_eq!(w.path, "/tmp/d/a.txt");
    assert_eq!(files.read("/tmp/d/a.txt").await.unwrap(), "héllo");
    let bin: Vec<u8> = (0..=255).collect();
    files.write("rel.bin", bin.clone()).await.unwrap();
    assert_eq!(files.read_bytes("/home/user/rel.bin").await.unwrap(), bin);

    let entries = files.list("/tmp/d").await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].name.as_str(),
            entries[0].file_type,
            entries[0].size
        ),
        ("a.txt", FileType::File, 6)
    );
    assert!(files.exists("/tmp/d/a.txt").await.unwrap());
    assert!(!files.exists("/tmp/d/zzz").await.unwrap());
    let moved = files.rename("/tmp/d/a.txt", "/tmp/d/b.txt").await.unwrap();
    assert_eq!(moved.path, "/tmp/d/b.txt");
    assert!(files.make_dir("/tmp/d/sub").await.unwrap());
    assert!(!files.make_dir("/tmp/d/sub").await.unwrap());
    assert_eq!(
        files.get_info("/tmp/d/sub").await.unwrap().file_type,
        FileType::Directory
    );
    files.remove("/tmp/d/b.txt").await.unwrap();
    let err = files.read("/tmp/d/b.txt").await.unwrap_err();
    assert!(
        matches!(err, Error::FileNotFound { ref path, .. } if path == "/tmp/d/b.txt"),
        "{err:?}"
    );
    // Root-owned files through as_user.
    files
        .as_user("root")
        .write("/root/secret", "r")
        .await
        .unwrap();
    let owner = files
        .as_user("root")
        .get_info("/root/secret")
        .await
        .unwrap();
    assert_eq!(owner.owner, "root");

    // Watch: a created file is reported.
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let watch = files
        .watch_dir("/tmp/d", false, move |e| ev.lock().unwrap().push(e))
        .await
        .unwrap();
    files.write("/tmp/d/new.txt", "x").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = events.lock().unwrap().clone();
        if got
            .iter()
            .any(|e| e.name == "new.txt" && e.event_type == EventType::Create)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no create event: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.stop();
    assert!(sb.kill().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_list_filters_info_timeout_metrics_fork_and_errors() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let client = srv.client();
    let a = client
        .sandbox()
        .metadata("owner", "alice")
        .timeout(Duration::from_secs(120))
        .create()
        .await
        .unwrap();
    let b = client
        .sandbox()
        .metadata("owner", "bob")
        .create()
        .await
        .unwrap();

    // Metadata filter, state filter, pagination.
    let only_alice = client
        .list(SandboxQuery::default().metadata("owner", "alice"))
        .all()
        .await
        .unwrap();
    assert_eq!(only_alice.len(), 1);
    assert_eq!(only_alice[0].sandbox_id.as_str(), a.id());
    let mut pages = client.list(SandboxQuery::default().limit(1));
    let first = pages.next_items().await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(pages.has_next());
    let second = pages.next_items().await.unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first[0].sandbox_id, second[0].sandbox_id);
    assert!(!pages.has_next());
    assert!(matches!(
        pages.next_items().await,
        Err(Error::InvalidArgument { .. })
    ));

    // Info, timeout, metrics.
    let info = a.get_info().await.unwrap();
    assert_eq!(info.listed.state, SandboxState::Running);
    assert_eq!(info.listed.metadata["owner"], "alice");
    a.set_timeout(Duration::from_secs(1000)).await.unwrap();
    let info2 = a.get_info().await.unwrap();
    assert!(info2.listed.end_at > info.listed.end_at);
    let m = a.metrics().await.unwrap();
    assert!(!m.is_empty() && m[0].mem_used > 0, "{m:?}");

    // Pause twice: AlreadyPaused; paused sandboxes are listed as paused.
    a.commands().run("echo kept > /tmp/k").await.unwrap();
    a.pause().await.unwrap();
    let err = a.pause().await.unwrap_err();
    assert!(matches!(err, Error::AlreadyPaused { .. }), "{err:?}");
    let paused = client
        .list(SandboxQuery::state([SandboxState::Paused]))
        .all()
        .await
        .unwrap();
    assert_eq!(paused.len(), 1);
    assert!(!a.is_running().await.unwrap());
    // Envd traffic to a paused sandbox: SandboxNotFound.
    let err = a.commands().run("true").await.unwrap_err();
    assert!(matches!(err, Error::SandboxNotFound { .. }), "{err:?}");
    let (a, resumed) = client.resume(a.id(), None).await.unwrap();
    assert!(resumed);
    assert_eq!(
        a.commands().run("cat /tmp/k").await.unwrap().stdout,
        "kept\n"
    );

    // Fork: an independent copy with the same files.
    let f = a.fork().await.unwrap();
    assert_ne!(f.id(), a.id());
    assert_eq!(
        f.commands().run("cat /tmp/k").await.unwrap().stdout,
        "kept\n"
    );
    assert!(f.kill().await.unwrap());

    // Kill: true, then false; unknown ids are typed errors.
    assert!(b.kill().await.unwrap());
    assert!(!b.kill().await.unwrap());
    let err = client.connect(b.id(), None).await.unwrap_err();
    assert!(
        matches!(err, Error::SandboxNotFound { ref id, .. } if id == b.id()),
        "{err:?}"
    );
    assert!(a.kill().await.unwrap());

    // A wrong key and an unreachable server.
    let bad = Client::new(ConnectionConfig::new(&srv.url, "e2b_wrong")).unwrap();
    let err = bad.list(SandboxQuery::default()).all().await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gone = Client::new(ConnectionConfig::new(format!("http://{closed}"), "k")).unwrap();
    let err = gone.get_info("iabc").await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach the server at http://{closed}")),
        "{err}"
    );
}

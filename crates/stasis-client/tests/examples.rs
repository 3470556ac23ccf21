//! Every example program, run as the built binary against a real server.
//!
//! The binaries come from `cargo build -p stasis-client --examples` (which `cargo test`
//! does by default). Run as root with the `base` template built (scripts/test.sh).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use stasis_client::{SandboxQuery, SandboxState};
use stasis_server::testing::{bin_dir, shared_data_dir};

fn example(name: &str) -> PathBuf {
    let p = bin_dir().join("examples").join(name);
    assert!(
        p.exists(),
        "{} missing: build the examples first (cargo build -p stasis-client --examples)",
        p.display()
    );
    p
}

/// The id in an example's `Sandbox ID: <id>` line.
fn printed_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Sandbox ID: "))
        .unwrap_or_else(|| panic!("no sandbox id in {stdout:?}"))
        .trim()
        .to_owned()
}

async fn state(srv: &TestServer, id: &str) -> Option<SandboxState> {
    srv.client()
        .list(SandboxQuery::default())
        .all()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.sandbox_id.as_str() == id)
        .map(|s| s.state)
}

#[tokio::test(flavor = "multi_thread")]
async fn classic_programs_pause_list_resume_and_kill() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let env = srv.env();

    // create → run → pause → print id
    let (code, out, err) = run_program(&example("create_pause"), &[], &env).await;
    assert_eq!(code, 0, "create_pause: {err}");
    let id = printed_id(&out);
    assert_eq!(state(&srv, &id).await, Some(SandboxState::Paused));

    // list paused
    let (code, out, err) = run_program(&example("list_paused"), &[], &env).await;
    assert_eq!(code, 0, "list_paused: {err}");
    assert!(out.starts_with("Paused sandboxes: 1\n"), "{out}");
    assert!(
        out.contains(&format!("{id} template=base state=paused")),
        "{out}"
    );

    // connect → cat → kill
    let (code, out, err) = run_program(&example("connect_cat_kill"), &[&id], &env).await;
    assert_eq!((code, out.as_str()), (0, "Hello World\n"), "{err}");
    assert_eq!(state(&srv, &id).await, None);

    // without an id: usage, exit 2
    let (code, _, err) = run_program(&example("connect_cat_kill"), &[], &env).await;
    assert_eq!(code, 2);
    assert!(
        err.starts_with("usage: connect_cat_kill SANDBOX_ID"),
        "{err}"
    );

    // a second create_pause, killed by id while paused
    let (code, out, err) = run_program(&example("create_pause"), &[], &env).await;
    assert_eq!(code, 0, "{err}");
    let id = printed_id(&out);
    let (code, out, err) = run_program(&example("kill_by_id"), &[&id], &env).await;
    assert_eq!((code, out.as_str()), (0, "Killed: true\n"), "{err}");
    assert_eq!(state(&srv, &id).await, None);
    let (code, out, err) = run_program(&example("kill_by_id"), &[&id], &env).await;
    assert_eq!((code, out.as_str()), (0, "Killed: false\n"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_pause_example_configures_pause_on_inactivity() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (code, out, err) = run_program(&example("auto_pause"), &[], &srv.env()).await;
    assert_eq!(code, 0, "auto_pause: {err}");
    assert!(out.starts_with("Hello World\n"), "{out}");
    let id = printed_id(&out);
    let client = srv.client();
    let info = client.get_info(&id).await.unwrap();
    let lifecycle = info.lifecycle.expect("lifecycle reported");
    assert_eq!(lifecycle.on_timeout, stasis_client::wire::OnTimeout::Pause);
    // The 10-minute inactivity window is the time to live.
    let ttl = info.listed.end_at - info.listed.started_at;
    assert!(
        (Duration::from_secs(590)..=Duration::from_secs(610)).contains(&ttl.to_std().unwrap()),
        "ttl {ttl}"
    );
    assert!(client.kill(&id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn code_interpreter_example_keeps_state_across_pause() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let templates = srv.client().templates().await.unwrap();
    let name = stasis_client::code::CODE_INTERPRETER_TEMPLATE;
    if !templates
        .iter()
        .any(|t| t.template_id == name || t.aliases.iter().any(|a| a == name))
    {
        eprintln!(
            "SKIP code_interpreter example: the server lists no {name} template (build it into {} to run this test)",
            shared_data_dir().join("templates").display()
        );
        return;
    }
    let (code, out, err) = run_program(&example("code_interpreter"), &[], &srv.env()).await;
    assert_eq!(code, 0, "code_interpreter: {err}");
    assert!(out.contains("x = 42\n"), "{out}");
}

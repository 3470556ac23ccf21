//! `stasis sandbox …` and `stasis completions` as a user runs them: the built binary
//! against a real server, with output formats and error messages pinned.
//! Run as root with the `base` template built (scripts/test.sh).

#[path = "../../stasis-client/tests/common/mod.rs"]
mod common;

use common::*;

const STASIS: &str = env!("CARGO_BIN_EXE_stasis");

async fn stasis(args: &[&str], env: &[(&'static str, String)]) -> (i32, String, String) {
    run_program(std::path::Path::new(STASIS), args, env).await
}

/// A port nothing listens on.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let url = closed_url();
    let (code, out, err) = stasis(
        &["sandbox", "list", "--api-url", &url, "--api-key", "k"],
        &[],
    )
    .await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!("error: cannot reach the server at {url}: is `stasis serve` running? (--api-url or STASIS_API_URL selects another server)\n")
    );

    let empty = std::env::temp_dir().join(format!("stasis-cli-nokey-{}", std::process::id()));
    let (code, _, err) = stasis(
        &["sandbox", "list", "--data-dir", empty.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: no API key: pass --api-key or set STASIS_API_KEY"),
        "{err}"
    );

    let (code, out, _) = stasis(&["completions", "bash"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("_stasis()") && out.contains("sandbox"),
        "{out}"
    );
    for shell in ["zsh", "fish"] {
        let (code, out, _) = stasis(&["completions", shell], &[]).await;
        assert_eq!(code, 0);
        assert!(out.contains("stasis"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_commands_against_a_server() {
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let env = srv.env();

    // create prints the id only.
    let (code, out, err) = stasis(
        &[
            "sandbox",
            "create",
            "--metadata",
            "owner=cli",
            "--env",
            "GREETING=hi",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert_eq!(out, format!("{id}\n"));
    assert!(
        id.len() >= 10 && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );

    // list: a table with a fixed header, one row per sandbox.
    let (code, out, err) = stasis(&["sandbox", "list"], &env).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["SANDBOX", "ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "METADATA"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[5]),
        (id.as_str(), "base", "running", "owner=cli")
    );
    assert!(row[3].ends_with('Z') && row[3].len() == 20, "{row:?}");
    let (_, out, _) = stasis(
        &["sandbox", "list", "--json", "--metadata", "owner=cli"],
        &env,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["sandboxID"], id.as_str());
    let (_, out, _) = stasis(&["sandbox", "list", "--state", "paused"], &env).await;
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    // exec streams output and exits with the command's code.
    let (code, out, err) = stasis(
        &["sandbox", "exec", &id, "--", "echo $GREETING; echo e >&2"],
        &env,
    )
    .await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "hi\n", "e\n"));
    let (code, out, _) = stasis(
        &["sandbox", "exec", &id, "--cwd", "/tmp", "--", "pwd"],
        &env,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "/tmp\n"));
    let (code, out, _) = stasis(
        &["sandbox", "exec", &id, "--", "printf", "%s|", "a b", "c"],
        &env,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "a b|c|"));
    let (code, _, _) = stasis(&["sandbox", "exec", &id, "--", "exit 3"], &env).await;
    assert_eq!(code, 3);

    // cp both ways.
    let local = dir.0.join("upload.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    let (code, _, err) = stasis(
        &[
            "sandbox",
            "cp",
            local.to_str().unwrap(),
            &format!("{id}:/tmp/up.txt"),
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, format!("copied 14 bytes to {id}:/tmp/up.txt\n"));
    let (code, out, _) = stasis(&["sandbox", "cp", &format!("{id}:/tmp/up.txt"), "-"], &env).await;
    assert_eq!((code, out.as_str()), (0, "from the host\n"));
    let (code, _, err) = stasis(&["sandbox", "cp", "a", "b"], &env).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: neither \"a\" nor \"b\" is in a sandbox: write one side as SANDBOX_ID:/path\n"
    );

    // pause, pause again, info, resume.
    let (code, out, _) = stasis(&["sandbox", "pause", &id], &env).await;
    assert_eq!((code, out), (0, format!("paused {id}\n")));
    let (code, _, err) = stasis(&["sandbox", "pause", &id], &env).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("error: sandbox {id} is already paused: `stasis sandbox resume {id}` resumes it\n")
    );
    let (code, out, _) = stasis(&["sandbox", "info", &id], &env).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "ID:        {id}\nTemplate:  base\nState:     paused\n"
        )),
        "{out}"
    );
    let (code, out, _) = stasis(&["sandbox", "resume", &id], &env).await;
    assert_eq!((code, out), (0, format!("resumed {id}\n")));
    let (code, out, _) = stasis(&["sandbox", "resume", &id], &env).await;
    assert_eq!((code, out), (0, format!("{id} was already running\n")));
    let (code, out, _) = stasis(&["sandbox", "exec", &id, "--", "cat /tmp/up.txt"], &env).await;
    assert_eq!((code, out.as_str()), (0, "from the host\n"));

    // fork prints the new id.
    let (code, out, err) = stasis(&["sandbox", "fork", &id], &env).await;
    assert_eq!(code, 0, "{err}");
    let forked = out.trim().to_owned();
    assert_ne!(forked, id);

    // kill, kill again.
    let (code, out, _) = stasis(&["sandbox", "kill", &id, &forked], &env).await;
    assert_eq!((code, out), (0, format!("killed {id}\nkilled {forked}\n")));
    let (code, _, err) = stasis(&["sandbox", "kill", &id], &env).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("error: sandbox {id} not found: `stasis sandbox list` shows the sandboxes\n")
    );
    let (code, _, err) = stasis(&["sandbox", "info", &id], &env).await;
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("error: sandbox {id} not found: `stasis sandbox list` shows the sandboxes\n")
    );

    // A wrong key.
    let (code, _, err) = stasis(&["sandbox", "list", "--api-key", "e2b_bad"], &env).await;
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: the server refused the API key (Invalid API key): pass --api-key or set STASIS_API_KEY"),
        "{err}"
    );
}

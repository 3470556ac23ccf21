//! The `base` template holds what a full-stack developer expects (as E2B's base
//! template does): each tool is used for real in a sandbox without internet, through the
//! API and the agent, as the default user. Run as root with the `base` template built
//! (scripts/test.sh).

mod common;

use common::*;
use serde_json::json;

/// A server with one `base` sandbox; returns (data dir, server, id, token).
async fn sandbox() -> (DataDir, TestServer, String, String) {
    assert!(
        stasis_server::testing::template_built("base"),
        "template base missing in {}: run scripts/test.sh",
        stasis_server::testing::shared_data_dir().display()
    );
    let dir = DataDir::new();
    let srv = TestServer::start(&dir).await;
    let (id, token) = srv.create(json!({"templateID": "base"})).await;
    (dir, srv, id, token)
}

/// Runs `cmd` (bash -l -c) and returns its stdout; fails with everything on a non-zero
/// exit.
async fn ok(srv: &TestServer, id: &str, token: &str, cmd: &str) -> String {
    let (code, out, err) = srv.run(id, token, cmd).await;
    assert_eq!(code, 0, "{cmd}\nstdout: {out}\nstderr: {err}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn node_npm_python_venv_gcc_sqlite_and_git_work_offline() {
    let (_dir, srv, id, token) = sandbox().await;
    let run = |cmd: &'static str| ok(&srv, &id, &token, cmd);

    // Node.js
    assert_eq!(
        run("node -e 'console.log([1, 2, 3].map((x) => x * 2).join(\",\"))'").await,
        "2,4,6\n"
    );

    // npm: a project with a local script, run through npm
    let out = run(concat!(
        "set -e; export npm_config_update_notifier=false; mkdir -p ~/app && cd ~/app; ",
        "npm init -y >/dev/null; ",
        "echo 'console.log(`hello from ${require(\"./package.json\").name}`)' > index.js; ",
        "npm pkg set scripts.hello='node index.js'; ",
        "npm run --silent hello"
    ))
    .await;
    assert_eq!(out, "hello from app\n");

    // Python 3 with venv (and pip inside it)
    let out = run(concat!(
        "set -e; python3 -m venv ~/venv; ",
        "~/venv/bin/python -c 'import sys; print(sys.prefix != sys.base_prefix, sys.version_info[0])'; ",
        "~/venv/bin/pip --version >/dev/null && echo pip-ok"
    ))
    .await;
    assert_eq!(out, "True 3\npip-ok\n");

    // A C program built with gcc (and make, from build-essential)
    let out = run(concat!(
        "set -e; mkdir -p ~/c && cd ~/c; ",
        "printf '#include <stdio.h>\\nint main(void) { printf(\"%%d\\\\n\", 6 * 7); return 0; }\\n' > answer.c; ",
        "printf 'answer: answer.c\\n\\tgcc -O2 -o answer answer.c\\n' > Makefile; ",
        "make -s && ./answer"
    ))
    .await;
    assert_eq!(out, "42\n");

    // sqlite3
    let out = run(concat!(
        "sqlite3 ~/t.db 'create table t (x integer); insert into t values (40), (2); ",
        "select sum(x) from t;'"
    ))
    .await;
    assert_eq!(out, "42\n");

    // git and curl are there too
    let out = run(concat!(
        "set -e; mkdir -p ~/repo && cd ~/repo && git init -q; ",
        "git -c user.name=u -c user.email=u@example.invalid commit -q --allow-empty -m first; ",
        "git log --format=%s; curl --version | head -c 5"
    ))
    .await;
    assert_eq!(out, "first\ncurl ");
}

//! `stasis sandbox …`: sandboxes on a running server, through `stasis-client`.
//!
//! The server is `--api-url`, else `STASIS_API_URL` / `E2B_API_URL`, else
//! `http://127.0.0.1:3000`; the key is `--api-key`, else `STASIS_API_KEY` /
//! `E2B_API_KEY`, else the key file in the data dir (what `stasis api-key` prints).
//! Every command prints a human table or, with `--json`, the API's JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use stasis_client::wire::chrono::{DateTime, SecondsFormat, Utc};
use stasis_client::{AutoPause, Client, ConnectionConfig, Error, SandboxQuery, SandboxState};

use crate::DEFAULT_DATA_DIR;

/// How to reach the server.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Server URL [default: $STASIS_API_URL, $E2B_API_URL, http://127.0.0.1:3000].
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API key [default: $STASIS_API_KEY, $E2B_API_KEY, the key in the data dir].
    #[arg(long, global = true, value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Data dir holding the server's key file (when no key is given).
    #[arg(long, global = true, env = "STASIS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// Create a sandbox and print its id.
    Create {
        /// Template name or alias.
        #[arg(long, short, default_value = "base")]
        template: String,
        /// Time to live in seconds (server default 300).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// Metadata pair (repeatable).
        #[arg(long = "metadata", short, value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Sandbox-wide environment variable (repeatable).
        #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// Pause instead of kill when the sandbox times out.
        #[arg(long)]
        auto_pause: bool,
        /// Pause after this many seconds of inactivity (implies --auto-pause).
        #[arg(long, value_name = "SECS")]
        auto_pause_after: Option<u64>,
        /// Resume a paused sandbox when traffic reaches it (needs auto-pause).
        #[arg(long)]
        auto_resume: bool,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes.
    #[command(visible_alias = "ls")]
    List {
        /// Only sandboxes in this state (repeatable).
        #[arg(long, value_enum)]
        state: Vec<StateArg>,
        /// Only sandboxes with this metadata pair (repeatable).
        #[arg(long = "metadata", short, value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one sandbox.
    Info {
        id: String,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pause a sandbox with its memory and files.
    Pause { id: String },
    /// Resume a paused sandbox (a running one gets its time to live extended).
    Resume {
        id: String,
        /// New time to live in seconds (default 300).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Kill sandboxes, running or paused.
    #[command(visible_alias = "rm")]
    Kill {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a command in a sandbox, streaming its output; exits with its exit code.
    Exec {
        id: String,
        /// Run as this user (default: the sandbox's `user`).
        #[arg(long, short)]
        user: Option<String>,
        /// Working directory.
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        /// Environment variable (repeatable).
        #[arg(long = "env", short, value_name = "KEY=VALUE", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// Seconds the command may run; 0 = no limit.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        timeout: u64,
        /// The command: one argument is run by bash as is, several are quoted.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Copy a file into or out of a sandbox: `cp LOCAL ID:PATH` or `cp ID:PATH LOCAL`
    /// (`-` as LOCAL is stdin or stdout).
    Cp { src: String, dst: String },
    /// Fork a running sandbox (memory, processes and files) and print the new ids.
    Fork {
        id: String,
        /// How many copies.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateArg {
    Running,
    Paused,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The SDK configuration from flags, environment and data dir.
pub fn connection(args: &ConnArgs) -> Result<ConnectionConfig> {
    let env = |a: &str, b: &str| {
        std::env::var(a)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| std::env::var(b).ok().filter(|v| !v.trim().is_empty()))
    };
    let url = args
        .api_url
        .clone()
        .or_else(|| env("STASIS_API_URL", "E2B_API_URL"))
        .unwrap_or_else(|| stasis_client::DEFAULT_API_URL.to_owned());
    let key = match args
        .api_key
        .clone()
        .or_else(|| env("STASIS_API_KEY", "E2B_API_KEY"))
    {
        Some(k) => k,
        None => match stasis_server::keys::load(&args.data_dir) {
            Ok(Some(k)) => k,
            Ok(None) => bail!(
                "no API key: pass --api-key or set STASIS_API_KEY (no key file in {}; `stasis api-key` on the server's host prints the key)",
                args.data_dir.display()
            ),
            Err(e) => bail!(
                "no API key: pass --api-key or set STASIS_API_KEY (cannot read the key file in {}: {e})",
                args.data_dir.display()
            ),
        },
    };
    let mut cfg = ConnectionConfig::new(url, key);
    if let Some(s) = env("STASIS_SANDBOX_URL", "E2B_SANDBOX_URL") {
        cfg = cfg.with_sandbox_url(s);
    }
    Ok(cfg)
}

/// An SDK error with what to do about it.
pub fn explain(e: Error) -> anyhow::Error {
    let hint = match &e {
        Error::Unreachable { url, .. } => format!(
            "cannot reach the server at {url}: is `stasis serve` running? (--api-url or STASIS_API_URL selects another server)"
        ),
        Error::Auth { message } => format!(
            "the server refused the API key ({message}): pass --api-key or set STASIS_API_KEY to the key `stasis api-key` prints on the server's host"
        ),
        Error::SandboxNotFound { id, .. } => {
            format!("sandbox {id} not found: `stasis sandbox list` shows the sandboxes")
        }
        Error::AlreadyPaused { id, .. } => {
            format!("sandbox {id} is already paused: `stasis sandbox resume {id}` resumes it")
        }
        _ => return anyhow::Error::new(e),
    };
    anyhow::anyhow!(hint)
}

/// Runs a sandbox command; returns the process exit code.
pub fn run(conn: &ConnArgs, cmd: SandboxCmd) -> Result<i32> {
    let cfg = connection(conn)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let client = Client::new(cfg).map_err(explain)?;
        dispatch(&client, cmd).await
    })
}

async fn dispatch(client: &Client, cmd: SandboxCmd) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match cmd {
        SandboxCmd::Create {
            template,
            timeout,
            metadata,
            env,
            auto_pause,
            auto_pause_after,
            auto_resume,
            json,
        } => {
            let mut b = client.sandbox().template(template);
            if let Some(t) = timeout {
                b = b.timeout(Duration::from_secs(t));
            }
            for (k, v) in metadata {
                b = b.metadata(k, v);
            }
            b = b.envs(env);
            if auto_pause || auto_pause_after.is_some() {
                b = b.auto_pause(AutoPause {
                    enabled: true,
                    timeout: auto_pause_after.map(Duration::from_secs),
                });
            }
            if auto_resume {
                b = b.auto_resume(true);
            }
            let sb = b.create().await.map_err(explain)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(sb.wire())?)?;
            } else {
                writeln!(out, "{}", sb.id())?;
            }
        }
        SandboxCmd::List {
            state,
            metadata,
            json,
        } => {
            let mut q = SandboxQuery::default();
            if !state.is_empty() {
                q.state = Some(
                    state
                        .iter()
                        .map(|s| match s {
                            StateArg::Running => SandboxState::Running,
                            StateArg::Paused => SandboxState::Paused,
                        })
                        .collect(),
                );
            }
            q.metadata = metadata.into_iter().collect();
            let items = client.list(q).all().await.map_err(explain)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|s| {
                        vec![
                            s.sandbox_id.to_string(),
                            s.template_id.clone(),
                            s.state.as_str().to_owned(),
                            time(&s.started_at),
                            time(&s.end_at),
                            pairs(&s.metadata),
                        ]
                    })
                    .collect();
                table(
                    &mut out,
                    &[
                        "SANDBOX ID",
                        "TEMPLATE",
                        "STATE",
                        "STARTED",
                        "ENDS",
                        "METADATA",
                    ],
                    &rows,
                )?;
            }
        }
        SandboxCmd::Info { id, json } => {
            let d = client.get_info(&id).await.map_err(explain)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
            } else {
                let l = &d.listed;
                let lifecycle = d.lifecycle.map(|lc| {
                    format!(
                        "on timeout: {}, auto-resume: {}",
                        match lc.on_timeout {
                            stasis_client::wire::OnTimeout::Kill => "kill",
                            stasis_client::wire::OnTimeout::Pause => "pause",
                        },
                        if lc.auto_resume { "yes" } else { "no" }
                    )
                });
                let rows = [
                    ("ID", l.sandbox_id.to_string()),
                    ("Template", l.template_id.clone()),
                    ("State", l.state.as_str().to_owned()),
                    ("Started", time(&l.started_at)),
                    ("Ends", time(&l.end_at)),
                    ("CPUs", l.cpu_count.to_string()),
                    ("Memory", format!("{} MiB", l.memory_mb)),
                    ("Disk", format!("{} MiB", l.disk_size_mb)),
                    ("Lifecycle", lifecycle.unwrap_or_else(|| "-".into())),
                    ("Metadata", pairs(&l.metadata)),
                    ("envd", l.envd_version.clone()),
                ];
                for (k, v) in rows {
                    writeln!(out, "{:<10} {v}", format!("{k}:"))?;
                }
            }
        }
        SandboxCmd::Pause { id } => {
            client.pause(&id).await.map_err(explain)?;
            writeln!(out, "paused {id}")?;
        }
        SandboxCmd::Resume { id, timeout } => {
            let (_, resumed) = client
                .resume(&id, timeout.map(Duration::from_secs))
                .await
                .map_err(explain)?;
            if resumed {
                writeln!(out, "resumed {id}")?;
            } else {
                writeln!(out, "{id} was already running")?;
            }
        }
        SandboxCmd::Kill { ids } => {
            let mut missing = Vec::new();
            for id in ids {
                if client.kill(&id).await.map_err(explain)? {
                    writeln!(out, "killed {id}")?;
                } else {
                    missing.push(id);
                }
            }
            match missing.len() {
                0 => {}
                1 => bail!(
                    "sandbox {} not found: `stasis sandbox list` shows the sandboxes",
                    missing[0]
                ),
                _ => bail!(
                    "sandboxes {} not found: `stasis sandbox list` shows the sandboxes",
                    missing.join(", ")
                ),
            }
        }
        SandboxCmd::Exec {
            id,
            user,
            cwd,
            env,
            timeout,
            command,
        } => {
            drop(out);
            return exec(client, &id, user, cwd, env, timeout, &command).await;
        }
        SandboxCmd::Cp { src, dst } => {
            drop(out);
            cp(client, &src, &dst).await?;
        }
        SandboxCmd::Fork { id, count, json } => {
            let made = client.fork(&id, count).await.map_err(explain)?;
            if json {
                let v: Vec<_> = made.iter().map(|s| s.wire()).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for s in made {
                    writeln!(out, "{}", s.id())?;
                }
            }
        }
    }
    Ok(0)
}

async fn exec(
    client: &Client,
    id: &str,
    user: Option<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    timeout: u64,
    command: &[String],
) -> Result<i32> {
    let (sb, _) = client.resume(id, None).await.map_err(explain)?;
    let line = if command.len() == 1 {
        command[0].clone()
    } else {
        command
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut run = sb
        .commands()
        .run(line)
        .envs(env)
        .timeout(Duration::from_secs(timeout))
        .on_stdout(|s| {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        })
        .on_stderr(|s| {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(s.as_bytes());
            let _ = e.flush();
        });
    if let Some(u) = user {
        run = run.user(u);
    }
    if let Some(c) = cwd {
        run = run.cwd(c);
    }
    match run.await {
        Ok(_) => Ok(0),
        Err(Error::CommandExit(e)) => Ok(if e.exit_code > 0 && e.exit_code < 256 {
            e.exit_code
        } else {
            // Killed by a signal: the shell convention.
            137
        }),
        Err(e) => Err(explain(e)),
    }
}

/// `ID:PATH` → `(id, path)`; anything else is local.
fn remote(arg: &str) -> Option<(&str, &str)> {
    let (id, path) = arg.split_once(':')?;
    let id_like = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
    (id_like && !path.is_empty()).then_some((id, path))
}

async fn cp(client: &Client, src: &str, dst: &str) -> Result<()> {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let data = if src == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading stdin")?;
                buf
            } else {
                std::fs::read(src).with_context(|| format!("reading {src}"))?
            };
            let (sb, _) = client.resume(id, None).await.map_err(explain)?;
            let len = data.len();
            let w = sb.files().write(path, data).await.map_err(explain)?;
            eprintln!("copied {len} bytes to {id}:{}", w.path);
        }
        (Some((id, path)), None) => {
            let (sb, _) = client.resume(id, None).await.map_err(explain)?;
            let data = sb.files().read_bytes(path).await.map_err(explain)?;
            if dst == "-" {
                std::io::stdout().write_all(&data)?;
            } else {
                let target = local_target(Path::new(dst), path);
                std::fs::write(&target, &data)
                    .with_context(|| format!("writing {}", target.display()))?;
                eprintln!("copied {} bytes to {}", data.len(), target.display());
            }
        }
        (Some(_), Some(_)) => {
            bail!("copy between two sandboxes is not supported: copy through a local file")
        }
        (None, None) => {
            bail!("neither {src:?} nor {dst:?} is in a sandbox: write one side as SANDBOX_ID:/path")
        }
    }
    Ok(())
}

/// A directory destination receives the file under its own name.
fn local_target(dst: &Path, remote_path: &str) -> PathBuf {
    if dst.is_dir() {
        let name = remote_path.rsplit('/').next().unwrap_or(remote_path);
        dst.join(name)
    } else {
        dst.to_owned()
    }
}

/// Single-quotes an argument for bash unless it is plainly safe.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn pairs(m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == n {
                    c.to_owned()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_quote() {
        let mut buf = Vec::new();
        table(
            &mut buf,
            &["ID", "STATE", "X"],
            &[vec!["i1".into(), "running".into(), "a".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "ID  STATE    X\ni1  running  a\n"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/tmp/x"), "/tmp/x");
        assert_eq!(remote("iabc:/tmp/f"), Some(("iabc", "/tmp/f")));
        assert_eq!(remote("./local:file"), None);
        assert_eq!(remote("/abs/path"), None);
        assert!(parse_pair("a=b=c").unwrap() == ("a".into(), "b=c".into()));
        assert!(parse_pair("=x").is_err());
    }
}

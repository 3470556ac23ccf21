//! `stasis-envd`: the in-sandbox agent binary. See the library docs for the protocol.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use clap::{Parser, ValueEnum};
use stasis_envd::{pid1, Config, Limits, ReapMode, ENVD_VERSION};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Environment variable holding the initial access token (kept off the command line).
const TOKEN_ENV: &str = "STASIS_ENVD_ACCESS_TOKEN";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StdioMode {
    /// Detach when running as PID 1, keep otherwise.
    Auto,
    /// Keep stdio and log to stderr (or --log-file).
    Keep,
    /// Close inherited fds, stdio to /dev/null, log to a file.
    Detach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Reap {
    /// Reap all children (orphans too) when PID 1, only our own otherwise.
    Auto,
    /// waitpid(-1): every child, orphans included.
    All,
    /// Only processes this agent started.
    Own,
}

/// E2B-compatible in-sandbox agent (envd).
#[derive(Debug, Parser)]
#[command(name = "stasis-envd", version = ENVD_VERSION)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:49983")]
    listen: SocketAddr,
    /// Override only the port of --listen.
    #[arg(long)]
    port: Option<u16>,
    /// What to do with stdin/stdout/stderr.
    #[arg(long, value_enum, default_value_t = StdioMode::Auto)]
    stdio: StdioMode,
    /// Log file (default when detached: /var/log/stasis-envd.log, else /tmp/…).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Default user for requests that name none (root if it does not exist).
    #[arg(long, default_value = "user")]
    default_user: String,
    /// Default working directory (default: the user's home).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Sandbox-wide environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Which children to reap.
    #[arg(long, value_enum, default_value_t = Reap::Auto)]
    reap: Reap,
    /// Directory with passwd and group.
    #[arg(long, default_value = "/etc")]
    etc_dir: PathBuf,
    /// Largest accepted upload in bytes.
    #[arg(long, default_value_t = Limits::default().max_upload)]
    max_upload_bytes: u64,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() {
    let cli = Cli::parse();
    let pid1 = pid1::is_pid1();
    let detach = match cli.stdio {
        StdioMode::Auto => pid1,
        StdioMode::Keep => false,
        StdioMode::Detach => true,
    };
    if detach {
        if let Err(e) = pid1::detach_stdio() {
            eprintln!("stasis-envd: cannot detach stdio: {e}");
        }
    }
    let filter =
        EnvFilter::try_from_env("STASIS_ENVD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let log = if detach || cli.log_file.is_some() {
        pid1::open_log(cli.log_file.as_deref()).ok()
    } else {
        None
    };
    match log {
        Some((file, _)) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }

    let access_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    std::env::remove_var(TOKEN_ENV);
    let reap = match cli.reap {
        Reap::All => ReapMode::All,
        Reap::Own => ReapMode::Own,
        Reap::Auto if pid1 => ReapMode::All,
        Reap::Auto => ReapMode::Own,
    };
    let config = Config {
        access_token,
        default_user: cli.default_user,
        default_workdir: cli.workdir,
        env_vars: cli.env.into_iter().collect::<BTreeMap<_, _>>(),
        etc_dir: cli.etc_dir,
        reap,
        limits: Limits {
            max_upload: cli.max_upload_bytes,
            ..Limits::default()
        },
    };
    let mut addr = cli.listen;
    if let Some(port) = cli.port {
        addr.set_port(port);
    }
    tracing::info!(pid1, detach, ?reap, %addr, version = ENVD_VERSION, "starting");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let shutdown = async {
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT, shutting down"),
            }
        };
        stasis_envd::serve(listener, config, shutdown).await
    });
    if let Err(e) = result {
        tracing::error!(error = %e, %addr, "server failed");
        std::process::exit(1);
    }
}

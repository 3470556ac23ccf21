//! `stasis-envd`: the in-sandbox agent binary. See the library docs for the protocol.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use clap::{Parser, Subcommand, ValueEnum};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodeInterpreterMode {
    /// When PID 1 and a Jupyter kernelspec is installed.
    Auto,
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Serve the code interpreter (port 49999) on the installed Jupyter kernels; the
    /// agent runs this itself when the template has kernels.
    CodeInterpreter {
        /// Port to listen on (all addresses).
        #[arg(long, default_value_t = stasis_code_interpreter::PORT)]
        port: u16,
        /// envd's port on loopback (token checks and sandbox env vars).
        #[arg(long, default_value_t = 49983)]
        envd_port: u16,
        /// Account whose home is the contexts' default working directory (kernels run as
        /// root, as in E2B).
        #[arg(long, default_value = "user")]
        user: String,
        /// Log file.
        #[arg(long, default_value = "/var/log/stasis-code-interpreter.log")]
        log_file: PathBuf,
    },
}

/// E2B-compatible in-sandbox agent (envd).
#[derive(Debug, Parser)]
#[command(name = "stasis-envd", version = ENVD_VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Whether to run the code interpreter on port 49999.
    #[arg(long, value_enum, default_value_t = CodeInterpreterMode::Auto)]
    code_interpreter: CodeInterpreterMode,
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

fn code_interpreter_main(port: u16, envd_port: u16, user: &str, log_file: &std::path::Path) {
    let filter =
        EnvFilter::try_from_env("STASIS_ENVD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match pid1::open_log(Some(log_file)) {
        Ok((file, _)) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .init(),
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let mut config = stasis_code_interpreter::Config::for_sandbox(user);
    config.envd_url = Some(format!("http://127.0.0.1:{envd_port}"));
    config.internal_token = std::env::var("STASIS_ENVD_INTERNAL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
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
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let shutdown = async {
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            term.recv().await;
            tracing::info!("SIGTERM, shutting down");
        };
        stasis_code_interpreter::serve(listener, config, shutdown).await
    });
    if let Err(e) = result {
        tracing::error!(error = %e, %addr, "code interpreter failed");
        std::process::exit(1);
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(Sub::CodeInterpreter {
        port,
        envd_port,
        user,
        log_file,
    }) = &cli.command
    {
        code_interpreter_main(*port, *envd_port, user, log_file);
        return;
    }
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
    let run_interpreter = match cli.code_interpreter {
        CodeInterpreterMode::On => true,
        CodeInterpreterMode::Off => false,
        CodeInterpreterMode::Auto => {
            pid1 && stasis_code_interpreter::kernels_installed(
                &stasis_code_interpreter::kernel::default_dirs(),
            )
        }
    };
    let mut addr = cli.listen;
    if let Some(port) = cli.port {
        addr.set_port(port);
    }
    let code_interpreter = if run_interpreter {
        match stasis_envd::code_interpreter::Launch::this_binary(
            stasis_code_interpreter::PORT,
            addr.port(),
            &cli.default_user,
        ) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot find this binary; no code interpreter");
                None
            }
        }
    } else {
        None
    };
    let config = Config {
        code_interpreter,
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

//! `stasis`: the Stasis command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use stasis_runtime::template;

mod sandbox_cmd;

/// Default data directory of the server and the CLI.
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/stasis";

#[derive(Parser)]
#[command(
    name = "stasis",
    version,
    about = "Self-hosted sandboxes with full-state pause and resume"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: the E2B-compatible control API and the sandbox proxy on one
    /// listener.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "STASIS_LISTEN", default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
        #[arg(long, env = "STASIS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// API key clients must send (default: generated on first start and kept in the
        /// data dir; `stasis api-key` prints it).
        #[arg(long, env = "STASIS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Refuse outbound internet access to every sandbox.
        #[arg(long)]
        no_internet: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Print the server's API key.
    ApiKey {
        #[arg(long, env = "STASIS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Kill every sandbox in a data dir and remove what interrupted runs left behind.
    Gc {
        #[arg(long, env = "STASIS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Build and list sandbox templates.
    Template {
        #[command(subcommand)]
        command: TemplateCmd,
    },
    /// Manage sandboxes on a running server: create, list, info, pause, resume, kill,
    /// exec, cp, fork.
    #[command(visible_alias = "sb")]
    Sandbox {
        #[command(flatten)]
        conn: sandbox_cmd::ConnArgs,
        #[command(subcommand)]
        command: sandbox_cmd::SandboxCmd,
    },
    /// Print a shell completion script: `stasis completions bash > /etc/bash_completion.d/stasis`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Host networking of the sandboxes.
#[derive(clap::Args)]
struct NetArgs {
    /// Bridge the sandboxes attach to.
    #[arg(long, default_value = "stasis0")]
    bridge: String,
    /// Sandbox subnet (CIDR).
    #[arg(long, default_value = "10.248.0.0/16")]
    subnet: String,
}

impl NetArgs {
    fn config(&self) -> Result<stasis_runtime::NetworkConfig> {
        let (addr, prefix) = self.subnet.split_once('/').with_context(|| {
            format!("--subnet {:?} is not in CIDR form (a.b.c.d/n)", self.subnet)
        })?;
        let cfg = stasis_runtime::NetworkConfig {
            bridge: self.bridge.clone(),
            subnet: addr
                .parse()
                .with_context(|| format!("bad subnet address {addr:?}"))?,
            prefix: prefix
                .parse()
                .with_context(|| format!("bad prefix length {prefix:?}"))?,
        };
        cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(cfg)
    }
}

/// The runtime for `data_dir`, with the hook binary installed next to this executable.
fn open_runtime(data_dir: &std::path::Path, net: &NetArgs) -> Result<stasis_runtime::RuncRuntime> {
    let exe = std::env::current_exe().context("locating the stasis executable")?;
    let hook = exe.with_file_name("stasis-netns-hook");
    let mut cfg = stasis_runtime::RuntimeConfig::new(data_dir, hook);
    cfg.network = net.config()?;
    Ok(stasis_runtime::RuncRuntime::new(cfg)?)
}

#[derive(Subcommand)]
enum TemplateCmd {
    /// Build a template's root filesystem (skipped when the recipe is unchanged).
    Build {
        /// Template name: base (alias: default).
        name: String,
        #[arg(long, env = "STASIS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Debian mirror (default: the one in the host's apt sources).
        #[arg(long)]
        mirror: Option<String>,
    },
    /// List the templates this build knows and whether they are built.
    List {
        #[arg(long, env = "STASIS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    match run(Cli::parse()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs a command; returns the exit code.
fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Sandbox { conn, command } => sandbox_cmd::run(&conn, command),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "stasis", &mut std::io::stdout());
            Ok(0)
        }
        other => run_local(other).map(|()| 0),
    }
}

/// The commands that work on this host's data dir, without a server.
fn run_local(command: Cmd) -> Result<()> {
    match command {
        Cmd::Serve {
            listen,
            data_dir,
            api_key,
            no_internet,
            net,
        } => serve(listen, data_dir, api_key, !no_internet, &net),
        Cmd::ApiKey { data_dir } => match stasis_server::keys::load(&data_dir)
            .with_context(|| format!("reading the key in {}", data_dir.display()))?
        {
            Some(k) => {
                println!("{k}");
                Ok(())
            }
            None => bail!(
                "no API key in {}: start the server once (`stasis serve`) to generate it",
                data_dir.display()
            ),
        },
        Cmd::Gc { data_dir, net } => gc(&data_dir, &net),
        Cmd::Template { command } => match command {
            TemplateCmd::Build {
                name,
                data_dir,
                mirror,
            } => build_template(&name, &data_dir, mirror),
            TemplateCmd::List { data_dir, json } => list_templates(&data_dir, json),
        },
        Cmd::Sandbox { .. } | Cmd::Completions { .. } => unreachable!("dispatched by run"),
    }
}

fn build_template(name: &str, data_dir: &std::path::Path, mirror: Option<String>) -> Result<()> {
    let Some(recipe) = template::recipe(name) else {
        let known: Vec<&str> = template::RECIPES.iter().map(|r| r.name).collect();
        bail!(
            "unknown template {name:?}; known templates: {}",
            known.join(", ")
        );
    };
    let mirror = match mirror.or_else(template::detect_mirror) {
        Some(m) => m,
        None => bail!("no Debian mirror found in /etc/apt; pass --mirror URL"),
    };
    let started = Instant::now();
    let mut step = 0usize;
    // On a terminal: a spinner with the current step; otherwise (logs, CI) one line per
    // step, as before.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb.set_message(format!("building template {}", recipe.name));
        pb
    });
    let outcome = template::build(data_dir, recipe, &mirror, &mut |line| {
        step += 1;
        match &bar {
            Some(pb) => pb.set_message(line.to_string()),
            None => eprintln!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64()),
        }
    });
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let outcome = outcome.with_context(|| format!("building template {}", recipe.name))?;
    match outcome {
        template::Outcome::Cached { rootfs } => {
            eprintln!(
                "template {} is up to date ({})",
                recipe.name,
                rootfs.display()
            )
        }
        template::Outcome::Built { rootfs } => eprintln!(
            "template {} built in {:.0}s ({} steps) at {}",
            recipe.name,
            started.elapsed().as_secs_f64(),
            step,
            rootfs.display()
        ),
    }
    Ok(())
}

fn list_templates(data_dir: &std::path::Path, json: bool) -> Result<()> {
    let rows: Vec<serde_json::Value> = template::RECIPES
        .iter()
        .map(|r| {
            let name: stasis_types::TemplateName = r.name.parse().expect("recipe names are valid");
            let built = template::rootfs_path(data_dir, &name).exists();
            serde_json::json!({"name": r.name, "aliases": r.aliases, "built": built, "stamp": r.stamp()})
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<24} {:<8} {:<18} ALIASES", "NAME", "BUILT", "RECIPE");
        for r in &rows {
            println!(
                "{:<24} {:<8} {:<18} {}",
                r["name"].as_str().unwrap_or(""),
                if r["built"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                r["stamp"].as_str().unwrap_or(""),
                r["aliases"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn gc(data_dir: &std::path::Path, net: &NetArgs) -> Result<()> {
    use stasis_runtime::Runtime;
    if !data_dir.exists() {
        eprintln!("nothing to clean: {} does not exist", data_dir.display());
        return Ok(());
    }
    let rt = open_runtime(data_dir, net)?;
    // Recovery first: it also ends what a crashed server left of sandboxes that have no
    // dir any more (runc/CRIU in their ops cgroups, processes, runc state, mounts).
    let all = rt.adopt()?;
    let mut failed = 0;
    for s in &all {
        match rt.kill(&s.spec.id) {
            Ok(()) => eprintln!(
                "removed sandbox {} ({}): processes, mounts, veth, cgroups, runc state, files, leases",
                s.spec.id,
                s.state.name()
            ),
            Err(e) => {
                failed += 1;
                eprintln!("could not remove sandbox {}: {e:#}", s.spec.id);
            }
        }
    }
    let quarantine = data_dir.join("quarantine");
    if let Ok(rd) = std::fs::read_dir(&quarantine) {
        for q in rd.flatten() {
            eprintln!(
                "kept {} (quarantined data; remove it yourself once checked)",
                q.path().display()
            );
        }
    }
    eprintln!(
        "removed {} sandbox(es) from {}",
        all.len() - failed,
        data_dir.display()
    );
    if failed > 0 {
        bail!("{failed} sandbox(es) could not be removed");
    }
    Ok(())
}

fn serve(
    listen: std::net::SocketAddr,
    data_dir: PathBuf,
    api_key: Option<String>,
    allow_internet: bool,
    net: &NetArgs,
) -> Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let api_key = match api_key {
        Some(k) => k,
        None => stasis_server::keys::load_or_create(&data_dir)
            .with_context(|| format!("creating the API key in {}", data_dir.display()))?,
    };
    if !stasis_server::keys::is_sdk_compatible(&api_key) {
        eprintln!("warning: some E2B SDK versions only accept keys of the form e2b_<hex>");
    }
    let exe = std::env::current_exe().context("locating the stasis executable")?;
    let exe_dir = exe.parent().context("the executable has no directory")?;
    let mut cfg = stasis_server::ServerConfig::new(&data_dir, api_key.clone(), exe_dir);
    cfg.network = net.config()?;
    cfg.allow_internet = allow_internet;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let server = stasis_server::Server::start(cfg).await?;
        let url = format!("http://{}", listener.local_addr()?);
        eprintln!("stasis is serving on {url}");
        eprintln!("  export E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_API_KEY={api_key}");
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("shutting down; sandboxes keep running and are adopted at the next start");
        };
        server.serve(listener, shutdown).await?;
        Ok::<_, anyhow::Error>(())
    })
}

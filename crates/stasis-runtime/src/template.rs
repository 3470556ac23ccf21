//! Template root filesystems, built with debootstrap.
//!
//! A template is built into `templates/<name>/<stamp>/rootfs` and published by pointing
//! the symlink `templates/<name>/rootfs` at it. The stamp is a hash of the recipe, so a
//! build is skipped when the recipe has not changed, and a rebuild never pulls the lower
//! layer from under existing sandboxes: each sandbox records the version it was made
//! from.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use stasis_types::TemplateName;

use crate::cmd;
use crate::error::Cause;

/// Bump when the build steps change in a way the recipe fields do not show.
const BUILD_STEPS_VERSION: u32 = 2;

/// How to build one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub suite: &'static str,
    /// Debian packages installed with apt-get on top of minbase.
    pub packages: &'static [&'static str],
    /// Python packages installed with pip into the system Python.
    pub pip: &'static [&'static str],
    /// npm packages installed globally (`/usr/local`) after the pip step.
    pub npm: &'static [&'static str],
    /// The unprivileged user (uid 1000, passwordless sudo), as in E2B's templates.
    pub user: &'static str,
    /// Commands run in the chroot after the pip and npm steps (program and arguments, no
    /// shell).
    pub post: &'static [&'static [&'static str]],
    /// Ports inside the sandbox whose `GET /health` must answer before a new sandbox of
    /// this template is handed out (besides the agent's own).
    pub ready_ports: &'static [u16],
    /// Files written into the rootfs after the pip step: (absolute path, contents).
    pub files: &'static [(&'static str, &'static str)],
}

/// The default template: what a full-stack developer expects to find, as in E2B's base
/// template: Node.js with npm, Python 3 with pip and venv, git, a C toolchain, curl and
/// sqlite3, all from Debian.
pub const BASE: Recipe = Recipe {
    name: "base",
    aliases: &["default"],
    suite: "bookworm",
    packages: BASE_PACKAGES,
    pip: &[],
    npm: &[],
    user: "user",
    post: &[],
    ready_ports: &[],
    files: &[],
};

const BASE_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "iproute2",
    "ca-certificates",
    "curl",
    "git",
    "python3",
    "python3-pip",
    "python3-venv",
    "sudo",
    "build-essential",
    "nodejs",
    "npm",
    "sqlite3",
];

/// `base` plus the code interpreter's kernels: Python (IPython), JavaScript and
/// TypeScript (tslab, from npm), R (IRkernel and its kernelspec `ir`, from Debian), Java
/// (JJava, from PyPI, on Debian's JDK) and bash. The agent serves the code interpreter on port 49999 when it
/// finds a kernelspec under `/usr/local/share/jupyter/kernels` or
/// `/usr/share/jupyter/kernels`. The Python packages are pinned to the versions E2B's
/// code-interpreter template uses, so code written for it behaves the same here.
pub const CODE_INTERPRETER: Recipe = Recipe {
    name: "code-interpreter-v1",
    aliases: &["code-interpreter"],
    suite: BASE.suite,
    packages: CODE_INTERPRETER_PACKAGES,
    pip: &[
        "ipykernel==6.31.0",
        "ipython==9.15.0",
        "jupyter_client",
        "bash_kernel",
        "orjson==3.11.9",
        "numpy==2.3.5",
        "pandas==2.2.3",
        "matplotlib==3.10.9",
        "pillow==12.3.0",
        "e2b-charts",
        "jjava==1.0a8",
    ],
    npm: &["tslab@1.0.22"],
    user: BASE.user,
    post: &[
        // bash_kernel ships no kernelspec until it is installed (into /usr/share/jupyter).
        &["python3", "-m", "bash_kernel.install", "--sys-prefix"],
        // The JavaScript (jslab) and TypeScript (tslab) kernelspecs.
        &["tslab", "install", "--prefix", "/usr/local"],
        // Build matplotlib's font cache once here, not in every first plot (kernels run
        // as root, as in E2B).
        &[
            "env",
            "HOME=/root",
            "python3",
            "-c",
            "import matplotlib.pyplot",
        ],
    ],
    // The code interpreter the agent starts.
    ready_ports: &[49999],
    files: &[
        (
            "/usr/local/share/stasis/ipython_startup.py",
            include_str!("template_files/ipython_startup.py"),
        ),
        (
            "/etc/ipython/ipython_kernel_config.py",
            include_str!("template_files/ipython_kernel_config.py"),
        ),
    ],
};

const CODE_INTERPRETER_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "iproute2",
    "ca-certificates",
    "curl",
    "git",
    "python3",
    "python3-pip",
    "python3-venv",
    "sudo",
    "build-essential",
    "nodejs",
    "npm",
    "sqlite3",
    // R and its Jupyter kernel
    "r-base-core",
    "r-cran-irkernel",
    // the JDK (JShell) for the Java kernel
    "openjdk-17-jdk-headless",
];

/// Every template this build knows how to make.
pub const RECIPES: &[Recipe] = &[BASE, CODE_INTERPRETER];

/// The recipe for `name` or one of its aliases.
pub fn recipe(name: &str) -> Option<&'static Recipe> {
    RECIPES
        .iter()
        .find(|r| r.name == name || r.aliases.contains(&name))
}

impl Recipe {
    /// A short hash of everything that determines the result.
    pub fn stamp(&self) -> String {
        let text = format!(
            "v{BUILD_STEPS_VERSION}\n{}\n{}\n{}\n{}\n{}\n",
            self.name,
            self.suite,
            self.packages.join(","),
            self.pip.join(","),
            self.user
        );
        // Only recipes with npm packages, post steps or files hash them, so existing
        // stamps stay valid.
        let mut text = text;
        if !self.npm.is_empty() {
            text.push_str("npm ");
            text.push_str(&self.npm.join(","));
            text.push('\n');
        }
        for step in self.post {
            text.push_str(&step.join(" "));
            text.push('\n');
        }
        for (path, contents) in self.files {
            text.push_str(path);
            text.push('\n');
            text.push_str(contents);
        }
        blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
    }
}

/// What [`build`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The current build matches the recipe.
    Cached {
        rootfs: PathBuf,
    },
    Built {
        rootfs: PathBuf,
    },
}

/// The Debian mirror the host's apt uses (deb822 `.sources` or one-line format).
pub fn detect_mirror() -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            if e.path()
                .extension()
                .is_some_and(|x| x == "sources" || x == "list")
            {
                texts.push(fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for t in &texts {
        for line in t.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(u) = uri {
                if u.contains("debian") && !u.contains("security") {
                    return Some(u.to_owned());
                }
            }
        }
    }
    None
}

fn templates_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("templates").join(name)
}

/// The published rootfs of a template (the symlink), whether or not it exists.
pub fn rootfs_path(data_dir: &Path, name: &TemplateName) -> PathBuf {
    templates_dir(data_dir, name.as_str()).join("rootfs")
}

fn chroot(root: &Path, args: &[&str]) -> Result<(), Cause> {
    chroot_env(root, args, &[])
}

fn chroot_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), Cause> {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    for (k, v) in env {
        c.env(k, v);
    }
    cmd::run(c).map(drop)
}

/// The host's CA bundle, which pip inside the chroot must trust too (the host may reach
/// PyPI through a proxy whose CA only the host's bundle holds).
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the host's bundle is copied in the chroot for the pip step (removed after).
const CHROOT_CA_BUNDLE: &str = "run/stasis-host-ca.crt";

/// `/proc` mounted in a rootfs being built, unmounted on drop (also when a step fails).
struct ProcMount(PathBuf);

impl ProcMount {
    fn new(rootfs: &Path) -> Result<Self, Cause> {
        let target = rootfs.join("proc");
        fs::create_dir_all(&target).map_err(Cause::io(&target))?;
        let mut c = Command::new("mount");
        c.args(["-t", "proc", "proc"]).arg(&target);
        cmd::run(c)?;
        Ok(Self(target))
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        if let Err(e) = crate::mounts::unmount_all(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot unmount a build's /proc");
        }
    }
}

/// Runs `step` with the host's CA bundle copied into the chroot and named by each of
/// `vars` (in the environment passed to `step`); the copy is removed afterwards.
fn with_host_ca<T>(
    rootfs: &Path,
    vars: &[&'static str],
    step: impl FnOnce(&[(&str, &str)]) -> Result<T, Cause>,
) -> Result<T, Cause> {
    if !Path::new(HOST_CA_BUNDLE).exists() {
        return step(&[]);
    }
    let ca = rootfs.join(CHROOT_CA_BUNDLE);
    fs::copy(HOST_CA_BUNDLE, &ca).map_err(Cause::io(&ca))?;
    let in_chroot = format!("/{CHROOT_CA_BUNDLE}");
    let env: Vec<(&str, &str)> = vars.iter().map(|v| (*v, in_chroot.as_str())).collect();
    let result = step(&env);
    let _ = fs::remove_file(&ca);
    result
}

/// Builds `recipe` under `data_dir` unless the current build matches it. `progress`
/// receives one line per step (debootstrap's own progress included).
pub fn build(
    data_dir: &Path,
    recipe: &Recipe,
    mirror: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Outcome, Cause> {
    let stamp = recipe.stamp();
    let dir = templates_dir(data_dir, recipe.name);
    let version = dir.join(&stamp);
    let rootfs = version.join("rootfs");
    let link = dir.join("rootfs");
    if version.join("complete").exists()
        && fs::read_link(&link).ok() == Some(PathBuf::from(format!("{stamp}/rootfs")))
    {
        return Ok(Outcome::Cached { rootfs: link });
    }
    fs::create_dir_all(&dir).map_err(Cause::io(&dir))?;
    if version.exists() {
        // An interrupted build may have left its /proc mounted: never walk into it.
        crate::mounts::unmount_all(&rootfs.join("proc"))?;
        fs::remove_dir_all(&version).map_err(Cause::io(&version))?;
    }
    fs::create_dir_all(&version).map_err(Cause::io(&version))?;
    progress(&format!(
        "debootstrap {} (minbase) from {mirror}",
        recipe.suite
    ));
    let mut c = Command::new("debootstrap");
    c.arg("--variant=minbase")
        .arg(recipe.suite)
        .arg(&rootfs)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|source| Cause::Spawn {
        program: "debootstrap".into(),
        source,
    })?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            progress(line.trim());
        }
    }
    let status = child.wait().map_err(|source| Cause::Spawn {
        program: "debootstrap".into(),
        source,
    })?;
    let err_text = err_reader.join().unwrap_or_default();
    if !status.success() {
        let log = rootfs.join("debootstrap/debootstrap.log");
        let log_tail = fs::read_to_string(&log)
            .map(|t| t.lines().rev().take(10).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        return Err(Cause::Command {
            program: "debootstrap".into(),
            args: format!("{} {}", recipe.suite, rootfs.display()),
            status: status.to_string(),
            stderr: format!("{err_text} {log_tail}"),
        });
    }
    // Maintainer scripts (the JDK's) and npm's install scripts want /proc; it stays
    // mounted until the post steps are done.
    let proc = ProcMount::new(&rootfs)?;
    // apt, unlike debootstrap's resolver, handles virtual packages and alternatives
    // (npm's dependencies need it).
    progress(&format!("apt-get install {}", recipe.packages.join(" ")));
    chroot(&rootfs, &["apt-get", "update", "-q"])?;
    let mut args = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    args.extend(recipe.packages.iter().copied());
    chroot(&rootfs, &args)?;
    progress(&format!(
        "adding user {} (uid 1000, passwordless sudo)",
        recipe.user
    ));
    chroot(
        &rootfs,
        &[
            "useradd",
            "--create-home",
            "--uid",
            "1000",
            "--user-group",
            "--shell",
            "/bin/bash",
            recipe.user,
        ],
    )?;
    let sudoers = rootfs.join("etc/sudoers.d/90-stasis-user");
    fs::write(
        &sudoers,
        format!("{} ALL=(ALL:ALL) NOPASSWD:ALL\n", recipe.user),
    )
    .map_err(Cause::io(&sudoers))?;
    fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440))
        .map_err(Cause::io(&sudoers))?;
    let hosts = rootfs.join("etc/hosts");
    fs::write(
        &hosts,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .map_err(Cause::io(&hosts))?;
    if !recipe.pip.is_empty() {
        progress(&format!("pip install {}", recipe.pip.join(" ")));
        let mut args = vec![
            "python3",
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--break-system-packages",
        ];
        args.extend(recipe.pip.iter().copied());
        // Debian's pip reads the bundle from requests' and OpenSSL's variables.
        with_host_ca(
            &rootfs,
            &["PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"],
            |env| chroot_env(&rootfs, &args, env),
        )?;
    }
    if !recipe.npm.is_empty() {
        progress(&format!("npm install --global {}", recipe.npm.join(" ")));
        let mut args = vec![
            "npm",
            "install",
            "--global",
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
        ];
        args.extend(recipe.npm.iter().copied());
        // Node adds NODE_EXTRA_CA_CERTS to its own roots; npm's cafile replaces them.
        with_host_ca(&rootfs, &["NODE_EXTRA_CA_CERTS"], |env| {
            chroot_env(&rootfs, &args, env)?;
            // npm leaves its download cache in root's home.
            let cache = rootfs.join("root/.npm");
            if cache.exists() {
                fs::remove_dir_all(&cache).map_err(Cause::io(&cache))?;
            }
            Ok(())
        })?;
    }
    for (path, contents) in recipe.files {
        let dst = rootfs.join(path.trim_start_matches('/'));
        progress(&format!("writing {path}"));
        if let Some(dir) = dst.parent() {
            fs::create_dir_all(dir).map_err(Cause::io(dir))?;
        }
        fs::write(&dst, contents).map_err(Cause::io(&dst))?;
    }
    for step in recipe.post {
        progress(&step.join(" "));
        chroot(&rootfs, step)?;
    }
    drop(proc);
    progress("cleaning package caches");
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let p = rootfs.join(d);
        if let Ok(rd) = fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    let complete = version.join("complete");
    fs::write(&complete, recipe.stamp()).map_err(Cause::io(&complete))?;
    // Publish atomically: a new symlink renamed over the old one.
    let tmp_link = dir.join(".rootfs.tmp");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(format!("{stamp}/rootfs"), &tmp_link)
        .map_err(Cause::io(&tmp_link))?;
    fs::rename(&tmp_link, &link).map_err(Cause::io(&link))?;
    progress(&format!("template {} ready ({stamp})", recipe.name));
    Ok(Outcome::Built { rootfs: link })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_resolve_and_stamps_track_content() {
        assert_eq!(recipe("base").unwrap().name, "base");
        assert_eq!(recipe("default").unwrap().name, "base");
        assert!(recipe("nope").is_none());
        let mut changed = BASE.clone();
        changed.packages = &["bash"];
        assert_ne!(BASE.stamp(), changed.stamp());
        assert_eq!(BASE.stamp(), BASE.clone().stamp());
        let code = recipe("code-interpreter").unwrap();
        assert_eq!(code.name, "code-interpreter-v1");
        assert!(code.pip.iter().any(|p| p.starts_with("ipykernel==")));
        let mut no_post = code.clone();
        no_post.post = &[];
        assert_ne!(code.stamp(), no_post.stamp());
        let mut no_npm = code.clone();
        no_npm.npm = &[];
        assert_ne!(code.stamp(), no_npm.stamp());
    }

    #[test]
    fn the_code_interpreter_builds_on_base() {
        for p in BASE.packages {
            assert!(
                CODE_INTERPRETER.packages.contains(p),
                "{p} of base is missing in {}",
                CODE_INTERPRETER.name
            );
        }
    }

    #[test]
    fn python_packages_that_change_behaviour_are_pinned() {
        // Code written for E2B's template (e.g. matplotlib's `boxplot(labels=…)`, gone in
        // later versions) must behave the same here.
        for name in [
            "ipykernel",
            "ipython",
            "numpy",
            "pandas",
            "matplotlib",
            "pillow",
        ] {
            assert!(
                CODE_INTERPRETER
                    .pip
                    .iter()
                    .any(|p| p.strip_prefix(name).is_some_and(|v| v.starts_with("=="))),
                "{name} is not pinned in {:?}",
                CODE_INTERPRETER.pip
            );
        }
    }

    #[test]
    fn finds_the_hosts_mirror() {
        // Every supported host has apt sources naming a Debian mirror.
        let m = detect_mirror().expect("a Debian mirror in /etc/apt");
        assert!(m.contains("://"), "{m}");
    }
}

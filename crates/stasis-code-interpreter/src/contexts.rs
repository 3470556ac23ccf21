//! Contexts: a kernel per context, one default context per language, executions
//! serialized per context.
//!
//! A context's kernel sits behind an async mutex: an execution holds it from its first
//! message to the kernel until the kernel is idle again, so executions of one context
//! run one after another while different contexts run in parallel. A kernel found dead
//! is started again (fresh state) by the next execution.
//!
//! As in E2B, the default python and javascript contexts exist from the start
//! ([`Contexts::start_defaults`]): they are listed at once, and their kernels boot in
//! the background holding the context's lock, so a first execution waits for its kernel
//! instead of failing. Contexts are listed in the order they were created.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, Mutex, OwnedMutexGuard};

use crate::kernel::{Finished, Kernel, KernelError, KernelSpec, Launch, RunAs, Sink};
use crate::wire::{normalize_language, valid_env_name, ContextInfo, Line};

/// Why a context operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("Context {0} not found")]
    NotFound(String),
    #[error(
        "no kernel for language '{language}' is installed in this sandbox (available: {available})"
    )]
    NoKernel { language: String, available: String },
    #[error("invalid environment variable name {0:?}")]
    BadEnvName(String),
    #[error("language '{0}' does not support environment variables")]
    NoEnvSupport(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Settings shared by every kernel.
#[derive(Debug, Clone)]
pub struct KernelDefaults {
    pub specs: Vec<KernelSpec>,
    pub user: Option<RunAs>,
    pub default_cwd: PathBuf,
    pub runtime_dir: PathBuf,
}

struct Slot {
    kernel: Option<Kernel>,
    /// The sandbox-wide variables the kernel has (at start or injected since).
    env: BTreeMap<String, String>,
}

/// One context.
pub struct Context {
    pub info: ContextInfo,
    spec: KernelSpec,
    slot: Arc<Mutex<Slot>>,
}

/// All contexts of the sandbox.
pub struct Contexts {
    defaults: KernelDefaults,
    /// In creation order.
    list: RwLock<Vec<Arc<Context>>>,
    /// language → id of its default context; the lock also serializes their creation.
    default_ids: Mutex<HashMap<String, String>>,
}

/// The code that sets (and unsets) environment variables in a kernel of `language`.
pub fn env_code(
    language: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
) -> Option<String> {
    if set.is_empty() && unset.is_empty() {
        return Some(String::new());
    }
    match language {
        "python" => {
            let mut code = String::new();
            if !set.is_empty() {
                // a JSON object of strings is a valid Python dict literal
                let lit = serde_json::to_string(set).expect("strings serialize");
                code.push_str(&format!("__import__('os').environ.update({lit})\n"));
            }
            if !unset.is_empty() {
                let lit = serde_json::to_string(unset).expect("strings serialize");
                code.push_str(&format!(
                    "[__import__('os').environ.pop(_k, None) for _k in {lit}]\n"
                ));
            }
            Some(code)
        }
        "javascript" | "typescript" => {
            let mut code = String::new();
            if !set.is_empty() {
                let lit = serde_json::to_string(set).expect("strings serialize");
                code.push_str(&format!("Object.assign(process.env, {lit});\n"));
            }
            for k in unset {
                let lit = serde_json::to_string(k).expect("strings serialize");
                code.push_str(&format!("delete process.env[{lit}];\n"));
            }
            Some(code)
        }
        "r" => {
            let mut code = String::new();
            for (k, v) in set {
                // backquoted: a name may start with `_`, which R names may not
                code.push_str(&format!("Sys.setenv(`{k}` = {})\n", r_string(v)));
            }
            for k in unset {
                code.push_str(&format!("Sys.unsetenv({})\n", r_string(k)));
            }
            // Keep the last line's value (TRUE) from being printed.
            code.push_str("invisible(NULL)\n");
            Some(code)
        }
        "bash" => {
            let mut code = String::new();
            for (k, v) in set {
                code.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
            }
            for k in unset {
                code.push_str(&format!("unset {k}\n"));
            }
            Some(code)
        }
        _ => None,
    }
}

/// `s` as an R string literal (JSON's escapes are R's too).
fn r_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Default contexts whose kernels are still to be started ([`Contexts::boot`]).
pub struct Booting {
    contexts: Vec<(Arc<Context>, OwnedMutexGuard<Slot>)>,
    env: BTreeMap<String, String>,
}

/// The languages whose default contexts exist from the start, in this order.
pub const BOOT_LANGUAGES: &[&str] = &["python", "javascript"];

impl Contexts {
    pub fn new(defaults: KernelDefaults) -> Self {
        Self {
            defaults,
            list: RwLock::new(Vec::new()),
            default_ids: Mutex::new(HashMap::new()),
        }
    }

    /// The language names with an installed kernel.
    pub fn languages(&self) -> Vec<String> {
        self.defaults
            .specs
            .iter()
            .map(|k| k.language.clone())
            .collect()
    }

    fn spec_for(&self, language: &str) -> Result<KernelSpec, ContextError> {
        self.defaults
            .specs
            .iter()
            .find(|k| k.language == language || k.name == language)
            .cloned()
            .ok_or_else(|| ContextError::NoKernel {
                language: language.to_owned(),
                available: self.languages().join(", "),
            })
    }

    fn launch(&self, spec: &KernelSpec, cwd: &str, env: &BTreeMap<String, String>) -> Launch {
        Launch {
            spec: spec.clone(),
            cwd: PathBuf::from(cwd),
            env: env.clone(),
            user: self.defaults.user.clone(),
            runtime_dir: self.defaults.runtime_dir.clone(),
        }
    }

    /// A new context of `language` in `cwd` (default: the configured one), listed at
    /// once, with no kernel yet.
    fn register(
        &self,
        language: Option<&str>,
        cwd: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<Context>, ContextError> {
        let language = normalize_language(language);
        let spec = self.spec_for(&language)?;
        let cwd = cwd
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| self.defaults.default_cwd.display().to_string());
        let ctx = Arc::new(Context {
            info: ContextInfo {
                id: uuid::Uuid::new_v4().to_string(),
                language,
                cwd,
            },
            spec,
            slot: Arc::new(Mutex::new(Slot {
                kernel: None,
                env: env.clone(),
            })),
        });
        self.list
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(ctx.clone());
        tracing::info!(context = %ctx.info.id, language = %ctx.info.language, "context created");
        Ok(ctx)
    }

    fn unlist(&self, id: &str) -> Option<Arc<Context>> {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let i = list.iter().position(|c| c.info.id == id)?;
        Some(list.remove(i))
    }

    /// Creates a context with a started kernel; a kernel that cannot start leaves no
    /// context behind.
    pub async fn create(
        &self,
        language: Option<&str>,
        cwd: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<Context>, ContextError> {
        let ctx = self.register(language, cwd, env)?;
        let mut slot = ctx.slot.lock().await;
        match Kernel::start(self.launch(&ctx.spec, &ctx.info.cwd, env)).await {
            Ok(k) => slot.kernel = Some(k),
            Err(e) => {
                drop(slot);
                self.unlist(&ctx.info.id);
                return Err(e.into());
            }
        }
        drop(slot);
        Ok(ctx)
    }

    /// Creates the default contexts of [`BOOT_LANGUAGES`] that have a kernel, in that
    /// order, each locked until [`Contexts::boot`] has started its kernel. Returns once
    /// they are listed.
    pub async fn register_defaults(&self, env: &BTreeMap<String, String>) -> Booting {
        let mut ids = self.default_ids.lock().await;
        let mut contexts = Vec::new();
        for &language in BOOT_LANGUAGES {
            if ids.contains_key(language) || self.spec_for(language).is_err() {
                continue;
            }
            let Ok(ctx) = self.register(Some(language), None, env) else {
                continue;
            };
            ids.insert(language.to_owned(), ctx.info.id.clone());
            // Taken now, before anyone can queue an execution on the context.
            let slot = ctx.slot.clone().lock_owned().await;
            contexts.push((ctx, slot));
        }
        Booting {
            contexts,
            env: env.clone(),
        }
    }

    /// Starts the kernels of registered default contexts, one after the other (the
    /// first is the one most likely needed first). A kernel that cannot start is tried
    /// again by the context's first execution, which reports the error.
    pub async fn boot(&self, booting: Booting) {
        for (ctx, mut slot) in booting.contexts {
            match Kernel::start(self.launch(&ctx.spec, &ctx.info.cwd, &booting.env)).await {
                Ok(k) => slot.kernel = Some(k),
                Err(e) => {
                    tracing::warn!(context = %ctx.info.id, error = %e, "cannot start a default kernel")
                }
            }
        }
    }

    /// The default context of `language`, created on first use.
    pub async fn default_for(
        &self,
        language: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Arc<Context>, ContextError> {
        let language = normalize_language(language);
        let mut ids = self.default_ids.lock().await;
        if let Some(ctx) = ids.get(&language).and_then(|id| self.get(id).ok()) {
            return Ok(ctx);
        }
        let ctx = self.create(Some(&language), None, env).await?;
        ids.insert(language, ctx.info.id.clone());
        Ok(ctx)
    }

    pub fn get(&self, id: &str) -> Result<Arc<Context>, ContextError> {
        self.list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|c| c.info.id == id)
            .cloned()
            .ok_or_else(|| ContextError::NotFound(id.to_owned()))
    }

    /// Every context, in creation order.
    pub fn list(&self) -> Vec<ContextInfo> {
        self.list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.info.clone())
            .collect()
    }

    /// Removes a context; its kernel is killed once a running execution lets go.
    pub async fn remove(&self, id: &str) -> Result<(), ContextError> {
        let ctx = self
            .unlist(id)
            .ok_or_else(|| ContextError::NotFound(id.to_owned()))?;
        let mut slot = ctx.slot.lock().await;
        slot.kernel = None;
        tracing::info!(context = %id, "context removed");
        Ok(())
    }

    /// Replaces the context's kernel with a fresh one (state cleared, same id).
    pub async fn restart(
        &self,
        id: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ContextError> {
        let ctx = self.get(id)?;
        let mut slot = ctx.slot.lock().await;
        if let Some(k) = slot.kernel.as_mut() {
            k.interrupt().await;
        }
        slot.kernel = None;
        let kernel = Kernel::start(self.launch(&ctx.spec, &ctx.info.cwd, env)).await?;
        slot.kernel = Some(kernel);
        slot.env = env.clone();
        tracing::info!(context = %id, "context restarted");
        Ok(())
    }

    /// Checks per-request variables before the stream starts.
    pub fn check_env(ctx: &Context, vars: &BTreeMap<String, String>) -> Result<(), ContextError> {
        if let Some(k) = vars.keys().find(|k| !valid_env_name(k)) {
            return Err(ContextError::BadEnvName(k.clone()));
        }
        if !vars.is_empty() && env_code(&ctx.info.language, vars, &[]).is_none() {
            return Err(ContextError::NoEnvSupport(ctx.info.language.clone()));
        }
        Ok(())
    }

    /// Runs one execution to its end, streaming lines into `tx`, and finishes the
    /// stream with `end_of_execution`.
    pub async fn run(
        &self,
        ctx: Arc<Context>,
        code: String,
        request_env: BTreeMap<String, String>,
        sandbox_env: BTreeMap<String, String>,
        tx: mpsc::Sender<Line>,
    ) {
        let mut slot = ctx.slot.clone().lock_owned().await;
        if let Err(e) = self
            .run_locked(&ctx, &mut slot, &code, &request_env, &sandbox_env, &tx)
            .await
        {
            tracing::warn!(context = %ctx.info.id, error = %e, "execution failed");
            let (name, value) = match &e {
                ContextError::Kernel(KernelError::Died { .. }) => ("KernelDied", e.to_string()),
                _ => ("KernelError", e.to_string()),
            };
            let _ = tx
                .send(Line::Error {
                    name: name.into(),
                    value,
                    traceback: String::new(),
                })
                .await;
        }
        let _ = tx.send(Line::EndOfExecution).await;
    }

    async fn run_locked(
        &self,
        ctx: &Context,
        slot: &mut Slot,
        code: &str,
        request_env: &BTreeMap<String, String>,
        sandbox_env: &BTreeMap<String, String>,
        tx: &mpsc::Sender<Line>,
    ) -> Result<Finished, ContextError> {
        let lang = ctx.info.language.as_str();
        if slot.kernel.as_ref().is_none_or(Kernel::is_dead) {
            slot.kernel = None;
            let k = Kernel::start(self.launch(&ctx.spec, &ctx.info.cwd, sandbox_env)).await?;
            slot.kernel = Some(k);
            slot.env = sandbox_env.clone();
        }
        let kernel = slot.kernel.as_mut().expect("started above");
        // Sandbox-wide variables that changed since the kernel last saw them.
        if &slot.env != sandbox_env {
            let set: BTreeMap<_, _> = sandbox_env
                .iter()
                .filter(|(k, v)| valid_env_name(k) && slot.env.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let unset: Vec<String> = slot
                .env
                .keys()
                .filter(|k| !sandbox_env.contains_key(*k))
                .cloned()
                .collect();
            if let Some(c) = env_code(lang, &set, &unset).filter(|c| !c.is_empty()) {
                kernel.execute(&c, true, Sink::Discard).await?;
            }
            slot.env = sandbox_env.clone();
        }
        let set_code = env_code(lang, request_env, &[]).unwrap_or_default();
        if !set_code.is_empty() {
            kernel.execute(&set_code, true, Sink::Discard).await?;
        }
        let result = kernel.execute(code, false, Sink::Client(tx)).await;
        if !request_env.is_empty() {
            // back to the sandbox's values
            let restore: BTreeMap<_, _> = request_env
                .keys()
                .filter_map(|k| Some((k.clone(), slot.env.get(k)?.clone())))
                .collect();
            let unset: Vec<String> = request_env
                .keys()
                .filter(|k| !slot.env.contains_key(*k))
                .cloned()
                .collect();
            if let Some(c) = env_code(lang, &restore, &unset).filter(|c| !c.is_empty()) {
                if let Some(k) = slot.kernel.as_mut() {
                    let _ = k.execute(&c, true, Sink::Discard).await;
                }
            }
        }
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn python_env_code_is_a_literal_update() {
        let c = env_code("python", &m(&[("A", "x'\"\\\n")]), &["B".into()]).unwrap();
        assert_eq!(
            c,
            "__import__('os').environ.update({\"A\":\"x'\\\"\\\\\\n\"})\n[__import__('os').environ.pop(_k, None) for _k in [\"B\"]]\n"
        );
    }

    #[test]
    fn bash_env_code_quotes_values() {
        let c = env_code("bash", &m(&[("A", "it's")]), &["B".into()]).unwrap();
        assert_eq!(c, "export A='it'\\''s'\nunset B\n");
    }

    #[test]
    fn javascript_env_code_assigns_literals() {
        let c = env_code("typescript", &m(&[("A", "x'\"")]), &["B".into()]).unwrap();
        assert_eq!(
            c,
            "Object.assign(process.env, {\"A\":\"x'\\\"\"});\ndelete process.env[\"B\"];\n"
        );
    }

    #[test]
    fn r_env_code_sets_quietly() {
        let c = env_code("r", &m(&[("A", "a\"b")]), &["B".into()]).unwrap();
        assert_eq!(
            c,
            "Sys.setenv(`A` = \"a\\\"b\")\nSys.unsetenv(\"B\")\ninvisible(NULL)\n"
        );
    }

    #[test]
    fn other_languages_have_no_env_code() {
        assert!(env_code("java", &m(&[("A", "1")]), &[]).is_none());
        assert_eq!(env_code("java", &BTreeMap::new(), &[]).as_deref(), Some(""));
    }

    /// Contexts whose kernelspecs name a program that does not exist: every kernel
    /// start fails, nothing else does.
    fn unstartable(languages: &[&str]) -> Contexts {
        let specs = languages
            .iter()
            .map(|l| {
                crate::kernel::parse_kernelspec(
                    l,
                    &format!(
                        r#"{{"argv":["/nonexistent/kernel","{{connection_file}}"],"language":"{l}"}}"#
                    ),
                )
                .unwrap()
            })
            .collect();
        // A failed start removes its connection file: nothing is left in the temp dir.
        Contexts::new(KernelDefaults {
            specs,
            user: None,
            default_cwd: "/".into(),
            runtime_dir: std::env::temp_dir(),
        })
    }

    #[tokio::test]
    async fn default_contexts_are_listed_before_their_kernels_boot() {
        let c = unstartable(&["bash", "javascript", "python"]);
        let booting = c.register_defaults(&BTreeMap::new()).await;
        let listed: Vec<String> = c.list().into_iter().map(|i| i.language).collect();
        assert_eq!(listed, ["python", "javascript"]);
        // Registering again adds nothing.
        let again = c.register_defaults(&BTreeMap::new()).await;
        assert!(again.contexts.is_empty());
        assert_eq!(c.list().len(), 2);
        // A kernel that cannot boot leaves the context in place, for a later try.
        c.boot(booting).await;
        assert_eq!(c.list().len(), 2);
        let python = c
            .default_for(Some("python"), &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(python.info.id, c.list()[0].id);
    }

    #[tokio::test]
    async fn contexts_are_listed_in_creation_order_and_a_failed_create_leaves_none() {
        let c = unstartable(&["python"]);
        for _ in 0..3 {
            c.register(Some("python"), None, &BTreeMap::new()).unwrap();
        }
        let before = c.list();
        let e = c
            .create(Some("python"), Some("/tmp"), &BTreeMap::new())
            .await;
        assert!(
            matches!(e, Err(ContextError::Kernel(KernelError::Spawn { .. }))),
            "{:?}",
            e.err()
        );
        assert_eq!(c.list(), before);
        let last = c.unlist(&before[1].id).unwrap();
        assert_eq!(last.info.id, before[1].id);
        let ids: Vec<String> = c.list().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, [before[0].id.clone(), before[2].id.clone()]);
    }

    #[test]
    fn missing_kernels_name_what_is_installed() {
        let c = Contexts::new(KernelDefaults {
            specs: vec![crate::kernel::parse_kernelspec(
                "python3",
                r#"{"argv":["python","{connection_file}"],"language":"python"}"#,
            )
            .unwrap()],
            user: None,
            default_cwd: "/".into(),
            runtime_dir: "/tmp".into(),
        });
        assert!(c.spec_for("python").is_ok());
        assert!(c.spec_for("python3").is_ok());
        let e = c.spec_for("javascript").unwrap_err().to_string();
        assert_eq!(
            e,
            "no kernel for language 'javascript' is installed in this sandbox (available: python)"
        );
    }
}

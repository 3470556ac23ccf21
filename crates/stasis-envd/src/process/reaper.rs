//! The reaper: the only code that calls `waitpid`.
//!
//! As PID 1 it reaps every child, orphans included, with `waitpid(-1, WNOHANG)`;
//! otherwise it waits only for the pids it spawned, so it cannot steal the exit status
//! of a child some other code in the process owns (tests run the agent in-process).
//! Spawning happens under the same lock as reaping, so a child that exits at once is
//! never reaped before its pid is registered, and std's own wait after a failed `exec`
//! never races the reaper.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::exit::Exit;

/// Which children to reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// Every child, orphans included (`waitpid(-1)`): the mode for PID 1.
    All,
    /// Only children spawned through the reaper.
    Own,
}

/// Registered children and who waits for them.
#[derive(Debug)]
pub struct Reaper {
    mode: ReapMode,
    waiters: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
}

impl Reaper {
    /// A reaper in `mode`.
    pub fn new(mode: ReapMode) -> Arc<Self> {
        Arc::new(Self {
            mode,
            waiters: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<Exit>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `spawn` with reaping held off, registers the pid it returns, and hands back
    /// the receiver of its exit.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid_of: impl Fn(&T) -> u32,
    ) -> std::io::Result<(T, oneshot::Receiver<Exit>)> {
        let mut waiters = self.lock();
        let child = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid_of(&child) as i32, tx);
        Ok((child, rx))
    }

    /// Collects every exit that is ready and notifies the waiters.
    pub fn reap(&self) {
        let mut waiters = self.lock();
        match self.mode {
            ReapMode::All => loop {
                match rustix::process::wait(WaitOptions::NOHANG) {
                    Ok(Some((pid, status))) => {
                        let pid = pid.as_raw_nonzero().get();
                        let exit = Exit::from_raw(status.as_raw() as i32);
                        match waiters.remove(&pid) {
                            Some(tx) => {
                                let _ = tx.send(exit);
                            }
                            None => tracing::debug!(pid, ?exit, "reaped orphan"),
                        }
                    }
                    Ok(None) | Err(Errno::CHILD) => break,
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "waitpid(-1) failed");
                        break;
                    }
                }
            },
            ReapMode::Own => {
                let pids: Vec<i32> = waiters.keys().copied().collect();
                for pid in pids {
                    let Some(p) = Pid::from_raw(pid) else {
                        continue;
                    };
                    match rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
                        Ok(Some(status)) => {
                            if let Some(tx) = waiters.remove(&pid) {
                                let _ = tx.send(Exit::from_raw(status.as_raw() as i32));
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(pid, error = %e, "waitpid failed, dropping child");
                            waiters.remove(&pid);
                        }
                    }
                }
            }
        }
    }

    /// Reaps on every SIGCHLD, with a slow poll as a safety net (signals coalesce, and a
    /// handler shared by several runtimes in one test process may wake another one).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut sigchld = match signal(SignalKind::child()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGCHLD, polling only");
                None
            }
        };
        loop {
            self.reap();
            tokio::select! {
                _ = async {
                    match sigchld.as_mut() {
                        Some(s) => { s.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => {
                    self.reap();
                    return;
                }
            }
        }
    }
}

//! Directory watchers on inotify (checkpointable by CRIU, driven by tokio's epoll).
//!
//! One task per watcher reads inotify events and turns them into `FilesystemEvent`s
//! with names relative to the watched directory, the way fsnotify maps them:
//! create/moved-to → CREATE, modify → WRITE, delete → REMOVE, moved-from → RENAME,
//! attrib → CHMOD. A recursive watcher adds watches for directories as they appear.
//!
//! `WatchDir` streams events (with backpressure); `CreateWatcher` queues them in a
//! bounded buffer drained by `GetWatcherEvents` (overflow drops the newest events).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use stasis_envd_proto::filesystem::{EventType, FilesystemEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{entry_info, FsError};
use crate::users::IdNames;

/// Events queued per watcher.
const QUEUE: usize = 4096;

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// Absolute directory.
    pub root: PathBuf,
    /// Include subdirectories.
    pub recursive: bool,
    /// Attach entry info.
    pub include_entry: bool,
}

/// Starts watching; events arrive on the returned receiver until it is dropped or
/// `stop` is cancelled. With `lossy`, a full queue drops events instead of waiting.
pub fn start(
    spec: WatchSpec,
    names: IdNames,
    lossy: bool,
    stop: CancellationToken,
) -> Result<mpsc::Receiver<FilesystemEvent>, FsError> {
    let md = std::fs::metadata(&spec.root).map_err(|e| FsError::io("watch", &spec.root, e))?;
    if !md.is_dir() {
        return Err(FsError::NotADirectory(spec.root.clone()));
    }
    let inotify = Inotify::init().map_err(|e| FsError::io("watch", &spec.root, e))?;
    let mut watches = inotify.watches();
    let mut dirs: HashMap<WatchDescriptor, PathBuf> = HashMap::new();
    add_tree(
        &mut watches,
        &mut dirs,
        &spec.root,
        Path::new(""),
        spec.recursive,
    )
    .map_err(|e| FsError::io("watch", &spec.root, e))?;
    let stream = inotify
        .into_event_stream(vec![0u8; 64 * 1024])
        .map_err(|e| FsError::io("watch", &spec.root, e))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(spec, names, lossy, stop, stream, watches, dirs, tx));
    Ok(rx)
}

fn add_tree(
    watches: &mut Watches,
    dirs: &mut HashMap<WatchDescriptor, PathBuf>,
    abs: &Path,
    rel: &Path,
    recursive: bool,
) -> std::io::Result<()> {
    let wd = watches.add(abs, mask())?;
    dirs.insert(wd, rel.to_path_buf());
    if recursive {
        for e in std::fs::read_dir(abs)?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                // a subdirectory vanishing meanwhile is not an error
                let _ = add_tree(watches, dirs, &e.path(), &rel.join(e.file_name()), true);
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    spec: WatchSpec,
    names: IdNames,
    lossy: bool,
    stop: CancellationToken,
    mut stream: inotify::EventStream<Vec<u8>>,
    mut watches: Watches,
    mut dirs: HashMap<WatchDescriptor, PathBuf>,
    tx: mpsc::Sender<FilesystemEvent>,
) {
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = tx.closed() => return,
            _ = stop.cancelled() => return,
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::warn!(root = %spec.root.display(), error = %e, "inotify read failed");
                return;
            }
            None => return,
        };
        if ev.mask.contains(EventMask::IGNORED) {
            dirs.remove(&ev.wd);
            continue;
        }
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!(root = %spec.root.display(), "inotify queue overflow, events lost");
            continue;
        }
        let Some(dir_rel) = dirs.get(&ev.wd).cloned() else {
            continue;
        };
        let name: Option<OsString> = ev.name;
        let rel = match &name {
            Some(n) => dir_rel.join(n),
            None => dir_rel.clone(),
        };
        if name.is_none() && !rel.as_os_str().is_empty() {
            continue; // *_SELF of a subdirectory: its parent reports it
        }
        let event_type = if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            EventType::Create
        } else if ev.mask.contains(EventMask::MODIFY) {
            EventType::Write
        } else if ev
            .mask
            .intersects(EventMask::DELETE | EventMask::DELETE_SELF)
        {
            EventType::Remove
        } else if ev.mask.contains(EventMask::MOVED_FROM) {
            EventType::Rename
        } else if ev.mask.contains(EventMask::ATTRIB) {
            EventType::Chmod
        } else {
            continue;
        };
        let abs = spec.root.join(&rel);
        if spec.recursive && event_type == EventType::Create && ev.mask.contains(EventMask::ISDIR) {
            let _ = add_tree(&mut watches, &mut dirs, &abs, &rel, true);
        }
        let entry =
            if spec.include_entry && !matches!(event_type, EventType::Remove | EventType::Rename) {
                entry_info(&abs, &names).ok()
            } else {
                None
            };
        let event = FilesystemEvent {
            name: rel.to_string_lossy().into_owned(),
            event_type,
            entry,
        };
        if lossy {
            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(event) {
                return;
            }
        } else if tx.send(event).await.is_err() {
            return;
        }
    }
}

struct Registered {
    rx: Mutex<mpsc::Receiver<FilesystemEvent>>,
    stop: CancellationToken,
}

/// Watchers created by `CreateWatcher`, by id.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    watchers: Mutex<HashMap<String, Arc<Registered>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Registered>>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a running watcher; `None` when `limit` watchers already exist.
    pub fn insert(
        &self,
        rx: mpsc::Receiver<FilesystemEvent>,
        stop: CancellationToken,
        limit: usize,
    ) -> Option<String> {
        let mut map = self.map();
        if map.len() >= limit {
            stop.cancel();
            return None;
        }
        let id = format!("w{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        map.insert(
            id.clone(),
            Arc::new(Registered {
                rx: Mutex::new(rx),
                stop,
            }),
        );
        Some(id)
    }

    /// Drains queued events; `None` for an unknown id.
    pub fn drain(&self, id: &str) -> Option<Vec<FilesystemEvent>> {
        let w = self.map().get(id).cloned()?;
        let mut rx = w.rx.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push(ev);
        }
        Some(out)
    }

    /// Stops and forgets a watcher; `false` for an unknown id.
    pub fn remove(&self, id: &str) -> bool {
        match self.map().remove(id) {
            Some(w) => {
                w.stop.cancel();
                true
            }
            None => false,
        }
    }
}

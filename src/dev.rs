//! Dev mode's eye on the confdir: saves under conf.d/ and templates/ become
//! events for the run loop (data files are watched by the file backend).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// What a save in the confdir calls for.
#[derive(Debug)]
pub(crate) enum DevEvent {
    /// A conf.d file was added, changed or removed: re-read resources.
    Resources,
    /// These template files changed: re-parse and re-render their resources.
    Templates(Vec<PathBuf>),
}

/// Watches the confdir; dropping it stops the watch.
pub(crate) struct DevWatcher {
    _watcher: RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<PathBuf>,
    confd: PathBuf,
    templates: PathBuf,
    /// Paths of a save still settling, kept here so that `next` is
    /// cancel-safe inside `select!`: a dropped call loses nothing.
    pending: Vec<PathBuf>,
    settle_until: Option<tokio::time::Instant>,
}

/// How long to wait for the rest of an editor's save (temp file, rename, chmod).
const SETTLE: Duration = Duration::from_millis(25);

impl DevWatcher {
    /// Starts watching `confdir` recursively.
    pub fn new(confdir: &Path) -> anyhow::Result<DevWatcher> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else { return };
                if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
                    return;
                }
                for path in event.paths {
                    // The receiver is gone only when the watcher is being dropped.
                    let _ = tx.send(path);
                }
            })?;
        watcher
            .watch(confdir, RecursiveMode::Recursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", confdir.display()))?;
        Ok(DevWatcher {
            _watcher: watcher,
            rx,
            confd: confdir.join("conf.d"),
            templates: confdir.join("templates"),
            pending: Vec::new(),
            settle_until: None,
        })
    }

    /// The next relevant change, after the save settled; `None` if the watch died.
    /// Cancel-safe: state between awaits lives in `self`.
    pub async fn next(&mut self) -> Option<DevEvent> {
        loop {
            let deadline = match self.settle_until {
                Some(d) => d,
                None => {
                    let first = self.rx.recv().await?;
                    self.pending.push(first);
                    let d = tokio::time::Instant::now() + SETTLE;
                    self.settle_until = Some(d);
                    d
                }
            };
            while let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
                self.pending.push(p);
            }
            self.settle_until = None;
            let mut paths = std::mem::take(&mut self.pending);
            paths.sort();
            paths.dedup();
            let hidden_or_backup = |p: &PathBuf| {
                p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
                    n.starts_with('.') || n.ends_with('~') || n.ends_with(".swp") || n == "4913"
                })
            };
            if paths
                .iter()
                .any(|p| p.starts_with(&self.confd) && p.extension().is_some_and(|x| x == "toml"))
            {
                return Some(DevEvent::Resources);
            }
            let templates: Vec<PathBuf> = paths
                .into_iter()
                .filter(|p| p.starts_with(&self.templates) && !hidden_or_backup(p))
                .collect();
            if !templates.is_empty() {
                return Some(DevEvent::Templates(templates));
            }
        }
    }
}

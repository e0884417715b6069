//! The watch stream: `notify` watches on the directories holding the files,
//! bursts of events coalesced, everything re-read and compared with what was last
//! sent.
//!
//! Directories rather than files are watched because editors often save by
//! writing a new file and renaming it over the old one: a watch on the old file
//! would follow the old inode and go quiet. A directory that disappears (or
//! cannot be watched yet) is retried on every change and, meanwhile, once a
//! second, so the stream heals without a restart.
//!
//! Like every backend's watch it is a [`Machine`] run by
//! [`sidekick_backend::drive`]: the driver decides what to tell the core about
//! a bad save (once per distinct error) and how long to wait after one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sidekick_backend::{
    drive, BackendError, Backoff, Interest, Label, Machine, Names, Snapshot, Step, Update,
    UpdateStream,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::read::{self, is_data_file_name};
use crate::{Config, SourceKind, NAME};

/// Longest to wait for a write in progress to end (the file closed, or another
/// renamed into place) before reading anyway. A save that ends is read at once;
/// a file is never read between its truncation and the write that follows.
const MAX_WRITE: Duration = Duration::from_millis(50);

/// How often to re-read while some directory cannot be watched (it does not
/// exist yet, or the watcher could not be created at all).
const POLL: Duration = Duration::from_secs(1);

/// What the notify callback passes to the stream.
#[derive(Debug)]
enum Signal {
    /// Something happened to these paths. `done` when it ends a save: the file
    /// was closed after writing or renamed into place, so it can be read now.
    Paths { paths: Vec<PathBuf>, done: bool },
    /// Events may have been lost (queue overflow, watcher error): re-read.
    Rescan,
}

/// What an event means for the files we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relevance {
    /// Not about our files.
    None,
    /// Our files are being written: read once the write ends.
    Pending,
    /// A save of ours is complete: read now.
    Done,
}

/// A directory we keep a watch on.
#[derive(Debug)]
struct WatchedDir {
    /// Absolute path, as watched.
    path: PathBuf,
    /// Its canonical path when last watched; some platforms (macOS) report
    /// events under it rather than under the path watched.
    canonical: Option<PathBuf>,
    /// Whether the watch is believed to be in place.
    active: bool,
}

impl WatchedDir {
    fn is(&self, path: &Path) -> bool {
        path == self.path || self.canonical.as_deref() == Some(path)
    }

    fn is_parent_of(&self, path: &Path) -> bool {
        path.parent().is_some_and(|p| self.is(p))
    }
}

/// A path pattern whose events mean the data may have changed.
#[derive(Debug)]
enum Target {
    /// The file `name` in `dirs[dir]`.
    File { dir: usize, name: OsString },
    /// Any data file directly in `dirs[dir]`.
    DirContents { dir: usize },
}

/// Where the watch is: about to read, or waiting for the next save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Waiting,
}

/// Everything the stream owns. Dropping it drops the watcher (which stops its
/// thread and the callback's sender) and the receiver.
struct FileWatch {
    config: Arc<Config>,
    interest: Interest,
    watcher: Option<RecommendedWatcher>,
    rx: mpsc::UnboundedReceiver<Signal>,
    /// True once the channel reported closed (no watcher): poll instead.
    closed: bool,
    dirs: Vec<WatchedDir>,
    targets: Vec<Target>,
    /// An error to report before anything else (watcher creation failed).
    pending: Option<BackendError>,
    phase: Phase,
    /// The last snapshot sent.
    last: Option<Snapshot>,
    /// Whether the last read failed: the next good one is sent even if it
    /// equals `last`, so the core sees the whole data again.
    failed: bool,
}

/// Starts watching: the watcher is running when this returns, so nothing saved
/// after it is missed; the stream's first item is the snapshot as of its first
/// poll.
pub(crate) fn stream(config: Arc<Config>, interest: Interest) -> UpdateStream {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |result: notify::Result<Event>| {
        let signal = match result {
            Ok(event) if event.need_rescan() => Signal::Rescan,
            Ok(event) => match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                    Signal::Paths {
                        paths: event.paths,
                        done: true,
                    }
                }
                // Opens and reads, our own included: nothing changed.
                EventKind::Access(_) => return,
                _ => Signal::Paths {
                    paths: event.paths,
                    done: false,
                },
            },
            Err(error) => {
                tracing::warn!(backend = NAME, %error, "file watch error; re-reading");
                Signal::Rescan
            }
        };
        // Fails only when the stream (and so the receiver) is gone.
        let _ = tx.send(signal);
    };
    let (watcher, pending) = match notify::recommended_watcher(handler) {
        Ok(watcher) => (Some(watcher), None),
        Err(error) => (
            None,
            Some(BackendError::Unavailable {
                backend: NAME,
                endpoint: "file watcher".to_string(),
                source: Box::new(error),
            }),
        ),
    };
    let (dirs, targets) = plan(&config, interest.services);
    let mut machine = FileWatch {
        config,
        interest,
        watcher,
        rx,
        closed: false,
        dirs,
        targets,
        pending,
        phase: Phase::Reading,
        last: None,
        failed: false,
    };
    machine.sync_watches();
    let endpoint = machine
        .dirs
        .iter()
        .map(|d| d.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // No wait after a bad save: the next step waits for the next save anyway.
    let backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
    drive(machine, backoff, Label::new(NAME, endpoint))
}

/// The directories to watch and the paths within them that matter.
fn plan(config: &Config, services: bool) -> (Vec<WatchedDir>, Vec<Target>) {
    fn index(dirs: &mut Vec<WatchedDir>, path: &Path) -> usize {
        if let Some(i) = dirs.iter().position(|d| d.path == path) {
            return i;
        }
        dirs.push(WatchedDir {
            path: path.to_path_buf(),
            canonical: None,
            active: false,
        });
        dirs.len() - 1
    }
    fn file(dirs: &mut Vec<WatchedDir>, targets: &mut Vec<Target>, abs: &Path) {
        if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) {
            let dir = index(dirs, parent);
            targets.push(Target::File {
                dir,
                name: name.to_os_string(),
            });
        }
    }

    let mut dirs = Vec::new();
    let mut targets = Vec::new();
    for source in &config.data {
        match source.kind {
            SourceKind::File(_) => file(&mut dirs, &mut targets, &source.abs),
            SourceKind::Dir => {
                let dir = index(&mut dirs, &source.abs);
                targets.push(Target::DirContents { dir });
                // The parent too, to see the directory itself come back.
                if let Some(parent) = source.abs.parent() {
                    index(&mut dirs, parent);
                }
            }
        }
    }
    if services {
        if let Some(src) = &config.services {
            file(&mut dirs, &mut targets, &src.abs);
        }
    }
    (dirs, targets)
}

impl Machine for FileWatch {
    const NAMES: Names = Names::new("file watch", "data files");

    fn state(&self) -> &'static str {
        match self.phase {
            Phase::Reading => "reading",
            Phase::Waiting => "waiting",
        }
    }

    /// Reads (the first time at once, then after each relevant change) and
    /// yields the snapshot when it differs from the last one sent.
    async fn step(&mut self) -> Step {
        if let Some(error) = self.pending.take() {
            return Step::Failed(error);
        }
        match self.phase {
            Phase::Waiting => {
                self.wait_for_change().await;
                self.phase = Phase::Reading;
                Step::Pending
            }
            Phase::Reading => {
                self.phase = Phase::Waiting;
                self.sync_watches();
                match read::snapshot(Arc::clone(&self.config), self.interest.clone()).await {
                    Ok(snapshot) => {
                        let recovered = std::mem::take(&mut self.failed);
                        if recovered || self.last.as_ref() != Some(&snapshot) {
                            self.last = Some(snapshot.clone());
                            Step::Updates(vec![Update::Snapshot(snapshot)])
                        } else {
                            Step::Updates(Vec::new())
                        }
                    }
                    Err(error) => {
                        self.failed = true;
                        Step::Failed(error)
                    }
                }
            }
        }
    }
}

impl FileWatch {
    /// Whether some change has to be found by re-reading on a timer.
    fn must_poll(&self) -> bool {
        self.watcher.is_none() || self.closed || self.dirs.iter().any(|d| !d.active)
    }

    /// Returns once a relevant save is complete (a file closed after writing
    /// or renamed into place), or [`MAX_WRITE`] after the first sign of a write
    /// that has not ended, or after [`POLL`] when polling.
    async fn wait_for_change(&mut self) {
        loop {
            let signal = if self.closed {
                tokio::time::sleep(POLL).await;
                return;
            } else if self.must_poll() {
                match tokio::time::timeout(POLL, self.rx.recv()).await {
                    Ok(signal) => signal,
                    Err(_elapsed) => return,
                }
            } else {
                self.rx.recv().await
            };
            match signal {
                None => self.closed = true,
                Some(signal) => match self.relevant(signal) {
                    Relevance::Done => return self.drain(),
                    Relevance::Pending => break,
                    Relevance::None => {}
                },
            }
        }
        let deadline = Instant::now() + MAX_WRITE;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_elapsed) => return,
                Ok(None) => {
                    self.closed = true;
                    return;
                }
                Ok(Some(signal)) => {
                    if self.relevant(signal) == Relevance::Done {
                        return self.drain();
                    }
                }
            }
        }
    }

    /// Takes the events already queued (the rest of one save, such as the
    /// pair of a rename), so they do not cause a second read.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(signal) => {
                    self.relevant(signal);
                }
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Whether `signal` may change what we read; notes watched directories that
    /// were themselves removed or replaced, so they get watched again.
    fn relevant(&mut self, signal: Signal) -> Relevance {
        let (paths, done) = match signal {
            Signal::Rescan => return Relevance::Done,
            Signal::Paths { paths, done } => (paths, done),
        };
        let mut relevant = false;
        for path in &paths {
            for dir in self.dirs.iter_mut().filter(|d| d.is(path)) {
                dir.active = false;
                relevant = true;
            }
            relevant |= self.targets.iter().any(|target| match target {
                Target::File { dir, name } => {
                    path.file_name() == Some(name.as_os_str()) && self.dirs[*dir].is_parent_of(path)
                }
                Target::DirContents { dir } => {
                    self.dirs[*dir].is_parent_of(path)
                        && path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(is_data_file_name)
                }
            });
        }
        match (relevant, done) {
            (false, _) => Relevance::None,
            (true, true) => Relevance::Done,
            (true, false) => Relevance::Pending,
        }
    }

    /// (Re-)establishes the watch on every directory not known to be watched.
    /// A directory that does not exist yet stays inactive and is retried.
    fn sync_watches(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for dir in self.dirs.iter_mut().filter(|d| !d.active) {
            // Drop any stale watch first; usually there is none to drop.
            let _ = watcher.unwatch(&dir.path);
            match watcher.watch(&dir.path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    dir.active = true;
                    dir.canonical = std::fs::canonicalize(&dir.path).ok();
                }
                Err(error) => {
                    tracing::debug!(backend = NAME, dir = %dir.path.display(), %error, "cannot watch yet");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileBackend;
    use futures::StreamExt;
    use sidekick_backend::Backend;
    use std::fs;

    const WAIT: Duration = Duration::from_secs(3);
    const SILENCE: Duration = Duration::from_millis(300);

    fn interest(prefixes: &[&str], services: bool) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services,
        }
    }

    async fn next_item(stream: &mut UpdateStream) -> Result<Snapshot, BackendError> {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("timed out waiting for the watch stream")
            .expect("watch stream ended");
        item.map(|mut updates| {
            assert_eq!(updates.len(), 1);
            match updates.pop() {
                Some(Update::Snapshot(s)) => s,
                other => panic!("expected a snapshot, got {other:?}"),
            }
        })
    }

    async fn assert_silent(stream: &mut UpdateStream) {
        if let Ok(item) = tokio::time::timeout(SILENCE, stream.next()).await {
            panic!("expected no item, got {item:?}");
        }
    }

    /// Saves like an IDE: write a temporary file, rename it over the target.
    fn rename_save(path: &Path, text: &str) {
        let tmp = path.with_extension("yaml.tmp~");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn value(snapshot: &Snapshot, key: &str) -> Option<String> {
        snapshot.keys.get(key).map(str::to_string)
    }

    /// A temp dir holding the file `name` with `text`, and a watch of it
    /// under `prefixes`.
    fn watching(
        name: &str,
        text: &str,
        prefixes: &[&str],
    ) -> (tempfile::TempDir, PathBuf, UpdateStream) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        let backend = FileBackend::new([&path], None).unwrap();
        let stream = backend.watch(&interest(prefixes, false)).unwrap();
        (dir, path, stream)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sees_writes_rename_saves_and_recovers_from_broken_saves() {
        let (_dir, a, mut stream) = watching("a.yaml", "k: 1\n", &["/"]);

        let first = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&first, "/k").as_deref(), Some("1"));

        fs::write(&a, "k: 2\n").unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("2"));

        rename_save(&a, "k: 3\n");
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("3"));

        // Same data, different text: nothing to send.
        rename_save(&a, "# a comment\nk: 3\n");
        assert_silent(&mut stream).await;

        rename_save(&a, "k: [3\n");
        let err = next_item(&mut stream).await.unwrap_err();
        let BackendError::Invalid { location, .. } = &err else {
            panic!("not Invalid: {err}")
        };
        assert!(
            location.starts_with(&format!("{}:", a.display())),
            "{location}"
        );
        // The same broken content again is not reported twice.
        rename_save(&a, "k: [3\n");
        assert_silent(&mut stream).await;

        rename_save(&a, "k: 4\n");
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("4"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_in_progress_is_read_when_it_ends() {
        use std::io::Write;
        let (_dir, a, mut stream) = watching("a.yaml", "k: 1\nm: 1\n", &["/"]);
        next_item(&mut stream).await.unwrap();

        // Truncated, half written, a pause, the rest, closed: the half file
        // (valid YAML, one key short) must never be read.
        let writer = std::thread::spawn({
            let a = a.clone();
            move || {
                let mut f = fs::File::create(&a).unwrap();
                f.write_all(b"k: 2\n").unwrap();
                std::thread::sleep(Duration::from_millis(30));
                f.write_all(b"m: 2\n").unwrap();
            }
        });
        let s = next_item(&mut stream).await.unwrap();
        writer.join().unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("2"));
        assert_eq!(value(&s, "/m").as_deref(), Some("2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleted_and_recreated_file_keeps_working() {
        let (dir, a, mut stream) = watching("a.json", r#"{"k": 1}"#, &["/"]);
        next_item(&mut stream).await.unwrap();

        fs::remove_file(&a).unwrap();
        let err = next_item(&mut stream).await.unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");

        fs::write(&a, r#"{"k": 2}"#).unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("2"));

        // Vim without backupcopy: rename the original away, write anew.
        let backup = dir.path().join("a.json~");
        fs::rename(&a, &backup).unwrap();
        fs::write(&a, r#"{"k": 3}"#).unwrap();
        fs::remove_file(&backup).unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("3"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_directories_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("conf.d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a.yaml"), "a: 1\n").unwrap();
        let backend = FileBackend::new([&d], None).unwrap();
        let mut stream = backend.watch(&interest(&["/"], false)).unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(s.keys.len(), 1);

        fs::write(d.join("b.toml"), "b = 2\n").unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/b").as_deref(), Some("2"));

        fs::write(d.join("notes.txt"), "x").unwrap();
        fs::write(d.join(".a.yaml.swp"), "x").unwrap();
        fs::write(d.join("4913"), "").unwrap();
        fs::write(dir.path().join("sibling.yaml"), "s: 1\n").unwrap();
        assert_silent(&mut stream).await;

        fs::remove_file(d.join("b.toml")).unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(s.keys.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_changes_under_the_prefixes_are_sent() {
        let (_dir, a, mut stream) = watching("a.yaml", "app: {x: 1}\nother: 1\n", &["/app"]);
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(s.keys.len(), 1);

        rename_save(&a, "app: {x: 1}\nother: 2\n");
        assert_silent(&mut stream).await;

        rename_save(&a, "app: {x: 2}\nother: 2\n");
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/app/x").as_deref(), Some("2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catalog_changes_are_sent_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let s = dir.path().join("services.yaml");
        fs::write(&a, "k: v\n").unwrap();
        fs::write(&s, "web:\n  - address: 10.0.0.1\n    port: 80\n").unwrap();
        let backend = FileBackend::new([&a], Some(s.clone())).unwrap();
        let mut stream = backend.watch(&interest(&["/"], true)).unwrap();
        let first = next_item(&mut stream).await.unwrap();
        assert_eq!(first.catalog.unwrap().service("web", None, true).len(), 1);

        rename_save(
            &s,
            "web:\n  - address: 10.0.0.1\n    port: 80\n  - address: 10.0.0.2\n    port: 80\n",
        );
        let next = next_item(&mut stream).await.unwrap();
        assert_eq!(next.catalog.unwrap().service("web", None, true).len(), 2);
    }

    #[tokio::test]
    async fn current_thread_runtime_works_and_drop_stops() {
        let (_dir, a, mut stream) = watching("a.toml", "k = 1\n", &["/"]);
        next_item(&mut stream).await.unwrap();
        fs::write(&a, "k = 2\n").unwrap();
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("2"));
        drop(stream);
        // Nothing is left to notice this; it must simply not panic or hang.
        fs::write(&a, "k = 3\n").unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_directory_is_picked_up_when_created() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("later");
        let a = sub.join("a.yaml");
        let backend = FileBackend::new([&a], None).unwrap();
        let mut stream = backend.watch(&interest(&["/"], false)).unwrap();
        let err = next_item(&mut stream).await.unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        fs::create_dir(&sub).unwrap();
        fs::write(&a, "k: 1\n").unwrap();
        // Found by the once-a-second retry, then watched normally.
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("1"));
        rename_save(&a, "k: 2\n");
        let s = next_item(&mut stream).await.unwrap();
        assert_eq!(value(&s, "/k").as_deref(), Some("2"));
    }
}

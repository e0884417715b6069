//! The run loop: load resources, read the backend, render what changed, and
//! keep doing so by watching (or polling) until told to stop.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sidekick_backend::{
    Backend, BackendError, Backoff, Catalog, Interest, KeyTree, Snapshot, Update, UpdateStream,
};

use nix::sys::signal::Signal;

use crate::config::Settings;
use crate::debounce::Debouncer;
use crate::dev::{DevEvent, DevWatcher};
use crate::pipeline::{self, Outcome};
use crate::reload::{self, Target};
use crate::render::View;
use crate::resource::{resource_files, LoadContext, Resource, ResourceError};
use crate::shutdown::Shutdown;
use crate::supervise::{Event, Supervisor, EXIT_CANNOT_START};

/// How the loop reports to a person: plain logs, or dev mode's live output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Normal,
    Dev,
}

/// Counts of one pass over resources.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Report {
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// One loaded resource and what the guard against empty answers remembers.
struct Slot {
    resource: Resource,
    /// Keys the template could see at its last good render.
    last_keys: usize,
    /// When the executor was last told to reload for this resource.
    last_reload: Option<tokio::time::Instant>,
}

/// What the supervised child should get after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildAction {
    Signal(Signal),
    Restart(Signal),
}

/// Resources, the data they render from, and the backend it comes from.
pub(crate) struct Engine {
    settings: Settings,
    mode: Mode,
    backend: Arc<dyn Backend>,
    slots: Vec<Slot>,
    broken: Vec<ResourceError>,
    tree: Arc<KeyTree>,
    catalog: Option<Arc<Catalog>>,
    opts: pipeline::Options,
    /// Under `sidekick exec`: resources may signal or restart the child.
    exec: bool,
    child_actions: Vec<ChildAction>,
}

impl Engine {
    /// Reads conf.d and prepares the pipeline options.
    pub fn new(
        settings: Settings,
        backend: Arc<dyn Backend>,
        mode: Mode,
        exec: bool,
    ) -> anyhow::Result<Engine> {
        let color = crate::color_stdout();
        let opts = pipeline::Options {
            noop: settings.noop,
            diff: settings.diff || mode == Mode::Dev,
            sync_only: settings.sync_only,
            keep_stage_file: settings.keep_stage_file,
            color,
        };
        let mut engine = Engine {
            settings,
            mode,
            backend,
            slots: Vec::new(),
            broken: Vec::new(),
            tree: Arc::new(KeyTree::new()),
            catalog: None,
            opts,
            exec,
            child_actions: Vec::new(),
        };
        engine.load_resources()?;
        Ok(engine)
    }

    /// (Re)reads every conf.d file. Files that fail are kept in `broken` and
    /// reported; the others load.
    fn load_resources(&mut self) -> anyhow::Result<()> {
        let confd = self.settings.confd_dir();
        let files = resource_files(&confd).map_err(|e| {
            anyhow::anyhow!("cannot read template resources in {}: {e}", confd.display())
        })?;
        let mut slots = Vec::new();
        self.broken.clear();
        let templates_dir = self.settings.templates_dir();
        let ctx = LoadContext {
            templates_dir: &templates_dir,
            prefix: &self.settings.prefix,
            wait: self.settings.wait,
            exec: self.exec,
        };
        for file in files {
            match Resource::load(&file, &ctx) {
                Ok(resource) => {
                    let old = self.slots.iter().find(|s| s.resource.file == file);
                    slots.push(Slot {
                        resource,
                        last_keys: old.map_or(0, |s| s.last_keys),
                        last_reload: old.and_then(|s| s.last_reload),
                    });
                }
                Err(e) => {
                    tracing::error!(resource = %e.file().display(), "{e}");
                    self.dev_error(&e.to_string());
                    self.broken.push(e);
                }
            }
        }
        if slots.is_empty() && self.broken.is_empty() {
            tracing::warn!(confd = %confd.display(), "no template resources (*.toml) found");
        }
        self.slots = slots;
        Ok(())
    }

    /// The keys and catalog the loaded resources need.
    pub fn interest(&self) -> Interest {
        let visible: Vec<&str> = self
            .slots
            .iter()
            .flat_map(|s| s.resource.visible.iter().map(String::as_str))
            .collect();
        Interest {
            prefixes: sidekick_backend::minimal_prefixes(&visible),
            services: self.backend.has_catalog()
                && self.slots.iter().any(|s| s.resource.uses_catalog),
        }
    }

    /// Replaces all data with a snapshot; returns what changed.
    fn replace(&mut self, snapshot: Snapshot) -> Changes {
        let keys = self.tree.changed_keys(&snapshot.keys);
        let old_catalog = self.catalog.clone();
        self.set_data(snapshot);
        Changes {
            keys,
            catalog: self.catalog != old_catalog,
        }
    }

    /// Takes a snapshot as the data, without working out what changed: for the
    /// first load, after which every resource renders anyway.
    fn set_data(&mut self, snapshot: Snapshot) {
        self.tree = Arc::new(snapshot.keys);
        self.catalog = snapshot.catalog.map(Arc::new);
    }

    /// Applies one batch from a watch.
    fn apply(&mut self, updates: Vec<Update>) -> Changes {
        let mut changes = Changes::default();
        for update in updates {
            match update {
                Update::Snapshot(s) => changes.merge(self.replace(s)),
                Update::Put { key, value } => {
                    let tree = Arc::make_mut(&mut self.tree);
                    if tree.get(&key) != Some(value.as_str()) {
                        tree.insert(&key, value);
                        changes.keys.insert(key);
                    }
                }
                Update::Delete { key } => {
                    if Arc::make_mut(&mut self.tree).remove(&key).is_some() {
                        changes.keys.insert(key);
                    }
                }
                Update::Catalog(c) => {
                    let c = Some(Arc::new(c));
                    if c != self.catalog {
                        self.catalog = c;
                        changes.catalog = true;
                    }
                }
            }
        }
        changes
    }

    /// Indices of resources a change touches.
    fn affected(&self, changes: &Changes) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                let r = &self.slots[i].resource;
                (changes.catalog && r.uses_catalog) || r.visible.iter().any(|p| changes.touches(p))
            })
            .collect()
    }

    /// Renders and writes the given resources, each on its own: one failing never
    /// stops another.
    fn process(&mut self, which: &[usize]) -> Report {
        let mut report = Report::default();
        for &i in which {
            let visible_keys = {
                let r = &self.slots[i].resource;
                r.visible
                    .iter()
                    .map(|p| self.tree.under(p).count())
                    .sum::<usize>()
            };
            let slot = &self.slots[i];
            let name = slot.resource.name.clone();
            if visible_keys == 0 && slot.last_keys > 0 {
                tracing::warn!(
                    resource = %name,
                    backend = self.backend.name(),
                    before = slot.last_keys,
                    "backend returned no keys where there were some; keeping the last good file"
                );
                report.skipped += 1;
                continue;
            }
            let view = Arc::new(View {
                keys: Arc::clone(&self.tree),
                prefix: slot.resource.prefix.clone(),
                visible: slot.resource.visible.clone(),
                catalog: self.catalog.clone(),
                backend: self.backend.name(),
            });
            let result = slot
                .resource
                .renderer
                .render(view)
                .map_err(|e| e.to_string())
                .and_then(|content| {
                    let backend = &self.backend;
                    // Only a diff can show values; skip the scan without one.
                    let secret = self.opts.diff
                        && slot.resource.visible.iter().any(|p| {
                            backend.is_secret(p)
                                || self.tree.under(p).any(|(k, _)| backend.is_secret(k))
                        });
                    pipeline::apply(&slot.resource, &content, &self.opts, secret)
                        .map_err(|e| e.to_string())
                });
            let dest = slot.resource.dest.display().to_string();
            match result {
                Ok(outcome) => {
                    self.slots[i].last_keys = visible_keys;
                    match outcome {
                        Outcome::Unchanged => {
                            report.unchanged += 1;
                            tracing::debug!(resource = %name, dest, "unchanged");
                        }
                        Outcome::Updated => {
                            report.updated += 1;
                            tracing::info!(resource = %name, dest, "updated");
                            self.dev_line(&format!("✔ {name}: {dest} updated"));
                            if let Err(message) = self.tell_executor(i) {
                                report.failed += 1;
                                self.report_error(&name, &message);
                            }
                            pipeline::sync_dir(&self.slots[i].resource.dest);
                        }
                        Outcome::WouldUpdate => {
                            report.updated += 1;
                            tracing::info!(resource = %name, dest, "would update (noop)");
                        }
                    }
                }
                Err(message) => {
                    report.failed += 1;
                    self.report_error(&name, &message);
                }
            }
        }
        report
    }

    /// After a swap: signal the executor or queue a restart of the child, as the
    /// resource says. `reload_cmd` already ran in the pipeline.
    fn tell_executor(&mut self, i: usize) -> Result<(), String> {
        if self.opts.sync_only || self.opts.noop {
            return Ok(());
        }
        let r = &self.slots[i].resource;
        let mut reloaded = r.reload_cmd.is_some();
        if r.restart && self.exec {
            self.child_actions.push(ChildAction::Restart(r.kill_signal));
            reloaded = true;
        } else if let (Some(sig), Some(target)) = (r.reload_signal, &r.target) {
            reloaded = true;
            if *target == Target::Child {
                self.child_actions.push(ChildAction::Signal(sig));
            } else {
                let pids = reload::send(sig, target)
                    .map_err(|e| format!("reload_signal not sent: {e}"))?;
                tracing::info!(resource = %r.name, signal = %sig, ?pids, "signalled executor");
            }
        }
        if reloaded {
            self.slots[i].last_reload = Some(tokio::time::Instant::now());
        }
        Ok(())
    }

    /// Processes every resource; counts broken resource files as failures.
    fn process_all(&mut self) -> Report {
        let all: Vec<usize> = (0..self.slots.len()).collect();
        let mut report = self.process(&all);
        report.failed += self.broken.len();
        report
    }

    fn report_error(&self, resource: &str, message: &str) {
        tracing::error!(resource, "{message}");
        self.dev_error(&format!("{resource}: {message}"));
    }

    /// Dev mode shows errors on stdout too, whole (Tera's reports span lines).
    fn dev_error(&self, message: &str) {
        if self.mode == Mode::Dev {
            let (red, reset) = if self.opts.color {
                ("\x1b[31m", "\x1b[0m")
            } else {
                ("", "")
            };
            println!("{red}✘{reset} {message}");
        }
    }

    fn dev_line(&self, line: &str) {
        if self.mode == Mode::Dev {
            let (green, reset) = if self.opts.color {
                ("\x1b[32m", "\x1b[0m")
            } else {
                ("", "")
            };
            println!("{green}{line}{reset}");
        }
    }

    /// Re-reads conf.d in dev mode, showing a failure instead of stopping.
    fn reload_resources(&mut self) {
        if let Err(e) = self.load_resources() {
            tracing::error!("{e:#}");
            self.dev_error(&format!("{e:#}"));
        }
    }

    /// Reloads what a dev-mode save touched; returns resources to re-render and
    /// whether the interest may have changed.
    fn on_dev_event(&mut self, event: DevEvent) -> Vec<usize> {
        match event {
            DevEvent::Resources => {
                self.reload_resources();
                (0..self.slots.len()).collect()
            }
            DevEvent::Templates(paths) => {
                let uses = |slot: &Slot| {
                    slot.resource
                        .renderer
                        .files()
                        .iter()
                        .any(|f| paths.contains(f))
                };
                let had_broken = !self.broken.is_empty();
                if !had_broken && !self.slots.iter().any(uses) {
                    return Vec::new();
                }
                // Re-read resource files so template parse errors are re-checked.
                self.reload_resources();
                (0..self.slots.len())
                    .filter(|&i| had_broken || uses(&self.slots[i]))
                    .collect()
            }
        }
    }
}

/// What a batch of updates changed.
#[derive(Debug, Default)]
struct Changes {
    keys: BTreeSet<String>,
    catalog: bool,
}

impl Changes {
    fn merge(&mut self, other: Changes) {
        self.keys.extend(other.keys);
        self.catalog |= other.catalog;
    }
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.catalog
    }
    /// True when a changed key lies at or below `prefix` (normalized).
    fn touches(&self, prefix: &str) -> bool {
        // Keys below `prefix` sort among those starting with its text.
        self.keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|k| k.starts_with(prefix))
            .any(|k| sidekick_backend::is_under(k, prefix))
    }
}

/// How `sidekick exec` runs its child.
pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub group: bool,
    pub kill_timeout: Duration,
}

/// Runs until `--onetime` is done, until SIGINT/SIGTERM, or (exec) until the
/// child ends. Returns the exit code.
pub(crate) async fn run(
    settings: Settings,
    backend: Arc<dyn Backend>,
    mode: Mode,
    exec: Option<ExecSpec>,
) -> anyhow::Result<i32> {
    let mut shutdown = Shutdown::new()?;
    let onetime = settings.onetime && mode == Mode::Normal;
    let watch = settings.watch || mode == Mode::Dev;
    let interval = Duration::from_secs(settings.interval.max(1));
    let confdir = settings.confdir.clone();
    let mut engine = Engine::new(settings, backend, mode, exec.is_some())?;
    let backend = Arc::clone(&engine.backend);
    let mut interest = engine.interest();

    if onetime && exec.is_none() {
        let snapshot = backend
            .load(&interest)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        engine.set_data(snapshot);
        let report = engine.process_all();
        tracing::info!(
            updated = report.updated,
            unchanged = report.unchanged,
            failed = report.failed,
            skipped = report.skipped,
            "onetime run done"
        );
        // The process ends now: the OS frees the tree and the templates at
        // once, faster than dropping them entry by entry.
        std::mem::forget(engine);
        return Ok(if report.failed > 0 { 1 } else { 0 });
    }

    let mut dev = match mode {
        Mode::Dev => Some(DevWatcher::new(&confdir)?),
        Mode::Normal => None,
    };
    if mode == Mode::Dev {
        println!(
            "sidekick dev: watching {} (conf.d, templates) and the data files; Ctrl-C to stop",
            confdir.display()
        );
    }

    // Under exec, our handlers for the forwarded signals go in before anything
    // slow happens, so an early SIGHUP cannot kill us by its default action.
    let mut supervisor = match &exec {
        Some(spec) => Some(Supervisor::new(
            spec.argv.clone(),
            spec.group,
            spec.kill_timeout,
        )?),
        None => None,
    };

    // First load: retry until the backend answers; nothing is written before.
    // A SIGINT/SIGTERM meanwhile stops sidekick (no child started yet).
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut logged_down = false;
    loop {
        let loaded = tokio::select! {
            loaded = backend.load(&interest) => loaded,
            _ = shutdown.recv() => return Ok(0),
        };
        match loaded {
            Ok(snapshot) => {
                engine.set_data(snapshot);
                break;
            }
            Err(e) => {
                if !logged_down {
                    tracing::error!(
                        backend = backend.name(),
                        "initial load failed, retrying: {e}"
                    );
                    engine.dev_error(&e.to_string());
                    logged_down = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.recv() => return Ok(0),
                }
            }
        }
    }
    let first = engine.process_all();
    engine.child_actions.clear(); // the child starts with the files as they are now

    // A SIGINT/SIGTERM that came during the first render: stop before anything
    // starts. Yielding lets the runtime take in a signal delivered meanwhile.
    tokio::task::yield_now().await;
    if shutdown.recv().now_or_never().is_some() {
        return Ok(0);
    }

    if let (Some(spec), Some(sup)) = (&exec, supervisor.as_mut()) {
        if first.failed > 0 && mode == Mode::Normal {
            anyhow::bail!(
                "not starting {:?}: {} resource(s) failed to render (see above)",
                spec.argv.join(" "),
                first.failed
            );
        }
        if let Err(e) = sup.start() {
            eprintln!("sidekick: error: {e}");
            return Ok(EXIT_CANNOT_START);
        }
    }

    let mut stream: Option<UpdateStream> = if watch && !onetime {
        let s = backend.watch(&interest);
        if s.is_none() {
            tracing::warn!(
                backend = backend.name(),
                interval = interval.as_secs(),
                "backend cannot watch; polling instead"
            );
        }
        s
    } else {
        None
    };
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut debouncer = Debouncer::default();

    loop {
        let due = debouncer.next_due();
        let changes = tokio::select! {
            _ = shutdown.recv(), if supervisor.is_none() => break,
            event = next_child_event(&mut supervisor) => match event {
                Event::Exited(code) | Event::Stopped(code) => return Ok(code),
            },
            item = next_update(&mut stream) => match item {
                Some(Ok(batch)) => {
                    if last_error.take().is_some() {
                        tracing::info!(backend = backend.name(), "backend is back");
                    }
                    engine.apply(batch)
                }
                Some(Err(e)) => {
                    note_error(&engine, &mut last_error, &e);
                    continue;
                }
                None => {
                    tracing::error!(backend = backend.name(), "watch ended; falling back to polling");
                    stream = None;
                    continue;
                }
            },
            _ = ticker.tick(), if stream.is_none() && !onetime => match backend.load(&interest).await {
                Ok(snapshot) => {
                    if last_error.take().is_some() {
                        tracing::info!(backend = backend.name(), "backend is back");
                    }
                    engine.replace(snapshot)
                }
                Err(e) => {
                    note_error(&engine, &mut last_error, &e);
                    continue;
                }
            },
            _ = sleep_until_due(due) => {
                let which = debouncer.take_due(tokio::time::Instant::now());
                engine.process(&which);
                if let Some(code) = act_on_child(&mut engine, &mut supervisor).await {
                    return Ok(code);
                }
                continue;
            }
            event = next_dev_event(&mut dev) => {
                let Some(event) = event else { dev = None; continue };
                debouncer.clear();
                let which = engine.on_dev_event(event);
                let new_interest = engine.interest();
                if new_interest != interest {
                    interest = new_interest;
                    match backend.load(&interest).await {
                        Ok(snapshot) => engine.set_data(snapshot),
                        Err(e) => note_error(&engine, &mut last_error, &e),
                    }
                    if watch {
                        stream = backend.watch(&interest);
                    }
                    let all: Vec<usize> = (0..engine.slots.len()).collect();
                    engine.process(&all);
                } else {
                    engine.process(&which);
                }
                if let Some(code) = act_on_child(&mut engine, &mut supervisor).await {
                    return Ok(code);
                }
                continue;
            }
        };
        if changes.is_empty() {
            continue;
        }
        let now = tokio::time::Instant::now();
        let which = engine.affected(&changes);
        tracing::debug!(keys = changes.keys.len(), resources = which.len(), "change");
        for i in which {
            let slot = &engine.slots[i];
            let not_before = match (slot.last_reload, slot.resource.min_reload_interval) {
                (Some(at), Some(gap)) => Some(at + gap),
                _ => None,
            };
            debouncer.touch(i, slot.resource.wait, not_before, now);
        }
        // Without a wait, render now rather than through the timer.
        if debouncer.next_due().is_some_and(|due| due <= now) {
            let which = debouncer.take_due(now);
            engine.process(&which);
            if let Some(code) = act_on_child(&mut engine, &mut supervisor).await {
                return Ok(code);
            }
        }
    }
    Ok(0)
}

/// Signals or restarts the supervised child as the last pass asked. Returns an
/// exit code when the child could not be started again.
async fn act_on_child(engine: &mut Engine, supervisor: &mut Option<Supervisor>) -> Option<i32> {
    let actions = std::mem::take(&mut engine.child_actions);
    let sup = supervisor.as_mut()?;
    for action in actions {
        match action {
            ChildAction::Signal(sig) => {
                if let Err(e) = sup.signal(sig) {
                    tracing::error!("{e}");
                }
            }
            ChildAction::Restart(sig) => {
                if let Err(e) = sup.restart(sig).await {
                    eprintln!("sidekick: error: {e}");
                    return Some(EXIT_CANNOT_START);
                }
            }
        }
    }
    None
}

async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_child_event(supervisor: &mut Option<Supervisor>) -> Event {
    match supervisor {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

fn note_error(engine: &Engine, last: &mut Option<String>, e: &BackendError) {
    let text = e.to_string();
    if last.as_deref() != Some(text.as_str()) {
        tracing::error!(
            backend = engine.backend.name(),
            "{text}; keeping the last good files"
        );
        if engine.mode == Mode::Dev {
            engine.report_error(engine.backend.name(), &text);
        }
        *last = Some(text);
    }
}

async fn next_update(
    stream: &mut Option<UpdateStream>,
) -> Option<Result<Vec<Update>, BackendError>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn next_dev_event(dev: &mut Option<DevWatcher>) -> Option<DevEvent> {
    match dev {
        Some(d) => d.next().await,
        None => std::future::pending().await,
    }
}

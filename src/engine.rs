//! The engine: the loaded resources, the data they render from, and one pass
//! of rendering. It knows which resources a change touches and takes each of
//! them through render -> [`pipeline::apply`] (stage, check, swap) ->
//! [`executor::after_swap`] (reload, signal or restart). It does no waiting:
//! when to run a pass is the event loop's business (`event_loop.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;

use sidekick_backend::{Backend, Catalog, Interest, KeyTree, Snapshot, Update};

use crate::config::Settings;
use crate::debounce::Wait;
use crate::dev::DevEvent;
use crate::executor::{self, ChildAction, Telling};
use crate::metrics;
use crate::pipeline::{self, Outcome};
use crate::redact::Redactor;
use crate::render::{Limits, RenderError, View};
use crate::report::Reporter;
use crate::resource::{resource_files, LoadContext, Resource, ResourceError};

/// Counts of one pass over resources.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Resources whose write failed in a way that may pass later (disk full,
    /// read-only): each with how long to wait before trying again.
    pub retry: Vec<(usize, std::time::Duration)>,
}

impl Report {
    /// Resources counted so far.
    fn total(&self) -> usize {
        self.updated + self.unchanged + self.failed + self.skipped
    }
}

/// One loaded resource and what the engine remembers about it.
struct Slot {
    resource: Resource,
    /// Keys the template could see at its last good render (the guard against
    /// a backend suddenly answering with nothing).
    last_keys: usize,
    /// This process has rendered the resource at least once, through the
    /// pipeline without error.
    rendered: bool,
    /// Writes that failed in a row, for the retry backoff.
    write_failures: u32,
    /// When the executor was last told to reload for this resource.
    last_reload: Option<tokio::time::Instant>,
}

/// What a batch of updates changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    keys: BTreeSet<String>,
    catalog: bool,
}

impl Changes {
    fn merge(&mut self, other: Changes) {
        self.keys.extend(other.keys);
        self.catalog |= other.catalog;
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.catalog
    }

    /// How many keys changed, for logs.
    pub fn key_count(&self) -> usize {
        self.keys.len()
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

/// Why one resource's pass failed.
struct Failure {
    message: String,
    /// The kind, for metrics: render, check or write.
    reason: &'static str,
    /// Trying again later may succeed with the same data (a failed write).
    retry: bool,
}

/// How long to wait before writing again after `failures` failed writes in
/// a row: 1 s, doubling, at most a minute.
fn retry_delay(failures: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << failures.min(6)).min(std::time::Duration::from_secs(60))
}

/// Takes out of `slots` every resource whose destination another one has too
/// (compared without `.` components and repeated slashes), and returns an error
/// for each, naming the other: neither renders, since the file would flip
/// between them.
fn reject_same_dest(slots: &mut Vec<Slot>) -> Vec<ResourceError> {
    let key = |s: &Slot| s.resource.dest.components().collect::<std::path::PathBuf>();
    let mut errors = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let dest = key(slot);
        if let Some(other) = slots
            .iter()
            .enumerate()
            .find(|&(j, o)| j != i && key(o) == dest)
            .map(|(_, o)| o.resource.file.clone())
        {
            errors.push(ResourceError::SameDest {
                file: slot.resource.file.clone(),
                dest: slot.resource.dest.clone(),
                other,
            });
        }
    }
    slots.retain(|s| !errors.iter().any(|e| e.file() == s.resource.file));
    errors
}

/// Resources, the data they render from, and the backend it comes from.
pub(crate) struct Engine {
    settings: Settings,
    reporter: Reporter,
    backend: Arc<dyn Backend>,
    slots: Vec<Slot>,
    broken: Vec<ResourceError>,
    tree: Arc<KeyTree>,
    catalog: Option<Arc<Catalog>>,
    opts: pipeline::Options,
    telling: Telling,
    /// What the supervised child should get once this pass is over.
    child_actions: Vec<ChildAction>,
}

impl Engine {
    /// Reads conf.d and prepares the pipeline options.
    pub fn new(
        settings: Settings,
        backend: Arc<dyn Backend>,
        reporter: Reporter,
        exec: bool,
    ) -> anyhow::Result<Engine> {
        let opts = pipeline::Options {
            noop: settings.noop,
            diff: settings.diff || reporter.is_dev(),
            sync_only: settings.sync_only,
            keep_stage_file: settings.keep_stage_file,
            color: crate::color_stdout(),
        };
        let telling = Telling {
            quiet: settings.sync_only || settings.noop,
            exec,
        };
        let mut engine = Engine {
            settings,
            reporter,
            backend,
            slots: Vec::new(),
            broken: Vec::new(),
            tree: Arc::new(KeyTree::new()),
            catalog: None,
            opts,
            telling,
            child_actions: Vec::new(),
        };
        engine.load_resources()?;
        if !engine.opts.noop && !engine.opts.keep_stage_file {
            for slot in &engine.slots {
                pipeline::remove_stale_stages(&slot.resource.dest);
            }
        }
        Ok(engine)
    }

    /// The backend the data comes from.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How results are reported.
    pub fn reporter(&self) -> Reporter {
        self.reporter
    }

    /// Indices of every loaded resource.
    pub fn all(&self) -> Vec<usize> {
        (0..self.slots.len()).collect()
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
            exec: self.telling.exec,
            engine: self.settings.template_engine,
            check_cmd_timeout: self.settings.check_cmd_timeout,
            reload_cmd_timeout: self.settings.reload_cmd_timeout,
        };
        for file in files {
            match Resource::load(&file, &ctx) {
                Ok(resource) => {
                    let old = self.slots.iter().find(|s| s.resource.file == file);
                    slots.push(Slot {
                        resource,
                        last_keys: old.map_or(0, |s| s.last_keys),
                        rendered: old.is_some_and(|s| s.rendered),
                        write_failures: 0,
                        last_reload: old.and_then(|s| s.last_reload),
                    });
                }
                Err(e) => {
                    self.reporter.resource_file_error(e.file(), &e.to_string());
                    self.broken.push(e);
                }
            }
        }
        for e in reject_same_dest(&mut slots) {
            self.reporter.resource_file_error(e.file(), &e.to_string());
            self.broken.push(e);
        }
        if slots.is_empty() && self.broken.is_empty() {
            tracing::warn!(confd = %confd.display(), "no template resources (*.toml) found");
        }
        self.slots = slots;
        Ok(())
    }

    /// The keys and catalog the loaded resources need.
    pub fn interest(&self) -> Interest {
        self.interest_of(&self.all())
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
    pub fn set_data(&mut self, snapshot: Snapshot) {
        self.tree = Arc::new(snapshot.keys);
        self.catalog = snapshot.catalog.map(Arc::new);
    }

    /// Takes the first batch of a stream (a snapshot, maybe followed by more
    /// updates) as the data, without working out what changed.
    pub fn set_first(&mut self, mut batch: Vec<Update>) {
        if let Some(Update::Snapshot(_)) = batch.first() {
            if let Update::Snapshot(snapshot) = batch.remove(0) {
                self.set_data(snapshot);
            }
        }
        self.apply(batch);
    }

    /// Applies one batch from a watch.
    pub fn apply(&mut self, updates: Vec<Update>) -> Changes {
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
    pub fn affected(&self, changes: &Changes) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                let r = &self.slots[i].resource;
                (changes.catalog && r.uses_catalog) || r.visible.iter().any(|p| changes.touches(p))
            })
            .collect()
    }

    /// Resource `i`'s debounce: its `wait`, and the earliest time the executor
    /// may be told again (`min_reload_interval` after the last reload).
    pub fn pacing(&self, i: usize) -> (Option<Wait>, Option<tokio::time::Instant>) {
        let slot = &self.slots[i];
        let not_before = match (slot.last_reload, slot.resource.min_reload_interval) {
            (Some(at), Some(gap)) => Some(at + gap),
            _ => None,
        };
        (slot.resource.wait, not_before)
    }

    /// Renders and writes the given resources, each on its own: one failing never
    /// stops another.
    pub fn process(&mut self, which: &[usize]) -> Report {
        let mut report = Report::default();
        for &i in which {
            if let Some(signal) = crate::shutdown::requested() {
                tracing::info!(%signal, left = which.len() - report.total(), "stopping the pass");
                break;
            }
            self.process_one(i, &mut report);
        }
        report
    }

    /// Processes every resource; counts broken resource files as failures.
    pub fn process_all(&mut self) -> Report {
        let mut report = self.process(&self.all());
        report.failed += self.broken.len();
        report
    }

    fn process_one(&mut self, i: usize, report: &mut Report) {
        let slot = &self.slots[i];
        let visible_keys = slot
            .resource
            .visible
            .iter()
            .map(|p| self.tree.under(p).count())
            .sum::<usize>();
        let name = slot.resource.name.clone();
        if let Some(why) = self.keep_on_empty(slot, visible_keys) {
            tracing::warn!(
                resource = %name,
                dest = %slot.resource.dest.display(),
                backend = self.backend.name(),
                before = slot.last_keys,
                "backend returned no keys for the resource's prefixes {why}; keeping the last good file \
                 (allow_empty = true lets an empty answer through)"
            );
            report.skipped += 1;
            metrics::skipped(&name);
            return;
        }
        let started = std::time::Instant::now();
        let dest = slot.resource.dest.display().to_string();
        let redact = Redactor::for_keys(&*self.backend, &self.tree, &slot.resource.visible);
        let result = self.render_and_swap(i, &redact);
        // Only a render that went through counts: after a failed one the
        // destination still holds what an earlier run wrote.
        self.slots[i].rendered |= result.is_ok();
        match result {
            Ok(Outcome::Unchanged) => {
                self.slots[i].last_keys = visible_keys;
                report.unchanged += 1;
                metrics::rendered(&name, "unchanged", started.elapsed());
                tracing::debug!(resource = %name, dest, "unchanged");
            }
            Ok(Outcome::WouldUpdate) => {
                self.slots[i].last_keys = visible_keys;
                report.updated += 1;
                metrics::rendered(&name, "would_update", started.elapsed());
                tracing::info!(resource = %name, dest, "would update (noop)");
            }
            Ok(Outcome::Updated) => {
                self.slots[i].last_keys = visible_keys;
                report.updated += 1;
                metrics::rendered(&name, "updated", started.elapsed());
                self.reporter.updated(&name, &dest);
                let told = executor::after_swap(
                    &self.slots[i].resource,
                    self.telling,
                    &mut self.child_actions,
                    &redact,
                );
                match told {
                    Ok(true) => self.slots[i].last_reload = Some(tokio::time::Instant::now()),
                    Ok(false) => {}
                    Err(e) => {
                        report.failed += 1;
                        metrics::failed(&name, "reload");
                        self.reporter
                            .resource_error(&name, &redact.apply(&e.to_string()));
                    }
                }
            }
            Err(failure) => {
                report.failed += 1;
                metrics::failed(&name, failure.reason);
                self.reporter.resource_error(&name, &failure.message);
                if failure.retry {
                    let slot = &mut self.slots[i];
                    let delay = retry_delay(slot.write_failures);
                    slot.write_failures = slot.write_failures.saturating_add(1);
                    tracing::info!(resource = %name, dest, retry_in = ?delay, "will try the write again");
                    report.retry.push((i, delay));
                }
                return;
            }
        }
        self.slots[i].write_failures = 0;
    }

    /// Why resource `slot`, whose prefixes hold `visible_keys` keys now, must
    /// not be rendered: the backend answers with nothing where there was
    /// something, before in this process (`last_keys`) or, on this process's
    /// first render, in the destination (a non-empty file written by an earlier
    /// run). `None`: render. A resource that reads no keys, one whose catalog
    /// has services, and one with `allow_empty` always render.
    fn keep_on_empty(&self, slot: &Slot, visible_keys: usize) -> Option<&'static str> {
        let r = &slot.resource;
        if visible_keys > 0 || r.allow_empty || r.visible.is_empty() {
            return None;
        }
        let catalog_has_services = r.uses_catalog
            && self
                .catalog
                .as_ref()
                .is_some_and(|c| !c.services().is_empty());
        if catalog_has_services {
            return None;
        }
        if slot.last_keys > 0 {
            return Some("where there were some");
        }
        let dest_has_content = std::fs::metadata(&r.dest).is_ok_and(|m| m.is_file() && m.len() > 0);
        if !slot.rendered && dest_has_content {
            return Some("on the first render, and the destination has content");
        }
        None
    }

    /// Renders resource `i` and brings its destination in line (up to the swap).
    /// Every message it returns has `redact`'s secret values masked.
    fn render_and_swap(&self, i: usize, redact: &Redactor) -> Result<Outcome, Failure> {
        let resource = &self.slots[i].resource;
        let content = self.render_content(i, redact)?;
        // A diff of secret values shows only a size.
        let backend = &self.backend;
        let secret = self.opts.diff
            && (!redact.is_empty() || resource.visible.iter().any(|p| backend.is_secret(p)));
        pipeline::apply(resource, &content, &self.opts, secret, redact).map_err(|e| Failure {
            message: redact.apply(&e.to_string()),
            reason: e.reason(),
            retry: e.is_retryable(),
        })
    }

    /// What holds readiness back: each resource file that failed to load, and
    /// each resource that has not yet rendered (or found its file up to
    /// date) in this process.
    pub fn not_ready(&self) -> Vec<String> {
        let broken = self
            .broken
            .iter()
            .map(|e| format!("{} (does not load)", e.file().display()));
        let pending = self
            .slots
            .iter()
            .filter(|s| !s.rendered)
            .map(|s| format!("{} (not rendered yet)", s.resource.name));
        broken.chain(pending).collect()
    }

    /// How many keys the data holds.
    pub fn key_count(&self) -> usize {
        self.tree.len()
    }

    /// What the supervised child should get after the passes so far.
    pub fn take_child_actions(&mut self) -> Vec<ChildAction> {
        std::mem::take(&mut self.child_actions)
    }

    /// Re-reads conf.d in dev mode, showing a failure instead of stopping.
    fn reload_resources(&mut self) {
        if let Err(e) = self.load_resources() {
            self.reporter.error(&format!("{e:#}"));
        }
    }

    /// Reloads what a dev-mode save touched; returns resources to re-render.
    pub fn on_dev_event(&mut self, event: DevEvent) -> Vec<usize> {
        match event {
            DevEvent::Resources => {
                self.reload_resources();
                self.all()
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

    /// Renders resource `i` to memory: the render step of every pass, with its
    /// limits (`max_output`, `render_timeout`). The error has `redact`'s secret
    /// values masked.
    fn render_content(&self, i: usize, redact: &Redactor) -> Result<String, Failure> {
        let resource = &self.slots[i].resource;
        let view = Arc::new(View {
            keys: Arc::clone(&self.tree),
            prefix: resource.prefix.clone(),
            visible: resource.visible.clone(),
            catalog: self.catalog.clone(),
            backend: self.backend.name(),
            limits: Limits {
                max_bytes: Some(resource.max_output),
                timeout: Some(resource.render_timeout),
            },
        });
        resource.renderer.render(view).map_err(|e| {
            let mut message = redact.apply(&e.to_string());
            if matches!(e, RenderError::Limit { .. }) {
                message = format!("{message}; {} not written", resource.dest.display());
            }
            Failure {
                message,
                reason: "render",
                retry: false,
            }
        })
    }

    // What `sidekick check` and `sidekick render` (src/check.rs) use: the
    // engine's loading and its render step, without the pipeline.

    /// The loaded resources; resource `i` is the `i`th.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.slots.iter().map(|s| &s.resource)
    }

    /// The conf.d files that did not load, each with why.
    pub fn broken(&self) -> &[ResourceError] {
        &self.broken
    }

    /// The keys and catalog resources `which` need.
    pub fn interest_of(&self, which: &[usize]) -> Interest {
        let slots = || which.iter().map(|&i| &self.slots[i]);
        let visible: Vec<&str> = slots()
            .flat_map(|s| s.resource.visible.iter().map(String::as_str))
            .collect();
        Interest {
            prefixes: sidekick_backend::minimal_prefixes(&visible),
            services: self.backend.has_catalog() && slots().any(|s| s.resource.uses_catalog),
        }
    }

    /// Renders resource `i` from the data held now and checks its
    /// `output_format`, as a pass does before staging, and returns the text
    /// instead of writing it. The error names the template's file and line,
    /// with secret values masked.
    pub fn render_to_memory(&self, i: usize) -> Result<String, String> {
        let resource = &self.slots[i].resource;
        let redact = Redactor::for_keys(&*self.backend, &self.tree, &resource.visible);
        let content = self.render_content(i, &redact).map_err(|f| f.message)?;
        if let Some(format) = resource.output_format {
            pipeline::validate_format(format, &content)
                .map_err(|e| redact.apply(&e.to_string()))?;
        }
        Ok(content)
    }
}

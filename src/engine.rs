//! The engine: the loaded resources, the data they render from, and one pass
//! of rendering. It knows which resources a change touches and takes each of
//! them through render -> [`pipeline::apply`] (stage, check, swap) ->
//! [`executor::after_swap`] (reload, signal or restart). It does no waiting:
//! when to run a pass is the event loop's business (`event_loop.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;

use sidekick_backend::{Backend, Catalog, Interest, KeyTree, Snapshot, Update};

use crate::backend::BuildError;
use crate::source::SourceSpec;

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
    /// The source its own keys come from (0: the global backend).
    source: usize,
    /// The named sources its templates read.
    reads: Vec<usize>,
}

/// One backend the engine reads (`source.rs`) and the data it holds of it.
struct Source {
    /// For logs and metrics: the backend's name (`etcdv3`) for the global
    /// one, `BACKEND:NAME` for a named one, `BACKEND:RESOURCE` for a
    /// resource's own.
    label: String,
    backend: Arc<dyn Backend>,
    tree: Arc<KeyTree>,
    catalog: Option<Arc<Catalog>>,
    origin: Origin,
}

/// Where a source was declared.
enum Origin {
    /// The flags' `--backend`.
    Global,
    /// `[backends.NAME]`: templates read its `keys` relative to its `prefix`.
    Named {
        name: String,
        prefix: String,
        keys: Vec<String>,
    },
    /// A resource's `[backend]` table; equal tables share the source.
    Table { identity: String },
}

impl Source {
    fn new(label: String, backend: Arc<dyn Backend>, origin: Origin) -> Source {
        Source {
            label,
            backend,
            tree: Arc::new(KeyTree::new()),
            catalog: None,
            origin,
        }
    }

    /// The prefixes of a named source that templates may read.
    fn named_keys(&self) -> &[String] {
        match &self.origin {
            Origin::Named { keys, .. } => keys,
            _ => &[],
        }
    }
}

/// What a batch of updates from one source changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    source: usize,
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
    /// Source 0 is the global backend; the others are added as resources
    /// that need them load, and kept (indices stay valid).
    sources: Vec<Source>,
    /// Why the global backend could not be built, when it could not: only
    /// the resources that read it fail.
    global_error: Option<String>,
    slots: Vec<Slot>,
    broken: Vec<ResourceError>,
    opts: pipeline::Options,
    telling: Telling,
    /// What the supervised child should get once this pass is over.
    child_actions: Vec<ChildAction>,
}

impl Engine {
    /// Reads conf.d and prepares the pipeline options. `backend` is the
    /// global one, as built from the flags: its error ends the run only when
    /// some resource reads it (every resource may have a `[backend]` table).
    pub fn new(
        settings: Settings,
        backend: Result<Arc<dyn Backend>, BuildError>,
        reporter: Reporter,
        exec: bool,
    ) -> anyhow::Result<Engine> {
        let (global, global_error) = match backend {
            Ok(b) => (b, None),
            // A stand-in that is never read: no resource may use it.
            Err(e) => (
                Arc::new(sidekick_backend_env::EnvBackend::new()) as Arc<dyn Backend>,
                Some(e.to_string()),
            ),
        };
        let global = Source::new(global.name().to_string(), global, Origin::Global);
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
            sources: vec![global],
            global_error,
            slots: Vec::new(),
            broken: Vec::new(),
            opts,
            telling,
            child_actions: Vec::new(),
        };
        engine.load_resources()?;
        if let Some(e) = &engine.global_error {
            if engine.slots.iter().any(|s| s.source == 0) || engine.slots.is_empty() {
                anyhow::bail!("{e}");
            }
        }
        if !engine.opts.noop && !engine.opts.keep_stage_file {
            for slot in &engine.slots {
                pipeline::remove_stale_stages(&slot.resource.dest);
            }
        }
        Ok(engine)
    }

    /// How many sources there are; each has an index below this.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Source `s`'s backend.
    pub fn source_backend(&self, s: usize) -> &Arc<dyn Backend> {
        &self.sources[s].backend
    }

    /// Source `s`'s name in logs and metrics.
    pub fn source_label(&self, s: usize) -> &str {
        &self.sources[s].label
    }

    /// The resources that read source `s`, as their own or by name.
    pub fn readers_of(&self, s: usize) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].source == s || self.slots[i].reads.contains(&s))
            .collect()
    }

    /// The sources of resources `which` (their own and the named ones they
    /// read), in order.
    pub fn sources_of(&self, which: &[usize]) -> Vec<usize> {
        let mut out: Vec<usize> = which
            .iter()
            .flat_map(|&i| {
                let slot = &self.slots[i];
                std::iter::once(slot.source).chain(slot.reads.iter().copied())
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
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
        let named: Vec<String> = self.settings.named.iter().map(|(n, _)| n.clone()).collect();
        let prefix = self.settings.prefix.clone();
        let ctx = LoadContext {
            templates_dir: &templates_dir,
            prefix: &prefix,
            wait: self.settings.wait,
            exec: self.telling.exec,
            engine: self.settings.template_engine,
            check_cmd_timeout: self.settings.check_cmd_timeout,
            reload_cmd_timeout: self.settings.reload_cmd_timeout,
            named: &named,
        };
        for file in files {
            let loaded = Resource::load(&file, &ctx).and_then(|resource| {
                let (source, reads) = self.sources_for(&resource)?;
                Ok((resource, source, reads))
            });
            match loaded {
                Ok((resource, source, reads)) => {
                    let old = self.slots.iter().find(|s| s.resource.file == file);
                    slots.push(Slot {
                        resource,
                        last_keys: old.map_or(0, |s| s.last_keys),
                        rendered: old.is_some_and(|s| s.rendered),
                        write_failures: 0,
                        last_reload: old.and_then(|s| s.last_reload),
                        source,
                        reads,
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

    /// The source resource `resource` reads its keys from, and the named
    /// sources it reads; each built on first use. A source that cannot be
    /// built fails the resource, naming its table.
    fn sources_for(&mut self, resource: &Resource) -> Result<(usize, Vec<usize>), ResourceError> {
        let invalid = |line: usize, message: String| ResourceError::Invalid {
            file: resource.file.clone(),
            line,
            message,
        };
        let interval = self.settings.interval;
        let source = match &resource.backend {
            None => {
                if let Some(e) = &self.global_error {
                    return Err(invalid(1, format!("the global backend: {e}")));
                }
                0
            }
            Some(spec) => {
                let same = |s: &Source| matches!(&s.origin, Origin::Table { identity } if *identity == spec.identity);
                match self.sources.iter().position(same) {
                    Some(s) => s,
                    None => {
                        let backend = spec
                            .build(interval)
                            .map_err(|e| invalid(spec.line, format!("[backend]: {e}")))?;
                        let label = format!("{}:{}", backend.name(), resource.name);
                        let identity = spec.identity.clone();
                        self.sources
                            .push(Source::new(label, backend, Origin::Table { identity }));
                        self.sources.len() - 1
                    }
                }
            }
        };
        let mut reads = Vec::new();
        for name in &resource.reads {
            let same = |s: &Source| matches!(&s.origin, Origin::Named { name: n, .. } if n == name);
            let s = match self.sources.iter().position(same) {
                Some(s) => s,
                None => {
                    let Some((_, spec)) = self.settings.named.iter().find(|(n, _)| n == name)
                    else {
                        return Err(invalid(1, format!("backend {name:?} is not declared")));
                    };
                    let spec: &SourceSpec = spec;
                    let backend = spec.build(interval).map_err(|e| {
                        invalid(1, format!("its templates read backend {name:?}: {e}"))
                    })?;
                    let label = format!("{}:{name}", backend.name());
                    let origin = Origin::Named {
                        name: name.clone(),
                        prefix: spec.prefix.clone(),
                        keys: spec.keys.clone(),
                    };
                    self.sources.push(Source::new(label, backend, origin));
                    self.sources.len() - 1
                }
            };
            reads.push(s);
        }
        Ok((source, reads))
    }

    /// The keys and catalog the loaded resources need of source `s`: none
    /// when no resource reads it.
    pub fn source_interest(&self, s: usize) -> Interest {
        self.interest_in(s, &self.all())
    }

    /// Replaces source `s`'s data with a snapshot; returns what changed.
    fn replace(&mut self, s: usize, snapshot: Snapshot) -> Changes {
        let source = &self.sources[s];
        let keys = source.tree.changed_keys(&snapshot.keys);
        let old_catalog = source.catalog.clone();
        self.set_data_of(s, snapshot);
        Changes {
            source: s,
            keys,
            catalog: self.sources[s].catalog != old_catalog,
        }
    }

    /// Takes a snapshot as source `s`'s data, without working out what
    /// changed: for the first load, after which every resource renders anyway.
    pub fn set_data_of(&mut self, s: usize, snapshot: Snapshot) {
        let source = &mut self.sources[s];
        source.tree = Arc::new(snapshot.keys);
        source.catalog = snapshot.catalog.map(Arc::new);
    }

    /// Takes the first batch of source `s`'s stream (a snapshot, maybe
    /// followed by more updates) as its data, without working out what changed.
    pub fn set_first(&mut self, s: usize, mut batch: Vec<Update>) {
        if let Some(Update::Snapshot(_)) = batch.first() {
            if let Update::Snapshot(snapshot) = batch.remove(0) {
                self.set_data_of(s, snapshot);
            }
        }
        self.apply(s, batch);
    }

    /// Applies one batch from source `s`'s watch.
    pub fn apply(&mut self, s: usize, updates: Vec<Update>) -> Changes {
        let mut changes = Changes {
            source: s,
            ..Changes::default()
        };
        for update in updates {
            match update {
                Update::Snapshot(snapshot) => changes.merge(self.replace(s, snapshot)),
                Update::Put { key, value } => {
                    let tree = Arc::make_mut(&mut self.sources[s].tree);
                    if tree.get(&key) != Some(value.as_str()) {
                        tree.insert(&key, value);
                        changes.keys.insert(key);
                    }
                }
                Update::Delete { key } => {
                    if Arc::make_mut(&mut self.sources[s].tree)
                        .remove(&key)
                        .is_some()
                    {
                        changes.keys.insert(key);
                    }
                }
                Update::Catalog(c) => {
                    let c = Some(Arc::new(c));
                    if c != self.sources[s].catalog {
                        self.sources[s].catalog = c;
                        changes.catalog = true;
                    }
                }
            }
        }
        changes
    }

    /// Indices of resources a change touches: those that read their keys from
    /// its source, and those whose templates read it by name.
    pub fn affected(&self, changes: &Changes) -> Vec<usize> {
        let s = changes.source;
        let named = self.sources[s].named_keys();
        (0..self.slots.len())
            .filter(|&i| {
                let slot = &self.slots[i];
                let r = &slot.resource;
                let own = slot.source == s
                    && ((changes.catalog && r.uses_catalog)
                        || r.visible.iter().any(|p| changes.touches(p)));
                let by_name = slot.reads.contains(&s)
                    && ((changes.catalog && r.uses_catalog)
                        || named.iter().any(|p| changes.touches(p)));
                own || by_name
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

    /// How many keys resource `slot` can see, in its own source and the
    /// named ones it reads.
    fn visible_keys(&self, slot: &Slot) -> usize {
        let own = &self.sources[slot.source].tree;
        let named = slot.reads.iter().flat_map(|&s| {
            let source = &self.sources[s];
            source
                .named_keys()
                .iter()
                .map(|p| source.tree.under(p).count())
        });
        slot.resource
            .visible
            .iter()
            .map(|p| own.under(p).count())
            .chain(named)
            .sum()
    }

    /// The redactor for resource `slot`: the secret values it can see in
    /// every source it reads.
    fn redactor(&self, slot: &Slot) -> Redactor {
        let own = &self.sources[slot.source];
        let named = slot.reads.iter().map(|&s| {
            let source = &self.sources[s];
            (&*source.backend, &*source.tree, source.named_keys())
        });
        Redactor::for_reads(
            std::iter::once((&*own.backend, &*own.tree, slot.resource.visible.as_slice()))
                .chain(named),
        )
    }

    fn process_one(&mut self, i: usize, report: &mut Report) {
        let slot = &self.slots[i];
        let visible_keys = self.visible_keys(slot);
        let name = slot.resource.name.clone();
        if let Some(why) = self.keep_on_empty(slot, visible_keys) {
            tracing::warn!(
                resource = %name,
                dest = %slot.resource.dest.display(),
                backend = self.sources[slot.source].label.as_str(),
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
        let redact = self.redactor(slot);
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
            && self.sources[slot.source]
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
        let slot = &self.slots[i];
        let resource = &slot.resource;
        let content = self.render_content(i, redact)?;
        // A diff of secret values shows only a size.
        let backend = &self.sources[slot.source].backend;
        let named_secret = slot.reads.iter().any(|&s| {
            let source = &self.sources[s];
            source
                .named_keys()
                .iter()
                .any(|p| source.backend.is_secret(p))
        });
        let secret = self.opts.diff
            && (!redact.is_empty()
                || named_secret
                || resource.visible.iter().any(|p| backend.is_secret(p)));
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

    /// How many keys source `s` holds.
    pub fn key_count(&self, s: usize) -> usize {
        self.sources[s].tree.len()
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
        let slot = &self.slots[i];
        let resource = &slot.resource;
        let limits = Limits {
            max_bytes: Some(resource.max_output),
            timeout: Some(resource.render_timeout),
        };
        let named = slot
            .reads
            .iter()
            .filter_map(|&s| {
                let source = &self.sources[s];
                let Origin::Named { name, prefix, keys } = &source.origin else {
                    return None;
                };
                let view = View {
                    keys: Arc::clone(&source.tree),
                    prefix: prefix.clone(),
                    visible: keys.clone(),
                    catalog: source.catalog.clone(),
                    backend: source.backend.name(),
                    limits,
                    named: Vec::new(),
                };
                Some((name.clone(), Arc::new(view)))
            })
            .collect();
        let own = &self.sources[slot.source];
        let view = Arc::new(View {
            keys: Arc::clone(&own.tree),
            prefix: resource.prefix.clone(),
            visible: resource.visible.clone(),
            catalog: own.catalog.clone(),
            backend: own.backend.name(),
            limits,
            named,
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

    /// The keys and catalog resources `which` need of source `s`: the keys
    /// of those that read theirs from it, and its declared keys when one
    /// reads it by name.
    pub fn interest_in(&self, s: usize, which: &[usize]) -> Interest {
        let source = &self.sources[s];
        let own = || {
            which
                .iter()
                .map(|&i| &self.slots[i])
                .filter(|x| x.source == s)
        };
        let by_name = || {
            which
                .iter()
                .map(|&i| &self.slots[i])
                .filter(|x| x.reads.contains(&s))
        };
        let mut visible: Vec<&str> = own()
            .flat_map(|x| x.resource.visible.iter().map(String::as_str))
            .collect();
        if by_name().next().is_some() {
            visible.extend(source.named_keys().iter().map(String::as_str));
        }
        Interest {
            prefixes: sidekick_backend::minimal_prefixes(&visible),
            services: source.backend.has_catalog()
                && own().chain(by_name()).any(|x| x.resource.uses_catalog),
        }
    }

    /// Renders resource `i` from the data held now and checks its
    /// `output_format`, as a pass does before staging, and returns the text
    /// instead of writing it. The error names the template's file and line,
    /// with secret values masked.
    pub fn render_to_memory(&self, i: usize) -> Result<String, String> {
        let resource = &self.slots[i].resource;
        let redact = self.redactor(&self.slots[i]);
        let content = self.render_content(i, &redact).map_err(|f| f.message)?;
        if let Some(format) = resource.output_format {
            pipeline::validate_format(format, &content)
                .map_err(|e| redact.apply(&e.to_string()))?;
        }
        Ok(content)
    }
}

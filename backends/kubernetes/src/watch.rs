//! Loading once and watching: one kube-runtime watcher per target (and two for
//! the catalog: Services, EndpointSlices), all polled inside one [`Machine`]
//! that [`drive`] runs.
//!
//! Each source keeps the objects it last saw. After a batch of events, every
//! source that changed is turned back into keys for its own region of the tree
//! (`/configmaps/app`, or all of `/configmaps`), and only what differs from
//! what the stream reported before goes out. A relist after `410 Gone` thus
//! reports nothing when nothing changed. Nothing is reported until every source
//! has listed once; that first report is a whole [`Update::Snapshot`].
//!
//! The watchers re-watch and relist on their own, with kube's backoff; the
//! errors they surface are the machine's [`Step::Failed`], so the driver paces
//! the retries and reports an outage once, not once per watcher retry.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, ReadyChunks, SelectAll};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use sidekick_backend::{
    drive, BackendError, Backoff, Catalog, Interest, KeyTree, Label, Machine, Names, Snapshot,
    Step, Update, UpdateStream,
};

use crate::catalog::{self, Slice};
use crate::connect::{Connection, Shared};
use crate::error::{self, Op};
use crate::layout::{Data, Kind, Plan, Target, Value};
use crate::warn::WarnOnce;
use crate::NAME;

/// RBAC resource names, for messages.
const SERVICES: &str = "services";
const ENDPOINTSLICES: &str = "endpointslices.discovery.k8s.io";

/// Reads everything `interest` covers, once.
pub(crate) async fn load(shared: &Shared, interest: &Interest) -> Result<Snapshot, BackendError> {
    let conn = shared.connection().await?;
    let plan = Plan::new(interest, &conn.scope);
    shared.warned.ignored_prefixes(&plan);
    let lists = plan.targets.iter().map(|t| list_target(conn, t));
    let catalog = async {
        if plan.services {
            load_catalog(conn).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let (lists, catalog) =
        futures::future::try_join(futures::future::try_join_all(lists), catalog).await?;
    let mut keys = KeyTree::new();
    let qualified = conn.scope.qualified();
    for (target, objects) in plan.targets.iter().zip(lists) {
        for data in &objects {
            insert_keys(
                &mut keys,
                interest,
                target.kind,
                data,
                qualified,
                &shared.warned,
            );
        }
    }
    tracing::debug!(
        backend = NAME,
        namespace = %conn.scope.describe(),
        keys = keys.len(),
        services = catalog.as_ref().map(|c| c.services().len()),
        "loaded"
    );
    Ok(Snapshot { keys, catalog })
}

/// Retry delays between failed steps of a watch. kube's own watcher backoff
/// runs at the same time, so a watcher retries after the longer of the two.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Watches everything `interest` covers until dropped.
pub(crate) fn stream(shared: Arc<Shared>, interest: Interest) -> UpdateStream {
    let label = Label::new(NAME, shared.endpoint());
    let backoff = Backoff::new(BACKOFF_START, BACKOFF_CAP);
    drive(Phase::Connecting { shared, interest }, backoff, label)
}

fn list_params(target: &Target, labels: Option<&str>) -> ListParams {
    let mut lp = ListParams::default();
    if let Some(fields) = target.field_selector() {
        lp = lp.fields(&fields);
    }
    if let Some(labels) = labels {
        lp = lp.labels(labels);
    }
    lp
}

/// A namespaced Api, or a cluster-wide one for `None`.
fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn list_target(conn: &Connection, target: &Target) -> Result<Vec<Data>, BackendError> {
    let lp = list_params(target, conn.labels.as_deref());
    let ns = target.namespace.as_deref();
    let op = Op {
        verb: "list",
        resource: target.kind.resource(),
        namespace: ns,
        server: &conn.server,
    };
    let fail = |e| error::from_client(e, op);
    Ok(match target.kind {
        Kind::ConfigMap => api::<ConfigMap>(&conn.client, ns)
            .list(&lp)
            .await
            .map_err(fail)?
            .items
            .into_iter()
            .map(Data::from_configmap)
            .collect(),
        Kind::Secret => api::<Secret>(&conn.client, ns)
            .list(&lp)
            .await
            .map_err(fail)?
            .items
            .into_iter()
            .map(Data::from_secret)
            .collect(),
    })
}

/// The namespaces a catalog watch or list covers: each listed one, or `None`
/// for one cluster-wide request.
fn catalog_scopes(scope: &crate::scope::Scope) -> Vec<Option<String>> {
    match &scope.namespaces {
        Some(list) => list.iter().cloned().map(Some).collect(),
        None => vec![None],
    }
}

async fn load_catalog(conn: &Connection) -> Result<Catalog, BackendError> {
    let lp = ListParams::default();
    let per_scope = catalog_scopes(&conn.scope).into_iter().map(|ns| {
        let lp = &lp;
        async move {
            let op = |resource| Op {
                verb: "list",
                resource,
                namespace: ns.as_deref(),
                server: &conn.server,
            };
            let services = api::<Service>(&conn.client, ns.as_deref());
            let slices = api::<EndpointSlice>(&conn.client, ns.as_deref());
            futures::future::try_join(
                async {
                    services
                        .list(lp)
                        .await
                        .map_err(|e| error::from_client(e, op(SERVICES)))
                },
                async {
                    slices
                        .list(lp)
                        .await
                        .map_err(|e| error::from_client(e, op(ENDPOINTSLICES)))
                },
            )
            .await
        }
    });
    let lists = futures::future::try_join_all(per_scope).await?;
    let qualified = conn.scope.qualified();
    let mut names = Vec::new();
    let mut slices = Vec::new();
    for (services, found) in lists {
        names.extend(
            services.items.iter().map(|s| {
                service_name(&s.namespace().unwrap_or_default(), &s.name_any(), qualified)
            }),
        );
        slices.extend(
            found
                .items
                .into_iter()
                .map(|s| qualify_slice(Slice::from_endpoint_slice(s), qualified)),
        );
    }
    Ok(catalog::build(names.iter().map(String::as_str), &slices))
}

/// A Service's catalog name: `<name>`, or `<name>.<ns>` with several
/// namespaces (neither part may hold a dot, so it is unambiguous).
fn service_name(namespace: &str, name: &str, qualified: bool) -> String {
    if qualified {
        format!("{name}.{namespace}")
    } else {
        name.to_string()
    }
}

/// A slice whose Service is named as [`service_name`] names it.
fn qualify_slice(mut slice: Slice, qualified: bool) -> Slice {
    if qualified {
        slice.service = slice
            .service
            .map(|s| service_name(&slice.namespace, &s, true));
    }
    slice
}

/// Adds `data`'s keys that `interest` covers; binary values are left out with a
/// warning (once per key) that names the key, never the value.
fn insert_keys(
    keys: &mut KeyTree,
    interest: &Interest,
    kind: Kind,
    data: &Data,
    qualified: bool,
    warned: &WarnOnce,
) {
    for (key, value) in data.keys(kind, qualified) {
        if !interest.covers(&key) {
            continue;
        }
        match value {
            Value::Text(text) => {
                keys.insert(&key, text.clone());
            }
            Value::Binary(bytes) => warned.binary_value(&key, *bytes),
        }
    }
}

/// An object as a source keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Obj {
    Data(Data),
    /// A Service by its catalog name (see [`service_name`]).
    Service(String),
    /// A slice, its Service named as [`service_name`] names it.
    Slice(Slice),
}

impl Obj {
    /// Unique within a source, cluster-wide ones included: `<ns>/<name>`, or
    /// a Service's catalog name (which holds the namespace when it must).
    fn key(&self) -> String {
        match self {
            Obj::Data(d) => format!("{}/{}", d.namespace, d.name),
            Obj::Service(name) => name.clone(),
            Obj::Slice(s) => format!("{}/{}", s.namespace, s.name),
        }
    }
}

fn map_event<K>(event: Event<K>, f: impl Fn(K) -> Obj) -> Event<Obj> {
    match event {
        Event::Apply(k) => Event::Apply(f(k)),
        Event::Delete(k) => Event::Delete(f(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(f(k)),
        Event::InitDone => Event::InitDone,
    }
}

type Events = BoxStream<'static, Result<Event<Obj>, watcher::Error>>;

/// One watcher (list, then watch; relist on 410; backoff on errors).
fn watch_events<K>(
    api: Api<K>,
    config: watcher::Config,
    f: impl Fn(K) -> Obj + Send + Sync + Copy + 'static,
) -> Events
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map_ok(move |event| map_event(event, f))
        .boxed()
}

/// What a source watches.
#[derive(Debug, Clone)]
enum What {
    Keys(Target),
    /// Services of one namespace, or (`None`) of all.
    Services(Option<String>),
    /// EndpointSlices of one namespace, or (`None`) of all.
    Slices(Option<String>),
}

impl What {
    fn resource(&self) -> &'static str {
        match self {
            What::Keys(t) => t.kind.resource(),
            What::Services(_) => SERVICES,
            What::Slices(_) => ENDPOINTSLICES,
        }
    }

    /// The namespace it reads; `None`: all of them.
    fn namespace(&self) -> Option<&str> {
        match self {
            What::Keys(t) => t.namespace.as_deref(),
            What::Services(ns) | What::Slices(ns) => ns.as_deref(),
        }
    }

    fn open(&self, conn: &Connection) -> Events {
        let client = &conn.client;
        let ns = self.namespace();
        let qualified = conn.scope.qualified();
        match self {
            What::Keys(target) => {
                let mut config = watcher::Config::default();
                if let Some(fields) = target.field_selector() {
                    config = config.fields(&fields);
                }
                if let Some(labels) = &conn.labels {
                    config = config.labels(labels);
                }
                match target.kind {
                    Kind::ConfigMap => watch_events(api(client, ns), config, |cm| {
                        Obj::Data(Data::from_configmap(cm))
                    }),
                    Kind::Secret => {
                        watch_events(api(client, ns), config, |s| Obj::Data(Data::from_secret(s)))
                    }
                }
            }
            What::Services(_) => watch_events(
                api::<Service>(client, ns),
                watcher::Config::default(),
                move |s| {
                    let namespace = s.namespace().unwrap_or_default();
                    Obj::Service(service_name(&namespace, &s.name_any(), qualified))
                },
            ),
            What::Slices(_) => watch_events(
                api::<EndpointSlice>(client, ns),
                watcher::Config::default(),
                move |s| Obj::Slice(qualify_slice(Slice::from_endpoint_slice(s), qualified)),
            ),
        }
    }
}

/// One watch and the objects it has seen.
#[derive(Debug)]
struct Source {
    what: What,
    /// Has completed a list since the stream started.
    synced: bool,
    objects: BTreeMap<String, Obj>,
    /// Objects of a list in progress; they replace `objects` when it is done.
    listing: Option<BTreeMap<String, Obj>>,
    /// Its last item was an error: until it delivers again, a quiet batch
    /// from another source does not mean the watch is whole again.
    failing: bool,
}

impl Source {
    fn new(what: What) -> Source {
        Source {
            what,
            synced: false,
            objects: BTreeMap::new(),
            listing: None,
            failing: false,
        }
    }

    /// Applies an event; true when `objects` may have changed.
    fn apply(&mut self, event: Event<Obj>) -> bool {
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let listing = self.listing.get_or_insert_with(BTreeMap::new);
                listing.insert(obj.key(), obj);
                false
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(obj) => {
                let key = obj.key();
                let changed = self.objects.get(&key) != Some(&obj);
                self.objects.insert(key, obj);
                changed
            }
            Event::Delete(obj) => self.objects.remove(&obj.key()).is_some(),
        }
    }
}

/// The watch's memory: sources, and what was reported to the consumer.
struct State {
    interest: Interest,
    /// Keys carry the namespace (several namespaces or all).
    qualified: bool,
    server: String,
    sources: Vec<Source>,
    /// Keys and catalog as last reported; `None` before the first snapshot.
    reported: Option<(KeyTree, Option<Catalog>)>,
    /// Sources changed since the last flush.
    dirty: BTreeSet<usize>,
    warned: Arc<WarnOnce>,
}

impl State {
    fn new(
        interest: Interest,
        qualified: bool,
        server: &str,
        whats: Vec<What>,
        warned: &Arc<WarnOnce>,
    ) -> State {
        State {
            interest,
            qualified,
            server: server.to_string(),
            sources: whats.into_iter().map(Source::new).collect(),
            reported: None,
            dirty: BTreeSet::new(),
            warned: Arc::clone(warned),
        }
    }

    /// Applies one item of source `id`. A watcher failure comes back as the
    /// error to report; `410 Gone` is none (the watcher relists by itself).
    fn handle(
        &mut self,
        id: usize,
        item: Result<Event<Obj>, watcher::Error>,
    ) -> Result<(), BackendError> {
        let Some(source) = self.sources.get_mut(id) else {
            return Ok(());
        };
        match item {
            Ok(event) => {
                if std::mem::take(&mut source.failing) {
                    tracing::debug!(
                        backend = NAME,
                        resource = source.what.resource(),
                        "watch recovered"
                    );
                }
                if source.apply(event) {
                    self.dirty.insert(id);
                }
                Ok(())
            }
            Err(e) if error::is_gone(&e) => {
                tracing::debug!(
                    backend = NAME,
                    resource = source.what.resource(),
                    "resourceVersion expired (410 Gone); relisting"
                );
                Ok(())
            }
            Err(e) => {
                source.failing = true;
                let op = Op {
                    verb: "watch",
                    resource: source.what.resource(),
                    namespace: source.what.namespace(),
                    server: &self.server,
                };
                Err(error::from_watcher(e, op))
            }
        }
    }

    /// True when no source's last item was an error.
    fn healthy(&self) -> bool {
        self.sources.iter().all(|s| !s.failing)
    }

    /// Turns what changed since the last flush into updates: `None` until
    /// every source has listed once, then one whole snapshot, then the puts,
    /// deletes and catalog that differ from what was reported (maybe none).
    fn flush(&mut self) -> Option<Vec<Update>> {
        let dirty = std::mem::take(&mut self.dirty);
        let Some((keys, reported_catalog)) = &mut self.reported else {
            if !self.sources.iter().all(|s| s.synced) {
                return None;
            }
            let snapshot = Snapshot {
                keys: self.all_keys(),
                catalog: self.catalog(),
            };
            tracing::debug!(backend = NAME, keys = snapshot.keys.len(), "watch synced");
            self.reported = Some((snapshot.keys.clone(), snapshot.catalog.clone()));
            return Some(vec![Update::Snapshot(snapshot)]);
        };
        let mut updates = Vec::new();
        let mut catalog_dirty = false;
        for id in dirty {
            let source = &self.sources[id];
            match &source.what {
                What::Keys(target) => {
                    let mut fresh = KeyTree::new();
                    for obj in source.objects.values() {
                        if let Obj::Data(data) = obj {
                            insert_keys(
                                &mut fresh,
                                &self.interest,
                                target.kind,
                                data,
                                self.qualified,
                                &self.warned,
                            );
                        }
                    }
                    diff_region(keys, &fresh, &target.region(self.qualified), &mut updates);
                }
                What::Services(_) | What::Slices(_) => catalog_dirty = true,
            }
        }
        if catalog_dirty {
            let fresh = catalog_of(&self.sources);
            if fresh.is_some() && fresh != *reported_catalog {
                *reported_catalog = fresh.clone();
                if let Some(c) = fresh {
                    updates.push(Update::Catalog(c));
                }
            }
        }
        if !updates.is_empty() {
            tracing::debug!(backend = NAME, updates = updates.len(), "watch change");
        }
        Some(updates)
    }

    fn all_keys(&mut self) -> KeyTree {
        let mut keys = KeyTree::new();
        for source in &self.sources {
            if let What::Keys(target) = &source.what {
                for obj in source.objects.values() {
                    if let Obj::Data(data) = obj {
                        insert_keys(
                            &mut keys,
                            &self.interest,
                            target.kind,
                            data,
                            self.qualified,
                            &self.warned,
                        );
                    }
                }
            }
        }
        keys
    }

    fn catalog(&self) -> Option<Catalog> {
        catalog_of(&self.sources)
    }
}

/// The catalog from the Services and EndpointSlices sources (one pair per
/// namespace, or one cluster-wide pair), once all of them listed.
fn catalog_of(sources: &[Source]) -> Option<Catalog> {
    let catalog_sources: Vec<&Source> = sources
        .iter()
        .filter(|s| matches!(s.what, What::Services(_) | What::Slices(_)))
        .collect();
    if catalog_sources.is_empty() || catalog_sources.iter().any(|s| !s.synced) {
        return None;
    }
    let mut names = Vec::new();
    let mut slices = Vec::new();
    for obj in catalog_sources.iter().flat_map(|s| s.objects.values()) {
        match obj {
            Obj::Service(name) => names.push(name.as_str()),
            Obj::Slice(slice) => slices.push(slice),
            Obj::Data(_) => {}
        }
    }
    Some(catalog::build(names, slices))
}

/// Puts and deletes that turn `reported`'s keys under `region` into `fresh`'s,
/// applied to `reported` too.
fn diff_region(reported: &mut KeyTree, fresh: &KeyTree, region: &str, out: &mut Vec<Update>) {
    let gone: Vec<String> = reported
        .under(region)
        .filter(|(k, _)| fresh.get(k).is_none())
        .map(|(k, _)| k.to_string())
        .collect();
    for key in gone {
        reported.remove(&key);
        out.push(Update::Delete { key });
    }
    for (key, value) in fresh.iter() {
        if reported.get(key) != Some(value) {
            reported.insert(key, value);
            out.push(Update::Put {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
    }
}

/// One watcher item, tagged with its source's index.
type Tagged = (usize, Result<Event<Obj>, watcher::Error>);

/// Tagged events of all sources, in batches of what is ready at once.
type Merged = ReadyChunks<SelectAll<BoxStream<'static, Tagged>>>;

fn merge(streams: Vec<Events>) -> Merged {
    let tagged = streams
        .into_iter()
        .enumerate()
        .map(|(id, events)| events.map(move |item| (id, item)).boxed());
    stream::select_all(tagged).ready_chunks(256)
}

/// The watch over one interest, as the driver runs it.
enum Phase {
    /// Building the client (on first use) and opening the watchers.
    Connecting {
        shared: Arc<Shared>,
        interest: Interest,
    },
    /// The watchers are open; their events go into the store.
    Watching(Box<Running>),
    /// The interest reads nothing: its empty snapshot went out, and nothing
    /// will ever change. Pending for good rather than ending, which would say
    /// the backend gave up.
    Idle,
}

/// Open watchers and the store they fill.
struct Running {
    events: Merged,
    /// Items read but not handled yet: what followed a failure in its batch.
    backlog: VecDeque<Tagged>,
    /// A failure to report on the next step, after the changes before it.
    failed: Option<BackendError>,
    state: State,
}

impl Machine for Phase {
    fn state(&self) -> &'static str {
        match self {
            Phase::Connecting { .. } => "connecting",
            Phase::Watching(_) => "watching",
            Phase::Idle => "idle",
        }
    }

    const NAMES: Names = Names::new("kubernetes watch", "kubernetes API server");

    async fn step(&mut self) -> Step {
        match self {
            Phase::Connecting { shared, interest } => {
                let conn = match shared.connection().await {
                    Ok(conn) => conn,
                    Err(e) => return Step::Failed(e),
                };
                match start(conn, interest.clone(), &shared.warned) {
                    Some(running) => {
                        *self = Phase::Watching(running);
                        Step::Pending
                    }
                    None => {
                        *self = Phase::Idle;
                        Step::Updates(vec![Update::Snapshot(Snapshot::default())])
                    }
                }
            }
            Phase::Watching(running) => running.step().await,
            Phase::Idle => std::future::pending().await,
        }
    }
}

impl Running {
    /// Handles the next batch of events (or the rest of the last one).
    async fn step(&mut self) -> Step {
        if let Some(error) = self.failed.take() {
            return Step::Failed(error);
        }
        if self.backlog.is_empty() {
            // The watchers retry on their own and never end, so `None`
            // cannot come; should it, wait for good rather than end.
            let Some(batch) = self.events.next().await else {
                return std::future::pending().await;
            };
            self.backlog.extend(batch);
        }
        while let Some((id, item)) = self.backlog.pop_front() {
            if let Err(error) = self.state.handle(id, item) {
                return match self.state.flush() {
                    Some(updates) if !updates.is_empty() => {
                        self.failed = Some(error);
                        Step::Updates(updates)
                    }
                    _ => Step::Failed(error),
                };
            }
        }
        match self.state.flush() {
            // An empty batch tells the driver the watch answered; only when
            // every source did, so another source's quiet event does not end
            // an outage that goes on.
            Some(updates) if !updates.is_empty() || self.state.healthy() => Step::Updates(updates),
            _ => Step::Pending,
        }
    }
}

/// Opens one watch per source; `None` when the interest reads nothing.
fn start(conn: &Connection, interest: Interest, warned: &Arc<WarnOnce>) -> Option<Box<Running>> {
    let plan = Plan::new(&interest, &conn.scope);
    warned.ignored_prefixes(&plan);
    let mut whats: Vec<What> = plan.targets.iter().cloned().map(What::Keys).collect();
    if plan.services {
        for ns in catalog_scopes(&conn.scope) {
            whats.push(What::Services(ns.clone()));
            whats.push(What::Slices(ns));
        }
    }
    if whats.is_empty() {
        return None;
    }
    let events = merge(whats.iter().map(|what| what.open(conn)).collect());
    tracing::debug!(
        backend = NAME,
        namespace = %conn.scope.describe(),
        watches = whats.len(),
        "watching"
    );
    Some(Box::new(Running {
        events,
        backlog: VecDeque::new(),
        failed: None,
        state: State::new(
            interest,
            conn.scope.qualified(),
            &conn.server,
            whats,
            warned,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc::{unbounded, UnboundedSender};

    use super::*;

    type Tx = UnboundedSender<Result<Event<Obj>, watcher::Error>>;

    fn data(name: &str, pairs: &[(&str, &str)]) -> Obj {
        Obj::Data(Data {
            namespace: "default".into(),
            name: name.into(),
            entries: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
                .collect(),
        })
    }

    /// A watch over `prefixes` whose sources are channels the test feeds,
    /// driven as the backend drives it, with a fast backoff.
    fn watching(prefixes: &[&str]) -> (UpdateStream, Vec<Tx>) {
        let interest = Interest {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            services: false,
        };
        let whats: Vec<What> = Plan::new(&interest, &crate::scope::Scope::one("default"))
            .targets
            .into_iter()
            .map(What::Keys)
            .collect();
        let (txs, rxs): (Vec<Tx>, Vec<Events>) = whats
            .iter()
            .map(|_| {
                let (tx, rx) = unbounded();
                (tx, rx.boxed())
            })
            .unzip();
        let running = Running {
            events: merge(rxs),
            backlog: VecDeque::new(),
            failed: None,
            state: State::new(
                interest,
                false,
                "http://127.0.0.1:1/",
                whats,
                &Arc::default(),
            ),
        };
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
        let label = Label::new(NAME, "test");
        (
            drive(Phase::Watching(Box::new(running)), backoff, label),
            txs,
        )
    }

    fn list(tx: &Tx, objs: Vec<Obj>) {
        let events = std::iter::once(Event::Init)
            .chain(objs.into_iter().map(Event::InitApply))
            .chain(std::iter::once(Event::InitDone));
        for event in events {
            tx.unbounded_send(Ok(event)).expect("watch open");
        }
    }

    fn status(code: u16) -> watcher::Error {
        watcher::Error::WatchError(Box::new(kube::core::Status {
            code,
            message: "no".into(),
            ..Default::default()
        }))
    }

    async fn next(s: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an item")
            .expect("the stream goes on")
    }

    /// Asserts that nothing comes for a while.
    async fn quiet(s: &mut UpdateStream) {
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), s.next()).await {
            panic!("unexpected {item:?}");
        }
    }

    fn snapshot(batch: &[Update]) -> &Snapshot {
        match batch {
            [Update::Snapshot(snap)] => snap,
            other => panic!("expected one snapshot, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn first_sync_is_one_snapshot_then_diffs() {
        let (mut s, txs) = watching(&["/configmaps/app"]);
        list(&txs[0], vec![data("app", &[("a", "1"), ("b", "2")])]);
        let first = next(&mut s).await.expect("ok");
        assert_eq!(snapshot(&first).keys.get("/configmaps/app/a"), Some("1"));
        txs[0]
            .unbounded_send(Ok(Event::Apply(data("app", &[("a", "1"), ("c", "3")]))))
            .expect("open");
        assert_eq!(
            next(&mut s).await.expect("ok"),
            [
                Update::Delete {
                    key: "/configmaps/app/b".into()
                },
                Update::Put {
                    key: "/configmaps/app/c".into(),
                    value: "3".into()
                }
            ]
        );
    }

    #[tokio::test]
    async fn relist_without_change_reports_nothing() {
        let (mut s, txs) = watching(&["/"]);
        list(&txs[0], vec![data("app", &[("a", "1")])]);
        quiet(&mut s).await;
        list(&txs[1], vec![]);
        next(&mut s)
            .await
            .expect("one snapshot once both sources listed");
        let gone = kube::core::Status {
            code: 410,
            reason: "Expired".into(),
            ..Default::default()
        };
        txs[0]
            .unbounded_send(Err(watcher::Error::WatchError(Box::new(gone))))
            .expect("open");
        list(&txs[0], vec![data("app", &[("a", "1")])]);
        quiet(&mut s).await;
        // The next item is the next real change.
        txs[0]
            .unbounded_send(Ok(Event::Apply(data("app", &[("a", "2")]))))
            .expect("open");
        assert_eq!(
            next(&mut s).await.expect("ok"),
            [Update::Put {
                key: "/configmaps/app/a".into(),
                value: "2".into()
            }]
        );
    }

    #[tokio::test]
    async fn repeated_errors_go_out_once() {
        let (mut s, txs) = watching(&["/configmaps"]);
        for _ in 0..3 {
            txs[0].unbounded_send(Err(status(403))).expect("open");
        }
        assert!(matches!(
            next(&mut s).await,
            Err(BackendError::Denied { .. })
        ));
        quiet(&mut s).await;
        // The watcher gets through: the first good item is the snapshot.
        list(&txs[0], vec![data("app", &[("a", "1")])]);
        let first = next(&mut s).await.expect("ok");
        assert_eq!(snapshot(&first).keys.len(), 1);
    }

    #[tokio::test]
    async fn an_outage_ends_with_an_empty_batch_once_every_source_answers() {
        let (mut s, txs) = watching(&["/configmaps", "/secrets"]);
        list(&txs[0], vec![data("app", &[("a", "1")])]);
        list(&txs[1], vec![]);
        next(&mut s).await.expect("snapshot");
        txs[0].unbounded_send(Err(status(500))).expect("open");
        let err = next(&mut s).await.expect_err("the outage");
        assert!(err.is_transient(), "{err}");
        // A quiet relist of the other source does not end it.
        list(&txs[1], vec![]);
        quiet(&mut s).await;
        // The failing one relists with nothing new: an empty batch says so.
        list(&txs[0], vec![data("app", &[("a", "1")])]);
        assert_eq!(next(&mut s).await.expect("ok"), []);
    }

    #[tokio::test]
    async fn changes_before_a_failure_go_out_before_it() {
        let (mut s, txs) = watching(&["/configmaps/app"]);
        list(&txs[0], vec![data("app", &[("a", "1")])]);
        next(&mut s).await.expect("snapshot");
        txs[0]
            .unbounded_send(Ok(Event::Apply(data("app", &[("a", "2")]))))
            .expect("open");
        txs[0].unbounded_send(Err(status(403))).expect("open");
        txs[0]
            .unbounded_send(Ok(Event::Apply(data("app", &[("a", "3")]))))
            .expect("open");
        let put = |v: &str| Update::Put {
            key: "/configmaps/app/a".into(),
            value: v.into(),
        };
        assert_eq!(next(&mut s).await.expect("ok"), [put("2")]);
        assert!(matches!(
            next(&mut s).await,
            Err(BackendError::Denied { .. })
        ));
        assert_eq!(next(&mut s).await.expect("ok"), [put("3")]);
    }

    #[tokio::test]
    async fn keys_outside_the_interest_stay_out() {
        let (mut s, txs) = watching(&["/configmaps/app/a"]);
        list(&txs[0], vec![data("app", &[("a", "1"), ("b", "2")])]);
        let first = next(&mut s).await.expect("ok");
        assert_eq!(snapshot(&first).keys.len(), 1);
    }
}

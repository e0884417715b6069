//! Loading once and watching: one kube-runtime watcher per target (and two for
//! the catalog: Services, EndpointSlices), all polled inside one stream.
//!
//! Each source keeps the objects it last saw. After a batch of events, every
//! source that changed is turned back into keys for its own region of the tree
//! (`/configmaps/app`, or all of `/configmaps`), and only what differs from
//! what the stream reported before goes out. A relist after `410 Gone` thus
//! reports nothing when nothing changed. Nothing is reported until every source
//! has listed once; that first report is a whole [`Update::Snapshot`].

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::{self, BoxStream, ReadyChunks, SelectAll};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use sidekick_backend::{BackendError, Catalog, Interest, KeyTree, Snapshot, Update, UpdateStream};

use crate::catalog::{self, Slice};
use crate::connect::{Connection, Shared};
use crate::error::{self, Op};
use crate::layout::{Data, Kind, Plan, Target, Value};
use crate::NAME;

/// RBAC resource names, for messages.
const SERVICES: &str = "services";
const ENDPOINTSLICES: &str = "endpointslices.discovery.k8s.io";

/// Reads everything `interest` covers, once.
pub(crate) async fn load(shared: &Shared, interest: &Interest) -> Result<Snapshot, BackendError> {
    let conn = shared.connection().await?;
    let plan = Plan::new(interest);
    warn_ignored(&plan, &shared.warned);
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
    for (target, objects) in plan.targets.iter().zip(lists) {
        for data in &objects {
            insert_keys(&mut keys, interest, target.kind, data, &shared.warned);
        }
    }
    tracing::debug!(
        backend = NAME,
        namespace = %conn.namespace,
        keys = keys.len(),
        services = catalog.as_ref().map(|c| c.services().len()),
        "loaded"
    );
    Ok(Snapshot { keys, catalog })
}

/// Watches everything `interest` covers until dropped.
pub(crate) fn stream(shared: Arc<Shared>, interest: Interest) -> UpdateStream {
    stream::unfold(
        Phase::Connecting {
            shared,
            interest,
            retry: None,
        },
        step,
    )
    .boxed()
}

/// Things warned about already, so that a poll or relist does not repeat them.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce(Mutex<HashSet<String>>);

impl WarnOnce {
    /// True the first time `what` is seen.
    fn first(&self, what: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.insert(what.to_string())
    }
}

fn warn_ignored(plan: &Plan, warned: &WarnOnce) {
    for prefix in &plan.ignored {
        if !warned.first(&format!("prefix {prefix}")) {
            continue;
        }
        tracing::warn!(
            backend = NAME,
            prefix = %prefix,
            "prefix is outside the Kubernetes key layout (/configmaps/..., /secrets/...); it reads nothing"
        );
    }
}

fn list_params(target: &Target) -> ListParams {
    match target.field_selector() {
        Some(fields) => ListParams::default().fields(&fields),
        None => ListParams::default(),
    }
}

async fn list_target(conn: &Connection, target: &Target) -> Result<Vec<Data>, BackendError> {
    let lp = list_params(target);
    let op = Op {
        verb: "list",
        resource: target.kind.resource(),
        namespace: &conn.namespace,
        server: &conn.server,
    };
    let fail = |e| error::from_client(e, op);
    Ok(match target.kind {
        Kind::ConfigMap => Api::<ConfigMap>::namespaced(conn.client.clone(), &conn.namespace)
            .list(&lp)
            .await
            .map_err(fail)?
            .items
            .into_iter()
            .map(Data::from_configmap)
            .collect(),
        Kind::Secret => Api::<Secret>::namespaced(conn.client.clone(), &conn.namespace)
            .list(&lp)
            .await
            .map_err(fail)?
            .items
            .into_iter()
            .map(Data::from_secret)
            .collect(),
    })
}

async fn load_catalog(conn: &Connection) -> Result<Catalog, BackendError> {
    let op = |resource| Op {
        verb: "list",
        resource,
        namespace: &conn.namespace,
        server: &conn.server,
    };
    let lp = ListParams::default();
    let services = Api::<Service>::namespaced(conn.client.clone(), &conn.namespace);
    let slices = Api::<EndpointSlice>::namespaced(conn.client.clone(), &conn.namespace);
    let (services, slices) = futures::future::try_join(
        async {
            services
                .list(&lp)
                .await
                .map_err(|e| error::from_client(e, op(SERVICES)))
        },
        async {
            slices
                .list(&lp)
                .await
                .map_err(|e| error::from_client(e, op(ENDPOINTSLICES)))
        },
    )
    .await?;
    let names: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    let slices: Vec<Slice> = slices
        .items
        .into_iter()
        .map(Slice::from_endpoint_slice)
        .collect();
    Ok(catalog::build(names.iter().map(String::as_str), &slices))
}

/// Adds `data`'s keys that `interest` covers; binary values are left out with a
/// warning (once per key) that names the key, never the value.
fn insert_keys(
    keys: &mut KeyTree,
    interest: &Interest,
    kind: Kind,
    data: &Data,
    warned: &WarnOnce,
) {
    for (key, value) in data.keys(kind) {
        if !interest.covers(&key) {
            continue;
        }
        match value {
            Value::Text(text) => {
                keys.insert(&key, text.clone());
            }
            Value::Binary(bytes) => {
                if warned.first(&key) {
                    tracing::warn!(
                        backend = NAME,
                        key = %key,
                        bytes,
                        "value is not UTF-8 text; it is left out"
                    );
                }
            }
        }
    }
}

/// An object as a source keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Obj {
    Data(Data),
    Service(String),
    Slice(Slice),
}

impl Obj {
    fn name(&self) -> &str {
        match self {
            Obj::Data(d) => &d.name,
            Obj::Service(name) => name,
            Obj::Slice(s) => &s.name,
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
fn watch_events<K>(api: Api<K>, config: watcher::Config, f: fn(K) -> Obj) -> Events
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
    Services,
    Slices,
}

impl What {
    fn resource(&self) -> &'static str {
        match self {
            What::Keys(t) => t.kind.resource(),
            What::Services => SERVICES,
            What::Slices => ENDPOINTSLICES,
        }
    }

    fn open(&self, conn: &Connection) -> Events {
        let client = conn.client.clone();
        let ns = conn.namespace.as_str();
        match self {
            What::Keys(target) => {
                let mut config = watcher::Config::default();
                if let Some(fields) = target.field_selector() {
                    config = config.fields(&fields);
                }
                match target.kind {
                    Kind::ConfigMap => watch_events(Api::namespaced(client, ns), config, |cm| {
                        Obj::Data(Data::from_configmap(cm))
                    }),
                    Kind::Secret => watch_events(Api::namespaced(client, ns), config, |s| {
                        Obj::Data(Data::from_secret(s))
                    }),
                }
            }
            What::Services => watch_events(
                Api::<Service>::namespaced(client, ns),
                watcher::Config::default(),
                |s| Obj::Service(s.name_any()),
            ),
            What::Slices => watch_events(
                Api::<EndpointSlice>::namespaced(client, ns),
                watcher::Config::default(),
                |s| Obj::Slice(Slice::from_endpoint_slice(s)),
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
    /// The last error reported for this source, until it recovers.
    error: Option<String>,
}

impl Source {
    fn new(what: What) -> Source {
        Source {
            what,
            synced: false,
            objects: BTreeMap::new(),
            listing: None,
            error: None,
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
                listing.insert(obj.name().to_string(), obj);
                false
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(obj) => {
                let changed = self.objects.get(obj.name()) != Some(&obj);
                self.objects.insert(obj.name().to_string(), obj);
                changed
            }
            Event::Delete(obj) => self.objects.remove(obj.name()).is_some(),
        }
    }
}

/// The watch's memory: sources, and what was reported to the consumer.
struct State {
    interest: Interest,
    namespace: String,
    server: String,
    sources: Vec<Source>,
    /// Keys and catalog as last reported; `None` before the first snapshot.
    reported: Option<(KeyTree, Option<Catalog>)>,
    /// Sources changed since the last flush.
    dirty: BTreeSet<usize>,
    /// An error went out and no good batch since.
    errored: bool,
    pending: VecDeque<Result<Vec<Update>, BackendError>>,
    warned: Arc<WarnOnce>,
}

impl State {
    fn handle(&mut self, id: usize, item: Result<Event<Obj>, watcher::Error>) {
        let Some(source) = self.sources.get_mut(id) else {
            return;
        };
        match item {
            Ok(event) => {
                if source.error.take().is_some() {
                    tracing::debug!(
                        backend = NAME,
                        resource = source.what.resource(),
                        "watch recovered"
                    );
                }
                if source.apply(event) {
                    self.dirty.insert(id);
                }
            }
            Err(e) if error::is_gone(&e) => {
                tracing::debug!(
                    backend = NAME,
                    resource = source.what.resource(),
                    "resourceVersion expired (410 Gone); relisting"
                );
            }
            Err(e) => {
                let op = Op {
                    verb: "watch",
                    resource: source.what.resource(),
                    namespace: &self.namespace,
                    server: &self.server,
                };
                let err = error::from_watcher(e, op);
                let text = err.to_string();
                // The watcher retries with backoff; say each distinct failure once.
                if source.error.as_deref() != Some(text.as_str()) {
                    tracing::debug!(backend = NAME, resource = source.what.resource(), error = %text, "watch failed");
                    source.error = Some(text);
                    self.errored = true;
                    self.pending.push_back(Err(err));
                }
            }
        }
    }

    /// Turns what changed into updates.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let Some((keys, reported_catalog)) = &mut self.reported else {
            if self.sources.iter().all(|s| s.synced) {
                let snapshot = Snapshot {
                    keys: self.all_keys(),
                    catalog: self.catalog(),
                };
                tracing::debug!(backend = NAME, keys = snapshot.keys.len(), "watch synced");
                self.reported = Some((snapshot.keys.clone(), snapshot.catalog.clone()));
                self.errored = false;
                self.pending.push_back(Ok(vec![Update::Snapshot(snapshot)]));
            }
            return;
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
                                &self.warned,
                            );
                        }
                    }
                    diff_region(keys, &fresh, &target.region(), &mut updates);
                }
                What::Services | What::Slices => catalog_dirty = true,
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
        let recovered = self.errored && self.sources.iter().all(|s| s.error.is_none());
        if !updates.is_empty() || recovered {
            tracing::debug!(backend = NAME, updates = updates.len(), "watch change");
            self.errored = false;
            self.pending.push_back(Ok(updates));
        }
    }

    fn all_keys(&mut self) -> KeyTree {
        let mut keys = KeyTree::new();
        for source in &self.sources {
            if let What::Keys(target) = &source.what {
                for obj in source.objects.values() {
                    if let Obj::Data(data) = obj {
                        insert_keys(&mut keys, &self.interest, target.kind, data, &self.warned);
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

/// The catalog from the Services and EndpointSlices sources, once both listed.
fn catalog_of(sources: &[Source]) -> Option<Catalog> {
    let services = sources.iter().find(|s| matches!(s.what, What::Services))?;
    let slices = sources.iter().find(|s| matches!(s.what, What::Slices))?;
    if !services.synced || !slices.synced {
        return None;
    }
    let names = services.objects.keys().map(String::as_str);
    let slices = slices.objects.values().filter_map(|o| match o {
        Obj::Slice(s) => Some(s),
        _ => None,
    });
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

/// Tagged events of all sources, in batches of what is ready at once.
type Merged =
    ReadyChunks<SelectAll<BoxStream<'static, (usize, Result<Event<Obj>, watcher::Error>)>>>;

struct Running {
    events: Merged,
    state: State,
}

enum Phase {
    Connecting {
        shared: Arc<Shared>,
        interest: Interest,
        retry: Option<Duration>,
    },
    Running(Box<Running>),
}

type Item = Result<Vec<Update>, BackendError>;

async fn step(phase: Phase) -> Option<(Item, Phase)> {
    match phase {
        Phase::Connecting {
            shared,
            interest,
            retry,
        } => {
            if let Some(delay) = retry {
                tokio::time::sleep(delay).await;
            }
            match shared.connection().await {
                Ok(conn) => match start(conn, interest, &shared.warned) {
                    Some(running) => drive(running).await,
                    // Nothing to watch: pending for good rather than ending,
                    // which would make the core fall back to polling.
                    None => std::future::pending().await,
                },
                Err(e) => {
                    let next = retry.map_or(Duration::from_secs(1), |d| {
                        (d * 2).min(Duration::from_secs(30))
                    });
                    Some((
                        Err(e),
                        Phase::Connecting {
                            shared,
                            interest,
                            retry: Some(next),
                        },
                    ))
                }
            }
        }
        Phase::Running(running) => drive(running).await,
    }
}

/// Opens one watch per source; `None` when the interest reads nothing.
fn start(conn: &Connection, interest: Interest, warned: &Arc<WarnOnce>) -> Option<Box<Running>> {
    let plan = Plan::new(&interest);
    warn_ignored(&plan, warned);
    let mut whats: Vec<What> = plan.targets.iter().cloned().map(What::Keys).collect();
    if plan.services {
        whats.push(What::Services);
        whats.push(What::Slices);
    }
    if whats.is_empty() {
        return None;
    }
    let streams: Vec<_> = whats
        .iter()
        .enumerate()
        .map(|(id, what)| what.open(conn).map(move |item| (id, item)).boxed())
        .collect();
    tracing::debug!(
        backend = NAME,
        namespace = %conn.namespace,
        watches = whats.len(),
        "watching"
    );
    let state = State {
        interest,
        namespace: conn.namespace.clone(),
        server: conn.server.clone(),
        sources: whats.into_iter().map(Source::new).collect(),
        reported: None,
        dirty: BTreeSet::new(),
        errored: false,
        pending: VecDeque::new(),
        warned: Arc::clone(warned),
    };
    Some(Box::new(Running {
        events: stream::select_all(streams).ready_chunks(256),
        state,
    }))
}

async fn drive(mut running: Box<Running>) -> Option<(Item, Phase)> {
    loop {
        if let Some(item) = running.state.pending.pop_front() {
            return Some((item, Phase::Running(running)));
        }
        // The watchers never end on their own; `None` cannot come, but if it
        // did the stream would end and the core would fall back to polling.
        let batch = running.events.next().await?;
        for (id, item) in batch {
            running.state.handle(id, item);
        }
        running.state.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str, pairs: &[(&str, &str)]) -> Obj {
        Obj::Data(Data {
            name: name.into(),
            entries: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
                .collect(),
        })
    }

    fn state(prefixes: &[&str]) -> State {
        let interest = Interest {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            services: false,
        };
        let plan = Plan::new(&interest);
        State {
            sources: plan
                .targets
                .into_iter()
                .map(|t| Source::new(What::Keys(t)))
                .collect(),
            interest,
            namespace: "default".into(),
            server: "http://127.0.0.1:1/".into(),
            reported: None,
            dirty: BTreeSet::new(),
            errored: false,
            pending: VecDeque::new(),
            warned: Arc::default(),
        }
    }

    fn list(state: &mut State, id: usize, objs: Vec<Obj>) {
        state.handle(id, Ok(Event::Init));
        for o in objs {
            state.handle(id, Ok(Event::InitApply(o)));
        }
        state.handle(id, Ok(Event::InitDone));
        state.flush();
    }

    #[test]
    fn first_sync_is_one_snapshot_then_diffs() {
        let mut s = state(&["/configmaps/app"]);
        list(&mut s, 0, vec![data("app", &[("a", "1"), ("b", "2")])]);
        let first = s.pending.pop_front().expect("snapshot").expect("ok");
        let Update::Snapshot(snap) = &first[0] else {
            panic!("{first:?}")
        };
        assert_eq!(snap.keys.get("/configmaps/app/a"), Some("1"));
        s.handle(0, Ok(Event::Apply(data("app", &[("a", "1"), ("c", "3")]))));
        s.flush();
        let batch = s.pending.pop_front().expect("diff").expect("ok");
        assert_eq!(
            batch,
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

    #[test]
    fn relist_without_change_reports_nothing() {
        let mut s = state(&["/"]);
        list(&mut s, 0, vec![data("app", &[("a", "1")])]);
        list(&mut s, 1, vec![]);
        assert_eq!(s.pending.len(), 1, "one snapshot once both sources listed");
        s.pending.clear();
        let gone = kube::core::Status {
            code: 410,
            reason: "Expired".into(),
            ..Default::default()
        };
        s.handle(0, Err(watcher::Error::WatchError(Box::new(gone))));
        list(&mut s, 0, vec![data("app", &[("a", "1")])]);
        assert!(s.pending.is_empty(), "{:?}", s.pending);
    }

    #[test]
    fn repeated_errors_go_out_once() {
        let mut s = state(&["/configmaps"]);
        for _ in 0..3 {
            let forbidden = kube::core::Status {
                code: 403,
                message: "no".into(),
                ..Default::default()
            };
            s.handle(0, Err(watcher::Error::WatchError(Box::new(forbidden))));
        }
        assert_eq!(s.pending.len(), 1);
        assert!(matches!(s.pending[0], Err(BackendError::Denied { .. })));
    }

    #[test]
    fn keys_outside_the_interest_stay_out() {
        let mut s = state(&["/configmaps/app/a"]);
        list(&mut s, 0, vec![data("app", &[("a", "1"), ("b", "2")])]);
        let Ok(batch) = s.pending.pop_front().expect("snapshot") else {
            panic!()
        };
        let Update::Snapshot(snap) = &batch[0] else {
            panic!()
        };
        assert_eq!(snap.keys.len(), 1);
    }
}

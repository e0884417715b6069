//! The watch: one blocking query per KV prefix, one on the service list and
//! one per service's health, merged into one stream of update batches.
//!
//! Modelled on kube-runtime's watcher: the stream's whole state is one
//! [`State`] (`Listing` until every target has been read once, then
//! `Watching`), and one step function ([`Watcher::next_item`]) moves it on.
//! What an answer means is decided by [`Watching::on_answer`], which does no
//! I/O: it applies Consul's blocking-query rules, turns the answer into
//! [`Update`]s and says which query to send next and when. The tests at the
//! bottom drive it with made-up answers.
//!
//! Consul's rules (from its "Blocking Queries" documentation) as applied here:
//! - an answer whose `X-Consul-Index` equals the index sent is no change, even
//!   if the body differs (it is not even looked at);
//! - an index that went backwards (a snapshot restore, another agent) resets
//!   the position to 0: the answer is taken as the current state and the next
//!   read does not block, so it picks up a fresh index;
//! - an index of 0 is treated as 1, so a query never spins on index 0;
//! - re-queries of one target start at least [`Timing::min_interval`] apart,
//!   so a key that changes in a loop cannot spin the CPU; a query that blocked
//!   for longer than that is re-issued at once, so a lone change arrives with
//!   no added delay.
//!
//! A failed query keeps its index and is retried after a capped exponential
//! backoff with jitter, so an agent restart resumes where it left off. Errors
//! are items of the stream, reported once per state change: the first
//! "unreachable" of an outage, or a refusal whose message changed (the core
//! logs them; the watch itself logs retries at debug level only). When every
//! query answers again an empty batch says so, and the core logs that. Nothing is spawned: the
//! in-flight queries live in the stream, and dropping it cancels them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sidekick_backend::{
    minimal_prefixes, BackendError, Catalog, Interest, KeyTree, ServiceInstance, Snapshot, Update,
};

use crate::client::{Answer, Api, Body, Target};
use crate::{Timing, NAME};

/// What one read of every target found: the starting point of a watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Listing {
    /// Per prefix: the index and the keys.
    pub kv: BTreeMap<String, (u64, BTreeMap<String, String>)>,
    /// The service list's index and names, when the catalog was asked for.
    pub services: Option<(u64, BTreeSet<String>)>,
    /// Per service: the index and every instance.
    pub health: BTreeMap<String, (u64, Vec<ServiceInstance>)>,
}

impl Listing {
    /// The snapshot the core sees.
    pub fn snapshot(&self) -> Snapshot {
        let mut keys = KeyTree::new();
        for (_, entries) in self.kv.values() {
            for (k, v) in entries {
                keys.insert(k, v.as_str());
            }
        }
        let catalog = self.services.as_ref().map(|_| {
            Catalog::from_services(
                self.health
                    .iter()
                    .map(|(name, (_, instances))| (name.clone(), instances.clone()))
                    .collect(),
            )
        });
        Snapshot { keys, catalog }
    }
}

/// How many reads run at once during a listing.
const LIST_CONCURRENCY: usize = 16;

/// Reads every target of `interest` once, without blocking: each KV prefix,
/// and with `interest.services` the service list and then every service's
/// health.
pub(crate) async fn list(api: &Api, interest: &Interest) -> Result<Listing, BackendError> {
    let prefixes = minimal_prefixes(&interest.prefixes);
    let mut listing = Listing::default();
    let mut kv_reads = futures::stream::iter(prefixes.into_iter().map(|prefix| async move {
        let target = Target::Kv(prefix);
        let answer = api.read(&target, None).await;
        (target, answer)
    }))
    .buffer_unordered(LIST_CONCURRENCY);
    while let Some((target, answer)) = kv_reads.next().await {
        let answer = answer?;
        warn_if_filtered(&target, &answer);
        if let (Target::Kv(prefix), Body::Kv(entries)) = (target, answer.body) {
            listing.kv.insert(prefix, (answer.index, entries));
        }
    }
    drop(kv_reads);
    if interest.services {
        let answer = api.read(&Target::Services, None).await?;
        warn_if_filtered(&Target::Services, &answer);
        let Body::Services(names) = answer.body else {
            return Ok(listing);
        };
        let mut health_reads =
            futures::stream::iter(names.iter().cloned().map(|name| async move {
                let target = Target::Health(name);
                let answer = api.read(&target, None).await;
                (target, answer)
            }))
            .buffer_unordered(LIST_CONCURRENCY);
        while let Some((target, answer)) = health_reads.next().await {
            let answer = answer?;
            if let (Target::Health(name), Body::Health(instances)) = (target, answer.body) {
                listing.health.insert(name, (answer.index, instances));
            }
        }
        drop(health_reads);
        listing.services = Some((answer.index, names));
    }
    Ok(listing)
}

fn warn_if_filtered(target: &Target, answer: &Answer) {
    if answer.filtered {
        tracing::warn!(
            backend = NAME,
            path = %target,
            "the ACL token cannot read everything here; the agent left part of the result out"
        );
    }
}

/// How an answer's index compares with the one its query was sent with,
/// by Consul's blocking-query rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judged {
    /// Same index: nothing changed (the wait ran out). The body is ignored.
    Unchanged,
    /// A newer index (or the first read): take the body; block on `.0` next.
    Advanced(u64),
    /// The index went backwards: take the body, then read again from 0.
    Backwards,
}

/// Applies the index rules: 0 counts as 1; a first read (sent 0) always
/// advances; equal is no change; lower is a reset.
pub(crate) fn judge(sent: u64, got: u64) -> Judged {
    let got = got.max(1);
    if sent == 0 || got > sent {
        Judged::Advanced(got)
    } else if got == sent {
        Judged::Unchanged
    } else {
        Judged::Backwards
    }
}

/// Delay before retry number `failures` (1 for the first): doubling from
/// `backoff_start`, capped at `backoff_cap`, then jittered down by up to
/// half (`jitter` in 0..1) so that many watchers do not retry in step.
pub(crate) fn backoff(timing: &Timing, failures: u32, jitter: f64) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    let full = timing
        .backoff_start
        .saturating_mul(1u32 << shift)
        .min(timing.backoff_cap);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// A query to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub target: Target,
    /// Blocking index; 0 means a plain read.
    pub index: u64,
    /// Not to be sent before this.
    pub not_before: Instant,
}

/// Where one target stands.
#[derive(Debug, Clone, Default)]
struct Cursor {
    /// Index to send next (0: a plain read).
    index: u64,
    /// Consecutive failures.
    failures: u32,
    /// Message of the failure this target is in, if any.
    failing: Option<String>,
    /// Whether a partial (ACL-filtered) result was already warned about.
    warned_filtered: bool,
}

/// What handling one answer asks for.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Changes for the core, in order.
    pub updates: Vec<Update>,
    /// Errors to report.
    pub errors: Vec<BackendError>,
    /// Every target answers again after a reported failure.
    pub recovered: bool,
    /// Queries to send.
    pub schedule: Vec<Query>,
    /// Targets whose in-flight query is no longer wanted.
    pub cancel: Vec<Target>,
}

impl Effects {
    fn merge(&mut self, other: Effects) {
        self.updates.extend(other.updates);
        self.errors.extend(other.errors);
        self.recovered |= other.recovered;
        self.schedule.extend(other.schedule);
        self.cancel.extend(other.cancel);
    }
}

/// Everything known while watching: each target's position and data, and
/// the catalog last sent.
#[derive(Debug)]
pub(crate) struct Watching {
    cursors: BTreeMap<Target, Cursor>,
    kv: BTreeMap<String, BTreeMap<String, String>>,
    services: Option<BTreeSet<String>>,
    /// `None` until the service's first answer.
    health: BTreeMap<String, Option<Vec<ServiceInstance>>>,
    catalog: Catalog,
    /// An "unreachable" error was reported and no all-clear followed yet.
    outage: bool,
}

impl Watching {
    /// Starts from a listing: every target blocks on the index it was read at.
    pub fn from_listing(listing: Listing, now: Instant) -> (Watching, Vec<Query>) {
        let snapshot_catalog = listing.snapshot().catalog.unwrap_or_default();
        let mut cursors = BTreeMap::new();
        let mut kv = BTreeMap::new();
        for (prefix, (index, entries)) in listing.kv {
            cursors.insert(Target::Kv(prefix.clone()), Cursor::at(index));
            kv.insert(prefix, entries);
        }
        let mut health = BTreeMap::new();
        let services = listing.services.map(|(index, names)| {
            cursors.insert(Target::Services, Cursor::at(index));
            names
        });
        for (name, (index, instances)) in listing.health {
            cursors.insert(Target::Health(name.clone()), Cursor::at(index));
            health.insert(name, Some(instances));
        }
        let schedule = cursors
            .iter()
            .map(|(target, cursor)| Query {
                target: target.clone(),
                index: cursor.index,
                not_before: now,
            })
            .collect();
        let watching = Watching {
            cursors,
            kv,
            services,
            health,
            catalog: snapshot_catalog,
            outage: false,
        };
        (watching, schedule)
    }

    /// Handles the result of the query on `target` that was sent at
    /// `started`; `now` is when it came back, `jitter` a random number in
    /// 0..1 for the backoff.
    pub fn on_answer(
        &mut self,
        target: Target,
        started: Instant,
        now: Instant,
        result: Result<Answer, BackendError>,
        timing: &Timing,
        jitter: f64,
    ) -> Effects {
        let mut fx = Effects::default();
        let Some(cursor) = self.cursors.get_mut(&target) else {
            // A service that left the catalog while its query was out.
            return fx;
        };
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => {
                cursor.failures = cursor.failures.saturating_add(1);
                let message = e.to_string();
                let delay = backoff(timing, cursor.failures, jitter);
                // The core logs the errors it is handed; these lines only
                // add where the watch stands, at debug level.
                tracing::debug!(
                    backend = NAME,
                    path = %target,
                    index = cursor.index,
                    retry_in = ?delay,
                    "query failed: {message}"
                );
                if e.is_transient() {
                    if !self.outage {
                        self.outage = true;
                        fx.errors.push(e);
                    }
                } else if cursor.failing.as_deref() != Some(message.as_str()) {
                    fx.errors.push(e);
                }
                cursor.failing = Some(message);
                fx.schedule.push(Query {
                    target,
                    index: cursor.index,
                    not_before: now + delay,
                });
                return fx;
            }
        };

        cursor.failures = 0;
        if cursor.failing.take().is_some() && self.cursors.values().all(|c| c.failing.is_none()) {
            tracing::debug!(backend = NAME, "every Consul query answers again");
            self.outage = false;
            fx.recovered = true;
        }
        // Re-borrow: the all-clear check above looked at every cursor.
        let Some(cursor) = self.cursors.get_mut(&target) else {
            return fx;
        };
        if answer.filtered && !cursor.warned_filtered {
            cursor.warned_filtered = true;
            warn_if_filtered(&target, &answer);
        }
        let sent = cursor.index;
        let judged = judge(sent, answer.index);
        match judged {
            Judged::Unchanged => {}
            Judged::Advanced(index) => cursor.index = index,
            Judged::Backwards => {
                tracing::info!(
                    backend = NAME,
                    path = %target,
                    from = sent,
                    to = answer.index,
                    "the Consul index went backwards (snapshot restore or another agent); reading afresh"
                );
                cursor.index = 0;
            }
        }
        let next_index = cursor.index;
        if judged != Judged::Unchanged {
            self.apply(&target, answer.body, now, &mut fx);
        }
        fx.schedule.push(Query {
            target,
            index: next_index,
            not_before: started + timing.min_interval,
        });
        fx
    }

    /// Takes a body that changed: KV differences become puts and deletes; a
    /// new service list starts or cancels health queries; health answers
    /// rebuild the catalog.
    fn apply(&mut self, target: &Target, body: Body, now: Instant, fx: &mut Effects) {
        match (target, body) {
            (Target::Kv(prefix), Body::Kv(new)) => {
                let old = self.kv.entry(prefix.clone()).or_default();
                diff_keys(old, &new, &mut fx.updates);
                *old = new;
            }
            (Target::Services, Body::Services(names)) => {
                let old = self.services.take().unwrap_or_default();
                for added in names.difference(&old) {
                    let target = Target::Health(added.clone());
                    self.cursors.insert(target.clone(), Cursor::default());
                    self.health.insert(added.clone(), None);
                    fx.schedule.push(Query {
                        target,
                        index: 0,
                        not_before: now,
                    });
                }
                for removed in old.difference(&names) {
                    let target = Target::Health(removed.clone());
                    self.cursors.remove(&target);
                    self.health.remove(removed);
                    fx.cancel.push(target);
                }
                self.services = Some(names);
                self.refresh_catalog(fx);
            }
            (Target::Health(name), Body::Health(instances)) => {
                if let Some(slot) = self.health.get_mut(name) {
                    *slot = Some(instances);
                    self.refresh_catalog(fx);
                }
            }
            // A body of another kind cannot come from `Api::read`.
            _ => {}
        }
    }

    /// Rebuilds the catalog from the services whose health is known and
    /// sends it when it differs from the last one sent.
    fn refresh_catalog(&mut self, fx: &mut Effects) {
        let catalog = Catalog::from_services(
            self.health
                .iter()
                .filter_map(|(name, instances)| Some((name.clone(), instances.clone()?)))
                .collect(),
        );
        if catalog != self.catalog {
            self.catalog = catalog.clone();
            fx.updates.push(Update::Catalog(catalog));
        }
    }
}

impl Cursor {
    /// A target read at `index`, to block on it next.
    fn at(index: u64) -> Cursor {
        Cursor {
            index: match judge(0, index) {
                Judged::Advanced(i) => i,
                _ => 1,
            },
            ..Cursor::default()
        }
    }
}

/// Puts for keys added or changed, deletes for keys gone.
fn diff_keys(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    out: &mut Vec<Update>,
) {
    for (key, value) in new {
        if old.get(key) != Some(value) {
            out.push(Update::Put {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            out.push(Update::Delete { key: key.clone() });
        }
    }
}

/// A query that came back.
struct Completed {
    target: Target,
    started: Instant,
    result: Result<Answer, BackendError>,
}

/// The stream's state.
enum State {
    /// Reading every target once; `failures` so far, the last error reported.
    Listing {
        failures: u32,
        reported: Option<String>,
        retry_at: Option<Instant>,
    },
    /// Listed; one query per target in flight or waiting for its time.
    Watching {
        watching: Box<Watching>,
        inflight: FuturesUnordered<Abortable<BoxFuture<'static, Completed>>>,
        aborts: HashMap<Target, AbortHandle>,
    },
}

/// One item of the update stream.
pub(crate) type Item = Result<Vec<Update>, BackendError>;

/// The stream's state machine: the API, what to watch, and where it stands.
pub(crate) struct Watcher {
    api: Arc<Api>,
    interest: Interest,
    state: State,
    /// Items decided but not handed out yet (an error after a batch).
    pending: VecDeque<Item>,
}

impl Watcher {
    /// A watcher that reads everything first and sends it as a snapshot.
    pub fn new(api: Arc<Api>, interest: Interest) -> Watcher {
        Watcher {
            api,
            interest,
            state: State::Listing {
                failures: 0,
                reported: None,
                retry_at: None,
            },
            pending: VecDeque::new(),
        }
    }

    /// A watcher that resumes from a listing the core already has (the last
    /// load): no snapshot, straight to blocking queries.
    pub fn resume(api: Arc<Api>, interest: Interest, listing: Listing) -> Watcher {
        let mut watcher = Watcher::new(api, interest);
        watcher.start_watching(listing);
        watcher
    }

    fn start_watching(&mut self, listing: Listing) {
        let (watching, schedule) = Watching::from_listing(listing, Instant::now());
        let mut state = State::Watching {
            watching: Box::new(watching),
            inflight: FuturesUnordered::new(),
            aborts: HashMap::new(),
        };
        if let State::Watching {
            inflight, aborts, ..
        } = &mut state
        {
            for query in schedule {
                send(&self.api, query, inflight, aborts);
            }
        }
        self.state = state;
    }

    /// The step function: waits for and returns the next item.
    pub async fn next_item(&mut self) -> Item {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            match &mut self.state {
                State::Listing {
                    failures,
                    reported,
                    retry_at,
                } => {
                    if let Some(at) = retry_at.take() {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    match list(&self.api, &self.interest).await {
                        Ok(listing) => {
                            let snapshot = listing.snapshot();
                            tracing::debug!(
                                backend = NAME,
                                keys = snapshot.keys.len(),
                                "listed; watching"
                            );
                            self.start_watching(listing);
                            return Ok(vec![Update::Snapshot(snapshot)]);
                        }
                        Err(e) => {
                            *failures = failures.saturating_add(1);
                            let delay = backoff(self.api.timing(), *failures, fastrand::f64());
                            *retry_at = Some(Instant::now() + delay);
                            let message = e.to_string();
                            tracing::debug!(backend = NAME, retry_in = ?delay, "listing failed: {message}");
                            if reported.as_deref() != Some(message.as_str()) {
                                *reported = Some(message);
                                return Err(e);
                            }
                        }
                    }
                }
                State::Watching {
                    watching,
                    inflight,
                    aborts,
                } => {
                    let first = match inflight.next().await {
                        Some(Ok(done)) => done,
                        // Cancelled: its service left the catalog.
                        Some(Err(_aborted)) => continue,
                        // Nothing to watch (no prefixes, no catalog).
                        None => std::future::pending().await,
                    };
                    let timing = *self.api.timing();
                    let mut fx = Effects::default();
                    let mut handle = |done: Completed, fx: &mut Effects| {
                        aborts.remove(&done.target);
                        fx.merge(watching.on_answer(
                            done.target,
                            done.started,
                            Instant::now(),
                            done.result,
                            &timing,
                            fastrand::f64(),
                        ));
                    };
                    handle(first, &mut fx);
                    // Answers that are already in make one batch with it.
                    while let Some(Some(next)) = inflight.next().now_or_never() {
                        if let Ok(done) = next {
                            handle(done, &mut fx);
                        }
                    }
                    for target in &fx.cancel {
                        if let Some(handle) = aborts.remove(target) {
                            handle.abort();
                        }
                    }
                    for query in fx.schedule {
                        send(&self.api, query, inflight, aborts);
                    }
                    if !fx.updates.is_empty() {
                        tracing::debug!(backend = NAME, updates = fx.updates.len(), "changes");
                    }
                    if !fx.updates.is_empty() || fx.recovered {
                        self.pending.push_back(Ok(fx.updates));
                    }
                    self.pending.extend(fx.errors.into_iter().map(Err));
                }
            }
        }
    }
}

/// Puts `query` in flight: sleeps until its time, then reads.
fn send(
    api: &Arc<Api>,
    query: Query,
    inflight: &mut FuturesUnordered<Abortable<BoxFuture<'static, Completed>>>,
    aborts: &mut HashMap<Target, AbortHandle>,
) {
    let api = Arc::clone(api);
    let (handle, registration) = AbortHandle::new_pair();
    if let Some(old) = aborts.insert(query.target.clone(), handle) {
        old.abort();
    }
    let fut = async move {
        tokio::time::sleep_until(query.not_before.into()).await;
        let started = Instant::now();
        let index = (query.index > 0).then_some(query.index);
        let result = api.read(&query.target, index).await;
        Completed {
            target: query.target,
            started,
            result,
        }
    }
    .boxed();
    inflight.push(Abortable::new(fut, registration));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            min_interval: Duration::from_millis(100),
            backoff_start: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(3),
            ..Timing::default()
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Body {
        Body::Kv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn answer(index: u64, body: Body) -> Result<Answer, BackendError> {
        Ok(Answer {
            index,
            body,
            filtered: false,
        })
    }

    fn down() -> Result<Answer, BackendError> {
        Err(BackendError::Unavailable {
            backend: NAME,
            endpoint: "http://127.0.0.1:1/v1/kv/app".into(),
            source: "cannot connect: Connection refused".into(),
        })
    }

    fn inst(id: &str, healthy: bool) -> ServiceInstance {
        ServiceInstance {
            id: id.into(),
            name: "web".into(),
            address: "10.0.0.1".into(),
            port: 80,
            node: "n".into(),
            tags: vec![],
            meta: BTreeMap::new(),
            healthy,
        }
    }

    /// A watch on `/app` listed at index 10 with `/app/a = 1`.
    fn watching_app(now: Instant) -> Watching {
        let mut listing = Listing::default();
        let entries = [("/app/a".to_string(), "1".to_string())].into();
        listing.kv.insert("/app".into(), (10, entries));
        let (w, schedule) = Watching::from_listing(listing, now);
        assert_eq!(
            schedule,
            [Query {
                target: Target::Kv("/app".into()),
                index: 10,
                not_before: now
            }]
        );
        w
    }

    fn app() -> Target {
        Target::Kv("/app".into())
    }

    #[test]
    fn index_rules() {
        assert_eq!(judge(0, 7), Judged::Advanced(7), "first read");
        assert_eq!(judge(0, 0), Judged::Advanced(1), "0 counts as 1");
        assert_eq!(judge(7, 7), Judged::Unchanged);
        assert_eq!(judge(7, 9), Judged::Advanced(9));
        assert_eq!(judge(7, 3), Judged::Backwards);
        assert_eq!(judge(1, 0), Judged::Unchanged, "0 is 1, so no reset loop");
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_down_to_half() {
        let t = timing();
        assert_eq!(backoff(&t, 1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(&t, 2, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(&t, 30, 0.0), Duration::from_secs(3));
        assert_eq!(backoff(&t, 30, 1.0), Duration::from_millis(1500));
    }

    #[test]
    fn a_change_gives_puts_and_deletes_and_blocks_on_the_new_index() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let t1 = t0 + Duration::from_secs(30);
        let fx = w.on_answer(
            app(),
            t0,
            t1,
            answer(12, kv(&[("/app/b", "2")])),
            &timing(),
            0.0,
        );
        assert_eq!(
            fx.updates,
            [
                Update::Put {
                    key: "/app/b".into(),
                    value: "2".into()
                },
                Update::Delete {
                    key: "/app/a".into()
                }
            ]
        );
        // It blocked 30 s, longer than the minimum interval: re-query at once.
        assert_eq!(
            fx.schedule,
            [Query {
                target: app(),
                index: 12,
                not_before: t0 + Duration::from_millis(100)
            }]
        );
        assert!(fx.schedule[0].not_before <= t1);
    }

    #[test]
    fn same_index_is_no_change_and_a_fast_return_is_rate_limited() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let t1 = t0 + Duration::from_millis(5);
        let fx = w.on_answer(
            app(),
            t0,
            t1,
            answer(10, kv(&[("/app/a", "changed?")])),
            &timing(),
            0.0,
        );
        assert!(
            fx.updates.is_empty(),
            "same index: the body is not looked at"
        );
        assert_eq!(fx.schedule[0].index, 10);
        assert_eq!(fx.schedule[0].not_before, t0 + Duration::from_millis(100));
    }

    #[test]
    fn a_changed_index_with_the_same_data_gives_nothing() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let fx = w.on_answer(
            app(),
            t0,
            t0,
            answer(11, kv(&[("/app/a", "1")])),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty());
        assert_eq!(fx.schedule[0].index, 11);
    }

    #[test]
    fn index_going_backwards_takes_the_data_and_restarts_from_zero() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let fx = w.on_answer(
            app(),
            t0,
            t0,
            answer(3, kv(&[("/app/a", "restored")])),
            &timing(),
            0.0,
        );
        assert_eq!(
            fx.updates,
            [Update::Put {
                key: "/app/a".into(),
                value: "restored".into()
            }]
        );
        assert_eq!(fx.schedule[0].index, 0, "next read does not block");
        // The plain read then gives the new index to block on.
        let fx = w.on_answer(
            app(),
            t0,
            t0,
            answer(3, kv(&[("/app/a", "restored")])),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty());
        assert_eq!(fx.schedule[0].index, 3);
    }

    #[test]
    fn outage_is_reported_once_and_resumes_from_the_last_index() {
        let t0 = Instant::now();
        let mut listing = Listing::default();
        listing.kv.insert("/app".into(), (10, BTreeMap::new()));
        listing.kv.insert("/other".into(), (10, BTreeMap::new()));
        let (mut w, _) = Watching::from_listing(listing, t0);
        let other = Target::Kv("/other".into());

        let fx = w.on_answer(app(), t0, t0, down(), &timing(), 0.0);
        assert_eq!(fx.errors.len(), 1, "first failure is reported");
        assert_eq!(fx.schedule[0].index, 10, "resumes from the last index");
        assert_eq!(fx.schedule[0].not_before, t0 + Duration::from_millis(200));
        let fx = w.on_answer(other.clone(), t0, t0, down(), &timing(), 0.0);
        assert!(fx.errors.is_empty(), "one report per outage, not per query");
        let fx = w.on_answer(app(), t0, t0, down(), &timing(), 0.0);
        assert!(fx.errors.is_empty());
        assert_eq!(fx.schedule[0].not_before, t0 + Duration::from_millis(400));

        // Back: the first answer is not yet an all-clear, the last one is.
        let fx = w.on_answer(app(), t0, t0, answer(10, kv(&[])), &timing(), 0.0);
        assert!(!fx.recovered);
        assert_eq!(fx.schedule[0].index, 10);
        let fx = w.on_answer(
            other,
            t0,
            t0,
            answer(12, kv(&[("/other/x", "1")])),
            &timing(),
            0.0,
        );
        assert!(fx.recovered);
        assert_eq!(fx.updates.len(), 1);
        // A new outage is reported again.
        let fx = w.on_answer(app(), t0, t0, down(), &timing(), 0.0);
        assert_eq!(fx.errors.len(), 1);
    }

    #[test]
    fn a_refusal_is_reported_when_its_message_changes() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let denied = |m: &str| -> Result<Answer, BackendError> {
            Err(BackendError::Denied {
                backend: NAME,
                message: m.into(),
            })
        };
        assert_eq!(
            w.on_answer(app(), t0, t0, denied("a"), &timing(), 0.0)
                .errors
                .len(),
            1
        );
        assert_eq!(
            w.on_answer(app(), t0, t0, denied("a"), &timing(), 0.0)
                .errors
                .len(),
            0
        );
        assert_eq!(
            w.on_answer(app(), t0, t0, denied("b"), &timing(), 0.0)
                .errors
                .len(),
            1
        );
        let fx = w.on_answer(app(), t0, t0, answer(10, kv(&[])), &timing(), 0.0);
        assert!(fx.recovered);
    }

    #[test]
    fn services_come_and_go_with_their_health_queries() {
        let t0 = Instant::now();
        let listing = Listing {
            services: Some((5, BTreeSet::from(["web".to_string()]))),
            health: [("web".to_string(), (5, vec![inst("web-1", true)]))].into(),
            ..Listing::default()
        };
        let (mut w, schedule) = Watching::from_listing(listing, t0);
        assert_eq!(schedule.len(), 2);

        // A new service: its health is read (plain read) before it shows.
        let names = BTreeSet::from(["web".to_string(), "db".to_string()]);
        let fx = w.on_answer(
            Target::Services,
            t0,
            t0,
            answer(6, Body::Services(names)),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty(), "db has no health yet");
        assert!(fx.schedule.contains(&Query {
            target: Target::Health("db".into()),
            index: 0,
            not_before: t0
        }));
        let fx = w.on_answer(
            Target::Health("db".into()),
            t0,
            t0,
            answer(6, Body::Health(vec![inst("db-1", true)])),
            &timing(),
            0.0,
        );
        let [Update::Catalog(c)] = fx.updates.as_slice() else {
            panic!("want one catalog update: {:?}", fx.updates)
        };
        assert_eq!(c.services(), ["db", "web"]);

        // An instance failing its check changes the catalog.
        let fx = w.on_answer(
            Target::Health("web".into()),
            t0,
            t0,
            answer(7, Body::Health(vec![inst("web-1", false)])),
            &timing(),
            0.0,
        );
        let [Update::Catalog(c)] = fx.updates.as_slice() else {
            panic!("want one catalog update: {:?}", fx.updates)
        };
        assert!(c.service("web", None, true).is_empty());

        // A service that leaves is cancelled and dropped.
        let fx = w.on_answer(
            Target::Services,
            t0,
            t0,
            answer(8, Body::Services(BTreeSet::from(["db".to_string()]))),
            &timing(),
            0.0,
        );
        assert_eq!(fx.cancel, [Target::Health("web".into())]);
        let [Update::Catalog(c)] = fx.updates.as_slice() else {
            panic!("want one catalog update: {:?}", fx.updates)
        };
        assert_eq!(c.services(), ["db"]);
        // Its late answer is ignored.
        let fx = w.on_answer(
            Target::Health("web".into()),
            t0,
            t0,
            answer(9, Body::Health(vec![])),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty() && fx.schedule.is_empty());
    }
}

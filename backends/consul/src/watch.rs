//! The watch: one blocking query per KV prefix, one on the service list and
//! one per service's health, merged into one stream of update batches.
//!
//! Modelled on kube-runtime's watcher: [`Watch`] is a
//! [`Machine`](sidekick_backend::Machine) whose state is `Listing` until every
//! target has been read once (the stream's first item is then that listing
//! as an [`Update::Snapshot`]), then `Watching`; `sidekick_backend::drive` runs
//! it and owns the retry policy (its `Backoff` after a failed step, one error
//! item per change of health). What an answer means is decided by
//! [`Watching::on_answer`], which does no I/O: it applies Consul's
//! blocking-query rules, turns the answer into [`Update`]s and says which
//! query to send next and when. The tests at the bottom drive it with made-up
//! answers, and drive the whole machine against a scripted [`Source`].
//!
//! Consul's rules (its "Blocking Queries" documentation) as applied here:
//! - an answer whose `X-Consul-Index` equals the index sent is no change, even
//!   if the body differs (it is not even looked at);
//! - an index that went backwards (a snapshot restore, a KV list whose newest
//!   item was removed, another server) resets the position to 0: the answer is
//!   taken as the current state and the next read does not block, so it picks
//!   up a fresh index;
//! - an index of 0 is treated as 1, so a query never spins on index 0;
//! - rate limit, not sleep: each target has a token bucket
//!   ([`Timing::requery_burst`] tokens, one back per
//!   [`Timing::requery_interval`]). While it holds tokens a query is re-sent
//!   the moment its answer is in, so a few changes in quick succession each
//!   arrive at once; a target that keeps changing degrades into polling at
//!   the refill rate, the changes in between arriving as one batch. This is
//!   protocol pacing (Consul asks clients to rate-limit blocking loops), not
//!   a retry delay: it applies to every query of the target, answered or
//!   failed, and is the only timing the reducer keeps.
//! - jitter: the agent already adds up to `wait/16` to every blocking query,
//!   and the driver's `Backoff` jitters retries; the one place left is a
//!   query held back by its bucket, which goes out up to a quarter interval
//!   late, so that many targets churning together (every service on a
//!   flapping node) do not re-query in step.
//! - `stale`: blocking queries (not the first read, nor the plain read after
//!   an index reset) ask for stale reads, which any Consul server can answer:
//!   Consul's advice for scaling reads, and these long-polls are nearly every
//!   request the watch makes. An answer from a server that had not heard from
//!   the leader for longer than [`Timing::max_stale`] (`X-Consul-LastContact`)
//!   is taken, and the next query of that target goes to the leader.
//!
//! A failed query keeps its index and is sent again once the driver steps
//! the machine again (after its backoff delay), so an agent restart resumes
//! where it left off. Nothing is spawned: the in-flight queries live in the
//! machine, and dropping the stream cancels them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sidekick_backend::{
    minimal_prefixes, BackendError, Catalog, Interest, KeyTree, Machine, Names, ServiceInstance,
    Snapshot, Step, Update,
};

use crate::client::{Answer, Api, Body, Target};
use crate::{Timing, NAME};

/// What the watch reads from: the agents ([`Api`]) or, in tests, a script.
pub(crate) trait Source: Send + Sync + 'static {
    /// Reads `target`; with an index this is a blocking query, and with
    /// `stale` any Consul server may answer it.
    fn query(
        &self,
        target: &Target,
        index: Option<u64>,
        stale: bool,
    ) -> impl Future<Output = Result<Answer, BackendError>> + Send;
}

impl Source for Api {
    async fn query(
        &self,
        target: &Target,
        index: Option<u64>,
        stale: bool,
    ) -> Result<Answer, BackendError> {
        self.read(target, index, stale).await
    }
}

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

/// Reads every target of `interest` once, without blocking and in Consul's
/// default consistency mode (the leader's view): each KV prefix, and with
/// `interest.services` the service list and then every service's health.
pub(crate) async fn list<S: Source>(
    source: &S,
    interest: &Interest,
) -> Result<Listing, BackendError> {
    let prefixes = minimal_prefixes(&interest.prefixes);
    let mut listing = Listing::default();
    let mut kv_reads = futures::stream::iter(prefixes.into_iter().map(|prefix| async move {
        let target = Target::Kv(prefix);
        let answer = source.query(&target, None, false).await;
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
        let answer = source.query(&Target::Services, None, false).await?;
        warn_if_filtered(&Target::Services, &answer);
        let Body::Services(names) = answer.body else {
            return Ok(listing);
        };
        let mut health_reads =
            futures::stream::iter(names.iter().cloned().map(|name| async move {
                let target = Target::Health(name);
                let answer = source.query(&target, None, false).await;
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

/// A query to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub target: Target,
    /// Blocking index; 0 means a plain read.
    pub index: u64,
    /// Whether any server may answer (`?stale`), not only the leader.
    pub stale: bool,
    /// Not to be sent before this.
    pub not_before: Instant,
}

/// A token bucket per target, kept as the time it is full again (the
/// "generic cell rate algorithm" form: one instant instead of a token count
/// and a refill clock). Taking a token moves that time one interval on; a
/// token is there while it lies less than `burst` intervals ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// When every token is back; in the past when the bucket is full.
    full_at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(now: Instant) -> Bucket {
        Bucket { full_at: now }
    }

    /// Takes a token for a query wanted at `now` and says when it may go:
    /// `now` while tokens are left, else when the next one is back plus up to
    /// a quarter interval of jitter (`jitter` in 0..1).
    pub fn take(&mut self, now: Instant, timing: &Timing, jitter: f64) -> Instant {
        let interval = timing.requery_interval;
        let spare = interval.saturating_mul(timing.requery_burst.max(1) - 1);
        // `None` only when `full_at` is within `spare` of the clock's origin,
        // that is in the past: a token is there.
        let at = match self.full_at.checked_sub(spare) {
            Some(next_token) if next_token > now => {
                next_token + interval.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
            }
            _ => now,
        };
        self.full_at = self.full_at.max(at) + interval;
        at
    }
}

/// Where one target stands.
#[derive(Debug, Clone)]
struct Cursor {
    /// Index to send next (0: a plain read).
    index: u64,
    /// Paces the target's queries.
    bucket: Bucket,
    /// The last answer came from a server out of touch with the leader for
    /// longer than `max_stale`: the next read goes to the leader.
    leader_next: bool,
    /// The last query failed; its next answer clears this.
    failing: bool,
    /// Whether a partial (ACL-filtered) result was already warned about.
    warned_filtered: bool,
}

impl Cursor {
    /// A target to read next at `index` (0: a plain read), with a full
    /// bucket.
    fn at(index: u64, now: Instant) -> Cursor {
        Cursor {
            index,
            bucket: Bucket::full(now),
            leader_next: false,
            failing: false,
            warned_filtered: false,
        }
    }

    /// The next query of this target, wanted at `now`; takes a token.
    fn next_query(&mut self, target: Target, now: Instant, timing: &Timing, jitter: f64) -> Query {
        Query {
            not_before: self.bucket.take(now, timing, jitter),
            stale: self.index > 0 && timing.max_stale.is_some() && !self.leader_next,
            index: self.index,
            target,
        }
    }
}

/// What handling one answer asks for.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Changes for the core, in order.
    pub updates: Vec<Update>,
    /// The query failed (it is scheduled again all the same).
    pub error: Option<BackendError>,
    /// Queries to send.
    pub schedule: Vec<Query>,
    /// Targets whose in-flight query is no longer wanted.
    pub cancel: Vec<Target>,
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
}

impl Watching {
    /// Starts from a listing: every target blocks on the index it was read
    /// at, at once (each takes its first token).
    pub fn from_listing(listing: Listing, now: Instant, timing: &Timing) -> (Watching, Vec<Query>) {
        let snapshot_catalog = listing.snapshot().catalog.unwrap_or_default();
        let mut cursors = BTreeMap::new();
        let mut kv = BTreeMap::new();
        // An index of 0 counts as 1, so that the first query blocks.
        for (prefix, (index, entries)) in listing.kv {
            cursors.insert(Target::Kv(prefix.clone()), Cursor::at(index.max(1), now));
            kv.insert(prefix, entries);
        }
        let mut health = BTreeMap::new();
        let services = listing.services.map(|(index, names)| {
            cursors.insert(Target::Services, Cursor::at(index.max(1), now));
            names
        });
        for (name, (index, instances)) in listing.health {
            cursors.insert(Target::Health(name.clone()), Cursor::at(index.max(1), now));
            health.insert(name, Some(instances));
        }
        let schedule = cursors
            .iter_mut()
            .map(|(target, cursor)| cursor.next_query(target.clone(), now, timing, 0.0))
            .collect();
        let watching = Watching {
            cursors,
            kv,
            services,
            health,
            catalog: snapshot_catalog,
        };
        (watching, schedule)
    }

    /// True while some target's last query failed: an outage is over only
    /// when every query answers again.
    pub fn is_failing(&self) -> bool {
        self.cursors.values().any(|c| c.failing)
    }

    /// Handles the result of the query on `target` that came back at `now`;
    /// `jitter` is a random number in 0..1 for a query the bucket holds back.
    pub fn on_answer(
        &mut self,
        target: Target,
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
                // Same index again once the driver steps on (after its
                // backoff delay); the bucket still applies.
                cursor.failing = true;
                tracing::debug!(
                    backend = NAME,
                    path = %target,
                    index = cursor.index,
                    "query failed: {e}"
                );
                fx.schedule
                    .push(cursor.next_query(target, now, timing, jitter));
                fx.error = Some(e);
                return fx;
            }
        };

        cursor.failing = false;
        if answer.filtered && !cursor.warned_filtered {
            cursor.warned_filtered = true;
            warn_if_filtered(&target, &answer);
        }
        let lagging = match (timing.max_stale, answer.last_contact) {
            (Some(max), Some(contact)) => contact > max,
            _ => false,
        };
        if lagging {
            tracing::debug!(
                backend = NAME,
                path = %target,
                last_contact = ?answer.last_contact,
                "the answering Consul server lags the leader; reading from the leader next"
            );
        }
        cursor.leader_next = lagging;
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
                    "the Consul index went backwards (snapshot restore or another server); reading afresh"
                );
                cursor.index = 0;
            }
        }
        let next = cursor.next_query(target.clone(), now, timing, jitter);
        if judged != Judged::Unchanged {
            self.apply(&target, answer.body, now, timing, &mut fx);
        }
        fx.schedule.push(next);
        fx
    }

    /// Takes a body that changed: KV differences become puts and deletes; a
    /// new service list starts or cancels health queries; health answers
    /// rebuild the catalog.
    fn apply(
        &mut self,
        target: &Target,
        body: Body,
        now: Instant,
        timing: &Timing,
        fx: &mut Effects,
    ) {
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
                    let mut cursor = Cursor::at(0, now);
                    fx.schedule
                        .push(cursor.next_query(target.clone(), now, timing, 0.0));
                    self.cursors.insert(target, cursor);
                    self.health.insert(added.clone(), None);
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
    result: Result<Answer, BackendError>,
}

/// The in-flight queries, each cancellable by its target.
type Inflight = FuturesUnordered<Abortable<BoxFuture<'static, Completed>>>;

/// Where the watch stands.
enum State {
    /// Reading every target once (again, after a failed listing).
    Listing,
    /// Listed; one query per target in flight or waiting for its time.
    Watching {
        watching: Box<Watching>,
        inflight: Inflight,
        aborts: HashMap<Target, AbortHandle>,
    },
}

/// The watch as a state machine for `sidekick_backend::drive`: what to
/// watch, where to read it and where it stands.
pub(crate) struct Watch<S> {
    source: Arc<S>,
    interest: Interest,
    timing: Timing,
    state: State,
    /// A failure that came in with changes: the changes went out first, the
    /// next step reports it.
    deferred: Option<BackendError>,
}

impl<S: Source> Watch<S> {
    /// A watch that starts by listing everything.
    pub fn new(source: Arc<S>, interest: Interest, timing: Timing) -> Watch<S> {
        Watch {
            state: State::Listing,
            deferred: None,
            source,
            interest,
            timing,
        }
    }

    fn start_watching(&mut self, listing: Listing) {
        let (watching, schedule) = Watching::from_listing(listing, Instant::now(), &self.timing);
        let mut inflight = Inflight::new();
        let mut aborts = HashMap::new();
        for query in schedule {
            send(&self.source, query, &mut inflight, &mut aborts);
        }
        self.state = State::Watching {
            watching: Box::new(watching),
            inflight,
            aborts,
        };
    }
}

impl<S: Source> Machine for Watch<S> {
    const NAMES: Names = Names::new("consul watch", "consul agent");

    fn state(&self) -> &'static str {
        match self.state {
            State::Listing => "listing",
            State::Watching { .. } => "watching",
        }
    }

    async fn step(&mut self) -> Step {
        if let Some(e) = self.deferred.take() {
            return Step::Failed(e);
        }
        match &mut self.state {
            State::Listing => match list(&*self.source, &self.interest).await {
                Ok(listing) => {
                    let snapshot = listing.snapshot();
                    tracing::debug!(
                        backend = NAME,
                        keys = snapshot.keys.len(),
                        services = listing.health.len(),
                        "listed; watching"
                    );
                    self.start_watching(listing);
                    Step::Updates(vec![Update::Snapshot(snapshot)])
                }
                // Still listing: the driver waits, then this lists again.
                Err(e) => Step::Failed(e),
            },
            State::Watching {
                watching,
                inflight,
                aborts,
            } => {
                let first = loop {
                    match inflight.next().await {
                        Some(Ok(done)) => break done,
                        // Cancelled: its service left the catalog.
                        Some(Err(_aborted)) => continue,
                        // Nothing to watch (no prefixes, no catalog).
                        None => std::future::pending().await,
                    }
                };
                let timing = self.timing;
                let mut updates = Vec::new();
                let mut schedule = Vec::new();
                let mut errors = Vec::new();
                let mut handle = |done: Completed| {
                    aborts.remove(&done.target);
                    let fx = watching.on_answer(
                        done.target,
                        Instant::now(),
                        done.result,
                        &timing,
                        fastrand::f64(),
                    );
                    updates.extend(fx.updates);
                    schedule.extend(fx.schedule);
                    errors.extend(fx.error);
                    for target in fx.cancel {
                        if let Some(handle) = aborts.remove(&target) {
                            handle.abort();
                        }
                    }
                };
                handle(first);
                // Answers that are already in make one batch with it.
                while let Some(Some(next)) = inflight.next().now_or_never() {
                    if let Ok(done) = next {
                        handle(done);
                    }
                }
                for query in schedule {
                    send(&self.source, query, inflight, aborts);
                }
                // One step, one outcome for the driver. Changes always go
                // out; a failure among them is reported by the next step.
                // The driver keeps one health for the whole watch, so while
                // one query fails (a refused path) and others bring changes,
                // the failure is reported again after each change. Further
                // failures of the same batch recur on their own retries.
                let mut errors = errors.into_iter();
                let error = errors.next();
                for also in errors {
                    tracing::debug!(backend = NAME, "another query failed too: {also}");
                }
                if !updates.is_empty() {
                    tracing::debug!(backend = NAME, updates = updates.len(), "changes");
                    self.deferred = error;
                    return Step::Updates(updates);
                }
                match error {
                    Some(e) => Step::Failed(e),
                    // Some target still fails: the outage is not over.
                    None if watching.is_failing() => Step::Pending,
                    None => Step::Updates(Vec::new()),
                }
            }
        }
    }
}

/// Puts `query` in flight: waits for its time if it has to, then reads.
fn send<S: Source>(
    source: &Arc<S>,
    query: Query,
    inflight: &mut Inflight,
    aborts: &mut HashMap<Target, AbortHandle>,
) {
    let source = Arc::clone(source);
    let (handle, registration) = AbortHandle::new_pair();
    if let Some(old) = aborts.insert(query.target.clone(), handle) {
        old.abort();
    }
    let fut = async move {
        if query.not_before > Instant::now() {
            tokio::time::sleep_until(query.not_before.into()).await;
        }
        let index = (query.index > 0).then_some(query.index);
        let result = source.query(&query.target, index, query.stale).await;
        Completed {
            target: query.target,
            result,
        }
    }
    .boxed();
    inflight.push(Abortable::new(fut, registration));
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use sidekick_backend::{drive, Backoff, Label, UpdateStream};

    use super::*;

    fn timing() -> Timing {
        Timing {
            requery_interval: Duration::from_millis(100),
            requery_burst: 5,
            max_stale: Some(Duration::from_secs(2)),
            ..Timing::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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
            last_contact: Some(Duration::ZERO),
        })
    }

    fn down() -> Result<Answer, BackendError> {
        Err(BackendError::Unavailable {
            backend: NAME,
            endpoint: "http://127.0.0.1:1/v1/kv/app".into(),
            source: "cannot connect: Connection refused".into(),
        })
    }

    fn denied() -> Result<Answer, BackendError> {
        Err(BackendError::Denied {
            backend: NAME,
            message: "the agent refused the ACL token for GET /v1/kv/app".into(),
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

    fn app() -> Target {
        Target::Kv("/app".into())
    }

    fn put(key: &str, value: &str) -> Update {
        Update::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A watch on `/app` listed at index 10 with `/app/a = 1`.
    fn watching_app(now: Instant) -> Watching {
        let mut listing = Listing::default();
        let entries = [("/app/a".to_string(), "1".to_string())].into();
        listing.kv.insert("/app".into(), (10, entries));
        let (w, schedule) = Watching::from_listing(listing, now, &timing());
        assert_eq!(
            schedule,
            [Query {
                target: app(),
                index: 10,
                stale: true,
                not_before: now
            }]
        );
        w
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
    fn the_bucket_lets_a_burst_through_then_paces_at_the_refill_rate() {
        let t = timing();
        let t0 = Instant::now();
        let mut b = Bucket::full(t0);
        // Five at once (the burst)...
        for _ in 0..5 {
            assert_eq!(b.take(t0, &t, 0.0), t0);
        }
        // ...then one per interval.
        assert_eq!(b.take(t0, &t, 0.0), t0 + ms(100));
        assert_eq!(b.take(t0 + ms(100), &t, 0.0), t0 + ms(200));
        // Jitter holds a paced query back by up to a quarter interval.
        assert_eq!(b.take(t0 + ms(200), &t, 1.0), t0 + ms(325));
        // A quiet spell refills it, but never beyond the burst.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..5 {
            assert_eq!(b.take(later, &t, 0.0), later);
        }
        assert_eq!(b.take(later, &t, 0.0), later + ms(100));
    }

    #[test]
    fn a_burst_of_one_is_a_plain_rate_limit() {
        let t = Timing {
            requery_burst: 0,
            ..timing()
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(t0);
        assert_eq!(b.take(t0, &t, 0.0), t0);
        assert_eq!(b.take(t0 + ms(30), &t, 0.0), t0 + ms(100));
    }

    #[test]
    fn changes_in_quick_succession_are_each_re_queried_at_once_until_the_bucket_is_empty() {
        let t0 = Instant::now();
        // The listing's query took the first token at t0.
        let mut w = watching_app(t0);
        let mut sent = Vec::new();
        // A change every 20 ms: each answer comes back at once.
        for i in 1..=8u64 {
            let now = t0 + ms(20 * i);
            let value = format!("v{i}");
            let fx = w.on_answer(
                app(),
                now,
                answer(10 + i, kv(&[("/app/a", &value)])),
                &timing(),
                0.0,
            );
            assert_eq!(fx.updates, [put("/app/a", &value)]);
            assert_eq!(fx.schedule[0].index, 10 + i);
            sent.push(fx.schedule[0].not_before - now);
        }
        // Five tokens, one taken by the listing's query, one back per 100 ms:
        // five re-queries go at once; the sixth waits for the token due at
        // t0 + 200 ms, the next for the one at t0 + 300 ms.
        assert_eq!(&sent[..5], [Duration::ZERO; 5]);
        assert_eq!(sent[5], ms(80), "answer at t0 + 120 ms, sent at t0 + 200");
        assert_eq!(sent[6], ms(160), "answer at t0 + 140 ms, sent at t0 + 300");
    }

    #[test]
    fn a_query_that_blocked_long_is_re_sent_at_once() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let t1 = t0 + Duration::from_secs(30);
        let fx = w.on_answer(
            app(),
            t1,
            answer(12, kv(&[("/app/b", "2")])),
            &timing(),
            0.0,
        );
        assert_eq!(
            fx.updates,
            [
                put("/app/b", "2"),
                Update::Delete {
                    key: "/app/a".into()
                }
            ]
        );
        assert_eq!(
            fx.schedule,
            [Query {
                target: app(),
                index: 12,
                stale: true,
                not_before: t1
            }]
        );
    }

    #[test]
    fn same_index_is_no_change_and_fast_returns_are_rate_limited() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let mut last = None;
        // The same index coming back at once, again and again (a flapping
        // write that changes nothing, or an agent that does not block).
        for i in 1..=5u64 {
            let now = t0 + ms(i);
            let fx = w.on_answer(
                app(),
                now,
                answer(10, kv(&[("/app/a", "changed?")])),
                &timing(),
                0.0,
            );
            assert!(
                fx.updates.is_empty(),
                "same index: the body is not looked at"
            );
            assert_eq!(fx.schedule[0].index, 10);
            last = Some(fx.schedule[0].not_before);
        }
        // One token from the listing's query, four re-queries at once; the
        // fifth waits for the first token back.
        assert_eq!(last, Some(t0 + ms(100)));
    }

    #[test]
    fn a_changed_index_with_the_same_data_gives_nothing() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let fx = w.on_answer(
            app(),
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
            answer(3, kv(&[("/app/a", "restored")])),
            &timing(),
            0.0,
        );
        assert_eq!(fx.updates, [put("/app/a", "restored")]);
        assert_eq!(fx.schedule[0].index, 0, "next read does not block");
        assert!(!fx.schedule[0].stale, "a fresh index comes from the leader");
        // The plain read then gives the new index to block on.
        let fx = w.on_answer(
            app(),
            t0,
            answer(3, kv(&[("/app/a", "restored")])),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty());
        assert_eq!(fx.schedule[0].index, 3);
        assert!(fx.schedule[0].stale);
    }

    #[test]
    fn a_lagging_server_sends_the_next_read_to_the_leader() {
        let t0 = Instant::now();
        let mut w = watching_app(t0);
        let lagging = Ok(Answer {
            index: 11,
            body: kv(&[("/app/a", "2")]),
            filtered: false,
            last_contact: Some(Duration::from_secs(5)),
        });
        let fx = w.on_answer(app(), t0, lagging, &timing(), 0.0);
        assert_eq!(fx.updates, [put("/app/a", "2")], "the data is taken");
        assert!(!fx.schedule[0].stale, "then read from the leader");
        let fx = w.on_answer(app(), t0, answer(11, kv(&[])), &timing(), 0.0);
        assert!(fx.schedule[0].stale, "and stale again after that");

        // Without a staleness bound every read goes to the leader.
        let strict = Timing {
            max_stale: None,
            ..timing()
        };
        let mut listing = Listing::default();
        listing.kv.insert("/app".into(), (10, BTreeMap::new()));
        let (mut w, schedule) = Watching::from_listing(listing, t0, &strict);
        assert!(!schedule[0].stale);
        let fx = w.on_answer(app(), t0, answer(12, kv(&[])), &strict, 0.0);
        assert!(!fx.schedule[0].stale);
    }

    #[test]
    fn a_failed_query_resumes_from_its_index_and_the_outage_ends_when_all_answer() {
        let t0 = Instant::now();
        let mut listing = Listing::default();
        listing.kv.insert("/app".into(), (10, BTreeMap::new()));
        listing.kv.insert("/other".into(), (10, BTreeMap::new()));
        let (mut w, _) = Watching::from_listing(listing, t0, &timing());
        let other = Target::Kv("/other".into());

        let fx = w.on_answer(app(), t0, down(), &timing(), 0.0);
        assert!(fx.error.is_some_and(|e| e.is_transient()));
        assert_eq!(fx.schedule[0].index, 10, "resumes from the last index");
        assert_eq!(
            fx.schedule[0].not_before, t0,
            "no delay of its own: the driver's backoff comes first"
        );
        let fx = w.on_answer(other.clone(), t0, down(), &timing(), 0.0);
        assert!(fx.error.is_some());
        assert!(w.is_failing());

        // Back: the first answer is not yet an all-clear, the last one is.
        let fx = w.on_answer(app(), t0, answer(10, kv(&[])), &timing(), 0.0);
        assert!(fx.error.is_none());
        assert_eq!(fx.schedule[0].index, 10);
        assert!(w.is_failing());
        let fx = w.on_answer(
            other,
            t0,
            answer(12, kv(&[("/other/x", "1")])),
            &timing(),
            0.0,
        );
        assert!(!w.is_failing());
        assert_eq!(fx.updates.len(), 1);
    }

    #[test]
    fn services_come_and_go_with_their_health_queries() {
        let t0 = Instant::now();
        let listing = Listing {
            services: Some((5, BTreeSet::from(["web".to_string()]))),
            health: [("web".to_string(), (5, vec![inst("web-1", true)]))].into(),
            ..Listing::default()
        };
        let (mut w, schedule) = Watching::from_listing(listing, t0, &timing());
        assert_eq!(schedule.len(), 2);

        // A new service: its health is read (plain read) before it shows.
        let names = BTreeSet::from(["web".to_string(), "db".to_string()]);
        let fx = w.on_answer(
            Target::Services,
            t0,
            answer(6, Body::Services(names)),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty(), "db has no health yet");
        assert!(fx.schedule.contains(&Query {
            target: Target::Health("db".into()),
            index: 0,
            stale: false,
            not_before: t0
        }));
        let fx = w.on_answer(
            Target::Health("db".into()),
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
            answer(9, Body::Health(vec![])),
            &timing(),
            0.0,
        );
        assert!(fx.updates.is_empty() && fx.schedule.is_empty());
    }

    /// Answers still to give for one target, each after its delay.
    type Answers = VecDeque<(Duration, Result<Answer, BackendError>)>;

    /// A scripted agent: per target, answers in order, each after its delay;
    /// a target with nothing left blocks for ever (a quiet blocking query).
    #[derive(Default)]
    struct Script {
        answers: Mutex<HashMap<Target, Answers>>,
        log: Mutex<Vec<String>>,
    }

    impl Script {
        fn then(self, target: Target, result: Result<Answer, BackendError>) -> Script {
            self.after(target, Duration::ZERO, result)
        }

        fn after(
            self,
            target: Target,
            delay: Duration,
            result: Result<Answer, BackendError>,
        ) -> Script {
            self.answers
                .lock()
                .unwrap()
                .entry(target)
                .or_default()
                .push_back((delay, result));
            self
        }

        /// Every query as `path index=N[ stale]`, in order.
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl Source for Script {
        async fn query(
            &self,
            target: &Target,
            index: Option<u64>,
            stale: bool,
        ) -> Result<Answer, BackendError> {
            let stale = if stale { " stale" } else { "" };
            let line = format!("{target} index={}{stale}", index.unwrap_or(0));
            self.log.lock().unwrap().push(line);
            let next = self
                .answers
                .lock()
                .unwrap()
                .get_mut(target)
                .and_then(VecDeque::pop_front);
            match next {
                Some((delay, result)) => {
                    tokio::time::sleep(delay).await;
                    result
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Runs a watch of `prefixes` against `script` with a 1-2 ms backoff.
    fn run(script: &Arc<Script>, prefixes: &[&str]) -> UpdateStream {
        let interest = Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services: false,
        };
        let timing = Timing {
            requery_interval: ms(10),
            ..timing()
        };
        let machine = Watch::new(Arc::clone(script), interest, timing);
        drive(
            machine,
            Backoff::new(ms(1), ms(2)),
            Label::new(NAME, "script"),
        )
    }

    async fn next(s: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an item in time")
            .expect("not the end")
    }

    /// Polls the stream for a while: nothing may come out.
    async fn quiet(s: &mut UpdateStream) {
        let got = tokio::time::timeout(ms(50), s.next()).await;
        assert!(got.is_err(), "want nothing, got {got:?}");
    }

    #[tokio::test]
    async fn the_first_item_is_a_snapshot_then_it_blocks_on_the_listed_index() {
        let script = Arc::new(
            Script::default()
                .then(app(), answer(10, kv(&[("/app/a", "1")])))
                .then(app(), answer(12, kv(&[("/app/a", "2")]))),
        );
        let mut s = run(&script, &["/app"]);
        let first = next(&mut s).await.expect("a snapshot");
        let [Update::Snapshot(snap)] = first.as_slice() else {
            panic!("want one snapshot, got {first:?}")
        };
        assert_eq!(snap.keys.get("/app/a"), Some("1"));
        assert_eq!(next(&mut s).await.unwrap(), [put("/app/a", "2")]);
        quiet(&mut s).await;
        assert_eq!(
            script.log(),
            [
                "/v1/kv/app index=0",
                "/v1/kv/app index=10 stale",
                "/v1/kv/app index=12 stale"
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_listing_is_reported_once_and_retried() {
        let script = Arc::new(
            Script::default()
                .then(app(), denied())
                .then(app(), denied())
                .then(app(), denied())
                .then(app(), answer(10, kv(&[("/app/a", "1")]))),
        );
        let mut s = run(&script, &["/app"]);
        let e = next(&mut s).await.expect_err("the refusal");
        assert!(e.to_string().contains("refused"), "{e}");
        // The same refusal is not repeated; the listing that works is the
        // next item.
        let batch = next(&mut s).await.expect("the snapshot");
        assert!(
            matches!(&batch[..], [Update::Snapshot(snap)] if snap.keys.get("/app/a") == Some("1"))
        );
        assert_eq!(script.log()[..4], ["/v1/kv/app index=0"; 4]);
    }

    #[tokio::test]
    async fn an_outage_is_reported_once_and_resumes_from_the_last_index() {
        let other = Target::Kv("/other".into());
        let script = Arc::new(
            Script::default()
                .then(app(), answer(10, kv(&[])))
                .then(other.clone(), answer(10, kv(&[])))
                // Both blocking queries fail...
                .then(app(), down())
                .then(other.clone(), down())
                // ...then /app answers (nothing new) while /other still
                // takes its time: not yet the end of the outage.
                .then(app(), answer(10, kv(&[])))
                .after(other.clone(), ms(30), answer(12, kv(&[("/other/x", "1")])))
                // A later, new outage.
                .after(app(), ms(100), down()),
        );
        let mut s = run(&script, &["/app", "/other"]);
        assert!(matches!(
            &next(&mut s).await.unwrap()[..],
            [Update::Snapshot(_)]
        ));
        assert!(next(&mut s).await.unwrap_err().is_transient());
        // No empty "recovered" batch after /app's answer: /other's change is
        // the next item, and it ends the outage.
        assert_eq!(next(&mut s).await.unwrap(), [put("/other/x", "1")]);
        // A new outage is reported again.
        assert!(next(&mut s).await.unwrap_err().is_transient());
        let log = script.log();
        assert!(
            log.iter()
                .filter(|l| *l == "/v1/kv/app index=10 stale")
                .count()
                >= 3,
            "every retry resumes from index 10: {log:#?}"
        );
        assert!(
            log.contains(&"/v1/kv/other index=12 stale".to_string()),
            "{log:#?}"
        );
    }

    #[tokio::test]
    async fn a_lone_failure_and_its_recovery_give_an_error_then_an_empty_batch() {
        let script = Arc::new(
            Script::default()
                .then(app(), answer(10, kv(&[])))
                .then(app(), denied())
                .then(app(), denied())
                .then(app(), answer(10, kv(&[]))),
        );
        let mut s = run(&script, &["/app"]);
        assert!(matches!(
            &next(&mut s).await.unwrap()[..],
            [Update::Snapshot(_)]
        ));
        assert!(matches!(
            next(&mut s).await,
            Err(BackendError::Denied { .. })
        ));
        assert_eq!(next(&mut s).await.unwrap(), [], "the all-clear");
        quiet(&mut s).await;
    }
}

//! The watch as a resumable state machine, in the shape of kube-runtime's
//! watcher: one [`State`] enum and one [`Machine::step`] that moves between
//! states. `sidekick_backend::drive` runs it: it waits a backoff delay after a
//! failed step and reports each outage once, so the machine only says where
//! it resumes from.
//!
//! ```text
//! Connecting ──▶ Loading ──▶ Subscribing ──▶ Watching ──(events)──▶ Watching
//!     ▲  │ resume                 ▲              │ compacted ──▶ Loading
//!     │  └────────────────────────┘              │ error / closed
//!     └──────────── (any failure) ◀──────────────┘
//! ```
//!
//! A watch always starts by reading everything (its first item is an
//! [`Update::Snapshot`]). Then the machine remembers, for each watched prefix,
//! the last revision whose events it has delivered. After a lost connection it
//! resumes every prefix from there (+1), so no change is missed and none is
//! replayed; if etcd has compacted that history away, it reads everything
//! again on the same connection and sends a snapshot. It talks to etcd through
//! [`Source`], which the tests replace.

use std::future::Future;
use std::sync::Arc;

use sidekick_backend::{
    normalize_key, BackendError, Interest, KeyTree, Machine, Names, Snapshot, Step, Update,
};

use crate::NAME;

/// Keys under the interest's prefixes, read at one revision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Loaded {
    /// The keys, normalized and restricted to the prefixes.
    pub keys: KeyTree,
    /// The store revision the keys were read at.
    pub revision: i64,
}

/// Where an etcd endpoint's store stands, from the header of its answer to a
/// connect: which cluster and which revision. Zeros when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Position {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The store's current revision.
    pub revision: i64,
}

/// One key change as etcd reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// The key as stored in etcd.
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<String>,
    /// The revision of the change.
    pub revision: i64,
}

/// One watch response, in our own type so the machine is testable without etcd.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Response {
    /// Which watch of the stream it is for (`-1`: all of them).
    pub watch_id: i64,
    /// Answer to a create request.
    pub created: bool,
    /// The watch is over (compaction, permission, cancel).
    pub canceled: bool,
    /// Non-zero when the requested history was compacted away.
    pub compact_revision: i64,
    /// Why the watch was canceled.
    pub cancel_reason: String,
    /// The store revision in the response header.
    pub revision: i64,
    /// The changes, in revision order.
    pub events: Vec<Event>,
}

/// What the machine needs from etcd. The real one is [`crate::client::Cluster`].
pub(crate) trait Source: Send + Sync + 'static {
    /// An open client.
    type Conn: Send + 'static;
    /// An open watch stream.
    type Watch: Send + 'static;

    /// The endpoints, for logs.
    fn label(&self) -> &str;

    /// Where the store of `conn`'s endpoint stood when it connected.
    fn position(&self, conn: &Self::Conn) -> Position;

    /// Opens a client (and authenticates).
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, BackendError>> + Send;

    /// Reads every prefix at one revision (and logs what it read).
    fn load(
        &self,
        conn: &mut Self::Conn,
        prefixes: &[String],
    ) -> impl Future<Output = Result<Loaded, BackendError>> + Send;

    /// Opens one watch stream with a watch per `(prefix, start revision)`.
    fn subscribe(
        &self,
        conn: &mut Self::Conn,
        from: &[(String, i64)],
    ) -> impl Future<Output = Result<Self::Watch, BackendError>> + Send;

    /// The next response; `None` when etcd closed the stream.
    fn next(
        &self,
        watch: &mut Self::Watch,
    ) -> impl Future<Output = Result<Option<Response>, BackendError>> + Send;
}

/// Where the machine is.
pub(crate) enum State<S: Source> {
    /// Opening a client. Then re-watch from `resume` (one revision per
    /// prefix, already delivered), or load everything when it is `None`.
    Connecting { resume: Option<Vec<i64>> },
    /// Reading every prefix at one revision.
    Loading { conn: S::Conn },
    /// Opening the watch stream; `revisions` are delivered already.
    Subscribing { conn: S::Conn, revisions: Vec<i64> },
    /// Reading the watch stream. `ids` maps watch ids to prefixes, in the order
    /// etcd confirmed them (the order they were asked for).
    Watching {
        conn: S::Conn,
        watch: S::Watch,
        revisions: Vec<i64>,
        ids: Vec<i64>,
    },
}

/// The watch over one [`Interest`], for `sidekick_backend::drive`: where to
/// read, what to watch and where it stands.
pub(crate) struct Watch<S: Source> {
    source: Arc<S>,
    interest: Interest,
    state: State<S>,
    /// The cluster the delivered data came from (0 until known).
    cluster_id: u64,
}

impl<S: Source> Watch<S> {
    /// A watch that starts by connecting and reading everything.
    pub fn new(source: Arc<S>, interest: Interest) -> Watch<S> {
        Watch {
            source,
            interest,
            state: State::Connecting { resume: None },
            cluster_id: 0,
        }
    }

    /// Where a fresh connection goes: on to watch from the revisions already
    /// delivered, or to read everything when there are none, or when the
    /// store is not the one they came from: another cluster id, or a current
    /// revision below one already delivered (an etcd back with a wiped data
    /// dir, or restored from a backup). Resuming then would wait for
    /// revisions that mean other changes, missing everything in between.
    fn after_connect(&mut self, conn: S::Conn, resume: Option<Vec<i64>>) -> State<S> {
        let now = self.source.position(&conn);
        let Some(revisions) = resume else {
            self.cluster_id = now.cluster_id;
            return State::Loading { conn };
        };
        let delivered = revisions.iter().copied().max().unwrap_or(0);
        let other_cluster =
            self.cluster_id != 0 && now.cluster_id != 0 && now.cluster_id != self.cluster_id;
        let went_back = now.revision > 0 && now.revision < delivered;
        if other_cluster || went_back {
            tracing::warn!(
                backend = NAME,
                endpoint = self.source.label(),
                delivered_revision = delivered,
                revision = now.revision,
                cluster_id = format_args!("{:x}", now.cluster_id),
                was_cluster_id = format_args!("{:x}", self.cluster_id),
                "etcd is not the store the data came from (revision went backwards or cluster id \
                 changed: wiped or restored?); reading everything again"
            );
            self.cluster_id = now.cluster_id;
            return State::Loading { conn };
        }
        if self.cluster_id == 0 {
            self.cluster_id = now.cluster_id;
        }
        State::Subscribing { conn, revisions }
    }

    /// Reconnects next, resuming from `resume`, and reports `error`.
    fn failed(&mut self, error: BackendError, resume: Option<Vec<i64>>) -> Step {
        self.state = State::Connecting { resume };
        Step::Failed(error)
    }

    /// The watch was canceled by etcd for a reason other than compaction.
    fn canceled(&self, reason: &str) -> BackendError {
        if reason.contains("permission denied") {
            BackendError::Denied {
                backend: NAME,
                message: format!("watch refused by {}: {reason}", self.source.label()),
            }
        } else {
            unavailable(
                self.source.label(),
                format!("watch canceled by etcd: {reason}"),
            )
        }
    }
}

impl<S: Source> Machine for Watch<S> {
    const NAMES: Names = Names::new("etcd watch", "etcd");

    fn state(&self) -> &'static str {
        match self.state {
            State::Connecting { .. } => "connecting",
            State::Loading { .. } => "loading",
            State::Subscribing { .. } => "subscribing",
            State::Watching { .. } => "watching",
        }
    }

    async fn step(&mut self) -> Step {
        let state = std::mem::replace(&mut self.state, State::Connecting { resume: None });
        match state {
            State::Connecting { resume } => match self.source.connect().await {
                Ok(conn) => {
                    self.state = self.after_connect(conn, resume);
                    Step::Pending
                }
                Err(e) => self.failed(e, resume),
            },
            State::Loading { mut conn } => {
                match self.source.load(&mut conn, &self.interest.prefixes).await {
                    Ok(loaded) => {
                        let revisions = vec![loaded.revision; self.interest.prefixes.len()];
                        self.state = State::Subscribing { conn, revisions };
                        Step::Updates(vec![Update::Snapshot(Snapshot {
                            keys: loaded.keys,
                            catalog: None,
                        })])
                    }
                    Err(e) => self.failed(e, None),
                }
            }
            State::Subscribing {
                mut conn,
                revisions,
            } => {
                let from: Vec<(String, i64)> = self
                    .interest
                    .prefixes
                    .iter()
                    .cloned()
                    .zip(revisions.iter().map(|r| r + 1))
                    .collect();
                match self.source.subscribe(&mut conn, &from).await {
                    Ok(watch) => {
                        tracing::debug!(
                            backend = NAME,
                            endpoint = self.source.label(),
                            prefixes = revisions.len(),
                            revision = revisions.iter().copied().min().unwrap_or(0),
                            "watch stream open"
                        );
                        self.state = State::Watching {
                            conn,
                            watch,
                            revisions,
                            ids: Vec::new(),
                        };
                        // etcd answered: ends an outage, if there was one.
                        Step::Updates(Vec::new())
                    }
                    Err(e) => self.failed(e, Some(revisions)),
                }
            }
            State::Watching {
                conn,
                mut watch,
                mut revisions,
                mut ids,
            } => {
                let response = match self.source.next(&mut watch).await {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        let closed = "watch stream closed by etcd".to_string();
                        let error = unavailable(self.source.label(), closed);
                        return self.failed(error, Some(revisions));
                    }
                    Err(e) => return self.failed(e, Some(revisions)),
                };
                let reply = read_response(&response, &self.interest, &mut revisions, &mut ids);
                let step = match reply {
                    Reply::Nothing => Step::Pending,
                    Reply::Batch(updates) => Step::Updates(updates),
                    Reply::Compacted(compacted) => {
                        tracing::info!(
                            backend = NAME,
                            endpoint = self.source.label(),
                            compact_revision = compacted,
                            "etcd compacted the history being watched; reading everything again"
                        );
                        drop(watch);
                        self.state = State::Loading { conn };
                        return Step::Pending;
                    }
                    Reply::Canceled(reason) => {
                        let error = self.canceled(&reason);
                        return self.failed(error, Some(revisions));
                    }
                };
                self.state = State::Watching {
                    conn,
                    watch,
                    revisions,
                    ids,
                };
                step
            }
        }
    }
}

/// An `Unavailable` error with a plain message.
pub(crate) fn unavailable(endpoint: &str, message: String) -> BackendError {
    BackendError::Unavailable {
        backend: NAME,
        endpoint: endpoint.to_string(),
        source: message.into(),
    }
}

/// What one watch response means for the machine.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Bookkeeping only (created, progress, keys outside the interest).
    Nothing,
    /// Changes to pass on, as one batch.
    Batch(Vec<Update>),
    /// The history to watch from is gone: reload.
    Compacted(i64),
    /// The watch was canceled for another reason.
    Canceled(String),
}

/// Reads one response: records watch ids and delivered revisions, and turns
/// events under the interest into updates.
fn read_response(
    response: &Response,
    interest: &Interest,
    revisions: &mut [i64],
    ids: &mut Vec<i64>,
) -> Reply {
    if response.compact_revision > 0 {
        return Reply::Compacted(response.compact_revision);
    }
    if response.canceled {
        return Reply::Canceled(response.cancel_reason.clone());
    }
    if response.created && !ids.contains(&response.watch_id) {
        ids.push(response.watch_id);
    }
    let slot = ids
        .iter()
        .position(|&id| id == response.watch_id)
        .filter(|&i| i < revisions.len());
    if response.events.is_empty() {
        if !response.created {
            // Progress notification: everything up to the header revision is sent.
            match slot {
                Some(i) => raise(&mut revisions[i], response.revision),
                None if response.watch_id == -1 => {
                    for rev in revisions.iter_mut() {
                        raise(rev, response.revision);
                    }
                }
                None => {}
            }
        }
        return Reply::Nothing;
    }
    // The header revision can run ahead of a lagging watch's events; only the
    // events say what was delivered.
    if let (Some(i), Some(last)) = (slot, response.events.last()) {
        raise(&mut revisions[i], last.revision);
    }
    let updates: Vec<Update> = response
        .events
        .iter()
        .filter_map(|event| {
            let key = normalize_key(&event.key);
            // The watch an event came from says which prefix to check: one
            // comparison, not one per prefix (many `keys` made that square).
            let covered = match slot {
                Some(i) => interest
                    .prefixes
                    .get(i)
                    .is_some_and(|p| sidekick_backend::is_under(&key, p)),
                None => interest.covers(&key),
            };
            if !covered {
                return None;
            }
            Some(match &event.value {
                Some(value) => Update::Put {
                    key,
                    value: value.clone(),
                },
                None => Update::Delete { key },
            })
        })
        .collect();
    if updates.is_empty() {
        Reply::Nothing
    } else {
        Reply::Batch(updates)
    }
}

fn raise(revision: &mut i64, to: i64) {
    if to > *revision {
        *revision = to;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::StreamExt;
    use sidekick_backend::{drive, Backoff, Label, UpdateStream};

    use super::*;

    type Script = VecDeque<Result<Option<Response>, BackendError>>;

    /// A scripted etcd: each call pops its next answer and is written to `log`.
    #[derive(Default)]
    struct Fake {
        connects: Mutex<VecDeque<Result<Position, BackendError>>>,
        loads: Mutex<VecDeque<Result<Loaded, BackendError>>>,
        watches: Mutex<VecDeque<Result<Script, BackendError>>>,
        log: Mutex<Vec<String>>,
    }

    impl Fake {
        fn note(&self, line: String) {
            self.log.lock().unwrap().push(line);
        }
        fn log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }
        fn connect_ok(&self) -> &Self {
            self.connects
                .lock()
                .unwrap()
                .push_back(Ok(Position::default()));
            self
        }
        /// A connect to a store of cluster `cluster_id` at `revision`.
        fn connect_at(&self, cluster_id: u64, revision: i64) -> &Self {
            self.connects.lock().unwrap().push_back(Ok(Position {
                cluster_id,
                revision,
            }));
            self
        }
        fn connect_err(&self, e: BackendError) -> &Self {
            self.connects.lock().unwrap().push_back(Err(e));
            self
        }
        fn load(&self, revision: i64, keys: &[(&str, &str)]) -> &Self {
            let mut tree = KeyTree::new();
            for (k, v) in keys {
                tree.insert(k, *v);
            }
            self.loads.lock().unwrap().push_back(Ok(Loaded {
                keys: tree,
                revision,
            }));
            self
        }
        fn load_err(&self, e: BackendError) -> &Self {
            self.loads.lock().unwrap().push_back(Err(e));
            self
        }
        fn watch(&self, script: Vec<Result<Option<Response>, BackendError>>) -> &Self {
            self.watches.lock().unwrap().push_back(Ok(script.into()));
            self
        }
        fn watch_err(&self, e: BackendError) -> &Self {
            self.watches.lock().unwrap().push_back(Err(e));
            self
        }
    }

    impl Source for Fake {
        type Conn = Position;
        type Watch = Script;

        fn label(&self) -> &str {
            "http://fake:2379"
        }

        fn position(&self, conn: &Position) -> Position {
            *conn
        }

        async fn connect(&self) -> Result<Position, BackendError> {
            self.note("connect".into());
            self.connects
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected connect")
        }

        async fn load(
            &self,
            _: &mut Position,
            prefixes: &[String],
        ) -> Result<Loaded, BackendError> {
            self.note(format!("load {}", prefixes.join(" ")));
            self.loads
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected load")
        }

        async fn subscribe(
            &self,
            _: &mut Position,
            from: &[(String, i64)],
        ) -> Result<Script, BackendError> {
            let from: Vec<String> = from.iter().map(|(p, r)| format!("{p}@{r}")).collect();
            self.note(format!("subscribe {}", from.join(" ")));
            self.watches
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected subscribe")
        }

        async fn next(&self, watch: &mut Script) -> Result<Option<Response>, BackendError> {
            match watch.pop_front() {
                Some(answer) => answer,
                // Nothing more scripted: an idle watch.
                None => std::future::pending().await,
            }
        }
    }

    fn interest(prefixes: &[&str]) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services: false,
        }
    }

    /// The watch of `prefixes` on `fake`, run by the driver with a 1-4 ms
    /// backoff.
    fn run(fake: &Arc<Fake>, prefixes: &[&str]) -> UpdateStream {
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
        let label = Label {
            backend: NAME,
            endpoint: fake.label().into(),
        };
        drive(
            Watch::new(Arc::clone(fake), interest(prefixes)),
            backoff,
            label,
        )
    }

    type Item = Result<Vec<Update>, BackendError>;

    /// The stream's next item (time is paused: a missing one fails at once).
    async fn next(s: &mut UpdateStream) -> Item {
        let item = tokio::time::timeout(Duration::from_secs(60), s.next()).await;
        item.expect("an item").expect("the stream goes on")
    }

    /// Runs the watch until it waits on etcd with nothing to yield.
    async fn idle(s: &mut UpdateStream) {
        let item = tokio::time::timeout(Duration::from_secs(60), s.next()).await;
        assert!(item.is_err(), "want nothing, got {item:?}");
    }

    /// The keys of a batch that must be one snapshot.
    fn snapshot(item: Item) -> KeyTree {
        match item.map(|mut batch| (batch.len(), batch.pop())) {
            Ok((1, Some(Update::Snapshot(s)))) => s.keys,
            other => panic!("want one snapshot, got {other:?}"),
        }
    }

    fn down() -> BackendError {
        unavailable("http://fake:2379", "connection refused".into())
    }

    fn created(id: i64) -> Result<Option<Response>, BackendError> {
        Ok(Some(Response {
            watch_id: id,
            created: true,
            ..Default::default()
        }))
    }

    fn events(
        id: i64,
        events: &[(&str, Option<&str>, i64)],
    ) -> Result<Option<Response>, BackendError> {
        Ok(Some(Response {
            watch_id: id,
            revision: events.last().map_or(0, |e| e.2),
            events: events
                .iter()
                .map(|(k, v, r)| Event {
                    key: k.to_string(),
                    value: v.map(str::to_string),
                    revision: *r,
                })
                .collect(),
            ..Default::default()
        }))
    }

    fn put(key: &str, value: &str) -> Update {
        Update::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn loads_then_watches_from_the_next_revision() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(5, &[("/app/a", "1")])
            .watch(vec![
                created(0),
                events(0, &[("/app/a", Some("2"), 6), ("/apple", Some("x"), 6)]),
                events(0, &[("/app/a", None, 7)]),
                Err(down()),
            ])
            .connect_ok()
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/app"]);
        assert_eq!(snapshot(next(&mut s).await).get("/app/a"), Some("1"));
        // `/apple` shares etcd's byte prefix but is not under `/app`.
        assert_eq!(next(&mut s).await.unwrap(), [put("/app/a", "2")]);
        assert_eq!(
            next(&mut s).await.unwrap(),
            [Update::Delete {
                key: "/app/a".into()
            }]
        );
        // Revision 7 is delivered: a reconnect resumes right after it.
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert_eq!(next(&mut s).await.unwrap(), []);
        assert_eq!(
            fake.log(),
            [
                "connect",
                "load /app",
                "subscribe /app@6",
                "connect",
                "subscribe /app@8"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_watch_starts_with_a_snapshot() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(41, &[("/b/k", "v")])
            .watch(vec![created(0), created(1)]);
        let mut s = run(&fake, &["/a", "/b"]);
        assert_eq!(snapshot(next(&mut s).await).get("/b/k"), Some("v"));
        idle(&mut s).await;
        assert_eq!(
            fake.log(),
            ["connect", "load /a /b", "subscribe /a@42 /b@42"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_whose_revision_went_backwards_is_read_again_not_resumed() {
        // Delivered up to 52; etcd comes back with a wiped data dir at 3.
        let fake = Arc::new(Fake::default());
        fake.connect_at(7, 50)
            .load(50, &[("/a/x", "old"), ("/a/y", "old")])
            .watch(vec![
                created(0),
                events(0, &[("/a/x", Some("newer"), 52)]),
                Err(down()),
            ])
            .connect_at(7, 3)
            .load(3, &[("/a/x", "wiped")])
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        assert_eq!(snapshot(next(&mut s).await).get("/a/x"), Some("old"));
        assert_eq!(next(&mut s).await.unwrap(), [put("/a/x", "newer")]);
        assert!(next(&mut s).await.unwrap_err().is_transient());
        let keys = snapshot(next(&mut s).await);
        assert_eq!(keys.get("/a/x"), Some("wiped"));
        assert_eq!(keys.get("/a/y"), None, "no stale key kept");
        idle(&mut s).await;
        assert_eq!(
            fake.log(),
            [
                "connect",
                "load /a",
                "subscribe /a@51",
                "connect",
                "load /a",
                "subscribe /a@4"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_cluster_is_read_again_and_the_same_one_resumed() {
        let fake = Arc::new(Fake::default());
        fake.connect_at(7, 10)
            .load(10, &[("/a/x", "one")])
            .watch(vec![created(0), Err(down())])
            // Same cluster, further on: resume.
            .connect_at(7, 12)
            .watch(vec![created(0), Err(down())])
            // Another cluster, even at a higher revision: read again.
            .connect_at(9, 500)
            .load(500, &[("/a/x", "two")])
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        assert_eq!(snapshot(next(&mut s).await).get("/a/x"), Some("one"));
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert_eq!(next(&mut s).await.unwrap(), []);
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert_eq!(snapshot(next(&mut s).await).get("/a/x"), Some("two"));
        idle(&mut s).await;
        assert_eq!(
            fake.log(),
            [
                "connect",
                "load /a",
                "subscribe /a@11",
                "connect",
                "subscribe /a@11",
                "connect",
                "load /a",
                "subscribe /a@501"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn compaction_reloads_on_the_same_connection() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(10, &[("/a/x", "old")])
            .watch(vec![
                created(0),
                Ok(Some(Response {
                    watch_id: 0,
                    canceled: true,
                    compact_revision: 90,
                    ..Default::default()
                })),
            ])
            .load(100, &[("/a/x", "new")])
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        assert_eq!(snapshot(next(&mut s).await).get("/a/x"), Some("old"));
        assert_eq!(snapshot(next(&mut s).await).get("/a/x"), Some("new"));
        idle(&mut s).await;
        assert_eq!(
            fake.log(),
            [
                "connect",
                "load /a",
                "subscribe /a@11",
                "load /a",
                "subscribe /a@101"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lost_connection_resumes_each_prefix_where_it_was() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(10, &[])
            .watch(vec![
                created(7),
                created(8),
                events(7, &[("/a/k", Some("v"), 20)]),
                // Progress notification for the quiet prefix.
                Ok(Some(Response {
                    watch_id: 8,
                    revision: 25,
                    ..Default::default()
                })),
                Err(down()),
            ])
            .connect_err(down())
            .connect_err(down())
            .connect_ok()
            .watch(vec![created(0), created(1)]);
        let mut s = run(&fake, &["/a", "/b"]);
        assert!(snapshot(next(&mut s).await).is_empty());
        assert_eq!(next(&mut s).await.unwrap(), [put("/a/k", "v")]);
        // The outage is reported once, however many retries fail.
        let err = next(&mut s).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        // Back: an empty batch says so, and nothing was replayed or reloaded.
        assert_eq!(next(&mut s).await.unwrap(), []);
        idle(&mut s).await;
        assert_eq!(
            fake.log(),
            [
                "connect",
                "load /a /b",
                "subscribe /a@11 /b@11",
                "connect",
                "connect",
                "connect",
                "subscribe /a@21 /b@26"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_subscribe_backs_off_and_keeps_the_revisions() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(3, &[])
            .watch_err(down())
            .connect_ok()
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        snapshot(next(&mut s).await);
        assert!(next(&mut s).await.is_err());
        assert_eq!(next(&mut s).await.unwrap(), []);
        assert_eq!(
            fake.log(),
            [
                "connect",
                "load /a",
                "subscribe /a@4",
                "connect",
                "subscribe /a@4"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_load_reads_again_on_a_new_connection() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load_err(down())
            .connect_ok()
            .load(8, &[("/a/k", "v")])
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert_eq!(snapshot(next(&mut s).await).get("/a/k"), Some("v"));
        idle(&mut s).await;
        assert_eq!(
            fake.log(),
            ["connect", "load /a", "connect", "load /a", "subscribe /a@9"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_kind_of_error_is_reported_again() {
        let fake = Arc::new(Fake::default());
        let denied = BackendError::Denied {
            backend: NAME,
            message: "authentication failed for user app".into(),
        };
        fake.connect_err(down())
            .connect_err(denied)
            .connect_err(down());
        let mut s = run(&fake, &["/a"]);
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert!(matches!(
            next(&mut s).await.unwrap_err(),
            BackendError::Denied { .. }
        ));
        assert!(next(&mut s).await.unwrap_err().is_transient());
    }

    #[tokio::test(start_paused = true)]
    async fn canceled_watch_is_an_error_and_retried() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(1, &[])
            .watch(vec![Ok(Some(Response {
                watch_id: 0,
                created: true,
                canceled: true,
                cancel_reason: "etcdserver: permission denied".into(),
                ..Default::default()
            }))])
            .connect_ok()
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        snapshot(next(&mut s).await);
        let err = next(&mut s).await.unwrap_err();
        assert!(matches!(err, BackendError::Denied { .. }), "{err}");
        assert_eq!(next(&mut s).await.unwrap(), []);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_stream_reconnects() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .load(1, &[])
            .watch(vec![created(0), Ok(None)])
            .connect_ok()
            .watch(vec![created(0)]);
        let mut s = run(&fake, &["/a"]);
        snapshot(next(&mut s).await);
        let err = next(&mut s).await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
        assert_eq!(next(&mut s).await.unwrap(), []);
    }

    #[tokio::test(start_paused = true)]
    async fn configuration_error_ends_the_stream() {
        let fake = Arc::new(Fake::default());
        fake.connect_err(BackendError::Config {
            backend: NAME,
            message: "bad TLS file".into(),
        });
        let mut s = run(&fake, &["/a"]);
        assert!(matches!(
            s.next().await,
            Some(Err(BackendError::Config { .. }))
        ));
        assert!(s.next().await.is_none());
    }

    #[test]
    fn progress_for_all_watches_raises_every_revision() {
        let mut revisions = [3, 9];
        let mut ids = vec![0, 1];
        let reply = read_response(
            &Response {
                watch_id: -1,
                revision: 12,
                ..Default::default()
            },
            &interest(&["/a", "/b"]),
            &mut revisions,
            &mut ids,
        );
        assert_eq!(reply, Reply::Nothing);
        assert_eq!(revisions, [12, 12]);
    }
}

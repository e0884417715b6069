//! The watch as a resumable state machine, in the shape of kube-runtime's
//! watcher: one [`State`] enum, one [`Watcher::step`] that moves between states,
//! and errors that are items of the stream rather than hidden retries.
//!
//! ```text
//! Connecting ──▶ Loading ──▶ Subscribing ──▶ Watching ──(events)──▶ Watching
//!     ▲  │ resume    ▲            │              │ compacted ──▶ Loading
//!     │  └───────────┼──────────▶─┘              │ error / closed
//!     └── Backoff ◀──┴───────────────────────────┘
//! ```
//!
//! The machine remembers, for each watched prefix, the last revision whose
//! events it has delivered. After a lost connection it resumes every prefix
//! from there (+1), so no change is missed and none is replayed; if etcd has
//! compacted that history away, it reads everything again and sends a
//! snapshot. It talks to etcd through [`Source`], which the tests replace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use sidekick_backend::{
    normalize_key, BackendError, Backoff, Interest, KeyTree, Snapshot, Update, UpdateStream,
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

    /// Opens a client (and authenticates).
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, BackendError>> + Send;

    /// Reads every prefix at one revision.
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
    /// Waiting before reconnecting.
    Backoff {
        delay: Duration,
        resume: Option<Vec<i64>>,
    },
    /// Given up for good (a configuration error); the stream ends.
    Done,
}

impl<S: Source> State<S> {
    /// The state's name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            State::Connecting { .. } => "connecting",
            State::Loading { .. } => "loading",
            State::Subscribing { .. } => "subscribing",
            State::Watching { .. } => "watching",
            State::Backoff { .. } => "backoff",
            State::Done => "done",
        }
    }
}

/// What the machine last told the world, so each state change is logged and
/// yielded once, not on every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Starting,
    Up,
    /// Failing, with the kind of error.
    Down(&'static str),
}

type Item = Result<Vec<Update>, BackendError>;

/// The watch over one [`Interest`]: a state, and what it needs to move on.
pub(crate) struct Watcher<S: Source> {
    source: Arc<S>,
    interest: Interest,
    backoff: Backoff,
    health: Health,
    state: State<S>,
}

impl<S: Source> Watcher<S> {
    /// A watcher that starts by connecting; with `loaded_at`, the revision the
    /// caller already read the interest at, it watches from there instead of
    /// reading everything again.
    pub fn new(
        source: Arc<S>,
        interest: Interest,
        backoff: Backoff,
        loaded_at: Option<i64>,
    ) -> Watcher<S> {
        let resume = loaded_at.map(|rev| vec![rev; interest.prefixes.len()]);
        Watcher {
            source,
            interest,
            backoff,
            health: Health::Starting,
            state: State::Connecting { resume },
        }
    }

    /// The current state.
    #[cfg(test)]
    pub fn state(&self) -> &State<S> {
        &self.state
    }

    /// The stream of update batches: runs [`Watcher::step`] until it has
    /// something to say. Dropping it drops the client and the watch.
    pub fn into_stream(self) -> UpdateStream {
        Box::pin(stream::unfold(self, |mut watcher| async move {
            loop {
                if matches!(watcher.state, State::Done) {
                    return None;
                }
                if let Some(item) = watcher.step().await {
                    return Some((item, watcher));
                }
            }
        }))
    }

    /// Makes one transition; returns what to yield, if anything.
    pub async fn step(&mut self) -> Option<Item> {
        let item = self.transition().await;
        tracing::trace!(backend = NAME, state = self.state.name(), "watch state");
        item
    }

    async fn transition(&mut self) -> Option<Item> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Connecting { resume } => match self.source.connect().await {
                Ok(conn) => {
                    self.state = match resume {
                        Some(revisions) => State::Subscribing { conn, revisions },
                        None => State::Loading { conn },
                    };
                    None
                }
                Err(e) => self.fail(e, resume),
            },
            State::Loading { mut conn } => {
                match self.source.load(&mut conn, &self.interest.prefixes).await {
                    Ok(loaded) => {
                        tracing::debug!(
                            backend = NAME,
                            endpoint = self.source.label(),
                            keys = loaded.keys.len(),
                            revision = loaded.revision,
                            "loaded"
                        );
                        let revisions = vec![loaded.revision; self.interest.prefixes.len()];
                        self.state = State::Subscribing { conn, revisions };
                        Some(Ok(vec![Update::Snapshot(Snapshot {
                            keys: loaded.keys,
                            catalog: None,
                        })]))
                    }
                    Err(e) => self.fail(e, None),
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
                        self.backoff.reset();
                        let item = self.up(&revisions);
                        self.state = State::Watching {
                            conn,
                            watch,
                            revisions,
                            ids: Vec::new(),
                        };
                        item
                    }
                    Err(e) => self.fail(e, Some(revisions)),
                }
            }
            State::Watching {
                conn,
                mut watch,
                mut revisions,
                mut ids,
            } => match self.source.next(&mut watch).await {
                Ok(Some(response)) => {
                    match read_response(&response, &self.interest, &mut revisions, &mut ids) {
                        Reply::Nothing => {
                            self.state = State::Watching {
                                conn,
                                watch,
                                revisions,
                                ids,
                            };
                            None
                        }
                        Reply::Batch(updates) => {
                            self.state = State::Watching {
                                conn,
                                watch,
                                revisions,
                                ids,
                            };
                            Some(Ok(updates))
                        }
                        Reply::Compacted(compacted) => {
                            tracing::info!(
                                backend = NAME,
                                endpoint = self.source.label(),
                                compact_revision = compacted,
                                "etcd compacted the history being watched; reading everything again"
                            );
                            drop(watch);
                            self.state = State::Loading { conn };
                            None
                        }
                        Reply::Canceled(reason) => {
                            let error = if reason.contains("permission denied") {
                                BackendError::Denied {
                                    backend: NAME,
                                    message: format!(
                                        "watch refused by {}: {reason}",
                                        self.source.label()
                                    ),
                                }
                            } else {
                                unavailable(
                                    self.source.label(),
                                    format!("watch canceled by etcd: {reason}"),
                                )
                            };
                            self.fail(error, Some(revisions))
                        }
                    }
                }
                Ok(None) => self.fail(
                    unavailable(self.source.label(), "watch stream closed by etcd".into()),
                    Some(revisions),
                ),
                Err(e) => self.fail(e, Some(revisions)),
            },
            State::Backoff { delay, resume } => {
                tokio::time::sleep(delay).await;
                self.state = State::Connecting { resume };
                None
            }
            State::Done => None,
        }
    }

    /// A step failed: back off and retry (resuming from `resume`), or stop for
    /// a configuration error. Yields the error only when the health changes.
    fn fail(&mut self, error: BackendError, resume: Option<Vec<i64>>) -> Option<Item> {
        let endpoint = self.source.label();
        if let BackendError::Config { .. } = error {
            tracing::error!(backend = NAME, endpoint, error = %error, "giving up on etcd");
            self.state = State::Done;
            return Some(Err(error));
        }
        let delay = self.backoff.next_delay();
        self.state = State::Backoff { delay, resume };
        let kind = error_kind(&error);
        if self.health == Health::Down(kind) {
            tracing::debug!(backend = NAME, endpoint, error = %error, ?delay, "still failing");
            return None;
        }
        tracing::warn!(
            backend = NAME,
            endpoint,
            error = %error,
            "etcd watch interrupted; retrying with backoff, keeping the last good data"
        );
        self.health = Health::Down(kind);
        Some(Err(error))
    }

    /// The watch is (again) established. After an outage, yields an empty
    /// batch so the core knows the backend is back.
    fn up(&mut self, revisions: &[i64]) -> Option<Item> {
        let endpoint = self.source.label();
        let revision = revisions.iter().copied().min().unwrap_or(0);
        match std::mem::replace(&mut self.health, Health::Up) {
            Health::Starting => {
                tracing::info!(
                    backend = NAME,
                    endpoint,
                    prefixes = revisions.len(),
                    revision,
                    "watching"
                );
                None
            }
            Health::Down(_) => {
                tracing::info!(
                    backend = NAME,
                    endpoint,
                    revision,
                    "etcd reachable again; watch resumed"
                );
                Some(Ok(Vec::new()))
            }
            Health::Up => None,
        }
    }
}

fn error_kind(error: &BackendError) -> &'static str {
    match error {
        BackendError::Unavailable { .. } => "unavailable",
        BackendError::Invalid { .. } => "invalid",
        BackendError::Denied { .. } => "denied",
        BackendError::Config { .. } => "config",
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
            if !interest.covers(&key) {
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

    use futures::StreamExt;

    use super::*;

    type Script = VecDeque<Result<Option<Response>, BackendError>>;

    /// A scripted etcd: each call pops its next answer and is written to `log`.
    #[derive(Default)]
    struct Fake {
        connects: Mutex<VecDeque<Result<(), BackendError>>>,
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
            self.connects.lock().unwrap().push_back(Ok(()));
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
        type Conn = ();
        type Watch = Script;

        fn label(&self) -> &str {
            "http://fake:2379"
        }

        async fn connect(&self) -> Result<(), BackendError> {
            self.note("connect".into());
            self.connects
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected connect")
        }

        async fn load(&self, _: &mut (), prefixes: &[String]) -> Result<Loaded, BackendError> {
            self.note(format!("load {}", prefixes.join(" ")));
            self.loads
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected load")
        }

        async fn subscribe(
            &self,
            _: &mut (),
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

    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(4))
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

    /// Steps until the machine yields something.
    async fn next_item(w: &mut Watcher<Fake>) -> Item {
        loop {
            if let Some(item) = w.step().await {
                return item;
            }
        }
    }

    /// Steps until the machine is in state `name`, failing on any yielded item.
    async fn run_to(w: &mut Watcher<Fake>, name: &str) {
        for _ in 0..20 {
            if w.state().name() == name {
                return;
            }
            if let Some(item) = w.step().await {
                panic!("unexpected item on the way to {name}: {item:?}");
            }
        }
        panic!("never reached {name}, stuck in {}", w.state().name());
    }

    #[tokio::test]
    async fn loads_then_watches_from_the_next_revision() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok().load(5, &[("/app/a", "1")]).watch(vec![
            created(0),
            events(0, &[("/app/a", Some("2"), 6), ("/apple", Some("x"), 6)]),
            events(0, &[("/app/a", None, 7)]),
        ]);
        let mut w = Watcher::new(fake.clone(), interest(&["/app"]), fast(), None);
        assert_eq!(w.state().name(), "connecting");
        let first = next_item(&mut w).await.unwrap();
        assert!(matches!(&first[..], [Update::Snapshot(s)] if s.keys.get("/app/a") == Some("1")));
        assert_eq!(w.state().name(), "subscribing");
        // `/apple` shares etcd's byte prefix but is not under `/app`.
        assert_eq!(next_item(&mut w).await.unwrap(), [put("/app/a", "2")]);
        assert_eq!(
            next_item(&mut w).await.unwrap(),
            [Update::Delete {
                key: "/app/a".into()
            }]
        );
        assert_eq!(fake.log(), ["connect", "load /app", "subscribe /app@6"]);
        match w.state() {
            State::Watching { revisions, ids, .. } => {
                assert_eq!(revisions, &[7]);
                assert_eq!(ids, &[0]);
            }
            other => panic!("in {}", other.name()),
        }
    }

    #[tokio::test]
    async fn watch_after_load_resumes_without_reading_again() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok().watch(vec![created(0), created(1)]);
        let mut w = Watcher::new(fake.clone(), interest(&["/a", "/b"]), fast(), Some(41));
        run_to(&mut w, "watching").await;
        assert_eq!(fake.log(), ["connect", "subscribe /a@42 /b@42"]);
    }

    #[tokio::test]
    async fn compaction_reloads_on_the_same_connection() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
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
        let mut w = Watcher::new(fake.clone(), interest(&["/a"]), fast(), Some(10));
        let item = next_item(&mut w).await.unwrap();
        assert!(matches!(&item[..], [Update::Snapshot(s)] if s.keys.get("/a/x") == Some("new")));
        run_to(&mut w, "watching").await;
        assert_eq!(
            fake.log(),
            ["connect", "subscribe /a@11", "load /a", "subscribe /a@101"]
        );
    }

    #[tokio::test]
    async fn lost_connection_resumes_each_prefix_where_it_was() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
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
        let mut w = Watcher::new(fake.clone(), interest(&["/a", "/b"]), fast(), Some(10));
        assert_eq!(next_item(&mut w).await.unwrap(), [put("/a/k", "v")]);
        // The outage is reported once, however many retries fail.
        let err = next_item(&mut w).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert_eq!(w.state().name(), "backoff");
        // Back: an empty batch says so, and nothing was replayed or reloaded.
        assert_eq!(next_item(&mut w).await.unwrap(), []);
        assert_eq!(w.state().name(), "watching");
        assert_eq!(
            fake.log(),
            [
                "connect",
                "subscribe /a@11 /b@11",
                "connect",
                "connect",
                "connect",
                "subscribe /a@21 /b@26"
            ]
        );
    }

    #[tokio::test]
    async fn failed_subscribe_backs_off_and_keeps_the_revisions() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .watch_err(down())
            .connect_ok()
            .watch(vec![created(0)]);
        let mut w = Watcher::new(fake.clone(), interest(&["/a"]), fast(), Some(3));
        assert!(next_item(&mut w).await.is_err());
        assert_eq!(next_item(&mut w).await.unwrap(), []);
        assert_eq!(
            fake.log(),
            ["connect", "subscribe /a@4", "connect", "subscribe /a@4"]
        );
    }

    #[tokio::test]
    async fn a_new_kind_of_error_is_reported_again() {
        let fake = Arc::new(Fake::default());
        let denied = BackendError::Denied {
            backend: NAME,
            message: "authentication failed for user app".into(),
        };
        fake.connect_err(down())
            .connect_err(denied)
            .connect_err(down());
        let mut w = Watcher::new(fake.clone(), interest(&["/a"]), fast(), None);
        assert!(next_item(&mut w).await.unwrap_err().is_transient());
        assert!(matches!(
            next_item(&mut w).await.unwrap_err(),
            BackendError::Denied { .. }
        ));
        assert!(next_item(&mut w).await.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn canceled_watch_is_an_error_and_retried() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .watch(vec![Ok(Some(Response {
                watch_id: 0,
                created: true,
                canceled: true,
                cancel_reason: "etcdserver: permission denied".into(),
                ..Default::default()
            }))])
            .connect_ok()
            .watch(vec![created(0)]);
        let mut w = Watcher::new(fake.clone(), interest(&["/a"]), fast(), Some(1));
        let err = next_item(&mut w).await.unwrap_err();
        assert!(matches!(err, BackendError::Denied { .. }), "{err}");
        assert_eq!(next_item(&mut w).await.unwrap(), []);
    }

    #[tokio::test]
    async fn closed_stream_reconnects() {
        let fake = Arc::new(Fake::default());
        fake.connect_ok()
            .watch(vec![created(0), Ok(None)])
            .connect_ok()
            .watch(vec![created(0)]);
        let mut w = Watcher::new(fake.clone(), interest(&["/a"]), fast(), Some(1));
        let err = next_item(&mut w).await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
        assert_eq!(next_item(&mut w).await.unwrap(), []);
    }

    #[tokio::test]
    async fn configuration_error_ends_the_stream() {
        let fake = Arc::new(Fake::default());
        fake.connect_err(BackendError::Config {
            backend: NAME,
            message: "bad TLS file".into(),
        });
        let mut stream = Watcher::new(fake, interest(&["/a"]), fast(), None).into_stream();
        assert!(matches!(
            stream.next().await,
            Some(Err(BackendError::Config { .. }))
        ));
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bases = [100, 200, 400, 800, 1000, 1000];
        for base in bases {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(d >= base / 2 && d <= base, "{d:?} for {base:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
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

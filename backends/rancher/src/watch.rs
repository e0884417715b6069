//! The watch as a resumable state machine, in the shape of kube-runtime's
//! watcher: one [`State`] enum, one [`Watcher::step`] that moves between
//! states, and errors that are items of the stream rather than hidden retries.
//!
//! ```text
//!            changed                       same version (maxWait ran out)
//! Reading ────────────▶ Watching ──────────────────────────▶ Watching
//!    ▲                     │ new version                        ▲
//!    └─────────────────────┘                                    │
//!    │ error          │ error                                   │
//!    └──▶ Backoff ◀───┘ ── resumes Reading, or Watching the same version
//! ```
//!
//! Watching is one long-poll of `/<version>/version?wait=true&value=V&maxWait=S`:
//! the metadata service holds it until the version differs from `V`, so an
//! idle watch costs one request every `maxWait` seconds. A new version makes
//! the machine read the trees again and yield a snapshot (only when what the
//! interest sees changed). After a lost connection it long-polls from the
//! version it last delivered: nothing is missed, and nothing is read again
//! when nothing changed while the service was away.
//!
//! It talks to the service through [`Source`], which the tests replace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use sidekick_backend::{BackendError, Backoff, Interest, Snapshot, Update, UpdateStream};
use tokio::time::Instant;

use crate::NAME;

/// What one read of the metadata gives: the interest's keys and catalog, and
/// the version they were read at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Loaded {
    /// Keys (and catalog, when asked for) under the interest.
    pub snapshot: Snapshot,
    /// The metadata version (`/version`) of that snapshot.
    pub version: String,
}

/// What the machine needs from the metadata service. The real one is
/// [`crate::HttpSource`].
pub(crate) trait Source: Send + Sync + 'static {
    /// The service's URL, for logs.
    fn label(&self) -> String;

    /// Reads the keys and catalog for `interest`.
    fn read(
        &self,
        interest: &Interest,
    ) -> impl Future<Output = Result<Loaded, BackendError>> + Send;

    /// Long-polls the version: returns when it differs from `version`, or
    /// with `version` itself after about `max_wait`.
    fn wait(
        &self,
        version: &str,
        max_wait: Duration,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;
}

/// Where the machine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Reading the trees; then watching from their version.
    Reading,
    /// Long-polling for a version other than `version`, which is delivered.
    Watching { version: String },
    /// Waiting before going on: watching `resume` again, or reading when it is
    /// `None`.
    Backoff {
        delay: Duration,
        resume: Option<String>,
    },
}

impl State {
    /// The state's name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            State::Reading => "reading",
            State::Watching { .. } => "watching",
            State::Backoff { .. } => "backoff",
        }
    }
}

/// What the machine last told the world, so each change of health is logged
/// and yielded once, not on every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Starting,
    Up,
    /// Failing, with the kind of error.
    Down(&'static str),
}

/// Timing of the watch.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    /// `maxWait` of each long-poll.
    pub max_wait: Duration,
    /// A long-poll that comes back with the same version sooner than this
    /// means the service does not hold requests: wait this long before the
    /// next one, so there is never a request storm.
    pub min_poll: Duration,
    /// Retry delays after errors.
    pub backoff: Backoff,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            max_wait: Duration::from_secs(60),
            min_poll: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        }
    }
}

type Item = Result<Vec<Update>, BackendError>;

/// The watch over one [`Interest`]: a state, and what it needs to move on.
pub(crate) struct Watcher<S: Source> {
    source: Arc<S>,
    interest: Interest,
    timing: Timing,
    health: Health,
    state: State,
    /// The last snapshot delivered (by the watch or the caller's load), so an
    /// unchanged re-read yields nothing.
    delivered: Option<Snapshot>,
}

impl<S: Source> Watcher<S> {
    /// A watcher that starts by reading; with `loaded`, what the caller already
    /// read for this interest, it long-polls from that version instead.
    pub fn new(
        source: Arc<S>,
        interest: Interest,
        timing: Timing,
        loaded: Option<Loaded>,
    ) -> Watcher<S> {
        let (state, delivered) = match loaded {
            Some(l) => (State::Watching { version: l.version }, Some(l.snapshot)),
            None => (State::Reading, None),
        };
        Watcher {
            source,
            interest,
            timing,
            health: Health::Starting,
            state,
            delivered,
        }
    }

    /// The current state.
    #[cfg(test)]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The stream of update batches: runs [`Watcher::step`] until it has
    /// something to say. It never ends; dropping it drops the request in
    /// flight and its connection.
    pub fn into_stream(self) -> UpdateStream {
        Box::pin(stream::unfold(self, |mut watcher| async move {
            loop {
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
        match std::mem::replace(&mut self.state, State::Reading) {
            State::Reading => match self.source.read(&self.interest).await {
                Ok(loaded) => {
                    tracing::debug!(
                        backend = NAME,
                        endpoint = %self.source.label(),
                        keys = loaded.snapshot.keys.len(),
                        version = %loaded.version,
                        "read the metadata"
                    );
                    self.timing.backoff.reset();
                    self.state = State::Watching {
                        version: loaded.version,
                    };
                    let mut batch = Vec::new();
                    if self.delivered.as_ref() != Some(&loaded.snapshot) {
                        self.delivered = Some(loaded.snapshot.clone());
                        batch.push(Update::Snapshot(loaded.snapshot));
                    }
                    self.up(batch)
                }
                Err(e) => self.fail(e, None),
            },
            State::Watching { version } => {
                let started = Instant::now();
                match self.source.wait(&version, self.timing.max_wait).await {
                    Ok(current) if current != version => {
                        tracing::debug!(
                            backend = NAME,
                            from = %version,
                            to = %current,
                            "metadata version changed"
                        );
                        self.state = State::Reading;
                        None
                    }
                    Ok(_) => {
                        self.timing.backoff.reset();
                        let elapsed = started.elapsed();
                        if elapsed < self.timing.min_poll {
                            tracing::debug!(
                                backend = NAME,
                                endpoint = %self.source.label(),
                                ?elapsed,
                                "the metadata service answered a long-poll at once; pacing"
                            );
                            self.state = State::Backoff {
                                delay: self.timing.min_poll - elapsed,
                                resume: Some(version),
                            };
                        } else {
                            self.state = State::Watching { version };
                        }
                        self.up(Vec::new())
                    }
                    Err(e) => self.fail(e, Some(version)),
                }
            }
            State::Backoff { delay, resume } => {
                tokio::time::sleep(delay).await;
                self.state = match resume {
                    Some(version) => State::Watching { version },
                    None => State::Reading,
                };
                None
            }
        }
    }

    /// A step failed: back off and retry. Yields the error only when the
    /// health changes.
    fn fail(&mut self, error: BackendError, resume: Option<String>) -> Option<Item> {
        let delay = self.timing.backoff.next_delay();
        self.state = State::Backoff { delay, resume };
        let kind = error_kind(&error);
        let endpoint = self.source.label();
        if self.health == Health::Down(kind) {
            tracing::debug!(backend = NAME, %endpoint, error = %error, ?delay, "still failing");
            return None;
        }
        tracing::warn!(
            backend = NAME,
            %endpoint,
            error = %error,
            ?delay,
            "metadata watch interrupted; retrying with backoff, keeping the last good data"
        );
        self.health = Health::Down(kind);
        Some(Err(error))
    }

    /// A request succeeded: yields `batch`, or after an outage an empty batch
    /// so the core knows the backend is back.
    fn up(&mut self, batch: Vec<Update>) -> Option<Item> {
        let before = std::mem::replace(&mut self.health, Health::Up);
        match before {
            Health::Down(_) => {
                tracing::info!(
                    backend = NAME,
                    endpoint = %self.source.label(),
                    "metadata service reachable again; watch resumed"
                );
                Some(Ok(batch))
            }
            Health::Starting => {
                tracing::info!(
                    backend = NAME,
                    endpoint = %self.source.label(),
                    "watching the metadata version"
                );
                (!batch.is_empty()).then_some(Ok(batch))
            }
            Health::Up => (!batch.is_empty()).then_some(Ok(batch)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use sidekick_backend::KeyTree;

    /// A scripted metadata service: each call takes the next answer.
    #[derive(Default)]
    struct Script {
        reads: Mutex<VecDeque<Result<Loaded, BackendError>>>,
        waits: Mutex<VecDeque<Result<String, BackendError>>>,
        wait_takes: Mutex<Duration>,
        calls: Mutex<Vec<String>>,
    }

    impl Source for Script {
        fn label(&self) -> String {
            "http://test/latest".into()
        }

        async fn read(&self, _interest: &Interest) -> Result<Loaded, BackendError> {
            self.calls.lock().unwrap().push("read".into());
            self.reads
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected read")
        }

        async fn wait(&self, version: &str, _max: Duration) -> Result<String, BackendError> {
            self.calls.lock().unwrap().push(format!("wait {version}"));
            let takes = *self.wait_takes.lock().unwrap();
            tokio::time::sleep(takes).await;
            self.waits
                .lock()
                .unwrap()
                .pop_front()
                .expect("unexpected wait")
        }
    }

    fn loaded(version: &str, value: &str) -> Loaded {
        let mut keys = KeyTree::new();
        keys.insert("/self/container/primary_ip", value);
        Loaded {
            snapshot: Snapshot {
                keys,
                catalog: None,
            },
            version: version.into(),
        }
    }

    fn down() -> BackendError {
        BackendError::Unavailable {
            backend: NAME,
            endpoint: "http://test/latest/version".into(),
            source: "connection refused".into(),
        }
    }

    fn timing() -> Timing {
        Timing {
            max_wait: Duration::from_secs(60),
            min_poll: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
        }
    }

    fn watcher(script: Script, loaded: Option<Loaded>) -> (Watcher<Script>, Arc<Script>) {
        let script = Arc::new(script);
        let w = Watcher::new(Arc::clone(&script), Interest::default(), timing(), loaded);
        (w, script)
    }

    fn value_of(item: &Item) -> String {
        match item {
            Ok(batch) => match batch.as_slice() {
                [Update::Snapshot(s)] => s.keys.get("/self/container/primary_ip").unwrap().into(),
                other => panic!("unexpected batch {other:?}"),
            },
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_then_long_polls_and_rereads_on_a_new_version() {
        let script = Script::default();
        script
            .reads
            .lock()
            .unwrap()
            .extend([Ok(loaded("1", "a")), Ok(loaded("2", "b"))]);
        script.waits.lock().unwrap().push_back(Ok("2".into()));
        let (mut w, script) = watcher(script, None);

        assert_eq!(value_of(&w.step().await.unwrap()), "a");
        assert_eq!(
            w.state(),
            &State::Watching {
                version: "1".into()
            }
        );
        assert!(w.step().await.is_none());
        assert_eq!(w.state(), &State::Reading);
        assert_eq!(value_of(&w.step().await.unwrap()), "b");
        assert_eq!(
            w.state(),
            &State::Watching {
                version: "2".into()
            }
        );
        assert_eq!(*script.calls.lock().unwrap(), ["read", "wait 1", "read"]);
    }

    #[tokio::test(start_paused = true)]
    async fn starts_from_the_callers_load_and_skips_unchanged_reads() {
        let script = Script::default();
        // Version 2 only changed keys outside the interest: same snapshot.
        script.waits.lock().unwrap().push_back(Ok("2".into()));
        script.reads.lock().unwrap().push_back(Ok(loaded("2", "a")));
        let (mut w, script) = watcher(script, Some(loaded("1", "a")));
        assert_eq!(
            w.state(),
            &State::Watching {
                version: "1".into()
            }
        );
        assert!(w.step().await.is_none());
        assert!(
            w.step().await.is_none(),
            "unchanged snapshot must not be yielded"
        );
        assert_eq!(
            w.state(),
            &State::Watching {
                version: "2".into()
            }
        );
        assert_eq!(*script.calls.lock().unwrap(), ["wait 1", "read"]);
    }

    #[tokio::test(start_paused = true)]
    async fn same_version_after_max_wait_keeps_watching_without_reading() {
        let script = Script::default();
        *script.wait_takes.lock().unwrap() = Duration::from_secs(60);
        script.waits.lock().unwrap().push_back(Ok("1".into()));
        let (mut w, script) = watcher(script, Some(loaded("1", "a")));
        assert!(w.step().await.is_none());
        assert_eq!(
            w.state(),
            &State::Watching {
                version: "1".into()
            }
        );
        assert_eq!(*script.calls.lock().unwrap(), ["wait 1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_same_version_answer_is_paced() {
        let script = Script::default();
        script.waits.lock().unwrap().push_back(Ok("1".into()));
        let (mut w, _script) = watcher(script, Some(loaded("1", "a")));
        assert!(w.step().await.is_none());
        assert_eq!(
            w.state(),
            &State::Backoff {
                delay: Duration::from_secs(1),
                resume: Some("1".into())
            },
            "a service that does not hold long-polls must not cause a request storm"
        );
        assert!(w.step().await.is_none());
        assert_eq!(
            w.state(),
            &State::Watching {
                version: "1".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_and_resume_from_the_delivered_version() {
        let script = Script::default();
        script.waits.lock().unwrap().extend([
            Err(down()),
            Err(down()),
            Ok("1".into()),
            Ok("3".into()),
        ]);
        script.reads.lock().unwrap().push_back(Ok(loaded("3", "c")));
        let (mut w, script) = watcher(script, Some(loaded("1", "a")));

        // The first failure is yielded...
        assert!(w.step().await.unwrap().is_err());
        assert!(matches!(w.state(), State::Backoff { resume: Some(v), .. } if v == "1"));
        assert!(w.step().await.is_none()); // backoff sleep
                                           // ...a second of the same kind is not.
        assert!(w.step().await.is_none());
        assert!(w.step().await.is_none()); // backoff sleep
                                           // Back, same version: an empty batch says so, and nothing is read.
        assert_eq!(w.step().await.unwrap().unwrap(), Vec::new());
        assert!(w.step().await.is_none()); // pacing (instant answer)
                                           // Then a real change.
        assert!(w.step().await.is_none());
        assert_eq!(w.state(), &State::Reading);
        assert_eq!(value_of(&w.step().await.unwrap()), "c");
        assert_eq!(
            *script.calls.lock().unwrap(),
            ["wait 1", "wait 1", "wait 1", "wait 1", "read"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_read_is_retried_as_a_read() {
        let script = Script::default();
        script
            .reads
            .lock()
            .unwrap()
            .extend([Err(down()), Ok(loaded("1", "a"))]);
        let (mut w, _script) = watcher(script, None);
        assert!(w.step().await.unwrap().is_err());
        assert!(matches!(w.state(), State::Backoff { resume: None, .. }));
        assert!(w.step().await.is_none());
        assert_eq!(w.state(), &State::Reading);
        assert_eq!(value_of(&w.step().await.unwrap()), "a");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<Duration> = (0..4).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[1] >= Duration::from_millis(100) && d[1] <= Duration::from_millis(200));
        assert!(d[3] >= Duration::from_millis(175) && d[3] <= Duration::from_millis(350));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

//! The watch as a resumable state machine, in the shape of kube-runtime's
//! watcher: one [`State`] enum and one [`Machine::step`] that moves between
//! states. `sidekick_backend::drive` runs it: it waits a backoff delay after a
//! failed step and reports each outage once, so the machine only says where
//! it resumes from.
//!
//! ```text
//!            read                          same version (maxWait ran out)
//! Reading ────────────▶ Watching ──────────────────────────▶ Watching
//!    ▲                     │ │ same version at once
//!    └─────────────────────┘ └──▶ Pacing ──(min_poll)──▶ Watching
//!          new version
//! ```
//!
//! A watch always starts by reading the trees (its first item is an
//! [`Update::Snapshot`]). Watching is one long-poll of
//! `/<version>/version?wait=true&value=V&maxWait=S`: the metadata service
//! holds it until the version differs from `V`, so an idle watch costs one
//! request every `maxWait` seconds. A new version makes the machine read the
//! trees again and yield a snapshot (only when what the interest sees
//! changed). A service that answers a long-poll at once with the same version
//! does not hold requests: `Pacing` spaces the next one out to `min_poll`, so
//! there is never a request storm. A failed read is read again; a failed
//! long-poll resumes from the version last delivered, so nothing is missed and
//! nothing is read again when nothing changed while the service was away.
//!
//! It talks to the service through [`Source`], which the tests replace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sidekick_backend::{BackendError, Interest, Machine, Names, Snapshot, Step, Update};
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
    /// The last long-poll came back at once with `version` unchanged: waiting
    /// `delay` before the next one.
    Pacing { delay: Duration, version: String },
}

/// Timing of the watch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// `maxWait` of each long-poll.
    pub max_wait: Duration,
    /// A long-poll that comes back with the same version sooner than this
    /// means the service does not hold requests: wait this long before the
    /// next one.
    pub min_poll: Duration,
    /// First retry delay after an error (the driver's backoff).
    pub backoff_start: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            max_wait: Duration::from_secs(60),
            min_poll: Duration::from_secs(1),
            backoff_start: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

/// The watch over one [`Interest`], for `sidekick_backend::drive`: where to
/// read, what to watch and where it stands.
pub(crate) struct Watch<S: Source> {
    source: Arc<S>,
    interest: Interest,
    timing: Timing,
    state: State,
    /// The last snapshot delivered, so an unchanged re-read yields nothing.
    delivered: Option<Snapshot>,
}

impl<S: Source> Watch<S> {
    /// A watch that starts by reading the trees.
    pub fn new(source: Arc<S>, interest: Interest, timing: Timing) -> Watch<S> {
        Watch {
            source,
            interest,
            timing,
            state: State::Reading,
            delivered: None,
        }
    }
}

impl<S: Source> Machine for Watch<S> {
    const NAMES: Names = Names::new("metadata watch", "metadata service");

    fn state(&self) -> &'static str {
        match self.state {
            State::Reading => "reading",
            State::Watching { .. } => "watching",
            State::Pacing { .. } => "pacing",
        }
    }

    async fn step(&mut self) -> Step {
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
                    self.state = State::Watching {
                        version: loaded.version,
                    };
                    let mut batch = Vec::new();
                    if self.delivered.as_ref() != Some(&loaded.snapshot) {
                        self.delivered = Some(loaded.snapshot.clone());
                        batch.push(Update::Snapshot(loaded.snapshot));
                    }
                    Step::Updates(batch)
                }
                // Still `Reading`: the driver waits, then this reads again.
                Err(e) => Step::Failed(e),
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
                        Step::Pending
                    }
                    Ok(_) => {
                        let elapsed = started.elapsed();
                        self.state = if elapsed < self.timing.min_poll {
                            tracing::debug!(
                                backend = NAME,
                                endpoint = %self.source.label(),
                                ?elapsed,
                                "the metadata service answered a long-poll at once; pacing"
                            );
                            State::Pacing {
                                delay: self.timing.min_poll - elapsed,
                                version,
                            }
                        } else {
                            State::Watching { version }
                        };
                        // The service answered: ends an outage, if there was one.
                        Step::Updates(Vec::new())
                    }
                    Err(e) => {
                        self.state = State::Watching { version };
                        Step::Failed(e)
                    }
                }
            }
            State::Pacing { delay, version } => {
                tokio::time::sleep(delay).await;
                self.state = State::Watching { version };
                Step::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use futures::StreamExt;
    use sidekick_backend::{drive, Backoff, KeyTree, Label, UpdateStream};

    /// A scripted metadata service: each call takes the next answer; with
    /// none left it never answers (an idle long-poll).
    #[derive(Default)]
    struct Script {
        reads: Mutex<VecDeque<Result<Loaded, BackendError>>>,
        waits: Mutex<VecDeque<Result<String, BackendError>>>,
        wait_takes: Mutex<Duration>,
        calls: Mutex<Vec<String>>,
        /// When each long-poll was sent.
        waited_at: Mutex<Vec<Instant>>,
    }

    impl Script {
        /// A script with these answers to reads and to long-polls.
        fn new<const R: usize, const W: usize>(
            reads: [Result<Loaded, BackendError>; R],
            waits: [Result<&str, BackendError>; W],
        ) -> Script {
            let waits = waits.into_iter().map(|w| w.map(str::to_string));
            Script {
                reads: Mutex::new(reads.into()),
                waits: Mutex::new(waits.collect()),
                ..Script::default()
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        /// The time between the long-polls that were sent.
        fn wait_gaps(&self) -> Vec<Duration> {
            let at = self.waited_at.lock().unwrap();
            at.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    impl Source for Script {
        fn label(&self) -> String {
            "http://test/latest".into()
        }

        async fn read(&self, _interest: &Interest) -> Result<Loaded, BackendError> {
            self.calls.lock().unwrap().push("read".into());
            let next = self.reads.lock().unwrap().pop_front();
            match next {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        }

        async fn wait(&self, version: &str, _max: Duration) -> Result<String, BackendError> {
            self.calls.lock().unwrap().push(format!("wait {version}"));
            self.waited_at.lock().unwrap().push(Instant::now());
            let takes = *self.wait_takes.lock().unwrap();
            tokio::time::sleep(takes).await;
            let next = self.waits.lock().unwrap().pop_front();
            match next {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
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

    /// The watch on `script`, run by the driver (time is paused in the tests,
    /// so waits and backoff take no real time).
    fn run(script: Script) -> (UpdateStream, Arc<Script>) {
        let script = Arc::new(script);
        let timing = Timing {
            max_wait: Duration::from_secs(60),
            min_poll: Duration::from_secs(1),
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
        };
        let watch = Watch::new(Arc::clone(&script), Interest::default(), timing);
        let backoff = Backoff::new(timing.backoff_start, timing.backoff_cap);
        let label = Label {
            backend: NAME,
            endpoint: script.label(),
        };
        (drive(watch, backoff, label), script)
    }

    const LONG: Duration = Duration::from_secs(3600);

    /// The stream's next item.
    async fn next(s: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
        let item = tokio::time::timeout(LONG, s.next()).await.expect("an item");
        item.expect("the stream goes on")
    }

    /// Runs the watch until it waits with nothing to yield.
    async fn idle(s: &mut UpdateStream) {
        let item = tokio::time::timeout(LONG, s.next()).await;
        assert!(item.is_err(), "want nothing, got {item:?}");
    }

    /// The primary IP of a batch that must be one snapshot.
    fn value_of(item: Result<Vec<Update>, BackendError>) -> String {
        match item.as_deref() {
            Ok([Update::Snapshot(s)]) => s.keys.get("/self/container/primary_ip").unwrap().into(),
            other => panic!("want one snapshot, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_then_long_polls_and_rereads_on_a_new_version() {
        let script = Script::new([Ok(loaded("1", "a")), Ok(loaded("2", "b"))], [Ok("2")]);
        let (mut s, script) = run(script);
        assert_eq!(value_of(next(&mut s).await), "a");
        assert_eq!(value_of(next(&mut s).await), "b");
        idle(&mut s).await;
        assert_eq!(script.calls(), ["read", "wait 1", "read", "wait 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_item_is_a_snapshot_and_unchanged_rereads_are_skipped() {
        // Version 2 only changed keys outside the interest: same snapshot.
        let script = Script::new([Ok(loaded("1", "a")), Ok(loaded("2", "a"))], [Ok("2")]);
        let (mut s, script) = run(script);
        assert_eq!(value_of(next(&mut s).await), "a");
        // The unchanged snapshot of version 2 must not be yielded.
        idle(&mut s).await;
        assert_eq!(script.calls(), ["read", "wait 1", "read", "wait 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn same_version_after_max_wait_keeps_watching_without_reading() {
        let script = Script::new([Ok(loaded("1", "a"))], [Ok("1")]);
        *script.wait_takes.lock().unwrap() = Duration::from_secs(60);
        let (mut s, script) = run(script);
        assert_eq!(value_of(next(&mut s).await), "a");
        idle(&mut s).await;
        assert_eq!(script.calls(), ["read", "wait 1", "wait 1"]);
        // The next long-poll went out as soon as the first came back.
        assert_eq!(script.wait_gaps(), [Duration::from_secs(60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instant_same_version_answer_is_paced() {
        let (mut s, script) = run(Script::new([Ok(loaded("1", "a"))], [Ok("1")]));
        assert_eq!(value_of(next(&mut s).await), "a");
        idle(&mut s).await;
        assert_eq!(script.calls(), ["read", "wait 1", "wait 1"]);
        assert_eq!(
            script.wait_gaps(),
            [Duration::from_secs(1)],
            "a service that does not hold long-polls must not cause a request storm"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_and_resume_from_the_delivered_version() {
        let script = Script::new(
            [Ok(loaded("1", "a")), Ok(loaded("3", "c"))],
            [Err(down()), Err(down()), Ok("1"), Ok("3")],
        );
        let (mut s, script) = run(script);
        assert_eq!(value_of(next(&mut s).await), "a");
        // The first failure is yielded, a second of the same kind is not.
        assert!(next(&mut s).await.is_err());
        // Back, same version: an empty batch says so, and nothing is read.
        assert_eq!(next(&mut s).await.unwrap(), Vec::new());
        // Then (after pacing the instant answer) a real change.
        assert_eq!(value_of(next(&mut s).await), "c");
        idle(&mut s).await;
        assert_eq!(
            script.calls(),
            ["read", "wait 1", "wait 1", "wait 1", "wait 1", "read", "wait 3"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_read_is_retried_as_a_read() {
        let (mut s, script) = run(Script::new([Err(down()), Ok(loaded("1", "a"))], []));
        assert!(next(&mut s).await.is_err());
        assert_eq!(value_of(next(&mut s).await), "a");
        idle(&mut s).await;
        assert_eq!(script.calls(), ["read", "read", "wait 1"]);
    }
}

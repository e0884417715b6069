//! One way to run every backend's watch, in the shape of kube-runtime's
//! watcher: the backend writes a state machine ([`Machine`]: a state enum and
//! one [`Machine::step`] that makes one transition), and [`drive`] turns it
//! into an [`UpdateStream`].
//!
//! The driver owns the policy a machine should not have to repeat:
//! - after a failed step it waits a [`Backoff`] delay before the next one, and
//!   resets the backoff on the next success;
//! - it yields an error only when the backend's health changes (up to down, or
//!   down for another [`ErrorKind`]), so an outage is logged once, not on every
//!   retry; after an outage the next success yields a batch (empty if need be)
//!   so the core knows the backend is back;
//! - a configuration error ([`ErrorKind::Config`]) ends the stream: retrying
//!   cannot fix it.
//!
//! The machine keeps its own position (revision, index, version,
//! resourceVersion) across failures and decides how to resume: the driver only
//! says when.
//!
//! The contract with the core: in watch mode the first `Ok` item of the stream
//! is a batch that starts with an [`Update::Snapshot`] of everything the
//! interest covers. [`poll`] gives backends without a watch the same shape on
//! top of [`Backend::load`](crate::Backend::load).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream;

use crate::error::ErrorKind;
use crate::{Backend, BackendError, Backoff, Interest, Update, UpdateStream};

/// What one transition of a [`Machine`] came to.
#[derive(Debug)]
pub enum Step {
    /// Moved on; nothing to tell yet.
    Pending,
    /// The backend answered. The batch goes out if it holds something, or
    /// (empty) when it ends an outage.
    Updates(Vec<Update>),
    /// The step failed. The machine has already put itself where the next
    /// step resumes from; the driver waits a backoff delay first.
    Failed(BackendError),
}

/// A backend's watch as a state machine. The driver calls [`Machine::step`]
/// until the stream is dropped.
pub trait Machine: Send + 'static {
    /// The state's name, for trace logs and tests.
    fn state(&self) -> &'static str;

    /// Makes one transition.
    fn step(&mut self) -> impl Future<Output = Step> + Send;

    /// How the driver's log lines name this watch and what it talks to.
    const NAMES: Names = Names::new("watch", "backend");
}

/// Words for the driver's log lines: "`watch` interrupted", "`service`
/// reachable again".
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// The watch, e.g. "etcd watch".
    pub watch: &'static str,
    /// What it talks to, e.g. "etcd", "metadata service".
    pub service: &'static str,
}

impl Names {
    /// Names for a `watch` of a `service`.
    pub const fn new(watch: &'static str, service: &'static str) -> Names {
        Names { watch, service }
    }
}

/// Names the backend and endpoint in the driver's log lines.
#[derive(Debug, Clone)]
pub struct Label {
    /// Backend name (`etcdv3`, `consul`, ...).
    pub backend: &'static str,
    /// The address or path being watched, for logs.
    pub endpoint: String,
}

impl Label {
    /// The label of a watch of `backend` at `endpoint`.
    pub fn new(backend: &'static str, endpoint: impl Into<String>) -> Label {
        Label {
            backend,
            endpoint: endpoint.into(),
        }
    }
}

/// What the driver last told the world.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Starting,
    Up,
    /// Failing with this kind of error; for [`ErrorKind::Invalid`] (bad data,
    /// which each save or write can change) also with its text.
    Down(ErrorKind, Option<String>),
}

/// A running machine and the policy around it.
struct Driver<M> {
    machine: M,
    backoff: Backoff,
    label: Label,
    health: Health,
    /// A delay to wait before the next step (set by a failure).
    delay: Option<Duration>,
    done: bool,
}

type Item = Result<Vec<Update>, BackendError>;

impl<M: Machine> Driver<M> {
    /// Steps until there is something to yield; `None` ends the stream.
    async fn next(&mut self) -> Option<Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(delay) = self.delay.take() {
                tokio::time::sleep(delay).await;
            }
            let step = self.machine.step().await;
            tracing::trace!(
                backend = self.label.backend,
                state = self.machine.state(),
                "watch state"
            );
            if let Some(item) = self.judge(step) {
                return Some(item);
            }
        }
    }

    /// Applies the policy to one step's result.
    fn judge(&mut self, step: Step) -> Option<Item> {
        match step {
            Step::Pending => None,
            Step::Updates(batch) => {
                self.backoff.reset();
                match std::mem::replace(&mut self.health, Health::Up) {
                    Health::Down(ErrorKind::Invalid, _) => {
                        // Bad data fixed: the service never went away.
                        tracing::debug!(
                            backend = self.label.backend,
                            endpoint = %self.label.endpoint,
                            "data valid again"
                        );
                        Some(Ok(batch))
                    }
                    Health::Down(..) => {
                        tracing::info!(
                            backend = self.label.backend,
                            endpoint = %self.label.endpoint,
                            "{} reachable again; watch resumed",
                            M::NAMES.service
                        );
                        Some(Ok(batch))
                    }
                    Health::Starting => {
                        tracing::debug!(
                            backend = self.label.backend,
                            endpoint = %self.label.endpoint,
                            "watching"
                        );
                        (!batch.is_empty()).then_some(Ok(batch))
                    }
                    Health::Up => (!batch.is_empty()).then_some(Ok(batch)),
                }
            }
            Step::Failed(error) => {
                let kind = error.kind();
                if kind == ErrorKind::Config {
                    self.done = true;
                    return Some(Err(error));
                }
                let delay = self.backoff.next_delay();
                self.delay = Some(delay);
                let text = (kind == ErrorKind::Invalid).then(|| error.to_string());
                let health = Health::Down(kind, text);
                if self.health == health {
                    tracing::debug!(
                        backend = self.label.backend,
                        endpoint = %self.label.endpoint,
                        error = %error,
                        ?delay,
                        "still failing"
                    );
                    return None;
                }
                // The error's text goes out once, with the item: the core logs it.
                // Bad data is no interruption: the watch goes on, only the
                // item needs telling.
                if kind != ErrorKind::Invalid {
                    tracing::warn!(
                        backend = self.label.backend,
                        endpoint = %self.label.endpoint,
                        ?delay,
                        "{} interrupted; retrying with backoff, keeping the last good data",
                        M::NAMES.watch
                    );
                }
                self.health = health;
                Some(Err(error))
            }
        }
    }
}

/// Runs `machine` as a stream of update batches, with `backoff` between
/// failed steps. Dropping the stream drops the machine and whatever it holds
/// open.
pub fn drive<M: Machine>(machine: M, backoff: Backoff, label: Label) -> UpdateStream {
    let driver = Driver {
        machine,
        backoff,
        label,
        health: Health::Starting,
        delay: None,
        done: false,
    };
    Box::pin(stream::unfold(driver, |mut driver| async move {
        let item = driver.next().await?;
        Some((item, driver))
    }))
}

/// Where a [`Poller`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PollState {
    Loading,
    Waiting,
}

/// The machine behind [`poll`]: load, wait `interval`, load again.
struct Poller {
    backend: Arc<dyn Backend>,
    interest: Interest,
    interval: Duration,
    state: PollState,
}

impl Machine for Poller {
    fn state(&self) -> &'static str {
        match self.state {
            PollState::Loading => "loading",
            PollState::Waiting => "waiting",
        }
    }

    async fn step(&mut self) -> Step {
        match self.state {
            PollState::Waiting => {
                tokio::time::sleep(self.interval).await;
                self.state = PollState::Loading;
                Step::Pending
            }
            PollState::Loading => match self.backend.load(&self.interest).await {
                Ok(snapshot) => {
                    self.state = PollState::Waiting;
                    Step::Updates(vec![Update::Snapshot(snapshot)])
                }
                Err(e) => Step::Failed(e),
            },
        }
    }
}

/// Polls `backend` every `interval`, as a stream of the same shape as a
/// watch: each load is one [`Update::Snapshot`] batch, and a failed load is
/// retried with `backoff` rather than waiting for the next interval.
pub fn poll(
    backend: Arc<dyn Backend>,
    interest: Interest,
    interval: Duration,
    backoff: Backoff,
) -> UpdateStream {
    let label = Label::new(backend.name(), "poll");
    let poller = Poller {
        backend,
        interest,
        interval,
        state: PollState::Loading,
    };
    drive(poller, backoff, label)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures::StreamExt;

    use super::*;
    use crate::KeyTree;

    /// A machine that plays back a script of steps, then idles.
    struct Script(VecDeque<Step>);

    impl Machine for Script {
        fn state(&self) -> &'static str {
            "script"
        }
        async fn step(&mut self) -> Step {
            match self.0.pop_front() {
                Some(step) => step,
                None => std::future::pending().await,
            }
        }
    }

    fn label() -> Label {
        Label::new("test", "fake")
    }

    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(2))
    }

    fn down() -> BackendError {
        BackendError::Unavailable {
            backend: "test",
            endpoint: "fake".into(),
            source: "connection refused".into(),
        }
    }

    fn put(k: &str) -> Update {
        Update::Put {
            key: k.into(),
            value: "v".into(),
        }
    }

    async fn next(s: &mut UpdateStream) -> Item {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an item")
            .expect("not the end")
    }

    #[tokio::test]
    async fn an_outage_is_reported_once_and_its_end_as_an_empty_batch() {
        let steps = vec![
            Step::Updates(vec![put("/a")]),
            Step::Failed(down()),
            Step::Pending,
            Step::Failed(down()),
            Step::Failed(down()),
            Step::Updates(vec![]),
            Step::Updates(vec![]),
            Step::Updates(vec![put("/b")]),
        ];
        let mut s = drive(Script(steps.into()), fast(), label());
        assert_eq!(next(&mut s).await.unwrap(), [put("/a")]);
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert_eq!(next(&mut s).await.unwrap(), []);
        // A quiet success while up says nothing.
        assert_eq!(next(&mut s).await.unwrap(), [put("/b")]);
    }

    #[tokio::test]
    async fn a_new_kind_of_error_is_reported_again() {
        let denied = BackendError::Denied {
            backend: "test",
            message: "no".into(),
        };
        let steps = vec![
            Step::Failed(down()),
            Step::Failed(denied),
            Step::Failed(down()),
        ];
        let mut s = drive(Script(steps.into()), fast(), label());
        assert!(next(&mut s).await.unwrap_err().is_transient());
        assert!(matches!(
            next(&mut s).await.unwrap_err(),
            BackendError::Denied { .. }
        ));
        assert!(next(&mut s).await.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn a_configuration_error_ends_the_stream() {
        let config = BackendError::Config {
            backend: "test",
            message: "bad TLS file".into(),
        };
        let steps = vec![Step::Failed(config), Step::Updates(vec![put("/a")])];
        let mut s = drive(Script(steps.into()), fast(), label());
        assert!(matches!(
            next(&mut s).await,
            Err(BackendError::Config { .. })
        ));
        assert!(s.next().await.is_none());
    }

    struct Flaky {
        fails: std::sync::atomic::AtomicUsize,
    }

    impl Backend for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn load<'a>(
            &'a self,
            _: &'a Interest,
        ) -> futures::future::BoxFuture<'a, Result<crate::Snapshot, BackendError>> {
            Box::pin(async move {
                use std::sync::atomic::Ordering;
                if self
                    .fails
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err(down());
                }
                let mut keys = KeyTree::new();
                keys.insert("/a", "1");
                Ok(crate::Snapshot {
                    keys,
                    catalog: None,
                })
            })
        }
    }

    #[tokio::test]
    async fn polling_retries_a_failed_load_then_snapshots_every_interval() {
        let backend = Arc::new(Flaky {
            fails: std::sync::atomic::AtomicUsize::new(2),
        });
        let mut s = poll(
            backend,
            Interest::default(),
            Duration::from_millis(5),
            fast(),
        );
        assert!(next(&mut s).await.is_err());
        for _ in 0..2 {
            let batch = next(&mut s).await.unwrap();
            assert!(matches!(&batch[..], [Update::Snapshot(s)] if s.keys.get("/a") == Some("1")));
        }
    }
}

//! The watch as a state machine for `sidekick_backend::drive`:
//!
//! ```text
//! Connecting ──▶ Loading ──▶ Watching ──(node event: read that znode)──▶ Watching
//!     ▲              │            │ connection lost, session expired,
//!     │              │            │ a read failing
//!     └──────────────┴────────────┘ (drive's backoff, then a new session)
//! ```
//!
//! Loading adds one persistent recursive watch per prefix (`addWatch`,
//! ZooKeeper 3.6+) *before* reading the znodes below it, so a change made
//! during the read is an event too; its first batch is the snapshot. Each
//! event (created, data changed, deleted at one path) is turned into updates
//! by reading that one znode. A persistent watch stays armed, so nothing needs
//! re-arming and no change between an event and a re-arm can be missed.
//!
//! Any session event but "connected" ends the session: a disconnect, an
//! expiry, an authentication failure. ZooKeeper would re-attach the watches
//! on reconnect, but events that happened while disconnected can be lost
//! (ZOOKEEPER-4698), so the machine drops the client instead and, after the
//! driver's backoff, opens a new session and reads everything again (a new
//! snapshot: the core re-renders only what differs).

use std::sync::Arc;

use futures::future::select_all;
use futures::FutureExt;
use sidekick_backend::{is_under, BackendError, Interest, Machine, Names, Snapshot, Step, Update};
use zookeeper_client as zk;

use crate::client::{self, unavailable, SYSTEM};
use crate::config::Resolved;
use crate::tree::Mirror;
use crate::NAME;

/// Where the machine is.
enum State {
    /// Opening a session.
    Connecting,
    /// Adding the watches and reading everything.
    Loading { client: zk::Client },
    /// Following events.
    Watching {
        client: zk::Client,
        watchers: Vec<zk::PersistentWatcher>,
        mirror: Mirror,
    },
}

/// The watch over one [`Interest`].
pub(crate) struct Watch {
    config: Arc<Resolved>,
    /// The interest's minimal prefixes.
    prefixes: Vec<String>,
    state: State,
}

impl Watch {
    /// A watch that starts by connecting and reading everything.
    pub fn new(config: Arc<Resolved>, interest: &Interest) -> Watch {
        Watch {
            config,
            prefixes: sidekick_backend::minimal_prefixes(&interest.prefixes),
            state: State::Connecting,
        }
    }

    /// Whether an event at `path` concerns the interest (ZooKeeper's own
    /// `/zookeeper` znodes only when a prefix names them).
    fn covers(&self, path: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| is_under(path, p) && (p != "/" || !(path == SYSTEM || is_under(path, SYSTEM))))
    }

    async fn load(
        &self,
        client: &zk::Client,
    ) -> Result<(Vec<zk::PersistentWatcher>, Mirror), BackendError> {
        let mut watchers = Vec::with_capacity(self.prefixes.len());
        for prefix in &self.prefixes {
            let watcher = client
                .watch(prefix, zk::AddWatchMode::PersistentRecursive)
                .await
                .map_err(|e| match e {
                    zk::Error::Unimplemented => BackendError::config(
                        NAME,
                        format!(
                            "{} does not support persistent watches (addWatch needs ZooKeeper \
                             3.6 or later); use --interval polling instead of --watch",
                            self.config.label
                        ),
                    ),
                    e => client::client_error(&self.config, e, prefix),
                })?;
            watchers.push(watcher);
        }
        let mirror = client::load(&self.config, client, &self.prefixes).await?;
        Ok((watchers, mirror))
    }
}

/// What a session event means, when it is not "connected".
fn session_error(config: &Resolved, state: zk::SessionState) -> BackendError {
    match state {
        zk::SessionState::AuthFailed => client::client_error(config, zk::Error::AuthFailed, "/"),
        zk::SessionState::Expired => {
            tracing::info!(
                backend = NAME,
                endpoint = %config.label,
                "ZooKeeper session expired; a new session reads everything again"
            );
            unavailable(&config.label, "session expired".to_string())
        }
        other => unavailable(&config.label, format!("connection lost ({other})")),
    }
}

impl Machine for Watch {
    const NAMES: Names = Names::new("ZooKeeper watch", "ZooKeeper");

    fn state(&self) -> &'static str {
        match self.state {
            State::Connecting => "connecting",
            State::Loading { .. } => "loading",
            State::Watching { .. } => "watching",
        }
    }

    async fn step(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Connecting) {
            State::Connecting => match client::connect(&self.config).await {
                Ok(client) => {
                    self.state = State::Loading { client };
                    Step::Pending
                }
                Err(e) => Step::Failed(e),
            },
            State::Loading { client } => match self.load(&client).await {
                Ok((watchers, mirror)) => {
                    tracing::debug!(
                        backend = NAME,
                        endpoint = %self.config.label,
                        session = %client.session_id(),
                        watches = watchers.len(),
                        "watching"
                    );
                    let keys = mirror.keys();
                    self.state = State::Watching {
                        client,
                        watchers,
                        mirror,
                    };
                    Step::Updates(vec![Update::Snapshot(Snapshot {
                        keys,
                        catalog: None,
                    })])
                }
                Err(e) => Step::Failed(e),
            },
            State::Watching {
                client,
                mut watchers,
                mut mirror,
            } => {
                let event = {
                    let next = watchers.iter_mut().map(|w| w.changed().boxed());
                    select_all(next).await.0
                };
                let updates = match event.event_type {
                    zk::EventType::Session => match event.session_state {
                        zk::SessionState::SyncConnected => Vec::new(),
                        // The client and its watchers are dropped here: a
                        // watcher must not be polled after a terminal state.
                        state => return Step::Failed(session_error(&self.config, state)),
                    },
                    _ if !self.covers(&event.path) => Vec::new(),
                    zk::EventType::NodeDeleted => mirror.remove(&event.path),
                    zk::EventType::NodeCreated
                    | zk::EventType::NodeDataChanged
                    | zk::EventType::NodeChildrenChanged => {
                        match client::read_node(&self.config, &client, &event.path).await {
                            Ok(Some(data)) => mirror.set(&event.path, data),
                            // Gone again: its delete event follows.
                            Ok(None) => mirror.remove(&event.path),
                            Err(e) => return Step::Failed(e),
                        }
                    }
                };
                tracing::debug!(
                    backend = NAME,
                    key = %event.path,
                    event = %event.event_type,
                    updates = updates.len(),
                    "znode event"
                );
                self.state = State::Watching {
                    client,
                    watchers,
                    mirror,
                };
                match updates.is_empty() {
                    true => Step::Pending,
                    false => Step::Updates(updates),
                }
            }
        }
    }
}

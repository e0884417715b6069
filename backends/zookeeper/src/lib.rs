//! ZooKeeper backend for sidekick (`--backend zookeeper`).
//!
//! Znode paths are keys and a znode's data is its value, as in confd's
//! zookeeper backend: only znodes without children are keys; a znode with
//! children is a directory whose own data no key holds (see the `tree`
//! module). A load reads every znode under each prefix, a level at a time
//! with the level's requests pipelined on one session.
//!
//! A watch adds one persistent recursive watch per prefix (ZooKeeper 3.6+,
//! `addWatch`) before it reads, so its first batch is the snapshot and every
//! change after it is an event; each event reads the one znode it names.
//! A lost connection or an expired session drops the session; after
//! `sidekick_backend::drive`'s backoff a new one reads everything again. See
//! the `watch` module for the state machine.
//!
//! Several `--node`s of one ensemble form ZooKeeper's connect string; the
//! client tries them in turn. Digest authentication (`--username`,
//! `--password`) is sent with every new session; the password never reaches
//! a log line or an error. ZooKeeper has no service catalog.

mod client;
mod config;
mod tree;
mod watch;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{stream, FutureExt, StreamExt};
use sidekick_backend::{
    drive, minimal_prefixes, Backend, BackendError, Backoff, Interest, Label, Snapshot, Update,
    UpdateStream,
};

pub use config::{Timing, ZookeeperConfig, DEFAULT_NODE};

use config::Resolved;
use watch::Watch;

/// The backend's name in logs and errors, and for `--backend`.
pub const NAME: &str = "zookeeper";

/// The ZooKeeper backend: reads and watches the znodes of one ensemble.
///
/// Cheap to share; every [`Backend::load`] and every watch opens its own
/// session, so a broken one never outlives the call that saw it.
pub struct ZookeeperBackend {
    config: Arc<Resolved>,
}

impl ZookeeperBackend {
    /// Checks `config` (node syntax, credentials paired) with the default
    /// [`Timing`]. Nothing connects yet.
    pub fn new(config: ZookeeperConfig) -> Result<ZookeeperBackend, BackendError> {
        Self::with_timing(config, Timing::default())
    }

    /// Like [`ZookeeperBackend::new`], with other timeouts and backoff
    /// (tests use short ones).
    pub fn with_timing(
        config: ZookeeperConfig,
        timing: Timing,
    ) -> Result<ZookeeperBackend, BackendError> {
        Ok(ZookeeperBackend {
            config: Arc::new(Resolved::new(&config, timing)?),
        })
    }

    /// The servers, as used in logs and errors (`host:port,host:port`).
    pub fn nodes(&self) -> &str {
        &self.config.label
    }
}

impl Backend for ZookeeperBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        async move {
            if interest.prefixes.is_empty() {
                return Ok(Snapshot::default());
            }
            let client = client::connect(&self.config).await?;
            let prefixes = minimal_prefixes(&interest.prefixes);
            let mirror = client::load(&self.config, &client, &prefixes).await?;
            Ok(Snapshot {
                keys: mirror.keys(),
                catalog: None,
            })
        }
        .boxed()
    }

    /// One session for all of `interest`'s prefixes: a snapshot first, then
    /// the changes as the persistent watches report them.
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        if interest.prefixes.is_empty() {
            // Nothing to watch, and nothing will ever change: the contract's
            // first snapshot is an empty one.
            let empty = Ok(vec![Update::Snapshot(Snapshot::default())]);
            return Some(
                stream::once(async { empty })
                    .chain(stream::pending())
                    .boxed(),
            );
        }
        let timing = self.config.timing;
        let backoff = Backoff::new(timing.backoff_start, timing.backoff_cap);
        let label = Label::new(NAME, self.config.label.clone());
        let machine = Watch::new(Arc::clone(&self.config), interest);
        Some(drive(machine, backoff, label))
    }
}

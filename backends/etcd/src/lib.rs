//! etcd v3 backend for sidekick (`--backend etcdv3`).
//!
//! Keys in etcd are the key tree's keys as they are (`/myapp/db/host`). A load
//! is one ranged read per key prefix, all pinned to the revision of the first
//! so the snapshot is consistent. A watch first reads everything the same way
//! (its first item is that snapshot), then opens one gRPC watch stream
//! carrying a watch per prefix, started right after the revision it read at,
//! so no change in between is lost; each etcd watch response is one batch of
//! [`Update`](sidekick_backend::Update)s. When etcd compacts the history being
//! watched, the watch reads everything again and sends a snapshot; when the
//! connection breaks (etcd restart, leader change, network), it reconnects
//! after a capped, jittered backoff (`sidekick_backend::drive`'s) and resumes
//! every prefix from the last revision it delivered. See the `watch` module
//! for the state machine.
//!
//! Several endpoints of one cluster are used one at a time: the one that
//! answered last, else the next that answers. A member cut off from its leader
//! refuses requests (`require_leader`), so the client moves on.
//!
//! Authentication (`--username`/`--password`) and TLS (`--client-cert`,
//! `--client-key`, `--client-ca-keys`, https endpoints) use rustls, so no
//! OpenSSL is linked. Passwords never reach a log line or an error.

mod client;
mod config;
mod watch;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{stream, FutureExt, StreamExt};
use sidekick_backend::{
    drive, Backend, BackendError, Backoff, Interest, Label, Snapshot, Update, UpdateStream,
};

pub use config::{EtcdConfig, Timing, DEFAULT_ENDPOINT};

use client::Cluster;
use watch::{Source, Watch};

/// The backend's name in logs and errors, and for `--backend`.
pub const NAME: &str = "etcdv3";

/// The etcd v3 backend: reads and watches keys of one etcd cluster.
///
/// Cheap to share; every [`Backend::load`] and every watch opens its own
/// client, so a broken connection never outlives the call that saw it.
pub struct EtcdBackend {
    cluster: Arc<Cluster>,
    timing: Timing,
}

impl EtcdBackend {
    /// Checks `config` (endpoint syntax, credentials paired, TLS files
    /// readable PEM) with the default [`Timing`]. Nothing connects yet.
    pub fn new(config: EtcdConfig) -> Result<EtcdBackend, BackendError> {
        Self::with_timing(config, Timing::default())
    }

    /// Like [`EtcdBackend::new`], with other timeouts and backoff (tests use
    /// short ones).
    pub fn with_timing(config: EtcdConfig, timing: Timing) -> Result<EtcdBackend, BackendError> {
        let resolved = config::Resolved::new(&config, timing)?;
        Ok(EtcdBackend {
            cluster: Arc::new(Cluster::new(resolved)),
            timing,
        })
    }

    /// The endpoints, as used in logs and errors.
    pub fn endpoints(&self) -> &str {
        self.cluster.label()
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        async move {
            if interest.prefixes.is_empty() {
                return Ok(Snapshot::default());
            }
            let mut conn = self.cluster.connect().await?;
            let loaded = self.cluster.load(&mut conn, &interest.prefixes).await?;
            Ok(Snapshot {
                keys: loaded.keys,
                catalog: None,
            })
        }
        .boxed()
    }

    /// One watch stream for all of `interest`'s prefixes. It reads
    /// everything first (a snapshot as its first batch), then follows the
    /// changes from the revision it read at.
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
        let backoff = Backoff::new(self.timing.backoff_start, self.timing.backoff_cap);
        let label = Label::new(NAME, self.cluster.label().to_string());
        let machine = Watch::new(Arc::clone(&self.cluster), interest.clone());
        Some(drive(machine, backoff, label))
    }
}

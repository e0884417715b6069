//! etcd v3 backend for sidekick (`--backend etcdv3`).
//!
//! Keys in etcd are the key tree's keys as they are (`/myapp/db/host`). A load
//! is one ranged read per key prefix, all pinned to the revision of the first
//! so the snapshot is consistent. A watch is one gRPC watch stream carrying a
//! watch per prefix, started right after the revision the last load saw, so no
//! change between the load and the watch is lost; each etcd watch response is
//! one batch of [`Update`](sidekick_backend::Update)s. When etcd compacts the
//! history being watched, the watch reads everything again and sends a
//! snapshot; when the connection breaks (etcd restart, leader change, network),
//! it reconnects with capped exponential backoff and jitter and resumes every
//! prefix from the last revision it delivered. See the `watch` module for the
//! state machine.
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

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use sidekick_backend::{Backend, BackendError, Interest, Snapshot, UpdateStream};

pub use config::{EtcdConfig, Timing, DEFAULT_ENDPOINT};

use client::Cluster;
use sidekick_backend::Backoff;
use watch::{Source, Watcher};

/// The backend's name in logs and errors, and for `--backend`.
pub const NAME: &str = "etcdv3";

/// The etcd v3 backend: reads and watches keys of one etcd cluster.
///
/// Cheap to share; every [`Backend::load`] and every watch opens its own
/// client, so a broken connection never outlives the call that saw it.
pub struct EtcdBackend {
    cluster: Arc<Cluster>,
    timing: Timing,
    /// Prefixes and revision of the last successful load, so that a watch
    /// started right after it resumes from there instead of reading again.
    last_load: Mutex<Option<(Vec<String>, i64)>>,
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
            last_load: Mutex::new(None),
        })
    }

    /// The endpoints, as used in logs and errors.
    pub fn endpoints(&self) -> &str {
        self.cluster.label()
    }

    fn remember_load(&self, prefixes: &[String], revision: i64) {
        let mut last = self
            .last_load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some((prefixes.to_vec(), revision));
    }

    /// The revision of the last load of exactly `prefixes`, used once: a
    /// later watch without a new load starts with a fresh read.
    fn loaded_at(&self, prefixes: &[String]) -> Option<i64> {
        let mut last = self
            .last_load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.take() {
            Some((p, revision)) if p == prefixes => Some(revision),
            _ => None,
        }
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
            tracing::debug!(
                backend = NAME,
                endpoint = self.cluster.label(),
                keys = loaded.keys.len(),
                revision = loaded.revision,
                "loaded"
            );
            self.remember_load(&interest.prefixes, loaded.revision);
            Ok(Snapshot {
                keys: loaded.keys,
                catalog: None,
            })
        }
        .boxed()
    }

    /// One watch stream for all of `interest`'s prefixes. It starts where the
    /// last [`Backend::load`] of the same prefixes left off, or with a fresh
    /// read (a snapshot as its first batch).
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        if interest.prefixes.is_empty() {
            // Nothing to watch, and nothing will ever change.
            return Some(Box::pin(futures::stream::pending()));
        }
        let backoff = Backoff::new(self.timing.backoff_start, self.timing.backoff_cap);
        let loaded_at = self.loaded_at(&interest.prefixes);
        let watcher = Watcher::new(
            Arc::clone(&self.cluster),
            interest.clone(),
            backoff,
            loaded_at,
        );
        Some(watcher.into_stream())
    }
}

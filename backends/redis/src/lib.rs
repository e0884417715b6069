//! Redis backend for sidekick (`--backend redis`).
//!
//! Keys are read as confd's redis backend maps them: the Redis key `/a/b`
//! is the key `/a/b` (a key without a leading `/` gets one), a hash at
//! `/a/h` is flattened to one key per field, `/a/h/FIELD`, and other types
//! (lists, sets, sorted sets, streams) are not read. A prefix `/app` is the
//! key `/app` itself and the keys matching `SCAN ... MATCH /app/*`; `/` is
//! every key. The database is `--database N` (or the node's `/N`).
//!
//! The watch follows keyspace notifications (`__keyspace@DB__:KEY`) on a
//! subscription connection of its own; see the `watch` module for the
//! state machine. They are a server setting, `notify-keyspace-events`: when
//! it lacks what the watch needs and `--redis-notify-config` is not given,
//! a warning says so and the backend polls every `--interval` instead. Every
//! (re)connection reads everything again (Redis has no history to resume
//! from), after a capped, jittered backoff (`sidekick_backend::drive`'s).
//!
//! `--password` (with `--username` for a Redis 6 ACL user) and TLS
//! (`rediss://`, rustls: `--client-ca-keys`, `--client-cert`,
//! `--client-key`) are supported; a password never reaches a log line or an
//! error.

mod client;
mod config;
mod watch;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{stream, FutureExt, StreamExt};
use sidekick_backend::{
    drive, Backend, BackendError, Backoff, Interest, Label, Snapshot, Update, UpdateStream,
};

pub use config::{RedisConfig, Timing, DEFAULT_NODE};

use client::Server;
use watch::Watch;

/// The backend's name in logs and errors, and for `--backend`.
pub const NAME: &str = "redis";

/// The Redis backend: reads and watches the keys of one Redis database.
///
/// Cheap to share; every [`Backend::load`] and every watch opens its own
/// connections, so a broken one never outlives the call that saw it.
pub struct RedisBackend {
    server: Arc<Server>,
    timing: Timing,
}

impl RedisBackend {
    /// Checks `config` (node syntax, database, credentials, TLS files) with
    /// the default [`Timing`]. Nothing connects yet.
    pub fn new(config: RedisConfig) -> Result<RedisBackend, BackendError> {
        Self::with_timing(config, Timing::default())
    }

    /// Like [`RedisBackend::new`], with other timeouts and backoff (tests
    /// use short ones).
    pub fn with_timing(config: RedisConfig, timing: Timing) -> Result<RedisBackend, BackendError> {
        let resolved = config::Resolved::new(&config, timing)?;
        Ok(RedisBackend {
            server: Arc::new(Server::new(resolved)),
            timing,
        })
    }

    /// The nodes, as used in logs and errors (no credentials).
    pub fn endpoints(&self) -> &str {
        self.server.label()
    }
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        async move {
            if interest.prefixes.is_empty() {
                return Ok(Snapshot::default());
            }
            let mut conn = self.server.connect().await?;
            let mirror = self.server.load(&mut conn, interest).await?;
            Ok(Snapshot {
                keys: client::tree(&mirror, interest),
                catalog: None,
            })
        }
        .boxed()
    }

    /// One watch for all of `interest`'s prefixes: it subscribes, reads
    /// everything (a snapshot as its first batch), then follows the
    /// notifications.
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
        let label = Label::new(NAME, self.server.label().to_string());
        let machine = Watch::new(Arc::clone(&self.server), interest.clone());
        Some(drive(machine, backoff, label))
    }
}

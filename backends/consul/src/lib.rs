//! Consul backend for sidekick (`--backend consul`).
//!
//! Keys come from Consul's KV store: each key prefix of the resources is read
//! with `GET /v1/kv/<prefix>?recurse` (Consul keys have no leading slash, so
//! the key tree's `/myapp/db` is Consul's `myapp/db`; `/` reads everything),
//! values are base64-decoded and folders (`a/b/` without a value) are left
//! out. The service catalog (the `services()` and `service()` template
//! functions) comes from `GET /v1/catalog/services` and, for each service,
//! `GET /v1/health/service/<name>`. That call is made *without* `?passing`:
//! every instance is fetched and marked `healthy` when all its checks pass
//! (what `?passing` would keep), so `service(name="web")` (passing defaults to
//! true) lists the healthy ones and `service(name="web", passing=false)` all of
//! them. An instance's address is the service's, or its node's when the
//! service has none.
//!
//! A watch keeps one blocking query (`?index=<X-Consul-Index>&wait=5m`) per
//! prefix, one on the service list and one per service, and merges what they
//! return into one stream of batches. It is a state machine run by
//! `sidekick_backend::drive`, which owns the retry backoff and reports each
//! outage once; a watch always starts by reading everything and sends it as
//! its first item, one `Update::Snapshot`. See the `watch` module for
//! Consul's index rules, the per-query rate limit (a token bucket) and the
//! `stale` reads of blocking queries.
//!
//! ACL tokens go in the `X-Consul-Token` header and never reach a log line or
//! an error; a 403 names the path and says the token was refused. TLS (CA,
//! client certificate and key) uses rustls, so no OpenSSL is linked.
//! `--datacenter` becomes `?dc=` on every read.

#![warn(missing_docs)]

mod client;
mod config;
mod watch;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use sidekick_backend::{
    drive, Backend, BackendError, Backoff, Interest, Label, Snapshot, UpdateStream,
};

pub use config::{ConsulConfig, Timing, DEFAULT_NODE};

use client::Api;
use watch::Watch;

/// The backend's name in logs and errors, and for `--backend`.
pub const NAME: &str = "consul";

/// Reads Consul KV and the service catalog, and watches both with blocking
/// queries.
///
/// Cheap to share: one HTTP client (with its connection pool) serves every
/// load and watch.
pub struct ConsulBackend {
    api: Arc<Api>,
}

impl ConsulBackend {
    /// Checks the settings (node addresses, token characters, TLS files
    /// readable PEM, cert and key paired) with the default [`Timing`].
    /// Nothing connects yet.
    pub fn new(config: ConsulConfig) -> Result<ConsulBackend, BackendError> {
        Self::with_timing(config, Timing::default())
    }

    /// Like [`ConsulBackend::new`], with other timeouts, blocking-query wait,
    /// re-query pacing, staleness bound and backoff (tests and benchmarks use
    /// short ones).
    pub fn with_timing(
        config: ConsulConfig,
        timing: Timing,
    ) -> Result<ConsulBackend, BackendError> {
        let resolved = config::Resolved::new(&config, timing)?;
        Ok(ConsulBackend {
            api: Arc::new(Api::new(resolved)),
        })
    }

    /// The agent addresses, as used in logs.
    pub fn nodes(&self) -> String {
        self.api.label()
    }
}

impl Backend for ConsulBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Reads every prefix (and with `interest.services` the catalog) once.
    /// An agent that cannot be reached fails within the connect timeout with
    /// [`BackendError::Unavailable`] naming the address.
    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        async move {
            let listing = watch::list(&*self.api, interest).await?;
            let snapshot = listing.snapshot();
            tracing::debug!(
                backend = NAME,
                node = %self.api.label(),
                keys = snapshot.keys.len(),
                services = listing.health.len(),
                "loaded"
            );
            Ok(snapshot)
        }
        .boxed()
    }

    /// One stream for the whole interest: it reads everything first and
    /// sends it as one [`Update::Snapshot`](sidekick_backend::Update), then
    /// blocks on each query's index. Failures are retried with a
    /// [`Backoff`] from [`Timing::backoff_start`] to [`Timing::backoff_cap`].
    /// Dropping the stream cancels every query in flight.
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        let timing = *self.api.timing();
        let backoff = Backoff::new(timing.backoff_start, timing.backoff_cap);
        Some(drive(
            Watch::new(Arc::clone(&self.api), interest.clone(), timing),
            backoff,
            Label::new(NAME, self.api.label()),
        ))
    }

    fn has_catalog(&self) -> bool {
        true
    }
}

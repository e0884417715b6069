//! HashiCorp Vault backend for sidekick (`--backend vault`).
//!
//! Secrets of KV secrets engines (version 1 and 2) are keys, laid out as
//! confd's Vault backend lays them out: mount `secret`, secret `app/db`,
//! field `password` is `/secret/app/db/password` (see the `read` module).
//! Which mount a key prefix lies in is declared (`--vault-mount`) or asked of
//! Vault (`sys/internal/ui/mounts`, as the `vault kv` CLI does).
//!
//! sidekick logs in with a token, AppRole, or a Kubernetes service-account
//! JWT, renews the token before its TTL ends and logs in again when it
//! cannot. Vault has no watch: `watch` polls every `--interval`, reading only
//! the KV v2 secrets whose `current_version` moved (the `watch` module).
//!
//! Every value is a secret: [`Backend::is_secret`] is true for every key, so
//! values never reach a log line or a diff; the token travels only in the
//! `X-Vault-Token` header. TLS is rustls.

mod client;
mod config;
mod read;
mod watch;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{stream, FutureExt, StreamExt};
use sidekick_backend::{
    drive, Backend, BackendError, Backoff, Interest, Label, Snapshot, Update, UpdateStream,
};

pub use config::{Auth, Mount, Timing, VaultConfig, DEFAULT_K8S_JWT, DEFAULT_NODE};

use client::Api;
use read::Session;
use watch::Watch;

/// The backend's name in logs and errors, and for `--backend`.
pub const NAME: &str = "vault";

/// Reads KV secrets from one Vault server.
///
/// Cheap to share: one HTTP client and one login session serve every load
/// and watch.
pub struct VaultBackend {
    session: Arc<Session>,
}

impl VaultBackend {
    /// Checks the settings (address, one way to log in, mounts, TLS files)
    /// with the default [`Timing`]. Nothing connects yet.
    pub fn new(config: VaultConfig) -> Result<VaultBackend, BackendError> {
        Self::with_timing(config, Timing::default())
    }

    /// Like [`VaultBackend::new`], with other timeouts, backoff and poll
    /// interval (tests use short ones).
    pub fn with_timing(config: VaultConfig, timing: Timing) -> Result<VaultBackend, BackendError> {
        let resolved = config::Resolved::new(&config, timing)?;
        Ok(VaultBackend {
            session: Arc::new(Session::new(Api::new(resolved))),
        })
    }

    /// Vault's address, as used in logs and errors.
    pub fn address(&self) -> &str {
        self.session.api.label()
    }
}

impl Backend for VaultBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        async move {
            let keys = read::read_all(&self.session, interest, None).await?;
            Ok(Snapshot {
                keys,
                catalog: None,
            })
        }
        .boxed()
    }

    /// Polls every `--interval` (Vault cannot be watched), sending only
    /// what changed, and keeps the token alive in between.
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        if interest.prefixes.is_empty() {
            let empty = Ok(vec![Update::Snapshot(Snapshot::default())]);
            return Some(
                stream::once(async { empty })
                    .chain(stream::pending())
                    .boxed(),
            );
        }
        let timing = self.session.api.cfg.timing;
        tracing::info!(
            backend = NAME,
            endpoint = %self.address(),
            interval_s = self.session.api.cfg.interval.as_secs_f64(),
            "Vault has no watch: polling every --interval, re-reading only secrets whose version moved"
        );
        let backoff = Backoff::new(timing.backoff_start, timing.backoff_cap);
        let label = Label::new(NAME, self.address().to_string());
        let machine = Watch::new(Arc::clone(&self.session), interest.clone());
        Some(drive(machine, backoff, label))
    }

    fn has_secrets(&self) -> bool {
        true
    }

    /// Every value read from Vault is a secret.
    fn is_secret(&self, _key: &str) -> bool {
        true
    }
}

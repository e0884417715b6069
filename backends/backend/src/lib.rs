//! The seam between sidekick and the systems it reads: the [`Backend`] trait, the
//! [`KeyTree`] of `/`-separated keys with string values, and the optional service
//! [`Catalog`].
//!
//! A backend is one crate of its own (see `backends/file`, `backends/env`). It is
//! asked for a [`Snapshot`] of the keys under a set of prefixes (its [`Interest`]) and,
//! when it can, for a stream of [`Update`]s so that sidekick need not poll. Errors
//! are items of that stream: the backend keeps retrying on its own and the core
//! keeps the last good data meanwhile.

mod backoff;
mod catalog;
pub mod driver;
mod error;
#[cfg(feature = "reqwest")]
pub mod http;
mod keys;
pub mod tls;

pub use backoff::Backoff;
pub use catalog::{Catalog, ServiceInstance};
pub use driver::{drive, poll, Label, Machine, Names, Step};
pub use error::{BackendError, ErrorKind};
pub use keys::{
    is_normal, is_under, join_prefix, minimal_prefixes, normalize_key, normalize_owned, KeyTree,
};

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// What the core wants from a backend: the key prefixes its resources read, and
/// whether any template may ask for the service catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Normalized key prefixes (see [`normalize_key`]); `/` means everything.
    pub prefixes: Vec<String>,
    /// Whether the service catalog should be loaded and watched too.
    pub services: bool,
}

impl Interest {
    /// True when `key` lies under one of the prefixes.
    pub fn covers(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| is_under(key, p))
    }
}

/// Everything a backend knows about an [`Interest`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Keys under the interest's prefixes.
    pub keys: KeyTree,
    /// The service catalog, when asked for and the backend has one.
    pub catalog: Option<Catalog>,
}

/// One change reported by a watching backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Replaces everything the core holds for the interest (after a reload or a
    /// file save): keys that are absent from it are gone.
    Snapshot(Snapshot),
    /// One key set to a value.
    Put {
        /// The normalized key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// One key removed.
    Delete {
        /// The normalized key.
        key: String,
    },
    /// Replaces the service catalog.
    Catalog(Catalog),
}

/// A stream of batches of updates. A batch is applied as a whole before anything
/// re-renders. An `Err` item is a state change worth logging (backend unreachable,
/// data file broken); the stream goes on and later items resume. The stream ends
/// only when the backend gives up for good.
pub type UpdateStream = BoxStream<'static, Result<Vec<Update>, BackendError>>;

/// A source of keys (and optionally services) that sidekick renders from.
///
/// Implementations are cheap to share: the core holds one in an `Arc` and calls
/// [`Backend::load`] at start (and on every poll when there is no watch).
pub trait Backend: Send + Sync {
    /// Short name used in logs and errors (`file`, `env`, `etcdv3`, ...).
    fn name(&self) -> &'static str;

    /// Reads the current keys under `interest`, and the catalog when asked.
    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>>;

    /// Starts watching `interest`, or `None` when the backend cannot watch and the
    /// core should poll every `--interval` instead ([`poll`]). Dropping the stream
    /// stops the watch and everything it started.
    ///
    /// The contract: the first `Ok` item is a batch that starts with an
    /// [`Update::Snapshot`] of everything `interest` covers; the core waits for
    /// it before the first render. Watches are written as a [`Machine`] run by
    /// [`drive`], so backoff and error reporting are the same everywhere.
    /// [`Backend::load`] serves `--onetime` and polling only.
    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        let _ = interest;
        None
    }

    /// Whether this backend provides the service catalog (`services()`, `service()`).
    fn has_catalog(&self) -> bool {
        false
    }

    /// Whether any key of this backend can be a secret ([`Backend::is_secret`]):
    /// when not, nothing is looked for to mask, and a pass walks no keys for it.
    fn has_secrets(&self) -> bool {
        false
    }

    /// Whether `key` holds a secret (a Kubernetes Secret, say): its value must
    /// never reach a log line or a diff.
    fn is_secret(&self, key: &str) -> bool {
        let _ = key;
        false
    }
}

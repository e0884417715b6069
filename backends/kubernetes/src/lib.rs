//! Kubernetes backend for sidekick: keys from ConfigMaps and Secrets, and the
//! service catalog from Services and their EndpointSlices, all kept current by
//! watches.
//!
//! Key layout, in the one namespace sidekick runs against:
//!
//! - `/configmaps/<name>/<key>`: ConfigMap `data` (and `binaryData` that is UTF-8);
//! - `/secrets/<name>/<key>`: Secret `data`, base64-decoded; values that are not
//!   UTF-8 are left out (and named, never shown, in a warning).
//!
//! With several namespaces (`--namespace a,b`) or all (`--all-namespaces`),
//! the namespace comes first: `/configmaps/<ns>/<name>/<key>`,
//! `/secrets/<ns>/<name>/<key>`, and Services are named `<name>.<ns>` in the
//! catalog. `--kube-label` narrows ConfigMaps and Secrets to those matching a
//! label selector, passed to the API server as `labelSelector`.
//!
//! The interest's prefixes decide what is watched: `/configmaps/app/...` opens
//! one watch on ConfigMap `app` alone (field selector `metadata.name=app`), while
//! `/configmaps` or `/` watches every ConfigMap of the namespace. Each object is
//! watched once however many prefixes point into it.
//!
//! Each watch is kube-runtime's [`watcher`](kube::runtime::watcher()) (list, then
//! watch from the list's resourceVersion, bookmarks, relist on `410 Gone`,
//! exponential backoff). All watches are polled inside the one stream that
//! [`Backend::watch`] returns: nothing is spawned, so dropping the stream closes
//! every watch. The stream reports a change only when the key tree or the
//! catalog really differ from what it reported last, so a relist that finds
//! nothing new causes no re-render.
//!
//! See `docs/backends.md` for the layout, the catalog mapping and RBAC.

mod catalog;
mod connect;
mod error;
mod layout;
mod scope;
mod warn;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use sidekick_backend::{Backend, BackendError, Interest, Snapshot, UpdateStream};

/// Name used in logs and errors.
pub(crate) const NAME: &str = "kubernetes";

/// Settings the binary passes in.
#[derive(Debug, Clone, Default)]
pub struct KubernetesConfig {
    /// kubeconfig file. `None`: the in-cluster config (service-account token
    /// and CA) when running in a pod, else `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace to read: one name, several (`a,b`: keys then carry the
    /// namespace), or `ALL` (as `all_namespaces`). `None`: the pod's own
    /// namespace in a cluster, else the kubeconfig context's (`default` when
    /// it names none).
    pub namespace: Option<String>,
    /// Read every namespace (cluster-wide lists and watches), as kubectl's
    /// `--all-namespaces`; keys carry the namespace.
    pub all_namespaces: bool,
    /// Label selectors (`app=web`, `tier in (a,b)`, `!legacy`); several are
    /// ANDed. Only ConfigMaps and Secrets that match are read, filtered by the
    /// API server (`labelSelector`).
    pub labels: Vec<String>,
}

/// Reads ConfigMaps, Secrets and Service endpoints from one namespace.
///
/// [`KubernetesBackend::new`] checks the settings and reads the kubeconfig; the
/// client itself is built on first use, inside the async runtime.
pub struct KubernetesBackend {
    shared: Arc<connect::Shared>,
}

impl KubernetesBackend {
    /// Checks the settings: the kubeconfig must parse, or the in-cluster
    /// service-account files must be there. Nothing is contacted yet.
    pub fn new(config: KubernetesConfig) -> Result<KubernetesBackend, BackendError> {
        let shared = connect::Shared::new(config)?;
        Ok(KubernetesBackend {
            shared: Arc::new(shared),
        })
    }
}

impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(watch::load(&self.shared, interest))
    }

    fn watch(&self, interest: &Interest) -> Option<UpdateStream> {
        Some(watch::stream(Arc::clone(&self.shared), interest.clone()))
    }

    fn has_catalog(&self) -> bool {
        true
    }

    fn has_secrets(&self) -> bool {
        true
    }

    /// Everything under `/secrets` comes from a Secret.
    fn is_secret(&self, key: &str) -> bool {
        sidekick_backend::is_under(key, "/secrets")
    }
}

/// Re-exports for the workspace's end-to-end tests, which create objects in a
/// real cluster and cannot name these crates themselves. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use k8s_openapi;
    pub use kube;
}

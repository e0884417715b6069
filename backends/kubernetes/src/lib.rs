//! Kubernetes backend (in progress).

use std::path::PathBuf;

use futures::future::BoxFuture;
use sidekick_backend::{Backend, BackendError, Interest, Snapshot};

/// Settings the binary passes in.
#[derive(Debug, Clone, Default)]
pub struct KubernetesConfig {
    /// kubeconfig file; `None`: in-cluster config, then `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace; `None`: the pod's own.
    pub namespace: Option<String>,
}

/// Reads ConfigMaps, Secrets and Service endpoints.
pub struct KubernetesBackend;

impl KubernetesBackend {
    /// Checks the settings.
    pub fn new(config: KubernetesConfig) -> Result<KubernetesBackend, BackendError> {
        let _ = config;
        Err(BackendError::Config {
            backend: "kubernetes",
            message: "not built yet".into(),
        })
    }
}

impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }
    fn load<'a>(
        &'a self,
        _interest: &'a Interest,
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async { Ok(Snapshot::default()) })
    }
}

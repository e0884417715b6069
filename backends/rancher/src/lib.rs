//! Rancher-style metadata backend (in progress).

use futures::future::BoxFuture;
use sidekick_backend::{Backend, BackendError, Interest, Snapshot};

/// Settings the binary passes in.
#[derive(Debug, Clone, Default)]
pub struct RancherConfig {
    /// Metadata service URL (`http://rancher-metadata`), API version path optional.
    pub node: Option<String>,
}

/// Reads the Rancher metadata tree.
pub struct RancherBackend;

impl RancherBackend {
    /// Checks the settings.
    pub fn new(config: RancherConfig) -> Result<RancherBackend, BackendError> {
        let _ = config;
        Err(BackendError::Config {
            backend: "rancher",
            message: "not built yet".into(),
        })
    }
}

impl Backend for RancherBackend {
    fn name(&self) -> &'static str {
        "rancher"
    }
    fn load<'a>(
        &'a self,
        _interest: &'a Interest,
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async { Ok(Snapshot::default()) })
    }
}

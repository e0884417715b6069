//! Consul backend (in progress).

use std::path::PathBuf;

use futures::future::BoxFuture;
use sidekick_backend::{Backend, BackendError, Interest, Snapshot};

/// Settings the binary passes in.
#[derive(Debug, Clone, Default)]
pub struct ConsulConfig {
    /// Agent addresses (`http://127.0.0.1:8500`); the first that answers is used.
    pub nodes: Vec<String>,
    /// ACL token, sent as `X-Consul-Token`; never logged.
    pub token: Option<String>,
    /// Datacenter to query (`?dc=`).
    pub datacenter: Option<String>,
    /// CA certificate(s) to verify the agent with.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// Reads Consul KV and the service catalog.
pub struct ConsulBackend;

impl ConsulBackend {
    /// Checks the settings.
    pub fn new(config: ConsulConfig) -> Result<ConsulBackend, BackendError> {
        let _ = config;
        Err(BackendError::Config {
            backend: "consul",
            message: "not built yet".into(),
        })
    }
}

impl Backend for ConsulBackend {
    fn name(&self) -> &'static str {
        "consul"
    }
    fn load<'a>(
        &'a self,
        _interest: &'a Interest,
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        Box::pin(async { Ok(Snapshot::default()) })
    }
}

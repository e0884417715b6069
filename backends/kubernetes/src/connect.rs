//! Where the API server is and how to talk to it: `--kubeconfig`, else the
//! in-cluster service account, else `KUBECONFIG` / `~/.kube/config`; and the
//! client, built on first use because it needs the async runtime.

use std::sync::Arc;

use futures::FutureExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use sidekick_backend::BackendError;
use tokio::sync::OnceCell;

use crate::scope::{self, Namespaces, Scope};
use crate::warn::WarnOnce;
use crate::{KubernetesConfig, NAME};

/// A client, the namespaces it reads and the label selector it sends.
#[derive(Clone)]
pub(crate) struct Connection {
    pub client: Client,
    pub scope: Scope,
    /// `--kube-label`, checked and joined: every ConfigMap and Secret list and
    /// watch carries it as `labelSelector`.
    pub labels: Option<String>,
    /// The API server's URL, for messages.
    pub server: String,
}

/// Settings resolved as far as can be done without a runtime.
enum Source {
    /// A complete client configuration (in-cluster, or a kubeconfig whose
    /// loading finished at once).
    Ready(Box<Config>),
    /// A kubeconfig whose loading has to be awaited.
    Kubeconfig(Box<Kubeconfig>),
}

/// What the backend and its watch streams share. Holds credentials: no `Debug`.
pub(crate) struct Shared {
    source: Source,
    /// `--namespace` / `--all-namespaces`.
    namespaces: Namespaces,
    /// `--kube-label`, checked and joined.
    labels: Option<String>,
    /// Where the settings came from, for messages.
    origin: String,
    connection: OnceCell<Connection>,
    /// Warnings given once per process (prefixes outside the layout, binary values).
    pub(crate) warned: Arc<WarnOnce>,
}

impl Shared {
    /// Reads and checks the settings; contacts nothing.
    pub(crate) fn new(config: KubernetesConfig) -> Result<Shared, BackendError> {
        let namespaces = Namespaces::parse(config.namespace.as_deref(), config.all_namespaces)?;
        let labels = scope::label_selector(&config.labels)?;
        let (kubeconfig, origin) = match &config.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| {
                    config_error(format!("cannot load kubeconfig {}: {e}", path.display()))
                })?;
                (kc, format!("kubeconfig {}", path.display()))
            }
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                let c = Config::incluster().map_err(|e| {
                    config_error(format!("cannot load the in-cluster configuration: {e}"))
                })?;
                tracing::debug!(server = %c.cluster_url, "using the in-cluster service account");
                return Ok(Shared {
                    source: Source::Ready(Box::new(c)),
                    namespaces,
                    labels,
                    origin: "in-cluster service account".into(),
                    connection: OnceCell::new(),
                    warned: Arc::default(),
                });
            }
            None => {
                let kc = Kubeconfig::read().map_err(|e| {
                    config_error(format!(
                        "not in a cluster (KUBERNETES_SERVICE_HOST is unset) and no usable \
                         kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config): {e}"
                    ))
                })?;
                (kc, "KUBECONFIG or ~/.kube/config".to_string())
            }
        };
        // Loading a parsed kubeconfig does no I/O today, so it finishes on the
        // first poll and its errors show at start-up; should a later kube make
        // it wait for something, it is awaited on first use instead.
        let options = KubeConfigOptions::default();
        let source =
            match Config::from_custom_kubeconfig(kubeconfig.clone(), &options).now_or_never() {
                Some(Ok(c)) => Source::Ready(Box::new(c)),
                Some(Err(e)) => return Err(config_error(format!("{origin}: {e}"))),
                None => Source::Kubeconfig(Box::new(kubeconfig)),
            };
        Ok(Shared {
            source,
            namespaces,
            labels,
            origin,
            connection: OnceCell::new(),
            warned: Arc::default(),
        })
    }

    /// The API server's URL when known before connecting, else where the
    /// settings came from: for the watch driver's log lines.
    pub(crate) fn endpoint(&self) -> String {
        match &self.source {
            Source::Ready(c) => c.cluster_url.to_string(),
            Source::Kubeconfig(_) => self.origin.clone(),
        }
    }

    /// The client, built on the first call.
    pub(crate) async fn connection(&self) -> Result<&Connection, BackendError> {
        self.connection.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Connection, BackendError> {
        let config = match &self.source {
            Source::Ready(c) => (**c).clone(),
            Source::Kubeconfig(kc) => {
                Config::from_custom_kubeconfig((**kc).clone(), &KubeConfigOptions::default())
                    .await
                    .map_err(|e| config_error(format!("{}: {e}", self.origin)))?
            }
        };
        let scope = Scope::resolve(&self.namespaces, &config.default_namespace);
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| config_error(format!("{}: cannot build a client: {e}", self.origin)))?;
        tracing::info!(
            backend = NAME,
            server,
            namespace = %scope.describe(),
            labels = self.labels.as_deref().unwrap_or(""),
            "kubernetes client ready"
        );
        Ok(Connection {
            client,
            scope,
            labels: self.labels.clone(),
            server,
        })
    }
}

fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

//! Picks and builds the backend named by `--backend`. Adding a backend adds one
//! arm here and one crate under `backends/`.

use std::sync::Arc;

use sidekick_backend::Backend;
#[cfg(feature = "consul")]
use sidekick_backend_consul::{ConsulBackend, ConsulConfig};
use sidekick_backend_env::EnvBackend;
#[cfg(feature = "etcd")]
use sidekick_backend_etcd::{EtcdBackend, EtcdConfig};
use sidekick_backend_file::FileBackend;
#[cfg(feature = "kubernetes")]
use sidekick_backend_kubernetes::{KubernetesBackend, KubernetesConfig};
#[cfg(feature = "rancher")]
use sidekick_backend_rancher::{RancherBackend, RancherConfig};

use crate::config::Settings;

/// Names `--backend` accepts today.
pub(crate) const NAMES: &[&str] = &["file", "env", "etcdv3", "consul", "rancher", "kubernetes"];

/// A backend that cannot be built from these settings.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("unknown backend {name:?}: expected one of {}", NAMES.join(", "))]
    Unknown { name: String },
    #[error("backend {name:?} was left out of this build (cargo feature)")]
    NotBuilt { name: String },
    /// The backend's own error names it (`etcdv3: ...`, `kubernetes: ...`).
    #[error("{message}")]
    Settings { message: String },
}

/// Builds the backend the settings name.
pub(crate) fn build(settings: &Settings) -> Result<Arc<dyn Backend>, BuildError> {
    match settings.backend.as_str() {
        "file" => {
            if settings.files.is_empty() && settings.services_file.is_none() {
                return Err(BuildError::Settings {
                    message: "file: needs at least one --file PATH (YAML, JSON or TOML file, or a directory of them)"
                        .into(),
                });
            }
            let backend = FileBackend::new(settings.files.clone(), settings.services_file.clone())
                .map_err(|e| settings_error("file", e))?;
            Ok(Arc::new(backend))
        }
        "env" => Ok(Arc::new(EnvBackend::new())),
        #[cfg(feature = "etcd")]
        "etcdv3" | "etcd" => Ok(Arc::new(
            EtcdBackend::new(EtcdConfig {
                endpoints: settings.nodes.clone(),
                username: settings.username.clone(),
                password: settings.password.clone(),
                client_cert: settings.client_cert.clone(),
                client_key: settings.client_key.clone(),
                client_ca_keys: settings.client_ca_keys.clone(),
            })
            .map_err(|e| settings_error("etcdv3", e))?,
        )),
        #[cfg(feature = "consul")]
        "consul" => Ok(Arc::new(
            ConsulBackend::new(ConsulConfig {
                nodes: settings.nodes.clone(),
                token: settings.auth_token.clone(),
                datacenter: settings.datacenter.clone(),
                ca_file: settings.client_ca_keys.clone(),
                cert_file: settings.client_cert.clone(),
                key_file: settings.client_key.clone(),
            })
            .map_err(|e| settings_error("consul", e))?,
        )),
        #[cfg(feature = "rancher")]
        "rancher" => Ok(Arc::new(
            RancherBackend::new(RancherConfig {
                node: settings.nodes.first().cloned(),
            })
            .and_then(|b| b.with_self_container(settings.self_container.clone()))
            .map_err(|e| settings_error("rancher", e))?,
        )),
        #[cfg(feature = "kubernetes")]
        "kubernetes" | "k8s" => Ok(Arc::new(
            KubernetesBackend::new(KubernetesConfig {
                kubeconfig: settings.kubeconfig.clone(),
                namespace: settings.namespace.clone(),
            })
            .map_err(|e| settings_error("kubernetes", e))?,
        )),
        other if NAMES.contains(&other) || other == "etcd" || other == "k8s" => {
            Err(BuildError::NotBuilt {
                name: other.to_string(),
            })
        }
        other => Err(BuildError::Unknown {
            name: other.to_string(),
        }),
    }
}

fn settings_error(backend: &str, e: sidekick_backend::BackendError) -> BuildError {
    let message = e.to_string();
    BuildError::Settings {
        // Config, Denied and Unavailable errors start with the backend's name already.
        message: if message.starts_with(backend) {
            message
        } else {
            format!("{backend}: {message}")
        },
    }
}

//! Each backend's settings (one group of flags and settings-file keys per
//! backend, under its own `--help` heading) and the factory that builds the
//! backend `--backend` names from its group. Adding a backend adds a group and
//! an arm here and a crate under `backends/`; a backend left out of the build
//! (cargo feature) takes its group with it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Deserialize;
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
#[cfg(feature = "redis")]
use sidekick_backend_redis::{RedisBackend, RedisConfig};
#[cfg(feature = "vault")]
use sidekick_backend_vault::{VaultBackend, VaultConfig};
#[cfg(feature = "zookeeper")]
use sidekick_backend_zookeeper::{ZookeeperBackend, ZookeeperConfig};

use crate::config::{Settings, SettingsFile};

/// Every backend's group. Unset settings stay `None` (or empty): each backend
/// has its own defaults.
#[derive(Clone, Default, Args)]
pub(crate) struct BackendOptions {
    #[command(flatten, next_help_heading = "File backend options")]
    pub file: FileOptions,
    #[cfg(any(
        feature = "etcd",
        feature = "consul",
        feature = "rancher",
        feature = "zookeeper",
        feature = "vault",
        feature = "redis"
    ))]
    #[command(flatten, next_help_heading = "Connection options")]
    pub connection: ConnectionOptions,
    #[cfg(any(
        feature = "etcd",
        feature = "consul",
        feature = "vault",
        feature = "redis"
    ))]
    #[command(
        flatten,
        next_help_heading = "TLS options (etcd, Consul, Vault, Redis)"
    )]
    pub tls: TlsOptions,
    #[cfg(any(feature = "etcd", feature = "zookeeper", feature = "redis"))]
    #[command(flatten, next_help_heading = "Authentication (etcd, ZooKeeper, Redis)")]
    pub etcd: EtcdOptions,
    #[cfg(feature = "consul")]
    #[command(flatten, next_help_heading = "Consul options")]
    pub consul: ConsulOptions,
    #[cfg(feature = "rancher")]
    #[command(flatten, next_help_heading = "Rancher options")]
    pub rancher: RancherOptions,
    #[cfg(feature = "kubernetes")]
    #[command(flatten, next_help_heading = "Kubernetes options")]
    pub kubernetes: KubernetesOptions,
    #[cfg(feature = "vault")]
    #[command(flatten, next_help_heading = "Vault options")]
    pub vault: VaultOptions,
    #[cfg(feature = "redis")]
    #[command(flatten, next_help_heading = "Redis options")]
    pub redis: RedisOptions,
}

impl BackendOptions {
    /// A `vault` source table that names no node or login takes Vault's own
    /// environment (`VAULT_ADDR` is read when it is built, `VAULT_TOKEN` here).
    pub fn vault_from_environment(&mut self) {
        #[cfg(feature = "vault")]
        {
            let v = &mut self.vault;
            if v.vault_token.is_none() && v.vault_role_id.is_none() && v.vault_k8s_role.is_none() {
                v.vault_token = std::env::var("VAULT_TOKEN").ok().filter(|t| !t.is_empty());
            }
        }
    }

    /// Each group's keys from the settings file.
    pub fn read(file: &mut SettingsFile) -> BackendOptions {
        BackendOptions {
            file: file.read(),
            #[cfg(any(
                feature = "etcd",
                feature = "consul",
                feature = "rancher",
                feature = "zookeeper",
                feature = "vault",
                feature = "redis"
            ))]
            connection: file.read(),
            #[cfg(any(
                feature = "etcd",
                feature = "consul",
                feature = "vault",
                feature = "redis"
            ))]
            tls: file.read(),
            #[cfg(any(feature = "etcd", feature = "zookeeper", feature = "redis"))]
            etcd: file.read(),
            #[cfg(feature = "consul")]
            consul: file.read(),
            #[cfg(feature = "rancher")]
            rancher: file.read(),
            #[cfg(feature = "kubernetes")]
            kubernetes: file.read(),
            #[cfg(feature = "vault")]
            vault: file.read(),
            #[cfg(feature = "redis")]
            redis: file.read(),
        }
    }
}

/// The file backend's data and service catalog.
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct FileOptions {
    /// Data file or directory (YAML, JSON, TOML); repeatable. For metadata-server: the answers file
    #[arg(
        long = "file",
        env = "SIDEKICK_FILE",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    #[serde(alias = "file")]
    pub files: Vec<PathBuf>,
    /// YAML/JSON/TOML file of services and their instances (the catalog)
    #[arg(long, env = "SIDEKICK_SERVICES_FILE", value_name = "PATH")]
    #[serde(alias = "services-file")]
    pub services_file: Option<PathBuf>,
}

/// Where a network backend is (etcd, Consul, Rancher).
#[cfg(any(
    feature = "etcd",
    feature = "consul",
    feature = "rancher",
    feature = "zookeeper",
    feature = "vault",
    feature = "redis"
))]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectionOptions {
    /// Backend address; repeatable (several endpoints of one cluster)
    #[arg(
        long = "node",
        env = "SIDEKICK_NODE",
        value_delimiter = ',',
        value_name = "URL"
    )]
    #[serde(alias = "node")]
    pub nodes: Vec<String>,
    /// Find the nodes in this SRV record (`_etcd-client._tcp.example.com`) when
    /// no --node is given, as confd's -srv-record
    #[arg(long, env = "SIDEKICK_SRV_RECORD", value_name = "NAME")]
    #[serde(alias = "srv-record")]
    pub srv_record: Option<String>,
    /// Find the nodes in the SRV record `_BACKEND._tcp.DOMAIN` when no --node is
    /// given, as confd's -srv-domain
    #[arg(long, env = "SIDEKICK_SRV_DOMAIN", value_name = "DOMAIN")]
    #[serde(alias = "srv-domain")]
    pub srv_domain: Option<String>,
    /// URL scheme of nodes found by SRV record: http or https [default: http]
    #[arg(long, env = "SIDEKICK_SCHEME", value_name = "SCHEME")]
    pub scheme: Option<String>,
}

#[cfg(any(
    feature = "etcd",
    feature = "consul",
    feature = "rancher",
    feature = "zookeeper",
    feature = "vault",
    feature = "redis"
))]
impl ConnectionOptions {
    /// `--node`, or when none is given and `--srv-record`/`--srv-domain` is,
    /// the targets of that SRV record as `SCHEME://TARGET:PORT` (confd's
    /// rule; the record for `--srv-domain D` is `_BACKEND._tcp.D.`).
    fn resolve(&self, backend: &str) -> Result<Vec<String>, BuildError> {
        if !self.nodes.is_empty() {
            return Ok(self.nodes.clone());
        }
        let record = match (&self.srv_record, &self.srv_domain) {
            (Some(r), _) => r.clone(),
            (None, Some(d)) => format!("_{backend}._tcp.{d}."),
            (None, None) => return Ok(Vec::new()),
        };
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let records =
            crate::dns::lookup_srv("", "", &record).map_err(|e| BuildError::Settings {
                message: format!("{backend}: cannot look up the nodes in SRV record {record}: {e}"),
            })?;
        if records.is_empty() {
            return Err(BuildError::Settings {
                message: format!("{backend}: SRV record {record} has no targets"),
            });
        }
        let nodes: Vec<String> = records
            .iter()
            .map(|r| format!("{scheme}://{}:{}", r.target, r.port))
            .collect();
        tracing::info!(record = %record, nodes = ?nodes, "backend nodes from SRV record");
        Ok(nodes)
    }
}

/// Client certificates and the CA to check the backend with (etcd, Consul).
#[cfg(any(
    feature = "etcd",
    feature = "consul",
    feature = "vault",
    feature = "redis"
))]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct TlsOptions {
    /// Client certificate (PEM) for TLS to the backend
    #[arg(long, env = "SIDEKICK_CLIENT_CERT", value_name = "FILE")]
    #[serde(alias = "client-cert")]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for TLS to the backend
    #[arg(long, env = "SIDEKICK_CLIENT_KEY", value_name = "FILE")]
    #[serde(alias = "client-key")]
    pub client_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify the backend with
    #[arg(long, env = "SIDEKICK_CLIENT_CA_KEYS", value_name = "FILE")]
    #[serde(alias = "client-ca-keys", alias = "client_cakeys")]
    pub client_ca_keys: Option<PathBuf>,
}

/// etcd's authentication, also ZooKeeper's digest user and Redis's
/// `AUTH [user] password`.
#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "redis"))]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct EtcdOptions {
    /// User name for etcd auth (ZooKeeper: digest user; Redis: an ACL user)
    #[arg(long, env = "SIDEKICK_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// Password for --username (Redis: AUTH; also SIDEKICK_REDIS_PASSWORD); never logged
    #[arg(
        long,
        env = "SIDEKICK_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

/// Consul's ACL token and datacenter.
#[cfg(feature = "consul")]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct ConsulOptions {
    /// ACL token, sent as X-Consul-Token; never logged
    #[arg(
        long,
        env = "SIDEKICK_CONSUL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(alias = "auth-token")]
    pub auth_token: Option<String>,
    /// Datacenter to query
    #[arg(long, env = "SIDEKICK_DATACENTER", value_name = "DC")]
    pub datacenter: Option<String>,
}

/// The Rancher backend's `self`, and the metadata server's address.
#[cfg(feature = "rancher")]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct RancherOptions {
    /// Address to listen on (metadata-server)
    #[arg(long, env = "SIDEKICK_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Container the metadata server answers `self` for, whoever asks
    #[arg(long = "self", env = "SIDEKICK_SELF", value_name = "CONTAINER")]
    #[serde(rename = "self")]
    pub self_container: Option<String>,
}

/// Which cluster and namespace to read.
#[cfg(feature = "kubernetes")]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct KubernetesOptions {
    /// kubeconfig file (default: in-cluster, then KUBECONFIG)
    #[arg(long, env = "SIDEKICK_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace, several as a,b (keys then /configmaps/NS/NAME/KEY), or ALL (default: the pod's own)
    #[arg(long, env = "SIDEKICK_NAMESPACE", value_name = "NS[,NS...]")]
    pub namespace: Option<String>,
    /// Read every namespace the service account may list (as --namespace ALL)
    #[arg(long, env = "SIDEKICK_ALL_NAMESPACES", action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    #[serde(alias = "all-namespaces")]
    pub all_namespaces: bool,
    /// Only ConfigMaps and Secrets matching this label selector (app=web, tier in (a,b)); repeatable, ANDed
    #[arg(
        long = "kube-label",
        env = "SIDEKICK_KUBE_LABEL",
        value_name = "SELECTOR"
    )]
    #[serde(alias = "kube-label", alias = "kube_labels")]
    pub kube_label: Vec<String>,
}

/// How to log in to Vault and which KV mounts to read.
#[cfg(feature = "vault")]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct VaultOptions {
    /// Vault token; never logged
    #[arg(
        long,
        env = "VAULT_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(alias = "vault-token")]
    pub vault_token: Option<String>,
    /// Log in to Vault with AppRole: the role_id
    #[arg(long, env = "SIDEKICK_VAULT_ROLE_ID", value_name = "ID")]
    #[serde(alias = "vault-role-id")]
    pub vault_role_id: Option<String>,
    /// The AppRole secret_id for --vault-role-id; never logged
    #[arg(
        long,
        env = "SIDEKICK_VAULT_SECRET_ID",
        value_name = "ID",
        hide_env_values = true
    )]
    #[serde(alias = "vault-secret-id")]
    pub vault_secret_id: Option<String>,
    /// Log in to Vault with the Kubernetes service-account JWT, as this Vault role
    #[arg(long, env = "SIDEKICK_VAULT_K8S_ROLE", value_name = "ROLE")]
    #[serde(alias = "vault-k8s-role")]
    pub vault_k8s_role: Option<String>,
    /// JWT file for --vault-k8s-role [default: /var/run/secrets/kubernetes.io/serviceaccount/token]
    #[arg(long, env = "SIDEKICK_VAULT_K8S_JWT", value_name = "FILE")]
    #[serde(alias = "vault-k8s-jwt")]
    pub vault_k8s_jwt: Option<PathBuf>,
    /// Path of the AppRole or Kubernetes auth method [default: approle, kubernetes]
    #[arg(long, env = "SIDEKICK_VAULT_AUTH_MOUNT", value_name = "PATH")]
    #[serde(alias = "vault-auth-mount")]
    pub vault_auth_mount: Option<String>,
    /// KV mount to read, MOUNT (KV v2) or MOUNT:1; repeatable [default: each key's first segment, its version asked of Vault]
    #[arg(
        long = "vault-mount",
        env = "SIDEKICK_VAULT_MOUNT",
        value_delimiter = ',',
        value_name = "MOUNT[:1]"
    )]
    #[serde(alias = "vault-mount", alias = "vault_mount")]
    pub vault_mounts: Vec<String>,
}

#[cfg(feature = "vault")]
impl VaultOptions {
    /// The login these settings ask for: AppRole or Kubernetes when their
    /// flags are given (a `VAULT_TOKEN` in the environment is then unused),
    /// else the token.
    fn auth(&self) -> Result<Option<sidekick_backend_vault::Auth>, BuildError> {
        use sidekick_backend_vault::Auth;
        let mount = |default: &str| {
            self.vault_auth_mount
                .clone()
                .unwrap_or_else(|| default.to_string())
        };
        match (&self.vault_role_id, &self.vault_k8s_role) {
            (Some(_), Some(_)) => Err(BuildError::Settings {
                message: "vault: give --vault-role-id (AppRole) or --vault-k8s-role (Kubernetes), \
                          not both"
                    .into(),
            }),
            (Some(role_id), None) => Ok(Some(Auth::AppRole {
                role_id: role_id.clone(),
                secret_id: self.vault_secret_id.clone(),
                mount: mount("approle"),
            })),
            (None, Some(role)) => Ok(Some(Auth::Kubernetes {
                role: role.clone(),
                jwt_file: self
                    .vault_k8s_jwt
                    .clone()
                    .unwrap_or_else(|| sidekick_backend_vault::DEFAULT_K8S_JWT.into()),
                mount: mount("kubernetes"),
            })),
            (None, None) if self.vault_secret_id.is_some() => Err(BuildError::Settings {
                message: "vault: --vault-secret-id needs --vault-role-id".into(),
            }),
            (None, None) => Ok(self.vault_token.clone().map(Auth::Token)),
        }
    }
}

/// Redis's database and keyspace notifications.
#[cfg(feature = "redis")]
#[derive(Clone, Default, Args, Deserialize)]
#[serde(default)]
pub(crate) struct RedisOptions {
    /// Redis database number (SELECT) [default: the node's /N, else 0]
    #[arg(long, env = "SIDEKICK_REDIS_DATABASE", value_name = "N")]
    pub database: Option<i64>,
    /// Let sidekick turn on the keyspace notifications the Redis watch needs
    /// (CONFIG SET notify-keyspace-events) when they are off; without it, it polls
    #[arg(long, env = "SIDEKICK_REDIS_NOTIFY_CONFIG", action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    #[serde(alias = "redis-notify-config")]
    pub redis_notify_config: bool,
}

/// Names `--backend` accepts today.
pub(crate) const NAMES: &[&str] = &[
    "file",
    "env",
    "etcdv3",
    "consul",
    "rancher",
    "kubernetes",
    "zookeeper",
    "vault",
    "redis",
];

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

/// Builds the backend the settings name, from its group.
pub(crate) fn build(settings: &Settings) -> Result<Arc<dyn Backend>, BuildError> {
    build_kind(&settings.backend, &settings.backends, settings.interval)
}

/// Builds backend `kind` from `options`; `interval` is `--interval` (seconds),
/// for the backends that poll.
#[cfg_attr(
    not(any(feature = "vault", feature = "redis")),
    allow(unused_variables) // only the polling backends read `interval`
)]
pub(crate) fn build_kind(
    kind: &str,
    options: &BackendOptions,
    interval: u64,
) -> Result<Arc<dyn Backend>, BuildError> {
    match kind {
        "file" => {
            let file = &options.file;
            if file.files.is_empty() && file.services_file.is_none() {
                return Err(BuildError::Settings {
                    message: "file: needs at least one --file PATH (YAML, JSON or TOML file, or a directory of them)"
                        .into(),
                });
            }
            let backend = FileBackend::new(file.files.clone(), file.services_file.clone())
                .map_err(|e| settings_error("file", e))?;
            Ok(Arc::new(backend))
        }
        "env" => Ok(Arc::new(EnvBackend::new())),
        #[cfg(feature = "etcd")]
        "etcdv3" | "etcd" => Ok(Arc::new(
            EtcdBackend::new(EtcdConfig {
                endpoints: options.connection.resolve(kind)?,
                username: options.etcd.username.clone(),
                password: options.etcd.password.clone(),
                client_cert: options.tls.client_cert.clone(),
                client_key: options.tls.client_key.clone(),
                client_ca_keys: options.tls.client_ca_keys.clone(),
            })
            .map_err(|e| settings_error("etcdv3", e))?,
        )),
        #[cfg(feature = "consul")]
        "consul" => Ok(Arc::new(
            ConsulBackend::new(ConsulConfig {
                nodes: options.connection.resolve("consul")?,
                token: options.consul.auth_token.clone(),
                datacenter: options.consul.datacenter.clone(),
                ca_file: options.tls.client_ca_keys.clone(),
                cert_file: options.tls.client_cert.clone(),
                key_file: options.tls.client_key.clone(),
            })
            .map_err(|e| settings_error("consul", e))?,
        )),
        #[cfg(feature = "rancher")]
        "rancher" => Ok(Arc::new(
            RancherBackend::new(RancherConfig {
                node: options.connection.resolve("rancher")?.first().cloned(),
            })
            .and_then(|b| b.with_self_container(options.rancher.self_container.clone()))
            .map_err(|e| settings_error("rancher", e))?,
        )),
        #[cfg(feature = "kubernetes")]
        "kubernetes" | "k8s" => Ok(Arc::new(
            KubernetesBackend::new(KubernetesConfig {
                kubeconfig: options.kubernetes.kubeconfig.clone(),
                namespace: options.kubernetes.namespace.clone(),
                all_namespaces: options.kubernetes.all_namespaces,
                labels: options.kubernetes.kube_label.clone(),
            })
            .map_err(|e| settings_error("kubernetes", e))?,
        )),
        #[cfg(feature = "zookeeper")]
        "zookeeper" => Ok(Arc::new(
            ZookeeperBackend::new(ZookeeperConfig {
                nodes: options.connection.resolve("zookeeper")?,
                username: options.etcd.username.clone(),
                password: options.etcd.password.clone(),
            })
            .map_err(|e| settings_error("zookeeper", e))?,
        )),
        #[cfg(feature = "vault")]
        "vault" => {
            let vault = &options.vault;
            let mounts = vault
                .vault_mounts
                .iter()
                .filter(|m| !m.trim().is_empty())
                .map(|m| sidekick_backend_vault::Mount::parse(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| settings_error("vault", e))?;
            let node = options
                .connection
                .resolve("vault")?
                .first()
                .cloned()
                .or_else(|| {
                    std::env::var("VAULT_ADDR")
                        .ok()
                        .filter(|a| !a.trim().is_empty())
                });
            Ok(Arc::new(
                VaultBackend::new(VaultConfig {
                    node,
                    auth: vault.auth()?,
                    mounts,
                    ca_file: options.tls.client_ca_keys.clone(),
                    cert_file: options.tls.client_cert.clone(),
                    key_file: options.tls.client_key.clone(),
                    interval,
                })
                .map_err(|e| settings_error("vault", e))?,
            ))
        }
        #[cfg(feature = "redis")]
        "redis" => Ok(Arc::new(
            RedisBackend::new(RedisConfig {
                nodes: options.connection.resolve("redis")?,
                username: options.etcd.username.clone(),
                password: options
                    .etcd
                    .password
                    .clone()
                    .or_else(|| std::env::var("SIDEKICK_REDIS_PASSWORD").ok())
                    .filter(|p| !p.is_empty()),
                database: options.redis.database,
                notify_config: options.redis.redis_notify_config,
                poll_interval: std::time::Duration::from_secs(interval),
                client_ca_keys: options.tls.client_ca_keys.clone(),
                client_cert: options.tls.client_cert.clone(),
                client_key: options.tls.client_key.clone(),
            })
            .map_err(|e| settings_error("redis", e))?,
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

#[cfg(all(
    test,
    any(
        feature = "etcd",
        feature = "consul",
        feature = "rancher",
        feature = "zookeeper",
        feature = "vault",
        feature = "redis"
    )
))]
mod tests {
    use super::*;

    #[test]
    fn nodes_from_an_srv_record_as_confd_builds_them() {
        let given = ConnectionOptions {
            nodes: vec!["http://n:1".into()],
            srv_domain: Some("example.com".into()),
            ..ConnectionOptions::default()
        };
        assert_eq!(given.resolve("etcd").unwrap(), ["http://n:1"]);
        assert!(ConnectionOptions::default()
            .resolve("etcd")
            .unwrap()
            .is_empty());

        let server = crate::dns::tests::spawn_srv_server();
        std::env::set_var(crate::dns::SERVER_ENV, server.to_string());
        let srv = ConnectionOptions {
            srv_record: Some("_etcd-client._tcp.example.com.".into()),
            scheme: Some("https".into()),
            ..ConnectionOptions::default()
        };
        assert_eq!(
            srv.resolve("etcdv3").unwrap(),
            [
                "https://web1.example.com.:8080",
                "https://web2.example.com.:8081"
            ]
        );
        let domain = ConnectionOptions {
            srv_domain: Some("example.com".into()),
            ..ConnectionOptions::default()
        };
        assert_eq!(
            domain.resolve("etcd").unwrap(),
            [
                "http://web1.example.com.:8080",
                "http://web2.example.com.:8081"
            ]
        );
    }
}

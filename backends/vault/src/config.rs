//! What the Vault backend is told (address, how to log in, which KV mounts,
//! TLS files, poll interval) and the timings it runs with, checked once at
//! start so that a typo fails before any request is made.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sidekick_backend::tls::TlsFiles;
use sidekick_backend::BackendError;

use crate::NAME;

/// The address used when no `--node` (and no `VAULT_ADDR`) is given: Vault's
/// own default.
pub const DEFAULT_NODE: &str = "https://127.0.0.1:8200";

/// Where a Kubernetes pod finds its service-account token.
pub const DEFAULT_K8S_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// How sidekick logs in to Vault.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A token given as it is (`--vault-token`, `VAULT_TOKEN`). It is looked
    /// up (`auth/token/lookup-self`) for its TTL and renewed while renewable;
    /// when it expires there is nothing to log in with again.
    Token(String),
    /// AppRole (`--vault-role-id`, `--vault-secret-id`):
    /// `POST auth/<mount>/login`; logs in again when the token cannot be
    /// renewed any more.
    AppRole {
        /// The role's `role_id`.
        role_id: String,
        /// A `secret_id` of the role; `None` for roles with `bind_secret_id=false`.
        secret_id: Option<String>,
        /// Where the method is mounted (`approle`).
        mount: String,
    },
    /// Kubernetes service-account JWT (`--vault-k8s-role`):
    /// `POST auth/<mount>/login` with the JWT read from `jwt_file` at every
    /// login (it rotates).
    Kubernetes {
        /// The Vault role bound to the service account.
        role: String,
        /// The JWT file.
        jwt_file: PathBuf,
        /// Where the method is mounted (`kubernetes`).
        mount: String,
    },
}

impl Auth {
    /// A short name for logs (`token`, `approle`, `kubernetes`).
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Token(_) => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Kubernetes { .. } => "kubernetes",
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::AppRole { role_id, mount, .. } => f
                .debug_struct("AppRole")
                .field("role_id", role_id)
                .field("secret_id", &"<redacted>")
                .field("mount", mount)
                .finish(),
            Auth::Kubernetes {
                role,
                jwt_file,
                mount,
            } => f
                .debug_struct("Kubernetes")
                .field("role", role)
                .field("jwt_file", jwt_file)
                .field("mount", mount)
                .finish(),
        }
    }
}

/// A KV secrets engine mount and its version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mount {
    /// The mount path without slashes at either end (`secret`, `team/kv`).
    pub path: String,
    /// KV version: 1 or 2.
    pub version: u8,
}

impl Mount {
    /// Parses `--vault-mount`'s `PATH[:VERSION]` (version 2 when left out).
    pub fn parse(spec: &str) -> Result<Mount, BackendError> {
        let spec = spec.trim();
        let (path, version) = match spec.rsplit_once(':') {
            Some((path, "1")) => (path, 1),
            Some((path, "2")) => (path, 2),
            Some((_, v)) => {
                return Err(config_error(format!(
                    "--vault-mount {spec:?}: the KV version after ':' must be 1 or 2, not {v:?}"
                )))
            }
            None => (spec, 2),
        };
        let path = path.trim_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(config_error(format!(
                "--vault-mount {spec:?} is not a mount path (like secret or secret:1)"
            )));
        }
        Ok(Mount {
            path: path.to_string(),
            version,
        })
    }
}

/// Settings the binary passes in.
///
/// `Debug` never shows the token or the secret id.
#[derive(Clone, Debug, Default)]
pub struct VaultConfig {
    /// Vault's address (`https://vault:8200`; `host:port` means https).
    /// `None` means [`DEFAULT_NODE`].
    pub node: Option<String>,
    /// How to log in; `None` is a configuration error at start.
    pub auth: Option<Auth>,
    /// `--vault-mount`: KV mounts and their versions. Keys under a declared
    /// mount skip the version lookup; with none declared, the first segment
    /// of each key prefix is its mount and its version is asked of Vault.
    pub mounts: Vec<Mount>,
    /// CA certificate(s) (PEM) Vault's certificate must chain to; when
    /// given, only these are trusted.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub key_file: Option<PathBuf>,
    /// Seconds between polls of a watch (`--interval`); 0 means 1.
    pub interval: u64,
}

/// Timeouts and retry pacing. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Limit on opening a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit on one request.
    pub request_timeout: Duration,
    /// First delay of the watch's backoff after a failure; doubles each time.
    pub backoff_start: Duration,
    /// Longest delay between retries.
    pub backoff_cap: Duration,
    /// Overrides `VaultConfig::interval` when set (tests poll in milliseconds).
    pub poll_interval: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            backoff_start: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(10),
            poll_interval: None,
        }
    }
}

/// The checked configuration and a ready HTTP client.
pub(crate) struct Resolved {
    /// Base URL without a trailing `/`.
    pub base: String,
    pub auth: Auth,
    pub mounts: Vec<Mount>,
    pub http: reqwest::Client,
    pub timing: Timing,
    pub interval: Duration,
}

impl Resolved {
    /// Checks `config`, reads its PEM files and builds the HTTP client.
    pub fn new(config: &VaultConfig, timing: Timing) -> Result<Resolved, BackendError> {
        let node = config
            .node
            .as_deref()
            .map(|n| n.trim().trim_end_matches('/'))
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NODE);
        let base = if node.contains("://") {
            node.to_string()
        } else {
            format!("https://{node}")
        };
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| config_error(format!("--node {node:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "--node {node:?}: the scheme must be http or https"
            )));
        }
        if parsed.host_str().is_none() {
            return Err(config_error(format!("--node {node:?} has no host")));
        }
        if parsed.path() != "/" && !parsed.path().is_empty() {
            return Err(config_error(format!(
                "--node {node:?}: give Vault's address only (https://host:8200), without a path"
            )));
        }

        let auth = config.auth.clone().ok_or_else(|| {
            config_error(
                "no way to log in: give --vault-token (or VAULT_TOKEN), --vault-role-id and \
                 --vault-secret-id (AppRole), or --vault-k8s-role (Kubernetes service account)"
                    .to_string(),
            )
        })?;
        check_auth(&auth)?;

        let mut mounts = config.mounts.clone();
        mounts.sort();
        mounts.dedup();
        for pair in mounts.windows(2) {
            if let [a, b] = pair {
                if a.path == b.path {
                    return Err(config_error(format!(
                        "--vault-mount {} is given as both KV version {} and {}",
                        a.path, a.version, b.version
                    )));
                }
            }
        }

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(timing.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Some(Duration::from_secs(90)))
            .http1_only()
            .no_proxy();
        let tls = TlsFiles::read(
            NAME,
            config.ca_file.as_deref(),
            config.cert_file.as_deref(),
            config.key_file.as_deref(),
        )?;
        builder = tls.apply_to(NAME, builder)?;
        let http = builder
            .build()
            .map_err(|e| config_error(format!("cannot set up the HTTP client: {e}")))?;
        let interval = timing
            .poll_interval
            .unwrap_or(Duration::from_secs(config.interval.max(1)));
        Ok(Resolved {
            base,
            auth,
            mounts,
            http,
            timing,
            interval,
        })
    }
}

fn check_auth(auth: &Auth) -> Result<(), BackendError> {
    let header_safe = |s: &str| s.bytes().all(|b| (0x21..0x7f).contains(&b));
    match auth {
        Auth::Token(token) => {
            if token.is_empty() {
                return Err(config_error(
                    "--vault-token (VAULT_TOKEN) is empty".to_string(),
                ));
            }
            if !header_safe(token) {
                // Never echo the token: it may be a real secret with one typo.
                return Err(config_error(
                    "the token (--vault-token / VAULT_TOKEN) holds characters that cannot be \
                     sent in an HTTP header (a trailing newline?)"
                        .to_string(),
                ));
            }
        }
        Auth::AppRole {
            role_id,
            secret_id,
            mount,
        } => {
            if role_id.trim().is_empty() {
                return Err(config_error("--vault-role-id is empty".to_string()));
            }
            if secret_id.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(config_error("--vault-secret-id is empty".to_string()));
            }
            check_auth_mount(mount)?;
        }
        Auth::Kubernetes { role, mount, .. } => {
            if role.trim().is_empty() {
                return Err(config_error("--vault-k8s-role is empty".to_string()));
            }
            check_auth_mount(mount)?;
        }
    }
    Ok(())
}

fn check_auth_mount(mount: &str) -> Result<(), BackendError> {
    if mount.trim_matches('/').is_empty() {
        return Err(config_error("--vault-auth-mount is empty".to_string()));
    }
    Ok(())
}

pub(crate) fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Option<Auth> {
        Some(Auth::Token("s.abc".into()))
    }

    fn resolve(node: Option<&str>) -> Result<Resolved, BackendError> {
        Resolved::new(
            &VaultConfig {
                node: node.map(str::to_string),
                auth: token(),
                ..VaultConfig::default()
            },
            Timing::default(),
        )
    }

    #[test]
    fn nodes_get_a_scheme_and_lose_the_slash() {
        assert_eq!(resolve(None).unwrap().base, DEFAULT_NODE);
        assert_eq!(
            resolve(Some("vault:8200")).unwrap().base,
            "https://vault:8200"
        );
        assert_eq!(
            resolve(Some("http://127.0.0.1:8200/")).unwrap().base,
            "http://127.0.0.1:8200"
        );
        let err = resolve(Some("ftp://x")).err().unwrap().to_string();
        assert!(err.contains("http or https"), "{err}");
        let err = resolve(Some("http://x:8200/v1")).err().unwrap().to_string();
        assert!(err.contains("without a path"), "{err}");
    }

    #[test]
    fn mounts_parse_with_a_version() {
        assert_eq!(
            Mount::parse("secret").unwrap(),
            Mount {
                path: "secret".into(),
                version: 2
            }
        );
        assert_eq!(Mount::parse("/kv/team/:1").unwrap().path, "kv/team");
        assert_eq!(Mount::parse("kv:1").unwrap().version, 1);
        for bad in ["", "kv:3", "a//b", "../x"] {
            assert!(Mount::parse(bad).is_err(), "{bad}");
        }
        let err = Resolved::new(
            &VaultConfig {
                auth: token(),
                mounts: vec![Mount::parse("kv:1").unwrap(), Mount::parse("kv").unwrap()],
                ..VaultConfig::default()
            },
            Timing::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("both KV version"), "{err}");
    }

    #[test]
    fn auth_is_required_checked_and_never_shown() {
        let err = Resolved::new(&VaultConfig::default(), Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--vault-token"), "{err}");
        let config = VaultConfig {
            auth: Some(Auth::Token("hvs.s3cr3t\n".into())),
            ..VaultConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let err = Resolved::new(&config, Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            !err.contains("s3cr3t") && err.contains("HTTP header"),
            "{err}"
        );
        let approle = Auth::AppRole {
            role_id: "r".into(),
            secret_id: Some("sid-s3cr3t".into()),
            mount: "approle".into(),
        };
        assert!(!format!("{approle:?}").contains("sid-s3cr3t"));
    }

    #[test]
    fn tls_files_are_checked() {
        let c = VaultConfig {
            auth: token(),
            cert_file: Some("/nonexistent/cert.pem".into()),
            ..VaultConfig::default()
        };
        let err = Resolved::new(&c, Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--client-key"), "{err}");
        let c = VaultConfig {
            auth: token(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..VaultConfig::default()
        };
        let err = Resolved::new(&c, Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}

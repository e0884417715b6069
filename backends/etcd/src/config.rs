//! What the etcd backend is told (endpoints, credentials, TLS files) and the
//! timings it runs with, checked once at start so that a typo fails before any
//! connection is tried.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use sidekick_backend::tls::TlsFiles;
use sidekick_backend::BackendError;

use crate::NAME;

/// The endpoint used when none is given, as in confd (https when TLS files are given).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Largest gRPC message accepted from etcd: a ranged read of a big prefix
/// arrives as one message, and tonic's default (4 MiB) is too small for that.
pub(crate) const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// How to reach etcd: `--node`, `--username`/`--password`, `--client-cert`,
/// `--client-key`, `--client-ca-keys`.
///
/// `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct EtcdConfig {
    /// Endpoints of one cluster: `http://host:port`, `https://host:port` or
    /// `host:port` (http, or https when TLS files are given). Empty means
    /// [`DEFAULT_ENDPOINT`].
    pub endpoints: Vec<String>,
    /// User for etcd's authentication.
    pub username: Option<String>,
    /// Password of `username`. Never logged.
    pub password: Option<String>,
    /// Client certificate (PEM), for etcd's `--client-cert-auth`.
    pub client_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub client_key: Option<PathBuf>,
    /// CA certificates (PEM) that etcd's server certificate must chain to.
    pub client_ca_keys: Option<PathBuf>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("client_ca_keys", &self.client_ca_keys)
            .finish()
    }
}

/// Timeouts and retry pacing. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Limit on opening a TCP (and TLS) connection to one endpoint; a new
    /// client must also have its first answer within this plus one second, so
    /// that `--onetime` against a dead or silent etcd fails within seconds.
    pub connect_timeout: Duration,
    /// Limit on one request (authenticate, a ranged read, opening the watch).
    pub request_timeout: Duration,
    /// First delay before reconnecting after a failure; doubles each time.
    pub backoff_start: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_cap: Duration,
    /// HTTP/2 ping interval on the connection, to notice a silently dead peer.
    pub keep_alive: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// The checked configuration: endpoints with their scheme, TLS material read.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub endpoints: Vec<String>,
    /// `endpoints` joined with `,`, for logs and errors.
    pub label: String,
    pub user: Option<(String, String)>,
    pub tls: Option<TlsOptions>,
    pub timing: Timing,
}

impl Resolved {
    /// Checks `config` and reads its PEM files.
    pub fn new(config: &EtcdConfig, timing: Timing) -> Result<Resolved, BackendError> {
        let mut endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                let e = e.trim();
                // One trailing slash is harmless (`http://h:2379/`).
                match e.strip_suffix('/') {
                    Some(stripped) if !stripped.ends_with('/') => stripped.to_string(),
                    _ => e.to_string(),
                }
            })
            .filter(|e| !e.is_empty())
            .collect();

        let has_tls_files = config.client_cert.is_some()
            || config.client_key.is_some()
            || config.client_ca_keys.is_some();
        let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
        let use_tls = has_tls_files || any_https;
        if endpoints.is_empty() {
            let default = match use_tls {
                true => DEFAULT_ENDPOINT.replacen("http://", "https://", 1),
                false => DEFAULT_ENDPOINT.to_string(),
            };
            endpoints.push(default);
        }
        for endpoint in endpoints.iter_mut() {
            check_endpoint(endpoint, use_tls)?;
            if !endpoint.contains("://") {
                let scheme = if use_tls { "https" } else { "http" };
                *endpoint = format!("{scheme}://{endpoint}");
            }
        }

        let tls = if use_tls {
            Some(tls_options(config, &endpoints)?)
        } else {
            None
        };

        let user = match (&config.username, &config.password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                Some((user.clone(), password.clone()))
            }
            (Some(user), None) if !user.is_empty() => {
                return Err(config_error(format!(
                    "--username {user} needs a password (--password or SIDEKICK_ETCD_PASSWORD)"
                )))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "a password was given without --username".to_string(),
                ))
            }
            _ => None,
        };

        Ok(Resolved {
            label: endpoints.join(","),
            endpoints,
            user,
            tls,
            timing,
        })
    }

    /// Options for `etcd_client::Client::connect`.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timing.connect_timeout)
            .with_keep_alive(self.timing.keep_alive, self.timing.connect_timeout * 5)
            .with_keep_alive_while_idle(false)
            // A member cut off from its cluster's leader refuses requests and
            // ends watches, so the client moves on instead of going stale.
            .with_require_leader(true);
        if let Some((user, password)) = &self.user {
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        options
    }

    /// The user name, for error messages.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_ref().map(|(u, _)| u.as_str())
    }
}

fn check_endpoint(endpoint: &str, use_tls: bool) -> Result<(), BackendError> {
    let rest = match endpoint.split_once("://") {
        Some(("http", _)) if use_tls => {
            return Err(config_error(format!(
                "endpoint {endpoint} is plain http but TLS is in use (https endpoints or \
                 --client-cert/--client-key/--client-ca-keys); write it as https://"
            )))
        }
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(config_error(format!(
                "endpoint {endpoint}: unsupported scheme {scheme:?} (use http:// or https://)"
            )))
        }
        None => endpoint,
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(config_error(format!(
            "endpoint {endpoint} is not of the form http://host:port"
        )));
    }
    Ok(())
}

fn tls_options(config: &EtcdConfig, endpoints: &[String]) -> Result<TlsOptions, BackendError> {
    let files = TlsFiles::read(
        NAME,
        config.client_ca_keys.as_deref(),
        config.client_cert.as_deref(),
        config.client_key.as_deref(),
    )?;
    // Built without a system trust store (no OpenSSL, no native roots):
    // etcd's certificate can only be checked against a given CA.
    let Some(ca) = files.ca else {
        return Err(config_error(format!(
            "TLS to {} needs --client-ca-keys (the CA that signed etcd's certificate)",
            endpoints.join(",")
        )));
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = files.client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

pub(crate) fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: EtcdConfig) -> Result<Resolved, BackendError> {
        Resolved::new(&config, Timing::default())
    }

    #[test]
    fn default_endpoint_and_scheme() {
        let r = resolve(EtcdConfig::default()).unwrap();
        assert_eq!(r.endpoints, [DEFAULT_ENDPOINT]);
        let r = resolve(EtcdConfig {
            endpoints: vec!["10.0.0.1:2379".into(), "http://10.0.0.2:2379/".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            r.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(r.label, "http://10.0.0.1:2379,http://10.0.0.2:2379");
        assert!(r.tls.is_none());
    }

    #[test]
    fn bad_endpoints_are_config_errors() {
        for bad in ["ftp://x:1", "http://x:1/v3", "http://"] {
            let err = resolve(EtcdConfig {
                endpoints: vec![bad.into()],
                ..Default::default()
            })
            .err()
            .unwrap();
            assert!(matches!(err, BackendError::Config { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn https_needs_a_ca() {
        let err = resolve(EtcdConfig {
            endpoints: vec!["https://e:2379".into()],
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("--client-ca-keys"), "{err}");
    }

    #[test]
    fn tls_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let not_pem = dir.path().join("x.pem");
        std::fs::write(&not_pem, "hello").unwrap();

        // A CA makes plain host:port endpoints https.
        let r = resolve(EtcdConfig {
            endpoints: vec!["e:2379".into()],
            client_ca_keys: Some(ca.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.endpoints, ["https://e:2379"]);
        assert!(r.tls.is_some());

        // ...and an explicit http:// one is refused.
        let err = resolve(EtcdConfig {
            endpoints: vec!["http://e:2379".into()],
            client_ca_keys: Some(ca.clone()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("https://"), "{err}");

        let err = resolve(EtcdConfig {
            client_ca_keys: Some(not_pem.clone()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("not a PEM file"), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = resolve(EtcdConfig {
            client_ca_keys: Some(missing.clone()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = resolve(EtcdConfig {
            client_ca_keys: Some(ca),
            client_cert: Some(not_pem),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("--client-key"), "{err}");
    }

    #[test]
    fn credentials_pair_up_and_stay_secret() {
        let config = EtcdConfig {
            username: Some("app".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        let r = resolve(config).unwrap();
        assert_eq!(r.user_name(), Some("app"));

        let err = resolve(EtcdConfig {
            username: Some("app".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("needs a password"), "{err}");
        let err = resolve(EtcdConfig {
            password: Some("x".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("without --username"), "{err}");
    }
}

//! What the ZooKeeper backend is told (servers, digest credentials) and the
//! timings it runs with, checked once at start so that a typo fails before
//! any connection is tried.

use std::fmt;
use std::time::Duration;

use sidekick_backend::BackendError;

use crate::NAME;

/// The server used when none is given, as in confd.
pub const DEFAULT_NODE: &str = "127.0.0.1:2181";

/// ZooKeeper's client port, for a `--node` given without one.
const DEFAULT_PORT: u16 = 2181;

/// How to reach ZooKeeper: `--node` (repeatable), `--username`/`--password`
/// (digest authentication).
///
/// `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct ZookeeperConfig {
    /// Servers of one ensemble, `host:port` (or `host`, port 2181). Empty
    /// means [`DEFAULT_NODE`].
    pub nodes: Vec<String>,
    /// User for ZooKeeper's `digest` authentication scheme.
    pub username: Option<String>,
    /// Password of `username`. Never logged.
    pub password: Option<String>,
}

impl fmt::Debug for ZookeeperConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZookeeperConfig")
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Timeouts and retry pacing. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Session timeout asked of the server (it clamps it to its own
    /// `minSessionTimeout`..`maxSessionTimeout`). A session is kept across a
    /// short network blip by the client library, but sidekick starts a new one
    /// (and reads everything again) after any lost connection.
    pub session_timeout: Duration,
    /// Limit on establishing a session (TCP connect and handshake), so that
    /// `--onetime` against a dead or silent server fails within seconds.
    pub connect_timeout: Duration,
    /// How long an established connection may go without an answer before
    /// it is given up (the client library's connection timeout). The library
    /// wakes every eighth of it and pings once three eighths pass without a
    /// request, so it sets what an idle session costs: 12 s is a wake-up every
    /// 1.5 s and a ping every 6 s.
    pub liveness_timeout: Duration,
    /// Limit on one read of a whole prefix (all its znodes).
    pub request_timeout: Duration,
    /// First delay before reconnecting after a failure; doubles each time.
    pub backoff_start: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_cap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            session_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(3),
            liveness_timeout: Duration::from_secs(12),
            request_timeout: Duration::from_secs(30),
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
        }
    }
}

/// The checked configuration.
#[derive(Clone)]
pub(crate) struct Resolved {
    /// `host:port` of each server.
    pub nodes: Vec<String>,
    /// The nodes joined with `,`: ZooKeeper's connect string, and the label
    /// of logs and errors.
    pub label: String,
    /// `(user, password)` for the `digest` scheme.
    pub user: Option<(String, String)>,
    pub timing: Timing,
}

impl Resolved {
    /// Checks `config`.
    pub fn new(config: &ZookeeperConfig, timing: Timing) -> Result<Resolved, BackendError> {
        let mut nodes = Vec::new();
        for node in config.nodes.iter().flat_map(|n| n.split(',')) {
            let node = node.trim();
            if node.is_empty() {
                continue;
            }
            nodes.push(check_node(node)?);
        }
        if nodes.is_empty() {
            nodes.push(DEFAULT_NODE.to_string());
        }
        let user = match (&config.username, &config.password) {
            (Some(user), Some(password)) if !user.is_empty() => {
                if user.contains(':') {
                    return Err(config_error(format!(
                        "--username {user:?}: a ZooKeeper digest user name cannot contain ':'"
                    )));
                }
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
            label: nodes.join(","),
            nodes,
            user,
            timing,
        })
    }

    /// The user name, for error messages.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_ref().map(|(u, _)| u.as_str())
    }
}

/// `host:port` from a `--node`: an optional `zk://` or `tcp://` scheme is
/// dropped, a missing port is 2181; anything else (a path, which ZooKeeper
/// would read as a chroot, or another scheme) is refused.
fn check_node(node: &str) -> Result<String, BackendError> {
    let rest = match node.split_once("://") {
        Some(("zk" | "tcp" | "zookeeper", rest)) => rest,
        Some((scheme, _)) => {
            return Err(config_error(format!(
            "--node {node}: unsupported scheme {scheme:?} (write host:port; TLS is not supported)"
        )))
        }
        None => node,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return Err(config_error(format!(
            "--node {node} is not of the form host:port (a chroot path is not supported: use --prefix)"
        )));
    }
    // `[v6]:port`, `host:port`, `host`, `v6` (several colons, no brackets).
    let has_port = match rest.rsplit_once(':') {
        Some((host, port)) if rest.starts_with('[') == host.ends_with(']') => {
            if port.parse::<u16>().is_err() || host.is_empty() {
                return Err(config_error(format!(
                    "--node {node}: {port:?} is not a port number"
                )));
            }
            !host.contains(':') || host.starts_with('[')
        }
        _ => false,
    };
    if has_port {
        Ok(rest.to_string())
    } else if rest.contains(':') && !rest.starts_with('[') {
        Ok(format!("[{rest}]:{DEFAULT_PORT}"))
    } else {
        Ok(format!("{rest}:{DEFAULT_PORT}"))
    }
}

pub(crate) fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: ZookeeperConfig) -> Result<Resolved, BackendError> {
        Resolved::new(&config, Timing::default())
    }

    fn nodes(list: &[&str]) -> ZookeeperConfig {
        ZookeeperConfig {
            nodes: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn nodes_default_and_normalize() {
        assert_eq!(resolve(nodes(&[])).unwrap().nodes, [DEFAULT_NODE]);
        let r = resolve(nodes(&["zk1", "zk://zk2:2182/", "10.0.0.1:2181,10.0.0.2"])).unwrap();
        assert_eq!(
            r.nodes,
            ["zk1:2181", "zk2:2182", "10.0.0.1:2181", "10.0.0.2:2181"]
        );
        assert_eq!(r.label, "zk1:2181,zk2:2182,10.0.0.1:2181,10.0.0.2:2181");
        let r = resolve(nodes(&["[::1]:2181", "::1"])).unwrap();
        assert_eq!(r.nodes, ["[::1]:2181", "[::1]:2181"]);
    }

    #[test]
    fn bad_nodes_are_config_errors() {
        for bad in ["http://zk:2181", "zk:2181/app", "zk:port", "zk://", ":2181"] {
            let err = resolve(nodes(&[bad])).err().unwrap();
            assert!(matches!(err, BackendError::Config { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn credentials_pair_up_and_stay_secret() {
        let config = ZookeeperConfig {
            username: Some("app".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(resolve(config).unwrap().user_name(), Some("app"));
        for (user, password, says) in [
            (Some("app"), None, "needs a password"),
            (None, Some("x"), "without --username"),
            (Some("a:b"), Some("x"), "cannot contain ':'"),
        ] {
            let err = resolve(ZookeeperConfig {
                username: user.map(Into::into),
                password: password.map(Into::into),
                ..Default::default()
            })
            .err()
            .unwrap();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}

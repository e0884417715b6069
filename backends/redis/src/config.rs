//! What the Redis backend is told (`--node`, `--username`/`--password`,
//! `--database`, TLS files, `--redis-notify-config`) and the timings it runs
//! with, checked once at start so that a typo fails before any connection is
//! tried.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use sidekick_backend::tls::TlsFiles;
use sidekick_backend::BackendError;

use crate::NAME;

/// The node used when none is given.
pub const DEFAULT_NODE: &str = "redis://127.0.0.1:6379";

/// How to reach Redis.
///
/// `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct RedisConfig {
    /// Nodes, tried in turn (as confd does): `redis://host:port`,
    /// `rediss://host:port` (TLS), confd's `host:port` and `host:port/DB`,
    /// or the path of a Unix socket. An optional `/DB` picks the database.
    /// Empty means [`DEFAULT_NODE`].
    pub nodes: Vec<String>,
    /// ACL user (Redis 6+); without it the password is the `default` user's.
    pub username: Option<String>,
    /// Password for `AUTH`. Never logged.
    pub password: Option<String>,
    /// Database number (`SELECT`); `None`: the node's `/DB`, else 0.
    pub database: Option<i64>,
    /// Let sidekick turn on the keyspace notifications it needs
    /// (`CONFIG SET notify-keyspace-events`) when they are off.
    pub notify_config: bool,
    /// How often to read everything when keyspace notifications are off
    /// (sidekick's `--interval`).
    pub poll_interval: Duration,
    /// CA certificates (PEM) the server certificate must chain to; without
    /// it, `rediss://` uses the system's trust store.
    pub client_ca_keys: Option<PathBuf>,
    /// Client certificate (PEM), for servers with `tls-auth-clients yes`.
    pub client_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub client_key: Option<PathBuf>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A node may carry a password (`redis://:pw@host`): show labels only.
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| parse_node(n).map_or_else(|_| "<unparsable>".into(), |p| p.label(0)))
            .collect();
        f.debug_struct("RedisConfig")
            .field("nodes", &nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("notify_config", &self.notify_config)
            .field("poll_interval", &self.poll_interval)
            .field("client_ca_keys", &self.client_ca_keys)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish()
    }
}

/// Timeouts and retry pacing. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Limit on opening a connection (TCP, TLS, `AUTH`, `SELECT`).
    pub connect_timeout: Duration,
    /// Limit on one request (a `SCAN` page, a pipeline of reads).
    pub request_timeout: Duration,
    /// First delay before reconnecting after a failure; doubles each time.
    pub backoff_start: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_cap: Duration,
    /// How often an idle watch pings its subscription connection, to notice a
    /// silently dead server.
    pub ping_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            backoff_start: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
        }
    }
}

/// One node as written, split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedNode {
    pub tls: bool,
    /// Host and port, or `None` for a Unix socket.
    pub host_port: Option<(String, u16)>,
    pub socket: Option<PathBuf>,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl ParsedNode {
    /// The node for logs and errors: scheme, host, port and database, no
    /// credentials.
    pub fn label(&self, db: i64) -> String {
        let base = match (&self.host_port, &self.socket) {
            (Some((host, port)), _) => {
                let scheme = if self.tls { "rediss" } else { "redis" };
                match host.contains(':') {
                    true => format!("{scheme}://[{host}]:{port}"),
                    false => format!("{scheme}://{host}:{port}"),
                }
            }
            (None, Some(path)) => format!("unix:{}", path.display()),
            (None, None) => "?".into(),
        };
        match db {
            0 => base,
            db => format!("{base}/{db}"),
        }
    }
}

/// Splits a node: `redis://[user[:password]@]host[:port][/db]`,
/// `rediss://...`, `host:port[/db]`, `unix:///path`, or `/path`.
pub(crate) fn parse_node(node: &str) -> Result<ParsedNode, String> {
    let node = node.trim();
    let mut parsed = ParsedNode {
        tls: false,
        host_port: None,
        socket: None,
        db: None,
        username: None,
        password: None,
    };
    let rest = match node.split_once("://") {
        Some(("redis", rest)) => rest,
        Some(("rediss", rest)) => {
            parsed.tls = true;
            rest
        }
        Some(("unix" | "redis+unix", path)) => {
            parsed.socket = Some(PathBuf::from(path));
            return Ok(parsed);
        }
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme {scheme:?} (use redis://, rediss:// or a socket path)"
            ))
        }
        None if node.starts_with('/') => {
            parsed.socket = Some(PathBuf::from(node));
            return Ok(parsed);
        }
        None => node,
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p.trim_end_matches('/'))),
        None => (rest, None),
    };
    let host_port = match authority.rsplit_once('@') {
        Some((credentials, host_port)) => {
            let (user, password) = match credentials.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (credentials, None),
            };
            parsed.username = (!user.is_empty()).then(|| user.to_string());
            parsed.password = password.filter(|p| !p.is_empty()).map(str::to_string);
            host_port
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed [ in the host".to_string())?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?,
        None => 6379,
    };
    parsed.host_port = Some((host.to_string(), port));
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        let db = path
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("database {path:?} is not a number (write /0, /1, ...)"))?;
        parsed.db = Some(db);
    }
    Ok(parsed)
}

/// One node, checked and ready to connect.
#[derive(Clone)]
pub(crate) struct Node {
    /// The client for this node (holds its address, credentials and TLS).
    pub client: redis::Client,
    /// The node for logs and errors, without credentials.
    pub label: String,
    /// The database it selects.
    pub db: i64,
}

/// The checked configuration.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub nodes: Vec<Node>,
    /// The nodes' labels joined with `,`.
    pub label: String,
    /// The ACL user, for error messages.
    pub username: Option<String>,
    /// Whether a password is used, for error messages.
    pub has_password: bool,
    pub notify_config: bool,
    pub poll_interval: Duration,
    pub timing: Timing,
}

impl Resolved {
    /// Checks `config` and reads its PEM files.
    pub fn new(config: &RedisConfig, timing: Timing) -> Result<Resolved, BackendError> {
        let mut given: Vec<&str> = config
            .nodes
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if given.is_empty() {
            given.push(DEFAULT_NODE);
        }
        let has_tls_files = config.client_ca_keys.is_some()
            || config.client_cert.is_some()
            || config.client_key.is_some();
        let tls_files = match has_tls_files {
            true => Some(TlsFiles::read(
                NAME,
                config.client_ca_keys.as_deref(),
                config.client_cert.as_deref(),
                config.client_key.as_deref(),
            )?),
            false => None,
        };
        if let Some(db) = config.database {
            if db < 0 {
                return Err(config_error(format!(
                    "--database {db}: a database is a number from 0"
                )));
            }
        }
        let mut nodes = Vec::with_capacity(given.len());
        let mut username_used = None;
        let mut any_password = false;
        for text in given {
            let parsed = parse_node(text).map_err(|e| {
                // The text may carry a password: name the node by position.
                let shown = parse_node_label_safe(text);
                config_error(format!("node {shown}: {e}"))
            })?;
            let db = match (parsed.db, config.database) {
                (Some(a), Some(b)) if a != b => {
                    return Err(config_error(format!(
                        "node {} selects database {a} but --database is {b}",
                        parsed.label(0)
                    )))
                }
                (Some(db), _) | (None, Some(db)) => db,
                (None, None) => 0,
            };
            let label = parsed.label(db);
            let username = parsed.username.clone().or_else(|| config.username.clone());
            let password = parsed.password.clone().or_else(|| config.password.clone());
            if username.is_some() && password.is_none() {
                return Err(config_error(format!(
                    "{label}: user {} needs a password (--password)",
                    username.as_deref().unwrap_or("")
                )));
            }
            any_password |= password.is_some();
            if username.is_some() {
                username_used = username.clone();
            }
            let addr = match (&parsed.host_port, &parsed.socket) {
                (Some((host, port)), _) if parsed.tls => ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                },
                (Some((host, port)), _) => ConnectionAddr::Tcp(host.clone(), *port),
                (None, Some(path)) => ConnectionAddr::Unix(path.clone()),
                (None, None) => return Err(config_error(format!("node {label}: no address"))),
            };
            if tls_files.is_some() && !parsed.tls {
                return Err(config_error(format!(
                    "node {label} is not TLS but TLS files are given \
                     (--client-ca-keys/--client-cert/--client-key); write it as rediss://"
                )));
            }
            let mut redis_info = RedisConnectionInfo::default().set_db(db);
            if let Some(user) = &username {
                redis_info = redis_info.set_username(user);
            }
            if let Some(password) = &password {
                redis_info = redis_info.set_password(password);
            }
            let info = addr
                .into_connection_info()
                .map_err(|e| config_error(format!("node {label}: {e}")))?
                .set_redis_settings(redis_info);
            let client = match (&tls_files, parsed.tls) {
                (Some(files), true) => redis::Client::build_with_tls(info, certificates(files)),
                _ => redis::Client::open(info),
            }
            .map_err(|e| config_error(format!("cannot set up a client for {label}: {e}")))?;
            nodes.push(Node { client, label, db });
        }
        Ok(Resolved {
            label: nodes
                .iter()
                .map(|n| n.label.as_str())
                .collect::<Vec<_>>()
                .join(","),
            nodes,
            username: username_used,
            has_password: any_password,
            notify_config: config.notify_config,
            poll_interval: config.poll_interval.max(Duration::from_secs(1)),
            timing,
        })
    }
}

/// A node that does not parse, named without what could be a password.
fn parse_node_label_safe(text: &str) -> String {
    match text.rsplit_once('@') {
        Some((before, after)) => {
            let scheme = before.split_once("://").map_or("", |(s, _)| s);
            match scheme {
                "" => format!("{after:?} (credentials not shown)"),
                s => format!("\"{s}://{after}\" (credentials not shown)"),
            }
        }
        None => format!("{text:?}"),
    }
}

/// The certificates of `rediss://`, as redis-rs takes them.
fn certificates(files: &TlsFiles) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: files
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: files.ca.clone(),
    }
}

pub(crate) fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: RedisConfig) -> Result<Resolved, BackendError> {
        Resolved::new(&config, Timing::default())
    }

    #[test]
    fn nodes_in_every_form_confd_and_redis_write() {
        let p = parse_node("redis://127.0.0.1:6380").unwrap();
        assert_eq!(p.host_port, Some(("127.0.0.1".into(), 6380)));
        assert!(!p.tls);
        assert_eq!(p.db, None);
        let p = parse_node("rediss://cache.example:6390/3").unwrap();
        assert!(p.tls);
        assert_eq!(p.db, Some(3));
        assert_eq!(p.label(3), "rediss://cache.example:6390/3");
        // confd's form: host:port, with an optional /DB.
        let p = parse_node("10.0.0.1:6379/2").unwrap();
        assert_eq!(p.host_port, Some(("10.0.0.1".into(), 6379)));
        assert_eq!(p.db, Some(2));
        assert_eq!(parse_node("cache").unwrap().label(0), "redis://cache:6379");
        let p = parse_node("redis://[::1]:7000").unwrap();
        assert_eq!(p.label(0), "redis://[::1]:7000");
        let p = parse_node("/run/redis.sock").unwrap();
        assert_eq!(p.label(1), "unix:/run/redis.sock/1");
        let p = parse_node("redis://app:s3cret@h:1/0").unwrap();
        assert_eq!(p.username.as_deref(), Some("app"));
        assert_eq!(p.password.as_deref(), Some("s3cret"));
        assert!(!p.label(0).contains("s3cret"));
        let p = parse_node("redis://:s3cret@h").unwrap();
        assert_eq!(p.username, None);
        assert_eq!(p.password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_nodes_are_config_errors_without_the_password() {
        for bad in [
            "http://h:1",
            "redis://h:port",
            "redis://h:1/db",
            "redis://:1",
            "redis://:pw@h:x",
        ] {
            let err = resolve(RedisConfig {
                nodes: vec![bad.into()],
                ..Default::default()
            })
            .err()
            .unwrap();
            assert!(matches!(err, BackendError::Config { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn the_database_comes_from_the_node_or_the_flag_and_they_must_agree() {
        let r = resolve(RedisConfig {
            nodes: vec!["redis://h:1/4".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.nodes[0].db, 4);
        let r = resolve(RedisConfig {
            nodes: vec!["redis://h:1".into()],
            database: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.nodes[0].db, 2);
        assert_eq!(r.label, "redis://h:1/2");
        let err = resolve(RedisConfig {
            nodes: vec!["redis://h:1/4".into()],
            database: Some(2),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("--database is 2"), "{err}");
        let r = resolve(RedisConfig::default()).unwrap();
        assert_eq!(r.label, DEFAULT_NODE);
    }

    #[test]
    fn credentials_stay_secret() {
        let config = RedisConfig {
            nodes: vec!["redis://:inurl@h:1".into()],
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("inurl"),
            "{shown}"
        );
        let r = resolve(config).unwrap();
        assert!(r.has_password);
        assert!(!r.label.contains("inurl"));
        let err = resolve(RedisConfig {
            username: Some("app".into()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("needs a password"), "{err}");
    }

    #[test]
    fn tls_files_are_checked_and_need_rediss() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = resolve(RedisConfig {
            nodes: vec!["redis://h:1".into()],
            client_ca_keys: Some(ca.clone()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("rediss://"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = resolve(RedisConfig {
            nodes: vec!["rediss://h:1".into()],
            client_ca_keys: Some(missing),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = resolve(RedisConfig {
            nodes: vec!["rediss://h:1".into()],
            client_cert: Some(ca),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("--client-key"), "{err}");
    }
}

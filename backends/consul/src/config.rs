//! What the Consul backend is told (agent addresses, ACL token, datacenter,
//! TLS files) and the timings it runs with, checked once at start so that a
//! typo fails before any request is made.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use sidekick_backend::tls::TlsFiles;
use sidekick_backend::BackendError;

use crate::NAME;

/// The agent used when no `--node` is given, as in confd (https when TLS
/// files are given).
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8500";

/// Header carrying the ACL token on every request.
pub(crate) const TOKEN_HEADER: &str = "X-Consul-Token";

/// Settings the binary passes in (`--node`, `--auth-token`, `--datacenter`,
/// `--client-ca-keys`, `--client-cert`, `--client-key`).
///
/// `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct ConsulConfig {
    /// Agent addresses (`http://127.0.0.1:8500`, `https://host:8501`, or
    /// `host:port`, which means http, or https when TLS files are given). The
    /// first that answers is used; a request that cannot connect tries the
    /// next. Empty means [`DEFAULT_NODE`].
    pub nodes: Vec<String>,
    /// ACL token, sent as `X-Consul-Token`; never logged.
    pub token: Option<String>,
    /// Datacenter to query (`?dc=`); the agent's own when unset.
    pub datacenter: Option<String>,
    /// CA certificate(s) (PEM) the agent's certificate must chain to. When
    /// given, only these are trusted (not the built-in web roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (`verify_incoming`).
    pub cert_file: Option<PathBuf>,
    /// Key of the client certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("nodes", &self.nodes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.datacenter)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// Timeouts, blocking-query length, re-query pacing and retry delays. The
/// defaults follow Consul's guidance for blocking queries; tests and
/// benchmarks shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Limit on opening a TCP (and TLS) connection to an agent, so that a
    /// load against a dead agent fails within seconds.
    pub connect_timeout: Duration,
    /// Limit on one request that does not block (the first read of each
    /// prefix or service).
    pub request_timeout: Duration,
    /// `wait` of each blocking query: how long the agent may hold it when
    /// nothing changes (Consul's default is 5 minutes, its maximum 10).
    pub wait: Duration,
    /// Refill interval of each query's token bucket: in the long run a query
    /// is re-sent at most once per interval (50 per second by default, so
    /// changes 20 ms apart each arrive on their own), and a key changing
    /// faster degrades into polling at that rate, the changes in between
    /// arriving as one batch. An idle watch sends nothing but its long polls.
    pub requery_interval: Duration,
    /// Size of each query's token bucket: how many re-queries may go out at
    /// once, with no wait, before [`Timing::requery_interval`] paces them.
    /// A few changes in quick succession thus each arrive at once. At least 1.
    pub requery_burst: u32,
    /// Blocking queries ask for `stale` reads (any Consul server answers,
    /// not only the leader). An answer from a server that last heard from the
    /// leader longer ago than this (`X-Consul-LastContact`) is followed by one
    /// default (leader) read of the same query. `None`: no stale reads.
    pub max_stale: Option<Duration>,
    /// First delay of the watch's [`Backoff`](sidekick_backend::Backoff)
    /// after a failure; doubles each time.
    pub backoff_start: Duration,
    /// Longest delay between retries.
    pub backoff_cap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            wait: Duration::from_secs(5 * 60),
            requery_interval: Duration::from_millis(20),
            requery_burst: 5,
            max_stale: Some(Duration::from_secs(2)),
            backoff_start: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(3),
        }
    }
}

impl Timing {
    /// Client-side limit on a blocking query: the agent adds up to `wait/16`
    /// of jitter to `wait`, plus a margin for the answer itself.
    pub(crate) fn blocking_timeout(&self) -> Duration {
        self.wait + self.wait / 16 + self.request_timeout
    }
}

/// The checked configuration: agent base URLs and a ready HTTP client.
#[derive(Clone)]
pub(crate) struct Resolved {
    /// Base URLs without a trailing `/`.
    pub nodes: Vec<String>,
    /// The token, only to scrub it from agent messages; it is sent through the
    /// client's default headers.
    pub token: Option<String>,
    /// Datacenter (`?dc=`), trimmed; the client encodes it.
    pub dc: Option<String>,
    pub http: reqwest::Client,
    pub timing: Timing,
}

impl Resolved {
    /// Checks `config`, reads its PEM files and builds the HTTP client.
    pub fn new(config: &ConsulConfig, timing: Timing) -> Result<Resolved, BackendError> {
        let has_tls_files =
            config.ca_file.is_some() || config.cert_file.is_some() || config.key_file.is_some();
        let default_scheme = if has_tls_files { "https" } else { "http" };
        let mut nodes = Vec::new();
        for node in &config.nodes {
            let node = node.trim().trim_end_matches('/');
            if node.is_empty() {
                continue;
            }
            let url = if node.contains("://") {
                node.to_string()
            } else {
                format!("{default_scheme}://{node}")
            };
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| config_error(format!("--node {node:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(config_error(format!(
                    "--node {node:?}: the scheme must be http or https"
                )));
            }
            if parsed.host_str().is_none() {
                return Err(config_error(format!("--node {node:?} has no host")));
            }
            nodes.push(url);
        }
        if nodes.is_empty() {
            nodes.push(match has_tls_files {
                true => DEFAULT_NODE.replacen("http://", "https://", 1),
                false => DEFAULT_NODE.to_string(),
            });
        }

        let mut headers = HeaderMap::new();
        let token = config.token.clone().filter(|t| !t.is_empty());
        if let Some(token) = &token {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                // Never echo the token: it may be a real secret with one typo.
                config_error(
                    "the ACL token (--auth-token / SIDEKICK_CONSUL_TOKEN) holds characters \
                     that cannot be sent in an HTTP header"
                        .to_string(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }

        let dc = match config.datacenter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(dc) => Some(dc.to_string()),
        };

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .connect_timeout(timing.connect_timeout)
            .tcp_nodelay(true)
            // Notices an agent whose host vanished while a query blocks.
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .pool_idle_timeout(Some(Duration::from_secs(60)))
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
        Ok(Resolved {
            nodes,
            token,
            dc,
            http,
            timing,
        })
    }
}

fn config_error(message: String) -> BackendError {
    BackendError::config(NAME, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(nodes: &[&str]) -> Result<Resolved, BackendError> {
        Resolved::new(
            &ConsulConfig {
                nodes: nodes.iter().map(|s| s.to_string()).collect(),
                ..ConsulConfig::default()
            },
            Timing::default(),
        )
    }

    #[test]
    fn nodes_get_a_scheme_and_lose_the_slash() {
        let r = resolve(&["127.0.0.1:8500", "https://c:8501/", " "]).unwrap();
        assert_eq!(r.nodes, ["http://127.0.0.1:8500", "https://c:8501"]);
        assert_eq!(resolve(&[]).unwrap().nodes, [DEFAULT_NODE]);
        let err = resolve(&["ftp://x"]).err().unwrap().to_string();
        assert!(err.contains("http or https"), "{err}");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = ConsulConfig {
            token: Some("s3cr3t".into()),
            ..ConsulConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_token_is_not_echoed() {
        let c = ConsulConfig {
            token: Some("s3cr3t\n".into()),
            ..ConsulConfig::default()
        };
        let err = Resolved::new(&c, Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("ACL token"), "{err}");
    }

    #[test]
    fn tls_files_are_checked() {
        let c = ConsulConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            ..ConsulConfig::default()
        };
        let err = Resolved::new(&c, Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--client-key"), "{err}");
        let c = ConsulConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ConsulConfig::default()
        };
        let err = Resolved::new(&c, Timing::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}

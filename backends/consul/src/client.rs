//! The few Consul HTTP API calls the backend makes, over `reqwest`: a KV
//! prefix read (`/v1/kv/<prefix>?recurse`), the service list
//! (`/v1/catalog/services`) and a service's instances with their checks
//! (`/v1/health/service/<name>`), each optionally as a blocking query
//! (`index`, `wait`, optionally `stale`). Answers become key-tree entries
//! and [`ServiceInstance`]s here; HTTP failures become [`BackendError`]s that
//! name the agent and path (never the token). Paths and query values are
//! percent-encoded with the `percent-encoding` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::StatusCode;
use serde::Deserialize;
use sidekick_backend::http::transport_message;
use sidekick_backend::{is_under, normalize_key, BackendError, ServiceInstance};

use crate::config::Resolved;
use crate::NAME;

/// One thing the backend reads and watches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Target {
    /// Keys at or below a normalized key-tree prefix (`/myapp/db`).
    Kv(String),
    /// The names of all services.
    Services,
    /// The instances of one service, with their health.
    Health(String),
}

impl Target {
    /// The API path, percent-encoded, without query string.
    pub fn path(&self) -> String {
        match self {
            // Consul keys have no leading slash: `/myapp/db` is `myapp/db`,
            // and `/` (everything) is the empty key.
            Target::Kv(prefix) => format!(
                "/v1/kv/{}",
                utf8_percent_encode(prefix.trim_start_matches('/'), KEY_PATH)
            ),
            Target::Services => "/v1/catalog/services".to_string(),
            Target::Health(name) => {
                format!(
                    "/v1/health/service/{}",
                    utf8_percent_encode(name, COMPONENT)
                )
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// What a read returned, already converted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// Normalized key -> value, only keys under the prefix (segment-wise).
    Kv(BTreeMap<String, String>),
    /// Service names.
    Services(BTreeSet<String>),
    /// Every instance of the service, healthy or not.
    Health(Vec<ServiceInstance>),
}

/// One answer: the body and the `X-Consul-Index` that came with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    /// `X-Consul-Index` (0 when the header is missing or unreadable).
    pub index: u64,
    pub body: Body,
    /// The agent said ACLs hid part of the result
    /// (`X-Consul-Results-Filtered-By-ACLs: true`).
    pub filtered: bool,
    /// `X-Consul-LastContact`: how long before answering the server had
    /// last heard from the leader (0 from the leader itself), when sent.
    pub last_contact: Option<Duration>,
}

/// The agents and the HTTP client, shared by loads and watches.
pub(crate) struct Api {
    cfg: Resolved,
    /// Index into `cfg.nodes` of the agent that last answered.
    current: AtomicUsize,
}

impl Api {
    pub fn new(cfg: Resolved) -> Api {
        Api {
            cfg,
            current: AtomicUsize::new(0),
        }
    }

    /// The agent addresses, joined with `,` (for logs).
    pub fn label(&self) -> String {
        self.cfg.nodes.join(",")
    }

    /// Timings in use.
    pub fn timing(&self) -> &crate::Timing {
        &self.cfg.timing
    }

    /// Reads `target`. With `index > 0` this is a blocking query: the agent
    /// holds it until the result's index passes `index` or `wait` elapses.
    /// With `stale` any Consul server may answer, not only the leader.
    pub async fn read(
        &self,
        target: &Target,
        index: Option<u64>,
        stale: bool,
    ) -> Result<Answer, BackendError> {
        let path = target.path();
        let mut query: Vec<String> = Vec::new();
        if let Target::Kv(_) = target {
            query.push("recurse".into());
        }
        if let Some(dc) = &self.cfg.dc {
            query.push(format!("dc={}", utf8_percent_encode(dc, COMPONENT)));
        }
        if stale {
            query.push("stale".into());
        }
        let timing = &self.cfg.timing;
        let timeout = match index {
            Some(index) => {
                query.push(format!("index={index}"));
                query.push(format!("wait={}", go_duration(timing.wait)));
                timing.blocking_timeout()
            }
            None => timing.request_timeout,
        };
        let path_and_query = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", query.join("&"))
        };

        // The agent that answered last first, then the others once each.
        // `Resolved::new` never leaves `nodes` empty (it falls back to
        // DEFAULT_NODE), so `% n` and the index below cannot panic.
        let n = self.cfg.nodes.len().max(1);
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut attempt = 0;
        let response = loop {
            let node = (start + attempt) % n;
            let Some(base) = self.cfg.nodes.get(node) else {
                return Err(BackendError::Config {
                    backend: NAME,
                    message: "no Consul agent address".into(),
                });
            };
            let url = format!("{base}{path_and_query}");
            match self.cfg.http.get(&url).timeout(timeout).send().await {
                Ok(response) => {
                    if node != start {
                        self.current.store(node, Ordering::Relaxed);
                        tracing::info!(backend = NAME, node = %base, "using this Consul agent");
                    }
                    break (base, response);
                }
                Err(e) if attempt + 1 < n && e.is_connect() => {
                    tracing::debug!(backend = NAME, node = %base, path = %path, "cannot connect: {}", transport_message(&e, timeout));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(BackendError::Unavailable {
                        backend: NAME,
                        endpoint: format!("{base}{path}"),
                        source: transport_message(&e, timeout).into(),
                    })
                }
            }
        };
        let (base, response) = response;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let index = header("X-Consul-Index")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let filtered = header("X-Consul-Results-Filtered-By-ACLs").as_deref() == Some("true");
        let last_contact = header("X-Consul-LastContact")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(BackendError::Unavailable {
                    backend: NAME,
                    endpoint: format!("{base}{path}"),
                    source: transport_message(&e, timeout).into(),
                })
            }
        };

        match status {
            StatusCode::OK => {}
            // A KV prefix with no keys: an empty result that still carries
            // the index to block on.
            StatusCode::NOT_FOUND if matches!(target, Target::Kv(_)) => {
                return Ok(Answer {
                    index,
                    body: Body::Kv(BTreeMap::new()),
                    filtered,
                    last_contact,
                })
            }
            StatusCode::FORBIDDEN => {
                let said = self.agent_text(&bytes);
                let message = match self.cfg.token.is_some() {
                    true => format!(
                        "the agent refused the ACL token for GET {path} (403 {said}); check \
                         --auth-token / SIDEKICK_CONSUL_TOKEN and the token's policy"
                    ),
                    false => format!(
                        "the agent refused GET {path} without an ACL token (403 {said}); set \
                         --auth-token or SIDEKICK_CONSUL_TOKEN"
                    ),
                };
                return Err(BackendError::Denied {
                    backend: NAME,
                    message,
                });
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                // No leader, no path to the datacenter, rate limited: the
                // agent is there but cannot answer now.
                return Err(BackendError::Unavailable {
                    backend: NAME,
                    endpoint: format!("{base}{path}"),
                    source: format!("HTTP {}: {}", s.as_u16(), self.agent_text(&bytes)).into(),
                });
            }
            s => {
                return Err(BackendError::Invalid {
                    location: format!("{base}{path}"),
                    message: format!(
                        "unexpected HTTP {}: {}",
                        s.as_u16(),
                        self.agent_text(&bytes)
                    ),
                })
            }
        }

        let invalid = |message: String| BackendError::Invalid {
            location: format!("{base}{path}"),
            message,
        };
        let body = match target {
            Target::Kv(prefix) => {
                let entries: Vec<KvEntry> = serde_json::from_slice(&bytes)
                    .map_err(|e| invalid(format!("not a KV listing: {e}")))?;
                Body::Kv(kv_entries(prefix, entries).map_err(invalid)?)
            }
            Target::Services => {
                let names: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes)
                    .map_err(|e| invalid(format!("not a service list: {e}")))?;
                Body::Services(names.into_keys().collect())
            }
            Target::Health(_) => {
                let entries: Vec<HealthEntry> = serde_json::from_slice(&bytes)
                    .map_err(|e| invalid(format!("not a health listing: {e}")))?;
                Body::Health(
                    entries
                        .into_iter()
                        .map(HealthEntry::into_instance)
                        .collect(),
                )
            }
        };
        Ok(Answer {
            index,
            body,
            filtered,
            last_contact,
        })
    }

    /// The agent's own words from an error body: one line, short, and with
    /// the token (should an agent ever echo it) masked.
    fn agent_text(&self, body: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(body)
            .trim()
            .replace(['\n', '\r'], " ");
        if let Some(token) = &self.cfg.token {
            text = text.replace(token.as_str(), "<token>");
        }
        if text.len() > 200 {
            let mut cut = 200;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        if text.is_empty() {
            text.push_str("no message");
        }
        text
    }
}

/// One entry of a KV listing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    /// Base64; `null` for folders and empty values.
    value: Option<String>,
}

/// Converts a listing of Consul `prefix` (a normalized key-tree prefix) to
/// key-tree entries: values base64-decoded, folders (`a/b/` without a value)
/// left out, and only keys segment-wise under the prefix kept (Consul's
/// prefix match is by string, so `app` also lists `apple`).
fn kv_entries(prefix: &str, entries: Vec<KvEntry>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in entries {
        let value = match entry.value {
            None if entry.key.ends_with('/') => continue,
            None => String::new(),
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("key {:?}: value is not base64: {e}", entry.key))?;
                match String::from_utf8(bytes) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(backend = NAME, key = %entry.key, "value is not UTF-8; invalid bytes replaced");
                        String::from_utf8_lossy(e.as_bytes()).into_owned()
                    }
                }
            }
        };
        let key = normalize_key(&entry.key);
        if is_under(&key, prefix) {
            out.insert(key, value);
        }
    }
    Ok(out)
}

/// One entry of `/v1/health/service/<name>`: the node, the service instance
/// and every check that applies to it (node checks included).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: HealthNode,
    service: HealthService,
    #[serde(default)]
    checks: Option<Vec<HealthCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthNode {
    node: String,
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthService {
    #[serde(rename = "ID", default)]
    id: String,
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthCheck {
    status: String,
}

impl HealthEntry {
    /// Healthy means every check passes, which is exactly what `?passing`
    /// keeps; an instance without checks is healthy, as in Consul.
    fn into_instance(self) -> ServiceInstance {
        let healthy = self.checks.iter().flatten().all(|c| c.status == "passing");
        let address = if self.service.address.is_empty() {
            self.node.address
        } else {
            self.service.address
        };
        ServiceInstance {
            id: self.service.id,
            name: self.service.service,
            address,
            port: self.service.port,
            node: self.node.node,
            tags: self.service.tags.unwrap_or_default(),
            meta: self.service.meta.unwrap_or_default(),
            healthy,
        }
    }
}

/// What is escaped in a path segment or query value: everything but RFC
/// 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A KV key in a path: as [`COMPONENT`], with its `/` kept.
const KEY_PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// `wait` as Consul reads it (a Go duration): whole seconds when possible.
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: Option<&str>) -> KvEntry {
        KvEntry {
            key: key.into(),
            value: value.map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
        }
    }

    #[test]
    fn kv_listing_is_decoded_filtered_and_normalized() {
        let got = kv_entries(
            "/app",
            vec![
                entry("app/", None),
                entry("app/db/host", Some("10.0.0.1")),
                entry("app/empty", None),
                entry("apple", Some("not mine")),
                entry("app", Some("root")),
            ],
        )
        .unwrap();
        let want: BTreeMap<String, String> = [
            ("/app", "root"),
            ("/app/db/host", "10.0.0.1"),
            ("/app/empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
        let all = kv_entries("/", vec![entry("apple", Some("x"))]).unwrap();
        assert_eq!(all.get("/apple").map(String::as_str), Some("x"));
        let bad = kv_entries(
            "/",
            vec![KvEntry {
                key: "k".into(),
                value: Some("%%%".into()),
            }],
        );
        assert!(bad.unwrap_err().contains("\"k\""));
    }

    #[test]
    fn health_entry_becomes_an_instance() {
        let json = r#"[{
            "Node": {"Node": "n1", "Address": "10.0.0.9", "Datacenter": "dc1"},
            "Service": {"ID": "web-1", "Service": "web", "Tags": null, "Address": "",
                        "Port": 8080, "Meta": {"v": "2"}},
            "Checks": [{"Status": "passing", "CheckID": "serfHealth"},
                       {"Status": "warning", "CheckID": "service:web-1"}]
        }]"#;
        let entries: Vec<HealthEntry> = serde_json::from_str(json).unwrap();
        let inst = entries.into_iter().next().unwrap().into_instance();
        assert_eq!(inst.id, "web-1");
        assert_eq!(inst.name, "web");
        assert_eq!(
            inst.address, "10.0.0.9",
            "node address when the service has none"
        );
        assert_eq!(inst.port, 8080);
        assert_eq!(inst.node, "n1");
        assert!(inst.tags.is_empty());
        assert_eq!(inst.meta.get("v").map(String::as_str), Some("2"));
        assert!(!inst.healthy, "a warning is not passing");
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(Target::Kv("/".into()).path(), "/v1/kv/");
        assert_eq!(Target::Kv("/my app/db".into()).path(), "/v1/kv/my%20app/db");
        assert_eq!(
            Target::Health("a/b".into()).path(),
            "/v1/health/service/a%2Fb"
        );
        assert_eq!(
            Target::Kv("/a~b/ü?#".into()).path(),
            "/v1/kv/a~b/%C3%BC%3F%23"
        );
        assert_eq!(go_duration(Duration::from_secs(300)), "300s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }
}

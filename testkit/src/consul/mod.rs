//! A Consul agent to test against and the writes a test makes to it, for the
//! Consul crate's tests and benchmark and the binary's end-to-end tests.
//! Feature `consul`.
//!
//! By default the agent is the in-process fake of [`server`]. With
//! `SIDEKICK_TEST_CONSUL_ADDR=http://127.0.0.1:8500` (a `consul agent -dev`)
//! the same test bodies run against that agent: writes go through the real
//! HTTP API (`PUT /v1/kv/...`, `/v1/catalog/register`,
//! `/v1/agent/service/register`, `/v1/agent/check/...`), keys and names are
//! made unique per test so tests can share the agent, and what cannot be done
//! to a real agent (kill it, restore a snapshot, switch ACLs on) is skipped
//! with a note: see [`Consul::fake`].

pub mod server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use server::{FakeConsul, Policy};

/// Environment variable naming a real agent to test against.
pub const REAL_AGENT_ENV: &str = "SIDEKICK_TEST_CONSUL_ADDR";

/// How long a test waits for a condition before failing.
pub const TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The agent a test runs against.
pub enum Agent {
    /// The in-process fake.
    Fake(FakeConsul),
    /// A real agent at `host:port`.
    Real(String),
}

/// An agent plus a namespace that keeps this test's keys and services apart.
pub struct Consul {
    agent: Agent,
    ns: String,
    nodes: std::sync::Mutex<Vec<String>>,
    agent_services: std::sync::Mutex<Vec<String>>,
}

/// A service instance to register.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The catalog node it is registered on.
    pub node: String,
    /// That node's address.
    pub node_address: String,
    /// The service name.
    pub service: String,
    /// The instance's service id.
    pub id: String,
    /// The service address.
    pub address: String,
    /// The service port.
    pub port: u16,
    /// Service tags.
    pub tags: Vec<String>,
    /// Service metadata.
    pub meta: BTreeMap<String, String>,
    /// Status of its one service check: `passing`, `warning` or `critical`.
    pub status: String,
}

impl Instance {
    /// An instance of `service` with id `id` at `address:port` on a node of
    /// its own, its check passing.
    pub fn new(service: &str, id: &str, address: &str, port: u16) -> Instance {
        Instance {
            node: format!("node-{id}"),
            node_address: address.to_string(),
            service: service.to_string(),
            id: id.to_string(),
            address: address.to_string(),
            port,
            tags: vec![],
            meta: BTreeMap::new(),
            status: "passing".into(),
        }
    }
}

impl Consul {
    /// The real agent of `SIDEKICK_TEST_CONSUL_ADDR` if set, else a fresh fake.
    pub fn start() -> Consul {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns = format!("sidekick-test-{}-{n}", std::process::id());
        let agent = match std::env::var(REAL_AGENT_ENV) {
            Ok(addr) if !addr.trim().is_empty() => {
                let addr = addr
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                Agent::Real(addr)
            }
            _ => Agent::Fake(FakeConsul::start()),
        };
        Consul {
            agent,
            ns,
            nodes: std::sync::Mutex::new(Vec::new()),
            agent_services: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The fake, for what only it can do; `None` (after printing a note) on a
    /// real agent, so the caller returns early.
    pub fn fake(&self, what: &str) -> Option<&FakeConsul> {
        match &self.agent {
            Agent::Fake(f) => Some(f),
            Agent::Real(addr) => {
                eprintln!("note: skipping {what}: not possible against the real agent at {addr}");
                None
            }
        }
    }

    /// `http://host:port` of the agent.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    fn host(&self) -> String {
        match &self.agent {
            Agent::Fake(f) => f.addr().to_string(),
            Agent::Real(addr) => addr.clone(),
        }
    }

    /// A key-tree prefix unique to this test (`/sidekick-test-PID-N`).
    pub fn prefix(&self) -> String {
        format!("/{}", self.ns)
    }

    /// A service name unique to this test.
    pub fn service_name(&self, base: &str) -> String {
        format!("{}-{base}", self.ns)
    }

    /// Sets a key (key-tree spelling, with or without the leading `/`).
    pub fn put(&self, key: &str, value: &str) {
        let key = key.trim_start_matches('/');
        let (status, _, body) = self.request(
            "PUT",
            &format!("/v1/kv/{}", encode_path(key)),
            value.as_bytes(),
        );
        assert_eq!(status, 200, "PUT {key}: {}", String::from_utf8_lossy(&body));
    }

    /// Removes a key.
    pub fn delete(&self, key: &str) {
        let key = key.trim_start_matches('/');
        let (status, _, body) =
            self.request("DELETE", &format!("/v1/kv/{}", encode_path(key)), b"");
        assert_eq!(
            status,
            200,
            "DELETE {key}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Registers (or updates) an instance and its check through
    /// `/v1/catalog/register`, on a node of its own.
    pub fn register(&self, inst: &Instance) {
        let node = self.node_name(&inst.node);
        let body = json!({
            "Node": node,
            "Address": inst.node_address,
            "Service": {
                "ID": inst.id, "Service": inst.service, "Address": inst.address,
                "Port": inst.port, "Tags": inst.tags, "Meta": inst.meta,
            },
            "Checks": [{
                "CheckID": format!("service:{}", inst.id), "Name": "test check",
                "Status": inst.status, "ServiceID": inst.id,
            }],
        });
        let (status, _, resp) =
            self.request("PUT", "/v1/catalog/register", body.to_string().as_bytes());
        assert_eq!(
            status,
            200,
            "register {}: {}",
            inst.id,
            String::from_utf8_lossy(&resp)
        );
        let mut nodes = self.nodes.lock().unwrap();
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }

    /// Sets the status of an instance's check (re-registers it).
    pub fn set_status(&self, inst: &mut Instance, status: &str) {
        inst.status = status.to_string();
        self.register(inst);
    }

    /// Removes an instance.
    pub fn deregister(&self, inst: &Instance) {
        let body = json!({"Node": self.node_name(&inst.node), "ServiceID": inst.id});
        let (status, _, resp) =
            self.request("PUT", "/v1/catalog/deregister", body.to_string().as_bytes());
        assert_eq!(
            status,
            200,
            "deregister {}: {}",
            inst.id,
            String::from_utf8_lossy(&resp)
        );
    }

    /// Registers a service on the agent itself (`/v1/agent/service/register`)
    /// with a TTL check that starts passing.
    pub fn agent_register(&self, service: &str, id: &str, address: &str, port: u16) {
        let body = json!({
            "ID": id, "Name": service, "Address": address, "Port": port,
            "Check": {"CheckID": format!("service:{id}"), "TTL": "10m", "Status": "passing"},
        });
        let (status, _, resp) = self.request(
            "PUT",
            "/v1/agent/service/register",
            body.to_string().as_bytes(),
        );
        assert_eq!(
            status,
            200,
            "agent register {id}: {}",
            String::from_utf8_lossy(&resp)
        );
        self.agent_services.lock().unwrap().push(id.to_string());
    }

    /// Sets an agent service's TTL check: `pass`, `warn` or `fail`.
    pub fn agent_check(&self, id: &str, verb: &str) {
        let (status, _, resp) =
            self.request("PUT", &format!("/v1/agent/check/{verb}/service:{id}"), b"");
        assert_eq!(
            status,
            200,
            "agent check {verb} {id}: {}",
            String::from_utf8_lossy(&resp)
        );
    }

    /// Waits until the agent's health listing of `service` satisfies `pred`
    /// (a real agent syncs agent services to the catalog asynchronously).
    pub fn wait_health(&self, service: &str, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (_, _, body) = self.request("GET", &format!("/v1/health/service/{service}"), b"");
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if pred(&v) {
                return;
            }
            assert!(Instant::now() < deadline, "agent never showed {what}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn node_name(&self, base: &str) -> String {
        match &self.agent {
            Agent::Fake(_) => base.to_string(),
            Agent::Real(_) => format!("{}-{base}", self.ns),
        }
    }

    /// One request to the agent; returns status, headers and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, BTreeMap<String, String>, Vec<u8>) {
        http(&self.host(), method, path, &[], body)
            .unwrap_or_else(|e| panic!("{method} {path} to the Consul agent: {e}"))
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        // A shared real agent is left as found.
        if let Agent::Real(host) = &self.agent {
            let _ = http(
                host,
                "DELETE",
                &format!("/v1/kv/{}?recurse", self.ns),
                &[],
                b"",
            );
            for node in self.nodes.lock().map(|n| n.clone()).unwrap_or_default() {
                let body = json!({ "Node": node }).to_string();
                let _ = http(host, "PUT", "/v1/catalog/deregister", &[], body.as_bytes());
            }
            for id in self
                .agent_services
                .lock()
                .map(|n| n.clone())
                .unwrap_or_default()
            {
                let _ = http(
                    host,
                    "PUT",
                    &format!("/v1/agent/service/deregister/{id}"),
                    &[],
                    b"",
                );
            }
        }
    }
}

/// Percent-encodes a KV key for a path (keeps `/`).
pub fn encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One request to the agent at `host` (`Connection: close`): returns status,
/// lower-cased headers and the body.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let r = crate::http::request(host, method, path, headers, body, Duration::from_secs(30))?;
    Ok((r.status, r.headers, r.body))
}

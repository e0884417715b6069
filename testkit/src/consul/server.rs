//! An in-process Consul agent for tests, written from Consul's public HTTP
//! API documentation (KV store, catalog, health, agent, blocking queries,
//! ACLs). No Consul binary can be installed on the test machines, so the
//! backend, the binary's end-to-end test and the benchmark all talk to this.
//!
//! Plain `std` threads, `serde_json` and `base64`: each connection gets a
//! thread and blocking queries wait on a condition variable.
//!
//! What it reproduces:
//! - `GET /v1/kv/<key>` with `recurse` (string-prefix match, as Consul does),
//!   `raw`, `keys`; JSON entries with base64 `Value` (`null` when empty),
//!   `Flags`, `CreateIndex`, `ModifyIndex`, `LockIndex`; `404` with an
//!   `X-Consul-Index` header when nothing matches.
//! - `PUT /v1/kv/<key>` (`flags`, `cas`) and `DELETE /v1/kv/<key>`
//!   (`recurse`), answering `true`/`false`; deletes leave tombstones so the
//!   prefix's index still moves.
//! - `X-Consul-Index` computed as Consul does: for a KV listing the highest
//!   `ModifyIndex` or tombstone under the prefix, else the KV table's index;
//!   for the service list the services table's index; for a service's health
//!   that service's own index (or, once it has no instances left, the index at
//!   which it went extinct). An index of 0 is sent as 1 (Consul's `setIndex`).
//! - Blocking queries on all three reads: `?index=N&wait=D` (Go durations,
//!   `wait` defaults to 5m and is capped at 10m, no jitter added) holds the
//!   answer until the result's index passes `N` or `wait` runs out, then
//!   answers with the current data and index.
//! - `GET /v1/catalog/services` (name -> tags, including the agent's own
//!   `consul` service), `GET /v1/health/service/<name>` with `passing` (every
//!   check passing) and `tag` filters; entries carry `Node`, `Service` and
//!   `Checks` (node checks such as `serfHealth` included).
//! - Registration: `PUT /v1/catalog/register` and `/v1/catalog/deregister`
//!   (nodes, services, checks with a `Status`), `PUT /v1/agent/service/register`
//!   (on the agent's own node; checks start `critical` unless given a
//!   `Status`), `/v1/agent/service/deregister/<id>`,
//!   `/v1/agent/check/{pass,warn,fail}/<id>` and `/v1/agent/check/update/<id>`.
//!   Writes that change nothing do not move table indexes.
//! - `?dc=`: another datacenter than `dc1` gets `500 No path to datacenter`.
//! - ACLs, when enabled with [`FakeConsul::enable_acl`]: an unknown token gets
//!   `403 ACL not found` everywhere; a known token without the permission gets
//!   `403 Permission denied: ...` on writes and single-key reads, while
//!   listings are filtered (fewer results, `X-Consul-Results-Filtered-By-ACLs:
//!   true`), as Consul does without `enable_key_list_policy`.
//! - A snapshot restore ([`FakeConsul::restore`]): the index goes back, the KV
//!   store is replaced and every blocking query is woken (Consul's abandon
//!   channel) and answers with the lower index.
//! - Agent death and restart ([`FakeConsul::stop`], [`FakeConsul::restart`]):
//!   the listener closes, open connections are cut mid-query, and a restart
//!   listens on the same port with the data kept (a server with a data dir).
//! - For tests: [`FakeConsul::log`] (every request line, to check which
//!   index a query carried), [`FakeConsul::reads`] (GETs per kind, to check
//!   rate limits) and [`FakeConsul::kv_set`] (a write through "another agent",
//!   also while this one is stopped). `GET /v1/status/leader` answers too.
//!
//! Not reproduced: consistency modes, `X-Consul-KnownLeader` other than true,
//! sessions and locks, namespaces, `filter=` expressions, wait jitter, TLS
//! (the TLS test puts a rustls proxy in front), check TTL expiry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::acceptor::Acceptor;

/// The agent's own node, where `/v1/agent/service/register` puts services.
pub const AGENT_NODE: &str = "fake-agent";
/// The datacenter the fake serves.
pub const DATACENTER: &str = "dc1";

/// One ACL token's permissions (a much reduced Consul policy).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// KV prefixes the token may read (`""` for all).
    pub kv_read: Vec<String>,
    /// KV prefixes the token may write.
    pub kv_write: Vec<String>,
    /// May read services and nodes.
    pub catalog_read: bool,
    /// May register and deregister.
    pub catalog_write: bool,
}

impl Policy {
    /// Everything allowed (a management token).
    pub fn all() -> Policy {
        Policy {
            kv_read: vec![String::new()],
            kv_write: vec![String::new()],
            catalog_read: true,
            catalog_write: true,
        }
    }
}

#[derive(Debug, Clone)]
struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    address: String,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Service {
    name: String,
    address: String,
    port: u64,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Check {
    name: String,
    status: String,
    output: String,
    service_id: String,
    create_index: u64,
    modify_index: u64,
}

/// Everything the fake agent stores.
#[derive(Debug, Default)]
struct State {
    /// The raft index: moves on every write.
    index: u64,
    kv: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, u64>,
    kv_table: u64,
    nodes: BTreeMap<String, Node>,
    /// (node, service id) -> service.
    services: BTreeMap<(String, String), Service>,
    /// (node, check id) -> check.
    checks: BTreeMap<(String, String), Check>,
    services_table: u64,
    /// Index of the last change to each service's instances or their checks.
    service_index: BTreeMap<String, u64>,
    /// Index at which the last service lost its last instance.
    extinction: u64,
    /// `None`: ACLs off. Else token -> policy, and the anonymous policy.
    acl: Option<(HashMap<String, Policy>, Policy)>,
    /// Bumped by a restore: blocking queries return at once.
    abandon: u64,
    /// Bumped by stop: requests of an older incarnation are dropped.
    incarnation: u64,
    stopped: bool,
    /// GET requests answered, by kind (`kv`, `services`, `health`).
    reads: BTreeMap<&'static str, u64>,
    /// Every request line (`GET /v1/kv/app?recurse&index=5`), in order.
    log: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running fake agent on `127.0.0.1`. Stops when dropped.
pub struct FakeConsul {
    shared: Arc<Shared>,
    acceptor: Acceptor,
}

impl Default for FakeConsul {
    fn default() -> Self {
        Self::start()
    }
}

impl FakeConsul {
    /// Listens on a free port of 127.0.0.1, with the agent's node and its
    /// `consul` service registered, ACLs off.
    pub fn start() -> FakeConsul {
        let (acceptor, listener) = Acceptor::bind();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        {
            let mut st = shared.lock();
            st.index = 1; // Raft's first entry is the cluster configuration.
            let i = st.next();
            st.register_node(i, AGENT_NODE, "127.0.0.1");
            st.register_check(
                i,
                AGENT_NODE,
                "serfHealth",
                "Serf Health Status",
                "passing",
                "",
            );
            st.register_service(
                i,
                AGENT_NODE,
                "consul",
                Service {
                    name: "consul".into(),
                    address: String::new(),
                    port: 8300,
                    tags: vec![],
                    meta: BTreeMap::new(),
                    create_index: 0,
                    modify_index: 0,
                },
            );
        }
        let fake = FakeConsul { shared, acceptor };
        fake.serve(listener);
        fake
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.acceptor.addr())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.acceptor.addr()
    }

    /// The current raft index.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    /// How many GET requests of `kind` (`kv`, `services`, `health`) were answered.
    pub fn reads(&self, kind: &str) -> u64 {
        self.shared.lock().reads.get(kind).copied().unwrap_or(0)
    }

    /// Every request received so far, as `METHOD /path?query` (decoded).
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// Sets a key without going through HTTP, as a write through another
    /// agent of the cluster would (works while this one is stopped).
    pub fn kv_set(&self, key: &str, value: &str) {
        let mut st = self.shared.lock();
        let i = st.next();
        let create_index = st.kv.get(key).map_or(i, |e| e.create_index);
        st.kv.insert(
            key.trim_start_matches('/').to_string(),
            KvEntry {
                value: value.as_bytes().to_vec(),
                flags: 0,
                create_index,
                modify_index: i,
            },
        );
        st.kv_table = i;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Turns ACLs on: `tokens` maps secret -> policy; requests without a
    /// token get `anonymous`.
    pub fn enable_acl(&self, tokens: &[(&str, Policy)], anonymous: Policy) {
        let map = tokens
            .iter()
            .map(|(t, p)| (t.to_string(), p.clone()))
            .collect();
        self.shared.lock().acl = Some((map, anonymous));
    }

    /// Simulates `consul snapshot restore` of an older snapshot: the index
    /// becomes `index` (lower than now), the KV store becomes `kv`, table
    /// indexes are clamped to `index`, and every blocking query returns.
    pub fn restore(&self, index: u64, kv: &[(&str, &str)]) {
        let mut st = self.shared.lock();
        st.index = index;
        st.kv = kv
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    KvEntry {
                        value: v.as_bytes().to_vec(),
                        flags: 0,
                        create_index: index,
                        modify_index: index,
                    },
                )
            })
            .collect();
        st.tombstones.clear();
        st.kv_table = index;
        st.services_table = st.services_table.min(index);
        st.extinction = st.extinction.min(index);
        for i in st.service_index.values_mut() {
            *i = (*i).min(index);
        }
        st.abandon += 1;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Kills the agent: stops listening and cuts every open connection,
    /// blocking queries included. The data stays for [`FakeConsul::restart`].
    pub fn stop(&self) {
        self.acceptor.stop_accepting();
        {
            let mut st = self.shared.lock();
            st.stopped = true;
            st.incarnation += 1;
        }
        self.shared.changed.notify_all();
        self.acceptor.cut_connections();
    }

    /// Starts listening again on the same port, with the same data.
    pub fn restart(&self) {
        let listener = self.acceptor.rebind();
        self.shared.lock().stopped = false;
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let incarnation = shared.lock().incarnation;
        self.acceptor.serve(listener, move |conn| {
            serve_connection(&shared, conn, incarnation);
        });
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One parsed request.
type Request = crate::http::ServerRequest;

/// One response.
struct Response {
    status: u16,
    index: Option<u64>,
    filtered: bool,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            index: None,
            filtered: false,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            index: None,
            filtered: false,
            content_type: "text/plain; charset=utf-8",
            body: text.as_bytes().to_vec(),
        }
    }

    fn indexed(mut self, index: u64) -> Response {
        // Consul never sends 0: `?index=0` would not block and clients spin.
        self.index = Some(index.max(1));
        self
    }
}

fn serve_connection(shared: &Shared, conn: TcpStream, incarnation: u64) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = conn;
    while let Ok(Some(request)) = crate::http::read_request(&mut reader) {
        let close = request.wants_close();
        let Some(response) = handle(shared, &request, incarnation) else {
            // The agent died while this request waited: no answer.
            let _ = writer.shutdown(Shutdown::Both);
            return;
        };
        if write_response(&mut writer, &response, close).is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn write_response(w: &mut TcpStream, r: &Response, close: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if let Some(i) = r.index {
        head.push_str(&format!(
            "X-Consul-Index: {i}\r\nX-Consul-Knownleader: true\r\nX-Consul-Lastcontact: 0\r\n"
        ));
    }
    if r.filtered {
        head.push_str("X-Consul-Results-Filtered-By-Acls: true\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    w.write_all(&out)?;
    w.flush()
}

/// A Go duration as Consul's `wait` takes it (`300ms`, `5s`, `1m`, `1h`, or
/// bare seconds).
fn parse_wait(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

impl State {
    /// Advances the raft index for a write; returns it.
    fn next(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn kv_list_index(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            return self.kv_table;
        }
        let entries = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index);
        let graves = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i);
        match entries.chain(graves).max() {
            Some(i) if i > 0 => i,
            _ => self.kv_table,
        }
    }

    fn instances_of(&self, name: &str) -> usize {
        self.services.values().filter(|s| s.name == name).count()
    }

    fn health_index(&self, name: &str) -> u64 {
        if self.instances_of(name) > 0 {
            if let Some(i) = self.service_index.get(name) {
                return *i;
            }
        }
        if self.extinction > 0 {
            return self.extinction;
        }
        self.services_table
    }

    fn bump_service(&mut self, i: u64, name: &str) {
        self.service_index.insert(name.to_string(), i);
    }

    fn register_node(&mut self, i: u64, node: &str, address: &str) {
        let changed = self.nodes.get(node).is_none_or(|n| n.address != address);
        if !changed {
            return;
        }
        let create_index = self.nodes.get(node).map_or(i, |n| n.create_index);
        self.nodes.insert(
            node.to_string(),
            Node {
                address: address.to_string(),
                create_index,
                modify_index: i,
            },
        );
        let names: Vec<String> = self
            .services
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|(_, s)| s.name.clone())
            .collect();
        for name in names {
            self.bump_service(i, &name);
        }
    }

    fn register_service(&mut self, i: u64, node: &str, id: &str, mut svc: Service) {
        let key = (node.to_string(), id.to_string());
        if let Some(old) = self.services.get(&key) {
            svc.create_index = old.create_index;
            svc.modify_index = old.modify_index;
            if *old == svc {
                return;
            }
            if old.name != svc.name {
                let old_name = old.name.clone();
                self.services.remove(&key);
                self.after_service_removed(i, &old_name);
            }
        } else {
            svc.create_index = i;
        }
        svc.modify_index = i;
        let name = svc.name.clone();
        self.services.insert(key, svc);
        self.services_table = i;
        self.bump_service(i, &name);
    }

    fn after_service_removed(&mut self, i: u64, name: &str) {
        self.services_table = i;
        if self.instances_of(name) == 0 {
            self.service_index.remove(name);
            self.extinction = i;
        } else {
            self.bump_service(i, name);
        }
    }

    fn deregister_service(&mut self, i: u64, node: &str, id: &str) -> bool {
        let Some(svc) = self.services.remove(&(node.to_string(), id.to_string())) else {
            return false;
        };
        self.checks
            .retain(|(n, _), c| !(n == node && c.service_id == id));
        self.after_service_removed(i, &svc.name);
        true
    }

    fn register_check(
        &mut self,
        i: u64,
        node: &str,
        id: &str,
        name: &str,
        status: &str,
        service_id: &str,
    ) {
        let key = (node.to_string(), id.to_string());
        let mut check = Check {
            name: name.to_string(),
            status: status.to_string(),
            output: String::new(),
            service_id: service_id.to_string(),
            create_index: i,
            modify_index: i,
        };
        if let Some(old) = self.checks.get(&key) {
            check.create_index = old.create_index;
            check.modify_index = old.modify_index;
            check.output = old.output.clone();
            if *old == check {
                return;
            }
            check.modify_index = i;
        }
        self.checks.insert(key, check);
        self.after_check_change(i, node, service_id);
    }

    fn set_check_status(&mut self, node: &str, id: &str, status: &str, output: &str) -> bool {
        let key = (node.to_string(), id.to_string());
        let Some(old) = self.checks.get(&key) else {
            return false;
        };
        if old.status == status && old.output == output {
            self.next();
            return true;
        }
        let service_id = old.service_id.clone();
        let i = self.next();
        if let Some(c) = self.checks.get_mut(&key) {
            c.status = status.to_string();
            c.output = output.to_string();
            c.modify_index = i;
        }
        self.after_check_change(i, node, &service_id);
        true
    }

    fn after_check_change(&mut self, i: u64, node: &str, service_id: &str) {
        let names: Vec<String> = self
            .services
            .iter()
            .filter(|((n, sid), _)| n == node && (service_id.is_empty() || sid == service_id))
            .map(|(_, s)| s.name.clone())
            .collect();
        for name in names {
            self.bump_service(i, &name);
        }
    }

    /// `(allowed, policy)` for the request's token; `Err` is the 403 answer.
    fn policy(&self, req: &Request) -> Result<Policy, Response> {
        let Some((tokens, anonymous)) = &self.acl else {
            return Ok(Policy::all());
        };
        match req.headers.get("x-consul-token").filter(|t| !t.is_empty()) {
            None => Ok(anonymous.clone()),
            Some(t) => tokens
                .get(t)
                .cloned()
                .ok_or_else(|| Response::text(403, "ACL not found")),
        }
    }
}

fn may(prefixes: &[String], key: &str) -> bool {
    prefixes.iter().any(|p| key.starts_with(p.as_str()))
}

fn denied(what: &str, on: &str) -> Response {
    Response::text(
        403,
        &format!(
            "Permission denied: token with AccessorID 'fake-accessor' lacks permission '{what}' on \"{on}\""
        ),
    )
}

/// Answers one request; `None` when the agent was stopped meanwhile.
fn handle(shared: &Shared, req: &Request, incarnation: u64) -> Option<Response> {
    let mut st = shared.lock();
    if st.stopped || st.incarnation != incarnation {
        return None;
    }
    let line = match req.query.is_empty() {
        true => format!("{} {}", req.method, req.path),
        false => {
            let q: Vec<String> = req
                .query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            format!("{} {}?{}", req.method, req.path, q.join("&"))
        }
    };
    st.log.push(line);
    if let Some(dc) = req.query.get("dc") {
        if dc != DATACENTER {
            return Some(Response::text(500, "No path to datacenter"));
        }
    }
    let policy = match st.policy(req) {
        Ok(p) => p,
        Err(r) => return Some(r),
    };
    let path = req.path.as_str();
    let method = req.method.as_str();

    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return match method {
            "GET" => {
                *st.reads.entry("kv").or_default() += 1;
                drop(st);
                kv_get(shared, req, key, &policy, incarnation)
            }
            "PUT" => {
                if !may(&policy.kv_write, key) {
                    return Some(denied("key:write", key));
                }
                let ok = kv_put(&mut st, req, key);
                drop(st);
                shared.changed.notify_all();
                Some(Response::json(200, &json!(ok)))
            }
            "DELETE" => {
                if !may(&policy.kv_write, key) {
                    return Some(denied("key:write", key));
                }
                let i = st.next();
                let keys: Vec<String> = if req.has_query("recurse") {
                    st.kv
                        .keys()
                        .filter(|k| k.starts_with(key))
                        .cloned()
                        .collect()
                } else {
                    st.kv.keys().filter(|k| *k == key).cloned().collect()
                };
                for k in keys {
                    st.kv.remove(&k);
                    st.tombstones.insert(k, i);
                    st.kv_table = i;
                }
                drop(st);
                shared.changed.notify_all();
                Some(Response::json(200, &json!(true)))
            }
            _ => Some(Response::text(405, "method not allowed")),
        };
    }

    match (method, path) {
        ("GET", "/v1/status/leader") => Some(Response::json(200, &json!("127.0.0.1:8300"))),
        ("GET", "/v1/catalog/services") => {
            *st.reads.entry("services").or_default() += 1;
            drop(st);
            blocking(shared, req, incarnation, |st| {
                let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                if policy.catalog_read {
                    for s in st.services.values() {
                        out.entry(s.name.clone())
                            .or_default()
                            .extend(s.tags.iter().cloned());
                    }
                }
                let mut r = Response::json(200, &json!(out));
                r.filtered = !policy.catalog_read && !st.services.is_empty();
                r.indexed(st.services_table)
            })
        }
        ("GET", p) if p.starts_with("/v1/health/service/") => {
            let name = p["/v1/health/service/".len()..].to_string();
            *st.reads.entry("health").or_default() += 1;
            drop(st);
            blocking(shared, req, incarnation, |st| {
                let mut r = Response::json(200, &health_entries(st, req, &name, &policy));
                r.filtered = !policy.catalog_read && st.instances_of(&name) > 0;
                r.indexed(st.health_index(&name))
            })
        }
        ("PUT", "/v1/catalog/register") => {
            if !policy.catalog_write {
                return Some(denied("node:write", "catalog"));
            }
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return Some(Response::text(400, &format!("Request decode failed: {e}"))),
            };
            let r = catalog_register(&mut st, &body);
            drop(st);
            shared.changed.notify_all();
            Some(r)
        }
        ("PUT", "/v1/catalog/deregister") => {
            if !policy.catalog_write {
                return Some(denied("node:write", "catalog"));
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let node = body["Node"].as_str().unwrap_or_default().to_string();
            let i = st.next();
            if let Some(sid) = body["ServiceID"].as_str() {
                st.deregister_service(i, &node, sid);
            } else if let Some(cid) = body["CheckID"].as_str() {
                if let Some(c) = st.checks.remove(&(node.clone(), cid.to_string())) {
                    st.after_check_change(i, &node, &c.service_id);
                }
            } else {
                let ids: Vec<String> = st
                    .services
                    .keys()
                    .filter(|(n, _)| *n == node)
                    .map(|(_, id)| id.clone())
                    .collect();
                for id in ids {
                    st.deregister_service(i, &node, &id);
                }
                st.checks.retain(|(n, _), _| *n != node);
                st.nodes.remove(&node);
            }
            drop(st);
            shared.changed.notify_all();
            Some(Response::json(200, &json!(true)))
        }
        ("PUT", "/v1/agent/service/register") => {
            if !policy.catalog_write {
                return Some(denied("service:write", "agent"));
            }
            let body: Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => return Some(Response::text(400, &format!("Request decode failed: {e}"))),
            };
            let r = agent_register(&mut st, &body);
            drop(st);
            shared.changed.notify_all();
            Some(r)
        }
        ("PUT", p) if p.starts_with("/v1/agent/service/deregister/") => {
            if !policy.catalog_write {
                return Some(denied("service:write", "agent"));
            }
            let id = &p["/v1/agent/service/deregister/".len()..];
            let i = st.next();
            let found = st.deregister_service(i, AGENT_NODE, id);
            drop(st);
            shared.changed.notify_all();
            Some(match found {
                true => Response::text(200, ""),
                false => Response::text(404, &format!("Unknown service ID {id:?}")),
            })
        }
        ("PUT", p) if p.starts_with("/v1/agent/check/") => {
            if !policy.catalog_write {
                return Some(denied("service:write", "agent"));
            }
            let rest = &p["/v1/agent/check/".len()..];
            let Some((verb, id)) = rest.split_once('/') else {
                return Some(Response::text(404, "404 page not found"));
            };
            let note = req.query.get("note").cloned().unwrap_or_default();
            let (status, output) = match verb {
                "pass" => ("passing".to_string(), note),
                "warn" => ("warning".to_string(), note),
                "fail" => ("critical".to_string(), note),
                "update" => {
                    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    (
                        body["Status"].as_str().unwrap_or("critical").to_string(),
                        body["Output"].as_str().unwrap_or_default().to_string(),
                    )
                }
                _ => return Some(Response::text(404, "404 page not found")),
            };
            let found = st.set_check_status(AGENT_NODE, id, &status, &output);
            drop(st);
            shared.changed.notify_all();
            Some(match found {
                true => Response::text(200, ""),
                false => Response::text(404, &format!("Unknown check ID {id:?}")),
            })
        }
        _ => Some(Response::text(404, "404 page not found")),
    }
}

/// Runs `answer` now, or (for `?index=N`) when its index passes N, the wait
/// runs out or a restore abandons the query.
fn blocking(
    shared: &Shared,
    req: &Request,
    incarnation: u64,
    answer: impl Fn(&State) -> Response,
) -> Option<Response> {
    let min = req
        .query
        .get("index")
        .and_then(|i| i.parse::<u64>().ok())
        .unwrap_or(0);
    let wait = req
        .query
        .get("wait")
        .and_then(|w| parse_wait(w))
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600));
    let deadline = Instant::now() + wait;
    let mut st = shared.lock();
    let abandon = st.abandon;
    loop {
        if st.stopped || st.incarnation != incarnation {
            return None;
        }
        let r = answer(&st);
        let now = Instant::now();
        if min == 0 || r.index.unwrap_or(0) > min || now >= deadline || st.abandon != abandon {
            return Some(r);
        }
        st = shared
            .changed
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

fn kv_get(
    shared: &Shared,
    req: &Request,
    key: &str,
    policy: &Policy,
    incarnation: u64,
) -> Option<Response> {
    if !req.has_query("recurse") && !req.has_query("keys") {
        if key.is_empty() {
            return Some(Response::text(400, "Missing key name"));
        }
        if !may(&policy.kv_read, key) {
            return Some(denied("key:read", key));
        }
    }
    blocking(shared, req, incarnation, |st| {
        let recurse = req.has_query("recurse") || req.has_query("keys");
        let all: Vec<(&String, &KvEntry)> = if recurse {
            st.kv
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .collect()
        } else {
            st.kv.get_key_value(key).into_iter().collect()
        };
        let visible: Vec<(&String, &KvEntry)> = all
            .iter()
            .copied()
            .filter(|(k, _)| may(&policy.kv_read, k))
            .collect();
        let filtered = visible.len() != all.len();
        let index = if recurse {
            st.kv_list_index(key)
        } else {
            st.kv.get(key).map_or(st.kv_table, |e| e.modify_index)
        };
        let mut r = if visible.is_empty() {
            Response::text(404, "")
        } else if req.has_query("keys") {
            Response::json(
                200,
                &json!(visible.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()),
            )
        } else if req.has_query("raw") {
            Response {
                status: 200,
                index: None,
                filtered: false,
                content_type: "application/octet-stream",
                body: visible[0].1.value.clone(),
            }
        } else {
            let entries: Vec<Value> = visible
                .iter()
                .map(|(k, e)| {
                    json!({
                        "LockIndex": 0,
                        "Key": k,
                        "Flags": e.flags,
                        "Value": if e.value.is_empty() {
                            Value::Null
                        } else {
                            Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
                        },
                        "CreateIndex": e.create_index,
                        "ModifyIndex": e.modify_index,
                    })
                })
                .collect();
            Response::json(200, &Value::Array(entries))
        };
        r.filtered = filtered;
        r.indexed(index)
    })
}

fn kv_put(st: &mut State, req: &Request, key: &str) -> bool {
    if let Some(cas) = req.query.get("cas").and_then(|c| c.parse::<u64>().ok()) {
        let current = st.kv.get(key).map_or(0, |e| e.modify_index);
        if current != cas {
            st.next();
            return false;
        }
    }
    let i = st.next();
    let flags = req
        .query
        .get("flags")
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    let create_index = st.kv.get(key).map_or(i, |e| e.create_index);
    st.kv.insert(
        key.to_string(),
        KvEntry {
            value: req.body.clone(),
            flags,
            create_index,
            modify_index: i,
        },
    );
    st.tombstones.remove(key);
    st.kv_table = i;
    true
}

fn health_entries(st: &State, req: &Request, name: &str, policy: &Policy) -> Value {
    if !policy.catalog_read {
        return json!([]);
    }
    let passing_only = req.query.get("passing").is_some_and(|v| v != "false");
    let tag = req.query.get("tag");
    let mut out = Vec::new();
    for ((node, id), svc) in &st.services {
        if svc.name != name || tag.is_some_and(|t| !svc.tags.contains(t)) {
            continue;
        }
        let checks: Vec<Value> = st
            .checks
            .iter()
            .filter(|((n, _), c)| n == node && (c.service_id.is_empty() || c.service_id == *id))
            .map(|((n, cid), c)| {
                json!({
                    "Node": n, "CheckID": cid, "Name": c.name, "Status": c.status,
                    "Notes": "", "Output": c.output, "ServiceID": c.service_id,
                    "ServiceName": if c.service_id.is_empty() { "" } else { name },
                    "ServiceTags": if c.service_id.is_empty() { vec![] } else { svc.tags.clone() },
                    "Type": "", "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
                })
            })
            .collect();
        if passing_only && checks.iter().any(|c| c["Status"] != "passing") {
            continue;
        }
        let n = st.nodes.get(node);
        out.push(json!({
            "Node": {
                "ID": "", "Node": node, "Address": n.map_or("", |n| n.address.as_str()),
                "Datacenter": DATACENTER, "TaggedAddresses": {}, "Meta": {},
                "CreateIndex": n.map_or(0, |n| n.create_index),
                "ModifyIndex": n.map_or(0, |n| n.modify_index),
            },
            "Service": {
                "ID": id, "Service": svc.name, "Tags": svc.tags, "Address": svc.address,
                "Meta": svc.meta, "Port": svc.port, "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": false,
                "CreateIndex": svc.create_index, "ModifyIndex": svc.modify_index,
            },
            "Checks": checks,
        }));
    }
    Value::Array(out)
}

fn service_from_json(v: &Value, default_id: &str) -> (String, Service) {
    let name = v["Service"]
        .as_str()
        .or_else(|| v["Name"].as_str())
        .unwrap_or(default_id)
        .to_string();
    let id = v["ID"].as_str().unwrap_or(&name).to_string();
    let tags = v["Tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let meta = v["Meta"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    (
        id,
        Service {
            name,
            address: v["Address"].as_str().unwrap_or_default().to_string(),
            port: v["Port"].as_u64().unwrap_or(0),
            tags,
            meta,
            create_index: 0,
            modify_index: 0,
        },
    )
}

fn checks_from_json(body: &Value) -> Vec<&Value> {
    let mut checks: Vec<&Value> = Vec::new();
    if body["Check"].is_object() {
        checks.push(&body["Check"]);
    }
    if let Some(list) = body["Checks"].as_array() {
        checks.extend(list.iter());
    }
    checks
}

fn catalog_register(st: &mut State, body: &Value) -> Response {
    let Some(node) = body["Node"].as_str() else {
        return Response::text(400, "Must provide node");
    };
    let Some(address) = body["Address"].as_str() else {
        return Response::text(400, "Must provide address");
    };
    let i = st.next();
    if !body["SkipNodeUpdate"].as_bool().unwrap_or(false) || !st.nodes.contains_key(node) {
        st.register_node(i, node, address);
    }
    if body["Service"].is_object() {
        let (id, svc) = service_from_json(&body["Service"], "");
        if svc.name.is_empty() {
            return Response::text(400, "Must provide service name");
        }
        st.register_service(i, node, &id, svc);
    }
    for c in checks_from_json(body) {
        let id = c["CheckID"]
            .as_str()
            .or_else(|| c["Name"].as_str())
            .unwrap_or("check");
        let name = c["Name"].as_str().unwrap_or(id);
        let status = c["Status"].as_str().unwrap_or("critical");
        let sid = c["ServiceID"].as_str().unwrap_or_default();
        st.register_check(i, node, id, name, status, sid);
    }
    Response::json(200, &json!(true))
}

fn agent_register(st: &mut State, body: &Value) -> Response {
    let (id, svc) = service_from_json(body, "");
    if svc.name.is_empty() {
        return Response::text(400, "Missing service name");
    }
    let i = st.next();
    st.register_service(i, AGENT_NODE, &id, svc);
    let checks = checks_from_json(body);
    let several = checks.len() > 1;
    for (n, c) in checks.into_iter().enumerate() {
        let default_id = match several {
            true => format!("service:{id}:{}", n + 1),
            false => format!("service:{id}"),
        };
        let cid = c["CheckID"].as_str().unwrap_or(&default_id).to_string();
        let name = c["Name"]
            .as_str()
            .map_or_else(|| format!("Service '{id}' check"), str::to_string);
        let status = c["Status"].as_str().unwrap_or("critical");
        st.register_check(i, AGENT_NODE, &cid, &name, status, &id);
    }
    Response::text(200, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse() {
        assert_eq!(parse_wait("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_wait("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_wait("x"), None);
        assert_eq!(crate::http::percent_decode("a%2Fb%20c"), "a/b c");
    }
}

//! A Kubernetes API test server, written from the public API documentation
//! ("API Concepts": resource versions, efficient detection of changes, watch
//! bookmarks, retrieving large results in chunks, streaming lists; "Status"
//! objects; RBAC's forbidden messages), so the Kubernetes backend can be tested
//! here without a cluster. Plain `std` threads and `serde_json`.
//!
//! What it serves, for `configmaps`, `secrets`, `services` (core `v1`) and
//! `endpointslices` (`discovery.k8s.io/v1`), namespaced or across namespaces:
//!
//! - `GET` of one object, or `404 NotFound`;
//! - list: `resourceVersion` unset (most recent), `0` (any), or `N` with
//!   `resourceVersionMatch=NotOlderThan|Exact` (legacy: `N` alone is
//!   `NotOlderThan`, `Exact` with `limit`), `limit` + `continue` pages at one
//!   resourceVersion, `410 Expired` for a compacted one, `422` for
//!   `resourceVersionMatch` without `resourceVersion`, `504` for a future one;
//! - `watch=true`: chunked `ADDED`/`MODIFIED`/`DELETED` events (one JSON object
//!   per line) from `resourceVersion` (unset or `0`: synthetic `ADDED` for the
//!   current state first), `BOOKMARK`s with `allowWatchBookmarks=true` (on
//!   [`ApiServer::send_bookmarks`] and just before a `timeoutSeconds` ends the
//!   watch), `sendInitialEvents=true` with the `k8s.io/initial-events-end`
//!   bookmark, and for a compacted resourceVersion `200` then one `ERROR` event
//!   carrying a `410 Expired` Status, as the real server does;
//! - `fieldSelector` on `metadata.name` / `metadata.namespace` (`=`, `==`,
//!   `!=`; others `400`), `labelSelector` (`=`, `==`, `!=`, `in`, `notin`,
//!   exists, `!`); an object that starts or stops matching during a watch shows
//!   up as `ADDED` / `DELETED`;
//! - bearer-token auth (`401` without the token); `403 Forbidden` with the
//!   standard RBAC message for verbs switched off with [`ApiServer::forbid`]
//!   (or only at the cluster scope, [`ApiServer::forbid_cluster_wide`]);
//! - no-op updates (same content) make no new resourceVersion and no event.
//!
//! Test hooks: [`ApiServer::apply`] / [`ApiServer::delete`] objects,
//! [`ApiServer::compact`] history, [`ApiServer::close_watches`] (as a timeout
//! would), [`ApiServer::stop`] / [`ApiServer::start_again`] on the same port
//! (the store survives, as etcd would), and a log of requests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// The bearer token the server accepts.
pub const TOKEN: &str = "sidekick-test-token";
/// The user RBAC messages name.
pub const USER: &str = "system:serviceaccount:default:sidekick";

/// A resource the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// Its name in URLs (`configmaps`).
    pub plural: &'static str,
    /// Its `kind` (`ConfigMap`).
    pub kind: &'static str,
    /// Its API group (`""` for core).
    pub group: &'static str,
    /// Its API version (`v1`).
    pub version: &'static str,
}

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `configmaps`, or `endpointslices.discovery.k8s.io`, as in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every resource the server serves.
pub const RESOURCES: [Resource; 4] = [
    Resource {
        plural: "configmaps",
        kind: "ConfigMap",
        group: "",
        version: "v1",
    },
    Resource {
        plural: "secrets",
        kind: "Secret",
        group: "",
        version: "v1",
    },
    Resource {
        plural: "services",
        kind: "Service",
        group: "",
        version: "v1",
    },
    Resource {
        plural: "endpointslices",
        kind: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
    },
];

fn resource_by_kind(kind: &str) -> Option<Resource> {
    RESOURCES.iter().copied().find(|r| r.kind == kind)
}

fn resource_by_plural(plural: &str) -> Option<Resource> {
    RESOURCES.iter().copied().find(|r| r.plural == plural)
}

/// `(plural, namespace, name)`, ordered as the server's storage keys are.
type Key = (String, String, String);

/// One change in the history.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: &'static str,
    key: Key,
    /// The object after the change (before it, for `DELETED`, with the
    /// deletion's resourceVersion).
    object: Value,
    /// The object before the change (`None` for `ADDED`).
    old: Option<Value>,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// `get`, `list`, `watch`, or empty for other paths.
    pub verb: String,
    /// The resource's plural (`configmaps`), or empty.
    pub resource: String,
    /// The namespace in the path, or empty.
    pub namespace: String,
    /// HTTP status answered.
    pub status: u16,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Objects as of `compacted`.
    base: BTreeMap<Key, Value>,
    /// Changes after `compacted`, oldest first.
    history: Vec<Change>,
    compacted: u64,
    uid: u64,
    forbidden: BTreeSet<(String, String)>,
    /// Like `forbidden`, for cluster-scope requests only (no namespace in the
    /// path): a Role in each namespace but no ClusterRole.
    forbidden_cluster: BTreeSet<(String, String)>,
    /// Bumped to end every open watch.
    watch_epoch: u64,
    /// Bumped to make every open watch send a bookmark.
    bookmark_epoch: u64,
    /// Bumped by `stop`, so that the old connections' threads end.
    generation: u64,
    requests: Vec<Request>,
    open_watches: BTreeMap<String, usize>,
    /// `410 Expired` answers and ERROR events sent.
    expired: usize,
}

impl Store {
    /// The objects of `plural` as of `rv` (which must be >= `compacted`).
    fn state_at(&self, rv: u64) -> BTreeMap<Key, Value> {
        if rv >= self.rv {
            return self.objects.clone();
        }
        let mut state = self.base.clone();
        for c in self.history.iter().take_while(|c| c.rv <= rv) {
            if c.kind == "DELETED" {
                state.remove(&c.key);
            } else {
                state.insert(c.key.clone(), c.object.clone());
            }
        }
        state
    }
}

struct Inner {
    store: Mutex<Store>,
    changed: Condvar,
    port: u16,
    /// Live connections by id, to shut down on `stop`.
    conns: Mutex<BTreeMap<u64, TcpStream>>,
    next_conn: std::sync::atomic::AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The test server. Stops when dropped.
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl ApiServer {
    /// Starts on a free loopback port.
    pub fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test API server");
        let port = listener.local_addr().expect("local addr").port();
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::default()),
            changed: Condvar::new(),
            port,
            conns: Mutex::new(BTreeMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            acceptor: Mutex::new(None),
        });
        let server = ApiServer { inner };
        server.serve(listener);
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    /// The port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// A kubeconfig for this server, the token user, and `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {namespace}\n\
             current-context: test\nusers:\n- name: test\n  user:\n    token: {TOKEN}\n",
            self.url()
        )
    }

    fn serve(&self, listener: TcpListener) {
        self.inner.stopping.store(false, Ordering::SeqCst);
        let inner = Arc::clone(&self.inner);
        let handle = thread::spawn(move || {
            for conn in listener.incoming() {
                if inner.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = conn.try_clone() {
                    inner
                        .conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, clone);
                }
                let generation = inner.lock().generation;
                let worker = Arc::clone(&inner);
                let t = thread::spawn(move || {
                    serve_connection(&worker, conn, generation);
                    // The clone kept for `stop` holds the socket open: close
                    // it for real, so the client sees the end.
                    let kept = worker
                        .conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    if let Some(c) = kept {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                });
                let mut threads = inner.threads.lock().unwrap_or_else(|p| p.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.push(t);
            }
        });
        *self
            .inner
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Stops listening and drops every connection (watches end mid-stream, as
    /// when an API server goes away). The store is kept.
    pub fn stop(&self) {
        let Some(acceptor) = self
            .inner
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        self.inner.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.inner.port));
        let _ = acceptor.join();
        {
            let mut store = self.inner.lock();
            store.generation += 1;
        }
        self.inner.changed.notify_all();
        for conn in self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let threads: Vec<JoinHandle<()>> = self
            .inner
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Listens again on the same port after [`ApiServer::stop`].
    pub fn start_again(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.inner.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("rebind port {}: {e}", self.inner.port),
            }
        };
        self.serve(listener);
    }

    /// Creates or replaces an object (`kind`, `metadata.namespace` — default
    /// `default` — and `metadata.name` say which). The server fills `uid`,
    /// `creationTimestamp` and `resourceVersion`. Same content as now: no new
    /// resourceVersion, no event. Returns the object's resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = object["kind"]
            .as_str()
            .expect("object has a kind")
            .to_string();
        let res = resource_by_kind(&kind).unwrap_or_else(|| panic!("unknown kind {kind}"));
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("object has a name")
            .to_string();
        object["apiVersion"] = json!(res.api_version());
        object["metadata"]["namespace"] = json!(ns);
        let key = (res.plural.to_string(), ns, name);
        let mut store = self.inner.lock();
        let old = store.objects.get(&key).cloned();
        if let Some(old) = &old {
            if strip_server_fields(old) == strip_server_fields(&object) {
                return rv_of(old);
            }
        }
        store.rv += 1;
        let rv = store.rv;
        let meta = &mut object["metadata"];
        match &old {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                store.uid += 1;
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", store.uid));
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.objects.insert(key.clone(), object.clone());
        store.history.push(Change {
            rv,
            kind: if old.is_some() { "MODIFIED" } else { "ADDED" },
            key,
            object,
            old,
        });
        drop(store);
        self.inner.changed.notify_all();
        rv
    }

    /// Deletes an object; false when there was none.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let key = (plural.to_string(), namespace.to_string(), name.to_string());
        let mut store = self.inner.lock();
        let Some(old) = store.objects.remove(&key) else {
            return false;
        };
        store.rv += 1;
        let rv = store.rv;
        let mut object = old.clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.history.push(Change {
            rv,
            kind: "DELETED",
            key,
            object,
            old: Some(old),
        });
        drop(store);
        self.inner.changed.notify_all();
        true
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// Forgets the history up to now, as etcd compaction does: lists and
    /// watches from an older resourceVersion get `410 Gone` from now on.
    pub fn compact(&self) {
        let mut store = self.inner.lock();
        store.compacted = store.rv;
        store.base = store.objects.clone();
        store.history.clear();
    }

    /// Ends every open watch cleanly (as `timeoutSeconds` would); clients
    /// re-watch from the last resourceVersion they saw.
    pub fn close_watches(&self) {
        self.inner.lock().watch_epoch += 1;
        self.inner.changed.notify_all();
    }

    /// Makes every open watch that allowed bookmarks send one now.
    pub fn send_bookmarks(&self) {
        self.inner.lock().bookmark_epoch += 1;
        self.inner.changed.notify_all();
    }

    /// Refuses `verb` (`get`, `list`, `watch`) on `plural` with `403`.
    pub fn forbid(&self, verb: &str, plural: &str) {
        self.inner
            .lock()
            .forbidden
            .insert((verb.to_string(), plural.to_string()));
    }

    /// Answers `403 Forbidden` to `verb` on `plural` at the cluster scope
    /// (every namespace at once), while requests in one namespace still pass:
    /// what a service account with Roles but no ClusterRole meets.
    pub fn forbid_cluster_wide(&self, verb: &str, plural: &str) {
        self.inner
            .lock()
            .forbidden_cluster
            .insert((verb.to_string(), plural.to_string()));
    }

    /// Undoes [`ApiServer::forbid`].
    pub fn allow(&self, verb: &str, plural: &str) {
        self.inner
            .lock()
            .forbidden
            .remove(&(verb.to_string(), plural.to_string()));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().requests.clone()
    }

    /// Requests with `verb` on `plural` so far.
    pub fn count(&self, verb: &str, plural: &str) -> usize {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == plural)
            .count()
    }

    /// How many times the server answered `410 Expired` (list or watch).
    pub fn expired_count(&self) -> usize {
        self.inner.lock().expired
    }

    /// Watches on `plural` open right now.
    pub fn open_watches(&self, plural: &str) -> usize {
        self.inner
            .lock()
            .open_watches
            .get(plural)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `cond` holds for the server, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&ApiServer) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rv_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The object without the fields the server owns, to spot no-op updates.
fn strip_server_fields(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            meta.remove(f);
        }
    }
    o
}

// ---------------------------------------------------------------------------
// HTTP/1.1

struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (and skips its body); `None` at end of stream.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = HttpRequest {
        method,
        target,
        headers,
    };
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > 0 {
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).ok()?;
    }
    Some(req)
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        422 => "Unprocessable Entity",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_json(out: &mut impl Write, code: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        out,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: {}\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )?;
    out.flush()
}

fn write_chunk(out: &mut impl Write, line: &Value) -> std::io::Result<()> {
    let mut text = line.to_string();
    text.push('\n');
    write!(out, "{:x}\r\n{text}\r\n", text.len())
}

/// A `Status` failure object.
fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        s["details"] = details;
    }
    s
}

fn serve_connection(inner: &Inner, conn: TcpStream, generation: u64) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = BufWriter::new(conn);
    while let Some(req) = read_request(&mut reader) {
        if inner.lock().generation != generation {
            return;
        }
        let keep = handle(inner, &req, &mut out, generation);
        if !keep
            || req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

/// Answers one request; false when the connection must close.
fn handle(
    inner: &Inner,
    req: &HttpRequest,
    out: &mut BufWriter<TcpStream>,
    generation: u64,
) -> bool {
    let (path, query_text) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let query = parse_query(query_text);
    let mut log = Request {
        method: req.method.clone(),
        path: path.to_string(),
        query: query.clone(),
        verb: String::new(),
        resource: String::new(),
        namespace: String::new(),
        status: 0,
    };
    let answer = route(inner, req, path, &query, &mut log);
    log.status = match &answer {
        Answer::Json(code, _) => *code,
        Answer::Watch(_) => 200,
    };
    let mut store = inner.lock();
    if log.status == 410 {
        store.expired += 1;
    }
    store.requests.push(log);
    drop(store);
    match answer {
        Answer::Json(code, body) => write_json(out, code, &body).is_ok(),
        Answer::Watch(w) => watch(inner, w, out, generation),
    }
}

enum Answer {
    Json(u16, Value),
    Watch(WatchSpec),
}

fn not_found_path() -> Answer {
    Answer::Json(
        404,
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        ),
    )
}

fn route(
    inner: &Inner,
    req: &HttpRequest,
    path: &str,
    query: &BTreeMap<String, String>,
    log: &mut Request,
) -> Answer {
    let authorized = req
        .header("authorization")
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return Answer::Json(
            401,
            status(401, "Unauthorized", "Unauthorized", Value::Null),
        );
    }
    match path {
        "/version" => {
            return Answer::Json(
                200,
                json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-sidekick-test", "platform": "linux/amd64"}),
            )
        }
        "/api" => {
            return Answer::Json(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", inner.port)}]}),
            )
        }
        "/apis" => {
            return Answer::Json(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "discovery.k8s.io", "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}}]}),
            )
        }
        _ => {}
    }
    // /api/v1/[namespaces/NS/]PLURAL[/NAME], /apis/GROUP/VERSION/[namespaces/NS/]PLURAL[/NAME]
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", g, "v1", rest @ ..] => (*g, rest),
        _ => return not_found_path(),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(*name)),
        _ => return not_found_path(),
    };
    let Some(res) = resource_by_plural(plural).filter(|r| r.group == group) else {
        return not_found_path();
    };
    let watching = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let verb = match (name, watching) {
        (_, true) => "watch",
        (Some(_), false) => "get",
        (None, false) => "list",
    };
    log.verb = verb.to_string();
    log.resource = res.plural.to_string();
    log.namespace = namespace.unwrap_or("").to_string();
    if req.method != "GET" {
        return Answer::Json(
            405,
            status(
                405,
                "MethodNotAllowed",
                &format!(
                    "the test server only reads; {} is not supported",
                    req.method
                ),
                json!({}),
            ),
        );
    }
    let denied = {
        let store = inner.lock();
        let rule = (verb.to_string(), res.plural.to_string());
        store.forbidden.contains(&rule)
            || (namespace.is_none() && store.forbidden_cluster.contains(&rule))
    };
    if denied {
        return Answer::Json(403, forbidden(res, verb, namespace, name));
    }
    let field = match query.get("fieldSelector").map(|s| FieldSelector::parse(s)) {
        Some(Ok(f)) => f,
        Some(Err(msg)) => return Answer::Json(400, status(400, "BadRequest", &msg, Value::Null)),
        None => FieldSelector::default(),
    };
    let label = match query.get("labelSelector").map(|s| LabelSelector::parse(s)) {
        Some(Ok(l)) => l,
        Some(Err(msg)) => return Answer::Json(400, status(400, "BadRequest", &msg, Value::Null)),
        None => LabelSelector::default(),
    };
    let mut field = field;
    if let (Some(n), true) = (name, watching) {
        // A watch on one object by path is a watch with its name selected.
        field
            .terms
            .push(("metadata.name".into(), true, n.to_string()));
    }
    let filter = Filter {
        res,
        namespace: namespace.map(str::to_string),
        field,
        label,
    };
    if watching {
        return start_watch(inner, filter, query);
    }
    if let Some(name) = name {
        let ns = namespace.unwrap_or("");
        let store = inner.lock();
        let key = (res.plural.to_string(), ns.to_string(), name.to_string());
        return match store.objects.get(&key) {
            Some(obj) => Answer::Json(200, obj.clone()),
            None => Answer::Json(
                404,
                status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", res.qualified()),
                    json!({"name": name, "group": res.group, "kind": res.plural}),
                ),
            ),
        };
    }
    list(inner, &filter, query)
}

/// The RBAC message, as the authorizer words it.
fn forbidden(res: Resource, verb: &str, namespace: Option<&str>, name: Option<&str>) -> Value {
    let subject = match name {
        Some(n) => format!("{} \"{n}\"", res.qualified()),
        None => res.qualified(),
    };
    let scope = match namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
        res.plural, res.group
    );
    let mut details = json!({"group": res.group, "kind": res.plural});
    if let Some(n) = name {
        details["name"] = json!(n);
    }
    status(403, "Forbidden", &message, details)
}

fn parse_query(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// One query component as `application/x-www-form-urlencoded` has it: `+`
/// is a space, `%XX` a byte (a malformed escape stays as it is).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone, Default)]
struct FieldSelector {
    /// `(field, equal, value)`.
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str().unwrap_or(""),
                _ => object["metadata"]["namespace"].as_str().unwrap_or(""),
            };
            (actual == value) == *equal
        })
    }

    fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

#[derive(Debug, Clone)]
enum LabelTerm {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
struct LabelSelector {
    terms: Vec<LabelTerm>,
}

impl LabelSelector {
    fn parse(text: &str) -> Result<LabelSelector, String> {
        // Split on commas outside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        let mut terms = Vec::new();
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unable to parse requirement: {part}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let term = if let Some(k) = part.strip_prefix('!') {
                LabelTerm::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelTerm::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelTerm::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelTerm::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                LabelTerm::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                LabelTerm::In(k.trim().into(), set(rest)?)
            } else if part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelTerm::Exists(part.to_string())
            } else {
                return Err(format!("unable to parse requirement: {part}"));
            };
            terms.push(term);
        }
        Ok(LabelSelector { terms })
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.terms.iter().all(|t| match t {
            LabelTerm::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelTerm::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelTerm::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelTerm::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelTerm::Exists(k) => get(k).is_some(),
            LabelTerm::NotExists(k) => get(k).is_none(),
        })
    }

    fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// What a list or watch selects.
#[derive(Debug, Clone)]
struct Filter {
    res: Resource,
    namespace: Option<String>,
    field: FieldSelector,
    label: LabelSelector,
}

impl Filter {
    fn covers_key(&self, key: &Key) -> bool {
        key.0 == self.res.plural && self.namespace.as_ref().is_none_or(|ns| *ns == key.1)
    }

    fn matches(&self, object: &Value) -> bool {
        self.field.matches(object) && self.label.matches(object)
    }
}

// ---------------------------------------------------------------------------
// List

fn bad_rv(value: &str) -> Answer {
    Answer::Json(
        400,
        status(
            400,
            "BadRequest",
            &format!("invalid resource version: {value:?}"),
            Value::Null,
        ),
    )
}

fn expired(message: &str) -> Answer {
    Answer::Json(410, status(410, "Expired", message, Value::Null))
}

fn invalid_list_options(message: &str) -> Answer {
    Answer::Json(
        422,
        status(
            422,
            "Invalid",
            &format!("ListOptions.meta.k8s.io \"\" is invalid: {message}"),
            json!({"group": "meta.k8s.io", "kind": "ListOptions"}),
        ),
    )
}

fn list(inner: &Inner, filter: &Filter, query: &BTreeMap<String, String>) -> Answer {
    let rv_param = query.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = query.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let limit: Option<usize> = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l| l > 0);
    let store = inner.lock();
    // Where the list is read: (resourceVersion, start after this key).
    let (at, after): (u64, Option<Key>) = if let Some(token) =
        query.get("continue").filter(|s| !s.is_empty())
    {
        if rv_param.is_some() {
            return invalid_list_options(
                "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
            );
        }
        let Some((rv, key)) = decode_continue(token) else {
            return Answer::Json(
                400,
                status(400, "BadRequest", "continue key is not valid", Value::Null),
            );
        };
        if rv < store.compacted {
            return expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter, or use the continue \
                 token in this response to retrieve the remainder of the results. Continuing with \
                 the provided token results in an inconsistent list - objects that were created, \
                 modified, or deleted between the time the first chunk was returned and now may \
                 show up in the list.",
            );
        }
        (rv, Some(key))
    } else {
        match (rv_param, rv_match.map(String::as_str)) {
            (None, Some(_)) => {
                return invalid_list_options(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            }
            (None, None) => (store.rv, None),
            (Some(v), m) => {
                let Ok(rv) = v.parse::<u64>() else {
                    return bad_rv(v);
                };
                let exact = match m {
                    Some("Exact") => {
                        if rv == 0 {
                            return invalid_list_options(
                                "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                            );
                        }
                        true
                    }
                    Some("NotOlderThan") => false,
                    Some(other) => {
                        return invalid_list_options(&format!(
                            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                        ))
                    }
                    // Legacy: a non-zero resourceVersion with limit reads exactly there.
                    None => rv != 0 && limit.is_some(),
                };
                if rv > store.rv {
                    return Answer::Json(
                        504,
                        status(
                            504,
                            "Timeout",
                            &format!("Too large resource version: {rv}, current: {}", store.rv),
                            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                        ),
                    );
                }
                if exact {
                    if rv < store.compacted {
                        return expired(&format!(
                            "too old resource version: {rv} ({})",
                            store.compacted
                        ));
                    }
                    (rv, None)
                } else {
                    (store.rv, None)
                }
            }
        }
    };
    let state = store.state_at(at);
    drop(store);
    let matching: Vec<(&Key, &Value)> = state
        .iter()
        .filter(|(k, o)| filter.covers_key(k) && filter.matches(o))
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .collect();
    let take = limit.unwrap_or(usize::MAX).min(matching.len());
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if take < matching.len() {
        let last = matching[take - 1].0;
        metadata["continue"] = json!(encode_continue(at, last));
        if filter.field.is_empty() && filter.label.is_empty() {
            metadata["remainingItemCount"] = json!(matching.len() - take);
        }
    }
    let items: Vec<Value> = matching[..take]
        .iter()
        .map(|(_, o)| {
            // List items carry no kind / apiVersion of their own.
            let mut o = (*o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    Answer::Json(
        200,
        json!({
            "kind": format!("{}List", filter.res.kind),
            "apiVersion": filter.res.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    )
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let raw =
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{}/{}/{}", key.0, key.1, key.2)});
    base64(raw.to_string().as_bytes())
}

fn decode_continue(token: &str) -> Option<(u64, Key)> {
    let raw = STANDARD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let rv = v["rv"].as_u64()?;
    let mut parts = v["start"].as_str()?.splitn(3, '/');
    let key = (
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    );
    Some((rv, key))
}

/// Standard base64 with padding (Secret `data` and continue tokens).
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------
// Watch

struct WatchSpec {
    filter: Filter,
    /// Deliver changes with a resourceVersion above this.
    from: u64,
    /// Synthetic `ADDED` events for the state at `from` first.
    initial: bool,
    /// Close with a bookmark marking the end of the initial events.
    initial_end_bookmark: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
}

fn start_watch(inner: &Inner, filter: Filter, query: &BTreeMap<String, String>) -> Answer {
    let rv_param = query.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = query.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    if send_initial {
        if rv_match.map(String::as_str) != Some("NotOlderThan") {
            return invalid_list_options(
                "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
            );
        }
        if !bookmarks {
            return invalid_list_options(
                "sendInitialEvents: Forbidden: sendInitialEvents requires setting allowWatchBookmarks=true",
            );
        }
    } else if rv_match.is_some() {
        return invalid_list_options(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        );
    }
    let current = inner.lock().rv;
    let (from, initial) = match rv_param {
        None => (current, true),
        Some(v) if v == "0" => (current, true),
        Some(v) => match v.parse::<u64>() {
            Ok(rv) => (rv, send_initial),
            Err(_) => return bad_rv(v),
        },
    };
    Answer::Watch(WatchSpec {
        filter,
        from,
        initial: initial || send_initial,
        initial_end_bookmark: send_initial,
        bookmarks,
        timeout,
    })
}

fn event(kind: &str, mut object: Value, res: Resource) -> Value {
    object["kind"] = json!(res.kind);
    object["apiVersion"] = json!(res.api_version());
    json!({"type": kind, "object": object})
}

fn bookmark(res: Resource, rv: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version(), "metadata": metadata}})
}

/// Streams a watch; true when the connection may serve another request.
fn watch(inner: &Inner, spec: WatchSpec, out: &mut BufWriter<TcpStream>, generation: u64) -> bool {
    let res = spec.filter.res;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n";
    if out
        .write_all(head.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return false;
    }
    {
        let mut store = inner.lock();
        *store
            .open_watches
            .entry(res.plural.to_string())
            .or_default() += 1;
    }
    let result = stream_events(inner, &spec, out, generation);
    {
        let mut store = inner.lock();
        if let Some(n) = store.open_watches.get_mut(res.plural) {
            *n = n.saturating_sub(1);
        }
    }
    match result {
        // The watch ended on the server's side: end the chunked body.
        Ok(true) => out
            .write_all(b"0\r\n\r\n")
            .and_then(|()| out.flush())
            .is_ok(),
        Ok(false) | Err(_) => false,
    }
}

/// Ok(true): ended cleanly (timeout, close_watches, 410); Ok(false): the
/// server stops; Err: the client went away.
fn stream_events(
    inner: &Inner,
    spec: &WatchSpec,
    out: &mut BufWriter<TcpStream>,
    generation: u64,
) -> std::io::Result<bool> {
    let res = spec.filter.res;
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut pos = spec.from;
    let mut store = inner.lock();
    let epoch = store.watch_epoch;
    let mut bookmark_epoch = store.bookmark_epoch;
    if spec.from < store.compacted {
        let msg = format!(
            "too old resource version: {} ({})",
            spec.from, store.compacted
        );
        store.expired += 1;
        drop(store);
        let err = json!({"type": "ERROR", "object": status(410, "Expired", &msg, Value::Null)});
        write_chunk(out, &err)?;
        out.flush()?;
        return Ok(true);
    }
    if spec.initial {
        let state = store.state_at(pos);
        drop(store);
        for (key, object) in &state {
            if spec.filter.covers_key(key) && spec.filter.matches(object) {
                write_chunk(out, &event("ADDED", object.clone(), res))?;
            }
        }
        if spec.initial_end_bookmark {
            write_chunk(out, &bookmark(res, pos, true))?;
        }
        out.flush()?;
        store = inner.lock();
    }
    loop {
        if store.generation != generation {
            return Ok(false);
        }
        if store.watch_epoch != epoch {
            return Ok(true);
        }
        if pos < store.compacted {
            // Changes this watch had not sent yet were compacted away.
            let msg = format!("too old resource version: {pos} ({})", store.compacted);
            store.expired += 1;
            drop(store);
            write_chunk(
                out,
                &json!({"type": "ERROR", "object": status(410, "Expired", &msg, Value::Null)}),
            )?;
            out.flush()?;
            return Ok(true);
        }
        let mut lines = Vec::new();
        let start = pos;
        for change in store.history.iter().filter(|c| c.rv > start) {
            pos = change.rv;
            if !spec.filter.covers_key(&change.key) {
                continue;
            }
            let was = change.old.as_ref().is_some_and(|o| spec.filter.matches(o));
            let is = change.kind != "DELETED" && spec.filter.matches(&change.object);
            let line = match (change.kind, was, is) {
                ("DELETED", true, _) => event("DELETED", change.object.clone(), res),
                (_, false, true) => event("ADDED", change.object.clone(), res),
                (_, true, true) => event("MODIFIED", change.object.clone(), res),
                (_, true, false) => {
                    // Stopped matching: the client sees it go, at this resourceVersion.
                    let mut old = change.old.clone().unwrap_or(Value::Null);
                    old["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                    event("DELETED", old, res)
                }
                _ => continue,
            };
            lines.push(line);
        }
        let want_bookmark = spec.bookmarks && store.bookmark_epoch != bookmark_epoch;
        bookmark_epoch = store.bookmark_epoch;
        let now = Instant::now();
        let timed_out = deadline.is_some_and(|d| now >= d);
        if !lines.is_empty() || want_bookmark || timed_out {
            let rv = store.rv;
            drop(store);
            for line in &lines {
                write_chunk(out, line)?;
            }
            if want_bookmark || (timed_out && spec.bookmarks) {
                // Everything up to `rv` was delivered above.
                write_chunk(out, &bookmark(res, rv.max(pos), false))?;
            }
            out.flush()?;
            if timed_out {
                return Ok(true);
            }
            store = inner.lock();
            continue;
        }
        let wait = deadline
            .map_or(Duration::from_millis(500), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(500));
        let (guard, timeout) = inner
            .changed
            .wait_timeout(store, wait)
            .unwrap_or_else(|p| p.into_inner());
        store = guard;
        if timeout.timed_out() && client_gone(out.get_ref()) {
            return Err(std::io::Error::other("client went away"));
        }
    }
}

/// True when the peer closed its end (a read would give end of file).
fn client_gone(conn: &TcpStream) -> bool {
    if conn.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 1];
    let gone = matches!(conn.peek(&mut buf), Ok(0));
    let _ = conn.set_nonblocking(false);
    gone
}

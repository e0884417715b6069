//! An in-process Vault server for tests, written from Vault's public HTTP
//! API documentation (KV secrets engine v1 and v2, token, AppRole and
//! Kubernetes auth methods, `sys/mounts`, `sys/internal/ui/mounts`,
//! `sys/health`). No Vault binary can be installed on the test machines,
//! so the backend's tests, the binary's end-to-end tests and the benchmark
//! talk to this.
//!
//! Plain `std` threads and `serde_json`: each connection gets a thread.
//!
//! What it reproduces:
//! - Every request but `sys/health` and the logins needs `X-Vault-Token`;
//!   a missing, unknown, revoked or expired token gets `403
//!   {"errors":["permission denied"]}`, and so does a path outside the
//!   token's [`Policy`]. Errors are always `{"errors":[...]}`.
//! - KV v2 (`POST sys/mounts/<m>` with `{"type":"kv","options":{"version":"2"}}`):
//!   `GET|POST|PUT|DELETE <m>/data/<p>` (read the current version with its
//!   `metadata`; write a new version, answering its metadata; soft-delete
//!   the current version: a read then answers 404 with `data: null` and
//!   the `deletion_time`), `GET <m>/metadata/<p>` (`current_version`,
//!   `versions` with `deletion_time`/`destroyed`), `DELETE <m>/metadata/<p>`
//!   (every version gone), and listing with `LIST <m>/metadata/<p>` or `GET
//!   ...?list=true` (`{"data":{"keys":[...]}}`, folders ending in `/`; 404
//!   `{"errors":[]}` when empty). A folder whose secrets are all
//!   metadata-deleted disappears; soft-deleted secrets are still listed.
//! - KV v1 (`options.version` "1" or absent): `GET|POST|PUT|DELETE <m>/<p>`
//!   and the same listings; reads carry `lease_duration: 2764800`.
//! - `GET sys/internal/ui/mounts/<path>`: the mount holding the path
//!   (`path`, `type`, `options.version`), 403 when the token may touch
//!   nothing there (as the CLI's preflight sees it).
//! - `GET auth/token/lookup-self` (`ttl`, `renewable`, `policies`,
//!   `expire_time`), `POST auth/token/renew-self` (the TTL again, capped by
//!   the token's max TTL; `400 lease is not renewable` for others),
//!   `POST auth/token/create` (children of the root token: `policies`,
//!   `ttl`, `renewable`, `explicit_max_ttl`).
//! - `POST auth/approle/login` (`role_id`, `secret_id`; `400 invalid role or
//!   secret ID` otherwise) and `POST auth/kubernetes/login` (`role`, `jwt`;
//!   `400 invalid role name` for an unknown role, `403 permission denied`
//!   for a JWT the role does not accept), answering an `auth` block with
//!   `client_token`, `lease_duration`, `renewable`.
//! - Sealing ([`FakeVault::seal`]): everything but `sys/health` and
//!   `sys/seal-status` answers `503 {"errors":["Vault is sealed"]}`.
//! - Injected failures ([`FakeVault::fail_next`]: `429` rate limits, `500`s)
//!   and death and restart on the same port with the data kept
//!   ([`FakeVault::stop`], [`FakeVault::restart`]).
//! - For tests: [`FakeVault::count`] (requests per kind) and
//!   [`FakeVault::log`].
//!
//! Not reproduced: policies in HCL (a [`Policy`] is a list of allowed path
//! prefixes, set by the test), namespaces, response wrapping, check-and-set,
//! `max_versions`, leases of dynamic secrets, TLS.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::acceptor::Acceptor;

/// The root token every fake starts with.
pub const ROOT_TOKEN: &str = "root";

/// What a token may touch: API paths (without `/v1/`) starting with one of
/// these prefixes (`""` for everything). Token self-lookup and renewal are
/// always allowed, as Vault's `default` policy does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Allowed path prefixes (`secret/data/app`, `secret/metadata/app`).
    pub allow: Vec<String>,
}

impl Policy {
    /// Everything (the root token's).
    pub fn all() -> Policy {
        Policy {
            allow: vec![String::new()],
        }
    }

    /// Only paths starting with these prefixes.
    pub fn paths(prefixes: &[&str]) -> Policy {
        Policy {
            allow: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn may(&self, path: &str) -> bool {
        self.allow.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// A token's lease.
#[derive(Debug, Clone)]
struct TokenInfo {
    policy: Policy,
    /// TTL granted at issue or last renewal; `None` never expires.
    ttl: Option<Duration>,
    renewed: Instant,
    issued: Instant,
    renewable: bool,
    /// Longest life from issue; `None`: no cap.
    max_ttl: Option<Duration>,
}

impl TokenInfo {
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.ttl
            .map(|ttl| (self.renewed + ttl).saturating_duration_since(now))
    }

    fn valid(&self, now: Instant) -> bool {
        self.remaining(now).is_none_or(|r| r > Duration::ZERO)
    }
}

/// What a login hands out.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The tokens' policy.
    pub policy: Policy,
    /// Their TTL.
    pub ttl: Duration,
    /// Their max TTL (renewals stop there).
    pub max_ttl: Option<Duration>,
    /// Whether they can be renewed.
    pub renewable: bool,
}

impl Grant {
    /// Renewable tokens with `policy` and `ttl`, no max TTL.
    pub fn new(policy: Policy, ttl: Duration) -> Grant {
        Grant {
            policy,
            ttl,
            max_ttl: None,
            renewable: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Version {
    data: Map<String, Value>,
    created: String,
    deleted: Option<String>,
    destroyed: bool,
}

#[derive(Debug, Clone, Default)]
struct Kv2Secret {
    versions: Vec<Version>,
    created: String,
    updated: String,
}

#[derive(Debug, Clone, Default)]
struct MountData {
    version: u8,
    kv1: BTreeMap<String, Map<String, Value>>,
    kv2: BTreeMap<String, Kv2Secret>,
}

impl MountData {
    /// Names directly under `dir` (`""` or `a/b/`): secrets, and folders with `/`.
    fn list(&self, dir: &str) -> Vec<String> {
        let names: Vec<&String> = match self.version {
            2 => self.kv2.keys().collect(),
            _ => self.kv1.keys().collect(),
        };
        let mut out: Vec<String> = names
            .into_iter()
            .filter_map(|p| p.strip_prefix(dir))
            .filter(|rest| !rest.is_empty())
            .map(|rest| match rest.find('/') {
                Some(i) => rest[..=i].to_string(),
                None => rest.to_string(),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, TokenInfo>,
    /// role_id -> (secret_id, grant).
    approles: HashMap<String, (Option<String>, Grant)>,
    /// role -> (accepted JWT, grant).
    k8s_roles: HashMap<String, (String, Grant)>,
    mounts: BTreeMap<String, MountData>,
    sealed: bool,
    failures: VecDeque<(u16, String)>,
    stopped: bool,
    incarnation: u64,
    counts: BTreeMap<&'static str, u64>,
    log: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    next_token: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running fake Vault on `127.0.0.1`. Stops when dropped.
pub struct FakeVault {
    shared: Arc<Shared>,
    acceptor: Acceptor,
}

impl Default for FakeVault {
    fn default() -> Self {
        Self::start()
    }
}

impl FakeVault {
    /// Listens on a free port of 127.0.0.1, unsealed, with the root token
    /// [`ROOT_TOKEN`] and no mounts.
    pub fn start() -> FakeVault {
        let (acceptor, listener) = Acceptor::bind();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            next_token: AtomicU64::new(1),
        });
        let now = Instant::now();
        shared.lock().tokens.insert(
            ROOT_TOKEN.to_string(),
            TokenInfo {
                policy: Policy::all(),
                ttl: None,
                renewed: now,
                issued: now,
                renewable: false,
                max_ttl: None,
            },
        );
        let fake = FakeVault { shared, acceptor };
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

    /// Issues a token with `policy`, `ttl` (`None`: never expires), and
    /// optionally a max TTL; returns it.
    pub fn token(
        &self,
        policy: Policy,
        ttl: Option<Duration>,
        renewable: bool,
        max_ttl: Option<Duration>,
    ) -> String {
        let id = self.new_token_id();
        let now = Instant::now();
        self.shared.lock().tokens.insert(
            id.clone(),
            TokenInfo {
                policy,
                ttl,
                renewed: now,
                issued: now,
                renewable,
                max_ttl,
            },
        );
        id
    }

    /// Revokes a token: it gets 403 from now on.
    pub fn revoke(&self, token: &str) {
        self.shared.lock().tokens.remove(token);
    }

    /// Registers an AppRole role: logins with `role_id` (and `secret_id`)
    /// get tokens of `grant`.
    pub fn approle(&self, role_id: &str, secret_id: Option<&str>, grant: Grant) {
        self.shared
            .lock()
            .approles
            .insert(role_id.to_string(), (secret_id.map(str::to_string), grant));
    }

    /// Registers a Kubernetes auth role accepting `jwt`.
    pub fn k8s_role(&self, role: &str, jwt: &str, grant: Grant) {
        self.shared
            .lock()
            .k8s_roles
            .insert(role.to_string(), (jwt.to_string(), grant));
    }

    /// Seals (`true`) or unseals the vault.
    pub fn seal(&self, sealed: bool) {
        self.shared.lock().sealed = sealed;
    }

    /// The next `n` requests (logins and reads alike) answer `status` with
    /// `message` in `errors`.
    pub fn fail_next(&self, n: usize, status: u16, message: &str) {
        let mut st = self.shared.lock();
        for _ in 0..n {
            st.failures.push_back((status, message.to_string()));
        }
    }

    /// Requests answered so far of `kind`: `data` (KV v2 data reads),
    /// `metadata`, `list`, `kv1` (KV v1 reads), `login`, `lookup`, `renew`,
    /// `preflight`, `write`.
    pub fn count(&self, kind: &str) -> u64 {
        self.shared.lock().counts.get(kind).copied().unwrap_or(0)
    }

    /// Every request so far, as `METHOD /v1/path?query`.
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    fn new_token_id(&self) -> String {
        let n = self.shared.next_token.fetch_add(1, Ordering::SeqCst);
        format!("hvs.fake{n:020}")
    }

    /// Kills the server: stops listening and cuts every open connection.
    /// The data stays for [`FakeVault::restart`].
    pub fn stop(&self) {
        self.acceptor.stop_accepting();
        {
            let mut st = self.shared.lock();
            st.stopped = true;
            st.incarnation += 1;
        }
        self.acceptor.cut_connections();
    }

    /// Listens again on the same port, with the same data and tokens.
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

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    /// Without `/v1/`.
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Map<String, Value> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    fn listing(&self) -> bool {
        self.method == "LIST"
            || (self.method == "GET" && self.query.get("list").is_some_and(|v| v == "true"))
    }
}

struct Response {
    status: u16,
    body: Option<Value>,
}

fn ok(body: Value) -> Response {
    Response {
        status: 200,
        body: Some(body),
    }
}

fn no_content() -> Response {
    Response {
        status: 204,
        body: None,
    }
}

fn error(status: u16, errors: &[&str]) -> Response {
    Response {
        status,
        body: Some(json!({ "errors": errors })),
    }
}

fn denied() -> Response {
    error(403, &["permission denied"])
}

/// The envelope every answer with data comes in.
fn envelope(data: Value, lease_duration: u64) -> Value {
    json!({
        "request_id": "00000000-0000-0000-0000-000000000000",
        "lease_id": "",
        "renewable": false,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

fn serve_connection(shared: &Shared, conn: TcpStream, incarnation: u64) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = conn;
    while let Ok(Some(request)) = read_request(&mut reader) {
        let close = request
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let Some(response) = handle(shared, &request, incarnation) else {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        };
        if write_response(&mut writer, &response, close).is_err() || close {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let Some(r) = crate::http::read_request(reader)? else {
        return Ok(None);
    };
    let path = r
        .path
        .strip_prefix("/v1/")
        .unwrap_or(r.path.trim_start_matches('/'))
        .to_string();
    Ok(Some(Request {
        method: r.method.to_ascii_uppercase(),
        path,
        query: r.query,
        headers: r.headers,
        body: r.body,
    }))
}

fn write_response(w: &mut TcpStream, r: &Response, close: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let body = r
        .body
        .as_ref()
        .map(|b| b.to_string().into_bytes())
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nCache-Control: no-store\r\n",
        r.status
    );
    if r.body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    w.write_all(&out)?;
    w.flush()
}

/// RFC 3339 UTC time of now, as Vault writes `created_time`.
fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// A Go duration (`30s`, `5m`, `1h`) or bare seconds.
fn parse_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_secs),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<u64>() {
                return Some(Duration::from_secs(n));
            }
            let split = s.find(|c: char| !c.is_ascii_digit())?;
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            match unit {
                "ms" => Some(Duration::from_millis(n)),
                "s" => Some(Duration::from_secs(n)),
                "m" => Some(Duration::from_secs(n * 60)),
                "h" => Some(Duration::from_secs(n * 3600)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn count(st: &mut State, kind: &'static str) {
    *st.counts.entry(kind).or_default() += 1;
}

fn handle(shared: &Shared, req: &Request, incarnation: u64) -> Option<Response> {
    let mut st = shared.lock();
    if st.stopped || st.incarnation != incarnation {
        return None;
    }
    let line = match req.query.is_empty() {
        true => format!("{} /v1/{}", req.method, req.path),
        false => {
            let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} /v1/{}?{}", req.method, req.path, q.join("&"))
        }
    };
    st.log.push(line);
    let path = req.path.trim_end_matches('/').to_string();

    if path == "sys/health" || path == "sys/seal-status" {
        let sealed = st.sealed;
        let body = json!({"initialized": true, "sealed": sealed, "standby": false,
                          "version": "1.15.0-fake", "cluster_name": "fake"});
        return Some(Response {
            status: if sealed && path == "sys/health" {
                503
            } else {
                200
            },
            body: Some(body),
        });
    }
    if st.sealed {
        return Some(error(503, &["Vault is sealed"]));
    }
    if let Some((status, message)) = st.failures.pop_front() {
        return Some(error(status, &[message.as_str()]));
    }

    // Logins need no token.
    if let Some(mount) = path
        .strip_prefix("auth/")
        .and_then(|p| p.strip_suffix("/login"))
    {
        if req.method != "POST" && req.method != "PUT" {
            return Some(error(405, &["unsupported operation"]));
        }
        count(&mut st, "login");
        let body = req.json();
        let grant = match mount {
            "approle" => {
                let role_id = body.get("role_id").and_then(Value::as_str).unwrap_or("");
                let secret_id = body.get("secret_id").and_then(Value::as_str);
                match st.approles.get(role_id) {
                    Some((want, grant)) if want.as_deref() == secret_id || want.is_none() => {
                        grant.clone()
                    }
                    _ => return Some(error(400, &["invalid role or secret ID"])),
                }
            }
            "kubernetes" => {
                let role = body.get("role").and_then(Value::as_str).unwrap_or("");
                let jwt = body.get("jwt").and_then(Value::as_str).unwrap_or("");
                match st.k8s_roles.get(role) {
                    None => {
                        return Some(error(
                            400,
                            &[format!("invalid role name \"{role}\"").as_str()],
                        ))
                    }
                    Some((want, _)) if want != jwt => return Some(denied()),
                    Some((_, grant)) => grant.clone(),
                }
            }
            _ => {
                return Some(error(
                    404,
                    &[format!(
                        "no handler for route \"auth/{mount}/login\". route entry not found."
                    )
                    .as_str()],
                ))
            }
        };
        let id = format!(
            "hvs.fake{:020}",
            shared.next_token.fetch_add(1, Ordering::SeqCst)
        );
        let now = Instant::now();
        st.tokens.insert(
            id.clone(),
            TokenInfo {
                policy: grant.policy.clone(),
                ttl: Some(grant.ttl),
                renewed: now,
                issued: now,
                renewable: grant.renewable,
                max_ttl: grant.max_ttl,
            },
        );
        return Some(ok(json!({
            "request_id": "00000000-0000-0000-0000-000000000000",
            "lease_id": "", "renewable": false, "lease_duration": 0, "data": null,
            "wrap_info": null, "warnings": null,
            "auth": {
                "client_token": id, "accessor": "fake-accessor",
                "policies": ["default"], "token_policies": ["default"],
                "metadata": {}, "lease_duration": grant.ttl.as_secs(),
                "renewable": grant.renewable, "entity_id": "", "token_type": "service",
                "orphan": true,
            },
        })));
    }

    // Everything else needs a valid token.
    let now = Instant::now();
    let Some(token) = req.headers.get("x-vault-token").cloned() else {
        return Some(denied());
    };
    let Some(info) = st.tokens.get(&token).cloned() else {
        return Some(denied());
    };
    if !info.valid(now) {
        st.tokens.remove(&token);
        return Some(denied());
    }

    match path.as_str() {
        "auth/token/lookup-self" => {
            count(&mut st, "lookup");
            let ttl = info.remaining(now).map_or(0, |d| d.as_secs());
            return Some(ok(envelope(
                json!({
                    "accessor": "fake-accessor", "creation_ttl": info.ttl.map_or(0, |d| d.as_secs()),
                    "display_name": "token", "expire_time": null, "explicit_max_ttl": info.max_ttl.map_or(0, |d| d.as_secs()),
                    "id": token, "num_uses": 0, "orphan": true, "path": "auth/token/create",
                    "policies": ["default"], "renewable": info.renewable, "ttl": ttl, "type": "service",
                }),
                0,
            )));
        }
        "auth/token/renew-self" => {
            count(&mut st, "renew");
            if !info.renewable || info.ttl.is_none() {
                return Some(error(400, &["lease is not renewable"]));
            }
            let mut ttl = info.ttl.unwrap_or_default();
            if let Some(max) = info.max_ttl {
                let left = (info.issued + max).saturating_duration_since(now);
                ttl = ttl.min(left);
            }
            if let Some(t) = st.tokens.get_mut(&token) {
                t.ttl = Some(ttl);
                t.renewed = now;
            }
            return Some(ok(json!({
                "request_id": "00000000-0000-0000-0000-000000000000",
                "lease_id": "", "renewable": false, "lease_duration": 0, "data": null,
                "wrap_info": null, "warnings": null,
                "auth": {"client_token": token, "accessor": "fake-accessor",
                         "policies": ["default"], "lease_duration": ttl.as_secs(),
                         "renewable": true},
            })));
        }
        "auth/token/create" => {
            if !info.policy.may("auth/token/create") {
                return Some(denied());
            }
            let body = req.json();
            let ttl = body.get("ttl").and_then(parse_duration);
            let max_ttl = body.get("explicit_max_ttl").and_then(parse_duration);
            let renewable = body
                .get("renewable")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            // Policies named `path:<prefix>` allow that prefix (the fake's
            // stand-in for HCL policies).
            let allow: Vec<String> = body
                .get("policies")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|p| p.strip_prefix("path:"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let id = format!(
                "hvs.fake{:020}",
                shared.next_token.fetch_add(1, Ordering::SeqCst)
            );
            st.tokens.insert(
                id.clone(),
                TokenInfo {
                    policy: Policy { allow },
                    ttl,
                    renewed: now,
                    issued: now,
                    renewable,
                    max_ttl,
                },
            );
            return Some(ok(json!({
                "lease_id": "", "renewable": false, "lease_duration": 0, "data": null,
                "auth": {"client_token": id, "lease_duration": ttl.map_or(0, |d| d.as_secs()),
                         "renewable": renewable, "policies": ["default"]},
            })));
        }
        _ => {}
    }

    if let Some(mount) = path.strip_prefix("sys/mounts/") {
        if !info.policy.may(&path) {
            return Some(denied());
        }
        return Some(match req.method.as_str() {
            "POST" | "PUT" => {
                let body = req.json();
                let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
                if kind != "kv" && kind != "kv-v2" {
                    return Some(error(400, &["the fake mounts only kv"]));
                }
                if st.mounts.contains_key(mount) {
                    return Some(error(
                        400,
                        &[format!("path is already in use at {mount}/").as_str()],
                    ));
                }
                let version = match (
                    kind,
                    body.get("options")
                        .and_then(|o| o.get("version"))
                        .and_then(Value::as_str),
                ) {
                    ("kv-v2", _) | (_, Some("2")) => 2,
                    _ => 1,
                };
                st.mounts.insert(
                    mount.to_string(),
                    MountData {
                        version,
                        ..MountData::default()
                    },
                );
                no_content()
            }
            "DELETE" => {
                st.mounts.remove(mount);
                no_content()
            }
            _ => error(405, &["unsupported operation"]),
        });
    }

    if let Some(rest) = path.strip_prefix("sys/internal/ui/mounts/") {
        count(&mut st, "preflight");
        let found = st
            .mounts
            .iter()
            .filter(|(m, _)| rest == m.as_str() || rest.starts_with(&format!("{m}/")))
            .max_by_key(|(m, _)| m.len())
            .map(|(m, d)| (m.clone(), d.version));
        return Some(match found {
            Some((m, version)) if info.policy.allow.iter().any(|p| p.is_empty() || p.starts_with(&format!("{m}/")) || *p == m) => {
                ok(envelope(
                    json!({
                        "accessor": "kv_fake", "config": {"default_lease_ttl": 0, "max_lease_ttl": 0},
                        "description": "", "external_entropy_access": false, "local": false,
                        "options": {"version": version.to_string()}, "path": format!("{m}/"),
                        "seal_wrap": false, "type": "kv", "uuid": "fake",
                    }),
                    0,
                ))
            }
            _ => error(
                403,
                &[format!(
                    "preflight capability check returned 403, please ensure client's policies grant access to path \"{rest}/\""
                )
                .as_str()],
            ),
        });
    }

    // KV: the longest mount the path lies in.
    let found = st
        .mounts
        .keys()
        .filter(|m| path == m.as_str() || path.starts_with(&format!("{m}/")))
        .max_by_key(|m| m.len())
        .cloned();
    let Some(mount) = found else {
        return Some(if info.policy.may(&path) {
            error(
                404,
                &[format!("no handler for route \"{path}\". route entry not found.").as_str()],
            )
        } else {
            denied()
        });
    };
    if !info.policy.may(&path) {
        return Some(denied());
    }
    let rest = path[mount.len()..].trim_start_matches('/').to_string();
    let listing = req.listing();
    let data = st.mounts.get_mut(&mount)?;
    let response = if data.version == 2 {
        kv2(data, req, &rest, listing)
    } else {
        kv1(data, req, &rest, listing)
    };
    let kind = match (data.version, listing, rest.split('/').next()) {
        (_, true, _) => "list",
        (2, false, Some("data")) if req.method == "GET" => "data",
        (2, false, Some("metadata")) if req.method == "GET" => "metadata",
        (1, false, _) if req.method == "GET" => "kv1",
        _ => "write",
    };
    count(&mut st, kind);
    Some(response)
}

fn list_answer(names: Vec<String>) -> Response {
    if names.is_empty() {
        return error(404, &[]);
    }
    ok(envelope(json!({ "keys": names }), 0))
}

fn kv1(data: &mut MountData, req: &Request, rest: &str, listing: bool) -> Response {
    if listing {
        let dir = match rest.is_empty() {
            true => String::new(),
            false => format!("{}/", rest.trim_end_matches('/')),
        };
        return list_answer(data.list(&dir));
    }
    match req.method.as_str() {
        "GET" => match data.kv1.get(rest) {
            Some(map) => ok(envelope(Value::Object(map.clone()), 2_764_800)),
            None => error(404, &[]),
        },
        "POST" | "PUT" => {
            data.kv1.insert(rest.to_string(), req.json());
            no_content()
        }
        "DELETE" => {
            data.kv1.remove(rest);
            no_content()
        }
        _ => error(405, &["unsupported operation"]),
    }
}

fn version_meta(v: &Version, number: usize) -> Value {
    json!({
        "created_time": v.created,
        "custom_metadata": null,
        "deletion_time": v.deleted.clone().unwrap_or_default(),
        "destroyed": v.destroyed,
        "version": number,
    })
}

fn kv2(data: &mut MountData, req: &Request, rest: &str, listing: bool) -> Response {
    let (kind, secret) = rest.split_once('/').unwrap_or((rest, ""));
    let secret = secret.trim_end_matches('/');
    match (kind, req.method.as_str()) {
        ("metadata", _) if listing => {
            let dir = match secret.is_empty() {
                true => String::new(),
                false => format!("{secret}/"),
            };
            list_answer(data.list(&dir))
        }
        ("metadata", "GET") => match data.kv2.get(secret) {
            Some(s) => {
                let versions: Map<String, Value> = s
                    .versions
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        (
                            (i + 1).to_string(),
                            json!({"created_time": v.created,
                                   "deletion_time": v.deleted.clone().unwrap_or_default(),
                                   "destroyed": v.destroyed}),
                        )
                    })
                    .collect();
                ok(envelope(
                    json!({
                        "cas_required": false, "created_time": s.created,
                        "current_version": s.versions.len(), "custom_metadata": null,
                        "delete_version_after": "0s", "max_versions": 0, "oldest_version": 0,
                        "updated_time": s.updated, "versions": versions,
                    }),
                    0,
                ))
            }
            None => error(404, &[]),
        },
        ("metadata", "DELETE") => {
            data.kv2.remove(secret);
            no_content()
        }
        ("data", "GET") => match data.kv2.get(secret) {
            Some(s) => match s.versions.last() {
                Some(v) if v.deleted.is_none() && !v.destroyed => ok(envelope(
                    json!({"data": v.data, "metadata": version_meta(v, s.versions.len())}),
                    0,
                )),
                Some(v) => Response {
                    status: 404,
                    body: Some(envelope(
                        json!({"data": null, "metadata": version_meta(v, s.versions.len())}),
                        0,
                    )),
                },
                None => error(404, &[]),
            },
            None => error(404, &[]),
        },
        ("data", "POST" | "PUT") => {
            let body = req.json();
            let Some(Value::Object(fields)) = body.get("data").cloned() else {
                return error(400, &["no data provided"]);
            };
            let now = now_rfc3339();
            let s = data
                .kv2
                .entry(secret.to_string())
                .or_insert_with(|| Kv2Secret {
                    created: now.clone(),
                    ..Kv2Secret::default()
                });
            s.updated = now.clone();
            s.versions.push(Version {
                data: fields,
                created: now,
                deleted: None,
                destroyed: false,
            });
            let n = s.versions.len();
            let v = s
                .versions
                .last()
                .map(|v| version_meta(v, n))
                .unwrap_or(Value::Null);
            ok(envelope(v, 0))
        }
        ("data", "DELETE") => {
            if let Some(v) = data.kv2.get_mut(secret).and_then(|s| s.versions.last_mut()) {
                v.deleted = Some(now_rfc3339());
            }
            no_content()
        }
        _ => error(
            405,
            &[format!("unsupported path or operation: {} {rest}", req.method).as_str()],
        ),
    }
}

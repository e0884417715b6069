//! A Vault server to test against and the writes a test makes to it, for the
//! Vault crate's tests and benchmark and the binary's end-to-end tests.
//! Feature `vault`.
//!
//! By default the server is the in-process fake of [`server`]. With
//! `SIDEKICK_TEST_VAULT_ADDR=http://127.0.0.1:8200` and
//! `SIDEKICK_TEST_VAULT_TOKEN=<root token>` (a `vault server -dev`) the same
//! test bodies run against that server: every write goes through Vault's
//! HTTP API (the fake serves the same calls), each test mounts KV engines of
//! its own (`sys/mounts`) and unmounts them when dropped, tokens come from
//! `auth/token/create` and AppRole roles from `auth/approle/role/...`. What
//! cannot be done to a real server (kill it, seal it, inject errors,
//! Kubernetes logins, request counts) is skipped with a note: see
//! [`Vault::fake`].

pub mod server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

pub use server::{FakeVault, Grant, Policy, ROOT_TOKEN};

/// Environment variable naming a real Vault to test against.
pub const REAL_ADDR_ENV: &str = "SIDEKICK_TEST_VAULT_ADDR";
/// Environment variable holding that Vault's root token.
pub const REAL_TOKEN_ENV: &str = "SIDEKICK_TEST_VAULT_TOKEN";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The server a test runs against.
pub enum Server {
    /// The in-process fake.
    Fake(FakeVault),
    /// A real Vault at `host:port`, with its root token.
    Real {
        /// `host:port`.
        host: String,
        /// Root token.
        token: String,
    },
}

/// A server plus the mounts, policies and roles this test made there.
pub struct Vault {
    server: Server,
    ns: String,
    mounts: Mutex<Vec<String>>,
    policies: Mutex<Vec<String>>,
    roles: Mutex<Vec<String>>,
}

impl Vault {
    /// The real Vault of `SIDEKICK_TEST_VAULT_ADDR` if set, else a fresh fake.
    pub fn start() -> Vault {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns = format!("sk-{}-{n}", std::process::id());
        let server = match std::env::var(REAL_ADDR_ENV) {
            Ok(addr) if !addr.trim().is_empty() => {
                let host = addr
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                let token = std::env::var(REAL_TOKEN_ENV).unwrap_or_else(|_| {
                    panic!("{REAL_ADDR_ENV} is set: {REAL_TOKEN_ENV} must hold its root token")
                });
                Server::Real { host, token }
            }
            _ => Server::Fake(FakeVault::start()),
        };
        Vault {
            server,
            ns,
            mounts: Mutex::new(Vec::new()),
            policies: Mutex::new(Vec::new()),
            roles: Mutex::new(Vec::new()),
        }
    }

    /// The fake, for what only it can do; `None` (after printing a note) on a
    /// real server, so the caller returns early.
    pub fn fake(&self, what: &str) -> Option<&FakeVault> {
        match &self.server {
            Server::Fake(f) => Some(f),
            Server::Real { host, .. } => {
                eprintln!("note: skipping {what}: not possible against the real Vault at {host}");
                None
            }
        }
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    fn host(&self) -> String {
        match &self.server {
            Server::Fake(f) => f.addr().to_string(),
            Server::Real { host, .. } => host.clone(),
        }
    }

    /// The root token.
    pub fn root_token(&self) -> String {
        match &self.server {
            Server::Fake(_) => ROOT_TOKEN.to_string(),
            Server::Real { token, .. } => token.clone(),
        }
    }

    /// A name unique to this test (`sk-PID-N-base`).
    pub fn name(&self, base: &str) -> String {
        format!("{}-{base}", self.ns)
    }

    /// Mounts a KV engine of `version` (1 or 2) at a path unique to this
    /// test, made from `base`; returns the mount path.
    pub fn mount(&self, base: &str, version: u8) -> String {
        let path = self.name(base);
        let body = json!({"type": "kv", "options": {"version": version.to_string()}});
        self.ok("POST", &format!("sys/mounts/{path}"), &body);
        self.mounts.lock().unwrap().push(path.clone());
        path
    }

    /// Writes a secret: `data` is its fields (a JSON object). KV v2 gets a
    /// new version.
    pub fn put(&self, mount: &str, version: u8, path: &str, data: Value) {
        match version {
            2 => self.ok(
                "POST",
                &format!("{mount}/data/{path}"),
                &json!({ "data": data }),
            ),
            _ => self.ok("POST", &format!("{mount}/{path}"), &data),
        };
    }

    /// Deletes a secret: for KV v2 the current version (soft delete, as
    /// `vault kv delete`), for v1 the secret.
    pub fn delete(&self, mount: &str, version: u8, path: &str) {
        let api = match version {
            2 => format!("{mount}/data/{path}"),
            _ => format!("{mount}/{path}"),
        };
        self.ok("DELETE", &api, &Value::Null);
    }

    /// Deletes a KV v2 secret with every version (`vault kv metadata delete`).
    pub fn destroy(&self, mount: &str, path: &str) {
        self.ok("DELETE", &format!("{mount}/metadata/{path}"), &Value::Null);
    }

    /// A token that may read and list only under `paths` (API paths:
    /// `mount/data/app`, `mount/metadata/app`), with `ttl` and renewable as
    /// told.
    pub fn token(&self, paths: &[&str], ttl: Option<Duration>, renewable: bool) -> String {
        match &self.server {
            Server::Fake(f) => f.token(Policy::paths(paths), ttl, renewable, None),
            Server::Real { .. } => {
                let policy = self.policy(paths);
                let mut body =
                    json!({"policies": [policy], "renewable": renewable, "no_parent": true});
                if let Some(ttl) = ttl {
                    body["ttl"] = json!(format!("{}s", ttl.as_secs().max(1)));
                }
                let v = self.ok("POST", "auth/token/create", &body);
                v["auth"]["client_token"]
                    .as_str()
                    .expect("a client_token")
                    .to_string()
            }
        }
    }

    /// An AppRole role whose tokens may read and list under `paths`, with
    /// token TTL `ttl`; returns `(role_id, secret_id)`.
    pub fn approle(&self, paths: &[&str], ttl: Duration) -> (String, String) {
        match &self.server {
            Server::Fake(f) => {
                let role_id = self.name("role-id");
                let secret_id = self.name("secret-id");
                f.approle(
                    &role_id,
                    Some(&secret_id),
                    Grant::new(Policy::paths(paths), ttl),
                );
                (role_id, secret_id)
            }
            Server::Real { .. } => {
                let policy = self.policy(paths);
                // Enabling twice answers 400 "path is already in use": fine.
                let _ = self.call("POST", "sys/auth/approle", &json!({"type": "approle"}));
                let role = self.name("role");
                self.ok(
                    "POST",
                    &format!("auth/approle/role/{role}"),
                    &json!({"token_policies": [policy], "token_ttl": format!("{}s", ttl.as_secs().max(1))}),
                );
                self.roles.lock().unwrap().push(role.clone());
                let id = self.ok(
                    "GET",
                    &format!("auth/approle/role/{role}/role-id"),
                    &Value::Null,
                );
                let secret = self.ok(
                    "POST",
                    &format!("auth/approle/role/{role}/secret-id"),
                    &json!({}),
                );
                (
                    id["data"]["role_id"].as_str().expect("role_id").to_string(),
                    secret["data"]["secret_id"]
                        .as_str()
                        .expect("secret_id")
                        .to_string(),
                )
            }
        }
    }

    /// Writes an ACL policy allowing read and list under `paths`; returns its name.
    fn policy(&self, paths: &[&str]) -> String {
        let n = self.policies.lock().unwrap().len();
        let name = self.name(&format!("policy-{n}"));
        let mut hcl = String::new();
        for p in paths {
            hcl.push_str(&format!(
                "path \"{p}*\" {{ capabilities = [\"read\", \"list\"] }}\n"
            ));
        }
        self.ok(
            "PUT",
            &format!("sys/policy/{name}"),
            &json!({ "policy": hcl }),
        );
        self.policies.lock().unwrap().push(name.clone());
        name
    }

    /// One request with the root token; panics unless it succeeds. Returns
    /// the JSON answer (`null` for 204).
    pub fn ok(&self, method: &str, path: &str, body: &Value) -> Value {
        let (status, text) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} /v1/{path}: HTTP {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// One request with the root token: status and body.
    pub fn call(&self, method: &str, path: &str, body: &Value) -> (u16, String) {
        let token = self.root_token();
        let bytes = match body {
            Value::Null => Vec::new(),
            b => b.to_string().into_bytes(),
        };
        let r = crate::http::request(
            &self.host(),
            method,
            &format!("/v1/{path}"),
            &[
                ("X-Vault-Token", &token),
                ("Content-Type", "application/json"),
            ],
            &bytes,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{method} /v1/{path} to Vault: {e}"));
        (r.status, r.text())
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        // A shared real server is left as found.
        if let Server::Real { .. } = &self.server {
            let take = |m: &Mutex<Vec<String>>| m.lock().map(|v| v.clone()).unwrap_or_default();
            for mount in take(&self.mounts) {
                let _ = self.call("DELETE", &format!("sys/mounts/{mount}"), &Value::Null);
            }
            for role in take(&self.roles) {
                let _ = self.call("DELETE", &format!("auth/approle/role/{role}"), &Value::Null);
            }
            for policy in take(&self.policies) {
                let _ = self.call("DELETE", &format!("sys/policy/{policy}"), &Value::Null);
            }
        }
    }
}

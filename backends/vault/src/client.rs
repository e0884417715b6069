//! The Vault HTTP API calls the backend makes, over `reqwest`: logging in
//! (`auth/token/lookup-self`, `auth/<mount>/login` for AppRole and
//! Kubernetes), renewing (`auth/token/renew-self`), finding a mount's KV
//! version (`sys/internal/ui/mounts/<path>`, what the `vault kv` CLI asks),
//! and the KV reads: `GET <mount>/metadata/<path>?list=true`, `GET
//! <mount>/metadata/<path>` and `GET <mount>/data/<path>` for KV v2, `GET
//! <mount>/<path>` (`?list=true`) for KV v1.
//!
//! Every request carries the token in `X-Vault-Token` (marked sensitive).
//! Answers become [`BackendError`]s that name the address and path, with
//! Vault's own `errors` words; never the token, never a secret's data.

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use sidekick_backend::http::transport_message;
use sidekick_backend::BackendError;

use crate::config::{Auth, Resolved};
use crate::NAME;

/// Header carrying the token.
const TOKEN_HEADER: &str = "X-Vault-Token";

/// A Vault token and what is known of its lease.
#[derive(Clone)]
pub(crate) struct Token {
    pub secret: String,
    /// When it was obtained or last renewed.
    pub at: Instant,
    /// Its TTL then; `None` for a token that never expires (root, or `ttl: 0`).
    pub ttl: Option<Duration>,
    pub renewable: bool,
    /// The TTL granted at login, to tell when renewals start to shrink
    /// (the max TTL is near).
    pub granted: Option<Duration>,
}

impl Token {
    /// When to renew (two thirds into the TTL), if ever.
    pub fn renew_at(&self) -> Option<Instant> {
        let ttl = self.ttl?;
        Some(self.at + ttl.mul_f64(2.0 / 3.0))
    }

    /// When it stops working, if ever.
    pub fn expires_at(&self) -> Option<Instant> {
        self.ttl.map(|ttl| self.at + ttl)
    }
}

/// One answer from Vault: its status and body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

/// What an API call can answer beyond success.
#[derive(Debug)]
pub(crate) enum Miss {
    /// 404: nothing there.
    NotFound,
    /// 403: the token may not do this (or is no longer valid).
    Forbidden(String),
}

/// The `auth` block of a login or renewal.
#[derive(Deserialize)]
struct AuthBlock {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct AuthAnswer {
    auth: Option<AuthBlock>,
}

#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct DataAnswer<T> {
    data: T,
}

#[derive(Deserialize)]
struct ListData {
    #[serde(default)]
    keys: Vec<String>,
}

/// `GET sys/internal/ui/mounts/<path>`'s data.
#[derive(Deserialize)]
struct MountData {
    #[serde(default)]
    path: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

/// What a KV v2 metadata read says of a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub current_version: u64,
    /// The current version is deleted or destroyed: no data to read.
    pub gone: bool,
}

#[derive(Deserialize)]
struct MetaData {
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    versions: Map<String, Value>,
}

#[derive(Deserialize)]
struct V2Data {
    data: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<V2Meta>,
}

#[derive(Deserialize)]
struct V2Meta {
    #[serde(default)]
    version: u64,
}

/// The HTTP client and the address, shared by loads and watches.
pub(crate) struct Api {
    pub cfg: Resolved,
}

impl Api {
    pub fn new(cfg: Resolved) -> Api {
        Api { cfg }
    }

    /// The address, for logs and errors.
    pub fn label(&self) -> &str {
        &self.cfg.base
    }

    fn unavailable(&self, path: &str, message: String) -> BackendError {
        BackendError::Unavailable {
            backend: NAME,
            endpoint: format!("{}/v1/{path}", self.cfg.base),
            source: message.into(),
        }
    }

    fn invalid(&self, path: &str, message: String) -> BackendError {
        BackendError::Invalid {
            location: format!("{}/v1/{path}", self.cfg.base),
            message,
        }
    }

    /// One request; transport failures are `Unavailable`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Answer, BackendError> {
        let url = format!("{}/v1/{path}", self.cfg.base);
        let timeout = self.cfg.timing.request_timeout;
        let mut request = self.cfg.http.request(method, &url).timeout(timeout);
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                BackendError::config(NAME, "the Vault token cannot be sent in an HTTP header")
            })?;
            value.set_sensitive(true);
            request = request.header(TOKEN_HEADER, value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(path, transport_message(&e, timeout)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.unavailable(path, transport_message(&e, timeout)))?
            .to_vec();
        Ok(Answer { status, body })
    }

    /// Vault's `{"errors": [...]}` words, one short line.
    fn said(body: &[u8]) -> String {
        #[derive(Deserialize)]
        struct Errors {
            #[serde(default)]
            errors: Vec<String>,
        }
        let words = serde_json::from_slice::<Errors>(body)
            .map(|e| e.errors.join("; "))
            .unwrap_or_default();
        let mut text = words.replace(['\n', '\r'], " ");
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

    /// Sorts an answer: 2xx is `Ok(Ok(body))`, 404/403 `Ok(Err(miss))`,
    /// sealed/standby/rate-limited/server errors `Unavailable`, the rest
    /// `Invalid`.
    fn judge(&self, path: &str, answer: Answer) -> Result<Result<Vec<u8>, Miss>, BackendError> {
        let status = answer.status;
        if status.is_success() {
            return Ok(Ok(answer.body));
        }
        let said = Self::said(&answer.body);
        match status {
            StatusCode::NOT_FOUND => Ok(Err(Miss::NotFound)),
            StatusCode::FORBIDDEN => Ok(Err(Miss::Forbidden(said))),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Err(self
                .unavailable(
                    path,
                    match s {
                        StatusCode::SERVICE_UNAVAILABLE => {
                            format!("HTTP 503 (sealed or in maintenance): {said}")
                        }
                        StatusCode::TOO_MANY_REQUESTS => format!("HTTP 429 (rate limited): {said}"),
                        _ => format!("HTTP {}: {said}", s.as_u16()),
                    },
                )),
            s => Err(self.invalid(path, format!("unexpected HTTP {}: {said}", s.as_u16()))),
        }
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<T, BackendError> {
        serde_json::from_slice(body).map_err(|e| {
            // serde_json's message names a line and column, never the data.
            self.invalid(path, format!("not the answer Vault gives: {e}"))
        })
    }

    /// A GET with the token.
    async fn get(&self, path: &str, token: &str) -> Result<Result<Vec<u8>, Miss>, BackendError> {
        let answer = self.send(Method::GET, path, Some(token), None).await?;
        self.judge(path, answer)
    }

    /// Logs in (or, for a given token, looks it up) and returns the token.
    pub async fn login(&self) -> Result<Token, BackendError> {
        let at = Instant::now();
        match &self.cfg.auth {
            Auth::Token(secret) => {
                let path = "auth/token/lookup-self";
                match self.get(path, secret).await? {
                    Ok(body) => {
                        let data: DataAnswer<LookupData> = self.parse(path, &body)?;
                        let ttl = (data.data.ttl > 0).then(|| Duration::from_secs(data.data.ttl));
                        Ok(Token {
                            secret: secret.clone(),
                            at,
                            ttl,
                            renewable: data.data.renewable,
                            granted: ttl,
                        })
                    }
                    Err(Miss::Forbidden(said)) => Err(BackendError::Denied {
                        backend: NAME,
                        message: format!(
                            "{} refused the token (403 {said} on {path}): check --vault-token / \
                             VAULT_TOKEN; it may be expired or revoked",
                            self.cfg.base
                        ),
                    }),
                    Err(Miss::NotFound) => {
                        Err(self.invalid(path, "404: is this a Vault server?".to_string()))
                    }
                }
            }
            Auth::AppRole {
                role_id,
                secret_id,
                mount,
            } => {
                let mut body = serde_json::json!({ "role_id": role_id });
                if let Some(secret_id) = secret_id {
                    body["secret_id"] = Value::String(secret_id.clone());
                }
                let what = format!("AppRole login (role_id {role_id})");
                self.login_with(mount, body, &what).await
            }
            Auth::Kubernetes {
                role,
                jwt_file,
                mount,
            } => {
                let jwt = std::fs::read_to_string(jwt_file).map_err(|e| BackendError::Config {
                    backend: NAME,
                    message: format!(
                        "cannot read the service-account token {} for Kubernetes login: {e}",
                        jwt_file.display()
                    ),
                })?;
                let body = serde_json::json!({ "role": role, "jwt": jwt.trim() });
                let what = format!("Kubernetes login (role {role})");
                self.login_with(mount, body, &what).await
            }
        }
    }

    async fn login_with(
        &self,
        mount: &str,
        body: Value,
        what: &str,
    ) -> Result<Token, BackendError> {
        let at = Instant::now();
        let path = format!("auth/{}/login", mount.trim_matches('/'));
        let answer = self.send(Method::POST, &path, None, Some(body)).await?;
        let status = answer.status;
        // Vault answers a wrong role or secret id with 400, a refused JWT
        // with 403: both are refusals, not outages.
        if status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN {
            return Err(BackendError::Denied {
                backend: NAME,
                message: format!(
                    "{what} refused by {} ({} {} on {path})",
                    self.cfg.base,
                    status.as_u16(),
                    Self::said(&answer.body)
                ),
            });
        }
        let body = match self.judge(&path, answer)? {
            Ok(body) => body,
            Err(_) => {
                return Err(BackendError::Denied {
                    backend: NAME,
                    message: format!(
                        "{what}: no such auth method at {path} on {} (404; see --vault-auth-mount)",
                        self.cfg.base
                    ),
                })
            }
        };
        let answer: AuthAnswer = self.parse(&path, &body)?;
        let auth = answer
            .auth
            .ok_or_else(|| self.invalid(&path, "the login answer has no auth block".into()))?;
        tracing::debug!(
            backend = NAME,
            method = self.cfg.auth.kind(),
            ttl_s = auth.lease_duration,
            renewable = auth.renewable,
            "logged in to Vault"
        );
        let ttl = (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration));
        Ok(Token {
            secret: auth.client_token,
            at,
            ttl,
            renewable: auth.renewable,
            granted: ttl,
        })
    }

    /// Renews `token` (`auth/token/renew-self`); `Ok(None)` when Vault
    /// refuses (not renewable, past its max TTL, revoked).
    pub async fn renew(&self, token: &Token) -> Result<Option<Token>, BackendError> {
        let path = "auth/token/renew-self";
        let at = Instant::now();
        let answer = self
            .send(
                Method::POST,
                path,
                Some(&token.secret),
                Some(serde_json::json!({})),
            )
            .await?;
        if answer.status == StatusCode::BAD_REQUEST {
            tracing::debug!(backend = NAME, said = %Self::said(&answer.body), "token renewal refused");
            return Ok(None);
        }
        let body = match self.judge(path, answer)? {
            Ok(body) => body,
            Err(miss) => {
                tracing::debug!(backend = NAME, ?miss, "token renewal refused");
                return Ok(None);
            }
        };
        let answer: AuthAnswer = self.parse(path, &body)?;
        let Some(auth) = answer.auth else {
            return Ok(None);
        };
        if auth.lease_duration == 0 && token.ttl.is_some() {
            // Capped to nothing: the token is at its max TTL.
            return Ok(None);
        }
        let renewed = Token {
            // Renewal keeps the token; a server that sends another is obeyed.
            secret: if auth.client_token.is_empty() {
                token.secret.clone()
            } else {
                auth.client_token
            },
            at,
            ttl: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            renewable: auth.renewable,
            granted: token.granted,
        };
        tracing::debug!(
            backend = NAME,
            ttl_s = renewed.ttl.map_or(0, |t| t.as_secs()),
            "token renewed"
        );
        Ok(Some(renewed))
    }

    /// The mount holding `path` and its KV version, as the `vault kv` CLI
    /// finds it. `Ok(None)` when Vault will not say (no such mount, 403).
    pub async fn mount_of(
        &self,
        path: &str,
        token: &str,
    ) -> Result<Option<(String, u8)>, BackendError> {
        let api_path = format!("sys/internal/ui/mounts/{}", encode(path));
        let answer = self.send(Method::GET, &api_path, Some(token), None).await?;
        if answer.status == StatusCode::BAD_REQUEST {
            return Ok(None);
        }
        let body = match self.judge(&api_path, answer)? {
            Ok(body) => body,
            Err(_) => return Ok(None),
        };
        let data: DataAnswer<MountData> = self.parse(&api_path, &body)?;
        let data = data.data;
        if data.kind != "kv" && data.kind != "generic" {
            return Err(BackendError::Config {
                backend: NAME,
                message: format!(
                    "{path:?} is on a {:?} secrets engine at {}, not KV: only KV mounts hold keys",
                    data.kind, data.path
                ),
            });
        }
        let version = match data
            .options
            .as_ref()
            .and_then(|o| o.get("version"))
            .and_then(Value::as_str)
        {
            Some("2") => 2,
            _ => 1,
        };
        Ok(Some((data.path.trim_matches('/').to_string(), version)))
    }

    /// The names under `dir` (a folder ends in `/`); empty when there is
    /// nothing. `Err(Miss::Forbidden)` when listing is not allowed.
    pub async fn list(
        &self,
        mount: &str,
        version: u8,
        dir: &str,
        token: &str,
    ) -> Result<Result<Vec<String>, Miss>, BackendError> {
        let path = match version {
            2 => format!("{mount}/metadata/{}", encode(dir)),
            _ => format!("{mount}/{}", encode(dir)),
        };
        let path = if path.ends_with('/') {
            path
        } else {
            format!("{path}/")
        };
        let with_query = format!("{path}?list=true");
        match self.get(&with_query, token).await? {
            Ok(body) => {
                let data: DataAnswer<ListData> = self.parse(&path, &body)?;
                Ok(Ok(data.data.keys))
            }
            Err(Miss::NotFound) => Ok(Ok(Vec::new())),
            Err(miss) => Ok(Err(miss)),
        }
    }

    /// KV v2 metadata of one secret.
    pub async fn metadata(
        &self,
        mount: &str,
        secret: &str,
        token: &str,
    ) -> Result<Result<Meta, Miss>, BackendError> {
        let path = format!("{mount}/metadata/{}", encode(secret));
        match self.get(&path, token).await? {
            Ok(body) => {
                let data: DataAnswer<MetaData> = self.parse(&path, &body)?;
                let meta = data.data;
                let current = meta.versions.get(&meta.current_version.to_string());
                let gone = current.is_none_or(|v| {
                    let deleted = v
                        .get("deletion_time")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty());
                    let destroyed = v.get("destroyed").and_then(Value::as_bool) == Some(true);
                    deleted || destroyed
                });
                Ok(Ok(Meta {
                    current_version: meta.current_version,
                    gone,
                }))
            }
            Err(miss) => Ok(Err(miss)),
        }
    }

    /// One secret's data and (KV v2) its version. `Ok(Err(NotFound))` when
    /// absent or deleted.
    pub async fn read(
        &self,
        mount: &str,
        version: u8,
        secret: &str,
        token: &str,
    ) -> Result<Result<(Map<String, Value>, u64), Miss>, BackendError> {
        let path = match version {
            2 => format!("{mount}/data/{}", encode(secret)),
            _ => format!("{mount}/{}", encode(secret)),
        };
        let body = match self.get(&path, token).await? {
            Ok(body) => body,
            Err(miss) => return Ok(Err(miss)),
        };
        if version == 2 {
            let data: DataAnswer<V2Data> = self.parse(&path, &body)?;
            match data.data.data {
                Some(map) => Ok(Ok((map, data.data.metadata.map_or(0, |m| m.version)))),
                None => Ok(Err(Miss::NotFound)),
            }
        } else {
            let data: DataAnswer<Option<Map<String, Value>>> = self.parse(&path, &body)?;
            match data.data {
                Some(map) => Ok(Ok((map, 0))),
                None => Ok(Err(Miss::NotFound)),
            }
        }
    }
}

/// Percent-encodes a secret path for a URL path (keeps `/`).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_words_are_vaults_own_and_short() {
        assert_eq!(
            Api::said(br#"{"errors":["permission denied"]}"#),
            "permission denied"
        );
        assert_eq!(Api::said(br#"{"errors":[]}"#), "no message");
        assert_eq!(Api::said(b"<html>"), "no message");
        let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(500));
        assert!(Api::said(long.as_bytes()).len() < 210);
    }

    #[test]
    fn paths_are_encoded_keeping_slashes() {
        assert_eq!(encode("app/db"), "app/db");
        assert_eq!(encode("a b/é?"), "a%20b/%C3%A9%3F");
    }

    #[test]
    fn renewal_is_due_two_thirds_in() {
        let at = Instant::now();
        let t = Token {
            secret: String::new(),
            at,
            ttl: Some(Duration::from_secs(30)),
            renewable: true,
            granted: None,
        };
        assert_eq!(t.renew_at(), Some(at + Duration::from_secs(20)));
        assert_eq!(t.expires_at(), Some(at + Duration::from_secs(30)));
        let root = Token { ttl: None, ..t };
        assert_eq!(root.renew_at(), None);
    }
}

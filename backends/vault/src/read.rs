//! The login session (one token, renewed or replaced before it runs out,
//! shared by loads and watches) and the read of everything an
//! [`Interest`] covers: which mount each key prefix lies in, which secrets
//! lie under it, and the keys those secrets make ([`secret_keys`]).
//!
//! The key layout is confd's (its maintained fork's Vault backend, which
//! follows `vault kv`): mount `secret`, secret `app/db` with the field
//! `password` is the key `/secret/app/db/password`, for KV v1 and v2 alike
//! (no `data/` segment). The secret itself, `/secret/app/db`, holds its data
//! as JSON, or, when its only field is a string named `value`, that string
//! (as upstream confd). Nested objects flatten further
//! (`/secret/app/db/tls/cert`); numbers and booleans are their JSON text;
//! arrays are JSON; `null` fields have no key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use sidekick_backend::{normalize_key, BackendError, Interest, KeyTree};

use crate::client::{Api, Miss, Token};
use crate::config::{Auth, Mount};
use crate::NAME;

/// The token in use and the mounts found so far.
pub(crate) struct Session {
    pub api: Api,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Mounts learnt from `sys/internal/ui/mounts` (path -> version).
    found: std::sync::Mutex<Vec<Mount>>,
}

impl Session {
    pub fn new(api: Api) -> Session {
        Session {
            api,
            token: tokio::sync::Mutex::new(None),
            found: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn can_login_again(&self) -> bool {
        !matches!(self.api.cfg.auth, Auth::Token(_))
    }

    /// A token good to use now: logs in when there is none or it has
    /// expired, renews it when two thirds of its TTL are gone, and logs in
    /// again (AppRole, Kubernetes) when it cannot be renewed any more.
    pub async fn token(&self) -> Result<String, BackendError> {
        let mut guard = self.token.lock().await;
        let now = Instant::now();
        let current = match guard.as_ref() {
            Some(t) if t.expires_at().is_none_or(|e| now < e) => t.clone(),
            _ => {
                let fresh = self.api.login().await?;
                let secret = fresh.secret.clone();
                *guard = Some(fresh);
                return Ok(secret);
            }
        };
        let due = current.renew_at().is_some_and(|r| now >= r);
        if !due {
            return Ok(current.secret);
        }
        if current.renewable {
            match self.api.renew(&current).await? {
                Some(renewed) => {
                    // Vault caps a renewal at the token's max TTL: once the
                    // TTL it grants is half the one granted at login, the
                    // end is near; log in afresh while the old token works.
                    let shrinking = match (renewed.ttl, current.granted) {
                        (Some(new), Some(granted)) => new <= granted / 2,
                        _ => false,
                    };
                    if !(shrinking && self.can_login_again()) {
                        let secret = renewed.secret.clone();
                        *guard = Some(renewed);
                        return Ok(secret);
                    }
                }
                None if !self.can_login_again() => {
                    // Nothing to do but use it until it expires.
                    let mut kept = current;
                    kept.renewable = false;
                    let secret = kept.secret.clone();
                    tracing::warn!(
                        backend = NAME,
                        "Vault refused to renew the token; it will stop working when its TTL \
                         ends (give a renewable token or use AppRole/Kubernetes login)"
                    );
                    *guard = Some(kept);
                    return Ok(secret);
                }
                None => {}
            }
        } else if !self.can_login_again() {
            return Ok(current.secret);
        }
        tracing::debug!(backend = NAME, "token near its end; logging in again");
        let fresh = self.api.login().await?;
        let secret = fresh.secret.clone();
        *guard = Some(fresh);
        Ok(secret)
    }

    /// When the token next needs attention (renewal or a new login), if it
    /// ever does.
    pub fn renew_at(&self) -> Option<Instant> {
        let guard = self.token.try_lock().ok()?;
        let t = guard.as_ref()?;
        if t.renewable || self.can_login_again() {
            t.renew_at()
        } else {
            None
        }
    }

    /// Drops the token after a 403, so the next attempt logs in (or looks
    /// the given token up) again and says clearly if it is refused.
    pub async fn forget(&self) {
        *self.token.lock().await = None;
    }

    /// The mount holding `path` (segments without the leading `/`), and the
    /// path inside it.
    async fn mount_for(&self, path: &str, token: &str) -> Result<(Mount, String), BackendError> {
        let inside = |m: &Mount| -> Option<String> {
            if path == m.path {
                Some(String::new())
            } else {
                path.strip_prefix(&m.path)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(str::to_string)
            }
        };
        let declared = &self.api.cfg.mounts;
        let best = |mounts: &[Mount]| {
            mounts
                .iter()
                .filter_map(|m| inside(m).map(|rest| (m.clone(), rest)))
                .max_by_key(|(m, _)| m.path.len())
        };
        if let Some(hit) = best(declared) {
            return Ok(hit);
        }
        if !declared.is_empty() {
            return Err(BackendError::Config {
                backend: NAME,
                message: format!(
                    "key prefix /{path} is in none of the --vault-mount mounts ({})",
                    declared
                        .iter()
                        .map(|m| m.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let known = self.found.lock().map(|f| best(&f)).unwrap_or(None);
        if let Some(hit) = known {
            return Ok(hit);
        }
        match self.api.mount_of(path, token).await? {
            Some((mount_path, version)) => {
                let mount = Mount {
                    path: mount_path,
                    version,
                };
                tracing::debug!(backend = NAME, mount = %mount.path, version, "KV mount found");
                if let Ok(mut found) = self.found.lock() {
                    found.push(mount.clone());
                }
                inside(&mount)
                    .map(|rest| (mount.clone(), rest))
                    .ok_or_else(|| BackendError::Invalid {
                        location: format!("{}/v1/sys/internal/ui/mounts/{path}", self.api.label()),
                        message: format!("Vault named mount {} for it", mount.path),
                    })
            }
            None => Err(BackendError::Denied {
                backend: NAME,
                message: format!(
                    "{} would not say which KV mount holds /{path} (sys/internal/ui/mounts): \
                     no such mount, or the token has no access to it; declare it with \
                     --vault-mount MOUNT[:1|:2]",
                    self.api.label()
                ),
            }),
        }
    }
}

/// A secret's fields, shared between the cache and a poll.
type Fields = Arc<Map<String, Value>>;

/// KV v2 data already read, by (mount, secret): its version and fields.
#[derive(Default)]
pub(crate) struct Cache {
    v2: HashMap<(String, String), (u64, Fields)>,
}

/// Reads every secret `interest` covers into a key tree. With a `cache`,
/// KV v2 secrets whose `current_version` did not move are not read again.
pub(crate) async fn read_all(
    session: &Session,
    interest: &Interest,
    mut cache: Option<&mut Cache>,
) -> Result<KeyTree, BackendError> {
    let mut tree = KeyTree::new();
    if interest.prefixes.is_empty() {
        return Ok(tree);
    }
    let token = session.token().await?;
    let result = read_with(session, interest, &token, &mut cache, &mut tree).await;
    if let Err(BackendError::Denied { .. }) = &result {
        session.forget().await;
    }
    result.map(|()| tree)
}

async fn read_with(
    session: &Session,
    interest: &Interest,
    token: &str,
    cache: &mut Option<&mut Cache>,
    tree: &mut KeyTree,
) -> Result<(), BackendError> {
    let api = &session.api;
    let mut seen = HashMap::new();
    let mut targets: Vec<(Mount, String)> = Vec::new();
    for prefix in &interest.prefixes {
        let path = prefix.trim_start_matches('/');
        if path.is_empty() {
            for mount in all_mounts(session)? {
                targets.push((mount, String::new()));
            }
        } else {
            targets.push(session.mount_for(path, token).await?);
        }
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut wholes: Vec<(String, String)> = Vec::new();
    for (mount, sub) in targets {
        let mut secrets: Vec<String> = Vec::new();
        // The prefix may name a secret, or a field of one: try each
        // ancestor (`app`, `app/db`, `app/db/password`) as a secret too.
        let mut at = String::new();
        for segment in sub.split('/').filter(|s| !s.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(segment);
            secrets.push(at.clone());
        }
        let candidates = secrets.len();
        let listed = walk(api, &mount, &sub, token).await?;
        let mut found_any = false;
        let probes = secrets.len();
        let all = secrets.into_iter().chain(listed.iter().flatten().cloned());
        for (n, secret) in all.enumerate() {
            if seen
                .insert((mount.path.clone(), secret.clone()), ())
                .is_some()
            {
                continue;
            }
            // The prefix's own path and its ancestors are guesses: a 403
            // there means "not for you", not a failure.
            let probe = n < probes;
            let Some(data) = read_secret(api, &mount, &secret, token, cache, probe).await? else {
                continue;
            };
            found_any = true;
            secret_keys(&mount.path, &secret, &data, &mut wholes, &mut fields);
        }
        if let Err(said) = listed {
            if !found_any {
                let what = match candidates {
                    0 => format!("mount {}", mount.path),
                    _ => format!("{}/{sub}", mount.path),
                };
                return Err(BackendError::Denied {
                    backend: NAME,
                    message: format!(
                        "{} refused to list {what} (403 {said}): the token's policy needs \
                         list on {}",
                        api.label(),
                        match mount.version {
                            2 => format!("{}/metadata/{sub}", mount.path),
                            _ => format!("{}/{sub}", mount.path),
                        }
                    ),
                });
            }
        }
    }
    for (key, value) in wholes.into_iter().chain(fields) {
        if interest.covers(&key) {
            tree.insert(&key, value);
        }
    }
    Ok(())
}

/// The mounts the prefix `/` (everything) reads: the declared ones. Vault
/// has no listing of every secret, and `sys/mounts` needs a privileged
/// policy, so nothing is guessed.
fn all_mounts(session: &Session) -> Result<Vec<Mount>, BackendError> {
    if !session.api.cfg.mounts.is_empty() {
        return Ok(session.api.cfg.mounts.clone());
    }
    Err(BackendError::Config {
        backend: NAME,
        message: "the key prefix / (everything) needs --vault-mount to say which KV mounts to \
                  read"
            .to_string(),
    })
}

/// Every secret below `dir` of `mount`, by listing folder after folder.
/// `Err(words)` when Vault refused a listing (403).
async fn walk(
    api: &Api,
    mount: &Mount,
    dir: &str,
    token: &str,
) -> Result<Result<Vec<String>, String>, BackendError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.trim_matches('/').to_string()];
    while let Some(dir) = todo.pop() {
        let names = match api.list(&mount.path, mount.version, &dir, token).await? {
            Ok(names) => names,
            Err(Miss::Forbidden(said)) => return Ok(Err(said)),
            Err(Miss::NotFound) => Vec::new(),
        };
        for name in names {
            let full = match dir.is_empty() {
                true => name.clone(),
                false => format!("{dir}/{name}"),
            };
            match full.strip_suffix('/') {
                Some(folder) => todo.push(folder.to_string()),
                None => out.push(full),
            }
        }
    }
    out.sort();
    Ok(Ok(out))
}

/// One secret's fields; `None` when there is none (absent, deleted).
async fn read_secret(
    api: &Api,
    mount: &Mount,
    secret: &str,
    token: &str,
    cache: &mut Option<&mut Cache>,
    probe: bool,
) -> Result<Option<Fields>, BackendError> {
    let denied = |said: String, what: &str| match probe {
        true => Ok(None),
        false => Err(BackendError::Denied {
            backend: NAME,
            message: format!(
                "{} refused to read {what} (403 {said}): check the token's policy",
                api.label()
            ),
        }),
    };
    if mount.version == 2 {
        if let Some(cache) = cache.as_deref_mut() {
            let key = (mount.path.clone(), secret.to_string());
            match api.metadata(&mount.path, secret, token).await? {
                Ok(meta) if meta.gone => {
                    cache.v2.remove(&key);
                    return Ok(None);
                }
                Ok(meta) => {
                    if let Some((version, data)) = cache.v2.get(&key) {
                        if *version == meta.current_version {
                            return Ok(Some(Arc::clone(data)));
                        }
                    }
                }
                Err(Miss::NotFound) => {
                    cache.v2.remove(&key);
                    return Ok(None);
                }
                // No read on metadata: read the data every time.
                Err(Miss::Forbidden(_)) => {}
            }
            return match api.read(&mount.path, 2, secret, token).await? {
                Ok((data, version)) => {
                    let data = Arc::new(data);
                    cache.v2.insert(key, (version, Arc::clone(&data)));
                    Ok(Some(data))
                }
                Err(Miss::NotFound) => Ok(None),
                Err(Miss::Forbidden(said)) => {
                    denied(said, &format!("{}/data/{secret}", mount.path))
                }
            };
        }
    }
    match api.read(&mount.path, mount.version, secret, token).await? {
        Ok((data, _)) => Ok(Some(Arc::new(data))),
        Err(Miss::NotFound) => Ok(None),
        Err(Miss::Forbidden(said)) => denied(said, &format!("{}/{secret}", mount.path)),
    }
}

/// The keys of secret `secret` of `mount` (see the module's layout): the
/// secret's own key into `wholes`, its fields into `fields` (which win over
/// a secret of the same name).
pub(crate) fn secret_keys(
    mount: &str,
    secret: &str,
    data: &Map<String, Value>,
    wholes: &mut Vec<(String, String)>,
    fields: &mut Vec<(String, String)>,
) {
    let base = normalize_key(&format!("/{mount}/{secret}"));
    let whole = match data.get("value") {
        Some(Value::String(s)) if data.len() == 1 => s.clone(),
        _ => Value::Object(data.clone()).to_string(),
    };
    wholes.push((base.clone(), whole));
    flatten(&base, data, fields);
}

fn flatten(base: &str, data: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (field, value) in data {
        let key = normalize_key(&format!("{base}/{field}"));
        if key == normalize_key(base) {
            continue; // an empty field name adds nothing
        }
        match value {
            Value::Null => {}
            Value::String(s) => out.push((key, s.clone())),
            Value::Object(inner) => flatten(&key, inner, out),
            other => out.push((key, other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(data: Value) -> Vec<(String, String)> {
        let Value::Object(map) = data else {
            panic!("an object")
        };
        let (mut wholes, mut fields) = (Vec::new(), Vec::new());
        secret_keys("secret", "app/db", &map, &mut wholes, &mut fields);
        wholes.extend(fields);
        wholes
    }

    #[test]
    fn fields_become_keys_under_the_secret_as_confd_lays_them_out() {
        let got = keys(
            json!({"password": "s3cret", "port": 5432, "tls": {"on": true}, "n": null, "l": [1, 2]}),
        );
        let want = [
            (
                "/secret/app/db",
                r#"{"l":[1,2],"n":null,"password":"s3cret","port":5432,"tls":{"on":true}}"#,
            ),
            ("/secret/app/db/l", "[1,2]"),
            ("/secret/app/db/password", "s3cret"),
            ("/secret/app/db/port", "5432"),
            ("/secret/app/db/tls/on", "true"),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_lone_value_field_is_the_secrets_own_value() {
        let got = keys(json!({"value": "v1"}));
        assert_eq!(got[0], ("/secret/app/db".to_string(), "v1".to_string()));
        assert_eq!(
            got[1],
            ("/secret/app/db/value".to_string(), "v1".to_string())
        );
    }
}

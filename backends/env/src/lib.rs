//! The `env` backend: keys from environment variables, mapped as confd does.
//!
//! Key `/db/host` is variable `DB_HOST`: drop the leading `/`, turn `/` into `_`,
//! uppercase (see [`var_name`]). For each prefix of the [`Interest`], every
//! variable named like the prefix, or like the prefix followed by `_`, becomes a
//! key: the prefix as spelled, then the rest of the name lowercased with `_` turned
//! into `/`. So with prefix `/db`, `DB_HOST=x` is `/db/host = x`, and with prefix
//! `/my_app`, `MY_APP_PORT=80` is `/my_app/port = 80`.
//!
//! A variable is only taken when the mapping goes back to exactly its name
//! (`var_name(key) == name`), so `DB__HOST` or `DB_Host` never shadow `DB_HOST`,
//! and `getv "/db/host"` sees what confd's direct lookup of `DB_HOST` would.
//!
//! The root prefix `/` yields nothing: listing the whole environment as keys would
//! expose every variable of the process to templates. Resources using this backend
//! must list their keys (or narrower prefixes).
//!
//! The environment cannot be watched: [`Backend::watch`] is `None`, so the core
//! polls (and variables of a running process do not change anyway). There is no
//! service catalog.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use sidekick_backend::{
    join_prefix, normalize_key, Backend, BackendError, Interest, KeyTree, Snapshot,
};

/// The backend's name, as used in logs and errors.
pub const NAME: &str = "env";

/// Reads keys from environment variables; see the crate documentation for the
/// mapping.
#[derive(Debug, Clone, Default)]
pub struct EnvBackend {
    /// Fixed variables (`from_vars`), or `None` to read the process
    /// environment at every load.
    vars: Option<BTreeMap<String, String>>,
}

impl EnvBackend {
    /// Reads the process environment, afresh at every [`Backend::load`].
    /// Variables whose name or value is not UTF-8 are skipped.
    pub fn new() -> Self {
        Self { vars: None }
    }

    /// Reads the given variables instead of the process environment, so tests
    /// (and embedders) need not change the process's own environment.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// The keys under `interest` from `vars`.
    fn keys<'v>(interest: &Interest, vars: impl Iterator<Item = (&'v str, &'v str)>) -> KeyTree {
        let prefixes: Vec<(String, String)> = interest
            .prefixes
            .iter()
            .map(|p| normalize_key(p))
            .filter(|p| p != "/")
            .map(|p| (var_name(&p), p))
            .collect();
        let mut keys = KeyTree::new();
        for (name, value) in vars {
            for (var_prefix, prefix) in &prefixes {
                let Some(rest) = name.strip_prefix(var_prefix.as_str()) else {
                    continue;
                };
                let key = if rest.is_empty() {
                    prefix.clone()
                } else if let Some(rest) = rest.strip_prefix('_') {
                    join_prefix(prefix, &rest.to_lowercase().replace('_', "/"))
                } else {
                    continue; // `DBX` is not under `DB`
                };
                if var_name(&key) == name && interest.covers(&key) {
                    keys.insert(&key, value);
                }
            }
        }
        keys
    }
}

/// The environment variable confd reads for `key`: `/db/host` is `DB_HOST`.
pub fn var_name(key: &str) -> String {
    key.strip_prefix('/')
        .unwrap_or(key)
        .replace('/', "_")
        .to_uppercase()
}

impl Backend for EnvBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The variables under the interest's prefixes (never an error; the catalog
    /// is always `None`).
    fn load<'a>(&'a self, interest: &'a Interest) -> BoxFuture<'a, Result<Snapshot, BackendError>> {
        let keys = match &self.vars {
            Some(vars) => Self::keys(interest, vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            None => {
                let vars: Vec<(String, String)> = std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect();
                Self::keys(interest, vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }
        };
        Box::pin(futures::future::ready(Ok(Snapshot {
            keys,
            catalog: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn interest(prefixes: &[&str]) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            services: true,
        }
    }

    fn load(backend: &EnvBackend, prefixes: &[&str]) -> Vec<(String, String)> {
        let snapshot = backend
            .load(&interest(prefixes))
            .now_or_never()
            .expect("env loads without waiting")
            .unwrap();
        assert!(snapshot.catalog.is_none());
        snapshot
            .keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sample() -> EnvBackend {
        EnvBackend::from_vars([
            ("DB_HOST", "h"),
            ("DB_PORT", "5432"),
            ("DB", "top"),
            ("DBX", "no"),
            ("DB__HOST", "dup"),
            ("DB_Host", "mixed"),
            ("APP_UPSTREAM_0", "a"),
            ("APPLE", "fruit"),
            ("MY_APP_PORT", "80"),
            ("PATH", "/bin"),
        ])
    }

    #[test]
    fn maps_keys_to_vars() {
        assert_eq!(var_name("/db/host"), "DB_HOST");
        assert_eq!(var_name("db/host"), "DB_HOST");
        assert_eq!(var_name("/my_app/port"), "MY_APP_PORT");
    }

    #[test]
    fn loads_vars_under_prefixes() {
        let b = sample();
        assert_eq!(
            load(&b, &["/db"]),
            pairs(&[("/db", "top"), ("/db/host", "h"), ("/db/port", "5432")])
        );
        assert_eq!(load(&b, &["/app"]), pairs(&[("/app/upstream/0", "a")]));
        assert_eq!(load(&b, &["/my_app"]), pairs(&[("/my_app/port", "80")]));
        assert_eq!(
            load(&b, &["/db/host", "/app/upstream"]),
            pairs(&[("/app/upstream/0", "a"), ("/db/host", "h")])
        );
    }

    #[test]
    fn root_and_unknown_prefixes_give_nothing() {
        let b = sample();
        assert!(load(&b, &["/"]).is_empty());
        assert!(load(&b, &[]).is_empty());
        assert!(load(&b, &["/nothing"]).is_empty());
    }

    #[test]
    fn no_watch_no_catalog() {
        let b = EnvBackend::new();
        assert_eq!(b.name(), "env");
        assert!(b.watch(&interest(&["/db"])).is_none());
        assert!(!b.has_catalog());
    }

    #[test]
    fn new_reads_the_process_environment() {
        // Reads only: PATH is set in any test environment worth running in.
        if let Ok(path) = std::env::var("PATH") {
            let b = EnvBackend::new();
            assert_eq!(load(&b, &["/path"]), vec![("/path".to_string(), path)]);
        }
    }
}

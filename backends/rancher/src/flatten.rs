//! The metadata tree (JSON) as `/`-separated keys, the way confd's rancher
//! backend flattens it: maps by key; list items by their `name` when they are
//! objects that have one (so `/self/service/containers/zk-1/primary_ip`), by
//! their index otherwise (`/self/container/ips/0`); scalars as text (`true`,
//! `2181`, `null`).
//!
//! confd overwrote silently when two items of one list had the same name; here
//! the second one keeps its index instead, so nothing is lost.

use std::collections::HashSet;

use serde_json::Value;
use sidekick_backend::{is_under, KeyTree};

/// Adds the keys of `value`, rooted at `root` (`/` or `/2015-12-19`), that lie
/// under one of `prefixes`. Subtrees outside every prefix are not walked.
pub(crate) fn flatten_into(value: &Value, root: &str, prefixes: &[String], out: &mut KeyTree) {
    let mut path = if root == "/" {
        String::new()
    } else {
        root.trim_end_matches('/').to_string()
    };
    walk(value, &mut path, prefixes, out);
}

fn walk(value: &Value, path: &mut String, prefixes: &[String], out: &mut KeyTree) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                descend(child, path, key, prefixes, out);
            }
        }
        Value::Array(items) => {
            let mut used = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let index = i.to_string();
                let segment = match item_name(item) {
                    Some(name) if used.insert(name) => name,
                    _ => index.as_str(),
                };
                descend(item, path, segment, prefixes, out);
            }
        }
        scalar => {
            let key = if path.is_empty() { "/" } else { path.as_str() };
            if prefixes.iter().any(|p| is_under(key, p)) {
                out.insert(key, scalar_text(scalar));
            }
        }
    }
}

fn descend(
    child: &Value,
    path: &mut String,
    segment: &str,
    prefixes: &[String],
    out: &mut KeyTree,
) {
    let len = path.len();
    path.push('/');
    path.push_str(segment);
    // Walk only where a prefix can still match: inside one, or on the way to one.
    if prefixes
        .iter()
        .any(|p| is_under(path, p) || is_under(p, path))
    {
        walk(child, path, prefixes, out);
    }
    path.truncate(len);
}

/// The `name` of a list item, when it is an object with a non-empty string name.
pub(crate) fn item_name(item: &Value) -> Option<&str> {
    match item.get("name") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// A scalar as confd writes it: strings as they are, numbers without exponent
/// or trailing zeros, `true`/`false`, `null`.
pub(crate) fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                // Rust's float Display is Go's FormatFloat(f, 'f', -1, 64).
                n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string())
            }
        }
        // Composite values are walked, never turned into one key.
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

/// The subtree at `path` below `value`: maps by key, lists by item name or
/// index, as in the flattened keys.
pub(crate) fn subtree<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut here = value;
    for segment in path {
        here = match here {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items
                .iter()
                .find(|item| item_name(item) == Some(segment.as_str()))
                .or_else(|| segment.parse::<usize>().ok().and_then(|i| items.get(i)))?,
            _ => return None,
        };
    }
    Some(here)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(value: &Value, root: &str, prefixes: &[&str]) -> Vec<(String, String)> {
        let prefixes: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
        let mut tree = KeyTree::new();
        flatten_into(value, root, &prefixes, &mut tree);
        tree.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn metadata() -> Value {
        json!({
            "self": {
                "container": {"name": "zk-1", "primary_ip": "10.0.0.1", "ips": ["10.0.0.1"], "create_index": 1},
                "service": {
                    "name": "zookeeper",
                    "containers": [
                        {"name": "zk-1", "primary_ip": "10.0.0.1"},
                        {"name": "zk-2", "primary_ip": "10.0.0.2"},
                        {"name": "zk-2", "primary_ip": "10.0.0.3"}
                    ],
                    "metadata": {"zk": {"port": 2181, "ratio": 0.5, "on": true, "nothing": null}}
                }
            },
            "version": "7"
        })
    }

    #[test]
    fn flattens_like_confd() {
        let got = keys(&metadata(), "/", &["/"]);
        let want: Vec<(String, String)> = [
            ("/self/container/create_index", "1"),
            ("/self/container/ips/0", "10.0.0.1"),
            ("/self/container/name", "zk-1"),
            ("/self/container/primary_ip", "10.0.0.1"),
            ("/self/service/containers/2/name", "zk-2"),
            ("/self/service/containers/2/primary_ip", "10.0.0.3"),
            ("/self/service/containers/zk-1/name", "zk-1"),
            ("/self/service/containers/zk-1/primary_ip", "10.0.0.1"),
            ("/self/service/containers/zk-2/name", "zk-2"),
            ("/self/service/containers/zk-2/primary_ip", "10.0.0.2"),
            ("/self/service/metadata/zk/nothing", "null"),
            ("/self/service/metadata/zk/on", "true"),
            ("/self/service/metadata/zk/port", "2181"),
            ("/self/service/metadata/zk/ratio", "0.5"),
            ("/self/service/name", "zookeeper"),
            ("/version", "7"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn only_walks_prefixes() {
        let got = keys(&metadata(), "/", &["/self/service/metadata/zk"]);
        assert_eq!(got.len(), 4);
        assert!(got
            .iter()
            .all(|(k, _)| k.starts_with("/self/service/metadata/zk/")));
        assert!(keys(&metadata(), "/", &["/selfish"]).is_empty());
    }

    #[test]
    fn roots_under_a_version() {
        let got = keys(&metadata(), "/2015-12-19", &["/2015-12-19/version"]);
        assert_eq!(got, [("/2015-12-19/version".to_string(), "7".to_string())]);
    }

    #[test]
    fn subtree_by_name_or_index() {
        let m = metadata();
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = subtree(&m, &path(&["self", "service", "containers", "zk-2"])).unwrap();
        assert_eq!(c["primary_ip"], "10.0.0.2");
        let c = subtree(&m, &path(&["self", "service", "containers", "2"])).unwrap();
        assert_eq!(c["primary_ip"], "10.0.0.3");
        assert!(subtree(&m, &path(&["self", "nope"])).is_none());
        assert_eq!(subtree(&m, &[]), Some(&m));
    }

    #[test]
    fn numbers_as_go_prints_them() {
        assert_eq!(scalar_text(&json!(1e20)), "100000000000000000000");
        assert_eq!(scalar_text(&json!(-3)), "-3");
        assert_eq!(
            scalar_text(&json!(18446744073709551615u64)),
            "18446744073709551615"
        );
    }
}

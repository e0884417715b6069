//! The znodes read under the watched prefixes and how they become keys, as
//! confd's zookeeper backend maps them: a znode **without children** is a key
//! whose value is its data; a znode **with children** is only a directory
//! (its own data is not read into any key, even when it has some). So when
//! the last child of `/a/b` is deleted, `/a/b` becomes a key (its data, or
//! `""`), and when `/a/b` gains a first child, the key `/a/b` is gone.
//!
//! The watch keeps every znode it has read here (leaves and directories, with
//! their data) so that a ZooKeeper event (created, deleted, data changed at one
//! path) turns into the few [`Update`]s it means without reading anything
//! but that one znode.

use std::collections::BTreeMap;
use std::ops::Bound;

use sidekick_backend::{KeyTree, Update};

use crate::NAME;

/// Every znode read, by path, with its data (`None`: not UTF-8 text).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Mirror {
    nodes: BTreeMap<String, Option<String>>,
}

/// The data of a znode as a value: UTF-8 text, else `None` (and a warning
/// naming the znode and the size, never the bytes).
pub(crate) fn text(path: &str, data: Vec<u8>) -> Option<String> {
    match String::from_utf8(data) {
        Ok(text) => Some(text),
        Err(e) => {
            tracing::warn!(
                backend = NAME,
                key = path,
                bytes = e.as_bytes().len(),
                "znode data is not UTF-8 text; it has no key"
            );
            None
        }
    }
}

/// `/a/b` -> `/a`, `/a` -> `/`; `None` for `/`.
fn parent(path: &str) -> Option<&str> {
    match path.rsplit_once('/') {
        Some(("", "")) | None => None,
        Some(("", _)) => Some("/"),
        Some((parent, _)) => Some(parent),
    }
}

/// What the children of `path` start with.
fn child_prefix(path: &str) -> String {
    match path {
        "/" => "/".to_string(),
        _ => format!("{path}/"),
    }
}

impl Mirror {
    /// An empty mirror.
    pub fn new() -> Mirror {
        Mirror::default()
    }

    /// Records a znode read by a load (no updates: the load ends in a snapshot).
    pub fn insert(&mut self, path: String, data: Option<String>) {
        self.nodes.insert(path, data);
    }

    /// Number of znodes held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = child_prefix(path);
        self.nodes
            .range::<str, _>((Bound::Excluded(prefix.as_str()), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// The value of the key `path`, if it is one: a leaf with text data.
    fn key_value(&self, path: &str) -> Option<&str> {
        if path == "/" || self.has_children(path) {
            return None;
        }
        self.nodes.get(path)?.as_deref()
    }

    /// The keys: every leaf znode with text data.
    pub fn keys(&self) -> KeyTree {
        let mut keys = KeyTree::new();
        for (path, data) in &self.nodes {
            if let Some(value) = data {
                if path != "/" && !self.has_children(path) {
                    keys.insert(path, value.as_str());
                }
            }
        }
        keys
    }

    /// A znode was created or its data changed (as read just now).
    pub fn set(&mut self, path: &str, data: Option<String>) -> Vec<Update> {
        let mut updates = Vec::new();
        let is_new = !self.nodes.contains_key(path);
        if is_new {
            // A parent that was a leaf (a key) becomes a directory.
            if let Some(parent) = parent(path) {
                if self.key_value(parent).is_some() {
                    updates.push(Update::Delete {
                        key: parent.to_string(),
                    });
                }
            }
        }
        let old = self.key_value(path).map(str::to_string);
        self.nodes.insert(path.to_string(), data);
        match (old, self.key_value(path)) {
            (old, Some(new)) if old.as_deref() != Some(new) => updates.push(Update::Put {
                key: path.to_string(),
                value: new.to_string(),
            }),
            (Some(_), None) => updates.push(Update::Delete {
                key: path.to_string(),
            }),
            _ => {}
        }
        updates
    }

    /// A znode was deleted (with whatever was held below it).
    pub fn remove(&mut self, path: &str) -> Vec<Update> {
        if !self.nodes.contains_key(path) {
            return Vec::new();
        }
        let mut updates = Vec::new();
        let was_key = self.key_value(path).is_some();
        let prefix = child_prefix(path);
        let below: Vec<String> = self
            .nodes
            .range::<str, _>((Bound::Excluded(prefix.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for child in below.iter().rev() {
            if self.key_value(child).is_some() {
                updates.push(Update::Delete { key: child.clone() });
            }
            self.nodes.remove(child);
        }
        if was_key {
            updates.push(Update::Delete {
                key: path.to_string(),
            });
        }
        self.nodes.remove(path);
        // A parent left without children becomes a key.
        if let Some(parent) = parent(path) {
            if let Some(value) = self.key_value(parent) {
                updates.push(Update::Put {
                    key: parent.to_string(),
                    value: value.to_string(),
                });
            }
        }
        updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Update {
        Update::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn del(k: &str) -> Update {
        Update::Delete { key: k.into() }
    }

    fn mirror(nodes: &[(&str, &str)]) -> Mirror {
        let mut m = Mirror::new();
        for (p, d) in nodes {
            m.insert(p.to_string(), Some(d.to_string()));
        }
        m
    }

    #[test]
    fn leaves_are_keys_and_directories_are_not() {
        let m = mirror(&[
            ("/", ""),
            ("/app", "dir data is ignored"),
            ("/app/db", ""),
            ("/app/db/host", "h"),
            ("/app/empty", ""),
        ]);
        let keys: Vec<(String, String)> = m
            .keys()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            keys,
            [
                ("/app/db/host".to_string(), "h".to_string()),
                ("/app/empty".to_string(), String::new())
            ]
        );
        // A root with nothing below is no key.
        assert!(mirror(&[("/", "")]).keys().is_empty());
        // A leaf prefix is a key itself.
        assert_eq!(mirror(&[("/a/b", "v")]).keys().get("/a/b"), Some("v"));
    }

    #[test]
    fn a_first_child_turns_a_leaf_into_a_directory_and_back() {
        let mut m = mirror(&[("/app", ""), ("/app/db", "old")]);
        assert_eq!(
            m.set("/app/db/host", Some("h".into())),
            [del("/app/db"), put("/app/db/host", "h")]
        );
        assert_eq!(m.set("/app/db/host", Some("h".into())), []);
        assert_eq!(
            m.set("/app/db/host", Some("h2".into())),
            [put("/app/db/host", "h2")]
        );
        // Directory data changes are not keys.
        assert_eq!(m.set("/app/db", Some("new".into())), []);
        assert_eq!(
            m.remove("/app/db/host"),
            [del("/app/db/host"), put("/app/db", "new")]
        );
        assert_eq!(m.remove("/app/db/host"), []);
        assert_eq!(m.remove("/app/db"), [del("/app/db"), put("/app", "")]);
    }

    #[test]
    fn removing_a_subtree_deletes_its_keys_and_binary_data_has_none() {
        let mut m = mirror(&[
            ("/a", ""),
            ("/a/b", ""),
            ("/a/b/c", "1"),
            ("/a/b/d", "2"),
            ("/ab", "x"),
        ]);
        assert_eq!(
            m.remove("/a/b"),
            [del("/a/b/d"), del("/a/b/c"), put("/a", "")]
        );
        assert_eq!(m.keys().get("/ab"), Some("x"));
        assert_eq!(text("/k", vec![0xff, 0xfe]), None);
        assert_eq!(m.set("/a/bin", None), [del("/a")]);
        assert_eq!(m.set("/a/bin", Some("t".into())), [put("/a/bin", "t")]);
        assert_eq!(m.set("/a/bin", None), [del("/a/bin")]);
        assert_eq!(m.len(), 3);
    }
}

//! The served tree: nodes that carry their answers, computed once per version.
//!
//! Every node holds its JSON and its plain-text answer, built bottom-up from
//! its children's, so a request never serializes anything: it walks the path
//! and clones a reference-counted buffer. A container appears in `/containers`,
//! in its service's `containers` and under its stack; all three are the same
//! shared node. Only the two answers that depend on who asks, `/` of a
//! version (which includes `self`) and `/self`, are put together per request
//! from their children's buffers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// One node of the tree, with its answers.
#[derive(Debug)]
pub(crate) struct Node {
    kind: Kind,
    json: Bytes,
    text: Bytes,
}

#[derive(Debug)]
enum Kind {
    /// A string, number, boolean or null.
    Scalar,
    /// An object, by key (sorted, as Go's JSON encoder sorts them).
    Map(BTreeMap<String, Arc<Node>>),
    /// A list, with its items' `name` and `uuid` for lookups by name.
    List {
        items: Vec<Arc<Node>>,
        by_name: HashMap<String, usize>,
    },
}

impl Node {
    /// A scalar (an array or object is converted with [`Node::from_value`]).
    pub fn scalar(value: &Value) -> Arc<Node> {
        match value {
            Value::Array(_) | Value::Object(_) => Node::from_value(value),
            _ => Arc::new(Node {
                kind: Kind::Scalar,
                json: Bytes::from(value.to_string()),
                text: Bytes::from(scalar_text(value)),
            }),
        }
    }

    /// A string scalar.
    pub fn string(value: &str) -> Arc<Node> {
        Node::scalar(&Value::String(value.to_string()))
    }

    /// Any JSON value, recursively.
    pub fn from_value(value: &Value) -> Arc<Node> {
        match value {
            Value::Object(map) => Node::map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Node::from_value(v)))
                    .collect(),
            ),
            Value::Array(items) => Node::list(items.iter().map(Node::from_value).collect()),
            scalar => Node::scalar(scalar),
        }
    }

    /// An object.
    pub fn map(entries: BTreeMap<String, Arc<Node>>) -> Arc<Node> {
        let json = map_json(entries.iter().map(|(k, v)| (k.as_str(), &v.json)));
        let text = map_text(entries.iter().map(|(k, v)| (k.as_str(), v.is_composite())));
        Arc::new(Node {
            kind: Kind::Map(entries),
            json,
            text,
        })
    }

    /// A list.
    pub fn list(items: Vec<Arc<Node>>) -> Arc<Node> {
        let size: usize = items.iter().map(|i| i.json.len() + 1).sum();
        let mut json = BytesMut::with_capacity(size + 2);
        json.put_u8(b'[');
        let mut text = String::new();
        let mut by_name = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                json.put_u8(b',');
            }
            json.extend_from_slice(&item.json);
            // Rancher lists an item that has a name (or uuid) as `index=name`.
            match item.label() {
                Some(name) => {
                    let _ = writeln!(text, "{i}={}", query_escape(name));
                }
                None if item.is_composite() => {
                    let _ = writeln!(text, "{i}/");
                }
                None => {
                    let _ = writeln!(text, "{i}");
                }
            }
            for field in ["name", "uuid"] {
                if let Some(key) = item.field_text(field) {
                    by_name.entry(key.to_string()).or_insert(i);
                }
            }
        }
        json.put_u8(b']');
        Arc::new(Node {
            kind: Kind::List { items, by_name },
            json: json.freeze(),
            text: Bytes::from(text),
        })
    }

    /// The compact JSON of this node.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The plain-text answer: a scalar's value, a map's keys (`key/` for
    /// those with children), a list's `index=name`, `index/` or `index`.
    pub fn text(&self) -> &Bytes {
        &self.text
    }

    /// Whether this is a map or a list.
    pub fn is_composite(&self) -> bool {
        !matches!(self.kind, Kind::Scalar)
    }

    /// The child named `segment`: a map's key; a list's index, or the item
    /// whose `name` or `uuid` it is (as Rancher allows).
    pub fn child(&self, segment: &str) -> Option<&Arc<Node>> {
        match &self.kind {
            Kind::Scalar => None,
            Kind::Map(entries) => entries.get(segment),
            Kind::List { items, by_name } => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .or_else(|| by_name.get(segment).and_then(|&i| items.get(i))),
        }
    }

    /// The node at `path` below this one.
    pub fn walk<S: AsRef<str>>(self: &Arc<Node>, path: &[S]) -> Option<&Arc<Node>> {
        let mut here = self;
        for segment in path {
            here = here.child(segment.as_ref())?;
        }
        Some(here)
    }

    /// The map's entries (empty for anything else).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Arc<Node>)> {
        let map = match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        };
        map.into_iter().flatten().map(|(k, v)| (k.as_str(), v))
    }

    /// The text of a scalar field of a map.
    pub fn field_text(&self, field: &str) -> Option<&str> {
        match &self.kind {
            Kind::Map(entries) => entries
                .get(field)
                .filter(|n| !n.is_composite())
                .and_then(|n| std::str::from_utf8(&n.text).ok()),
            _ => None,
        }
    }

    /// What Rancher shows for a list item: its `name`, else its `uuid`.
    fn label(&self) -> Option<&str> {
        self.field_text("name").or_else(|| self.field_text("uuid"))
    }
}

/// JSON of an object from its entries' JSON, keys in the given order.
pub(crate) fn map_json<'a>(entries: impl Iterator<Item = (&'a str, &'a Bytes)> + Clone) -> Bytes {
    let size: usize = entries.clone().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(size + 2);
    out.put_u8(b'{');
    for (i, (key, json)) in entries.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.extend_from_slice(Value::String(key.to_string()).to_string().as_bytes());
        out.put_u8(b':');
        out.extend_from_slice(json);
    }
    out.put_u8(b'}');
    out.freeze()
}

/// Plain text of an object: one line per key, sorted, `key/` for children
/// that are maps or lists.
pub(crate) fn map_text<'a>(entries: impl Iterator<Item = (&'a str, bool)>) -> Bytes {
    let mut lines: Vec<String> = entries
        .map(|(key, composite)| {
            let mut line = query_escape(key);
            if composite {
                line.push('/');
            }
            line.push('\n');
            line
        })
        .collect();
    lines.sort();
    Bytes::from(lines.concat())
}

/// A scalar as Rancher's plain text shows it: strings raw, integers as they
/// are, floats without trailing zeros (6 decimals at most), null as nothing.
pub(crate) fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                let s = format!("{f:.6}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        }
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

/// Go's `url.QueryEscape`, which Rancher applies to keys and names it lists.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// What a client is, for `/self`: its container and where that lives.
#[derive(Debug, Clone)]
pub(crate) struct SelfView {
    pub container: Arc<Node>,
    pub service: Arc<Node>,
    pub stack: Arc<Node>,
    pub host: Option<Arc<Node>>,
}

impl SelfView {
    fn entries(&self) -> Vec<(&'static str, &Arc<Node>)> {
        let mut entries = vec![("container", &self.container)];
        if let Some(host) = &self.host {
            entries.push(("host", host));
        }
        entries.push(("service", &self.service));
        entries.push(("stack", &self.stack));
        entries
    }

    fn get(&self, part: &str) -> Option<&Arc<Node>> {
        match part {
            "container" => Some(&self.container),
            "service" => Some(&self.service),
            "stack" => Some(&self.stack),
            "host" => self.host.as_ref(),
            _ => None,
        }
    }
}

/// One version of the served metadata.
#[derive(Debug)]
pub(crate) struct Tree {
    /// The metadata version (`/latest/version`).
    pub version: String,
    /// The tree every client shares: `containers`, `hosts`, `services`,
    /// `stacks`, `version` (no `self`).
    pub root: Arc<Node>,
    /// `self` for each container, in `/containers` order.
    pub selves: Vec<SelfView>,
    /// Container name to its index in `selves`.
    pub by_name: HashMap<String, usize>,
    /// Container `primary_ip` to its index in `selves`.
    pub by_ip: HashMap<IpAddr, usize>,
    /// `--self`: the container every client is, unless a header says otherwise.
    pub fixed_self: Option<usize>,
    /// The answers file's `self`: for clients no other rule places.
    pub default_self: Option<usize>,
}

/// What a path leads to.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    /// A node of the tree.
    Node(&'a Arc<Node>),
    /// A version's root, with the client's `self` when it has one.
    Root(Option<&'a SelfView>),
    /// `/self` itself.
    SelfMap(&'a SelfView),
}

impl Tree {
    /// Which container a client is: the `X-Sidekick-Self` header, else
    /// `--self`, else the container whose `primary_ip` the client connects
    /// from, else the answers file's `self`.
    pub fn self_for(&self, header: Option<&str>, peer: IpAddr) -> Option<usize> {
        if let Some(name) = header {
            return self.by_name.get(name).copied();
        }
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.fixed_self
            .or_else(|| self.by_ip.get(&peer).copied())
            .or(self.default_self)
    }

    /// The node at `path` (below the version) for a client that is `me`.
    pub fn lookup<S: AsRef<str>>(&self, path: &[S], me: Option<usize>) -> Option<Found<'_>> {
        let me = me.and_then(|i| self.selves.get(i));
        let Some((first, rest)) = path.split_first() else {
            return Some(Found::Root(me));
        };
        if first.as_ref() != "self" {
            return self.root.walk(path).map(Found::Node);
        }
        let me = me?;
        let Some((part, rest)) = rest.split_first() else {
            return Some(Found::SelfMap(me));
        };
        me.get(part.as_ref())?.walk(rest).map(Found::Node)
    }
}

impl Found<'_> {
    /// The JSON answer.
    pub fn json(&self, tree: &Tree) -> Bytes {
        match self {
            Found::Node(n) => n.json().clone(),
            Found::Root(None) => tree.root.json.clone(),
            Found::Root(Some(me)) => {
                let self_json = self_json(me);
                let mut entries: Vec<(&str, &Bytes)> =
                    tree.root.entries().map(|(k, v)| (k, &v.json)).collect();
                let at = entries.partition_point(|(k, _)| *k < "self");
                entries.insert(at, ("self", &self_json));
                map_json(entries.into_iter())
            }
            Found::SelfMap(me) => self_json(me),
        }
    }

    /// The plain-text answer.
    pub fn text(&self, tree: &Tree) -> Bytes {
        match self {
            Found::Node(n) => n.text().clone(),
            Found::Root(None) => tree.root.text.clone(),
            Found::Root(Some(_)) => map_text(
                tree.root
                    .entries()
                    .map(|(k, v)| (k, v.is_composite()))
                    .chain([("self", true)]),
            ),
            Found::SelfMap(me) => map_text(me.entries().into_iter().map(|(k, _)| (k, true))),
        }
    }
}

fn self_json(me: &SelfView) -> Bytes {
    let entries = me.entries();
    map_json(entries.iter().map(|(k, v)| (*k, &v.json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(n: &Node) -> &str {
        std::str::from_utf8(n.text()).unwrap()
    }

    #[test]
    fn answers_like_rancher() {
        let v = json!({
            "name": "zk",
            "scale": 3,
            "ratio": 0.25,
            "ok": true,
            "none": null,
            "labels": {"a b": "1", "io.rancher/x": "y"},
            "containers": [{"name": "zk-1", "ip": "1"}, {"uuid": "u-2"}, {"x": 1}, ["n"], "s"]
        });
        let n = Node::from_value(&v);
        assert_eq!(
            text(&n),
            "containers/\nlabels/\nname\nnone\nok\nratio\nscale\n"
        );
        assert_eq!(text(n.child("name").unwrap()), "zk");
        assert_eq!(text(n.child("scale").unwrap()), "3");
        assert_eq!(text(n.child("ratio").unwrap()), "0.25");
        assert_eq!(text(n.child("ok").unwrap()), "true");
        assert_eq!(text(n.child("none").unwrap()), "");
        assert_eq!(text(n.child("labels").unwrap()), "a+b\nio.rancher%2Fx\n");
        assert_eq!(
            text(n.child("containers").unwrap()),
            "0=zk-1\n1=u-2\n2/\n3/\n4\n"
        );
        // JSON is what serde_json (and Go) give: sorted keys, compact.
        let parsed: Value = serde_json::from_slice(n.json()).unwrap();
        assert_eq!(parsed, v);
        assert_eq!(n.json().as_ref(), v.to_string().as_bytes());
        // Lists by index, name or uuid.
        let c = n.child("containers").unwrap();
        assert!(Arc::ptr_eq(c.child("0").unwrap(), c.child("zk-1").unwrap()));
        assert!(Arc::ptr_eq(c.child("1").unwrap(), c.child("u-2").unwrap()));
        assert!(c.child("9").is_none());
        assert_eq!(text(n.walk(&["containers", "zk-1", "ip"]).unwrap()), "1");
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(query_escape("a b/c=d~e"), "a+b%2Fc%3Dd~e");
    }
}

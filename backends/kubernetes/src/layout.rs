//! The key layout: which objects an interest's prefixes point at, and the keys
//! an object gives (`/configmaps/<name>/<key>`, `/secrets/<name>/<key>`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use sidekick_backend::Interest;

/// A kind of object whose data become keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// First key segment, and the API's plural resource name.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
        }
    }

    fn from_segment(segment: &str) -> Option<Kind> {
        match segment {
            "configmaps" => Some(Kind::ConfigMap),
            "secrets" => Some(Kind::Secret),
            _ => None,
        }
    }
}

/// One watch's worth of keyed objects: every object of a kind, or one by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Target {
    pub kind: Kind,
    /// `None`: all objects of the kind in the namespace.
    pub name: Option<String>,
}

impl Target {
    /// The key prefix this target's objects fill, and that nothing else fills.
    pub(crate) fn region(&self) -> String {
        match &self.name {
            Some(name) => format!("/{}/{name}", self.kind.resource()),
            None => format!("/{}", self.kind.resource()),
        }
    }

    /// Field selector that narrows a list or watch to this target.
    pub(crate) fn field_selector(&self) -> Option<String> {
        self.name.as_ref().map(|n| format!("metadata.name={n}"))
    }
}

/// What to read for an interest: deduplicated targets, the catalog or not, and
/// prefixes outside the layout (they read nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
    pub services: bool,
    pub ignored: Vec<String>,
}

impl Plan {
    /// Maps prefixes to objects. `/` and `/configmaps` mean every ConfigMap,
    /// `/configmaps/app` and anything below it ConfigMap `app` alone (likewise
    /// for Secrets). A whole-kind target absorbs the named ones of its kind, and
    /// two prefixes into one object give one target.
    pub(crate) fn new(interest: &Interest) -> Plan {
        let mut set: BTreeSet<Target> = BTreeSet::new();
        let mut ignored = Vec::new();
        for prefix in &interest.prefixes {
            let mut segments = prefix.split('/').filter(|s| !s.is_empty());
            match segments.next() {
                None => {
                    for kind in [Kind::ConfigMap, Kind::Secret] {
                        set.insert(Target { kind, name: None });
                    }
                }
                Some(first) => match Kind::from_segment(first) {
                    Some(kind) => {
                        let name = segments.next().map(str::to_string);
                        set.insert(Target { kind, name });
                    }
                    None => ignored.push(prefix.clone()),
                },
            }
        }
        let whole: BTreeSet<Kind> = set
            .iter()
            .filter(|t| t.name.is_none())
            .map(|t| t.kind)
            .collect();
        let targets = set
            .into_iter()
            .filter(|t| t.name.is_none() || !whole.contains(&t.kind))
            .collect();
        Plan {
            targets,
            services: interest.services,
            ignored,
        }
    }
}

/// A data value as read from an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    /// Bytes that are not UTF-8: no key; only the length is kept, for a warning.
    Binary(usize),
}

/// The data of one ConfigMap or Secret, by data key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Data {
    pub name: String,
    pub entries: BTreeMap<String, Value>,
}

impl Data {
    /// A ConfigMap's `data`, and its `binaryData` where that is UTF-8 text.
    pub(crate) fn from_configmap(cm: ConfigMap) -> Data {
        let mut entries = BTreeMap::new();
        for (key, bytes) in cm.binary_data.unwrap_or_default() {
            entries.insert(key, bytes_value(bytes.0));
        }
        for (key, text) in cm.data.unwrap_or_default() {
            entries.insert(key, Value::Text(text));
        }
        Data {
            name: cm.metadata.name.unwrap_or_default(),
            entries,
        }
    }

    /// A Secret's `data`, already base64-decoded by `ByteString`.
    pub(crate) fn from_secret(secret: Secret) -> Data {
        let entries = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, bytes)| (key, bytes_value(bytes.0)))
            .collect();
        Data {
            name: secret.metadata.name.unwrap_or_default(),
            entries,
        }
    }

    /// `(key, value)` pairs under `/<kind>/<name>/`, binary values as they are
    /// (the caller decides what to do with them).
    pub(crate) fn keys(&self, kind: Kind) -> impl Iterator<Item = (String, &Value)> + '_ {
        let base = format!("/{}/{}", kind.resource(), self.name);
        self.entries
            .iter()
            .map(move |(k, v)| (format!("{base}/{k}"), v))
    }
}

fn bytes_value(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => Value::Text(text),
        Err(e) => Value::Binary(e.as_bytes().len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn plan(prefixes: &[&str]) -> Plan {
        Plan::new(&Interest {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            services: false,
        })
    }

    fn named(kind: Kind, name: &str) -> Target {
        Target {
            kind,
            name: Some(name.into()),
        }
    }

    #[test]
    fn root_watches_both_kinds_whole() {
        let p = plan(&["/"]);
        assert_eq!(
            p.targets,
            [
                Target {
                    kind: Kind::ConfigMap,
                    name: None
                },
                Target {
                    kind: Kind::Secret,
                    name: None
                }
            ]
        );
    }

    #[test]
    fn prefixes_into_one_object_give_one_target() {
        let p = plan(&[
            "/configmaps/app/a",
            "/configmaps/app/b",
            "/configmaps/app",
            "/secrets/db/password",
        ]);
        assert_eq!(
            p.targets,
            [named(Kind::ConfigMap, "app"), named(Kind::Secret, "db")]
        );
        assert_eq!(
            p.targets[0].field_selector().as_deref(),
            Some("metadata.name=app")
        );
        assert_eq!(p.targets[0].region(), "/configmaps/app");
    }

    #[test]
    fn whole_kind_absorbs_named() {
        let p = plan(&["/configmaps", "/configmaps/app", "/secrets/x"]);
        assert_eq!(
            p.targets,
            [
                Target {
                    kind: Kind::ConfigMap,
                    name: None
                },
                named(Kind::Secret, "x")
            ]
        );
    }

    #[test]
    fn other_prefixes_are_ignored() {
        let p = plan(&["/db/host", "/configmapsx"]);
        assert!(p.targets.is_empty());
        assert_eq!(p.ignored, ["/db/host", "/configmapsx"]);
    }

    #[test]
    fn secret_bytes_decode_and_binary_is_marked() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                ("password".to_string(), ByteString(b"s3cret".to_vec())),
                ("blob".to_string(), ByteString(vec![0xff, 0xfe, 0])),
            ])),
            ..Secret::default()
        };
        let data = Data::from_secret(secret);
        let keys: Vec<(String, Value)> = data
            .keys(Kind::Secret)
            .map(|(k, v)| (k, v.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("/secrets/db/blob".to_string(), Value::Binary(3)),
                (
                    "/secrets/db/password".to_string(),
                    Value::Text("s3cret".into())
                ),
            ]
        );
    }
}

//! The key layout: which objects an interest's prefixes point at, and the keys
//! an object gives (`/configmaps/<name>/<key>`, `/secrets/<name>/<key>`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use sidekick_backend::Interest;

use crate::scope::Scope;

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

/// One watch's worth of keyed objects: every object of a kind, or one by name,
/// in one namespace or (`namespace: None`) in all of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Target {
    pub kind: Kind,
    /// `None`: every namespace (a cluster-wide list and watch).
    pub namespace: Option<String>,
    /// `None`: all objects of the kind in the namespace.
    pub name: Option<String>,
}

impl Target {
    /// The key prefix this target's objects fill, and that nothing else
    /// fills: `/configmaps[/<name>]`, or with `qualified` keys
    /// `/configmaps[/<ns>[/<name>]]`.
    pub(crate) fn region(&self, qualified: bool) -> String {
        let mut region = format!("/{}", self.kind.resource());
        if qualified {
            if let Some(ns) = &self.namespace {
                region.push('/');
                region.push_str(ns);
            }
        }
        if let Some(name) = &self.name {
            region.push('/');
            region.push_str(name);
        }
        region
    }

    /// Field selector that narrows a list or watch to this target.
    pub(crate) fn field_selector(&self) -> Option<String> {
        self.name.as_ref().map(|n| format!("metadata.name={n}"))
    }

    /// True when every object of `other` is one of this target's.
    fn absorbs(&self, other: &Target) -> bool {
        self != other
            && self.kind == other.kind
            && self.name.is_none()
            && (self.namespace.is_none() || self.namespace == other.namespace)
    }
}

/// What to read for an interest: deduplicated targets, the catalog or not, and
/// prefixes outside the layout (they read nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
    pub services: bool,
    pub ignored: Vec<String>,
    /// Prefixes naming a namespace that is not read (with several namespaces).
    pub outside: Vec<String>,
}

impl Plan {
    /// Maps prefixes to objects. With one namespace, `/` and `/configmaps`
    /// mean every ConfigMap, `/configmaps/app` and anything below it ConfigMap
    /// `app` alone (likewise for Secrets). With several namespaces (qualified
    /// keys) `/configmaps` means every ConfigMap of each (one cluster-wide
    /// target for all namespaces), `/configmaps/ns` every ConfigMap of `ns`,
    /// `/configmaps/ns/app` that one. A whole-kind target absorbs the narrower
    /// ones it covers, and two prefixes into one object give one target.
    pub(crate) fn new(interest: &Interest, scope: &Scope) -> Plan {
        let mut set: BTreeSet<Target> = BTreeSet::new();
        let mut ignored = Vec::new();
        let mut outside = Vec::new();
        let every = |kind: Kind| -> Vec<Target> {
            match &scope.namespaces {
                Some(list) => list
                    .iter()
                    .map(|ns| Target {
                        kind,
                        namespace: Some(ns.clone()),
                        name: None,
                    })
                    .collect(),
                None => vec![Target {
                    kind,
                    namespace: None,
                    name: None,
                }],
            }
        };
        for prefix in &interest.prefixes {
            let mut segments = prefix.split('/').filter(|s| !s.is_empty());
            let Some(first) = segments.next() else {
                set.extend(every(Kind::ConfigMap));
                set.extend(every(Kind::Secret));
                continue;
            };
            let Some(kind) = Kind::from_segment(first) else {
                ignored.push(prefix.clone());
                continue;
            };
            if !scope.qualified() {
                let namespace = scope.namespaces.as_ref().and_then(|l| l.first().cloned());
                let name = segments.next().map(str::to_string);
                set.insert(Target {
                    kind,
                    namespace,
                    name,
                });
                continue;
            }
            match segments.next() {
                None => set.extend(every(kind)),
                Some(ns) if !scope.contains(ns) => outside.push(prefix.clone()),
                Some(ns) => {
                    set.insert(Target {
                        kind,
                        namespace: Some(ns.to_string()),
                        name: segments.next().map(str::to_string),
                    });
                }
            }
        }
        let all: Vec<Target> = set.iter().cloned().collect();
        let targets = set
            .into_iter()
            .filter(|t| !all.iter().any(|w| w.absorbs(t)))
            .collect();
        Plan {
            targets,
            services: interest.services,
            ignored,
            outside,
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
    pub namespace: String,
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
            namespace: cm.metadata.namespace.unwrap_or_default(),
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
            namespace: secret.metadata.namespace.unwrap_or_default(),
            name: secret.metadata.name.unwrap_or_default(),
            entries,
        }
    }

    /// `(key, value)` pairs under `/<kind>/<name>/` (`qualified`:
    /// `/<kind>/<ns>/<name>/`), binary values as they are (the caller decides
    /// what to do with them).
    pub(crate) fn keys(
        &self,
        kind: Kind,
        qualified: bool,
    ) -> impl Iterator<Item = (String, &Value)> + '_ {
        let base = if qualified {
            format!("/{}/{}/{}", kind.resource(), self.namespace, self.name)
        } else {
            format!("/{}/{}", kind.resource(), self.name)
        };
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

    fn interest(prefixes: &[&str]) -> Interest {
        Interest {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            services: false,
        }
    }

    fn plan(prefixes: &[&str]) -> Plan {
        Plan::new(&interest(prefixes), &Scope::one("default"))
    }

    fn whole(kind: Kind) -> Target {
        Target {
            kind,
            namespace: Some("default".into()),
            name: None,
        }
    }

    fn named(kind: Kind, name: &str) -> Target {
        Target {
            kind,
            namespace: Some("default".into()),
            name: Some(name.into()),
        }
    }

    fn at(kind: Kind, ns: Option<&str>, name: Option<&str>) -> Target {
        Target {
            kind,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn several_namespaces_qualify_the_layout() {
        let scope = Scope {
            namespaces: Some(vec!["a".into(), "b".into()]),
        };
        let p = Plan::new(
            &interest(&["/configmaps", "/secrets/b/db/pw", "/secrets/c/x"]),
            &scope,
        );
        assert_eq!(
            p.targets,
            [
                at(Kind::ConfigMap, Some("a"), None),
                at(Kind::ConfigMap, Some("b"), None),
                at(Kind::Secret, Some("b"), Some("db")),
            ]
        );
        assert_eq!(p.outside, ["/secrets/c/x"]);
        assert_eq!(p.targets[2].region(true), "/secrets/b/db");
        let p = Plan::new(&interest(&["/secrets/a", "/secrets/a/db"]), &scope);
        assert_eq!(p.targets, [at(Kind::Secret, Some("a"), None)]);
    }

    #[test]
    fn all_namespaces_is_one_cluster_wide_target_per_kind() {
        let scope = Scope { namespaces: None };
        let p = Plan::new(&interest(&["/", "/configmaps/x/app"]), &scope);
        assert_eq!(
            p.targets,
            [
                at(Kind::ConfigMap, None, None),
                at(Kind::Secret, None, None)
            ]
        );
        assert_eq!(p.targets[0].region(true), "/configmaps");
        let p = Plan::new(&interest(&["/configmaps/x/app"]), &scope);
        assert_eq!(p.targets, [at(Kind::ConfigMap, Some("x"), Some("app"))]);
    }

    #[test]
    fn root_watches_both_kinds_whole() {
        let p = plan(&["/"]);
        assert_eq!(p.targets, [whole(Kind::ConfigMap), whole(Kind::Secret)]);
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
        assert_eq!(p.targets[0].region(false), "/configmaps/app");
    }

    #[test]
    fn whole_kind_absorbs_named() {
        let p = plan(&["/configmaps", "/configmaps/app", "/secrets/x"]);
        assert_eq!(
            p.targets,
            [whole(Kind::ConfigMap), named(Kind::Secret, "x")]
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
            .keys(Kind::Secret, false)
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

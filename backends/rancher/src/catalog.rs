//! The service catalog (`services()`, `service(name, ...)`) from the metadata's
//! services and their containers.
//!
//! - Every service is listed as `stack_name/service_name`; services of the
//!   asking container's own stack (`/self/stack/name`) are listed under their
//!   bare name too, as Rancher's DNS resolves them.
//! - One instance per container with a `primary_ip`: `id` is the container
//!   name, `address` its `primary_ip`, `port` the private port of the
//!   service's first `ports` entry (`"8080:80/tcp"` gives 80), else of the
//!   container's own first `ports` entry, else 0.
//! - `node` is the host name of the container's host (`host_uuid` looked up in
//!   `/hosts`: `hostname`, else `name`), or the `host_uuid` itself.
//! - `healthy` follows what Rancher routes traffic to: the container's `state`
//!   is `running` (or absent) and its `health_state` is `healthy`,
//!   `updating-healthy`, or absent/empty (a service without a health check).
//! - `tags` is empty; `meta` holds the container's labels plus `service_index`
//!   and `create_index` when the metadata has them.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use sidekick_backend::{Catalog, ServiceInstance};

use crate::flatten::scalar_text;

/// Builds the catalog from a version's whole tree (`/latest` as JSON).
pub(crate) fn from_metadata(root: &Value) -> Catalog {
    let own_stack = str_at(root, &["self", "stack", "name"])
        .or_else(|| str_at(root, &["self", "container", "stack_name"]))
        .or_else(|| str_at(root, &["self", "service", "stack_name"]));

    let hosts: HashMap<&str, &str> = list(root.get("hosts"))
        .filter_map(|h| {
            let uuid = str_field(h, "uuid")?;
            let name = str_field(h, "hostname").or_else(|| str_field(h, "name"))?;
            Some((uuid, name))
        })
        .collect();
    let containers: HashMap<&str, &Value> = list(root.get("containers"))
        .filter_map(|c| Some((str_field(c, "name")?, c)))
        .collect();

    // `/services` lists every service; older trees may only have them under stacks.
    let services: Vec<&Value> = if root.get("services").is_some() {
        list(root.get("services")).collect()
    } else {
        list(root.get("stacks"))
            .flat_map(|s| list(s.get("services")))
            .collect()
    };

    let mut catalog: BTreeMap<String, Vec<ServiceInstance>> = BTreeMap::new();
    for service in services {
        let Some(name) = str_field(service, "name") else {
            continue;
        };
        let stack = str_field(service, "stack_name").unwrap_or_default();
        let service_port = first_private_port(service.get("ports"));
        let mut instances = Vec::new();
        for entry in list(service.get("containers")) {
            // 2015-07-25 lists container names; later versions the containers.
            let container = match entry {
                Value::String(n) => match containers.get(n.as_str()) {
                    Some(c) => *c,
                    None => continue,
                },
                other => other,
            };
            if let Some(instance) = instance(container, service_port, &hosts) {
                instances.push(instance);
            }
        }
        let qualified = if stack.is_empty() {
            name.to_string()
        } else {
            format!("{stack}/{name}")
        };
        if own_stack.is_some() && own_stack == Some(stack) {
            catalog
                .entry(name.to_string())
                .or_default()
                .extend(instances.iter().cloned());
        }
        catalog.entry(qualified).or_default().extend(instances);
    }
    Catalog::from_services(catalog)
}

fn instance(
    container: &Value,
    service_port: Option<u16>,
    hosts: &HashMap<&str, &str>,
) -> Option<ServiceInstance> {
    let address = str_field(container, "primary_ip")?;
    let id = str_field(container, "name")
        .or_else(|| str_field(container, "uuid"))
        .unwrap_or(address);
    let port = service_port
        .or_else(|| first_private_port(container.get("ports")))
        .unwrap_or(0);
    let node = str_field(container, "host_uuid")
        .map(|uuid| hosts.get(uuid).copied().unwrap_or(uuid))
        .unwrap_or_default();
    let mut meta: BTreeMap<String, String> = match container.get("labels") {
        Some(Value::Object(labels)) => labels
            .iter()
            .filter(|(_, v)| !v.is_object() && !v.is_array())
            .map(|(k, v)| (k.clone(), scalar_text(v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    for field in ["service_index", "create_index"] {
        if let Some(v) = container.get(field).filter(|v| !v.is_null()) {
            meta.insert(field.to_string(), scalar_text(v));
        }
    }
    Some(ServiceInstance {
        id: id.to_string(),
        name: String::new(),
        address: address.to_string(),
        port,
        node: node.to_string(),
        tags: Vec::new(),
        meta,
        healthy: healthy(container),
    })
}

/// Whether Rancher would send traffic to the container.
pub(crate) fn healthy(container: &Value) -> bool {
    let state_ok = matches!(str_field(container, "state"), None | Some("" | "running"));
    let health_ok = matches!(
        str_field(container, "health_state"),
        None | Some("" | "healthy" | "updating-healthy")
    );
    state_ok && health_ok
}

/// The private (container) port of the first `ports` entry: `"8080:80/tcp"`,
/// `"0.0.0.0:8080:80/tcp"` and `"80"` all give 80.
pub(crate) fn first_private_port(ports: Option<&Value>) -> Option<u16> {
    let first = list(ports).next()?;
    let text = match first {
        Value::String(s) => s.as_str(),
        Value::Number(n) => return n.as_u64().and_then(|p| u16::try_from(p).ok()),
        _ => return None,
    };
    let spec = text.split('/').next().unwrap_or(text);
    spec.rsplit(':').next()?.trim().parse().ok()
}

fn list(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

fn str_field<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut here = value;
    for p in path {
        here = here.get(p)?;
    }
    here.as_str().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree() -> Value {
        json!({
            "self": {"stack": {"name": "app"}},
            "hosts": [{"uuid": "h-1", "hostname": "node-a"}, {"uuid": "h-2", "name": "node-b"}],
            "containers": [{"name": "db-1", "primary_ip": "10.0.1.1", "host_uuid": "h-9"}],
            "services": [
                {
                    "name": "web", "stack_name": "app", "ports": ["8080:80/tcp"],
                    "containers": [
                        {"name": "web-2", "primary_ip": "10.0.0.2", "host_uuid": "h-2",
                         "health_state": "unhealthy", "service_index": "2"},
                        {"name": "web-1", "primary_ip": "10.0.0.1", "host_uuid": "h-1",
                         "health_state": "healthy", "service_index": "1", "create_index": 1,
                         "labels": {"tier": "front"}},
                        {"name": "web-3", "host_uuid": "h-1"}
                    ]
                },
                {"name": "db", "stack_name": "data", "containers": ["db-1"]},
                {"name": "cache", "stack_name": "data",
                 "containers": [{"name": "c-1", "primary_ip": "10.0.2.1", "ports": ["0.0.0.0:6380:6379/tcp"], "state": "stopped"}]}
            ]
        })
    }

    #[test]
    fn names_and_instances() {
        let c = from_metadata(&tree());
        assert_eq!(c.services(), ["app/web", "data/cache", "data/db", "web"]);
        let web = c.service("web", None, true);
        assert_eq!(web.len(), 1);
        let w = web[0];
        assert_eq!((w.id.as_str(), w.name.as_str()), ("web-1", "web"));
        assert_eq!(
            (w.address.as_str(), w.port, w.node.as_str()),
            ("10.0.0.1", 80, "node-a")
        );
        assert_eq!(w.meta["tier"], "front");
        assert_eq!(w.meta["service_index"], "1");
        assert_eq!(w.meta["create_index"], "1");
        let all = c.service("app/web", None, false);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].node, "node-b");
        assert_eq!(all[1].name, "app/web");

        let db = c.service("data/db", None, true);
        assert_eq!(
            (db[0].address.as_str(), db[0].port, db[0].node.as_str()),
            ("10.0.1.1", 0, "h-9")
        );
        let cache = c.service("data/cache", None, false);
        assert_eq!(cache[0].port, 6379);
        assert!(!cache[0].healthy);
    }

    #[test]
    fn ports() {
        assert_eq!(first_private_port(Some(&json!(["80"]))), Some(80));
        assert_eq!(first_private_port(Some(&json!([2181]))), Some(2181));
        assert_eq!(first_private_port(Some(&json!(["x:y"]))), None);
        assert_eq!(first_private_port(Some(&json!([]))), None);
        assert_eq!(first_private_port(None), None);
    }

    #[test]
    fn health() {
        assert!(healthy(&json!({})));
        assert!(healthy(
            &json!({"state": "running", "health_state": "updating-healthy"})
        ));
        assert!(!healthy(
            &json!({"state": "running", "health_state": "initializing"})
        ));
        assert!(!healthy(&json!({"state": "stopped"})));
    }
}

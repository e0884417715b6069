//! The service catalog: services and their instances, for templates that write
//! upstream lists the same way whatever the backend.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One instance of a service, as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInstance {
    /// Unique id of the instance within its service.
    #[serde(default)]
    pub id: String,
    /// Service name (filled from the catalog key when left out).
    #[serde(default)]
    pub name: String,
    /// Address to connect to.
    pub address: String,
    /// Port to connect to.
    #[serde(default)]
    pub port: u16,
    /// Node or host the instance runs on.
    #[serde(default)]
    pub node: String,
    /// Free-form tags (Consul tags, Kubernetes port names).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Whether the instance passes its health checks.
    #[serde(default = "healthy_by_default")]
    pub healthy: bool,
}

fn healthy_by_default() -> bool {
    true
}

/// Services by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Catalog {
    services: BTreeMap<String, Vec<ServiceInstance>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a catalog from instances grouped by service name; an instance with
    /// an empty `name` or `id` gets one from the service name and its address.
    pub fn from_services(services: BTreeMap<String, Vec<ServiceInstance>>) -> Self {
        let mut catalog = Catalog { services };
        for (name, instances) in catalog.services.iter_mut() {
            for inst in instances.iter_mut() {
                if inst.name.is_empty() {
                    inst.name = name.clone();
                }
                if inst.id.is_empty() {
                    inst.id = format!("{}:{}:{}", name, inst.address, inst.port);
                }
            }
        }
        catalog
    }

    /// Sorted service names.
    pub fn services(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// Instances of `name`, optionally only those with `tag`, only healthy ones
    /// when `passing`, sorted by address, port and id.
    pub fn service(&self, name: &str, tag: Option<&str>, passing: bool) -> Vec<&ServiceInstance> {
        let mut out: Vec<&ServiceInstance> = self
            .services
            .get(name)
            .into_iter()
            .flatten()
            .filter(|i| !passing || i.healthy)
            .filter(|i| tag.is_none_or(|t| i.tags.iter().any(|x| x == t)))
            .collect();
        out.sort_by(|a, b| {
            (a.address.as_str(), a.port, a.id.as_str()).cmp(&(
                b.address.as_str(),
                b.port,
                b.id.as_str(),
            ))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(addr: &str, port: u16, healthy: bool, tags: &[&str]) -> ServiceInstance {
        ServiceInstance {
            id: String::new(),
            name: String::new(),
            address: addr.into(),
            port,
            node: String::new(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            meta: BTreeMap::new(),
            healthy,
        }
    }

    #[test]
    fn filters_and_sorts() {
        let mut m = BTreeMap::new();
        m.insert(
            "web".to_string(),
            vec![
                inst("10.0.0.2", 80, true, &["http"]),
                inst("10.0.0.1", 81, false, &[]),
                inst("10.0.0.1", 80, true, &[]),
            ],
        );
        let c = Catalog::from_services(m);
        assert_eq!(c.services(), ["web"]);
        let all: Vec<_> = c
            .service("web", None, false)
            .iter()
            .map(|i| i.port)
            .collect();
        assert_eq!(all, [80, 81, 80]);
        assert_eq!(c.service("web", None, true).len(), 2);
        assert_eq!(c.service("web", Some("http"), true)[0].address, "10.0.0.2");
        assert_eq!(c.service("web", None, true)[0].id, "web:10.0.0.1:80");
        assert!(c.service("db", None, true).is_empty());
    }
}

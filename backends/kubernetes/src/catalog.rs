//! The service catalog from Services and their EndpointSlices: one instance per
//! endpoint address and port.

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use sidekick_backend::{Catalog, ServiceInstance};

/// Label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The parts of an EndpointSlice the catalog uses (no managed fields, labels
/// or annotations kept around).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slice {
    pub namespace: String,
    pub name: String,
    /// Value of the `kubernetes.io/service-name` label; `None`: not tied to a
    /// Service, so ignored.
    pub service: Option<String>,
    pub address_type: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<EndpointPort>,
}

impl Slice {
    /// Keeps what the catalog needs from `slice`.
    pub(crate) fn from_endpoint_slice(slice: EndpointSlice) -> Slice {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned();
        Slice {
            namespace: slice.metadata.namespace.unwrap_or_default(),
            name: slice.metadata.name.unwrap_or_default(),
            service,
            address_type: slice.address_type,
            endpoints: slice.endpoints.unwrap_or_default(),
            ports: slice.ports.unwrap_or_default(),
        }
    }
}

/// Builds the catalog: every Service in `services` is listed (with no instances
/// when it has no endpoints); slices of Services that do not exist are left out.
///
/// An endpoint may show up in two slices for a moment while the controller
/// moves it (the API docs ask clients to deduplicate): per address and port the
/// first slice by name wins, unless a later one says ready and it does not.
pub(crate) fn build<'a>(
    services: impl IntoIterator<Item = &'a str>,
    slices: impl IntoIterator<Item = &'a Slice>,
) -> Catalog {
    let mut by_service: BTreeMap<String, BTreeMap<(String, u16, String), ServiceInstance>> =
        services
            .into_iter()
            .map(|s| (s.to_string(), BTreeMap::new()))
            .collect();
    let mut slices: Vec<&Slice> = slices.into_iter().collect();
    slices.sort_by(|a, b| a.name.cmp(&b.name));
    for slice in slices {
        let Some(service) = slice.service.as_deref() else {
            continue;
        };
        let Some(instances) = by_service.get_mut(service) else {
            continue;
        };
        for inst in instances_of(service, slice) {
            let key = (
                inst.address.clone(),
                inst.port,
                inst.tags.first().cloned().unwrap_or_default(),
            );
            match instances.get(&key) {
                Some(kept) if kept.healthy || !inst.healthy => {}
                _ => {
                    instances.insert(key, inst);
                }
            }
        }
    }
    Catalog::from_services(
        by_service
            .into_iter()
            .map(|(name, m)| (name, m.into_values().collect()))
            .collect(),
    )
}

/// One instance per address of each endpoint and per port of the slice (one
/// with port 0 when the slice lists no ports).
fn instances_of(service: &str, slice: &Slice) -> Vec<ServiceInstance> {
    let no_port = [EndpointPort::default()];
    let ports: &[EndpointPort] = if slice.ports.is_empty() {
        &no_port
    } else {
        &slice.ports
    };
    let mut out = Vec::new();
    for ep in &slice.endpoints {
        // The API docs: a nil `ready` condition means ready.
        let conditions = ep.conditions.as_ref();
        let healthy = conditions.and_then(|c| c.ready).unwrap_or(true);
        let pod = ep
            .target_ref
            .as_ref()
            .and_then(|r| r.name.clone())
            .filter(|n| !n.is_empty());
        let mut meta = BTreeMap::new();
        if let Some(zone) = &ep.zone {
            meta.insert("zone".to_string(), zone.clone());
        }
        if let Some(pod) = &pod {
            meta.insert("pod".to_string(), pod.clone());
        }
        if let Some(hostname) = &ep.hostname {
            meta.insert("hostname".to_string(), hostname.clone());
        }
        if let Some(c) = conditions {
            for (name, value) in [("serving", c.serving), ("terminating", c.terminating)] {
                if let Some(v) = value {
                    meta.insert(name.to_string(), v.to_string());
                }
            }
        }
        meta.insert("address_type".to_string(), slice.address_type.clone());
        let single = ep.addresses.len() == 1 && slice.address_type != "IPv6";
        for address in &ep.addresses {
            for port in ports {
                let number = port.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
                let tags: Vec<String> = port
                    .name
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect();
                let id = match &pod {
                    Some(pod) if single => format!("{pod}:{number}"),
                    Some(pod) => format!("{pod}/{address}:{number}"),
                    None => format!("{}/{address}:{number}", slice.name),
                };
                let mut meta = meta.clone();
                meta.insert(
                    "protocol".to_string(),
                    port.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                );
                out.push(ServiceInstance {
                    id,
                    name: service.to_string(),
                    address: address.clone(),
                    port: number,
                    node: ep.node_name.clone().unwrap_or_default(),
                    tags,
                    meta,
                    healthy,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::EndpointConditions;

    fn endpoint(addr: &str, ready: Option<bool>, pod: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![addr.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            node_name: Some("node-a".into()),
            zone: Some("zone-1".into()),
            target_ref: pod.map(|p| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(name: &str, service: &str, endpoints: Vec<Endpoint>) -> Slice {
        Slice {
            namespace: "default".into(),
            name: name.into(),
            service: Some(service.into()),
            address_type: "IPv4".into(),
            endpoints,
            ports: vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }],
        }
    }

    #[test]
    fn instances_carry_ready_node_zone_and_port_name() {
        let slices = [slice(
            "web-abc",
            "web",
            vec![
                endpoint("10.0.0.2", None, Some("web-1")),
                endpoint("10.0.0.1", Some(false), None),
            ],
        )];
        let c = build(["web", "db"], &slices);
        assert_eq!(c.services(), ["db", "web"]);
        let all = c.service("web", None, false);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].address, "10.0.0.1");
        assert!(!all[0].healthy);
        assert_eq!(all[0].id, "web-abc/10.0.0.1:8080");
        assert_eq!(all[1].id, "web-1:8080");
        assert!(all[1].healthy, "nil ready means ready");
        assert_eq!(all[1].node, "node-a");
        assert_eq!(all[1].meta["zone"], "zone-1");
        assert_eq!(all[1].meta["pod"], "web-1");
        assert_eq!(all[1].tags, ["http"]);
        assert_eq!(c.service("web", Some("http"), true).len(), 1);
        assert!(c.service("db", None, false).is_empty());
    }

    #[test]
    fn slices_without_service_are_left_out_and_duplicates_merge() {
        let slices = [
            slice("web-b", "web", vec![endpoint("10.0.0.1", Some(true), None)]),
            slice(
                "web-a",
                "web",
                vec![endpoint("10.0.0.1", Some(false), None)],
            ),
            slice("gone-a", "gone", vec![endpoint("10.0.0.9", None, None)]),
        ];
        let c = build(["web"], &slices);
        assert_eq!(c.services(), ["web"]);
        let web = c.service("web", None, false);
        assert_eq!(web.len(), 1);
        assert!(web[0].healthy, "a ready copy wins over a not-ready one");
    }
}

//! The answers file (its format is documented on the `server` module): parsed
//! with unknown fields refused, checked (names, hosts, links, `self`), and
//! built into the shared [`Tree`] with everything Rancher derives.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::tree::{Node, SelfView, Tree};
use super::ServerError;

/// The whole answers file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Answers {
    /// `environment_name` of every stack.
    #[serde(default)]
    environment: Option<String>,
    /// Name of the container that clients no other rule places are.
    #[serde(default, rename = "self")]
    self_container: Option<String>,
    #[serde(default)]
    hosts: Vec<HostSpec>,
    #[serde(default)]
    stacks: Vec<StackSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    name: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    agent_ip: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackSpec {
    name: String,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
    #[serde(default)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    scale: Option<u32>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    links: BTreeMap<String, String>,
    #[serde(default)]
    health_check: Option<Value>,
    #[serde(default)]
    containers: Vec<ContainerSpec>,
    #[serde(default)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerSpec {
    #[serde(default)]
    name: Option<String>,
    primary_ip: String,
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    service_index: Option<u32>,
    #[serde(default)]
    create_index: Option<u32>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    health_state: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    extra: BTreeMap<String, Value>,
}

/// Reads and builds the answers file; `fixed_self` is `--self`.
pub(crate) fn load(path: &Path, fixed_self: Option<&str>) -> Result<Tree, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, fixed_self)
}

/// Parses and builds answers text read from `path`.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    fixed_self: Option<&str>,
) -> Result<Tree, ServerError> {
    let answers: Answers = if text.trim().is_empty() {
        return Err(invalid(path, None, "the answers file is empty".into()));
    } else {
        serde_norway::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            let message = strip_location(&e.to_string());
            invalid(path, line, message)
        })?
    };
    build(answers, fixed_self).map_err(|(message, needle)| {
        let line = needle.and_then(|n| line_of(text, &n));
        invalid(path, line, message)
    })
}

/// An invalid-answers error, with the line when known.
fn invalid(path: &Path, line: Option<usize>, message: String) -> ServerError {
    ServerError::Answers {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// serde's messages end with ` at line L column C`; the error carries the line
/// itself.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The line (from 1) of the last line holding `needle`, to point at a
/// duplicate or a bad reference.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .last()
}

/// A semantic error: message, and a string to find its line by.
type BuildError = (String, Option<String>);

/// Stable uuid-looking id from a kind and a name (FNV-1a, two rounds).
fn uuid_for(kind: &str, name: &str) -> String {
    let a = fnv(format!("{kind}:{name}").as_bytes());
    let b = fnv(format!("{name}:{kind}").as_bytes());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// FNV-1a, 64 bits: stable across runs and builds (the version must not
/// change when the server restarts on the same answers).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn s(v: &str) -> Arc<Node> {
    Node::string(v)
}

fn n(v: u64) -> Arc<Node> {
    Node::scalar(&Value::from(v))
}

fn strings(items: &[String]) -> Arc<Node> {
    Node::list(items.iter().map(|i| s(i)).collect())
}

fn values(map: &BTreeMap<String, Value>) -> Arc<Node> {
    Node::map(
        map.iter()
            .map(|(k, v)| (k.clone(), Node::from_value(v)))
            .collect(),
    )
}

/// Adds `extra` fields (given ones win over derived ones).
fn with_extra(
    mut fields: BTreeMap<String, Arc<Node>>,
    extra: &BTreeMap<String, Value>,
) -> Arc<Node> {
    for (k, v) in extra {
        fields.insert(k.clone(), Node::from_value(v));
    }
    Node::map(fields)
}

fn build(answers: Answers, fixed_self: Option<&str>) -> Result<Tree, BuildError> {
    let environment = answers.environment.as_deref().unwrap_or("Default");
    let environment_uuid = uuid_for("environment", environment);

    // Hosts.
    let mut host_nodes: Vec<Arc<Node>> = Vec::new();
    let mut host_index: HashMap<&str, (usize, String)> = HashMap::new();
    for (i, h) in answers.hosts.iter().enumerate() {
        if h.name.is_empty() {
            return Err((format!("hosts[{i}]: `name` is empty"), None));
        }
        let uuid = h.uuid.clone().unwrap_or_else(|| uuid_for("host", &h.name));
        if host_index.insert(&h.name, (i, uuid.clone())).is_some() {
            return Err((
                format!("hosts: two hosts are named {:?}", h.name),
                Some(format!("name: {}", h.name)),
            ));
        }
        let mut f = BTreeMap::new();
        f.insert("name".into(), s(&h.name));
        f.insert(
            "hostname".into(),
            s(h.hostname.as_deref().unwrap_or(&h.name)),
        );
        if let Some(ip) = &h.agent_ip {
            f.insert("agent_ip".into(), s(ip));
        }
        f.insert("host_id".into(), n(i as u64 + 1));
        f.insert("uuid".into(), s(&uuid));
        f.insert("labels".into(), values(&h.labels));
        host_nodes.push(with_extra(f, &h.extra));
    }

    // Every service's qualified name, for links.
    let mut service_names: HashMap<String, ()> = HashMap::new();
    for st in &answers.stacks {
        for sv in &st.services {
            service_names.insert(format!("{}/{}", st.name, sv.name), ());
        }
    }

    let mut all_containers: Vec<Arc<Node>> = Vec::new();
    let mut all_services: Vec<Arc<Node>> = Vec::new();
    let mut stack_nodes: Vec<Arc<Node>> = Vec::new();
    // Per container: (name, ip, service index, stack index, host index).
    struct Placed {
        name: String,
        ip: IpAddr,
        service: usize,
        stack: usize,
        host: Option<usize>,
    }
    let mut placed: Vec<Placed> = Vec::new();
    let mut stack_names: HashMap<&str, ()> = HashMap::new();
    let mut create_index: u64 = 0;

    for st in &answers.stacks {
        if st.name.is_empty() {
            return Err(("stacks: a stack has an empty `name`".into(), None));
        }
        if stack_names.insert(&st.name, ()).is_some() {
            return Err((
                format!("stacks: two stacks are named {:?}", st.name),
                Some(format!("name: {}", st.name)),
            ));
        }
        let stack_uuid = st
            .uuid
            .clone()
            .unwrap_or_else(|| uuid_for("stack", &st.name));
        let stack_idx = stack_nodes.len();
        let mut stack_services: Vec<Arc<Node>> = Vec::new();
        let mut seen_services: HashMap<&str, ()> = HashMap::new();
        for sv in &st.services {
            let where_ = format!("stacks[{}].services[{}]", st.name, sv.name);
            if sv.name.is_empty() {
                return Err((
                    format!("stacks[{}]: a service has an empty `name`", st.name),
                    None,
                ));
            }
            if seen_services.insert(&sv.name, ()).is_some() {
                return Err((
                    format!("stacks[{}]: two services are named {:?}", st.name, sv.name),
                    Some(format!("name: {}", sv.name)),
                ));
            }
            let service_idx = all_services.len();
            let mut containers: Vec<Arc<Node>> = Vec::new();
            let mut used_index: HashMap<u32, ()> = HashMap::new();
            for (i, c) in sv.containers.iter().enumerate() {
                let index = c.service_index.unwrap_or(i as u32 + 1);
                if used_index.insert(index, ()).is_some() {
                    return Err((
                        format!("{where_}: two containers have service_index {index}"),
                        Some(format!("service_index: {index}")),
                    ));
                }
                create_index += 1;
                let name = c
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{}-{index}", st.name, sv.name));
                let ip: IpAddr = c.primary_ip.trim().parse().map_err(|_| {
                    (
                        format!(
                            "{where_}.containers[{name}]: primary_ip {:?} is not an IP address",
                            c.primary_ip
                        ),
                        Some(c.primary_ip.clone()),
                    )
                })?;
                let host = match &c.host {
                    Some(h) => match host_index.get(h.as_str()) {
                        Some((i, uuid)) => Some((*i, uuid.clone())),
                        None => {
                            return Err((
                                format!(
                                    "{where_}.containers[{name}]: unknown host {h:?} (hosts: {})",
                                    answers
                                        .hosts
                                        .iter()
                                        .map(|h| h.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                                Some(format!("host: {h}")),
                            ))
                        }
                    },
                    None => answers
                        .hosts
                        .first()
                        .and_then(|h| host_index.get(h.name.as_str()).cloned()),
                };
                let mut f = BTreeMap::new();
                f.insert("name".into(), s(&name));
                f.insert("primary_ip".into(), s(&ip.to_string()));
                let ips = c.ips.clone().unwrap_or_else(|| vec![ip.to_string()]);
                f.insert("ips".into(), strings(&ips));
                f.insert("ports".into(), strings(&c.ports));
                f.insert("service_name".into(), s(&sv.name));
                f.insert("stack_name".into(), s(&st.name));
                f.insert("stack_uuid".into(), s(&stack_uuid));
                f.insert("service_index".into(), s(&index.to_string()));
                f.insert(
                    "create_index".into(),
                    n(c.create_index.map_or(create_index, u64::from)),
                );
                if let Some((_, uuid)) = &host {
                    f.insert("host_uuid".into(), s(uuid));
                }
                f.insert(
                    "uuid".into(),
                    s(&c.uuid
                        .clone()
                        .unwrap_or_else(|| uuid_for("container", &name))),
                );
                f.insert("state".into(), s(c.state.as_deref().unwrap_or("running")));
                f.insert(
                    "health_state".into(),
                    s(c.health_state.as_deref().unwrap_or("healthy")),
                );
                f.insert("labels".into(), values(&c.labels));
                f.insert("environment_uuid".into(), s(&environment_uuid));
                let node = with_extra(f, &c.extra);
                containers.push(Arc::clone(&node));
                all_containers.push(node);
                placed.push(Placed {
                    name,
                    ip,
                    service: service_idx,
                    stack: stack_idx,
                    host: host.map(|(i, _)| i),
                });
            }
            let mut links = BTreeMap::new();
            for (target, alias) in &sv.links {
                let qualified = if target.contains('/') {
                    target.clone()
                } else {
                    format!("{}/{target}", st.name)
                };
                if !service_names.contains_key(&qualified) {
                    return Err((
                        format!("{where_}: links: no service {qualified:?}"),
                        Some(format!("{target}:")),
                    ));
                }
                links.insert(qualified, s(alias));
            }
            let mut f = BTreeMap::new();
            f.insert("name".into(), s(&sv.name));
            f.insert("stack_name".into(), s(&st.name));
            f.insert("stack_uuid".into(), s(&stack_uuid));
            f.insert("kind".into(), s(sv.kind.as_deref().unwrap_or("service")));
            f.insert(
                "scale".into(),
                n(u64::from(sv.scale.unwrap_or(sv.containers.len() as u32))),
            );
            f.insert(
                "uuid".into(),
                s(&sv
                    .uuid
                    .clone()
                    .unwrap_or_else(|| uuid_for("service", &format!("{}/{}", st.name, sv.name)))),
            );
            f.insert("ports".into(), strings(&sv.ports));
            f.insert("labels".into(), values(&sv.labels));
            f.insert(
                "metadata".into(),
                Node::from_value(
                    sv.metadata
                        .as_ref()
                        .unwrap_or(&Value::Object(Default::default())),
                ),
            );
            f.insert("links".into(), Node::map(links));
            if let Some(hc) = &sv.health_check {
                f.insert("health_check".into(), Node::from_value(hc));
            }
            f.insert("containers".into(), Node::list(containers));
            f.insert("sidekicks".into(), Node::list(Vec::new()));
            f.insert("environment_uuid".into(), s(&environment_uuid));
            let node = with_extra(f, &sv.extra);
            stack_services.push(Arc::clone(&node));
            all_services.push(node);
        }
        let mut f = BTreeMap::new();
        f.insert("name".into(), s(&st.name));
        f.insert("uuid".into(), s(&stack_uuid));
        f.insert("environment_name".into(), s(environment));
        f.insert("environment_uuid".into(), s(&environment_uuid));
        f.insert("services".into(), Node::list(stack_services));
        stack_nodes.push(with_extra(f, &st.extra));
    }

    // Who is who.
    let mut by_name = HashMap::new();
    let mut by_ip = HashMap::new();
    for (i, p) in placed.iter().enumerate() {
        if by_name.insert(p.name.clone(), i).is_some() {
            return Err((
                format!("two containers are named {:?}", p.name),
                Some(p.name.clone()),
            ));
        }
        if let Some(other) = by_ip.insert(p.ip, i) {
            return Err((
                format!(
                    "containers {:?} and {:?} have the same primary_ip {}",
                    placed[other].name, p.name, p.ip
                ),
                Some(p.ip.to_string()),
            ));
        }
    }
    let find = |name: &str, what: &str| -> Result<usize, BuildError> {
        by_name.get(name).copied().ok_or_else(|| {
            let mut names: Vec<&str> = placed.iter().map(|p| p.name.as_str()).collect();
            names.truncate(20);
            (
                format!(
                    "{what} {name:?}: no such container (containers: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
                Some(format!("self: {name}")),
            )
        })
    };
    let default_self = match &answers.self_container {
        Some(name) => Some(find(name, "self:")?),
        None => None,
    };
    let fixed_self = match fixed_self {
        Some(name) => Some(find(name, "--self")?),
        None => None,
    };
    let selves = placed
        .iter()
        .enumerate()
        .map(|(i, p)| SelfView {
            container: Arc::clone(&all_containers[i]),
            service: Arc::clone(&all_services[p.service]),
            stack: Arc::clone(&stack_nodes[p.stack]),
            host: p.host.map(|h| Arc::clone(&host_nodes[h])),
        })
        .collect();

    // The version follows the content, so a restart on the same answers keeps
    // it (no client re-reads) and any edit changes it.
    let mut content = BTreeMap::new();
    content.insert("containers".to_string(), Node::list(all_containers));
    content.insert("hosts".to_string(), Node::list(host_nodes));
    content.insert("services".to_string(), Node::list(all_services));
    content.insert("stacks".to_string(), Node::list(stack_nodes));
    let mut hash = fnv(Node::map(content.clone()).json());
    hash ^= fnv(answers.self_container.as_deref().unwrap_or("").as_bytes()).rotate_left(1);
    let version = format!("{hash:016x}");
    content.insert("version".to_string(), s(&version));
    let root = Node::map(content);

    Ok(Tree {
        version,
        root,
        selves,
        by_name,
        by_ip,
        fixed_self,
        default_self,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Found;

    const ZK: &str = "\
hosts:
  - name: host-1
    agent_ip: 10.10.0.1
  - name: host-2
stacks:
  - name: zk
    services:
      - name: zookeeper
        ports: [\"2181:2181/tcp\"]
        metadata: {zk: {client_port: 2181}}
        containers:
          - primary_ip: 10.42.0.11
          - primary_ip: 10.42.0.12
            host: host-2
      - name: kafka
        links: {zookeeper: zookeeper}
        containers:
          - {primary_ip: 10.42.1.1, name: broker-a, labels: {role: broker}}
self: zk-zookeeper-2
";

    fn tree(text: &str) -> Tree {
        parse(Path::new("answers.yaml"), text, None).unwrap()
    }

    fn err(text: &str) -> String {
        parse(Path::new("answers.yaml"), text, None)
            .unwrap_err()
            .to_string()
    }

    fn text_at(t: &Tree, path: &[&str], me: Option<usize>) -> String {
        let found = t.lookup(path, me).unwrap();
        String::from_utf8(found.text(t).to_vec()).unwrap()
    }

    #[test]
    fn derives_names_indexes_and_self() {
        let t = tree(ZK);
        let me = t.self_for(None, "10.42.0.11".parse().unwrap());
        assert_eq!(me, Some(0));
        assert_eq!(
            text_at(&t, &["self", "container", "name"], me),
            "zk-zookeeper-1"
        );
        assert_eq!(
            text_at(&t, &["self", "container", "service_index"], me),
            "1"
        );
        assert_eq!(text_at(&t, &["self", "host", "agent_ip"], me), "10.10.0.1");
        assert_eq!(text_at(&t, &["self", "service", "scale"], me), "2");
        assert_eq!(
            text_at(&t, &["self", "service", "containers"], me),
            "0=zk-zookeeper-1\n1=zk-zookeeper-2\n"
        );
        assert_eq!(
            text_at(
                &t,
                &["self", "service", "metadata", "zk", "client_port"],
                me
            ),
            "2181"
        );
        // Unknown address: the file's `self`.
        let other = t.self_for(None, "127.0.0.1".parse().unwrap());
        assert_eq!(
            text_at(&t, &["self", "container", "name"], other),
            "zk-zookeeper-2"
        );
        assert_eq!(text_at(&t, &["self", "host", "name"], other), "host-2");
        // The header wins.
        let b = t.self_for(Some("broker-a"), "10.42.0.11".parse().unwrap());
        assert_eq!(
            text_at(&t, &["self", "service", "links", "zk/zookeeper"], b),
            "zookeeper"
        );
        assert_eq!(
            text_at(&t, &["self", "container", "labels", "role"], b),
            "broker"
        );
        assert_eq!(
            t.self_for(Some("nobody"), "10.42.0.11".parse().unwrap()),
            None
        );
        // Root and /self lists.
        assert_eq!(
            text_at(&t, &[], me),
            "containers/\nhosts/\nself/\nservices/\nstacks/\nversion\n"
        );
        assert_eq!(
            text_at(&t, &["self"], me),
            "container/\nhost/\nservice/\nstack/\n"
        );
        assert!(t.lookup(&["self"], None).is_none());
        assert_eq!(
            text_at(&t, &[], None),
            "containers/\nhosts/\nservices/\nstacks/\nversion\n"
        );
        // The same container node everywhere.
        let a = t.root.walk(&["containers", "zk-zookeeper-1"]).unwrap();
        let b = t
            .root
            .walk(&["stacks", "zk", "services", "zookeeper", "containers", "0"])
            .unwrap();
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn json_of_root_includes_self() {
        let t = tree(ZK);
        let found = t.lookup::<&str>(&[], Some(1)).unwrap();
        assert!(matches!(found, Found::Root(Some(_))));
        let v: Value = serde_json::from_slice(&found.json(&t)).unwrap();
        assert_eq!(v["self"]["container"]["name"], "zk-zookeeper-2");
        assert_eq!(
            v["self"]["service"]["containers"][1]["host_uuid"],
            v["hosts"][1]["uuid"]
        );
        assert_eq!(v["version"], t.version.as_str());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "containers",
                "hosts",
                "self",
                "services",
                "stacks",
                "version"
            ]
        );
    }

    #[test]
    fn version_follows_content() {
        let a = tree(ZK).version;
        assert_eq!(a, tree(ZK).version);
        assert_ne!(a, tree(&ZK.replace("10.42.0.12", "10.42.0.13")).version);
        assert_ne!(
            a,
            tree(&ZK.replace("self: zk-zookeeper-2", "self: zk-zookeeper-1")).version
        );
    }

    #[test]
    fn fixed_self_beats_the_address() {
        let t = parse(Path::new("a.yaml"), ZK, Some("broker-a")).unwrap();
        assert_eq!(t.self_for(None, "10.42.0.11".parse().unwrap()), Some(2));
        assert_eq!(
            t.self_for(Some("zk-zookeeper-1"), "10.42.0.11".parse().unwrap()),
            Some(0)
        );
        let e = parse(Path::new("a.yaml"), ZK, Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--self \"nope\": no such container"), "{e}");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err("stacks:\n  - name: a\n    services:\n      - name: b\n        containers:\n          - primay_ip: 1.2.3.4\n");
        assert!(e.starts_with("answers.yaml:6:"), "{e}");
        assert!(e.contains("unknown field `primay_ip`"), "{e}");
        let e = err("stacks: [\n");
        assert!(e.starts_with("answers.yaml:"), "{e}");
        let e = err(&ZK.replace("host: host-2", "host: host-3"));
        assert!(e.starts_with("answers.yaml:14: "), "{e}");
        assert!(
            e.contains("unknown host \"host-3\" (hosts: host-1, host-2)"),
            "{e}"
        );
        let e = err(&ZK.replace("10.42.1.1", "10.42.0.11"));
        assert!(e.contains("same primary_ip 10.42.0.11"), "{e}");
        let e = err(&ZK.replace("{zookeeper: zookeeper}", "{zookeeprr: zookeeper}"));
        assert!(e.contains("links: no service \"zk/zookeeprr\""), "{e}");
        let e = err(&ZK.replace("self: zk-zookeeper-2", "self: zk-9"));
        assert!(
            e.starts_with("answers.yaml:19: self: \"zk-9\": no such container"),
            "{e}"
        );
        let e = err("  \n");
        assert!(e.contains("empty"), "{e}");
        let e = err(&ZK.replace("10.42.0.12", "ten"));
        assert!(e.contains("primary_ip \"ten\" is not an IP address"), "{e}");
    }
}

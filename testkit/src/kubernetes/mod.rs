//! Kubernetes for the Kubernetes backend's tests and benchmark and the
//! binary's end-to-end tests (feature `kubernetes`): a [`Cluster`] that is
//! the protocol-faithful test server in [`apiserver`], or a real cluster in a
//! temporary namespace when `SIDEKICK_TEST_KUBECONFIG` names a kubeconfig, so
//! one test body runs on both.
//! Tests that need the server's hooks (compaction, restart, RBAC) ask
//! [`Cluster::server`] and skip on a real cluster.

pub mod apiserver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

pub use apiserver::ApiServer;

/// Environment variable naming a real cluster's kubeconfig.
pub const REAL_KUBECONFIG: &str = "SIDEKICK_TEST_KUBECONFIG";

/// How long waits may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

enum Backing {
    Fake(ApiServer),
    Real(real::RealCluster),
}

/// A place to put objects and point sidekick at.
pub struct Cluster {
    backing: Backing,
    kubeconfig: PathBuf,
    /// The first is the one `namespace()` names.
    namespaces: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The test server (namespace `default`), or the real cluster named by
    /// `SIDEKICK_TEST_KUBECONFIG` with a fresh namespace, removed on drop.
    pub fn start() -> Cluster {
        Cluster::start_with_namespaces(1)
    }

    /// As [`Cluster::start`] with `count` namespaces (at least one): on the
    /// test server `default`, `team-b`, `team-c`, ...; on a real cluster that
    /// many fresh ones.
    pub fn start_with_namespaces(count: usize) -> Cluster {
        let count = count.max(1);
        let dir = crate::temp::dir("sidekick-kube-");
        match std::env::var_os(REAL_KUBECONFIG) {
            Some(path) => {
                let path = PathBuf::from(path);
                let real = real::RealCluster::connect(&path, count);
                Cluster {
                    namespaces: real.namespaces().to_vec(),
                    backing: Backing::Real(real),
                    kubeconfig: path,
                    _dir: dir,
                }
            }
            None => {
                let server = ApiServer::start();
                let kubeconfig = dir.path().join("kubeconfig");
                std::fs::write(&kubeconfig, server.kubeconfig("default"))
                    .expect("write kubeconfig");
                let namespaces = std::iter::once("default".to_string())
                    .chain((1..count).map(|i| format!("team-{}", (b'a' + i as u8) as char)))
                    .collect();
                Cluster {
                    backing: Backing::Fake(server),
                    kubeconfig,
                    namespaces,
                    _dir: dir,
                }
            }
        }
    }

    /// The test server, when this is not a real cluster.
    pub fn server(&self) -> Option<&ApiServer> {
        match &self.backing {
            Backing::Fake(s) => Some(s),
            Backing::Real(_) => None,
        }
    }

    /// The test server, or `None` after printing why the test is skipped.
    pub fn server_or_skip(&self, test: &str) -> Option<&ApiServer> {
        let s = self.server();
        if s.is_none() {
            eprintln!("{test}: needs the test server's hooks; skipped on a real cluster");
        }
        s
    }

    /// A kubeconfig file for sidekick's `--kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The namespace for `--namespace`.
    pub fn namespace(&self) -> &str {
        &self.namespaces[0]
    }

    /// Every namespace of this cluster's tests, the first being
    /// [`Cluster::namespace`].
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// A label (`sidekick-test`, a value unique to this run) for objects a
    /// cluster-wide selector should find and nothing else on a real cluster.
    pub fn run_label(&self) -> (&'static str, &str) {
        ("sidekick-test", self.namespace())
    }

    /// Creates or replaces `object` in the namespace.
    pub fn apply(&self, object: Value) {
        self.apply_in(self.namespace(), object);
    }

    /// Creates or replaces `object` in namespace `ns`.
    pub fn apply_in(&self, ns: &str, mut object: Value) {
        object["metadata"]["namespace"] = json!(ns);
        match &self.backing {
            Backing::Fake(s) => {
                s.apply(object);
            }
            Backing::Real(r) => r.apply(ns, object),
        }
    }

    /// Deletes `plural`/`name` in the namespace (absent: nothing happens).
    pub fn delete(&self, plural: &str, name: &str) {
        self.delete_in(self.namespace(), plural, name);
    }

    /// Deletes `plural`/`name` in namespace `ns` (absent: nothing happens).
    pub fn delete_in(&self, ns: &str, plural: &str, name: &str) {
        match &self.backing {
            Backing::Fake(s) => {
                s.delete(plural, ns, name);
            }
            Backing::Real(r) => r.delete(ns, plural, name),
        }
    }

    /// Creates or replaces ConfigMap `name` holding `data`.
    pub fn put_configmap(&self, name: &str, data: &[(&str, &str)]) {
        self.apply(objects::configmap(name, data));
    }

    /// Creates or replaces Secret `name` holding `data` (base64 on the wire).
    pub fn put_secret(&self, name: &str, data: &[(&str, &[u8])]) {
        self.apply(objects::secret(name, data));
    }

    /// A Service without a selector (its EndpointSlices are ours to write).
    pub fn put_service(&self, name: &str, ports: &[(&str, u16)]) {
        self.apply(objects::service(name, ports));
    }

    /// The one EndpointSlice `<service>-sk` of `service`, with `endpoints` on
    /// port `http`/`port`.
    pub fn put_endpoints(&self, service: &str, endpoints: &[objects::Ep<'_>], port: u16) {
        self.apply(objects::endpoint_slice(
            &format!("{service}-sk"),
            service,
            endpoints,
            &[("http", port)],
        ));
    }
}

/// Objects as JSON, the same for the test server and a real cluster.
pub mod objects {
    use super::apiserver::base64;
    use serde_json::{json, Value};

    /// `object` with `labels` set (added to any it has).
    pub fn labelled(mut object: Value, labels: &[(&str, &str)]) -> Value {
        for (k, v) in labels {
            object["metadata"]["labels"][*k] = json!(v);
        }
        object
    }

    /// A ConfigMap `name` holding `data`.
    pub fn configmap(name: &str, data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    }

    /// An Opaque Secret `name` holding `data`.
    pub fn secret(name: &str, data: &[(&str, &[u8])]) -> Value {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(base64(v))))
            .collect();
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": data})
    }

    /// A Service `name` without a selector, with named TCP `ports`.
    pub fn service(name: &str, ports: &[(&str, u16)]) -> Value {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "port": p, "targetPort": p, "protocol": "TCP"}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"ports": ports}})
    }

    /// One endpoint of a slice.
    #[derive(Debug, Clone, Copy)]
    pub struct Ep<'a> {
        /// Its one address.
        pub address: &'a str,
        /// `None`: the condition is left out (the API reads that as ready).
        pub ready: Option<bool>,
        /// The Pod of its `targetRef`.
        pub pod: Option<&'a str>,
        /// `nodeName`.
        pub node: Option<&'a str>,
        /// `zone`.
        pub zone: Option<&'a str>,
    }

    /// A ready endpoint at `address`, on pod `pod` on node `node-1` in zone `zone-a`.
    pub fn ep<'a>(address: &'a str, pod: &'a str) -> Ep<'a> {
        Ep {
            address,
            ready: Some(true),
            pod: Some(pod),
            node: Some("node-1"),
            zone: Some("zone-a"),
        }
    }

    /// EndpointSlice `name` of `service` with `endpoints` on `ports`.
    pub fn endpoint_slice(
        name: &str,
        service: &str,
        endpoints: &[Ep<'_>],
        ports: &[(&str, u16)],
    ) -> Value {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                let mut v = json!({"addresses": [e.address]});
                if let Some(r) = e.ready {
                    v["conditions"] = json!({"ready": r, "serving": r, "terminating": false});
                }
                if let Some(n) = e.node {
                    v["nodeName"] = json!(n);
                }
                if let Some(z) = e.zone {
                    v["zone"] = json!(z);
                }
                if let Some(p) = e.pod {
                    v["targetRef"] = json!({"kind": "Pod", "name": p});
                }
                v
            })
            .collect();
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "sidekick-test",
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    }
}

/// A real cluster reached with kube's client, one temporary namespace per test.
mod real {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{json, Value};
    use sidekick_backend_kubernetes::__private::k8s_openapi::api::core::v1::{
        ConfigMap, Namespace, Secret, Service,
    };
    use sidekick_backend_kubernetes::__private::k8s_openapi::api::discovery::v1::EndpointSlice;
    use sidekick_backend_kubernetes::__private::kube::api::{
        Api, DeleteParams, Patch, PatchParams, PostParams,
    };
    use sidekick_backend_kubernetes::__private::kube::config::{KubeConfigOptions, Kubeconfig};
    use sidekick_backend_kubernetes::__private::kube::{Client, Config};

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    pub struct RealCluster {
        rt: tokio::runtime::Runtime,
        client: Client,
        namespaces: Vec<String>,
    }

    impl RealCluster {
        pub fn connect(kubeconfig: &Path, count: usize) -> RealCluster {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = rt.block_on(async {
                let kc = Kubeconfig::read_from(kubeconfig).expect("read SIDEKICK_TEST_KUBECONFIG");
                let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .expect("load SIDEKICK_TEST_KUBECONFIG");
                Client::try_from(config).expect("client")
            });
            let mut namespaces = Vec::new();
            for _ in 0..count {
                let namespace = format!(
                    "sidekick-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::SeqCst)
                );
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": namespace}}))
                        .expect("namespace object");
                rt.block_on(
                    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns),
                )
                .expect("create test namespace");
                namespaces.push(namespace);
            }
            RealCluster {
                rt,
                client,
                namespaces,
            }
        }

        pub fn namespaces(&self) -> &[String] {
            &self.namespaces
        }

        pub fn apply(&self, ns: &str, object: Value) {
            let name = object["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string();
            let pp = PatchParams::apply("sidekick-test").force();
            let patch = Patch::Apply(&object);
            let c = self.client.clone();
            let result = self.rt.block_on(async {
                match object["kind"].as_str() {
                    Some("ConfigMap") => Api::<ConfigMap>::namespaced(c, ns)
                        .patch(&name, &pp, &patch)
                        .await
                        .map(drop),
                    Some("Secret") => Api::<Secret>::namespaced(c, ns)
                        .patch(&name, &pp, &patch)
                        .await
                        .map(drop),
                    Some("Service") => Api::<Service>::namespaced(c, ns)
                        .patch(&name, &pp, &patch)
                        .await
                        .map(drop),
                    Some("EndpointSlice") => Api::<EndpointSlice>::namespaced(c, ns)
                        .patch(&name, &pp, &patch)
                        .await
                        .map(drop),
                    other => panic!("unknown kind {other:?}"),
                }
            });
            result.unwrap_or_else(|e| panic!("apply {name}: {e}"));
        }

        pub fn delete(&self, ns: &str, plural: &str, name: &str) {
            let c = self.client.clone();
            let dp = DeleteParams::default();
            let result = self.rt.block_on(async {
                match plural {
                    "configmaps" => Api::<ConfigMap>::namespaced(c, ns)
                        .delete(name, &dp)
                        .await
                        .map(drop),
                    "secrets" => Api::<Secret>::namespaced(c, ns)
                        .delete(name, &dp)
                        .await
                        .map(drop),
                    "services" => Api::<Service>::namespaced(c, ns)
                        .delete(name, &dp)
                        .await
                        .map(drop),
                    "endpointslices" => Api::<EndpointSlice>::namespaced(c, ns)
                        .delete(name, &dp)
                        .await
                        .map(drop),
                    other => panic!("unknown resource {other}"),
                }
            });
            if let Err(e) = result {
                eprintln!("delete {plural}/{name}: {e}");
            }
        }
    }

    impl Drop for RealCluster {
        fn drop(&mut self) {
            let api = Api::<Namespace>::all(self.client.clone());
            for ns in &self.namespaces {
                let _ = self.rt.block_on(api.delete(ns, &DeleteParams::default()));
            }
        }
    }
}

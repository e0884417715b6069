//! The backend against the test API server (or a real cluster when
//! `SIDEKICK_TEST_KUBECONFIG` is set): layout, catalog, watch updates, shared
//! watches, 410 relists, restarts, RBAC and auth errors.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use sidekick_backend::{Backend, BackendError, Catalog, Interest, Snapshot, Update, UpdateStream};
use sidekick_backend_kubernetes::{KubernetesBackend, KubernetesConfig};
use sidekick_testkit::kubernetes::objects::{ep, Ep};
use sidekick_testkit::kubernetes::{apiserver, objects, Cluster, TIMEOUT};

fn backend(cluster: &Cluster) -> KubernetesBackend {
    KubernetesBackend::new(KubernetesConfig {
        kubeconfig: Some(cluster.kubeconfig().to_path_buf()),
        namespace: Some(cluster.namespace().to_string()),
        ..KubernetesConfig::default()
    })
    .expect("backend")
}

fn interest(prefixes: &[&str], services: bool) -> Interest {
    Interest {
        prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        services,
    }
}

async fn next(stream: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
    tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("an update within the timeout")
        .expect("the stream goes on")
}

async fn next_ok(stream: &mut UpdateStream) -> Vec<Update> {
    next(stream).await.expect("an update, not an error")
}

/// Polls the stream (a watch only moves while polled) until `cond` holds;
/// panics if the stream yields anything meanwhile.
async fn quiet_until(stream: &mut UpdateStream, what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(10), stream.next()).await {
            panic!("unexpected item while waiting for {what}: {item:?}");
        }
    }
}

async fn first_snapshot(stream: &mut UpdateStream) -> Snapshot {
    let batch = next_ok(stream).await;
    match batch.as_slice() {
        [Update::Snapshot(s)] => s.clone(),
        other => panic!("expected one snapshot first, got {other:?}"),
    }
}

fn addresses(catalog: &Catalog, service: &str) -> Vec<String> {
    catalog
        .service(service, None, true)
        .iter()
        .map(|i| format!("{}:{}", i.address, i.port))
        .collect()
}

#[tokio::test]
async fn load_reads_the_key_layout_and_the_catalog() {
    let cluster = Cluster::start();
    cluster.put_configmap("app", &[("greeting", "hello"), ("port", "8080")]);
    cluster.put_configmap("other", &[("x", "1")]);
    cluster.put_secret(
        "db",
        &[("password", b"s3cret"), ("blob", &[0xff, 0x00, 0xfe])],
    );
    cluster.put_service("web", &[("http", 80)]);
    cluster.put_endpoints(
        "web",
        &[
            ep("10.0.0.2", "web-2"),
            Ep {
                ready: None,
                ..ep("10.0.0.1", "web-1")
            },
            Ep {
                ready: Some(false),
                ..ep("10.0.0.3", "web-3")
            },
        ],
        8080,
    );
    let b = backend(&cluster);
    let snap = b.load(&interest(&["/"], true)).await.expect("load");
    let keys: Vec<(&str, &str)> = snap.keys.iter().collect();
    assert_eq!(
        keys,
        [
            ("/configmaps/app/greeting", "hello"),
            ("/configmaps/app/port", "8080"),
            ("/configmaps/other/x", "1"),
            ("/secrets/db/password", "s3cret"),
        ],
        "binary secret values are left out"
    );
    let catalog = snap.catalog.expect("catalog");
    assert_eq!(catalog.services(), ["web"]);
    assert_eq!(
        addresses(&catalog, "web"),
        ["10.0.0.1:8080", "10.0.0.2:8080"]
    );
    let all = catalog.service("web", None, false);
    assert_eq!(all.len(), 3);
    let first = all[0];
    assert_eq!(first.id, "web-1:8080");
    assert_eq!(first.node, "node-1");
    assert_eq!(first.meta["zone"], "zone-a");
    assert_eq!(first.tags, ["http"]);
    assert!(!all[2].healthy);

    // Narrow prefixes read only what they cover.
    let snap = b
        .load(&interest(&["/configmaps/app/greeting"], false))
        .await
        .expect("load");
    assert_eq!(
        snap.keys.iter().collect::<Vec<_>>(),
        [("/configmaps/app/greeting", "hello")]
    );
    assert!(snap.catalog.is_none());
}

#[tokio::test]
async fn watch_reports_puts_and_deletes_after_one_snapshot() {
    let cluster = Cluster::start();
    cluster.put_configmap("app", &[("a", "1"), ("b", "2")]);
    let b = backend(&cluster);
    let mut stream = b
        .watch(&interest(&["/configmaps/app"], false))
        .expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert_eq!(snap.keys.get("/configmaps/app/a"), Some("1"));
    assert_eq!(snap.keys.len(), 2);

    cluster.put_configmap("app", &[("a", "1"), ("b", "3")]);
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: "/configmaps/app/b".into(),
            value: "3".into()
        }]
    );
    cluster.put_configmap("app", &[("a", "1")]);
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Delete {
            key: "/configmaps/app/b".into()
        }]
    );
    cluster.delete("configmaps", "app");
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Delete {
            key: "/configmaps/app/a".into()
        }]
    );
    // Another ConfigMap is not watched at all: the next update is app's again.
    cluster.put_configmap("unrelated", &[("z", "9")]);
    cluster.put_configmap("app", &[("a", "2")]);
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: "/configmaps/app/a".into(),
            value: "2".into()
        }]
    );
}

#[tokio::test]
async fn a_watch_that_reads_nothing_still_starts_with_a_snapshot() {
    let cluster = Cluster::start();
    cluster.put_configmap("app", &[("a", "1")]);
    let b = backend(&cluster);
    let mut stream = b.watch(&interest(&["/db/host"], false)).expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert!(snap.keys.is_empty(), "{snap:?}");
    assert!(snap.catalog.is_none());
    // Nothing more ever comes, and the stream does not end.
    quiet_until(&mut stream, "a while", {
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        move || tokio::time::Instant::now() >= until
    })
    .await;
}

#[tokio::test]
async fn secret_changes_arrive_decoded() {
    let cluster = Cluster::start();
    cluster.put_secret("db", &[("password", b"one")]);
    let b = backend(&cluster);
    let mut stream = b.watch(&interest(&["/secrets/db"], false)).expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert_eq!(snap.keys.get("/secrets/db/password"), Some("one"));
    cluster.put_secret("db", &[("password", b"two")]);
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: "/secrets/db/password".into(),
            value: "two".into()
        }]
    );
}

#[tokio::test]
async fn prefixes_into_one_object_open_one_watch_on_it_alone() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("shared watch") else {
        return;
    };
    cluster.put_configmap("app", &[("a", "1"), ("b", "2")]);
    let b = backend(&cluster);
    let mut stream = b
        .watch(&interest(
            &["/configmaps/app/a", "/configmaps/app/b", "/secrets/db"],
            false,
        ))
        .expect("watch");
    first_snapshot(&mut stream).await;
    cluster.put_configmap("app", &[("a", "1"), ("b", "3")]);
    next_ok(&mut stream).await;
    cluster.put_secret("db", &[("k", b"v")]);
    next_ok(&mut stream).await;
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "watch")
        .collect();
    let selectors: BTreeSet<(String, String)> = watches
        .iter()
        .map(|r| {
            (
                r.resource.clone(),
                r.query.get("fieldSelector").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(watches.len(), 2, "{watches:#?}");
    assert_eq!(
        selectors,
        BTreeSet::from([
            ("configmaps".to_string(), "metadata.name=app".to_string()),
            ("secrets".to_string(), "metadata.name=db".to_string()),
        ])
    );
    assert_eq!(server.open_watches("configmaps"), 1);
}

#[tokio::test]
async fn relist_after_410_reports_nothing_when_nothing_changed() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("410 relist") else {
        return;
    };
    cluster.put_configmap("app", &[("a", "1")]);
    let b = backend(&cluster);
    let mut stream = b.watch(&interest(&["/configmaps"], false)).expect("watch");
    first_snapshot(&mut stream).await;
    let lists = server.count("list", "configmaps");
    // Move the resourceVersion on elsewhere, forget the history, and end the
    // watch: the client re-watches from its old resourceVersion and gets 410.
    server.apply(objects::configmap("elsewhere", &[]).tap_namespace("other"));
    server.compact();
    server.close_watches();
    quiet_until(&mut stream, "a relist after 410", || {
        server.count("list", "configmaps") > lists && server.open_watches("configmaps") == 1
    })
    .await;
    assert!(
        server.expired_count() > 0,
        "the old resourceVersion got 410"
    );
    // The first item after the relist is the next real change, nothing before it.
    cluster.put_configmap("app", &[("a", "2")]);
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: "/configmaps/app/a".into(),
            value: "2".into()
        }]
    );
}

#[tokio::test]
async fn watch_survives_an_api_server_restart() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("restart") else {
        return;
    };
    cluster.put_configmap("app", &[("a", "1")]);
    let b = backend(&cluster);
    let mut stream = b
        .watch(&interest(&["/configmaps/app"], false))
        .expect("watch");
    first_snapshot(&mut stream).await;
    server.stop();
    cluster.put_configmap("app", &[("a", "2")]);
    server.start_again();
    // Errors while it was down may come first; then the change.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no update after restart"
        );
        match next(&mut stream).await {
            Ok(batch) if batch.is_empty() => continue,
            Ok(batch) => {
                assert_eq!(
                    batch,
                    [Update::Put {
                        key: "/configmaps/app/a".into(),
                        value: "2".into()
                    }]
                );
                break;
            }
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }
}

#[tokio::test]
async fn forbidden_watch_names_verb_resource_and_namespace() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("RBAC") else {
        return;
    };
    server.forbid("watch", "configmaps");
    let b = backend(&cluster);
    let mut stream = b
        .watch(&interest(&["/configmaps/app"], false))
        .expect("watch");
    // The list is allowed: the snapshot comes, then the watch is refused.
    first_snapshot(&mut stream).await;
    let err = next(&mut stream).await.expect_err("a 403");
    assert!(matches!(err, BackendError::Denied { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "kubernetes: forbidden: cannot watch configmaps in namespace default (grant get, \
             list, watch) to User \"{}\"",
            apiserver::USER
        )
    );

    server.forbid("list", "endpointslices");
    let err = b
        .load(&interest(&["/configmaps/app"], true))
        .await
        .expect_err("a 403");
    assert!(
        err.to_string()
            .contains("cannot list endpointslices.discovery.k8s.io in namespace default"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("auth") else {
        return;
    };
    let path = cluster.kubeconfig().with_file_name("bad-kubeconfig");
    let text = server
        .kubeconfig("default")
        .replace(apiserver::TOKEN, "wrong");
    std::fs::write(&path, text).expect("write");
    let b = KubernetesBackend::new(KubernetesConfig {
        kubeconfig: Some(path),
        namespace: None,
        ..KubernetesConfig::default()
    })
    .expect("backend");
    let err = b.load(&interest(&["/"], false)).await.expect_err("401");
    assert!(matches!(err, BackendError::Denied { .. }), "{err:?}");
    assert!(err.to_string().contains("unauthorized"), "{err}");
}

#[tokio::test]
async fn catalog_follows_endpoints_scaling() {
    let cluster = Cluster::start();
    cluster.put_service("web", &[("http", 80)]);
    cluster.put_endpoints("web", &[ep("10.0.0.1", "web-1")], 8080);
    let b = backend(&cluster);
    let mut stream = b.watch(&interest(&[], true)).expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert_eq!(
        addresses(&snap.catalog.expect("catalog"), "web"),
        ["10.0.0.1:8080"]
    );

    let three = [
        ep("10.0.0.1", "web-1"),
        ep("10.0.0.2", "web-2"),
        ep("10.0.0.3", "web-3"),
    ];
    cluster.put_endpoints("web", &three, 8080);
    let batch = next_ok(&mut stream).await;
    let [Update::Catalog(c)] = batch.as_slice() else {
        panic!("{batch:?}")
    };
    assert_eq!(
        addresses(c, "web"),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    );

    cluster.put_endpoints("web", &[], 8080);
    let batch = next_ok(&mut stream).await;
    let [Update::Catalog(c)] = batch.as_slice() else {
        panic!("{batch:?}")
    };
    assert_eq!(c.services(), ["web"]);
    assert!(addresses(c, "web").is_empty());
}

#[test]
fn missing_kubeconfig_is_a_config_error() {
    let err = KubernetesBackend::new(KubernetesConfig {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        namespace: None,
        ..KubernetesConfig::default()
    })
    .err()
    .expect("an error");
    assert!(matches!(err, BackendError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
}

#[test]
fn dropping_the_stream_closes_its_watches() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("drop") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let b = backend(&cluster);
    rt.block_on(async {
        let mut stream = b.watch(&interest(&["/configmaps"], true)).expect("watch");
        first_snapshot(&mut stream).await;
        quiet_until(&mut stream, "the watches to open", || {
            server.open_watches("configmaps") == 1
                && server.open_watches("services") == 1
                && server.open_watches("endpointslices") == 1
        })
        .await;
        drop(stream);
        // The runtime keeps running (as sidekick's does) while the server sees
        // the connections go.
        let open = || {
            server.open_watches("configmaps")
                + server.open_watches("services")
                + server.open_watches("endpointslices")
        };
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while open() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "watches still open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Sets `metadata.namespace` on a JSON object.
trait TapNamespace {
    fn tap_namespace(self, ns: &str) -> Self;
}

impl TapNamespace for serde_json::Value {
    fn tap_namespace(mut self, ns: &str) -> Self {
        self["metadata"]["namespace"] = serde_json::json!(ns);
        self
    }
}

// --- Label selectors and several namespaces ---

fn backend_scoped(
    cluster: &Cluster,
    namespace: Option<String>,
    all_namespaces: bool,
    labels: &[String],
) -> KubernetesBackend {
    KubernetesBackend::new(KubernetesConfig {
        kubeconfig: Some(cluster.kubeconfig().to_path_buf()),
        namespace,
        all_namespaces,
        labels: labels.to_vec(),
    })
    .expect("backend")
}

fn pairs(snap: &Snapshot) -> Vec<(String, String)> {
    snap.keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_label_selector_reads_matching_objects_and_follows_relabels() {
    let cluster = Cluster::start();
    let (run, id) = cluster.run_label();
    let cm = |name: &str, port: &str, app: &str| {
        objects::labelled(
            objects::configmap(name, &[("port", port)]),
            &[(run, id), ("app", app)],
        )
    };
    cluster.apply(cm("web", "80", "web"));
    cluster.apply(cm("db", "5432", "db"));
    cluster.apply(objects::labelled(
        objects::secret("web-tls", &[("key", b"k1")]),
        &[("app", "web")],
    ));
    let b = backend_scoped(
        &cluster,
        Some(cluster.namespace().into()),
        false,
        &["app=web".into(), format!("{run}={id}")],
    );
    let snap = b
        .load(&interest(&["/configmaps"], false))
        .await
        .expect("load");
    assert_eq!(pairs(&snap), kv(&[("/configmaps/web/port", "80")]));

    let mut stream = b.watch(&interest(&["/configmaps"], false)).expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert_eq!(pairs(&snap), kv(&[("/configmaps/web/port", "80")]));
    // db starts matching: its keys arrive; web stops: its keys go.
    cluster.apply(cm("db", "5432", "web"));
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: "/configmaps/db/port".into(),
            value: "5432".into()
        }]
    );
    cluster.apply(cm("web", "80", "old"));
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Delete {
            key: "/configmaps/web/port".into()
        }]
    );
    if let Some(server) = cluster.server() {
        let sent: BTreeSet<Option<String>> = server
            .requests()
            .iter()
            .filter(|r| r.resource == "configmaps")
            .map(|r| r.query.get("labelSelector").cloned())
            .collect();
        assert_eq!(
            sent,
            BTreeSet::from([Some(format!("app=web,{run}={id}"))]),
            "every list and watch carries the selector"
        );
    }
}

#[tokio::test]
async fn several_namespaces_put_the_namespace_in_keys_and_service_names() {
    let cluster = Cluster::start_with_namespaces(2);
    let [a, b] = [&cluster.namespaces()[0], &cluster.namespaces()[1]];
    cluster.apply_in(a, objects::configmap("app", &[("k", "in-a")]));
    cluster.apply_in(b, objects::configmap("app", &[("k", "in-b")]));
    cluster.apply_in(b, objects::secret("db", &[("password", b"pw")]));
    for (ns, address) in [(a, "10.0.0.1"), (b, "10.0.1.1")] {
        cluster.apply_in(ns, objects::service("web", &[("http", 80)]));
        cluster.apply_in(
            ns,
            objects::endpoint_slice("web-sk", "web", &[ep(address, "web-1")], &[("http", 8080)]),
        );
    }
    let be = backend_scoped(&cluster, Some(format!("{a}, {b}")), false, &[]);
    let snap = be.load(&interest(&["/"], true)).await.expect("load");
    assert_eq!(
        pairs(&snap),
        kv(&[
            (&format!("/configmaps/{a}/app/k"), "in-a"),
            (&format!("/configmaps/{b}/app/k"), "in-b"),
            (&format!("/secrets/{b}/db/password"), "pw"),
        ])
    );
    let catalog = snap.catalog.expect("catalog");
    let (web_a, web_b) = (format!("web.{a}"), format!("web.{b}"));
    assert_eq!(catalog.services(), [web_a.as_str(), web_b.as_str()]);
    assert_eq!(addresses(&catalog, &web_b), ["10.0.1.1:8080"]);
    // A watch names them the same.
    let mut stream = be.watch(&interest(&[], true)).expect("watch");
    let catalog = first_snapshot(&mut stream).await.catalog.expect("catalog");
    assert_eq!(catalog.services(), [web_a.as_str(), web_b.as_str()]);
    assert_eq!(addresses(&catalog, &web_b), ["10.0.1.1:8080"]);
    drop(stream);

    // A prefix naming one namespace watches that namespace alone.
    let mut stream = be
        .watch(&interest(&[&format!("/configmaps/{b}")], false))
        .expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert_eq!(
        pairs(&snap),
        kv(&[(&format!("/configmaps/{b}/app/k"), "in-b")])
    );
    cluster.apply_in(a, objects::configmap("app", &[("k", "a2")]));
    cluster.apply_in(b, objects::configmap("app", &[("k", "b2")]));
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: format!("/configmaps/{b}/app/k"),
            value: "b2".into()
        }]
    );
}

#[tokio::test]
async fn all_namespaces_reads_what_the_selector_matches_everywhere() {
    let cluster = Cluster::start_with_namespaces(2);
    let [a, b] = [&cluster.namespaces()[0], &cluster.namespaces()[1]];
    let (run, id) = cluster.run_label();
    let cm = |k: &str| objects::labelled(objects::configmap("app", &[("k", k)]), &[(run, id)]);
    cluster.apply_in(a, cm("1"));
    cluster.apply_in(b, cm("2"));
    cluster.apply_in(b, objects::configmap("unlabelled", &[("x", "y")]));
    let be = backend_scoped(&cluster, None, true, &[format!("{run}={id}")]);
    let mut stream = be.watch(&interest(&["/configmaps"], false)).expect("watch");
    let snap = first_snapshot(&mut stream).await;
    assert_eq!(
        pairs(&snap),
        kv(&[
            (&format!("/configmaps/{a}/app/k"), "1"),
            (&format!("/configmaps/{b}/app/k"), "2"),
        ])
    );
    cluster.apply_in(b, cm("3"));
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Put {
            key: format!("/configmaps/{b}/app/k"),
            value: "3".into()
        }]
    );
    cluster.delete_in(a, "configmaps", "app");
    assert_eq!(
        next_ok(&mut stream).await,
        [Update::Delete {
            key: format!("/configmaps/{a}/app/k")
        }]
    );
    if let Some(server) = cluster.server() {
        assert!(
            server
                .requests()
                .iter()
                .filter(|r| r.resource == "configmaps")
                .all(|r| r.namespace.is_empty()),
            "one cluster-wide list and watch"
        );
    }
}

#[tokio::test]
async fn all_namespaces_without_a_cluster_role_is_a_clear_error() {
    let cluster = Cluster::start();
    let Some(server) = cluster.server_or_skip("RBAC") else {
        return;
    };
    server.forbid_cluster_wide("list", "configmaps");
    cluster.put_configmap("app", &[("k", "v")]);
    let err = backend_scoped(&cluster, Some("ALL".into()), false, &[])
        .load(&interest(&["/configmaps"], false))
        .await
        .expect_err("a 403");
    assert!(matches!(err, BackendError::Denied { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "kubernetes: forbidden: cannot list configmaps in all namespaces (cluster scope) \
             (grant get, list, watch in a ClusterRole, or list the namespaces with --namespace) \
             to User \"{}\"",
            apiserver::USER
        )
    );
    // Naming the namespace works with the same rights.
    let snap = backend_scoped(&cluster, Some("default".into()), false, &[])
        .load(&interest(&["/configmaps"], false))
        .await
        .expect("load");
    assert_eq!(pairs(&snap), kv(&[("/configmaps/app/k", "v")]));
}

#[test]
fn bad_selectors_and_namespaces_are_config_errors_naming_the_flag() {
    let cluster = Cluster::start();
    let err = |ns: Option<&str>, all: bool, labels: &[&str]| {
        KubernetesBackend::new(KubernetesConfig {
            kubeconfig: Some(cluster.kubeconfig().to_path_buf()),
            namespace: ns.map(str::to_string),
            all_namespaces: all,
            labels: labels.iter().map(|s| s.to_string()).collect(),
        })
        .err()
        .expect("an error")
        .to_string()
    };
    let e = err(None, false, &["app in (web"]);
    assert!(e.contains("--kube-label \"app in (web\""), "{e}");
    let e = err(Some("a,Bad"), false, &[]);
    assert!(e.contains("--namespace \"a,Bad\": \"Bad\""), "{e}");
    let e = err(Some("a"), true, &[]);
    assert!(e.contains("--all-namespaces"), "{e}");
}

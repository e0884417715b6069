//! The backend against the metadata server, both as libraries in one process:
//! `--self` by header, the catalog, and a watch that follows a reload.

use std::time::Duration;

use futures::StreamExt;
use sidekick_backend::{Backend, Interest, Update};
use sidekick_backend_rancher::{RancherBackend, RancherConfig, Server, ServerConfig};

fn answers(n: usize) -> String {
    let mut out = String::from(
        "stacks:\n  - name: zk\n    services:\n      - name: zookeeper\n        ports: [\"2181:2181/tcp\"]\n        containers:\n",
    );
    for i in 1..=n {
        out.push_str(&format!("          - primary_ip: 10.42.0.{}\n", 10 + i));
    }
    out
}

#[tokio::test]
async fn reads_as_the_named_container_and_follows_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("answers.yaml");
    std::fs::write(&file, answers(3)).unwrap();
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        answers: file.clone(),
        self_container: None,
    })
    .await
    .unwrap();
    let url = format!("http://{}", server.local_addr());
    let handle = server.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let backend = RancherBackend::new(RancherConfig { node: Some(url) })
        .unwrap()
        .with_self_container(Some("zk-zookeeper-2".into()))
        .unwrap();
    assert!(backend.has_catalog());
    let interest = Interest {
        prefixes: vec!["/self".into()],
        services: true,
    };
    let snapshot = backend.load(&interest).await.unwrap();
    assert_eq!(
        snapshot.keys.get("/self/container/name"),
        Some("zk-zookeeper-2")
    );
    assert_eq!(
        snapshot
            .keys
            .get("/self/service/containers/zk-zookeeper-3/primary_ip"),
        Some("10.42.0.13")
    );
    assert!(snapshot.keys.iter().all(|(k, _)| k.starts_with("/self/")));
    let catalog = snapshot.catalog.unwrap();
    assert_eq!(catalog.services(), ["zk/zookeeper", "zookeeper"]);
    let zk = catalog.service("zookeeper", None, true);
    assert_eq!(zk.len(), 3);
    assert_eq!((zk[0].address.as_str(), zk[0].port), ("10.42.0.11", 2181));

    let mut stream = backend.watch(&interest).unwrap();
    std::fs::write(&file, answers(4)).unwrap();
    handle.reload().unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an update within 10 s")
        .expect("the stream goes on")
        .expect("no error");
    let [Update::Snapshot(s)] = batch.as_slice() else {
        panic!("expected one snapshot, got {batch:?}");
    };
    assert_eq!(
        s.keys
            .get("/self/service/containers/zk-zookeeper-4/primary_ip"),
        Some("10.42.0.14")
    );
    assert_eq!(
        s.catalog
            .as_ref()
            .unwrap()
            .service("zookeeper", None, true)
            .len(),
        4
    );
    // Dropping the stream drops its long-poll; the server stops cleanly.
    drop(stream);
    drop(stop);
    serving.await.unwrap().unwrap();
}

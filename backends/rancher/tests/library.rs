//! The backend against the metadata server, both as libraries in one process:
//! `--self` by header, the catalog, and a watch that follows a reload.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use sidekick_backend::{Backend, Interest, Snapshot, Update, UpdateStream};
use sidekick_backend_rancher::{RancherBackend, RancherConfig};
use sidekick_metadata_server::{Server, ServerConfig};

fn answers(n: usize) -> String {
    let mut out = String::from(
        "stacks:\n  - name: zk\n    services:\n      - name: zookeeper\n        ports: [\"2181:2181/tcp\"]\n        containers:\n",
    );
    for i in 1..=n {
        out.push_str(&format!("          - primary_ip: 10.42.0.{}\n", 10 + i));
    }
    out
}

/// The stream's next batch, which must be one snapshot.
async fn next_snapshot(stream: &mut UpdateStream) -> Snapshot {
    let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item within 10 s")
        .expect("the stream goes on")
        .expect("no error");
    match <[Update; 1]>::try_from(batch) {
        Ok([Update::Snapshot(s)]) => s,
        other => panic!("expected one snapshot, got {other:?}"),
    }
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
    let catalog = snapshot.catalog.clone().unwrap();
    assert_eq!(catalog.services(), ["zk/zookeeper", "zookeeper"]);
    let zk = catalog.service("zookeeper", None, true);
    assert_eq!(zk.len(), 3);
    assert_eq!((zk[0].address.as_str(), zk[0].port), ("10.42.0.11", 2181));

    // The watch reads for itself: its first item is the same snapshot.
    let mut stream = backend.watch(&interest).unwrap();
    assert_eq!(next_snapshot(&mut stream).await, snapshot);

    std::fs::write(&file, answers(4)).unwrap();
    handle.reload().unwrap();
    let s = next_snapshot(&mut stream).await;
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

//! The ZooKeeper backend against a real ZooKeeper: each test starts its own
//! server (see `sidekick_testkit::zookeeper`) and drives the backend the way
//! sidekick's core does.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use sidekick_backend::{Backend, BackendError, Interest, KeyTree, Update, UpdateStream};
use sidekick_backend_zookeeper::{Timing, ZookeeperBackend, ZookeeperConfig};
use sidekick_testkit::net::free_port;
use sidekick_testkit::zookeeper::ZooKeeper;

/// How long any awaited item may take.
const WAIT: Duration = Duration::from_secs(15);

fn timing() -> Timing {
    Timing {
        backoff_start: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(500),
        session_timeout: Duration::from_secs(4),
        ..Timing::default()
    }
}

fn backend_at(node: &str, user: Option<(&str, &str)>) -> ZookeeperBackend {
    ZookeeperBackend::with_timing(
        ZookeeperConfig {
            nodes: vec![node.to_string()],
            username: user.map(|u| u.0.to_string()),
            password: user.map(|u| u.1.to_string()),
        },
        timing(),
    )
    .unwrap()
}

fn interest(prefixes: &[&str]) -> Interest {
    Interest {
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        services: false,
    }
}

fn pairs(keys: &KeyTree) -> Vec<(String, String)> {
    keys.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn put(k: &str, v: &str) -> Update {
    Update::Put {
        key: k.into(),
        value: v.into(),
    }
}

fn del(k: &str) -> Update {
    Update::Delete { key: k.into() }
}

async fn next(stream: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

/// Reads batches until `keys` (applied from the stream's updates) holds `want`.
async fn until(stream: &mut UpdateStream, keys: &mut KeyTree, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    while pairs(keys) != want {
        let Ok(batch) = next(stream).await else {
            continue;
        };
        for update in batch {
            match update {
                Update::Snapshot(s) => *keys = s.keys,
                Update::Put { key, value } => {
                    keys.insert(&key, value);
                }
                Update::Delete { key } => {
                    keys.remove(&key);
                }
                Update::Catalog(_) => {}
            }
        }
    }
}

#[tokio::test]
async fn load_maps_leaf_znodes_to_keys_as_confd_does() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/db/host", "db1");
    zk.put("/app/db/port", "5432");
    // Data on a znode that has children is in no key (confd reads leaves only).
    zk.put("/app/db", "directory data");
    zk.put("/app/empty", "");
    zk.put("/other/x", "1");
    let backend = backend_at(&zk.address(), None);

    let snap = backend.load(&interest(&["/app"])).await.unwrap();
    assert_eq!(
        pairs(&snap.keys),
        [
            ("/app/db/host".into(), "db1".into()),
            ("/app/db/port".into(), "5432".into()),
            ("/app/empty".into(), String::new()),
        ]
    );
    // A leaf prefix is its own key; a missing prefix is no key (not an error).
    let snap = backend
        .load(&interest(&["/app/db/host", "/missing"]))
        .await
        .unwrap();
    assert_eq!(pairs(&snap.keys), [("/app/db/host".into(), "db1".into())]);
    // `/` reads everything but ZooKeeper's own /zookeeper znodes.
    let snap = backend.load(&interest(&["/"])).await.unwrap();
    assert_eq!(snap.keys.len(), 4, "{:?}", pairs(&snap.keys));
    assert!(!snap.keys.has_under("/zookeeper"));
}

#[tokio::test]
async fn watch_snapshots_then_follows_creates_changes_and_deletes() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/db/host", "db1");
    zk.put("/outside/x", "1");
    let backend = backend_at(&zk.address(), None);
    let mut stream = backend.watch(&interest(&["/app", "/web"])).unwrap();

    let first = next(&mut stream).await.unwrap();
    let [Update::Snapshot(snap)] = &first[..] else {
        panic!("first batch is a snapshot: {first:?}")
    };
    assert_eq!(pairs(&snap.keys), [("/app/db/host".into(), "db1".into())]);

    zk.put("/app/db/host", "db2");
    assert_eq!(
        next(&mut stream).await.unwrap(),
        [put("/app/db/host", "db2")]
    );
    // A prefix that did not exist when the watch started.
    zk.put("/web/a", "10.0.0.1");
    let mut batches = Vec::new();
    while !batches.contains(&put("/web/a", "10.0.0.1")) {
        batches.extend(next(&mut stream).await.unwrap());
    }
    // A leaf that gains a child is a directory: its key goes.
    zk.put("/web/a/b", "x");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next(&mut stream).await.unwrap());
    }
    assert_eq!(seen, [del("/web/a"), put("/web/a/b", "x")]);
    zk.delete("/web/a");
    let mut seen = Vec::new();
    while !seen.contains(&del("/web/a")) {
        seen.extend(next(&mut stream).await.unwrap());
    }
    assert!(seen.contains(&del("/web/a/b")), "{seen:?}");
    // Changes outside the interest say nothing; the next item is /app's.
    zk.put("/outside/x", "2");
    zk.delete("/app/db/host");
    // ...and /app/db is a leaf now (its data is ""), in the same batch.
    assert_eq!(
        next(&mut stream).await.unwrap(),
        [del("/app/db/host"), put("/app/db", "")]
    );
}

#[tokio::test]
async fn a_restart_mid_watch_reports_once_and_reads_everything_again() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/a", "1");
    zk.put("/app/b", "1");
    let backend = backend_at(&zk.address(), None);
    let mut stream = backend.watch(&interest(&["/app"])).unwrap();
    let mut keys = KeyTree::new();
    until(&mut stream, &mut keys, &[("/app/a", "1"), ("/app/b", "1")]).await;

    zk.kill();
    let err = next(&mut stream).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&zk.address()), "{err}");
    zk.restart();
    zk.put("/app/a", "2");
    zk.delete("/app/b");
    zk.put("/app/c", "3");
    until(&mut stream, &mut keys, &[("/app/a", "2"), ("/app/c", "3")]).await;
    // And it watches again.
    zk.put("/app/c", "4");
    until(&mut stream, &mut keys, &[("/app/a", "2"), ("/app/c", "4")]).await;
}

#[tokio::test]
async fn digest_credentials_and_acls() {
    let Some(zk) = ZooKeeper::start() else { return };
    let owner = zk.session_as("app", "s3cret");
    owner.put_private("/secure/db/password", "hunter2");

    let interest = interest(&["/secure"]);
    for user in [None, Some(("app", "wrong")), Some(("other", "s3cret"))] {
        let err = backend_at(&zk.address(), user)
            .load(&interest)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BackendError::Denied { .. }), "{text}");
        assert!(
            text.contains("NOAUTH") && text.contains("/secure/db/password"),
            "{text}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        if let Some((name, _)) = user {
            assert!(text.contains(&format!("digest user {name}")), "{text}");
        }
    }
    let snap = backend_at(&zk.address(), Some(("app", "s3cret")))
        .load(&interest)
        .await
        .unwrap();
    assert_eq!(snap.keys.get("/secure/db/password"), Some("hunter2"));

    // A watch says the same, as an error item (retried with backoff).
    let mut stream = backend_at(&zk.address(), Some(("app", "wrong")))
        .watch(&interest)
        .unwrap();
    let err = next(&mut stream).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_fails_naming_it_and_another_node_serves() {
    let node = format!("127.0.0.1:{}", free_port());
    let err = backend_at(&node, None)
        .load(&interest(&["/app"]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(err.is_transient(), "{text}");
    assert!(text.contains(&node) && text.contains("refused"), "{text}");

    // Two nodes of which one is down: the other answers.
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/x", "1");
    let backend = ZookeeperBackend::with_timing(
        ZookeeperConfig {
            nodes: vec![node, zk.address()],
            ..Default::default()
        },
        timing(),
    )
    .unwrap();
    let snap = backend.load(&interest(&["/app"])).await.unwrap();
    assert_eq!(snap.keys.get("/app/x"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_ends_the_session_and_a_new_one_reads_everything() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/a", "1");
    let backend = backend_at(&zk.address(), None);
    let mut stream = backend.watch(&interest(&["/app"])).unwrap();
    let mut keys = KeyTree::new();
    until(&mut stream, &mut keys, &[("/app/a", "1")]).await;

    // Frozen for longer than the session timeout: the client gives the
    // connection up, and the server expires the session when it thaws.
    zk.pause();
    let err = next(&mut stream).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    tokio::time::sleep(timing().session_timeout).await;
    zk.resume();
    zk.put("/app/a", "2");
    zk.put("/app/b", "3");
    until(&mut stream, &mut keys, &[("/app/a", "2"), ("/app/b", "3")]).await;
    zk.put("/app/b", "4");
    until(&mut stream, &mut keys, &[("/app/a", "2"), ("/app/b", "4")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_closes_the_session() {
    let Some(mut zk) = ZooKeeper::start() else {
        return;
    };
    zk.put("/app/a", "1");
    let before = zk.connections();
    let backend = backend_at(&zk.address(), None);
    let mut stream = backend.watch(&interest(&["/app"])).unwrap();
    next(&mut stream).await.unwrap();
    assert_eq!(zk.connections(), before + 1);
    drop(stream);
    let closed = sidekick_testkit::wait::until(WAIT, || zk.connections() == before);
    assert!(closed, "{} connections left", zk.connections());
    // A --onetime load leaves none open either.
    backend.load(&interest(&["/app"])).await.unwrap();
    let closed = sidekick_testkit::wait::until(WAIT, || zk.connections() == before);
    assert!(closed, "{} connections left after a load", zk.connections());
}

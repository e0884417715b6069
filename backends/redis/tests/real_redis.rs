//! The Redis backend against a real, throw-away redis-server
//! (`sidekick_testkit::redis`): confd's key mapping, databases, the
//! keyspace-notification watch, restarts, authentication, TLS, and the
//! polling fallback when notifications are off. Skipped with a note when
//! redis-server is not installed (a failure under `CI=true`).

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use sidekick_backend::{Backend, BackendError, Interest, KeyTree, Update, UpdateStream};
use sidekick_backend_redis::{RedisBackend, RedisConfig, Timing};
use sidekick_testkit::redis::{Options, Redis, Reply, ServerTls};

fn fast() -> Timing {
    Timing {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
        backoff_start: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        ping_interval: Duration::from_secs(30),
    }
}

fn backend(config: RedisConfig) -> RedisBackend {
    RedisBackend::with_timing(config, fast()).unwrap()
}

fn node(url: String) -> RedisConfig {
    RedisConfig {
        nodes: vec![url],
        poll_interval: Duration::from_secs(1),
        ..Default::default()
    }
}

fn interest(prefixes: &[&str]) -> Interest {
    Interest {
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        services: false,
    }
}

async fn next(stream: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
    tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("an item within 15 s")
        .expect("the stream goes on")
}

/// The next batch's snapshot (skipping empty batches and errors).
async fn snapshot(stream: &mut UpdateStream) -> KeyTree {
    loop {
        if let Ok(batch) = next(stream).await {
            if let Some(Update::Snapshot(s)) = batch.first() {
                return s.keys.clone();
            }
        }
    }
}

/// Batches until one holds `want`; the updates seen, in order.
async fn until(stream: &mut UpdateStream, want: &Update) -> Vec<Update> {
    let mut seen = Vec::new();
    loop {
        let batch = next(stream).await.unwrap();
        let hit = batch.contains(want);
        seen.extend(batch);
        if hit {
            return seen;
        }
    }
}

fn put(key: &str, value: &str) -> Update {
    Update::Put {
        key: key.into(),
        value: value.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_strings_and_hashes_as_confd_maps_them() {
    let Some(redis) = Redis::start() else { return };
    redis.set("/app/name", "web");
    redis.set("/app/db/host", "db1");
    redis.hset("/app/cache", "host", "c1");
    redis.hset("/app/cache", "port", "6379");
    redis.cmd(&["RPUSH", "/app/list", "a", "b"]);
    redis.set("/apple", "not under /app");
    redis.set("plain", "no slash");
    redis.set("/app*odd", "a glob character");

    let b = backend(node(redis.url()));
    let keys = b.load(&interest(&["/app"])).await.unwrap().keys;
    let pairs: Vec<(&str, &str)> = keys.iter().collect();
    assert_eq!(
        pairs,
        [
            ("/app/cache/host", "c1"),
            ("/app/cache/port", "6379"),
            ("/app/db/host", "db1"),
            ("/app/name", "web"),
        ]
    );
    // A prefix that is a hash's own key, and a string's own key.
    let keys = b.load(&interest(&["/app/cache"])).await.unwrap().keys;
    assert_eq!(keys.len(), 2);
    let keys = b.load(&interest(&["/app/name"])).await.unwrap().keys;
    assert_eq!(keys.get("/app/name"), Some("web"));
    // `/` is every key; one without a leading slash gets one (confd's clean).
    let keys = b.load(&interest(&["/"])).await.unwrap().keys;
    assert_eq!(keys.get("/plain"), Some("no slash"));
    assert_eq!(keys.get("/app*odd"), Some("a glob character"));
    assert_eq!(keys.get("/app/list"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_flag_and_the_node_path_pick_the_database() {
    let Some(redis) = Redis::start() else { return };
    redis.cmd_db(3, &["SET", "/k", "in db 3"]);
    redis.set("/k", "in db 0");
    let flag = backend(RedisConfig {
        database: Some(3),
        ..node(redis.url())
    });
    assert_eq!(flag.endpoints(), format!("{}/3", redis.url()));
    let keys = flag.load(&interest(&["/k"])).await.unwrap().keys;
    assert_eq!(keys.get("/k"), Some("in db 3"));
    let path = backend(node(format!("127.0.0.1:{}/3", redis.port())));
    let keys = path.load(&interest(&["/k"])).await.unwrap().keys;
    assert_eq!(keys.get("/k"), Some("in db 3"));
    let zero = backend(node(redis.url()));
    let keys = zero.load(&interest(&["/k"])).await.unwrap().keys;
    assert_eq!(keys.get("/k"), Some("in db 0"));

    // The watch listens to its own database's channel only.
    let mut stream = flag.watch(&interest(&["/w"])).unwrap();
    assert!(snapshot(&mut stream).await.is_empty());
    redis.set("/w/x", "db 0");
    redis.cmd_db(3, &["SET", "/w/x", "db 3"]);
    let seen = until(&mut stream, &put("/w/x", "db 3")).await;
    assert!(!seen.contains(&put("/w/x", "db 0")), "{seen:?}");

    // A database the server does not have is a clear error.
    let none = backend(RedisConfig {
        database: Some(99),
        ..node(redis.url())
    });
    let err = none.load(&interest(&["/k"])).await.unwrap_err();
    assert!(err.to_string().contains("no such database"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_follows_puts_changes_deletes_and_hash_fields() {
    let Some(redis) = Redis::start() else { return };
    redis.set("/app/a", "1");
    let b = backend(node(redis.url()));
    let mut stream = b.watch(&interest(&["/app"])).unwrap();
    let first = snapshot(&mut stream).await;
    assert_eq!(first.get("/app/a"), Some("1"));

    redis.set("/app/b", "2");
    until(&mut stream, &put("/app/b", "2")).await;
    redis.set("/app/a", "changed");
    until(&mut stream, &put("/app/a", "changed")).await;
    redis.del("/app/a");
    until(
        &mut stream,
        &Update::Delete {
            key: "/app/a".into(),
        },
    )
    .await;
    redis.hset("/app/h", "f1", "x");
    until(&mut stream, &put("/app/h/f1", "x")).await;
    redis.hset("/app/h", "f2", "y");
    let seen = until(&mut stream, &put("/app/h/f2", "y")).await;
    // Only what changed: f1 is not sent again.
    assert!(!seen.contains(&put("/app/h/f1", "x")), "{seen:?}");
    redis.cmd(&["HDEL", "/app/h", "f1"]);
    until(
        &mut stream,
        &Update::Delete {
            key: "/app/h/f1".into(),
        },
    )
    .await;
    redis.cmd(&["RENAME", "/app/b", "/app/c"]);
    let seen = until(&mut stream, &put("/app/c", "2")).await;
    let seen = if seen.contains(&Update::Delete {
        key: "/app/b".into(),
    }) {
        seen
    } else {
        until(
            &mut stream,
            &Update::Delete {
                key: "/app/b".into(),
            },
        )
        .await
    };
    assert!(!seen.is_empty());
    redis.cmd(&["SET", "/app/t", "short", "PX", "50"]);
    until(&mut stream, &put("/app/t", "short")).await;
    until(
        &mut stream,
        &Update::Delete {
            key: "/app/t".into(),
        },
    )
    .await;
    // Keys outside the interest are not sent.
    redis.set("/other", "x");
    redis.set("/app/last", "z");
    let seen = until(&mut stream, &put("/app/last", "z")).await;
    assert!(!seen.contains(&put("/other", "x")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_gives_a_new_snapshot() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.set("/app/v", "before");
    let b = backend(node(redis.url()));
    let mut stream = b.watch(&interest(&["/app"])).unwrap();
    assert_eq!(snapshot(&mut stream).await.get("/app/v"), Some("before"));

    redis.kill();
    let err = next(&mut stream).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&redis.url()), "{err}");
    redis.restart();
    // Data survive (AOF); the watch reads everything again once back.
    redis.set("/app/v", "after");
    let keys = loop {
        let keys = snapshot(&mut stream).await;
        if keys.get("/app/v") == Some("after") {
            break keys;
        }
    };
    assert_eq!(keys.len(), 1);
    redis.set("/app/w", "new");
    until(&mut stream, &put("/app/w", "new")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_clear_and_never_show_the_password() {
    let Some(redis) = Redis::start_with(Options {
        password: Some("s3cret-pw".into()),
        ..Options::default()
    }) else {
        return;
    };
    redis.set("/k", "v");
    let none = backend(node(redis.url()));
    let err = none.load(&interest(&["/k"])).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(err.to_string().contains(&redis.url()), "{err}");
    assert!(err.to_string().contains("--password"), "{err}");

    let wrong = backend(RedisConfig {
        password: Some("wrong-pw".into()),
        ..node(redis.url())
    });
    let err = wrong.load(&interest(&["/k"])).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pw"), "{err:?}");
    // The watch reports it too (and keeps retrying: a password can be fixed
    // on the server side).
    let mut stream = wrong.watch(&interest(&["/k"])).unwrap();
    let err = next(&mut stream).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");

    let right = backend(RedisConfig {
        password: Some("s3cret-pw".into()),
        ..node(redis.url())
    });
    let keys = right.load(&interest(&["/k"])).await.unwrap().keys;
    assert_eq!(keys.get("/k"), Some("v"));
    // In the URL, as redis:// allows: the label drops it.
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port());
    let in_url = backend(node(url));
    assert!(!in_url.endpoints().contains("s3cret"));
    assert_eq!(in_url.load(&interest(&["/k"])).await.unwrap().keys.len(), 1);

    // A password for a server that has none is refused as well (Redis 7
    // answers WRONGPASS), without showing it.
    let Some(open) = Redis::start() else { return };
    let extra = backend(RedisConfig {
        password: Some("s3cret-pw".into()),
        ..node(open.url())
    });
    let err = extra.load(&interest(&["/k"])).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("s3cret-pw"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_naming_the_node() {
    let port = sidekick_testkit::net::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let b = backend(node(url.clone()));
    let err = b.load(&interest(&["/k"])).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    // Of several nodes, the first that answers is used.
    let Some(redis) = Redis::start() else { return };
    redis.set("/k", "v");
    let b = backend(RedisConfig {
        nodes: vec![url, redis.url()],
        ..Default::default()
    });
    assert_eq!(b.load(&interest(&["/k"])).await.unwrap().keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_the_watch_polls_and_the_flag_turns_them_on() {
    let Some(redis) = Redis::start_with(Options {
        notify: String::new(),
        ..Options::default()
    }) else {
        return;
    };
    redis.set("/p/v", "1");
    let polling = backend(node(redis.url()));
    let mut stream = polling.watch(&interest(&["/p"])).unwrap();
    assert_eq!(snapshot(&mut stream).await.get("/p/v"), Some("1"));
    redis.set("/p/v", "2");
    // Every --interval (1 s here) a new snapshot.
    loop {
        if snapshot(&mut stream).await.get("/p/v") == Some("2") {
            break;
        }
    }
    drop(stream);

    let setting = backend(RedisConfig {
        notify_config: true,
        ..node(redis.url())
    });
    let mut stream = setting.watch(&interest(&["/p"])).unwrap();
    assert_eq!(snapshot(&mut stream).await.get("/p/v"), Some("2"));
    let Reply::Array(Some(pair)) = redis.cmd(&["CONFIG", "GET", "notify-keyspace-events"]) else {
        panic!("CONFIG GET")
    };
    let Reply::Bulk(Some(flags)) = &pair[1] else {
        panic!("{pair:?}")
    };
    assert!(flags.contains('K') && flags.contains('h'), "{flags}");
    redis.set("/p/v", "3");
    until(&mut stream, &put("/p/v", "3")).await;

    // The polling watch sees notifications turned on and switches to them.
    let mut stream = polling.watch(&interest(&["/p"])).unwrap();
    snapshot(&mut stream).await;
    redis.set("/p/v", "4");
    let batch = until(&mut stream, &put("/p/v", "4")).await;
    assert!(!batch.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = sidekick_testkit::tls::Pki::write(
        dir.path(),
        "test CA",
        "redis",
        sidekick_testkit::tls::Usages::Separate,
    );
    let Some(redis) = Redis::start_with(Options {
        tls: Some(ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            ca: pki.ca.clone(),
            client_certs: true,
        }),
        ..Options::default()
    }) else {
        return;
    };
    redis.set("/t/k", "over tls");
    let tls = RedisConfig {
        client_ca_keys: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        ..node(redis.tls_url())
    };
    let b = backend(tls.clone());
    let keys = b.load(&interest(&["/t"])).await.unwrap().keys;
    assert_eq!(keys.get("/t/k"), Some("over tls"));
    let mut stream = b.watch(&interest(&["/t"])).unwrap();
    snapshot(&mut stream).await;
    redis.set("/t/k", "changed");
    until(&mut stream, &put("/t/k", "changed")).await;

    // Without the CA the server's certificate is not trusted.
    let untrusted = backend(RedisConfig {
        client_ca_keys: None,
        ..tls.clone()
    });
    let err = untrusted.load(&interest(&["/t"])).await.unwrap_err();
    assert!(err.to_string().contains(&redis.tls_url()), "{err}");
    // Without a client certificate the server refuses.
    let anonymous = backend(RedisConfig {
        client_cert: None,
        client_key: None,
        ..tls
    });
    assert!(anonymous.load(&interest(&["/t"])).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_pings_and_notices_a_frozen_server() {
    let Some(redis) = Redis::start() else { return };
    redis.set("/f/v", "1");
    let b = RedisBackend::with_timing(
        node(redis.url()),
        Timing {
            request_timeout: Duration::from_millis(500),
            ping_interval: Duration::from_millis(100),
            ..fast()
        },
    )
    .unwrap();
    let mut stream = b.watch(&interest(&["/f"])).unwrap();
    snapshot(&mut stream).await;
    // Several pings go by; the watch still follows changes.
    tokio::time::sleep(Duration::from_millis(350)).await;
    redis.set("/f/v", "2");
    until(&mut stream, &put("/f/v", "2")).await;

    // A server that stops answering (SIGSTOP) without closing the
    // connection is noticed by the ping's timeout.
    let pid = redis.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let err = next(&mut stream).await;
    signal("-CONT");
    let err = err.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("no answer"), "{err}");
    // Back: a new snapshot, then changes again.
    assert_eq!(snapshot(&mut stream).await.get("/f/v"), Some("2"));
    redis.set("/f/v", "3");
    until(&mut stream, &put("/f/v", "3")).await;
}

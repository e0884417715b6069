//! The Consul backend against an agent: the in-process fake of
//! `sidekick_testkit::consul`, or a real one with `SIDEKICK_TEST_CONSUL_ADDR`.
//! Waits poll with a timeout; nothing sleeps to assert speed.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sidekick_backend::{Backend, BackendError, Catalog, Interest, Snapshot, Update, UpdateStream};
use sidekick_backend_consul::{ConsulBackend, ConsulConfig, Timing};
use sidekick_testkit::consul::{self, Consul, FakeConsul, Instance, Policy, TIMEOUT};

/// Short waits and backoff so that tests run in seconds.
fn timing() -> Timing {
    Timing {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        wait: Duration::from_secs(5),
        requery_interval: Duration::from_millis(100),
        requery_burst: 5,
        max_stale: Some(Duration::from_secs(2)),
        backoff_start: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(400),
    }
}

fn backend(consul: &Consul) -> ConsulBackend {
    backend_with(consul, ConsulConfig::default())
}

fn backend_with(consul: &Consul, config: ConsulConfig) -> ConsulBackend {
    ConsulBackend::with_timing(
        ConsulConfig {
            nodes: vec![consul.url()],
            ..config
        },
        timing(),
    )
    .expect("backend")
}

fn interest(prefixes: Vec<String>, services: bool) -> Interest {
    Interest { prefixes, services }
}

/// What the core would hold after applying the stream's batches.
#[derive(Default)]
struct View {
    keys: BTreeMap<String, String>,
    catalog: Option<Catalog>,
    batches: usize,
    errors: Vec<String>,
}

impl View {
    fn from_snapshot(s: Snapshot) -> View {
        let mut v = View::default();
        v.replace(s);
        v
    }

    fn replace(&mut self, s: Snapshot) {
        self.keys = s
            .keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.catalog = s.catalog;
    }

    fn apply(&mut self, item: Result<Vec<Update>, BackendError>) {
        match item {
            Ok(batch) => {
                self.batches += 1;
                for u in batch {
                    match u {
                        Update::Snapshot(s) => self.replace(s),
                        Update::Put { key, value } => {
                            self.keys.insert(key, value);
                        }
                        Update::Delete { key } => {
                            self.keys.remove(&key);
                        }
                        Update::Catalog(c) => self.catalog = Some(c),
                    }
                }
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    /// Applies items until `cond` holds; panics after [`TIMEOUT`].
    async fn until(&mut self, stream: &mut UpdateStream, what: &str, cond: impl Fn(&View) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !cond(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Ok(Some(item)) => self.apply(item),
                Ok(None) => panic!("stream ended while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; keys {:?}, errors {:?}",
                    self.keys, self.errors
                ),
            }
        }
    }

    /// Polls the stream until the fake has received a blocking KV read (the
    /// stream only sends queries while it is polled).
    async fn until_blocking(&mut self, stream: &mut UpdateStream, fake: &FakeConsul) {
        let deadline = Instant::now() + TIMEOUT;
        while !fake
            .log()
            .iter()
            .any(|l| l.starts_with("GET /v1/kv/") && l.contains("index="))
        {
            assert!(
                Instant::now() < deadline,
                "no blocking query: {:#?}",
                fake.log()
            );
            if let Ok(Some(item)) =
                tokio::time::timeout(Duration::from_millis(10), stream.next()).await
            {
                self.apply(item);
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// `(id, healthy)` of the service's instances.
    fn instances(&self, service: &str) -> Vec<(String, bool)> {
        self.catalog
            .as_ref()
            .map(|c| {
                c.service(service, None, false)
                    .iter()
                    .map(|i| (i.id.clone(), i.healthy))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn healthy(&self, service: &str) -> Vec<String> {
        self.catalog
            .as_ref()
            .map(|c| {
                c.service(service, None, true)
                    .iter()
                    .map(|i| i.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn kv_load_and_change() {
    let consul = Consul::start();
    let p = consul.prefix();
    consul.put(&format!("{p}/app/db/host"), "10.0.0.1");
    consul.put(&format!("{p}/app/db/port"), "5432");
    consul.put(&format!("{p}/app/folder/"), ""); // a folder: no value
    consul.put(&format!("{p}/app/empty"), "");
    consul.put(&format!("{p}/apple"), "not under /app");
    let b = backend(&consul);
    let want = interest(vec![format!("{p}/app")], false);

    let snap = b.load(&want).await.expect("load");
    let got: Vec<(String, String)> = snap
        .keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (format!("{p}/app/db/host"), "10.0.0.1".to_string()),
            (format!("{p}/app/db/port"), "5432".to_string()),
            (format!("{p}/app/empty"), String::new()),
        ]
    );
    assert!(snap.catalog.is_none());

    let mut view = View::from_snapshot(snap);
    let mut stream = b.watch(&want).expect("consul watches");
    consul.put(&format!("{p}/app/db/host"), "10.0.0.2");
    view.until(&mut stream, "the changed host", |v| {
        v.get(&format!("{p}/app/db/host")) == Some("10.0.0.2")
    })
    .await;
    consul.delete(&format!("{p}/app/db/port"));
    consul.put(&format!("{p}/app/new"), "yes");
    view.until(&mut stream, "the delete and the new key", |v| {
        v.get(&format!("{p}/app/db/port")).is_none()
            && v.get(&format!("{p}/app/new")) == Some("yes")
    })
    .await;
    assert!(view.errors.is_empty(), "{:?}", view.errors);
    assert!(view.get(&format!("{p}/apple")).is_none());
}

#[tokio::test]
async fn blocking_queries_read_stale_and_the_listing_does_not() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the request log") else {
        return;
    };
    let p = consul.prefix();
    let b = backend(&consul);
    let mut view = View::default();
    let mut stream = b.watch(&interest(vec![p.clone()], false)).expect("watch");
    view.until_blocking(&mut stream, fake).await;
    let kv: Vec<String> = fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1/kv/"))
        .collect();
    assert!(
        !kv[0].contains("index=") && !kv[0].contains("stale"),
        "{kv:#?}"
    );
    assert!(
        kv[1].contains("index=") && kv[1].contains("stale"),
        "{kv:#?}"
    );
}

#[tokio::test]
async fn watch_without_a_load_starts_with_a_snapshot() {
    let consul = Consul::start();
    let p = consul.prefix();
    consul.put(&format!("{p}/k"), "v");
    let b = backend(&consul);
    let mut stream = b.watch(&interest(vec![p.clone()], false)).expect("watch");
    let first = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("first item in time")
        .expect("an item")
        .expect("not an error");
    let [Update::Snapshot(s)] = first.as_slice() else {
        panic!("want one snapshot, got {first:?}")
    };
    assert_eq!(s.keys.get(&format!("{p}/k")), Some("v"));
}

#[tokio::test]
async fn missing_prefix_is_empty_and_its_creation_is_seen() {
    let consul = Consul::start();
    let p = consul.prefix();
    let b = backend(&consul);
    let want = interest(vec![format!("{p}/later")], false);
    let snap = b.load(&want).await.expect("a 404 prefix loads as empty");
    assert!(snap.keys.is_empty());
    let mut view = View::from_snapshot(snap);
    let mut stream = b.watch(&want).expect("watch");
    consul.put(&format!("{p}/later/x"), "1");
    view.until(&mut stream, "the first key of the prefix", |v| {
        v.get(&format!("{p}/later/x")) == Some("1")
    })
    .await;
}

#[tokio::test]
async fn instances_added_and_failing_change_the_catalog() {
    let consul = Consul::start();
    let web = consul.service_name("web");
    let mut web1 = Instance::new(&web, &format!("{web}-1"), "10.1.0.1", 8080);
    web1.tags = vec!["blue".into()];
    web1.meta.insert("version".into(), "1".into());
    consul.register(&web1);
    let b = backend(&consul);
    let want = interest(vec![], true);

    let snap = b.load(&want).await.expect("load");
    let catalog = snap
        .catalog
        .clone()
        .expect("a catalog when services are asked for");
    let inst = catalog.service(&web, None, true);
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0].id, web1.id);
    assert_eq!(inst[0].name, web);
    assert_eq!(inst[0].address, "10.1.0.1");
    assert_eq!(inst[0].port, 8080);
    assert_eq!(inst[0].tags, ["blue"]);
    assert_eq!(inst[0].meta.get("version").map(String::as_str), Some("1"));
    assert!(inst[0].node.ends_with(&format!("node-{}", web1.id)));

    let mut view = View::from_snapshot(snap);
    let mut stream = b.watch(&want).expect("watch");

    // A new healthy instance.
    let web2 = Instance::new(&web, &format!("{web}-2"), "10.1.0.2", 8080);
    consul.register(&web2);
    view.until(&mut stream, "the second instance", |v| {
        v.healthy(&web) == [web1.id.clone(), web2.id.clone()]
    })
    .await;

    // The first one fails its check: still listed, no longer healthy.
    consul.set_status(&mut web1, "critical");
    view.until(&mut stream, "web-1 unhealthy", |v| {
        v.healthy(&web) == [web2.id.clone()]
    })
    .await;
    assert_eq!(
        view.instances(&web),
        [(web1.id.clone(), false), (web2.id.clone(), true)]
    );

    // A warning is not passing either; passing again brings it back.
    consul.set_status(&mut web1, "warning");
    consul.set_status(&mut web1, "passing");
    view.until(&mut stream, "web-1 healthy again", |v| {
        v.healthy(&web).len() == 2
    })
    .await;

    // A new service appears with its instances; a deregistered one goes.
    let db = consul.service_name("db");
    let db1 = Instance::new(&db, &format!("{db}-1"), "10.2.0.1", 5432);
    consul.register(&db1);
    view.until(&mut stream, "the db service", |v| {
        v.healthy(&db) == [db1.id.clone()]
    })
    .await;
    consul.deregister(&db1);
    view.until(&mut stream, "db gone", |v| {
        v.catalog
            .as_ref()
            .is_some_and(|c| !c.services().contains(&db.as_str()))
    })
    .await;
    assert!(view.errors.is_empty(), "{:?}", view.errors);
}

#[tokio::test]
async fn agent_registered_service_and_its_ttl_check() {
    let consul = Consul::start();
    let api = consul.service_name("api");
    let id = format!("{api}-1");
    consul.agent_register(&api, &id, "10.3.0.1", 9000);
    consul.wait_health(&api, "the agent service", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    });
    let b = backend(&consul);
    let want = interest(vec![], true);
    let snap = b.load(&want).await.expect("load");
    let mut view = View::from_snapshot(snap);
    assert_eq!(view.healthy(&api), std::slice::from_ref(&id));
    let mut stream = b.watch(&want).expect("watch");
    consul.agent_check(&id, "fail");
    view.until(&mut stream, "the agent service failing", |v| {
        v.healthy(&api).is_empty() && v.instances(&api).len() == 1
    })
    .await;
    consul.agent_check(&id, "pass");
    view.until(&mut stream, "the agent service passing", |v| {
        v.healthy(&api) == [id.clone()]
    })
    .await;
}

#[tokio::test]
async fn index_reset_by_a_snapshot_restore() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the index reset test") else {
        return;
    };
    let p = consul.prefix();
    for i in 0..10 {
        consul.put(&format!("{p}/n{i}"), "x");
    }
    consul.put(&format!("{p}/a"), "before");
    let b = backend(&consul);
    let want = interest(vec![p.clone()], false);
    let mut view = View::from_snapshot(b.load(&want).await.expect("load"));
    let mut stream = b.watch(&want).expect("watch");
    // The query must be waiting when the restore comes: a query sent later
    // with the old index would (as with a real agent) wait out its `wait`.
    view.until_blocking(&mut stream, fake).await;
    let high = fake.index();

    // An older snapshot comes back: index 3, different data.
    let key = |k: &str| format!("{}/{k}", p.trim_start_matches('/'));
    fake.restore(3, &[(&key("a"), "restored"), (&key("n0"), "x")]);
    view.until(&mut stream, "the restored data", |v| {
        v.get(&format!("{p}/a")) == Some("restored") && v.get(&format!("{p}/n5")).is_none()
    })
    .await;
    // A write at index 4 is seen: the watch did not keep blocking on the old,
    // higher index (which would hide everything up to it).
    assert!(fake.index() < high);
    consul.put(&format!("{p}/b"), "after");
    view.until(&mut stream, "a write after the restore", |v| {
        v.get(&format!("{p}/b")) == Some("after")
    })
    .await;
    let log = fake.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /v1/kv/") && !l.contains("index=")),
        "a plain read after the reset: {log:#?}"
    );
}

#[tokio::test]
async fn acl_refusal_names_the_path_and_not_the_token() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the ACL test") else {
        return;
    };
    let p = consul.prefix();
    consul.put(&format!("{p}/secret"), "s");
    fake.enable_acl(&[("good-token", Policy::all())], Policy::default());

    let wrong = backend_with(
        &consul,
        ConsulConfig {
            token: Some("wr0ng-t0ken".into()),
            ..ConsulConfig::default()
        },
    );
    let want = interest(vec![format!("{p}/secret")], false);
    let err = wrong.load(&want).await.expect_err("refused");
    assert!(matches!(err, BackendError::Denied { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("/v1/kv{p}/secret")), "{text}");
    assert!(text.contains("refused the ACL token"), "{text}");
    assert!(text.contains("ACL not found"), "{text}");
    assert!(!text.contains("wr0ng-t0ken"), "{text}");

    // The watch reports it as an item, once, and keeps going.
    let mut stream = wrong.watch(&want).expect("watch");
    let first = tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("in time")
        .expect("an item");
    let e = first.expect_err("an error item");
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.next())
            .await
            .is_err(),
        "the same refusal is not repeated"
    );

    // No token: the anonymous policy reads nothing, which Consul answers
    // with a filtered, empty listing rather than a 403.
    let anon = backend(&consul);
    assert!(anon.load(&want).await.expect("filtered").keys.is_empty());

    let good = backend_with(
        &consul,
        ConsulConfig {
            token: Some("good-token".into()),
            ..ConsulConfig::default()
        },
    );
    let snap = good.load(&want).await.expect("the right token reads");
    assert_eq!(snap.keys.get(&format!("{p}/secret")), Some("s"));
    assert!(fake.log().iter().any(|l| l.contains("/v1/kv/")));
}

#[tokio::test]
async fn agent_killed_and_back_resumes_from_the_last_index() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the agent restart test") else {
        return;
    };
    let p = consul.prefix();
    let key = format!("{}/k", p.trim_start_matches('/'));
    consul.put(&format!("{p}/k"), "1");
    let b = backend(&consul);
    let want = interest(vec![p.clone()], true);
    let mut view = View::from_snapshot(b.load(&want).await.expect("load"));
    let mut stream = b.watch(&want).expect("watch");
    view.until_blocking(&mut stream, fake).await;
    let index_before = fake.index();

    fake.stop();
    view.until(&mut stream, "the outage reported", |v| !v.errors.is_empty())
        .await;
    assert_eq!(
        view.errors.len(),
        1,
        "one report per outage: {:?}",
        view.errors
    );
    assert!(
        view.errors[0].contains(&fake.addr().to_string()),
        "{:?}",
        view.errors
    );
    // Written through another agent while this one is down.
    fake.kv_set(&key, "2");
    let log_len = fake.log().len();
    fake.restart();
    view.until(&mut stream, "the change made while down", |v| {
        v.get(&format!("{p}/k")) == Some("2")
    })
    .await;
    assert_eq!(view.errors.len(), 1, "{:?}", view.errors);
    assert_eq!(view.get(&format!("{p}/k")), Some("2"));
    let after: Vec<String> = fake.log()[log_len..].to_vec();
    let kv_reads: Vec<&String> = after.iter().filter(|l| l.contains("/v1/kv/")).collect();
    assert!(
        kv_reads
            .first()
            .is_some_and(|l| l.contains(&format!("index={index_before}"))),
        "the first read after the restart resumes from the last index: {after:#?}"
    );
    assert!(
        kv_reads.iter().all(|l| l.contains("index=")),
        "no re-listing: {after:#?}"
    );
}

#[tokio::test]
async fn load_with_the_agent_down_fails_fast_naming_it() {
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let b = ConsulBackend::with_timing(
        ConsulConfig {
            nodes: vec![format!("http://{addr}")],
            ..ConsulConfig::default()
        },
        timing(),
    )
    .expect("backend");
    let started = Instant::now();
    let err = b
        .load(&interest(vec!["/app".into()], true))
        .await
        .expect_err("down");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.is_transient(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.contains("/v1/kv/app"), "{text}");
}

#[tokio::test]
async fn second_node_is_used_when_the_first_is_down() {
    let consul = Consul::start();
    let p = consul.prefix();
    consul.put(&format!("{p}/k"), "v");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let b = ConsulBackend::with_timing(
        ConsulConfig {
            nodes: vec![format!("http://{dead}"), consul.url()],
            ..ConsulConfig::default()
        },
        timing(),
    )
    .expect("backend");
    let snap = b
        .load(&interest(vec![p.clone()], false))
        .await
        .expect("load");
    assert_eq!(snap.keys.get(&format!("{p}/k")), Some("v"));
}

#[tokio::test]
async fn datacenter_is_passed_on() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the datacenter test") else {
        return;
    };
    let p = consul.prefix();
    let dc = |name: &str| {
        backend_with(
            &consul,
            ConsulConfig {
                datacenter: Some(name.into()),
                ..ConsulConfig::default()
            },
        )
    };
    let want = interest(vec![p.clone()], false);
    dc("dc1").load(&want).await.expect("own datacenter");
    assert!(fake.log().iter().any(|l| l.contains("dc=dc1")));
    let err = dc("elsewhere").load(&want).await.expect_err("unknown dc");
    assert!(err.to_string().contains("No path to datacenter"), "{err}");
}

#[tokio::test]
async fn burst_of_changes_arrives_in_few_batches() {
    let consul = Consul::start();
    let p = consul.prefix();
    let b = backend(&consul);
    let want = interest(vec![p.clone()], false);
    let mut view = View::from_snapshot(b.load(&want).await.expect("load"));
    let mut stream = b.watch(&want).expect("watch");
    let consul = std::sync::Arc::new(consul);
    let writer = {
        let c = std::sync::Arc::clone(&consul);
        let p = p.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            for i in 0..200 {
                c.put(&format!("{p}/burst/{i:03}"), &i.to_string());
            }
            started.elapsed()
        })
    };
    view.until(&mut stream, "all 200 keys", |v| {
        v.get(&format!("{p}/burst/199")) == Some("199") && v.keys.len() == 200
    })
    .await;
    let took = writer.join().expect("writer");
    eprintln!(
        "200 changes written in {took:?} arrived in {} batches",
        view.batches
    );
    // At most one batch per re-query interval (100 ms) while the burst
    // lasts, after the bucket's five at once, plus the first and the last.
    let bound = 3 + 5 + (took.as_millis() / 100) as usize;
    assert!(
        view.batches <= bound.min(50),
        "{} batches for 200 changes written in {took:?}",
        view.batches
    );
}

#[tokio::test]
async fn flapping_key_is_rate_limited() {
    let consul = Consul::start();
    let Some(fake) = consul.fake("the request count of the rate-limit test") else {
        return;
    };
    let p = consul.prefix();
    let b = backend(&consul);
    let want = interest(vec![p.clone()], false);
    let mut view = View::from_snapshot(b.load(&want).await.expect("load"));
    let mut stream = b.watch(&want).expect("watch");
    let before = fake.reads("kv");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = consul.url();
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let key = format!("{}/flap", p.trim_start_matches('/'));
        let host = url.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let path = format!("/v1/kv/{key}");
                let _ = consul::http(&host, "PUT", &path, &[], n.to_string().as_bytes());
            }
            n
        })
    };
    // Consume the stream for one second while the key flaps.
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if let Ok(Some(item)) = tokio::time::timeout_at(end.into(), stream.next()).await {
            view.apply(item);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = writer.join().expect("writer");
    let reads = fake.reads("kv") - before;
    eprintln!(
        "{writes} writes, {reads} blocking reads, {} batches in 1 s",
        view.batches
    );
    assert!(writes > 50, "the key did flap ({writes} writes)");
    // The bucket's five at once, then one per 100 ms: about 15 in a second,
    // plus slack.
    assert!(reads <= 19, "{reads} reads in one second");
}

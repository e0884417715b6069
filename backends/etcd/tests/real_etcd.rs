//! The etcd backend against a real etcd: each test starts its own server (see
//! `sidekick_testkit::etcd`) and drives the backend the way sidekick's core does.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};
use futures::StreamExt;
use sidekick_backend::{Backend, BackendError, Interest, KeyTree, Update, UpdateStream};
use sidekick_backend_etcd::{EtcdBackend, EtcdConfig, Timing};
use sidekick_testkit::etcd::{self, Etcd, Gateway, ServerTls};
use sidekick_testkit::net::free_port;
use sidekick_testkit::tls::{Pki, Usages};
use sidekick_testkit::wait;

/// How long any awaited condition may take.
const WAIT: Duration = Duration::from_secs(10);

fn timing() -> Timing {
    Timing {
        backoff_start: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(500),
        ..Timing::default()
    }
}

fn backend(etcd: &Etcd) -> EtcdBackend {
    EtcdBackend::with_timing(
        EtcdConfig {
            endpoints: vec![etcd.url()],
            ..Default::default()
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

fn pairs(tree: &KeyTree) -> Vec<(String, String)> {
    tree.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the core would hold after applying the stream's items.
#[derive(Default)]
struct Model {
    tree: KeyTree,
    errors: Vec<BackendError>,
    snapshots: usize,
    updates: Vec<Update>,
}

impl Model {
    fn apply(&mut self, batch: Vec<Update>) {
        for update in batch {
            match &update {
                Update::Snapshot(s) => {
                    self.snapshots += 1;
                    self.tree = s.keys.clone();
                }
                Update::Put { key, value } => {
                    self.tree.insert(key, value.clone());
                }
                Update::Delete { key } => {
                    self.tree.remove(key);
                }
                Update::Catalog(_) => panic!("etcd has no catalog"),
            }
            self.updates.push(update);
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.tree.get(key)
    }

    /// Applies items until `cond` holds; panics after [`WAIT`].
    async fn until(
        &mut self,
        stream: &mut UpdateStream,
        what: &str,
        cond: impl Fn(&Model) -> bool,
    ) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Err(_) => panic!(
                    "timed out waiting for {what}; tree {:?}; errors {:?}",
                    pairs(&self.tree),
                    self.errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                ),
                Ok(None) => panic!("stream ended while waiting for {what}"),
                Ok(Some(Ok(batch))) => self.apply(batch),
                Ok(Some(Err(e))) => self.errors.push(e),
            }
        }
    }
}

/// Starts the watch of `interest` and applies its first item, which must be
/// a batch starting with a snapshot (the core renders from it).
async fn watching(backend: &EtcdBackend, interest: &Interest) -> (Model, UpdateStream) {
    let mut stream = backend.watch(interest).unwrap();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a first item in time")
        .expect("the stream goes on")
        .expect("a snapshot, not an error");
    assert!(
        matches!(first.first(), Some(Update::Snapshot(_))),
        "the first batch must start with a snapshot: {first:?}"
    );
    let mut model = Model::default();
    model.apply(first);
    (model, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reads_each_prefix_segment_wise() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/db/host", "db.local");
    etcd.put("/app/db/port", "5432");
    etcd.put("/app", "root value");
    etcd.put("/apple/x", "not under /app");
    etcd.put("/other/y", "y");
    etcd.put("/zzz", "z");
    let backend = backend(&etcd);

    let snapshot = backend.load(&interest(&["/app", "/other"])).await.unwrap();
    assert_eq!(
        pairs(&snapshot.keys),
        [
            ("/app".to_string(), "root value".to_string()),
            ("/app/db/host".into(), "db.local".into()),
            ("/app/db/port".into(), "5432".into()),
            ("/other/y".into(), "y".into()),
        ]
    );
    assert!(snapshot.catalog.is_none());

    let all = backend.load(&interest(&["/"])).await.unwrap();
    assert_eq!(all.keys.len(), 6);
    let none = backend.load(&interest(&[])).await.unwrap();
    assert!(none.keys.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_deletes_and_updates_arrive_and_nothing_is_lost_after_a_load() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    let backend = backend(&etcd);
    let interest = interest(&["/app", "/cfg"]);
    backend.load(&interest).await.unwrap();
    // A change after a load: the watch reads for itself, so it is not lost.
    etcd.put("/app/between", "yes");
    let (mut model, mut stream) = watching(&backend, &interest).await;
    assert_eq!(model.get("/app/between"), Some("yes"));

    etcd.put("/app/a", "2");
    etcd.put("/cfg/new", "n");
    etcd.delete("/app/b");
    etcd.put("/apple", "outside");
    etcd.put("/app/last", "x");
    model
        .until(
            &mut stream,
            "update, create in the second prefix, delete",
            // Each prefix's watch catches up on its own: wait for both.
            |m| m.get("/app/last") == Some("x") && m.get("/cfg/new").is_some(),
        )
        .await;
    assert_eq!(model.get("/app/a"), Some("2"));
    assert_eq!(model.get("/cfg/new"), Some("n"));
    assert_eq!(model.get("/app/b"), None);
    assert_eq!(model.get("/apple"), None);
    assert_eq!(model.snapshots, 1, "only the first read, no second one");
    assert!(model.errors.is_empty(), "{:?}", model.errors);
    assert!(model
        .updates
        .iter()
        .all(|u| !matches!(u, Update::Put { key, .. } if key == "/apple")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_starts_with_a_snapshot() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/a", "1");
    let backend = backend(&etcd);
    // Also for no prefixes at all: an empty snapshot, then nothing.
    let (model, _) = watching(&backend, &interest(&[])).await;
    assert!(model.tree.is_empty());
    let (mut model, mut stream) = watching(&backend, &interest(&["/app"])).await;
    assert_eq!(model.get("/app/a"), Some("1"));
    etcd.put("/app/a", "2");
    model
        .until(&mut stream, "the update", |m| m.get("/app/a") == Some("2"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_puts_ends_in_the_final_state() {
    let Some(etcd) = Etcd::start() else { return };
    let backend = backend(&etcd);
    let interest = interest(&["/burst"]);
    let (mut model, mut stream) = watching(&backend, &interest).await;
    let writer = {
        let mut gateway = Gateway::connect(&etcd);
        std::thread::spawn(move || {
            for i in 0..1000 {
                gateway.put(&format!("/burst/k{}", i % 10), &i.to_string());
            }
        })
    };
    model
        .until(&mut stream, "the last of 1,000 puts", |m| {
            m.get("/burst/k9") == Some("999")
        })
        .await;
    writer.join().unwrap();
    for k in 0..10 {
        assert_eq!(
            model.get(&format!("/burst/k{k}")),
            Some((990 + k).to_string().as_str())
        );
    }
    assert_eq!(model.tree.len(), 10);
    assert!(model.errors.is_empty(), "{:?}", model.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_mid_watch_resumes_with_the_changes_made_meanwhile() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/keep", "1");
    etcd.put("/app/gone", "1");
    etcd.put("/app/changed", "old");
    let backend = backend(&etcd);
    let (mut model, mut stream) = watching(&backend, &interest(&["/app"])).await;
    etcd.put("/app/changed", "before");
    model
        .until(&mut stream, "a change before the restart", |m| {
            m.get("/app/changed") == Some("before")
        })
        .await;

    etcd.kill();
    model
        .until(&mut stream, "the outage error", |m| !m.errors.is_empty())
        .await;
    let err = model.errors[0].to_string();
    assert!(err.contains(&etcd.url()), "error names the endpoint: {err}");
    // Retries go on while etcd is down, but the outage is reported once.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
    assert!(quiet.is_err(), "one error per outage, got {quiet:?}");

    // Changes while the watcher is disconnected (it is in backoff and is not
    // polled until they are made).
    etcd.restart();
    etcd.put("/app/changed", "during");
    etcd.delete("/app/gone");
    etcd.put("/app/new", "n");
    model
        .until(&mut stream, "the changes made while disconnected", |m| {
            m.get("/app/new") == Some("n")
        })
        .await;
    assert_eq!(model.get("/app/changed"), Some("during"));
    assert_eq!(model.get("/app/gone"), None);
    assert_eq!(model.get("/app/keep"), Some("1"));
    assert_eq!(model.snapshots, 1, "resumed from its revision, no reload");
    assert_eq!(model.errors.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_past_the_watched_revision_reloads() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    etcd.put("/app/a", "1");
    etcd.put("/app/b", "1");
    let backend = backend(&etcd);

    // 1. A watch of a compacted history starts from a read of the present.
    let interest = interest(&["/app"]);
    etcd.put("/app/a", "2");
    etcd.delete("/app/b");
    let rev = etcd.put("/app/c", "3");
    etcd.compact(rev);
    let (mut model, mut stream) = watching(&backend, &interest).await;
    assert_eq!(model.snapshots, 1);
    assert_eq!(
        pairs(&model.tree),
        [
            ("/app/a".to_string(), "2".to_string()),
            ("/app/c".into(), "3".into())
        ]
    );

    // 2. Compaction past the revision the watch must resume from, while it is
    // disconnected by an etcd restart.
    etcd.put("/app/d", "4");
    model
        .until(&mut stream, "watching after the reload", |m| {
            m.get("/app/d") == Some("4")
        })
        .await;
    etcd.kill();
    model
        .until(&mut stream, "the outage error", |m| !m.errors.is_empty())
        .await;
    etcd.restart();
    etcd.delete("/app/a");
    etcd.put("/app/e", "5");
    let rev = etcd.put("/app/d", "44");
    etcd.compact(rev);
    model
        .until(&mut stream, "a reload", |m| m.snapshots == 2)
        .await;
    assert_eq!(
        pairs(&model.tree),
        [
            ("/app/c".to_string(), "3".to_string()),
            ("/app/d".into(), "44".into()),
            ("/app/e".into(), "5".into()),
        ]
    );
    // And it watches on from the reload.
    etcd.put("/app/f", "6");
    model
        .until(&mut stream, "a put after the reload", |m| {
            m.get("/app/f") == Some("6")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_etcd_down_fails_fast_naming_the_endpoint() {
    // No etcd needed: nothing listens on this port.
    let url = format!("http://127.0.0.1:{}", free_port());
    let backend = EtcdBackend::new(EtcdConfig {
        endpoints: vec![url.clone()],
        ..Default::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = backend.load(&interest(&["/app"])).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("etcdv3"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_from_a_silent_server_times_out_in_seconds() {
    // Accepts connections (the kernel does) but never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let backend = EtcdBackend::new(EtcdConfig {
        endpoints: vec![url.clone()],
        ..Default::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = backend.load(&interest(&["/app"])).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_endpoint_of_two_is_skipped() {
    let Some(etcd) = Etcd::start() else { return };
    etcd.put("/app/a", "1");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let backend = EtcdBackend::with_timing(
        EtcdConfig {
            endpoints: vec![dead.clone(), etcd.url()],
            ..Default::default()
        },
        timing(),
    )
    .unwrap();
    assert_eq!(backend.endpoints(), format!("{dead},{}", etcd.url()));
    let interest = interest(&["/app"]);
    for _ in 0..5 {
        let snapshot = backend.load(&interest).await.unwrap();
        assert_eq!(snapshot.keys.get("/app/a"), Some("1"));
    }
    let (mut model, mut stream) = watching(&backend, &interest).await;
    etcd.put("/app/a", "2");
    model
        .until(&mut stream, "a put through the live endpoint", |m| {
            m.get("/app/a") == Some("2")
        })
        .await;
}

/// Established client-side connections from this process to `port`.
fn connections_to(port: u16) -> usize {
    // Sockets this process holds (etcd connects to its own port too).
    let inodes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && *state == "01" {
                count += 1;
            }
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_for_all_prefixes_and_dropping_the_stream_closes_it() {
    let Some(etcd) = Etcd::start() else { return };
    let backend = backend(&etcd);
    let interest = interest(&["/a", "/b", "/c"]);
    let (mut model, mut stream) = watching(&backend, &interest).await;
    etcd.put("/a/1", "x");
    etcd.put("/b/1", "y");
    etcd.put("/c/1", "z");
    model
        .until(&mut stream, "one put per prefix", |m| m.tree.len() == 3)
        .await;
    assert!(
        wait::until(WAIT, || connections_to(etcd.port()) == 1),
        "expected one connection, have {}",
        connections_to(etcd.port())
    );
    drop(stream);
    assert!(
        wait::until(WAIT, || connections_to(etcd.port()) == 0),
        "connection still open after the stream was dropped: {}",
        connections_to(etcd.port())
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn make_pki(dir: &Path) -> Pki {
    Pki::write(dir, "sidekick test CA", "etcd", Usages::Both)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_password_auth() {
    if etcd::etcd_binary().is_none() {
        return;
    }
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let Some(etcd) = Etcd::start_with(Some(ServerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: Some(pki.ca.clone()),
    })) else {
        return;
    };
    assert!(etcd.url().starts_with("https://"));

    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(&pki.client_cert).unwrap(),
            std::fs::read(&pki.client_key).unwrap(),
        ));
    // Users, a read-only role on /app, then auth on.
    let mut admin = Client::connect(
        [etcd.url()],
        Some(ConnectOptions::new().with_tls(tls.clone())),
    )
    .await
    .unwrap();
    admin.put("/app/db/host", "db.tls", None).await.unwrap();
    admin.put("/secret/x", "no", None).await.unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("reader").await.unwrap();
    admin
        .role_grant_permission("reader", Permission::read("/app").with_prefix())
        .await
        .unwrap();
    admin.user_add("app", "s3cret-pw", None).await.unwrap();
    admin.user_grant_role("app", "reader").await.unwrap();
    admin.auth_enable().await.unwrap();
    let mut root = Client::connect(
        [etcd.url()],
        Some(
            ConnectOptions::new()
                .with_tls(tls)
                .with_user("root", "rootpw"),
        ),
    )
    .await
    .unwrap();

    let config = |password: &str| EtcdConfig {
        endpoints: vec![etcd.url()],
        username: Some("app".into()),
        password: Some(password.into()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        client_ca_keys: Some(pki.ca.clone()),
    };

    // Right password: load and watch over TLS.
    let backend = EtcdBackend::with_timing(config("s3cret-pw"), timing()).unwrap();
    let (mut model, mut stream) = watching(&backend, &interest(&["/app"])).await;
    assert_eq!(model.get("/app/db/host"), Some("db.tls"));
    root.put("/app/db/host", "db2.tls", None).await.unwrap();
    model
        .until(&mut stream, "a put over TLS with auth", |m| {
            m.get("/app/db/host") == Some("db2.tls")
        })
        .await;

    // Wrong password: a clear error that names the user, not the password.
    let wrong = EtcdBackend::with_timing(config("wrong-pw"), timing()).unwrap();
    let err = wrong.load(&interest(&["/app"])).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackendError::Denied { .. }), "{text}");
    assert!(
        text.contains("authentication failed for user app"),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "{text}");

    // No permission on a prefix: denied, naming the user.
    let err = backend.load(&interest(&["/secret"])).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackendError::Denied { .. }), "{text}");
    assert!(text.contains("permission denied for user app"), "{text}");

    // A CA that did not sign etcd's certificate: the handshake fails.
    let other_dir = tempfile::tempdir().unwrap();
    let other = make_pki(other_dir.path());
    let mut bad_ca = config("s3cret-pw");
    bad_ca.client_ca_keys = Some(other.ca);
    let err = EtcdBackend::with_timing(bad_ca, timing())
        .unwrap()
        .load(&interest(&["/app"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&etcd.url()), "{err}");
}

//! The Vault backend as a library, against the test server of
//! `sidekick-testkit` (or a real Vault: `SIDEKICK_TEST_VAULT_ADDR` and
//! `SIDEKICK_TEST_VAULT_TOKEN`). Tests that need the fake's hooks (kill,
//! seal, injected errors, request counts, Kubernetes logins, short max
//! TTLs) are skipped on a real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use sidekick_backend::{Backend, BackendError, Interest, KeyTree, Update, UpdateStream};
use sidekick_backend_vault::{Auth, Mount, Timing, VaultBackend, VaultConfig};
use sidekick_testkit::vault::{Grant, Policy, Vault};

const WAIT: Duration = Duration::from_secs(10);

fn timing() -> Timing {
    Timing {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        backoff_start: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        poll_interval: Some(Duration::from_millis(50)),
    }
}

fn backend(vault: &Vault, auth: Auth, mounts: &[&str]) -> VaultBackend {
    VaultBackend::with_timing(
        VaultConfig {
            node: Some(vault.url()),
            auth: Some(auth),
            mounts: mounts.iter().map(|m| Mount::parse(m).unwrap()).collect(),
            ..VaultConfig::default()
        },
        timing(),
    )
    .unwrap()
}

fn root(vault: &Vault) -> Auth {
    Auth::Token(vault.root_token())
}

fn interest(prefixes: &[String]) -> Interest {
    Interest {
        prefixes: prefixes.to_vec(),
        services: false,
    }
}

fn pairs(tree: &KeyTree) -> Vec<(String, String)> {
    tree.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn next(stream: &mut UpdateStream) -> Result<Vec<Update>, BackendError> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item within the wait")
        .expect("the stream goes on")
}

/// Applies batches to `tree` until `done` holds of it.
async fn until(stream: &mut UpdateStream, tree: &mut KeyTree, done: impl Fn(&KeyTree) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(tree) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never got there: {:?}",
            pairs(tree)
        );
        let batch = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("never got there: {:?}", pairs(tree)),
        };
        for update in batch {
            match update {
                Update::Snapshot(s) => *tree = s.keys,
                Update::Put { key, value } => {
                    tree.insert(&key, value);
                }
                Update::Delete { key } => {
                    tree.remove(&key);
                }
                Update::Catalog(_) => {}
            }
        }
    }
}

#[tokio::test]
async fn kv2_and_kv1_secrets_load_as_confd_lays_them_out() {
    let vault = Vault::start();
    let v2 = vault.mount("kv2", 2);
    let v1 = vault.mount("kv1", 1);
    vault.put(
        &v2,
        2,
        "app/db",
        json!({"user": "app", "password": "pw-2", "port": 5432}),
    );
    vault.put(&v2, 2, "app/tls/cert", json!({"value": "CERT"}));
    vault.put(&v2, 2, "other/x", json!({"y": "z"}));
    vault.put(&v1, 1, "app/db", json!({"password": "pw-1"}));

    // No --vault-mount: the mounts and versions are asked of Vault.
    let b = backend(&vault, root(&vault), &[]);
    let snap = b
        .load(&interest(&[format!("/{v2}/app"), format!("/{v1}/app")]))
        .await
        .unwrap();
    let want = vec![
        (
            format!("/{v1}/app/db"),
            r#"{"password":"pw-1"}"#.to_string(),
        ),
        (format!("/{v1}/app/db/password"), "pw-1".to_string()),
        (
            format!("/{v2}/app/db"),
            r#"{"password":"pw-2","port":5432,"user":"app"}"#.to_string(),
        ),
        (format!("/{v2}/app/db/password"), "pw-2".to_string()),
        (format!("/{v2}/app/db/port"), "5432".to_string()),
        (format!("/{v2}/app/db/user"), "app".to_string()),
        (format!("/{v2}/app/tls/cert"), "CERT".to_string()),
        (format!("/{v2}/app/tls/cert/value"), "CERT".to_string()),
    ];
    let mut want = want;
    want.sort();
    assert_eq!(pairs(&snap.keys), want);

    // A prefix naming one field reads that secret only, and keeps that key.
    let one = b
        .load(&interest(&[format!("/{v2}/app/db/password")]))
        .await
        .unwrap();
    assert_eq!(
        pairs(&one.keys),
        [(format!("/{v2}/app/db/password"), "pw-2".to_string())]
    );

    // Declared mounts need no lookup; `/` reads all of them.
    let declared = backend(&vault, root(&vault), &[&v2, &format!("{v1}:1")]);
    let all = declared.load(&interest(&["/".to_string()])).await.unwrap();
    assert!(all.keys.get(&format!("/{v2}/other/x/y")) == Some("z"));
    assert!(all.keys.get(&format!("/{v1}/app/db/password")) == Some("pw-1"));
    assert!(b.has_secrets() && b.is_secret(&format!("/{v2}/app/db/user")));
}

#[tokio::test]
async fn the_poll_follows_changes_adds_and_deletes_and_rereads_only_new_versions() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "one"}));
    vault.put(&m, 2, "app/cache", json!({"url": "redis://c"}));
    let b = backend(&vault, root(&vault), &[]);
    let mut stream = b.watch(&interest(&[format!("/{m}/app")])).unwrap();
    let first = next(&mut stream).await.unwrap();
    let [Update::Snapshot(snap)] = &first[..] else {
        panic!("a snapshot first: {first:?}")
    };
    let mut tree = snap.keys.clone();
    assert_eq!(tree.get(&format!("/{m}/app/db/password")), Some("one"));

    if let Some(fake) = vault.fake("counting data reads") {
        // Idle polls read metadata only.
        let data = fake.count("data");
        let meta = fake.count("metadata");
        // Drive the poll for a while (nothing changes, so nothing comes).
        let idle = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(idle.is_err(), "nothing to report: {idle:?}");
        assert!(fake.count("metadata") > meta + 2);
        assert_eq!(
            fake.count("data"),
            data,
            "unchanged secrets are not read again"
        );
    }

    vault.put(&m, 2, "app/db", json!({"password": "two"}));
    // A change comes as a Put of the changed keys only.
    let batch = loop {
        let batch = next(&mut stream).await.unwrap();
        if !batch.is_empty() {
            break batch;
        }
    };
    assert!(
        batch.iter().all(
            |u| matches!(u, Update::Put { key, .. } if key.starts_with(&format!("/{m}/app/db")))
        ),
        "{batch:?}"
    );
    for u in batch {
        if let Update::Put { key, value } = u {
            tree.insert(&key, value);
        }
    }
    assert_eq!(tree.get(&format!("/{m}/app/db/password")), Some("two"));

    vault.put(&m, 2, "app/new/thing", json!({"k": "v"}));
    until(&mut stream, &mut tree, |t| {
        t.get(&format!("/{m}/app/new/thing/k")) == Some("v")
    })
    .await;

    vault.delete(&m, 2, "app/db");
    until(&mut stream, &mut tree, |t| {
        !t.has_under(&format!("/{m}/app/db"))
    })
    .await;
    vault.destroy(&m, "app/cache");
    until(&mut stream, &mut tree, |t| {
        !t.has_under(&format!("/{m}/app/cache"))
    })
    .await;
    assert!(tree.get(&format!("/{m}/app/new/thing/k")).is_some());
}

#[tokio::test]
async fn a_restarted_server_is_polled_again_and_the_last_change_arrives() {
    let vault = Vault::start();
    let Some(fake) = vault.fake("killing the server") else {
        return;
    };
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "one"}));
    let b = backend(&vault, root(&vault), &[]);
    let mut stream = b.watch(&interest(&[format!("/{m}/app")])).unwrap();
    let mut tree = KeyTree::new();
    until(&mut stream, &mut tree, |t| !t.is_empty()).await;

    fake.stop();
    let err = loop {
        if let Err(e) = next(&mut stream).await {
            break e;
        }
    };
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains(&vault.url()), "{err}");
    fake.restart();
    vault.put(&m, 2, "app/db", json!({"password": "three"}));
    until(&mut stream, &mut tree, |t| {
        t.get(&format!("/{m}/app/db/password")) == Some("three")
    })
    .await;
}

#[tokio::test]
async fn a_refused_token_is_a_clear_denial() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "pw"}));
    let b = backend(&vault, Auth::Token("hvs.not-a-token".into()), &[&m]);
    let err = b.load(&interest(&[format!("/{m}/app")])).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("refused the token") && text.contains("--vault-token"),
        "{text}"
    );
    assert!(text.contains("403"), "{text}");
    assert!(!text.contains("hvs.not-a-token"), "{text}");

    // A token whose policy does not cover the secret: a denial naming it.
    let narrow = vault.token(&[&format!("{m}/metadata/other")], None, false);
    let b = backend(&vault, Auth::Token(narrow), &[&m]);
    let err = b.load(&interest(&[format!("/{m}/app")])).await.unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("{m}/metadata/app")),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_allowed_one_secret_reads_it_without_listing() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "pw"}));
    let t = vault.token(
        &[&format!("{m}/data/app/db"), &format!("{m}/metadata/app/db")],
        None,
        false,
    );
    let b = backend(&vault, Auth::Token(t), &[&m]);
    let snap = b.load(&interest(&[format!("/{m}/app/db")])).await.unwrap();
    assert_eq!(snap.keys.get(&format!("/{m}/app/db/password")), Some("pw"));
}

#[tokio::test]
async fn approle_logs_in_and_a_wrong_secret_id_is_a_clear_denial() {
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "pw"}));
    let (role_id, secret_id) = vault.approle(&[&format!("{m}/")], Duration::from_secs(600));
    let good = Auth::AppRole {
        role_id: role_id.clone(),
        secret_id: Some(secret_id),
        mount: "approle".into(),
    };
    let snap = backend(&vault, good, &[&m])
        .load(&interest(&[format!("/{m}/app")]))
        .await
        .unwrap();
    assert_eq!(snap.keys.get(&format!("/{m}/app/db/password")), Some("pw"));

    let bad = Auth::AppRole {
        role_id,
        secret_id: Some("wrong-secret-id".into()),
        mount: "approle".into(),
    };
    let err = backend(&vault, bad, &[&m])
        .load(&interest(&[format!("/{m}/app")]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("AppRole login") && text.contains("400"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-id"), "{text}");
}

#[tokio::test]
async fn kubernetes_login_reads_the_service_account_token() {
    let vault = Vault::start();
    let Some(fake) = vault.fake("Kubernetes login") else {
        return;
    };
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "pw"}));
    fake.k8s_role(
        "web",
        "jwt-of-web",
        Grant::new(Policy::all(), Duration::from_secs(600)),
    );
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("token");
    std::fs::write(&jwt, "jwt-of-web\n").unwrap();
    let auth = |role: &str| Auth::Kubernetes {
        role: role.into(),
        jwt_file: jwt.clone(),
        mount: "kubernetes".into(),
    };
    let snap = backend(&vault, auth("web"), &[&m])
        .load(&interest(&[format!("/{m}/app")]))
        .await
        .unwrap();
    assert_eq!(snap.keys.get(&format!("/{m}/app/db/password")), Some("pw"));

    let err = backend(&vault, auth("nope"), &[&m])
        .load(&interest(&[format!("/{m}/app")]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid role name"), "{err}");
    std::fs::write(&jwt, "another-jwt").unwrap();
    let err = backend(&vault, auth("web"), &[&m])
        .load(&interest(&[format!("/{m}/app")]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("403 permission denied"), "{err}");
}

#[tokio::test]
async fn tokens_are_renewed_before_their_ttl_and_logins_repeated_at_the_max_ttl() {
    let vault = Vault::start();
    let Some(fake) = vault.fake("short TTLs") else {
        return;
    };
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "pw"}));

    // A renewable token of 3 s outlives its TTL by being renewed.
    let token = fake.token(Policy::all(), Some(Duration::from_secs(3)), true, None);
    let b = backend(&vault, Auth::Token(token), &[&m]);
    let mut stream = b.watch(&interest(&[format!("/{m}/app")])).unwrap();
    assert!(next(&mut stream).await.is_ok());
    let quiet = tokio::time::timeout(Duration::from_millis(4500), async {
        loop {
            if let Err(e) = next(&mut stream).await {
                return e;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "an error: {:?}", quiet.ok());
    assert!(fake.count("renew") >= 1);

    // An AppRole token that reaches its max TTL is replaced by a new login.
    let grant = Grant {
        max_ttl: Some(Duration::from_secs(3)),
        ..Grant::new(Policy::all(), Duration::from_secs(2))
    };
    fake.approle("r", Some("s"), grant);
    let auth = Auth::AppRole {
        role_id: "r".into(),
        secret_id: Some("s".into()),
        mount: "approle".into(),
    };
    let logins = fake.count("login");
    let b = backend(&vault, auth, &[&m]);
    let mut stream = b.watch(&interest(&[format!("/{m}/app")])).unwrap();
    assert!(next(&mut stream).await.is_ok());
    let quiet = tokio::time::timeout(Duration::from_millis(5000), async {
        loop {
            if let Err(e) = next(&mut stream).await {
                return e;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "an error: {:?}", quiet.ok());
    assert!(
        fake.count("login") >= logins + 2,
        "{}",
        fake.count("login") - logins
    );
}

#[tokio::test]
async fn sealed_and_rate_limited_answers_are_outages_not_empty_data() {
    let vault = Vault::start();
    let Some(fake) = vault.fake("sealing") else {
        return;
    };
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "pw"}));
    let b = backend(&vault, root(&vault), &[&m]);
    let i = interest(&[format!("/{m}/app")]);
    fake.seal(true);
    let err = b.load(&i).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("Vault is sealed"), "{err}");
    fake.seal(false);
    fake.fail_next(1, 429, "rate limit quota exceeded");
    let err = b.load(&i).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    assert!(b.load(&i).await.is_ok());

    // Under a watch: one error, then the data again.
    let mut stream = b.watch(&i).unwrap();
    assert!(next(&mut stream).await.is_ok());
    fake.seal(true);
    let err = loop {
        if let Err(e) = next(&mut stream).await {
            break e;
        }
    };
    assert!(err.is_transient(), "{err}");
    fake.seal(false);
    vault.put(&m, 2, "app/db", json!({"password": "after"}));
    let mut tree = KeyTree::new();
    until(&mut stream, &mut tree, |t| {
        t.get(&format!("/{m}/app/db/password")) == Some("after")
    })
    .await;
}

#[tokio::test]
async fn a_server_that_is_down_fails_the_load_naming_the_address() {
    let port = sidekick_testkit::net::free_port();
    let b = VaultBackend::with_timing(
        VaultConfig {
            node: Some(format!("http://127.0.0.1:{port}")),
            auth: Some(Auth::Token("t".into())),
            ..VaultConfig::default()
        },
        timing(),
    )
    .unwrap();
    let err = b
        .load(&interest(&["/secret/app".to_string()]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn everything_without_mounts_is_a_configuration_error() {
    let vault = Vault::start();
    let b = backend(&vault, root(&vault), &[]);
    let err = b.load(&interest(&["/".to_string()])).await.unwrap_err();
    assert!(matches!(err, BackendError::Config { .. }), "{err}");
    assert!(err.to_string().contains("--vault-mount"), "{err}");
    // A prefix in no mount Vault knows: a denial that says what to declare.
    let err = b
        .load(&interest(&["/no-such-mount/x".to_string()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--vault-mount"), "{err}");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_value_or_token_reaches_a_log_line_even_at_trace() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let vault = Vault::start();
    let m = vault.mount("kv", 2);
    vault.put(&m, 2, "app/db", json!({"password": "VALUE-s3cr3t-1"}));
    let (role_id, secret_id) = vault.approle(&[&format!("{m}/")], Duration::from_secs(600));
    let token = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = backend(
                &vault,
                Auth::AppRole {
                    role_id,
                    secret_id: Some(secret_id.clone()),
                    mount: "approle".into(),
                },
                &[],
            );
            let mut stream = b.watch(&interest(&[format!("/{m}/app")])).unwrap();
            let mut tree = KeyTree::new();
            until(&mut stream, &mut tree, |t| !t.is_empty()).await;
            vault.put(&m, 2, "app/db", json!({"password": "VALUE-s3cr3t-2"}));
            until(&mut stream, &mut tree, |t| {
                t.get(&format!("/{m}/app/db/password")) == Some("VALUE-s3cr3t-2")
            })
            .await;
            secret_id
        })
    });
    let log = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("logged in to Vault"),
        "the log was captured: {log}"
    );
    for needle in [
        "VALUE-s3cr3t-1",
        "VALUE-s3cr3t-2",
        token.as_str(),
        "hvs.fake",
    ] {
        assert!(!log.contains(needle), "{needle} in the log:\n{log}");
    }
}

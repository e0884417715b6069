//! TLS to the agent: a rustls proxy that requires a client certificate sits
//! in front of the fake agent (as an agent with `verify_incoming` would), and
//! the backend reaches it with `--client-ca-keys`, `--client-cert` and
//! `--client-key`.

// Test code: a panic is a failed test, so unwrap/expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sidekick_backend::{Backend, Interest};
use sidekick_backend_consul::{ConsulBackend, ConsulConfig};
use sidekick_testkit::consul::FakeConsul;
use sidekick_testkit::tls::{Pki, Usages};

fn make_pki(dir: &Path) -> Pki {
    Pki::write(
        dir,
        "sidekick test Consul CA",
        "server.dc1.consul",
        Usages::Separate,
    )
}

/// Listens with TLS (client certificate required) and forwards to `upstream`.
async fn tls_proxy(pki: &Pki, upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_der.clone())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pki.server_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let fake = FakeConsul::start();
    fake.kv_set("tls/k", "over tls");
    let proxy = tls_proxy(&pki, fake.addr()).await;
    let want = Interest {
        prefixes: vec!["/tls".into()],
        services: true,
    };

    let config = ConsulConfig {
        // No scheme: TLS files make it https.
        nodes: vec![format!("127.0.0.1:{}", proxy.port())],
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        ..ConsulConfig::default()
    };
    let b = ConsulBackend::new(config.clone()).expect("backend");
    let snap = b.load(&want).await.expect("load over mutual TLS");
    assert_eq!(snap.keys.get("/tls/k"), Some("over tls"));
    assert!(snap
        .catalog
        .is_some_and(|c| c.services().contains(&"consul")));

    // Without the client certificate the agent refuses the handshake.
    let no_cert = ConsulBackend::new(ConsulConfig {
        cert_file: None,
        key_file: None,
        ..config.clone()
    })
    .expect("backend");
    let err = no_cert
        .load(&want)
        .await
        .expect_err("no client certificate");
    eprintln!("without a client certificate: {err}");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&proxy.to_string()), "{err}");

    // Without our CA the agent's certificate is not trusted.
    let no_ca = ConsulBackend::new(ConsulConfig {
        nodes: vec![format!("https://127.0.0.1:{}", proxy.port())],
        ca_file: None,
        ..config
    })
    .expect("backend");
    let err = no_ca.load(&want).await.expect_err("unknown CA");
    eprintln!("without the CA: {err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[test]
fn bad_pem_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not pem").unwrap();
    let err = ConsulBackend::new(ConsulConfig {
        cert_file: Some(bad.clone()),
        key_file: Some(bad.clone()),
        ..ConsulConfig::default()
    })
    .err()
    .expect("bad pem");
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
}

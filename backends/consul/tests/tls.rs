//! TLS to the agent: a rustls proxy that requires a client certificate sits
//! in front of the fake agent (as an agent with `verify_incoming` would), and
//! the backend reaches it with `--client-ca-keys`, `--client-cert` and
//! `--client-key`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sidekick_backend::{Backend, Interest};
use sidekick_backend_consul::{ConsulBackend, ConsulConfig};
use support::FakeConsul;

struct Pki {
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key: Vec<u8>,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sidekick test Consul CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server, server_key) = leaf(
        "server.dc1.consul",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf("sidekick", vec![], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
        ca_der: ca_cert.der().clone(),
        server_der: server.der().clone(),
        server_key: server_key.serialize_der(),
    }
}

/// Listens with TLS (client certificate required) and forwards to `upstream`.
async fn tls_proxy(pki: &Pki, upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
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
            vec![pki.server_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
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

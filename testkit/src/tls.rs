//! Certificates for TLS tests (feature `tls`): a CA, a server certificate for
//! `127.0.0.1`/`localhost` and a client certificate, made with rcgen and
//! written as PEM files, so servers (etcd, a rustls proxy) and sidekick's
//! `--client-ca-keys`/`--client-cert`/`--client-key` can use them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What the two leaf certificates may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usages {
    /// The server certificate for server auth, the client one for client auth.
    Separate,
    /// Both for both: etcd's own gateway dials the server with the server
    /// certificate.
    Both,
}

/// A CA and two certificates signed by it, as files under one directory
/// (`ca.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`)
/// and, for in-process servers, as DER.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub server_cert: PathBuf,
    /// The server key (PEM).
    pub server_key: PathBuf,
    /// The client certificate, common name `sidekick` (PEM).
    pub client_cert: PathBuf,
    /// The client key (PEM).
    pub client_key: PathBuf,
    /// The CA certificate (DER).
    pub ca_der: Vec<u8>,
    /// The server certificate (DER).
    pub server_der: Vec<u8>,
    /// The server key (PKCS#8 DER).
    pub server_key_der: Vec<u8>,
}

impl Pki {
    /// Makes a CA named `ca_name`, a server certificate named `server_name`
    /// for `127.0.0.1` and `localhost`, and a client certificate, and writes
    /// them into `dir`.
    pub fn write(dir: &Path, ca_name: &str, server_name: &str, usages: Usages) -> Pki {
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
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = match usages {
                Usages::Separate => vec![usage],
                Usages::Both => vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            };
            (params.signed_by(&key, &issuer).unwrap(), key)
        };
        let (server, server_key) = leaf(
            server_name,
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf("sidekick", vec![], ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server-key.pem", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            ca_der: ca_cert.der().to_vec(),
            server_der: server.der().to_vec(),
            server_key_der: server_key.serialize_der(),
        }
    }
}

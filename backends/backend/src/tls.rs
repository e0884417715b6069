//! The TLS files every backend takes (`--client-ca-keys`, `--client-cert`,
//! `--client-key`), read and checked one way whichever TLS client they go to,
//! so that a wrong path or a half pair is the same clear error everywhere.

use std::fmt;
use std::path::Path;

use crate::BackendError;

/// The PEM contents of the TLS flags. Holds a private key: `Debug` shows only
/// which parts are there.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// `--client-ca-keys`: the certificates to verify the server with.
    pub ca: Option<Vec<u8>>,
    /// `--client-cert` and `--client-key` (certificate, key), given together.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsFiles {
    /// Reads the files given; errors (as `backend`'s config errors) name the
    /// flag and the path, and a certificate without its key, or the reverse.
    pub fn read(
        backend: &'static str,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsFiles, BackendError> {
        let ca = ca
            .map(|path| read_pem(backend, "--client-ca-keys", path))
            .transpose()?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((
                read_pem(backend, "--client-cert", cert)?,
                read_pem(backend, "--client-key", key)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(BackendError::config(
                    backend,
                    "--client-cert needs --client-key as well",
                ))
            }
            (None, Some(_)) => {
                return Err(BackendError::config(
                    backend,
                    "--client-key needs --client-cert as well",
                ))
            }
        };
        Ok(TlsFiles { ca, client })
    }

    /// Adds the files to a reqwest client (the Consul and Vault backends):
    /// the CA replaces the built-in roots, the pair is the client identity.
    #[cfg(feature = "reqwest")]
    pub fn apply_to(
        &self,
        backend: &'static str,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, BackendError> {
        let error = |message: String| BackendError::config(backend, message);
        if let Some(pem) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| error(format!("--client-ca-keys: not PEM certificates: {e}")))?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.client {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                error(format!(
                    "--client-cert / --client-key: not a PEM certificate and key: {e}"
                ))
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}

/// Reads the PEM file `flag` names, refusing one without a `-----BEGIN` line
/// here rather than in the TLS stack's terms later.
pub fn read_pem(backend: &'static str, flag: &str, path: &Path) -> Result<Vec<u8>, BackendError> {
    let bytes = std::fs::read(path)
        .map_err(|e| BackendError::config(backend, format!("{flag} {}: {e}", path.display())))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(BackendError::config(
            backend,
            format!(
                "{flag} {} is not a PEM file (no -----BEGIN line)",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag_the_file_and_a_half_pair() {
        let dir = std::env::temp_dir().join(format!("sidekick-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("not.pem");
        std::fs::write(&text, "hello").unwrap();
        let pem = dir.join("ok.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let read = |ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>| {
            TlsFiles::read("x", ca, cert, key).map_err(|e| e.to_string())
        };
        let e = read(Some(&text), None, None).unwrap_err();
        assert!(
            e.contains("--client-ca-keys") && e.contains("not a PEM file"),
            "{e}"
        );
        let e = read(None, Some(&dir.join("missing.pem")), Some(&pem)).unwrap_err();
        assert!(
            e.contains("--client-cert") && e.contains("missing.pem"),
            "{e}"
        );
        let e = read(None, Some(&pem), None).unwrap_err();
        assert!(e.contains("needs --client-key"), "{e}");
        let e = read(None, None, Some(&pem)).unwrap_err();
        assert!(e.contains("needs --client-cert"), "{e}");
        let files = read(Some(&pem), Some(&pem), Some(&pem)).unwrap();
        assert!(files.ca.is_some() && files.client.is_some());
        assert!(!format!("{files:?}").contains("BEGIN"));
        let none = read(None, None, None).unwrap();
        assert!(none.ca.is_none() && none.client.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! TLS on the listening port (`--tls-cert`, `--tls-key`): rustls with the ring provider, TLS 1.2
//! and 1.3 only, no client certificates. The certificate and key are held by a resolver that
//! [`TlsServer::reload`] swaps on SIGHUP: handshakes after it get the new pair, connections
//! already up keep theirs, and a pair that does not load (or does not match) leaves the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// The server side of TLS: an acceptor whose certificate can be reloaded.
pub struct TlsServer {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Hands every handshake the current pair.
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl TlsServer {
    /// Loads the certificate chain and the private key (PEM files); the errors name the file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsServer, String> {
        let cert_path = std::path::absolute(cert_path).unwrap_or_else(|_| cert_path.into());
        let key_path = std::path::absolute(key_path).unwrap_or_else(|_| key_path.into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = load_pair(&cert_path, &key_path, &provider)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(pair)),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        Ok(TlsServer {
            cert_path,
            key_path,
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the certificate and key again; later handshakes use them. On an error the pair in
    /// use is kept.
    pub fn reload(&self) -> Result<(), String> {
        let pair = load_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        Ok(())
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "failed to read TLS certificate {} (--tls-cert): {e}",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate in {} (--tls-cert)",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "failed to read TLS private key {} (--tls-key): {e}",
            key_path.display()
        )
    })?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "TLS certificate {} and private key {} do not go together: {e}",
            cert_path.display(),
            key_path.display()
        )
    })
}

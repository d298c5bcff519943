//! The listener side of TLS: certificates by SNI, swapped without a restart.

use arc_swap::ArcSwap;
use std::sync::Arc;

/// Certificates by name for SNI, swapped without restarting the listener.
#[derive(Debug, Default)]
pub struct SniCerts {
    /// `(name pattern, key)`; the first is the default.
    pub certs: ArcSwap<Vec<(Vec<String>, Arc<rustls::sign::CertifiedKey>)>>,
}

impl rustls::server::ResolvesServerCert for SniCerts {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(sni) = hello.server_name() {
            for (names, key) in certs.iter() {
                if names.iter().any(|n| {
                    crate::matching::wildcard(n, sni, true)
                        && (!n.starts_with("*.")
                            || sni.matches('.').count() == n.matches('.').count())
                }) {
                    return Some(key.clone());
                }
            }
        }
        certs.first().map(|c| c.1.clone())
    }
}

/// A rustls key from PEM.
pub fn certified_key(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("no private key")?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signing)))
}

/// A TLS acceptor resolving certificates through `sni` (HTTP/2 and HTTP/1.1 by ALPN).
pub fn acceptor(sni: Arc<SniCerts>) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(sni);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

//! veeps' internal certificate authority and the certificate store, shared by every part
//! that speaks TLS (balancers, database nodes, instances that trust the CA). The CA's key
//! lives in the data directory (0600); certificates are issued for the names asked and kept
//! with their keys, found by id by the listeners. Issuing is behind [`CertSource`] so public
//! ACME certificates can come from another source later.

pub mod acme;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veeps_state::Store;

/// Errors of certificate work.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A name cannot be put in a certificate.
    #[error("{0}")]
    Invalid(String),
    /// Generating or signing failed.
    #[error("certificate: {0}")]
    Crypto(String),
    /// Disk or store.
    #[error("certificate store: {0}")]
    Io(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Crypto(e.to_string())
    }
}

/// An issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Issued {
    /// Its id (also its ARN).
    pub id: String,
    /// The names it is valid for.
    pub names: Vec<String>,
    /// PEM of the certificate followed by the CA's.
    pub chain_pem: String,
    /// PEM of its private key.
    pub key_pem: String,
    /// Not after (RFC 3339).
    pub not_after: String,
    /// Where an ACME certificate came from (none: veeps' CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<acme::AcmeSpec>,
}

/// Something that issues certificates for names.
pub trait CertSource: Send + Sync {
    /// Issues a certificate for `names` (the first is the subject).
    fn issue(&self, id: &str, names: &[String]) -> Result<Issued, CaError>;
}

/// The internal CA.
pub struct Ca {
    key: KeyPair,
    params: CertificateParams,
    /// The CA certificate as clients should trust it.
    pub cert_pem: String,
}

fn ca_params(dn_name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dn_name);
    dn.push(DnType::OrganizationName, "veeps");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2044, 1, 1);
    p
}

fn write_private(p: &Path, data: &str) -> std::io::Result<()> {
    veeps_kms::write_private(p, data.as_bytes())
}

impl Ca {
    /// Opens the CA of a data directory, creating it at first use; `name` tells this
    /// installation's CA apart from others' (its subject's common name).
    pub fn open(data_dir: &Path, name: &str) -> Result<Ca, CaError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|e| CaError::Io(e.to_string()))?;
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.crt"));
        if let (Ok(k), Ok(c)) = (
            std::fs::read_to_string(&key_path),
            std::fs::read_to_string(&cert_path),
        ) {
            let key = KeyPair::from_pem(&k)?;
            return Ok(Ca {
                key,
                params: ca_params(name),
                cert_pem: c,
            });
        }
        let key = KeyPair::generate()?;
        let params = ca_params(name);
        let cert = params.clone().self_signed(&key)?;
        let cert_pem = cert.pem();
        write_private(&key_path, &key.serialize_pem()).map_err(|e| CaError::Io(e.to_string()))?;
        std::fs::write(&cert_path, &cert_pem).map_err(|e| CaError::Io(e.to_string()))?;
        Ok(Ca {
            key,
            params,
            cert_pem,
        })
    }
}

impl Ca {
    /// Checks that a name can go in a certificate.
    pub fn check(n: &str) -> Result<(), String> {
        check_name(n).map_err(|e| e.to_string())
    }
}

fn check_name(n: &str) -> Result<(), CaError> {
    let ok = !n.is_empty()
        && n.len() <= 253
        && (n.parse::<std::net::IpAddr>().is_ok()
            || n.split('.').enumerate().all(|(i, l)| {
                !l.is_empty()
                    && l.len() <= 63
                    && (l == "*" && i == 0
                        || l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            }));
    if ok {
        Ok(())
    } else {
        Err(CaError::Invalid(format!(
            "\"{n}\" is not a DNS name (like app.example.test or *.example.test) or an IP address"
        )))
    }
}

impl CertSource for Ca {
    fn issue(&self, id: &str, names: &[String]) -> Result<Issued, CaError> {
        if names.is_empty() {
            return Err(CaError::Invalid("give at least one name".into()));
        }
        for n in names {
            check_name(n)?;
        }
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].as_str());
        p.distinguished_name = dn;
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => {
                    Ok(SanType::DnsName(n.clone().try_into().map_err(
                        |e: rcgen::Error| CaError::Invalid(e.to_string()),
                    )?))
                }
            })
            .collect::<Result<_, CaError>>()?;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = |d: u64| {
            rcgen::date_time_ymd(1970, 1, 1)
                + std::time::Duration::from_secs(now - now % 86_400 + d * 86_400)
        };
        p.not_before = days(0) - std::time::Duration::from_secs(86_400);
        p.not_after = days(397);
        let serial: [u8; 16] = rand::random();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[..15]));
        let key = KeyPair::generate()?;
        let issuer = self.params.clone().self_signed(&self.key)?;
        let not_after = format!("{:?}", p.not_after);
        let cert = p.signed_by(&key, &issuer, &self.key)?;
        Ok(Issued {
            id: id.to_string(),
            names: names.to_vec(),
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            not_after,
            acme: None,
        })
    }
}

const K_CERT: &str = "lb/cert/";

/// Issued certificates, by id: metadata in the store, keys in files (0600).
pub struct Certs {
    dir: PathBuf,
    store: Arc<Store>,
    /// Where certificates come from.
    pub source: Arc<dyn CertSource>,
    /// ACME certificates.
    pub acme: acme::Acme,
}

impl Certs {
    /// The store of a data directory.
    pub fn new(data_dir: &Path, store: Arc<Store>, source: Arc<dyn CertSource>) -> Certs {
        Certs {
            dir: data_dir.join("pki").join("certs"),
            store,
            source,
            acme: acme::Acme::new(data_dir),
        }
    }

    /// Where certificates of `id` keep their keys before they were named by their chain.
    fn key_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{}.key", Self::safe(id)))
    }

    /// Where the key of `id`'s certificate `chain_pem` is: named by the chain, so a record
    /// and its key change together (a reader never pairs a new key with an old chain, and
    /// a crash between the two writes leaves the old pair whole).
    fn key_path_for(&self, id: &str, chain_pem: &str) -> PathBuf {
        use sha2::Digest;
        let h = hex::encode(&sha2::Sha256::digest(chain_pem.as_bytes())[..8]);
        self.dir.join(format!("{}.{h}.key", Self::safe(id)))
    }

    /// `id` as a file name (no dots: `{safe}.` begins only this id's files).
    fn safe(id: &str) -> String {
        id.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// Removes `id`'s key files but `keep`.
    fn remove_keys(&self, id: &str, keep: Option<&Path>) {
        let prefix = format!("{}.", Self::safe(id));
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix)
                && name.ends_with(".key")
                && keep.is_none_or(|k| k != e.path())
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Issues (or re-issues) a certificate and records it.
    pub fn issue(&self, id: &str, names: &[String]) -> Result<Issued, CaError> {
        let c = self.source.issue(id, names)?;
        self.put(&c)?;
        Ok(c)
    }

    /// Records a certificate issued elsewhere (an ACME CA), replacing any of that id: the
    /// new key is written beside the old one, the record switches to it, the old goes.
    pub fn put(&self, c: &Issued) -> Result<(), CaError> {
        let id = c.id.as_str();
        std::fs::create_dir_all(&self.dir).map_err(|e| CaError::Io(e.to_string()))?;
        let key = self.key_path_for(id, &c.chain_pem);
        write_private(&key, &c.key_pem).map_err(|e| CaError::Io(e.to_string()))?;
        let meta = Issued {
            key_pem: String::new(),
            ..c.clone()
        };
        self.store
            .kv_put(&format!("{K_CERT}{id}"), &meta)
            .map_err(|e| CaError::Io(e.to_string()))?;
        self.remove_keys(id, Some(&key));
        Ok(())
    }

    /// Every recorded certificate (without keys).
    pub fn list(&self) -> Vec<Issued> {
        self.store
            .kv_scan::<Issued>(K_CERT)
            .map(|v| v.into_iter().map(|(_, c)| c).collect())
            .unwrap_or_default()
    }

    /// A recorded certificate with its key.
    pub fn get(&self, id: &str) -> Option<Issued> {
        let mut c: Issued = self.store.kv_get(&format!("{K_CERT}{id}")).ok().flatten()?;
        c.key_pem = std::fs::read_to_string(self.key_path_for(id, &c.chain_pem))
            .or_else(|_| std::fs::read_to_string(self.key_path(id)))
            .ok()?;
        Some(c)
    }

    /// Forgets a certificate.
    pub fn delete(&self, id: &str) -> Result<(), CaError> {
        self.store
            .kv_delete(&format!("{K_CERT}{id}"))
            .map_err(|e| CaError::Io(e.to_string()))?;
        self.remove_keys(id, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_certificate_and_its_key_change_together_even_when_cut_in_the_middle() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let ca = Arc::new(Ca::open(d.path(), "veeps CA test").unwrap());
        let certs = Certs::new(d.path(), store, ca.clone());
        let names = vec!["www.example.test".to_string()];
        let first = certs.issue("site", &names).unwrap();
        // Records from before keys were named by their chain are still read.
        let legacy = certs.key_path("site");
        std::fs::rename(certs.key_path_for("site", &first.chain_pem), &legacy).unwrap();
        assert_eq!(certs.get("site").unwrap().key_pem, first.key_pem);
        // A renewal cut after its key was written, before its record: the old pair whole.
        let second = ca.issue("site", &names).unwrap();
        write_private(
            &certs.key_path_for("site", &second.chain_pem),
            &second.key_pem,
        )
        .unwrap();
        let got = certs.get("site").unwrap();
        assert_eq!(
            (got.chain_pem, got.key_pem),
            (first.chain_pem.clone(), first.key_pem.clone())
        );
        // Completed: the new pair, and no other key of it left.
        certs.put(&second).unwrap();
        let got = certs.get("site").unwrap();
        assert_eq!(
            (got.chain_pem, got.key_pem),
            (second.chain_pem.clone(), second.key_pem)
        );
        let keys: Vec<_> = std::fs::read_dir(d.path().join("pki/certs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        // Readers racing renewals always get a matching pair.
        let certs = Arc::new(certs);
        let reader = {
            let certs = certs.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    let c = certs.get("site").unwrap();
                    let chain_key = x509_parser::pem::parse_x509_pem(c.chain_pem.as_bytes())
                        .unwrap()
                        .1
                        .parse_x509()
                        .unwrap()
                        .public_key()
                        .raw
                        .to_vec();
                    let key = KeyPair::from_pem(&c.key_pem).unwrap();
                    assert_eq!(chain_key, key.public_key_der(), "a key of another chain");
                }
            })
        };
        for _ in 0..20 {
            certs.put(&ca.issue("site", &names).unwrap()).unwrap();
        }
        reader.join().unwrap();
        certs.delete("site").unwrap();
        assert_eq!(
            std::fs::read_dir(d.path().join("pki/certs"))
                .unwrap()
                .count(),
            0
        );
    }

    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn issues_certificates_that_chain_to_the_ca_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        let ca = Ca::open(d.path(), "veeps CA test").unwrap();
        let again = Ca::open(d.path(), "veeps CA test").unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem);
        let c = again
            .issue(
                "cert-1",
                &[
                    "app.example.test".into(),
                    "*.example.test".into(),
                    "10.0.0.5".into(),
                ],
            )
            .unwrap();
        // Verify with rustls' webpki against the stored CA.
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls_pemfile::certs(&mut ca.cert_pem.as_bytes()) {
            roots.add(der.unwrap()).unwrap();
        }
        let chain: Vec<_> = rustls_pemfile::certs(&mut c.chain_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in ["app.example.test", "x.example.test", "10.0.0.5"] {
            let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &sn, &[], now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("evil.test".to_string()).unwrap();
        assert!(verifier
            .verify_server_cert(&chain[0], &[], &other, &[], now)
            .is_err());
        for bad in ["", "a..b", "exa mple.test", "x.*.test"] {
            assert!(ca.issue("x", &[bad.into()]).is_err(), "{bad:?}");
        }
    }
}

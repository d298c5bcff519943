//! Certificates from an ACME CA (RFC 8555; Let's Encrypt by default), through
//! `instant-acme`. DNS-01 challenges are answered by veeps' own zones (wildcards need it),
//! HTTP-01 challenges by veeps' own balancers' plain-HTTP listeners;
//! one account per directory, its key sealed with veeps' KMS (the `system` key) in the data
//! directory. Certificates renew
//! at two thirds of their lifetime ([`due`]).

use crate::{CaError, Issued};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use veeps_resource::acme::{Dns01, Http01};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How a certificate is validated, and by whom it is issued.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AcmeSpec {
    /// The directory URL.
    pub directory: String,
    /// A PEM file of the CA the directory's TLS certificate chains to (a test CA); none:
    /// the usual web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A contact address for the account.
    #[serde(default)]
    pub email: Option<String>,
    /// `dns-01` or `http-01`.
    pub challenge: String,
}

fn acme_err(e: impl std::fmt::Display) -> CaError {
    CaError::Crypto(format!("ACME: {e}"))
}

/// A challenge answer being served, withdrawn when the order ends.
enum Published {
    /// A TXT value at a name.
    Dns(String, String),
    /// An HTTP-01 token.
    Http(String),
}

/// The ACME client of a server.
pub struct Acme {
    dir: PathBuf,
    dns01: OnceLock<Arc<dyn Dns01>>,
    http01: OnceLock<Arc<dyn Http01>>,
    kms: OnceLock<Arc<veeps_kms::Kms>>,
    lock: tokio::sync::Mutex<()>,
}

/// When a certificate valid from `not_before` to `not_after` (unix seconds) is due for
/// renewal: two thirds of the way through.
pub fn due(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 2 / 3
}

/// A certificate chain's validity (unix seconds), from its first certificate.
pub fn validity(chain_pem: &str) -> Result<(i64, i64), CaError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| CaError::Crypto(format!("the certificate does not parse: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CaError::Crypto(format!("the certificate does not parse: {e}")))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Acme {
    /// The client, keeping accounts under `data_dir/pki/acme`.
    pub fn new(data_dir: &Path) -> Acme {
        Acme {
            dir: data_dir.join("pki").join("acme"),
            dns01: OnceLock::new(),
            http01: OnceLock::new(),
            kms: OnceLock::new(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Plugs in what answers DNS-01 challenges.
    pub fn set_dns01(&self, d: Arc<dyn Dns01>) {
        let _ = self.dns01.set(d);
    }

    /// Plugs in what answers HTTP-01 challenges.
    pub fn set_http01(&self, h: Arc<dyn Http01>) {
        let _ = self.http01.set(h);
    }

    /// Plugs in the KMS that seals account keys.
    pub fn set_kms(&self, k: Arc<veeps_kms::Kms>) {
        let _ = self.kms.set(k);
    }

    /// An account's file: sealed (`.sealed`), or as an older veeps kept it (`.json`).
    fn account_path(&self, spec: &AcmeSpec, ext: &str) -> PathBuf {
        let h = sha2::Sha256::digest(spec.directory.as_bytes());
        self.dir
            .join(format!("account-{}.{ext}", &hex::encode(h)[..16]))
    }

    fn kms(&self) -> Result<&veeps_kms::Kms, CaError> {
        self.kms
            .get()
            .map(|k| k.as_ref())
            .ok_or_else(|| CaError::Invalid("no KMS here to seal ACME account keys".into()))
    }

    /// The stored credentials of the account at `spec`'s directory, if any.
    fn stored(&self, spec: &AcmeSpec) -> Result<Option<AccountCredentials>, CaError> {
        let context = format!("acme-account:{}", spec.directory);
        if let Ok(sealed) = std::fs::read(self.account_path(spec, "sealed")) {
            let text = self
                .kms()?
                .decrypt(veeps_kms::SYSTEM_ENV, &sealed, &context)
                .map_err(|e| CaError::Crypto(format!("the ACME account key does not open: {e}")))?;
            return Ok(serde_json::from_slice(&text).ok());
        }
        // An account kept in the clear by an older veeps: sealed now, the clear copy gone.
        let legacy = self.account_path(spec, "json");
        let Ok(text) = std::fs::read(&legacy) else {
            return Ok(None);
        };
        let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&text) else {
            return Ok(None);
        };
        self.seal(spec, &text)?;
        let _ = std::fs::remove_file(&legacy);
        Ok(Some(creds))
    }

    fn seal(&self, spec: &AcmeSpec, creds_json: &[u8]) -> Result<(), CaError> {
        let kms = self.kms()?;
        kms.ensure_env_key(veeps_kms::SYSTEM_ENV)
            .map_err(|e| CaError::Crypto(e.to_string()))?;
        let sealed = kms
            .encrypt(
                veeps_kms::SYSTEM_ENV,
                creds_json,
                &format!("acme-account:{}", spec.directory),
            )
            .map_err(|e| CaError::Crypto(e.to_string()))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| CaError::Io(e.to_string()))?;
        veeps_kms::write_private(&self.account_path(spec, "sealed"), &sealed)
            .map_err(|e| CaError::Io(e.to_string()))
    }

    async fn account(&self, spec: &AcmeSpec) -> Result<Account, CaError> {
        let builder = || match &spec.ca_file {
            Some(p) => Account::builder_with_root(p).map_err(acme_err),
            None => Account::builder().map_err(acme_err),
        };
        if let Some(creds) = self.stored(spec)? {
            match builder()?.from_credentials(creds).await {
                Ok(a) => return Ok(a),
                Err(e) => {
                    tracing::warn!(error = %e, "ACME: the stored account failed; making a new one")
                }
            }
        }
        let contact = spec.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                spec.directory.clone(),
                None,
            )
            .await
            .map_err(|e| acme_err(format!("creating an account at {}: {e}", spec.directory)))?;
        let text = serde_json::to_vec(&creds).map_err(|e| CaError::Io(e.to_string()))?;
        self.seal(spec, &text)?;
        Ok(account)
    }

    /// Orders a certificate for `names` (the first is the subject) and answers its
    /// challenges; the published answers are withdrawn however it ends.
    pub async fn issue(
        &self,
        id: &str,
        names: &[String],
        spec: &AcmeSpec,
    ) -> Result<Issued, CaError> {
        let _g = self.lock.lock().await;
        let account = self.account(spec).await?;
        let idents: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&idents))
            .await
            .map_err(|e| acme_err(format!("ordering {}: {e}", names.join(", "))))?;
        let mut published: Vec<Published> = vec![];
        let result = self.answer(&mut order, spec, &mut published).await;
        for p in &published {
            match p {
                Published::Dns(n, v) => {
                    if let Some(d) = self.dns01.get() {
                        d.withdraw(n, v);
                    }
                }
                Published::Http(token) => {
                    if let Some(h) = self.http01.get() {
                        h.withdraw(token).await;
                    }
                }
            }
        }
        result?;
        let key_pem = order.finalize().await.map_err(acme_err)?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::default().timeout(Duration::from_secs(120)))
            .await
            .map_err(acme_err)?;
        let (_, not_after) = validity(&chain_pem)?;
        tracing::info!(certificate = %id, names = %names.join(","), directory = %spec.directory, "ACME certificate issued");
        Ok(Issued {
            id: id.to_string(),
            names: names.to_vec(),
            chain_pem,
            key_pem,
            not_after: rfc3339(not_after),
            acme: Some(spec.clone()),
        })
    }

    async fn answer(
        &self,
        order: &mut instant_acme::Order,
        spec: &AcmeSpec,
        published: &mut Vec<Published>,
    ) -> Result<(), CaError> {
        let http = spec.challenge == "http-01";
        let kind = if http {
            ChallengeType::Http01
        } else {
            ChallengeType::Dns01
        };
        if http && self.http01.get().is_none() {
            return Err(CaError::Invalid(
                "no balancers here to answer HTTP-01 challenges".into(),
            ));
        }
        if !http && self.dns01.get().is_none() {
            return Err(CaError::Invalid(
                "no DNS here to answer DNS-01 challenges".into(),
            ));
        }
        {
            let mut auths = order.authorizations();
            while let Some(a) = auths.next().await {
                let mut a = a.map_err(acme_err)?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(acme_err(format!("an authorization is {other:?}"))),
                }
                let mut ch = a
                    .challenge(kind.clone())
                    .ok_or_else(|| acme_err(format!("the CA offers no {kind:?} challenge")))?;
                let base = match ch.identifier().identifier {
                    Identifier::Dns(d) => d.trim_start_matches("*.").to_string(),
                    other => return Err(acme_err(format!("{other:?} is not a DNS name"))),
                };
                if let (true, Some(h)) = (http, self.http01.get()) {
                    let token = ch.token.clone();
                    let answer = ch.key_authorization().as_str().to_string();
                    h.publish(&token, &answer).await.map_err(CaError::Invalid)?;
                    published.push(Published::Http(token));
                } else if let Some(d) = self.dns01.get() {
                    let name = format!("_acme-challenge.{base}");
                    let value = ch.key_authorization().dns_value();
                    d.publish(&name, &value).map_err(CaError::Invalid)?;
                    published.push(Published::Dns(name, value));
                }
                ch.set_ready().await.map_err(acme_err)?;
            }
        }
        let status = order
            .poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(120)))
            .await
            .map_err(acme_err)?;
        if status != OrderStatus::Ready {
            let why: Vec<String> = order
                .state()
                .error
                .iter()
                .map(|p| format!("{p:?}"))
                .collect();
            return Err(acme_err(format!(
                "the order is {status:?}, not ready: {}",
                why.join("; ")
            )));
        }
        Ok(())
    }
}

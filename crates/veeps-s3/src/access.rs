//! Who may do what: access keys of named users (secrets sealed with KMS) and bucket
//! policies in S3's policy language. The root key pair may do everything; anyone else,
//! anonymous included, what a bucket's policy allows (an explicit Deny wins).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::sync::Arc;
use veeps_kms::Kms;
use veeps_state::Store;

const K_KEY: &str = "s3/key/";
const K_POLICY: &str = "s3/policy/";
/// The environment whose key seals access key secrets.
const KEY_ENV: &str = "s3";

/// A user's access key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessKey {
    /// Its id (`VK...`).
    pub id: String,
    /// The user it belongs to.
    pub user: String,
    sealed_secret: Vec<u8>,
}

/// Access keys and bucket policies.
pub struct Access {
    store: Arc<Store>,
    kms: Arc<Kms>,
}

impl Access {
    /// Over the state store and KMS.
    pub fn new(store: Arc<Store>, kms: Arc<Kms>) -> Access {
        Access { store, kms }
    }

    /// Creates an access key for `user`; returns it with its secret (shown once).
    pub fn create_key(&self, user: &str) -> Result<(AccessKey, String), String> {
        let id = format!(
            "VK{}",
            hex::encode(rand::random::<[u8; 9]>()).to_uppercase()
        );
        let secret = hex::encode(rand::random::<[u8; 20]>());
        self.kms
            .ensure_env_key(KEY_ENV)
            .map_err(|e| e.to_string())?;
        let sealed = self
            .kms
            .encrypt(KEY_ENV, secret.as_bytes(), &id)
            .map_err(|e| e.to_string())?;
        let k = AccessKey {
            id: id.clone(),
            user: user.into(),
            sealed_secret: sealed,
        };
        self.store
            .kv_put(&format!("{K_KEY}{id}"), &k)
            .map_err(|e| e.to_string())?;
        Ok((k, secret))
    }

    /// A key by id.
    pub fn key(&self, id: &str) -> Option<AccessKey> {
        self.store.kv_get(&format!("{K_KEY}{id}")).ok().flatten()
    }

    /// A key's secret.
    pub fn secret(&self, k: &AccessKey) -> Option<String> {
        let plain = self.kms.decrypt(KEY_ENV, &k.sealed_secret, &k.id).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Deletes a key.
    pub fn delete_key(&self, id: &str) -> Result<(), String> {
        self.store
            .kv_delete(&format!("{K_KEY}{id}"))
            .map_err(|e| e.to_string())
    }

    /// Sets (or with `None` removes) a bucket's policy, after checking it.
    pub fn set_policy(&self, bucket: &str, policy: Option<&str>) -> Result<(), String> {
        match policy {
            None => self
                .store
                .kv_delete(&format!("{K_POLICY}{bucket}"))
                .map_err(|e| e.to_string()),
            Some(p) => {
                check_policy(p)?;
                self.store
                    .kv_put(&format!("{K_POLICY}{bucket}"), &p.to_string())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A bucket's policy.
    pub fn policy(&self, bucket: &str) -> Option<String> {
        self.store
            .kv_get(&format!("{K_POLICY}{bucket}"))
            .ok()
            .flatten()
    }

    /// Whether `user` (`None`: anonymous) may do `action` (like `s3:GetObject`) on
    /// `resource` (an ARN) of `bucket`.
    pub fn allowed(&self, user: Option<&str>, action: &str, bucket: &str, resource: &str) -> bool {
        let Some(p) = self.policy(bucket) else {
            return false;
        };
        let Ok(doc) = serde_json::from_str::<Json>(&p) else {
            return false;
        };
        let statements = match &doc["Statement"] {
            Json::Array(a) => a.clone(),
            o @ Json::Object(_) => vec![o.clone()],
            _ => vec![],
        };
        let mut allow = false;
        for s in statements {
            if !principal_matches(&s["Principal"], user)
                || !any_matches(&s["Action"], action)
                || !any_matches(&s["Resource"], resource)
            {
                continue;
            }
            match s["Effect"].as_str() {
                Some("Deny") => return false,
                Some("Allow") => allow = true,
                _ => {}
            }
        }
        allow
    }
}

fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => vec![],
    }
}

fn any_matches(patterns: &Json, value: &str) -> bool {
    strings(patterns).iter().any(|p| glob(p, value))
}

fn principal_matches(p: &Json, user: Option<&str>) -> bool {
    let names = match p {
        Json::String(s) => vec![s.clone()],
        Json::Object(o) => o.get("AWS").map(strings).unwrap_or_default(),
        _ => vec![],
    };
    names.iter().any(|n| {
        n == "*" || user.is_some_and(|u| n == u || n.strip_prefix("arn:aws:iam:::user/") == Some(u))
    })
}

/// `*` and `?` wildcards, case-sensitive (actions are compared case-insensitively).
fn glob(p: &str, v: &str) -> bool {
    veeps_resource::wildcard(p, v, p.starts_with("s3:"))
}

/// Checks a policy document's shape; the error says what is wrong.
pub fn check_policy(p: &str) -> Result<(), String> {
    let doc: Json = serde_json::from_str(p).map_err(|e| format!("the policy is not JSON: {e}"))?;
    let statements = match &doc["Statement"] {
        Json::Array(a) => a.clone(),
        o @ Json::Object(_) => vec![o.clone()],
        _ => return Err("the policy needs a Statement (a list of statements)".into()),
    };
    for (i, s) in statements.iter().enumerate() {
        match s["Effect"].as_str() {
            Some("Allow") | Some("Deny") => {}
            _ => return Err(format!("statement {i}: Effect must be Allow or Deny")),
        }
        for k in ["Principal", "Action", "Resource"] {
            if s[k].is_null() {
                return Err(format!("statement {i}: {k} is missing"));
            }
        }
        for a in strings(&s["Action"]) {
            if !a.starts_with("s3:") {
                return Err(format!(
                    "statement {i}: action \"{a}\" is not an s3: action"
                ));
            }
        }
        for r in strings(&s["Resource"]) {
            if !r.starts_with("arn:aws:s3:::") {
                return Err(format!(
                    "statement {i}: resource \"{r}\" is not an arn:aws:s3::: ARN"
                ));
            }
        }
    }
    Ok(())
}

/// The s3s hooks: secrets for SigV4, and the policy check of every request.
#[derive(Clone)]
pub struct Gate {
    /// Keys and policies.
    pub access: Arc<Access>,
    /// The root key id.
    pub root_id: String,
    /// The root secret.
    pub root_secret: String,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Gate {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        if access_key == self.root_id {
            return Ok(s3s::auth::SecretKey::from(self.root_secret.clone()));
        }
        let secret = self
            .access
            .key(access_key)
            .and_then(|k| self.access.secret(&k));
        secret.map(s3s::auth::SecretKey::from).ok_or_else(|| {
            s3s::s3_error!(
                InvalidAccessKeyId,
                "the access key id you provided does not exist"
            )
        })
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Gate {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let user = match cx.credentials() {
            Some(c) if c.access_key == self.root_id => return Ok(()),
            Some(c) => Some(
                self.access
                    .key(&c.access_key)
                    .map(|k| k.user)
                    .unwrap_or_default(),
            ),
            None => None,
        };
        let (bucket, resource) = match cx.s3_path() {
            s3s::path::S3Path::Root => {
                return Err(s3s::s3_error!(
                    AccessDenied,
                    "only the root key lists buckets"
                ));
            }
            s3s::path::S3Path::Bucket { bucket } => {
                (bucket.to_string(), format!("arn:aws:s3:::{bucket}"))
            }
            s3s::path::S3Path::Object { bucket, key } => {
                (bucket.to_string(), format!("arn:aws:s3:::{bucket}/{key}"))
            }
        };
        let action = format!("s3:{}", cx.s3_op().name());
        let access = self.access.clone();
        let ok = tokio::task::spawn_blocking(move || {
            access.allowed(user.as_deref(), &action, &bucket, &resource)
        })
        .await
        .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(s3s::s3_error!(
                AccessDenied,
                "access denied by the bucket's policy"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_allow_deny_and_match_principals() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(Kms::open(d.path(), store.clone()).unwrap());
        let a = Access::new(store, kms);
        let (k, secret) = a.create_key("alice").unwrap();
        assert_eq!(a.secret(&a.key(&k.id).unwrap()).unwrap(), secret);
        let p = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"},
            {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/alice"]},"Action":["s3:*"],"Resource":["arn:aws:s3:::site","arn:aws:s3:::site/*"]},
            {"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/private/*"}]}"#;
        a.set_policy("site", Some(p)).unwrap();
        assert!(a.allowed(None, "s3:GetObject", "site", "arn:aws:s3:::site/index.html"));
        assert!(!a.allowed(None, "s3:PutObject", "site", "arn:aws:s3:::site/index.html"));
        assert!(a.allowed(Some("alice"), "s3:PutObject", "site", "arn:aws:s3:::site/x"));
        assert!(!a.allowed(Some("bob"), "s3:PutObject", "site", "arn:aws:s3:::site/x"));
        assert!(!a.allowed(
            Some("alice"),
            "s3:GetObject",
            "site",
            "arn:aws:s3:::site/private/a"
        ));
        assert!(!a.allowed(None, "s3:GetObject", "other", "arn:aws:s3:::other/a"));
        for bad in [
            "nope",
            r#"{"Statement":[{"Effect":"Maybe"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ec2:Run","Resource":"arn:aws:s3:::x"}]}"#,
        ] {
            assert!(check_policy(bad).is_err(), "{bad}");
        }
    }
}

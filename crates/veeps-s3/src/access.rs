//! Who may do what: access keys of named users (secrets sealed with KMS) and bucket
//! policies in S3's policy language. The root key pair may do everything; anyone else,
//! anonymous included, what a bucket's policy allows (an explicit Deny wins).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use veeps_iam::directory::Directory;
use veeps_iam::{Context, Decision, Grammar, Policy};
use veeps_kms::Kms;
use veeps_state::Store;

const K_KEY: &str = "s3/key/";
pub(crate) const K_POLICY: &str = "s3/policy/";
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
    identities: Option<Arc<Directory>>,
}

impl Access {
    /// Over the state store and KMS.
    pub fn new(store: Arc<Store>, kms: Arc<Kms>) -> Access {
        Access {
            store,
            kms,
            identities: None,
        }
    }

    /// With IAM: a key's user gets what its groups' policies allow, besides what bucket
    /// policies grant it.
    pub fn with_identities(mut self, dir: Arc<Directory>) -> Access {
        self.identities = Some(dir);
        self
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

    /// Whether the requester in `cx` may do `action` (like `s3:GetObject`) on `resource`
    /// (an ARN) of `bucket`, by the bucket's policy and the user's own (IAM) policies, as
    /// AWS decides within an account: an explicit Deny in either wins, then an Allow in
    /// either; otherwise no.
    pub fn allowed(&self, cx: &RequestCx, action: &str, bucket: &str, resource: &str) -> bool {
        // Policies are checked when set; one that no longer parses grants nothing.
        let bucket_policy = self
            .policy(bucket)
            .and_then(|p| Policy::parse(&p, &BUCKET_POLICIES).ok());
        let own = match (&self.identities, &cx.user) {
            (Some(d), Some(u)) => d.policies_of(u),
            _ => vec![],
        };
        let mut all: Vec<&Policy> = own.iter().map(|(_, p)| p.as_ref()).collect();
        all.extend(bucket_policy.as_ref());
        veeps_iam::evaluate(&all, cx, action, resource) == Decision::Allow
    }

    /// Whether the requester's own (IAM) policies allow `action` on `resource`: for the
    /// other AWS APIs on the endpoint, which have no bucket policies.
    pub fn identity_allows(&self, cx: &RequestCx, action: &str, resource: &str) -> bool {
        let own = match (&self.identities, &cx.user) {
            (Some(d), Some(u)) => d.policies_of(u),
            _ => vec![],
        };
        let all: Vec<&Policy> = own.iter().map(|(_, p)| p.as_ref()).collect();
        veeps_iam::evaluate(&all, cx, action, resource) == Decision::Allow
    }

    /// A role session's principal (`role/NAME`) and secret, while it lasts.
    pub fn session(&self, access_key_id: &str) -> Option<(veeps_iam::directory::Session, String)> {
        self.identities.as_ref()?.session(access_key_id)
    }

    /// Whether `user` is an IAM user (always, without IAM).
    pub fn user_exists(&self, user: &str) -> bool {
        self.identities
            .as_ref()
            .is_none_or(|d| d.user(user).is_some())
    }
}

/// What a policy is evaluated against besides the action and the resource.
#[derive(Debug, Clone, Default)]
pub struct RequestCx {
    /// The user whose key signed the request (`None`: anonymous).
    pub user: Option<String>,
    /// The client's address.
    pub source_ip: Option<std::net::IpAddr>,
    /// Whether the request came over TLS.
    pub secure: bool,
    /// `User-Agent` and `Referer`.
    pub user_agent: Option<String>,
    /// `Referer`.
    pub referer: Option<String>,
    /// Query parameters (`prefix`, `delimiter`, `max-keys`, `versionId`).
    pub query: Vec<(String, String)>,
    /// How the request was signed: `REST-HEADER`, `REST-QUERY-STRING`, or none.
    pub auth_type: Option<String>,
}

impl RequestCx {
    /// An anonymous caller with nothing else known.
    pub fn anonymous() -> RequestCx {
        RequestCx::default()
    }

    fn query(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The value of a condition key, if the request has one (keys are case-insensitive).
    fn value(&self, key: &str) -> Option<String> {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        match key.to_ascii_lowercase().as_str() {
            "aws:sourceip" => self.source_ip.map(|i| i.to_string()),
            "aws:securetransport" => Some(self.secure.to_string()),
            "aws:currenttime" => time::OffsetDateTime::from_unix_timestamp(now() as i64)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
            "aws:epochtime" => Some(now().to_string()),
            "aws:username" => self.user.clone(),
            "aws:principaltype" => Some(
                if self.user.is_some() {
                    "User"
                } else {
                    "Anonymous"
                }
                .into(),
            ),
            "aws:useragent" => self.user_agent.clone(),
            "aws:referer" => self.referer.clone(),
            "s3:prefix" => self.query("prefix"),
            "s3:delimiter" => self.query("delimiter"),
            "s3:max-keys" => self.query("max-keys"),
            "s3:versionid" => self.query("versionId"),
            "s3:signatureversion" => self.auth_type.as_ref().map(|_| "AWS4-HMAC-SHA256".into()),
            "s3:authtype" => self.auth_type.clone(),
            _ => None,
        }
    }
}

impl Context for RequestCx {
    fn principal(&self) -> Option<&str> {
        self.user.as_deref()
    }
    fn key(&self, key: &str) -> Option<String> {
        self.value(key)
    }
}

/// Condition keys veeps evaluates; a policy naming another is refused (never ignored).
pub const CONDITION_KEYS: &[&str] = &[
    "aws:SourceIp",
    "aws:SecureTransport",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:username",
    "aws:PrincipalType",
    "aws:UserAgent",
    "aws:Referer",
    "s3:prefix",
    "s3:delimiter",
    "s3:max-keys",
    "s3:VersionId",
    "s3:signatureversion",
    "s3:authType",
];

/// Checks a policy document; the error says what is wrong and what to change.
pub fn check_policy(p: &str) -> Result<(), String> {
    Policy::parse(p, &BUCKET_POLICIES).map(|_| ())
}

/// What a bucket policy may say.
const BUCKET_POLICIES: Grammar = Grammar {
    actions: &["s3:"],
    resources: &["arn:aws:s3:::"],
    keys: CONDITION_KEYS,
    principals: true,
};

/// The IAM actions and resource an S3 operation needs, as AWS documents them, for the
/// bucket and key it names (`version`: whether a version id was given). `None`: an
/// operation only the root key may call.
pub fn action_of(op: &str, version: bool) -> Option<&'static str> {
    let v = |plain, versioned| Some(if version { versioned } else { plain });
    match op {
        "GetObject" | "HeadObject" => v("s3:GetObject", "s3:GetObjectVersion"),
        "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" => {
            Some("s3:PutObject")
        }
        // Plus s3:GetObject on the source, checked by the copy's own hook.
        "CopyObject" => Some("s3:PutObject"),
        "DeleteObject" => v("s3:DeleteObject", "s3:DeleteObjectVersion"),
        // Checked key by key by the operation (S3 answers AccessDenied per key).
        "DeleteObjects" => Some("s3:DeleteObject"),
        "AbortMultipartUpload" => Some("s3:AbortMultipartUpload"),
        "ListParts" => Some("s3:ListMultipartUploadParts"),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => Some("s3:ListBucket"),
        "ListObjectVersions" => Some("s3:ListBucketVersions"),
        "ListMultipartUploads" => Some("s3:ListBucketMultipartUploads"),
        "GetBucketLocation" => Some("s3:GetBucketLocation"),
        "CreateBucket" => Some("s3:CreateBucket"),
        "DeleteBucket" => Some("s3:DeleteBucket"),
        "GetBucketVersioning" => Some("s3:GetBucketVersioning"),
        "PutBucketVersioning" => Some("s3:PutBucketVersioning"),
        "GetBucketLifecycleConfiguration" => Some("s3:GetLifecycleConfiguration"),
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => {
            Some("s3:PutLifecycleConfiguration")
        }
        "GetBucketWebsite" => Some("s3:GetBucketWebsite"),
        "PutBucketWebsite" => Some("s3:PutBucketWebsite"),
        "DeleteBucketWebsite" => Some("s3:DeleteBucketWebsite"),
        "GetBucketEncryption" => Some("s3:GetEncryptionConfiguration"),
        _ => None,
    }
}

/// Whether an operation acts on an object (its resource is `bucket/key`).
fn on_object(op: &str) -> bool {
    matches!(
        op,
        "GetObject"
            | "HeadObject"
            | "PutObject"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "CompleteMultipartUpload"
            | "CopyObject"
            | "DeleteObject"
            | "AbortMultipartUpload"
            | "ListParts"
    )
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
        self.secret_of(access_key)
            .map(s3s::auth::SecretKey::from)
            .ok_or_else(|| {
                s3s::s3_error!(
                    InvalidAccessKeyId,
                    "the access key id you provided does not exist"
                )
            })
    }
}

/// Who is calling, put in a request's extensions by [`Gate`]'s check for the operations
/// that check more than one resource (a copy's source, each key of a DeleteObjects).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<RequestCx>);

impl Caller {
    /// Whether the caller may do `action` on `resource` of `bucket` (the root key: always).
    pub fn may(&self, access: &Access, action: &str, bucket: &str, resource: &str) -> bool {
        match &self.0 {
            None => true,
            Some(cx) => !is_reserved(bucket) && access.allowed(cx, action, bucket, resource),
        }
    }
}

/// The client's address, put in a request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// Buckets veeps keeps for itself (database backups): out of reach of users and policies.
pub const RESERVED_BUCKETS: &[&str] = &["veeps-db-backups", "veeps-audit"];

/// Whether a bucket is one of [`RESERVED_BUCKETS`].
pub fn is_reserved(bucket: &str) -> bool {
    RESERVED_BUCKETS.contains(&bucket)
}

fn denied(why: &str) -> s3s::S3Error {
    s3s::s3_error!(AccessDenied, "{why}")
}

impl Gate {
    /// The secret of an access key id: the root's, a session's or a user's key's.
    pub(crate) fn secret_of(&self, access_key: &str) -> Option<String> {
        if access_key == self.root_id {
            return Some(self.root_secret.clone());
        }
        // A key outlives its user only in a half-finished destroy: it is refused.
        match self.access.session(access_key) {
            Some((_, secret)) => Some(secret),
            None => self
                .access
                .key(access_key)
                .filter(|k| self.access.user_exists(&k.user))
                .and_then(|k| self.access.secret(&k)),
        }
    }

    /// The policy context of a request; `None` for the root key.
    pub(crate) fn caller(
        &self,
        creds: Option<&s3s::auth::Credentials>,
        headers: &hyper::HeaderMap,
        uri: &hyper::Uri,
        peer: Option<Peer>,
    ) -> Caller {
        let user = match creds {
            Some(c) if c.access_key == self.root_id => return Caller(None),
            Some(c) => Some(match self.access.session(&c.access_key) {
                Some((s, _)) => format!("role/{}", s.role),
                None => self
                    .access
                    .key(&c.access_key)
                    .map(|k| k.user)
                    .unwrap_or_default(),
            }),
            None => None,
        };
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let query: Vec<(String, String)> = uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        let dec = |x: &str| {
                            percent_encoding::percent_decode_str(&x.replace('+', " "))
                                .decode_utf8_lossy()
                                .to_string()
                        };
                        (dec(k), dec(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let auth_type = if creds.is_none() {
            None
        } else if headers.contains_key("authorization") {
            Some("REST-HEADER".into())
        } else {
            Some("REST-QUERY-STRING".into())
        };
        Caller(Some(RequestCx {
            user,
            source_ip: peer.map(|p| p.0.ip()),
            secure: false,
            user_agent: h("user-agent"),
            referer: h("referer"),
            query,
            auth_type,
        }))
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Gate {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let peer = cx.extensions_mut().get::<Peer>().copied();
        // Temporary credentials count only with their session token.
        if let Some((s, _)) = cx
            .credentials()
            .and_then(|c| self.access.session(&c.access_key))
        {
            let token = cx
                .headers()
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
                .or_else(|| {
                    cx.uri().query().and_then(|q| {
                        q.split('&')
                            .find_map(|p| p.strip_prefix("X-Amz-Security-Token="))
                            .map(|v| {
                                percent_encoding::percent_decode_str(v)
                                    .decode_utf8_lossy()
                                    .to_string()
                            })
                    })
                });
            if !token.is_some_and(|t| veeps_iam::directory::Directory::session_token_ok(&s, &t)) {
                return Err(s3s::s3_error!(
                    InvalidToken,
                    "the security token included in the request is invalid"
                ));
            }
        }
        let caller = self.caller(cx.credentials(), cx.headers(), cx.uri(), peer);
        cx.extensions_mut().insert(caller.clone());
        let Some(rcx) = &caller.0 else {
            return Ok(());
        };
        let op = cx.s3_op().name();
        let version = rcx.query.iter().any(|(k, _)| k == "versionId");
        let Some(action) = action_of(op, version) else {
            return Err(denied(&format!("only the root key may call {op}")));
        };
        let (bucket, resource) = match cx.s3_path() {
            s3s::path::S3Path::Root => {
                return Err(denied("only the root key lists buckets"));
            }
            s3s::path::S3Path::Bucket { bucket } => {
                (bucket.to_string(), format!("arn:aws:s3:::{bucket}"))
            }
            s3s::path::S3Path::Object { bucket, key } if on_object(op) => {
                (bucket.to_string(), format!("arn:aws:s3:::{bucket}/{key}"))
            }
            s3s::path::S3Path::Object { bucket, .. } => {
                (bucket.to_string(), format!("arn:aws:s3:::{bucket}"))
            }
        };
        if op == "DeleteObjects" {
            // Each key is authorised by the operation; the bucket must exist for that.
            return if is_reserved(&bucket) {
                Err(denied("this bucket is veeps' own"))
            } else {
                Ok(())
            };
        }
        if caller.may(&self.access, action, &bucket, &resource) {
            Ok(())
        } else {
            Err(denied(&format!(
                "{action} on {resource} is not allowed by the bucket's policy"
            )))
        }
    }

    async fn copy_object(
        &self,
        req: &mut s3s::S3Request<s3s::dto::CopyObjectInput>,
    ) -> s3s::S3Result<()> {
        let Some(caller) = req.extensions.get::<Caller>().cloned() else {
            return Err(denied("the request was not authorised"));
        };
        let s3s::dto::CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = &req.input.copy_source
        else {
            return Ok(());
        };
        let action = if version_id.is_some() {
            "s3:GetObjectVersion"
        } else {
            "s3:GetObject"
        };
        let resource = format!("arn:aws:s3:::{bucket}/{key}");
        if caller.may(&self.access, action, bucket, &resource) {
            Ok(())
        } else {
            Err(denied(&format!(
                "{action} on the copy's source {resource} is not allowed"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> RequestCx {
        RequestCx {
            user: Some(u.into()),
            ..Default::default()
        }
    }

    fn access() -> (tempfile::TempDir, Access) {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(Kms::open(d.path(), store.clone()).unwrap());
        (d, Access::new(store, kms))
    }

    #[test]
    fn policies_allow_deny_and_match_principals() {
        let (_d, a) = access();
        let (k, secret) = a.create_key("alice").unwrap();
        assert_eq!(a.secret(&a.key(&k.id).unwrap()).unwrap(), secret);
        let p = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"},
            {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/alice"]},"Action":["s3:*"],"Resource":["arn:aws:s3:::site","arn:aws:s3:::site/*"]},
            {"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/private/*"}]}"#;
        a.set_policy("site", Some(p)).unwrap();
        let anon = RequestCx::anonymous();
        assert!(a.allowed(
            &anon,
            "s3:GetObject",
            "site",
            "arn:aws:s3:::site/index.html"
        ));
        assert!(!a.allowed(
            &anon,
            "s3:PutObject",
            "site",
            "arn:aws:s3:::site/index.html"
        ));
        assert!(a.allowed(
            &user("alice"),
            "s3:PutObject",
            "site",
            "arn:aws:s3:::site/x"
        ));
        assert!(!a.allowed(&user("bob"), "s3:PutObject", "site", "arn:aws:s3:::site/x"));
        assert!(!a.allowed(
            &user("alice"),
            "s3:GetObject",
            "site",
            "arn:aws:s3:::site/private/a"
        ));
        assert!(!a.allowed(&anon, "s3:GetObject", "other", "arn:aws:s3:::other/a"));
        for bad in [
            "nope",
            r#"{"Statement":[{"Effect":"Maybe"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ec2:Run","Resource":"arn:aws:s3:::x"}]}"#,
        ] {
            assert!(check_policy(bad).is_err(), "{bad}");
        }
    }

    /// Conditions, NotAction, NotResource and NotPrincipal are evaluated, never ignored;
    /// what veeps cannot evaluate is refused with the reason.
    #[test]
    fn conditions_and_negations_are_evaluated_or_refused() {
        let (_d, a) = access();
        let p = r#"{"Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*",
             "Condition":{"IpAddress":{"aws:SourceIp":["10.1.0.0/16","192.0.2.7"]}}},
            {"Effect":"Deny","Principal":"*","NotAction":["s3:GetObject","s3:ListBucket"],"Resource":"arn:aws:s3:::b/*",
             "Condition":{"Bool":{"aws:SecureTransport":"false"},"StringNotEquals":{"aws:username":"ops"}}},
            {"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b",
             "Condition":{"StringLike":{"s3:prefix":["public/*"]}}},
            {"Effect":"Allow","NotPrincipal":{"AWS":"mallory"},"Action":"s3:PutObject","NotResource":"arn:aws:s3:::b/locked/*",
             "Condition":{"DateLessThan":{"aws:CurrentTime":"2999-01-01T00:00:00Z"}}}]}"#;
        a.set_policy("b", Some(p)).unwrap();
        let from = |ip: &str| RequestCx {
            source_ip: Some(ip.parse().unwrap()),
            ..Default::default()
        };
        let obj = "arn:aws:s3:::b/x";
        assert!(a.allowed(&from("10.1.2.3"), "s3:GetObject", "b", obj));
        assert!(a.allowed(&from("192.0.2.7"), "s3:GetObject", "b", obj));
        assert!(!a.allowed(&from("10.2.0.1"), "s3:GetObject", "b", obj));
        assert!(!a.allowed(&RequestCx::anonymous(), "s3:GetObject", "b", obj));
        // The Deny of everything but reads over plain HTTP, except for ops.
        assert!(!a.allowed(&user("alice"), "s3:PutObject", "b", obj));
        assert!(a.allowed(&user("ops"), "s3:PutObject", "b", obj));
        assert!(!a.allowed(&user("ops"), "s3:PutObject", "b", "arn:aws:s3:::b/locked/k"));
        assert!(!a.allowed(&user("mallory"), "s3:PutObject", "b", obj));
        let list = |prefix: &str| RequestCx {
            query: vec![("prefix".into(), prefix.into())],
            ..Default::default()
        };
        assert!(a.allowed(&list("public/a"), "s3:ListBucket", "b", "arn:aws:s3:::b"));
        assert!(!a.allowed(&list("secret/"), "s3:ListBucket", "b", "arn:aws:s3:::b"));
        assert!(!a.allowed(
            &RequestCx::anonymous(),
            "s3:ListBucket",
            "b",
            "arn:aws:s3:::b"
        ));
        for (bad, says) in [
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-1"}}}]}"#,
                "aws:PrincipalOrgID",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"ArnLike":{"aws:SourceIp":"x"}}}]}"#,
                "ArnLike",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"ten"}}}]}"#,
                "CIDR",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Extra":1}]}"#,
                "Extra",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","NotAction":"s3:PutObject","Resource":"arn:aws:s3:::b/*"}]}"#,
                "not both",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/${aws:username}/*"}]}"#,
                "variables",
            ),
        ] {
            let e = check_policy(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// Every operation veeps serves maps to the IAM action AWS documents for it.
    #[test]
    fn every_operation_maps_to_its_iam_action() {
        let table = [
            ("GetObject", false, "s3:GetObject"),
            ("GetObject", true, "s3:GetObjectVersion"),
            ("HeadObject", false, "s3:GetObject"),
            ("HeadObject", true, "s3:GetObjectVersion"),
            ("PutObject", false, "s3:PutObject"),
            ("CopyObject", false, "s3:PutObject"),
            ("CreateMultipartUpload", false, "s3:PutObject"),
            ("UploadPart", false, "s3:PutObject"),
            ("CompleteMultipartUpload", false, "s3:PutObject"),
            ("AbortMultipartUpload", false, "s3:AbortMultipartUpload"),
            ("ListParts", false, "s3:ListMultipartUploadParts"),
            ("DeleteObject", false, "s3:DeleteObject"),
            ("DeleteObject", true, "s3:DeleteObjectVersion"),
            ("DeleteObjects", false, "s3:DeleteObject"),
            ("ListObjects", false, "s3:ListBucket"),
            ("ListObjectsV2", false, "s3:ListBucket"),
            ("HeadBucket", false, "s3:ListBucket"),
            ("ListObjectVersions", false, "s3:ListBucketVersions"),
            (
                "ListMultipartUploads",
                false,
                "s3:ListBucketMultipartUploads",
            ),
            ("GetBucketLocation", false, "s3:GetBucketLocation"),
            ("CreateBucket", false, "s3:CreateBucket"),
            ("DeleteBucket", false, "s3:DeleteBucket"),
            ("GetBucketVersioning", false, "s3:GetBucketVersioning"),
            ("PutBucketVersioning", false, "s3:PutBucketVersioning"),
            (
                "GetBucketLifecycleConfiguration",
                false,
                "s3:GetLifecycleConfiguration",
            ),
            (
                "PutBucketLifecycleConfiguration",
                false,
                "s3:PutLifecycleConfiguration",
            ),
            (
                "DeleteBucketLifecycle",
                false,
                "s3:PutLifecycleConfiguration",
            ),
            ("GetBucketWebsite", false, "s3:GetBucketWebsite"),
            ("PutBucketWebsite", false, "s3:PutBucketWebsite"),
            ("DeleteBucketWebsite", false, "s3:DeleteBucketWebsite"),
            (
                "GetBucketEncryption",
                false,
                "s3:GetEncryptionConfiguration",
            ),
        ];
        for (op, v, want) in table {
            assert_eq!(action_of(op, v), Some(want), "{op}");
        }
        // Whatever is not in the table is the root key's alone.
        assert_eq!(action_of("PutBucketPolicy", false), None);
        assert_eq!(action_of("ListBuckets", false), None);
    }
}

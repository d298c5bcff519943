//! The account's identities: users, groups, policies, group memberships and the password
//! policy (declared as resources in any environment; global to the server, like an AWS
//! account), the users' credentials (argon2id passwords, TOTP devices with recovery codes,
//! expiring scoped tokens), and authorisation of a principal's request by the one
//! evaluator.

use crate::password::{self, PasswordPolicy};
use crate::{totp, Context, Decision, Grammar, Policy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use veeps_kms::Kms;
use veeps_state::Store;

const K_USER: &str = "iam/user/";
const K_GROUP: &str = "iam/group/";
const K_POLICY: &str = "iam/policy/";
const K_MEMBERSHIP: &str = "iam/membership/";
const K_PASSWORD_POLICY: &str = "iam/password-policy";
const K_TOKEN: &str = "iam/token/";
const K_ROOT_DISABLED: &str = "iam/root-token-disabled";
const K_KEY_POLICY: &str = "iam/kms-key/";
const K_ROLE: &str = "iam/role/";
const K_SESSION: &str = "iam/session/";
/// The KMS key that seals TOTP secrets.
const KEY_ENV: &str = "iam";

/// What identity policies may say: every veeps service's actions, veeps and S3 ARNs, and
/// the condition keys a request offers.
pub static IDENTITY_POLICIES: Grammar = Grammar {
    actions: &[
        "env:", "compute:", "lb:", "db:", "s3:", "obs:", "logs:", "kms:", "audit:", "iam:",
        "system:", "pki:", "sts:", "ban:", "lambda:",
    ],
    resources: &["arn:veeps:", "arn:aws:s3:::", "arn:aws:iam:::"],
    keys: &[
        "aws:MultiFactorAuthPresent",
        "aws:MultiFactorAuthAge",
        "aws:SourceIp",
        "aws:CurrentTime",
        "aws:EpochTime",
        "aws:username",
        "aws:SecureTransport",
        "aws:PrincipalType",
        "aws:UserAgent",
        "aws:Referer",
        "s3:prefix",
        "s3:delimiter",
        "s3:max-keys",
        "s3:VersionId",
        "s3:signatureversion",
        "s3:authType",
    ],
    principals: false,
};

/// Policies every account has (like AWS managed policies), attachable by name.
pub const MANAGED: &[(&str, &str)] = &[
    (
        "AdministratorAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "ReadOnlyAccess",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["env:Get*","env:List*","compute:Get*","compute:List*","lb:List*","db:Describe*","db:List*","obs:Get*","obs:List*","obs:Query*","logs:Search*","s3:Get*","s3:List*","iam:Get*","iam:List*","pki:Get*","system:Get*"],"Resource":"*"},{"Effect":"Deny","Action":"s3:GetRootCredentials","Resource":"*"}]}"#,
    ),
    (
        "RequireMFA",
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"DenyWithoutMFA","Effect":"Deny","NotAction":["iam:ChangePassword","iam:CreateVirtualMFADevice","iam:EnableMFADevice","iam:GetUser","iam:DeleteToken","sts:GetCallerIdentity"],"Resource":"*","Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}}]}"#,
    ),
    (
        "Billing",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["obs:GetMetrics","obs:ListMetrics","obs:QueryMetrics","system:GetStatus","env:ListEnvironments"],"Resource":"*"}]}"#,
    ),
];

/// The actions a user may always take on their own user (their password, MFA device,
/// tokens), unless a policy denies them: the self-service AWS grants through
/// `allow_users_to_change_password` and the usual "manage your own credentials" policy.
pub const SELF_SERVICE: &[&str] = &[
    "iam:GetUser",
    "iam:ChangePassword",
    "iam:CreateVirtualMFADevice",
    "iam:EnableMFADevice",
    "iam:CreateToken",
    "iam:ListTokens",
    "iam:DeleteToken",
    "sts:GetCallerIdentity",
];

/// Why an identity change or a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    /// The name is taken by another environment's resource.
    #[error("{kind} {name} is managed by environment {env}; IAM is global to the server, so declare it in one environment only")]
    Owned {
        /// `user`, `group`...
        kind: &'static str,
        /// Its name.
        name: String,
        /// The owner.
        env: String,
    },
    /// No such thing.
    #[error("no {kind} named {name}")]
    Missing {
        /// `user`, `group`, `policy`...
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// Refused input, with what to do.
    #[error("{0}")]
    Invalid(String),
    /// Wrong credentials (deliberately vague).
    #[error("the user name, password or MFA code is wrong")]
    BadCredentials,
    /// The user has an MFA device and no code was given.
    #[error("this user has an MFA device: give its current code (--code)")]
    MfaRequired,
    /// The state store failed.
    #[error("the state store failed: {0}")]
    Store(String),
    /// KMS failed.
    #[error("KMS failed: {0}")]
    Kms(String),
}

fn st(e: impl std::fmt::Display) -> IamError {
    IamError::Store(e.to_string())
}

/// A user as recorded: what its resource declares, and its credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// The environment whose configuration declares it.
    pub env: String,
    /// Groups it is in (from its own `groups`; memberships add more).
    pub groups: Vec<String>,
    /// Public SSH keys.
    pub ssh_keys: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Its password's argon2id hash.
    #[serde(default)]
    pub password: Option<String>,
    /// When the password was set (unix seconds).
    #[serde(default)]
    pub password_set: i64,
    /// Hashes of earlier passwords, newest first (for reuse prevention).
    #[serde(default)]
    pub old_passwords: Vec<String>,
    /// Its TOTP device.
    #[serde(default)]
    pub mfa: Option<Mfa>,
}

/// A virtual MFA device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mfa {
    sealed_secret: Vec<u8>,
    /// Enabled (confirmed with two consecutive codes); until then logins ignore it.
    pub enabled: bool,
    /// SHA-256 of each unused recovery code.
    recovery: Vec<String>,
    /// The last step whose code was accepted (a code is good once).
    last_step: u64,
}

/// A group: the policies its members get.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// The environment whose configuration declares it.
    pub env: String,
    /// Attached policies, by name (managed or `iam_policy`).
    pub policies: Vec<String>,
}

/// A customer-managed policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManagedPolicy {
    /// Its name.
    pub name: String,
    /// The environment whose configuration declares it.
    pub env: String,
    /// The JSON document.
    pub document: String,
}

/// A role: policies that temporary credentials get (`iam_role`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Role {
    /// Its name.
    pub name: String,
    /// The environment whose configuration declares it.
    pub env: String,
    /// Attached policies, by name.
    pub policies: Vec<String>,
    /// The longest session, in seconds.
    pub max_session_seconds: i64,
}

/// Temporary credentials of a role (what STS's AssumeRole answers).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// `ASIA...`.
    pub access_key_id: String,
    /// The role.
    pub role: String,
    /// Who asked, for the audit trail.
    pub session_name: String,
    sealed_secret: Vec<u8>,
    token_hash: String,
    /// Unix seconds after which it is refused.
    pub expires: i64,
}

/// Credentials handed out once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TempCredentials {
    /// `ASIA...`.
    pub access_key_id: String,
    /// The secret.
    pub secret_access_key: String,
    /// The session token (`x-amz-security-token`).
    pub session_token: String,
    /// Unix seconds.
    pub expires: i64,
}

/// A named set of users added to a group (`iam_group_membership`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    /// Its name.
    pub name: String,
    /// The environment whose configuration declares it.
    pub env: String,
    /// The group.
    pub group: String,
    /// Its users.
    pub users: Vec<String>,
}

/// An API token of a user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Token {
    /// Its id (the part before the secret).
    pub id: String,
    /// Whose.
    pub user: String,
    /// SHA-256 of the secret, hex.
    hash: String,
    /// Unix seconds after which it is refused.
    pub expires: i64,
    /// When it was issued.
    pub created: i64,
    /// Action patterns it is limited to (empty: whatever the user may do).
    pub scope: Vec<String>,
    /// Issued after an MFA code (a login's session).
    pub mfa: bool,
    /// `session` (from a login) or `api`.
    pub kind: String,
    /// What it is for.
    pub description: String,
}

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (`None`: the root token).
    pub user: Option<String>,
    /// Authenticated with MFA (root counts as such), and when (unix seconds).
    pub mfa_at: Option<i64>,
    /// The client's address.
    pub source: std::net::IpAddr,
    /// The token's scope (empty: none).
    pub scope: Vec<String>,
    /// The token id (`None` for root).
    pub token: Option<String>,
    /// Over TLS.
    pub secure: bool,
}

impl Principal {
    /// Its name for logs and the audit trail.
    pub fn label(&self) -> String {
        match &self.user {
            None => "root".into(),
            Some(u) => format!("user/{u}"),
        }
    }
}

/// A `kms_key`: who administers and who uses an environment's key, its rotation and its
/// scheduled deletion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyPolicy {
    /// The environment whose key it is (and which declares it).
    pub env: String,
    /// The resource address that declares it.
    pub address: String,
    /// What it is for.
    pub description: String,
    /// Groups that administer it.
    pub administrators: Vec<String>,
    /// Groups that encrypt and decrypt with it.
    pub users: Vec<String>,
    /// Rotation period in days (`None`: no automatic rotation).
    pub rotation_days: Option<u32>,
    /// Days from scheduling deletion to destruction.
    pub deletion_window_days: u32,
    /// When it is destroyed, if deletion is scheduled.
    pub pending_deletion: Option<i64>,
    /// When it was declared or last rotated (unix seconds).
    pub last_rotation: i64,
}

/// KMS actions a key's administrators may take; the others (encrypt, decrypt) are its
/// users'.
pub const KEY_ADMIN_ACTIONS: &[&str] = &[
    "kms:DescribeKey",
    "kms:RotateKeyOnDemand",
    "kms:CancelKeyDeletion",
    "kms:ExportKey",
    "kms:ImportKey",
];

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    /// An explicit Deny in the named policy.
    ExplicitDeny(String),
    /// No policy allows it.
    NoAllow,
    /// Outside the token's scope.
    OutsideScope,
    /// The environment's `kms_key` does not list the user's groups for this action.
    KeyPolicy(String),
    /// The key is scheduled for deletion.
    PendingDeletion(String, i64),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::ExplicitDeny(p) => write!(f, "an explicit Deny in policy {p}"),
            Denial::NoAllow => write!(f, "no policy attached to the user or its groups allows it"),
            Denial::OutsideScope => write!(f, "the token's scope does not include the action"),
            Denial::KeyPolicy(env) => write!(
                f,
                "the kms_key of environment {env} does not list any of the user's groups as key users (encrypt, decrypt) or administrators (the rest)"
            ),
            Denial::PendingDeletion(env, at) => write!(
                f,
                "the key of environment {env} is scheduled for deletion at {at} (unix time); `veeps kms cancel-deletion {env}` keeps it"
            ),
        }
    }
}

/// What a login produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// The token (shown once).
    pub token: String,
    /// Its record.
    pub record: Token,
}

/// What enabling an MFA device hands the user (once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaSetup {
    /// The secret, base32.
    pub secret: String,
    /// `otpauth://totp/...` for an authenticator app.
    pub uri: String,
    /// One-time recovery codes.
    pub recovery_codes: Vec<String>,
}

/// Policies per user, rebuilt after any change.
#[derive(Default)]
struct Snapshot {
    policies: HashMap<String, Vec<(String, Arc<Policy>)>>,
}

/// The account's identities.
pub struct Directory {
    store: Arc<Store>,
    kms: Arc<Kms>,
    /// One writer at a time (read-modify-write of records).
    write: Mutex<()>,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    tokens: Mutex<HashMap<String, Token>>,
    root_disabled: RwLock<Option<bool>>,
}

/// Constant-time equality.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Checks an IAM name (users, groups, policies): letters, digits and `+=,.@_-`.
pub fn check_name(kind: &str, n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(format!(
            "\"{n}\" is not a {kind} name (letters, digits and +=,.@_-, up to 64)"
        ));
    }
    Ok(())
}

/// A user's ARN (the form S3 bucket policies name principals by).
pub fn user_arn(name: &str) -> String {
    format!("arn:aws:iam:::user/{name}")
}

impl Directory {
    /// Over the state store and KMS.
    pub fn new(store: Arc<Store>, kms: Arc<Kms>) -> Directory {
        Directory {
            store,
            kms,
            write: Mutex::new(()),
            snapshot: RwLock::new(None),
            tokens: Mutex::new(HashMap::new()),
            root_disabled: RwLock::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, IamError> {
        self.store.kv_get(key).map_err(st)
    }

    fn owned<T>(
        &self,
        kind: &'static str,
        name: &str,
        env: &str,
        existing: Option<&T>,
        owner: impl Fn(&T) -> &str,
    ) -> Result<(), IamError> {
        match existing {
            Some(e) if owner(e) != env => Err(IamError::Owned {
                kind,
                name: name.into(),
                env: owner(e).to_string(),
            }),
            _ => Ok(()),
        }
    }

    // ----- users, groups, policies, memberships (the resources' side) -----

    /// Creates or updates a user's declared attributes; its credentials stay.
    pub fn put_user(
        &self,
        env: &str,
        name: &str,
        groups: &[String],
        ssh_keys: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<User, IamError> {
        check_name("user", name).map_err(IamError::Invalid)?;
        let _g = self.lock();
        let prior: Option<User> = self.get(&format!("{K_USER}{name}"))?;
        self.owned("user", name, env, prior.as_ref(), |u| &u.env)?;
        let mut u = prior.unwrap_or(User {
            name: name.into(),
            env: env.into(),
            groups: vec![],
            ssh_keys: vec![],
            tags: BTreeMap::new(),
            password: None,
            password_set: 0,
            old_passwords: vec![],
            mfa: None,
        });
        u.groups = groups.to_vec();
        u.ssh_keys = ssh_keys.to_vec();
        u.tags = tags.clone();
        self.store
            .kv_put(&format!("{K_USER}{name}"), &u)
            .map_err(st)?;
        self.changed();
        Ok(u)
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<User> {
        self.get(&format!("{K_USER}{name}")).ok().flatten()
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<User>, IamError> {
        Ok(self
            .store
            .kv_scan::<User>(K_USER)
            .map_err(st)?
            .into_iter()
            .map(|(_, u)| u)
            .collect())
    }

    /// Deletes a user (declared by `env`), its tokens with it.
    pub fn delete_user(&self, env: &str, name: &str) -> Result<(), IamError> {
        let _g = self.lock();
        let prior: Option<User> = self.get(&format!("{K_USER}{name}"))?;
        self.owned("user", name, env, prior.as_ref(), |u| &u.env)?;
        for t in self.tokens_of(name)? {
            self.store
                .kv_delete(&format!("{K_TOKEN}{}", t.id))
                .map_err(st)?;
        }
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| t.user != name);
        self.store
            .kv_delete(&format!("{K_USER}{name}"))
            .map_err(st)?;
        self.changed();
        Ok(())
    }

    /// Creates or updates a group.
    pub fn put_group(&self, env: &str, name: &str, policies: &[String]) -> Result<(), IamError> {
        check_name("group", name).map_err(IamError::Invalid)?;
        let _g = self.lock();
        let prior: Option<Group> = self.get(&format!("{K_GROUP}{name}"))?;
        self.owned("group", name, env, prior.as_ref(), |g| &g.env)?;
        self.store
            .kv_put(
                &format!("{K_GROUP}{name}"),
                &Group {
                    name: name.into(),
                    env: env.into(),
                    policies: policies.to_vec(),
                },
            )
            .map_err(st)?;
        self.changed();
        Ok(())
    }

    /// A group.
    pub fn group(&self, name: &str) -> Option<Group> {
        self.get(&format!("{K_GROUP}{name}")).ok().flatten()
    }

    /// Deletes a group.
    pub fn delete_group(&self, env: &str, name: &str) -> Result<(), IamError> {
        self.delete_owned::<Group>(K_GROUP, "group", env, name, |g| &g.env)
    }

    fn delete_owned<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        kind: &'static str,
        env: &str,
        name: &str,
        owner: impl Fn(&T) -> &str,
    ) -> Result<(), IamError> {
        let _g = self.lock();
        let prior: Option<T> = self.get(&format!("{prefix}{name}"))?;
        self.owned(kind, name, env, prior.as_ref(), owner)?;
        self.store
            .kv_delete(&format!("{prefix}{name}"))
            .map_err(st)?;
        self.changed();
        Ok(())
    }

    /// Creates or updates a policy, after checking its document.
    pub fn put_policy(&self, env: &str, name: &str, document: &str) -> Result<(), IamError> {
        check_name("policy", name).map_err(IamError::Invalid)?;
        if MANAGED.iter().any(|(n, _)| *n == name) {
            return Err(IamError::Invalid(format!(
                "{name} is a policy every account has; give yours another name"
            )));
        }
        Policy::parse(document, &IDENTITY_POLICIES).map_err(IamError::Invalid)?;
        let _g = self.lock();
        let prior: Option<ManagedPolicy> = self.get(&format!("{K_POLICY}{name}"))?;
        self.owned("policy", name, env, prior.as_ref(), |p| &p.env)?;
        self.store
            .kv_put(
                &format!("{K_POLICY}{name}"),
                &ManagedPolicy {
                    name: name.into(),
                    env: env.into(),
                    document: document.into(),
                },
            )
            .map_err(st)?;
        self.changed();
        Ok(())
    }

    /// A policy's document (customer-managed or one every account has).
    pub fn policy(&self, name: &str) -> Option<String> {
        let name = policy_name(name);
        MANAGED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.to_string())
            .or_else(|| {
                self.get::<ManagedPolicy>(&format!("{K_POLICY}{name}"))
                    .ok()
                    .flatten()
                    .map(|p| p.document)
            })
    }

    /// Deletes a policy.
    pub fn delete_policy(&self, env: &str, name: &str) -> Result<(), IamError> {
        self.delete_owned::<ManagedPolicy>(K_POLICY, "policy", env, name, |p| &p.env)
    }

    /// Creates or updates a membership.
    pub fn put_membership(
        &self,
        env: &str,
        name: &str,
        group: &str,
        users: &[String],
    ) -> Result<(), IamError> {
        check_name("membership", name).map_err(IamError::Invalid)?;
        let _g = self.lock();
        let prior: Option<Membership> = self.get(&format!("{K_MEMBERSHIP}{name}"))?;
        self.owned("membership", name, env, prior.as_ref(), |m| &m.env)?;
        self.store
            .kv_put(
                &format!("{K_MEMBERSHIP}{name}"),
                &Membership {
                    name: name.into(),
                    env: env.into(),
                    group: group.into(),
                    users: users.to_vec(),
                },
            )
            .map_err(st)?;
        self.changed();
        Ok(())
    }

    /// A membership.
    pub fn membership(&self, name: &str) -> Option<Membership> {
        self.get(&format!("{K_MEMBERSHIP}{name}")).ok().flatten()
    }

    /// Deletes a membership.
    pub fn delete_membership(&self, env: &str, name: &str) -> Result<(), IamError> {
        self.delete_owned::<Membership>(K_MEMBERSHIP, "membership", env, name, |m| &m.env)
    }

    /// The password policy (AWS's default without one).
    pub fn password_policy(&self) -> PasswordPolicy {
        self.get::<(String, PasswordPolicy)>(K_PASSWORD_POLICY)
            .ok()
            .flatten()
            .map(|(_, p)| p)
            .unwrap_or_default()
    }

    /// The password policy as recorded, with the environment that declares it.
    pub fn password_policy_record(&self) -> Option<(String, PasswordPolicy)> {
        self.get(K_PASSWORD_POLICY).ok().flatten()
    }

    /// Sets (or with `None` removes) the password policy.
    pub fn set_password_policy(
        &self,
        env: &str,
        p: Option<&PasswordPolicy>,
    ) -> Result<(), IamError> {
        let _g = self.lock();
        let prior: Option<(String, PasswordPolicy)> = self.get(K_PASSWORD_POLICY)?;
        self.owned(
            "password policy",
            "of the account",
            env,
            prior.as_ref(),
            |p| &p.0,
        )?;
        match p {
            Some(p) => self
                .store
                .kv_put(K_PASSWORD_POLICY, &(env.to_string(), p.clone()))
                .map_err(st),
            None => self.store.kv_delete(K_PASSWORD_POLICY).map_err(st),
        }
    }

    /// The groups `user` is in: its own and its memberships'.
    pub fn groups_of(&self, user: &str) -> Result<BTreeSet<String>, IamError> {
        let mut out: BTreeSet<String> = self
            .user(user)
            .map(|u| u.groups.into_iter().collect())
            .unwrap_or_default();
        for (_, m) in self.store.kv_scan::<Membership>(K_MEMBERSHIP).map_err(st)? {
            if m.users.iter().any(|u| u == user) {
                out.insert(m.group);
            }
        }
        Ok(out)
    }

    fn build(&self) -> Result<Snapshot, IamError> {
        let mut snap = Snapshot::default();
        let groups: HashMap<String, Group> = self
            .store
            .kv_scan::<Group>(K_GROUP)
            .map_err(st)?
            .into_iter()
            .map(|(_, g)| (g.name.clone(), g))
            .collect();
        let mut parsed: HashMap<String, Option<Arc<Policy>>> = HashMap::new();
        let mut attach = |names: &[String], list: &mut Vec<(String, Arc<Policy>)>| {
            for p in names {
                let name = policy_name(p).to_string();
                let pol = parsed
                    .entry(name.clone())
                    .or_insert_with(|| {
                        self.policy(&name)
                            .and_then(|d| Policy::parse(&d, &IDENTITY_POLICIES).ok())
                            .map(Arc::new)
                    })
                    .clone();
                if let Some(pol) = pol {
                    list.push((name, pol));
                }
            }
        };
        for u in self.users()? {
            let mut list = vec![];
            for g in self.groups_of(&u.name)? {
                if let Some(g) = groups.get(&g) {
                    attach(&g.policies, &mut list);
                }
            }
            snap.policies.insert(u.name, list);
        }
        // A role's principal is `role/NAME` (a user name never holds a `/`).
        for (_, r) in self.store.kv_scan::<Role>(K_ROLE).map_err(st)? {
            let mut list = vec![];
            attach(&r.policies, &mut list);
            snap.policies.insert(format!("role/{}", r.name), list);
        }
        Ok(snap)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        if let Some(s) = self
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return s;
        }
        let s = Arc::new(self.build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading IAM policies failed; every user is denied until it works");
            Snapshot::default()
        }));
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        s
    }

    /// The policies that apply to `user` (through its groups), by name.
    pub fn policies_of(&self, user: &str) -> Vec<(String, Arc<Policy>)> {
        self.snapshot()
            .policies
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    // ----- roles and their temporary credentials -----

    /// Creates or updates a role.
    pub fn put_role(&self, r: &Role) -> Result<(), IamError> {
        check_name("role", &r.name).map_err(IamError::Invalid)?;
        let _g = self.lock();
        let prior: Option<Role> = self.get(&format!("{K_ROLE}{}", r.name))?;
        self.owned("role", &r.name, &r.env, prior.as_ref(), |x| &x.env)?;
        self.store
            .kv_put(&format!("{K_ROLE}{}", r.name), r)
            .map_err(st)?;
        self.changed();
        Ok(())
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<Role> {
        self.get(&format!("{K_ROLE}{name}")).ok().flatten()
    }

    /// Deletes a role; its sessions end with it.
    pub fn delete_role(&self, env: &str, name: &str) -> Result<(), IamError> {
        self.delete_owned::<Role>(K_ROLE, "role", env, name, |r| &r.env)?;
        for (_, s) in self.store.kv_scan::<Session>(K_SESSION).map_err(st)? {
            if s.role == name {
                self.store
                    .kv_delete(&format!("{K_SESSION}{}", s.access_key_id))
                    .map_err(st)?;
            }
        }
        Ok(())
    }

    /// Temporary credentials of `role` for `seconds` (15 minutes up to the role's
    /// longest session).
    pub fn assume_role(
        &self,
        role: &str,
        session_name: &str,
        seconds: i64,
    ) -> Result<TempCredentials, IamError> {
        let r = self.role(role).ok_or_else(|| IamError::Missing {
            kind: "role",
            name: role.into(),
        })?;
        if !(900..=r.max_session_seconds).contains(&seconds) {
            return Err(IamError::Invalid(format!(
                "a session of role {role} lasts 900 to {} seconds",
                r.max_session_seconds
            )));
        }
        let id = format!(
            "ASIA{}",
            hex::encode(rand::random::<[u8; 8]>()).to_uppercase()
        );
        let secret = hex::encode(rand::random::<[u8; 20]>());
        let token = hex::encode(rand::random::<[u8; 32]>());
        self.kms.ensure_env_key(KEY_ENV).map_err(kms)?;
        let sealed = self
            .kms
            .encrypt(KEY_ENV, secret.as_bytes(), &format!("session/{id}"))
            .map_err(kms)?;
        let expires = now() + seconds;
        self.store
            .kv_put(
                &format!("{K_SESSION}{id}"),
                &Session {
                    access_key_id: id.clone(),
                    role: role.into(),
                    session_name: session_name.chars().take(64).collect(),
                    sealed_secret: sealed,
                    token_hash: sha256_hex(&token),
                    expires,
                },
            )
            .map_err(st)?;
        Ok(TempCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
            expires,
        })
    }

    /// A session's role and secret, while it lasts.
    pub fn session(&self, access_key_id: &str) -> Option<(Session, String)> {
        if !access_key_id.starts_with("ASIA") || access_key_id.len() > 64 {
            return None;
        }
        let s: Session = self
            .get(&format!("{K_SESSION}{access_key_id}"))
            .ok()
            .flatten()?;
        if s.expires <= now() || self.role(&s.role).is_none() {
            return None;
        }
        let secret = self
            .kms
            .decrypt(
                KEY_ENV,
                &s.sealed_secret,
                &format!("session/{access_key_id}"),
            )
            .ok()?;
        Some((s, String::from_utf8(secret).ok()?))
    }

    /// Whether `token` is the session's token.
    pub fn session_token_ok(s: &Session, token: &str) -> bool {
        same(sha256_hex(token).as_bytes(), s.token_hash.as_bytes())
    }

    // ----- KMS keys -----

    /// `env`'s key policy.
    pub fn key_policy(&self, env: &str) -> Option<KeyPolicy> {
        self.get(&format!("{K_KEY_POLICY}{env}")).ok().flatten()
    }

    /// Declares (or updates) `env`'s key policy; a scheduled deletion is cancelled.
    pub fn put_key_policy(&self, mut k: KeyPolicy) -> Result<KeyPolicy, IamError> {
        let _g = self.lock();
        if let Some(prior) = self.key_policy(&k.env) {
            if prior.address != k.address && prior.pending_deletion.is_none() {
                return Err(IamError::Invalid(format!(
                    "environment {} has a kms_key already ({}); an environment has one key",
                    k.env, prior.address
                )));
            }
            if prior.pending_deletion.is_some() {
                tracing::info!(env = %k.env, "the key's scheduled deletion is cancelled");
            }
            k.last_rotation = prior.last_rotation;
        }
        k.pending_deletion = None;
        self.store
            .kv_put(&format!("{K_KEY_POLICY}{}", k.env), &k)
            .map_err(st)?;
        Ok(k)
    }

    /// Schedules the destruction of `env`'s key after its deletion window.
    pub fn schedule_key_deletion(&self, env: &str, now: i64) -> Result<Option<i64>, IamError> {
        let _g = self.lock();
        let Some(mut k) = self.key_policy(env) else {
            return Ok(None);
        };
        let at = now + k.deletion_window_days as i64 * 86_400;
        k.pending_deletion = Some(at);
        self.store
            .kv_put(&format!("{K_KEY_POLICY}{env}"), &k)
            .map_err(st)?;
        tracing::warn!(env, at, "the environment key is scheduled for deletion");
        Ok(Some(at))
    }

    /// Cancels a scheduled deletion; false if none was scheduled.
    pub fn cancel_key_deletion(&self, env: &str) -> Result<bool, IamError> {
        let _g = self.lock();
        let Some(mut k) = self.key_policy(env) else {
            return Ok(false);
        };
        if k.pending_deletion.take().is_none() {
            return Ok(false);
        }
        self.store
            .kv_put(&format!("{K_KEY_POLICY}{env}"), &k)
            .map_err(st)?;
        Ok(true)
    }

    /// Rotates `env`'s key now.
    pub fn rotate_key(&self, env: &str, now: i64) -> Result<u32, IamError> {
        let v = self.kms.rotate(env).map_err(kms)?;
        let _g = self.lock();
        if let Some(mut k) = self.key_policy(env) {
            k.last_rotation = now;
            self.store
                .kv_put(&format!("{K_KEY_POLICY}{env}"), &k)
                .map_err(st)?;
        }
        Ok(v)
    }

    /// Rotates keys whose period is over, and destroys keys whose deletion window is over
    /// (only once their environment holds no resource: its state is encrypted with it).
    pub fn key_housekeeping(&self, now: i64) -> Result<(), IamError> {
        let keys: Vec<KeyPolicy> = self
            .store
            .kv_scan::<KeyPolicy>(K_KEY_POLICY)
            .map_err(st)?
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        for k in keys {
            match (k.pending_deletion, k.rotation_days) {
                (Some(at), _) if at <= now => {
                    let left = self.store.resources(&k.env).map_err(st)?.len();
                    if left > 0 {
                        tracing::warn!(env = %k.env, resources = left, "the key's deletion waits: its environment still holds resources encrypted with it");
                        continue;
                    }
                    self.kms.destroy(&k.env).map_err(kms)?;
                    let _g = self.lock();
                    self.store
                        .kv_delete(&format!("{K_KEY_POLICY}{}", k.env))
                        .map_err(st)?;
                }
                (None, Some(days)) if now - k.last_rotation >= days as i64 * 86_400 => {
                    self.rotate_key(&k.env, now)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    // ----- authorisation -----

    /// Whether `p` may do `action` on `resource`: root may do anything; a user what its
    /// groups' policies allow (an explicit Deny wins; its own credentials are self-service),
    /// within its token's scope.
    pub fn authorize(&self, p: &Principal, action: &str, resource: &str) -> Result<(), Denial> {
        // A key's own policy and state come on top of IAM, for root too (as AWS's key
        // states do).
        let key = key_env(action, resource).and_then(|env| self.key_policy(env));
        if let Some(k) = &key {
            if let Some(at) = k.pending_deletion {
                if !["kms:CancelKeyDeletion", "kms:DescribeKey"]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(action))
                {
                    return Err(Denial::PendingDeletion(k.env.clone(), at));
                }
            }
        }
        let Some(user) = &p.user else { return Ok(()) };
        self.authorize_user(p, user, action, resource)?;
        // Then the key's own policy: its users encrypt and decrypt, its administrators
        // do the rest.
        if let Some(k) = &key {
            let admin = KEY_ADMIN_ACTIONS
                .iter()
                .any(|a| a.eq_ignore_ascii_case(action));
            let listed = if admin { &k.administrators } else { &k.users };
            let groups = self.groups_of(user).unwrap_or_default();
            if !listed.iter().any(|g| groups.contains(g)) {
                return Err(Denial::KeyPolicy(k.env.clone()));
            }
        }
        Ok(())
    }

    /// IAM's answer for `user`: its token's scope, its groups' policies, self-service.
    fn authorize_user(
        &self,
        p: &Principal,
        user: &str,
        action: &str,
        resource: &str,
    ) -> Result<(), Denial> {
        if !p.scope.is_empty() && !p.scope.iter().any(|s| crate::glob(s, action, true)) {
            return Err(Denial::OutsideScope);
        }
        let cx = ApiCx { p };
        let mut allowed = false;
        for (name, pol) in self.policies_of(user) {
            match pol.decide(&cx, action, resource) {
                Decision::Deny => return Err(Denial::ExplicitDeny(name)),
                Decision::Allow => allowed = true,
                Decision::NotApplicable => {}
            }
        }
        let own = format!("arn:veeps:iam::user/{user}");
        if allowed
            || (resource == own && SELF_SERVICE.iter().any(|a| a.eq_ignore_ascii_case(action)))
        {
            Ok(())
        } else {
            Err(Denial::NoAllow)
        }
    }

    // ----- credentials -----

    /// Sets `user`'s password after checking it against the policy and the last ones.
    pub fn set_password(&self, user: &str, pw: &str) -> Result<(), IamError> {
        let policy = self.password_policy();
        let missing = policy.check(pw);
        if !missing.is_empty() {
            return Err(IamError::Invalid(format!(
                "the password policy needs {}",
                missing.join(", ")
            )));
        }
        let _g = self.lock();
        let mut u = self.user(user).ok_or_else(|| IamError::Missing {
            kind: "user",
            name: user.into(),
        })?;
        let keep = policy.password_reuse_prevention as usize;
        if keep > 0
            && u.password
                .iter()
                .chain(u.old_passwords.iter())
                .take(keep)
                .any(|h| password::verify(pw, h))
        {
            return Err(IamError::Invalid(format!(
                "the password policy refuses any of the last {keep} passwords; choose a new one"
            )));
        }
        if let Some(old) = u.password.take() {
            u.old_passwords.insert(0, old);
            u.old_passwords.truncate(24);
        }
        u.password = Some(password::hash(pw));
        u.password_set = now();
        self.store
            .kv_put(&format!("{K_USER}{user}"), &u)
            .map_err(st)
    }

    /// Starts an MFA device for `user`: its secret and recovery codes, shown once; it
    /// counts once [`Directory::enable_mfa`] confirms two consecutive codes.
    pub fn create_mfa(&self, user: &str) -> Result<MfaSetup, IamError> {
        let _g = self.lock();
        let mut u = self.user(user).ok_or_else(|| IamError::Missing {
            kind: "user",
            name: user.into(),
        })?;
        if u.mfa.as_ref().is_some_and(|m| m.enabled) {
            return Err(IamError::Invalid(format!(
                "{user} has an MFA device already; remove it first (veeps iam mfa remove {user})"
            )));
        }
        let secret: [u8; 20] = rand::random();
        self.kms.ensure_env_key(KEY_ENV).map_err(kms)?;
        let sealed = self
            .kms
            .encrypt(KEY_ENV, &secret, &format!("mfa/{user}"))
            .map_err(kms)?;
        let codes: Vec<String> = (0..10)
            .map(|_| {
                let b: [u8; 5] = rand::random();
                let s = hex::encode(b);
                format!("{}-{}", &s[..5], &s[5..])
            })
            .collect();
        u.mfa = Some(Mfa {
            sealed_secret: sealed,
            enabled: false,
            recovery: codes.iter().map(|c| sha256_hex(c)).collect(),
            last_step: 0,
        });
        self.store
            .kv_put(&format!("{K_USER}{user}"), &u)
            .map_err(st)?;
        let b32 = totp::base32(&secret);
        Ok(MfaSetup {
            uri: format!("otpauth://totp/veeps:{user}?secret={b32}&issuer=veeps&algorithm=SHA1&digits=6&period=30"),
            secret: b32,
            recovery_codes: codes,
        })
    }

    fn mfa_secret(&self, user: &str, m: &Mfa) -> Result<Vec<u8>, IamError> {
        self.kms
            .decrypt(KEY_ENV, &m.sealed_secret, &format!("mfa/{user}"))
            .map_err(kms)
    }

    /// Enables `user`'s new MFA device with two consecutive codes (as AWS asks).
    pub fn enable_mfa(&self, user: &str, code1: &str, code2: &str) -> Result<(), IamError> {
        let _g = self.lock();
        let mut u = self.user(user).ok_or_else(|| IamError::Missing {
            kind: "user",
            name: user.into(),
        })?;
        let Some(m) = u.mfa.as_mut() else {
            return Err(IamError::Invalid(format!(
                "{user} has no MFA device to enable; create one first (veeps iam mfa create {user})"
            )));
        };
        let secret = self.mfa_secret(user, m)?;
        let t = now() as u64;
        // Two consecutive codes, the later one current (or a step either side).
        let s2 = totp::verify(&secret, code2, t, 0).ok_or(IamError::BadCredentials)?;
        let s1 = s2.checked_sub(1).ok_or(IamError::BadCredentials)?;
        if !same(
            totp::code_at(&secret, s1 * totp::STEP).as_bytes(),
            code1.trim().as_bytes(),
        ) {
            return Err(IamError::Invalid(
                "the two codes must be consecutive: the one shown, then the next".into(),
            ));
        }
        m.enabled = true;
        m.last_step = s2;
        self.store
            .kv_put(&format!("{K_USER}{user}"), &u)
            .map_err(st)
    }

    /// Removes `user`'s MFA device.
    pub fn remove_mfa(&self, user: &str) -> Result<(), IamError> {
        let _g = self.lock();
        let mut u = self.user(user).ok_or_else(|| IamError::Missing {
            kind: "user",
            name: user.into(),
        })?;
        u.mfa = None;
        self.store
            .kv_put(&format!("{K_USER}{user}"), &u)
            .map_err(st)
    }

    /// Checks a password and (when the user has an MFA device) a TOTP or recovery code;
    /// returns a session token good for `ttl` seconds (at most 12 hours).
    pub fn login(
        &self,
        user: &str,
        pw: &str,
        code: Option<&str>,
        ttl: i64,
    ) -> Result<Issued, IamError> {
        let u = self.user(user);
        let hash = u.as_ref().and_then(|u| u.password.clone());
        // A missing user costs the same hash as a wrong password.
        let ok = match &hash {
            Some(h) => password::verify(pw, h),
            None => {
                password::verify(pw, DUMMY_HASH);
                false
            }
        };
        let Some(u) = u.filter(|_| ok) else {
            return Err(IamError::BadCredentials);
        };
        let mut mfa = false;
        if u.mfa.as_ref().is_some_and(|m| m.enabled) {
            let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
                return Err(IamError::MfaRequired);
            };
            let _g = self.lock();
            // Read again under the lock: the last step and the recovery codes change.
            let mut u = self.user(user).ok_or(IamError::BadCredentials)?;
            let m = u.mfa.as_mut().ok_or(IamError::BadCredentials)?;
            let secret = self.mfa_secret(user, m)?;
            if let Some(step) = totp::verify(&secret, code, now() as u64, m.last_step) {
                m.last_step = step;
            } else {
                let h = sha256_hex(code);
                let i = m
                    .recovery
                    .iter()
                    .position(|r| same(r.as_bytes(), h.as_bytes()))
                    .ok_or(IamError::BadCredentials)?;
                m.recovery.remove(i);
                tracing::warn!(user, left = m.recovery.len(), "a recovery code was used");
            }
            self.store
                .kv_put(&format!("{K_USER}{user}"), &u)
                .map_err(st)?;
            mfa = true;
        }
        let policy = self.password_policy();
        if policy.max_password_age > 0
            && now() - u.password_set > policy.max_password_age as i64 * 86_400
        {
            return Err(IamError::Invalid(format!(
                "{user}'s password is older than {} days; an administrator must set a new one (veeps iam password {user})",
                policy.max_password_age
            )));
        }
        self.issue(
            user,
            ttl.clamp(60, 12 * 3600),
            vec![],
            mfa,
            "session",
            "login",
        )
    }

    /// Issues a token for `user`.
    pub fn issue(
        &self,
        user: &str,
        ttl: i64,
        scope: Vec<String>,
        mfa: bool,
        kind: &str,
        description: &str,
    ) -> Result<Issued, IamError> {
        if self.user(user).is_none() {
            return Err(IamError::Missing {
                kind: "user",
                name: user.into(),
            });
        }
        for s in &scope {
            if !(s == "*"
                || IDENTITY_POLICIES
                    .actions
                    .iter()
                    .any(|p| s.to_ascii_lowercase().starts_with(p)))
            {
                return Err(IamError::Invalid(format!(
                    "scope \"{s}\" is not an action pattern (like env:Get* or db:*)"
                )));
            }
        }
        let id = hex::encode(rand::random::<[u8; 8]>());
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let t = now();
        let record = Token {
            id: id.clone(),
            user: user.into(),
            hash: sha256_hex(&secret),
            expires: t + ttl.max(60),
            created: t,
            scope,
            mfa,
            kind: kind.into(),
            description: description.chars().take(200).collect(),
        };
        self.store
            .kv_put(&format!("{K_TOKEN}{id}"), &record)
            .map_err(st)?;
        Ok(Issued {
            token: format!("vt_{id}_{secret}"),
            record,
        })
    }

    /// The user a token belongs to, if it is good now.
    pub fn authenticate(&self, token: &str) -> Option<Token> {
        let rest = token.strip_prefix("vt_")?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        let t = match cached {
            Some(t) => t,
            None => {
                let t: Token = self.get(&format!("{K_TOKEN}{id}")).ok().flatten()?;
                let mut c = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                if c.len() > 10_000 {
                    c.clear();
                }
                c.insert(id.to_string(), t.clone());
                t
            }
        };
        if !same(sha256_hex(secret).as_bytes(), t.hash.as_bytes()) || t.expires <= now() {
            return None;
        }
        Some(t)
    }

    /// `user`'s tokens.
    pub fn tokens_of(&self, user: &str) -> Result<Vec<Token>, IamError> {
        Ok(self
            .store
            .kv_scan::<Token>(K_TOKEN)
            .map_err(st)?
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| t.user == user)
            .collect())
    }

    /// A token by id.
    pub fn token(&self, id: &str) -> Option<Token> {
        self.get(&format!("{K_TOKEN}{id}")).ok().flatten()
    }

    /// Revokes a token.
    pub fn revoke(&self, id: &str) -> Result<(), IamError> {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.store.kv_delete(&format!("{K_TOKEN}{id}")).map_err(st)
    }

    /// Removes expired tokens and role sessions; returns how many.
    pub fn sweep_tokens(&self) -> Result<usize, IamError> {
        let t = now();
        let mut n = 0;
        for (_, s) in self.store.kv_scan::<Session>(K_SESSION).map_err(st)? {
            if s.expires <= t {
                self.store
                    .kv_delete(&format!("{K_SESSION}{}", s.access_key_id))
                    .map_err(st)?;
                n += 1;
            }
        }
        for (_, tok) in self.store.kv_scan::<Token>(K_TOKEN).map_err(st)? {
            if tok.expires <= t {
                self.revoke(&tok.id)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether the root token is refused.
    pub fn root_disabled(&self) -> bool {
        if let Some(d) = *self.root_disabled.read().unwrap_or_else(|p| p.into_inner()) {
            return d;
        }
        let d = self
            .get::<bool>(K_ROOT_DISABLED)
            .ok()
            .flatten()
            .unwrap_or(false);
        *self
            .root_disabled
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(d);
        d
    }

    /// Disables (or enables again) the root token. Disabling needs a user who may still
    /// administer IAM and who has a password, so that the account is not locked out.
    pub fn set_root_disabled(&self, disabled: bool) -> Result<(), IamError> {
        if disabled {
            let admin = self.users()?.into_iter().any(|u| {
                u.password.is_some()
                    && self
                        .authorize(
                            &Principal {
                                user: Some(u.name.clone()),
                                mfa_at: Some(now()),
                                source: std::net::Ipv4Addr::LOCALHOST.into(),
                                scope: vec![],
                                token: None,
                                secure: true,
                            },
                            "iam:EnableRootToken",
                            "arn:veeps:iam::root",
                        )
                        .is_ok()
            });
            if !admin {
                return Err(IamError::Invalid(
                    "no user with a password may run iam:EnableRootToken; give one the AdministratorAccess policy and a password before disabling the root token".into(),
                ));
            }
        }
        self.store.kv_put(K_ROOT_DISABLED, &disabled).map_err(st)?;
        *self
            .root_disabled
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(disabled);
        Ok(())
    }
}

impl veeps_resource::roles::Roles for Directory {
    fn exists(&self, role: &str) -> bool {
        self.role(role).is_some()
    }
    fn issue(
        &self,
        role: &str,
        session: &str,
    ) -> Result<veeps_resource::roles::RoleCredentials, String> {
        let longest = self
            .role(role)
            .map(|r| r.max_session_seconds)
            .ok_or_else(|| format!("no role named {role}"))?;
        let c = self
            .assume_role(role, session, longest.min(3600))
            .map_err(|e| e.to_string())?;
        Ok(veeps_resource::roles::RoleCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
            expires: c.expires,
        })
    }
}

/// The environment a KMS action acts on (`arn:veeps:kms:ENV:key/...`).
fn key_env<'a>(action: &str, resource: &'a str) -> Option<&'a str> {
    if !action.to_ascii_lowercase().starts_with("kms:") {
        return None;
    }
    let rest = resource.strip_prefix("arn:veeps:kms:")?;
    let (env, what) = rest.split_once(':')?;
    what.starts_with("key/").then_some(env)
}

fn kms(e: impl std::fmt::Display) -> IamError {
    IamError::Kms(e.to_string())
}

/// A policy's name from a name or an ARN (`arn:veeps:iam::policy/NAME`).
pub fn policy_name(p: &str) -> &str {
    p.rsplit_once(":policy/").map(|(_, n)| n).unwrap_or(p)
}

/// Hashed once so that a login for a missing user costs what a wrong password costs.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4QkV6X2l3m0hZKpQhS1cJ1bG9L0pP1mUj0n5Pz3J6Yc";

/// What an API request offers to conditions.
struct ApiCx<'a> {
    p: &'a Principal,
}

impl Context for ApiCx<'_> {
    fn principal(&self) -> Option<&str> {
        self.p.user.as_deref()
    }
    fn key(&self, key: &str) -> Option<String> {
        let t = now();
        match key {
            "aws:multifactorauthpresent" => Some(self.p.mfa_at.is_some().to_string()),
            "aws:multifactorauthage" => self.p.mfa_at.map(|a| (t - a).max(0).to_string()),
            "aws:sourceip" => Some(self.p.source.to_string()),
            "aws:currenttime" => time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|x| {
                    x.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
            "aws:epochtime" => Some(t.to_string()),
            "aws:username" => self.p.user.clone(),
            "aws:securetransport" => Some(self.p.secure.to_string()),
            "aws:principaltype" => Some(
                if self.p.user.is_some() {
                    "User"
                } else {
                    "Account"
                }
                .into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Directory) {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(Kms::open(d.path(), store.clone()).unwrap());
        (d, Directory::new(store, kms))
    }

    fn who(user: &str, mfa: bool, ip: &str) -> Principal {
        Principal {
            user: Some(user.into()),
            mfa_at: mfa.then(now),
            source: ip.parse().unwrap(),
            scope: vec![],
            token: None,
            secure: false,
        }
    }

    const DEV: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["env:*","db:Describe*"],"Resource":["arn:veeps:env:stage:*","arn:veeps:db:stage:*"]},
        {"Effect":"Allow","NotAction":["iam:*","system:*","kms:*","env:*","db:*"],"Resource":"*"},
        {"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}},
        {"Effect":"Allow","Action":"env:Apply","Resource":"arn:veeps:env:prod:*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"},"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}
    ]}"#;
    const NO_DELETE: &str =
        r#"{"Statement":[{"Effect":"Deny","Action":"db:Delete*","Resource":"*"}]}"#;

    fn seed(d: &Directory) {
        d.put_policy("iam", "dev", DEV).unwrap();
        d.put_policy("iam", "no-delete", NO_DELETE).unwrap();
        d.put_group("iam", "developers", &["dev".into(), "no-delete".into()])
            .unwrap();
        d.put_group(
            "iam",
            "full-access",
            &[
                "AdministratorAccess".into(),
                "arn:veeps:iam::policy/no-delete".into(),
            ],
        )
        .unwrap();
        d.put_group("iam", "read-only", &["ReadOnlyAccess".into()])
            .unwrap();
        d.put_user("iam", "dana", &["developers".into()], &[], &BTreeMap::new())
            .unwrap();
        d.put_user("iam", "ada", &[], &[], &BTreeMap::new())
            .unwrap();
        d.put_user("iam", "rob", &["read-only".into()], &[], &BTreeMap::new())
            .unwrap();
        d.put_membership("iam", "admins", "full-access", &["ada".into()])
            .unwrap();
    }

    #[test]
    fn policy_evaluation_follows_aws_rules() {
        let (_t, d) = dir();
        seed(&d);
        let root = Principal {
            user: None,
            ..who("x", false, "127.0.0.1")
        };
        // (principal, action, resource, expected)
        let cases: Vec<(Principal, &str, &str, Result<(), Denial>)> = vec![
            (
                root.clone(),
                "system:Shutdown",
                "arn:veeps:system::server",
                Ok(()),
            ),
            // Allow by action wildcard and resource.
            (
                who("dana", false, "1.2.3.4"),
                "env:Apply",
                "arn:veeps:env:stage:environment",
                Ok(()),
            ),
            (
                who("dana", false, "1.2.3.4"),
                "env:Apply",
                "arn:veeps:env:prod:environment",
                Err(Denial::NoAllow),
            ),
            // NotAction: everything but the listed services.
            (
                who("dana", false, "1.2.3.4"),
                "obs:QueryMetrics",
                "arn:veeps:obs:prod:metric/*",
                Ok(()),
            ),
            (
                who("dana", false, "1.2.3.4"),
                "iam:ListUsers",
                "*",
                Err(Denial::NoAllow),
            ),
            // An explicit Deny wins over an Allow, named.
            (
                who("dana", false, "1.2.3.4"),
                "db:DeleteCluster",
                "arn:veeps:db:stage:cluster/main",
                Err(Denial::ExplicitDeny("no-delete".into())),
            ),
            (
                who("ada", false, "1.2.3.4"),
                "db:DeleteCluster",
                "arn:veeps:db:prod:cluster/main",
                Err(Denial::ExplicitDeny("no-delete".into())),
            ),
            (
                who("ada", false, "1.2.3.4"),
                "system:Shutdown",
                "arn:veeps:system::server",
                Ok(()),
            ),
            // MFA required: refused without, allowed with.
            (
                who("dana", false, "1.2.3.4"),
                "kms:Decrypt",
                "arn:veeps:kms:prod:key/default",
                Err(Denial::NoAllow),
            ),
            (
                who("dana", true, "1.2.3.4"),
                "kms:Decrypt",
                "arn:veeps:kms:prod:key/default",
                Ok(()),
            ),
            // Two conditions: both must hold.
            (
                who("dana", true, "1.2.3.4"),
                "env:Apply",
                "arn:veeps:env:prod:environment",
                Err(Denial::NoAllow),
            ),
            (
                who("dana", true, "10.1.2.3"),
                "env:Apply",
                "arn:veeps:env:prod:environment",
                Ok(()),
            ),
            // Read-only: reads yes, writes no, the root credentials never.
            (
                who("rob", false, "1.2.3.4"),
                "env:GetState",
                "arn:veeps:env:prod:environment",
                Ok(()),
            ),
            (
                who("rob", false, "1.2.3.4"),
                "env:Apply",
                "arn:veeps:env:prod:environment",
                Err(Denial::NoAllow),
            ),
            (
                who("rob", false, "1.2.3.4"),
                "s3:GetRootCredentials",
                "arn:veeps:s3::credentials",
                Err(Denial::ExplicitDeny("ReadOnlyAccess".into())),
            ),
            // Self-service on one's own user only.
            (
                who("rob", false, "1.2.3.4"),
                "iam:ChangePassword",
                "arn:veeps:iam::user/rob",
                Ok(()),
            ),
            (
                who("rob", false, "1.2.3.4"),
                "iam:ChangePassword",
                "arn:veeps:iam::user/ada",
                Err(Denial::NoAllow),
            ),
            (
                who("rob", false, "1.2.3.4"),
                "iam:UpdateLoginProfile",
                "arn:veeps:iam::user/rob",
                Err(Denial::NoAllow),
            ),
            // A user in no group may do nothing else.
            (
                who("nobody", true, "10.0.0.1"),
                "env:GetState",
                "arn:veeps:env:prod:environment",
                Err(Denial::NoAllow),
            ),
        ];
        for (i, (p, action, resource, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                d.authorize(&p, action, resource),
                want,
                "case {i}: {:?} {action} {resource}",
                p.user
            );
        }
        // A token's scope narrows what its user may do.
        let mut scoped = who("ada", false, "1.2.3.4");
        scoped.scope = vec!["env:Get*".into()];
        assert_eq!(
            d.authorize(&scoped, "env:GetState", "arn:veeps:env:prod:environment"),
            Ok(())
        );
        assert_eq!(
            d.authorize(&scoped, "env:Apply", "arn:veeps:env:prod:environment"),
            Err(Denial::OutsideScope)
        );
    }

    #[test]
    fn require_mfa_leaves_only_setting_up_credentials_without_mfa() {
        let (_t, d) = dir();
        d.put_group(
            "iam",
            "admins",
            &["AdministratorAccess".into(), "RequireMFA".into()],
        )
        .unwrap();
        d.put_user("iam", "ada", &["admins".into()], &[], &BTreeMap::new())
            .unwrap();
        let env = "arn:veeps:env:prod:environment";
        let own = "arn:veeps:iam::user/ada";
        let without = who("ada", false, "1.2.3.4");
        assert_eq!(
            d.authorize(&without, "env:GetState", env),
            Err(Denial::ExplicitDeny("RequireMFA".into()))
        );
        assert_eq!(d.authorize(&without, "iam:EnableMFADevice", own), Ok(()));
        assert_eq!(d.authorize(&without, "iam:ChangePassword", own), Ok(()));
        assert_eq!(
            d.authorize(&who("ada", true, "1.2.3.4"), "env:GetState", env),
            Ok(())
        );
    }

    fn key(env: &str, admins: &[&str], users: &[&str]) -> KeyPolicy {
        KeyPolicy {
            env: env.into(),
            address: "kms_key.k".into(),
            description: String::new(),
            administrators: admins.iter().map(|s| s.to_string()).collect(),
            users: users.iter().map(|s| s.to_string()).collect(),
            rotation_days: Some(90),
            deletion_window_days: 7,
            pending_deletion: None,
            last_rotation: 1_000,
        }
    }

    #[test]
    fn a_kms_key_policy_narrows_who_uses_and_administers_the_key() {
        let (_t, d) = dir();
        seed(&d);
        d.put_key_policy(key("prod", &["full-access"], &["developers"]))
            .unwrap();
        let arn = "arn:veeps:kms:prod:key/default";
        let dana = who("dana", true, "10.0.0.1"); // developers: kms:Decrypt with MFA by IAM
        let ada = who("ada", false, "1.2.3.4"); // full-access: everything by IAM
        assert_eq!(d.authorize(&dana, "kms:Decrypt", arn), Ok(()));
        assert_eq!(
            d.authorize(&dana, "kms:ExportKey", arn),
            Err(Denial::NoAllow)
        );
        assert_eq!(
            d.authorize(&ada, "kms:Decrypt", arn),
            Err(Denial::KeyPolicy("prod".into())),
            "administrators do not use the key unless they are its users"
        );
        assert_eq!(d.authorize(&ada, "kms:RotateKeyOnDemand", arn), Ok(()));
        // Another environment's key has no policy: IAM alone decides.
        assert_eq!(
            d.authorize(&ada, "kms:Decrypt", "arn:veeps:kms:stage:key/default"),
            Ok(())
        );
        // A second kms_key in the same environment is refused.
        let mut other = key("prod", &[], &[]);
        other.address = "kms_key.other".into();
        assert!(d
            .put_key_policy(other)
            .unwrap_err()
            .to_string()
            .contains("has a kms_key already (kms_key.k)"));
        // Scheduled for deletion: nobody, root included, uses it; cancelling restores it.
        let at = d.schedule_key_deletion("prod", 5_000).unwrap().unwrap();
        assert_eq!(at, 5_000 + 7 * 86_400);
        let root = Principal {
            user: None,
            ..ada.clone()
        };
        assert_eq!(
            d.authorize(&root, "kms:Encrypt", arn),
            Err(Denial::PendingDeletion("prod".into(), at))
        );
        assert_eq!(d.authorize(&root, "kms:CancelKeyDeletion", arn), Ok(()));
        assert!(d.cancel_key_deletion("prod").unwrap());
        assert_eq!(d.authorize(&root, "kms:Encrypt", arn), Ok(()));
    }

    #[test]
    fn keys_rotate_on_time_and_are_destroyed_after_their_window_once_unused() {
        let (_t, d) = dir();
        seed(&d);
        let secret = d.kms.encrypt_value("prod", "s3cret").unwrap();
        d.put_key_policy(key("prod", &[], &[])).unwrap();
        let last = d.key_policy("prod").unwrap().last_rotation;
        d.key_housekeeping(last + 89 * 86_400).unwrap();
        assert_eq!(d.kms.versions("prod").unwrap().current, 0);
        d.key_housekeeping(last + 90 * 86_400).unwrap();
        assert_eq!(d.kms.versions("prod").unwrap().current, 1);
        assert_eq!(d.kms.decrypt_value("prod", &secret).unwrap(), "s3cret");
        // Deletion: after the window, and only with no resource left in the environment.
        let at = d.schedule_key_deletion("prod", last).unwrap().unwrap();
        let record = veeps_state::ResourceRecord {
            address: "random_id.x".into(),
            type_name: "random_id".into(),
            attrs: serde_json::json!({}),
            dependencies: vec![],
            status: veeps_state::ResourceStatus::Ready,
            create_before_destroy: false,
            schema_version: 1,
            updated_at: String::new(),
            identity: None,
        };
        d.store.put_resource("prod", &record).unwrap();
        d.key_housekeeping(at + 1).unwrap();
        assert!(
            d.key_policy("prod").is_some(),
            "it waits for the environment to empty"
        );
        assert_eq!(d.kms.decrypt_value("prod", &secret).unwrap(), "s3cret");
        d.store.delete_resource("prod", "random_id.x").unwrap();
        d.key_housekeeping(at + 1).unwrap();
        assert!(d.key_policy("prod").is_none());
        assert!(d.kms.decrypt_value("prod", &secret).is_err(), "destroyed");
    }

    #[test]
    fn changes_apply_to_the_next_decision() {
        let (_t, d) = dir();
        seed(&d);
        let rob = who("rob", false, "1.2.3.4");
        assert!(d
            .authorize(&rob, "env:Apply", "arn:veeps:env:prod:environment")
            .is_err());
        d.put_membership(
            "iam",
            "admins",
            "full-access",
            &["ada".into(), "rob".into()],
        )
        .unwrap();
        assert!(d
            .authorize(&rob, "env:Apply", "arn:veeps:env:prod:environment")
            .is_ok());
        d.delete_membership("iam", "admins").unwrap();
        assert!(d
            .authorize(&rob, "env:Apply", "arn:veeps:env:prod:environment")
            .is_err());
    }

    #[test]
    fn names_belong_to_one_environment() {
        let (_t, d) = dir();
        d.put_user("prod", "ada", &[], &[], &BTreeMap::new())
            .unwrap();
        let e = d
            .put_user("stage", "ada", &[], &[], &BTreeMap::new())
            .unwrap_err();
        assert_eq!(e.to_string(), "user ada is managed by environment prod; IAM is global to the server, so declare it in one environment only");
        assert!(d.delete_user("stage", "ada").is_err());
        assert!(d.user("ada").is_some());
        assert!(d.put_policy("prod", "AdministratorAccess", DEV).is_err());
        let bad = d.put_policy(
            "prod",
            "p",
            r#"{"Statement":[{"Effect":"Allow","Action":"frob:Do","Resource":"*"}]}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("action \"frob:Do\""));
    }

    #[test]
    fn passwords_follow_the_policy_and_are_not_reused() {
        let (_t, d) = dir();
        d.put_user("iam", "ada", &[], &[], &BTreeMap::new())
            .unwrap();
        let reference = PasswordPolicy {
            minimum_password_length: 16,
            require_uppercase_characters: true,
            require_lowercase_characters: true,
            require_numbers: true,
            require_symbols: true,
            password_reuse_prevention: 2,
            ..Default::default()
        };
        d.set_password_policy("iam", Some(&reference)).unwrap();
        let e = d.set_password("ada", "short").unwrap_err().to_string();
        assert!(
            e.starts_with("the password policy needs at least 16 characters"),
            "{e}"
        );
        let pws = [
            "Correct-Horse-42-Battery",
            "Second-Horse-43-Battery",
            "Third-Horse-44-Battery",
        ];
        d.set_password("ada", pws[0]).unwrap();
        d.set_password("ada", pws[1]).unwrap();
        assert!(d
            .set_password("ada", pws[0])
            .unwrap_err()
            .to_string()
            .contains("last 2 passwords"));
        d.set_password("ada", pws[2]).unwrap();
        // Two back is allowed again with a reuse window of 2.
        d.set_password("ada", pws[0]).unwrap();
        assert!(d.login("ada", pws[0], None, 3600).is_ok());
        assert!(matches!(
            d.login("ada", pws[2], None, 3600),
            Err(IamError::BadCredentials)
        ));
        assert!(matches!(
            d.login("nobody", pws[0], None, 3600),
            Err(IamError::BadCredentials)
        ));
        assert!(!password::verify("x", DUMMY_HASH) && dummy_hash_parses());
    }

    fn dummy_hash_parses() -> bool {
        argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok()
    }

    #[test]
    fn totp_devices_gate_logins_and_recovery_codes_work_once() {
        let (_t, d) = dir();
        d.put_user("iam", "ada", &[], &[], &BTreeMap::new())
            .unwrap();
        d.set_password("ada", "Correct-Horse-42").unwrap();
        let setup = d.create_mfa("ada").unwrap();
        let secret = totp::unbase32(&setup.secret).unwrap();
        assert!(setup.uri.starts_with("otpauth://totp/veeps:ada?secret="));
        // Not enabled yet: a password alone logs in.
        assert!(
            !d.login("ada", "Correct-Horse-42", None, 600)
                .unwrap()
                .record
                .mfa
        );
        let t = now() as u64;
        let (c1, c2) = (
            totp::code_at(&secret, t - totp::STEP),
            totp::code_at(&secret, t),
        );
        assert!(d.enable_mfa("ada", &c2, &c1).is_err());
        d.enable_mfa("ada", &c1, &c2).unwrap();
        assert!(matches!(
            d.login("ada", "Correct-Horse-42", None, 600),
            Err(IamError::MfaRequired)
        ));
        // The code used to enable is spent; the next step's is good.
        assert!(matches!(
            d.login("ada", "Correct-Horse-42", Some(&c2), 600),
            Err(IamError::BadCredentials)
        ));
        let next = totp::code_at(&secret, t + totp::STEP);
        let s = d
            .login("ada", "Correct-Horse-42", Some(&next), 600)
            .unwrap();
        assert!(s.record.mfa);
        assert!(matches!(
            d.login("ada", "Correct-Horse-42", Some(&next), 600),
            Err(IamError::BadCredentials)
        ));
        let rc = &setup.recovery_codes[3];
        assert!(
            d.login("ada", "Correct-Horse-42", Some(rc), 600)
                .unwrap()
                .record
                .mfa
        );
        assert!(matches!(
            d.login("ada", "Correct-Horse-42", Some(rc), 600),
            Err(IamError::BadCredentials)
        ));
        // A right code with a wrong password is still refused.
        assert!(matches!(
            d.login(
                "ada",
                "wrong-password-1",
                Some(&setup.recovery_codes[0]),
                600
            ),
            Err(IamError::BadCredentials)
        ));
    }

    #[test]
    fn tokens_authenticate_until_revoked_or_expired() {
        let (_t, d) = dir();
        d.put_user("iam", "ada", &[], &[], &BTreeMap::new())
            .unwrap();
        let i = d
            .issue("ada", 600, vec!["env:Get*".into()], false, "api", "ci")
            .unwrap();
        let t = d.authenticate(&i.token).unwrap();
        assert_eq!(
            (t.user.as_str(), t.scope.clone()),
            ("ada", vec!["env:Get*".to_string()])
        );
        let forged = format!("{}x", &i.token[..i.token.len() - 1]);
        assert!(d.authenticate(&forged).is_none());
        assert!(d.authenticate("vt_zz_zz").is_none());
        d.revoke(&i.record.id).unwrap();
        assert!(d.authenticate(&i.token).is_none());
        assert!(d
            .issue("ada", 600, vec!["frob:*".into()], false, "api", "")
            .is_err());
        // Expired: refused, and swept.
        let i = d.issue("ada", 600, vec![], false, "api", "").unwrap();
        let mut rec = d.token(&i.record.id).unwrap();
        rec.expires = now() - 1;
        d.store
            .kv_put(&format!("{K_TOKEN}{}", rec.id), &rec)
            .unwrap();
        d.tokens.lock().unwrap().clear();
        assert!(d.authenticate(&i.token).is_none());
        assert_eq!(d.sweep_tokens().unwrap(), 1);
        // Deleting the user deletes its tokens.
        let i = d.issue("ada", 600, vec![], false, "api", "").unwrap();
        d.delete_user("iam", "ada").unwrap();
        assert!(d.authenticate(&i.token).is_none());
    }

    #[test]
    fn the_root_token_is_disabled_only_with_an_administrator_who_can_log_in() {
        let (_t, d) = dir();
        seed(&d);
        assert!(!d.root_disabled());
        let e = d.set_root_disabled(true).unwrap_err().to_string();
        assert!(e.contains("no user with a password"), "{e}");
        d.set_password("rob", "read-only-user-1").unwrap();
        assert!(d.set_root_disabled(true).is_err());
        d.set_password("ada", "administrator-1").unwrap();
        d.set_root_disabled(true).unwrap();
        assert!(d.root_disabled());
        d.set_root_disabled(false).unwrap();
        assert!(!d.root_disabled());
    }
}

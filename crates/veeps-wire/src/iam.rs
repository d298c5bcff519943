//! IAM's requests and answers: logins, users, tokens, MFA devices, policy simulation.

use serde::{Deserialize, Serialize};

/// `POST /v1/iam/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The current TOTP code or a recovery code, for a user with an MFA device.
    #[serde(default)]
    pub code: Option<String>,
    /// How long the session lasts (60 s to 12 h; default 12 h).
    #[serde(default)]
    pub duration_seconds: Option<i64>,
}

/// A token, as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Whose.
    pub user: String,
    /// `session` (a login) or `api`.
    pub kind: String,
    /// Issued (unix seconds).
    pub created: i64,
    /// Refused after (unix seconds).
    pub expires: i64,
    /// Action patterns it is limited to (empty: none).
    pub scope: Vec<String>,
    /// Issued after an MFA code.
    pub mfa: bool,
    /// What it is for.
    pub description: String,
}

/// A new token (its secret shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    /// The bearer token.
    pub token: String,
    /// Its record.
    pub info: TokenInfo,
}

/// `POST /v1/iam/users/{name}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TokenRequest {
    /// Lifetime in seconds (60 s to 90 days; default 1 day).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Action patterns to limit it to (like `env:Get*`).
    #[serde(default)]
    pub scope: Vec<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

/// A user, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserInfo {
    /// Its name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// The environment that declares it.
    pub env: String,
    /// Every group it is in (its own and its memberships').
    pub groups: Vec<String>,
    /// The policies that apply to it, through its groups.
    pub policies: Vec<String>,
    /// Has a password.
    pub password: bool,
    /// Has an enabled MFA device.
    pub mfa: bool,
    /// Public SSH keys.
    pub ssh_public_keys: Vec<String>,
}

/// Who is calling (`GET /v1/iam/whoami`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// `root` or the user's name.
    pub user: String,
    /// Its ARN.
    pub arn: String,
    /// Authenticated with MFA.
    pub mfa: bool,
    /// The token's id, if any.
    pub token: Option<String>,
    /// The token's expiry, if any.
    pub expires: Option<i64>,
}

/// `POST /v1/iam/users/{name}/password` (an administrator sets it) and
/// `POST /v1/iam/password` (a user changes its own, giving the current one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordRequest {
    /// The new password.
    pub password: String,
    /// The current one (changing one's own).
    #[serde(default)]
    pub current: Option<String>,
}

/// A new MFA device: the secret and recovery codes, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaDevice {
    /// The secret, base32.
    pub secret: String,
    /// `otpauth://` URI for an authenticator app.
    pub uri: String,
    /// One-time recovery codes.
    pub recovery_codes: Vec<String>,
}

/// `POST /v1/iam/users/{name}/mfa/enable`: two consecutive codes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfaEnable {
    /// A code.
    pub code1: String,
    /// The next one.
    pub code2: String,
}

/// `POST /v1/iam/simulate`: would this user be allowed?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulateRequest {
    /// The user.
    pub user: String,
    /// The action, like `env:Apply`.
    pub action: String,
    /// The resource ARN.
    pub resource: String,
    /// Simulate a session with MFA.
    #[serde(default)]
    pub mfa: bool,
}

/// The simulation's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulateReply {
    /// Allowed.
    pub allowed: bool,
    /// Why not.
    pub reason: Option<String>,
}

/// `POST /v1/iam/root-token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootToken {
    /// Refuse the root token from now on.
    pub disabled: bool,
}

/// An environment's KMS key (`GET /v1/kms/{env}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KmsKeyInfo {
    /// The environment.
    pub env: String,
    /// The version new ciphertexts use (0 until the first rotation).
    pub current_version: u32,
    /// When each rotation happened (unix seconds), oldest first.
    pub rotated: Vec<i64>,
    /// Its `kms_key` policy, if one is declared.
    pub policy: Option<KeyPolicyInfo>,
}

/// A `kms_key`'s policy and lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPolicyInfo {
    /// Groups that administer the key (rotate, export, cancel deletion).
    pub administrators: Vec<String>,
    /// Groups that encrypt and decrypt with it.
    pub users: Vec<String>,
    /// Rotation period in days, when rotation is on.
    pub rotation_period_in_days: Option<u32>,
    /// Days between scheduling deletion and the key's destruction.
    pub deletion_window_in_days: u32,
    /// When the key is destroyed (unix seconds), if deletion is scheduled.
    pub pending_deletion_until: Option<i64>,
}

/// `POST /v1/iam/roles/{name}/assume`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AssumeRole {
    /// Seconds (900 up to the role's `max_session_duration`; default 3600).
    #[serde(default)]
    pub duration_seconds: Option<i64>,
    /// Who asks (for the audit trail).
    #[serde(default)]
    pub session_name: String,
}

/// Temporary credentials, in the shape of STS's `Credentials`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoleCredentials {
    /// `ASIA...`.
    pub access_key_id: String,
    /// The secret.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
    /// RFC 3339.
    pub expiration: String,
}

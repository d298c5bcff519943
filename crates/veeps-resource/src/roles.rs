//! The contract between parts that run code (instances, functions) and IAM: temporary
//! credentials of a role, for the code to call veeps' APIs as that role.

/// Temporary credentials.
#[derive(Debug, Clone)]
pub struct RoleCredentials {
    /// `ASIA...`.
    pub access_key_id: String,
    /// The secret.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
    /// Unix seconds.
    pub expires: i64,
}

/// Issues temporary credentials of roles.
pub trait Roles: Send + Sync {
    /// Whether `role` exists.
    fn exists(&self, role: &str) -> bool;
    /// Credentials of `role` for `session` (who gets them), lasting at most an hour (less
    /// when the role's longest session is shorter).
    fn issue(&self, role: &str, session: &str) -> Result<RoleCredentials, String>;
}

impl RoleCredentials {
    /// What a `credential_process` prints (the AWS CLI's and SDKs' format).
    pub fn process_json(&self) -> String {
        let expiration = time_rfc3339(self.expires);
        format!(
            "{{\"Version\":1,\"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"{}\",\"SessionToken\":\"{}\",\"Expiration\":\"{}\"}}",
            self.access_key_id, self.secret_access_key, self.session_token, expiration
        )
    }
}

fn time_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn expirations_are_rfc3339() {
        assert_eq!(super::time_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}

//! Passwords: what the account's password policy requires, and their argon2id hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// The account's password policy (`iam_password_policy`); without one, AWS's default
/// (8 characters, nothing else).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PasswordPolicy {
    /// Characters at least.
    pub minimum_password_length: u32,
    /// Needs an uppercase letter.
    pub require_uppercase_characters: bool,
    /// Needs a lowercase letter.
    pub require_lowercase_characters: bool,
    /// Needs a digit.
    pub require_numbers: bool,
    /// Needs one of `!@#$%^&*()_+-=[]{}|'`.
    pub require_symbols: bool,
    /// How many previous passwords may not be used again (0: any).
    pub password_reuse_prevention: u32,
    /// Days a password is good for (0: forever).
    pub max_password_age: u32,
    /// Users may change their own password.
    pub allow_users_to_change_password: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            minimum_password_length: 8,
            require_uppercase_characters: false,
            require_lowercase_characters: false,
            require_numbers: false,
            require_symbols: false,
            password_reuse_prevention: 0,
            max_password_age: 0,
            allow_users_to_change_password: true,
        }
    }
}

/// AWS's symbol class.
pub const SYMBOLS: &str = "!@#$%^&*()_+-=[]{}|'";

impl PasswordPolicy {
    /// What `pw` lacks, each as a phrase (empty: it is good).
    pub fn check(&self, pw: &str) -> Vec<String> {
        let mut out = vec![];
        let n = pw.chars().count();
        if n < self.minimum_password_length as usize {
            out.push(format!(
                "at least {} characters (it has {n})",
                self.minimum_password_length
            ));
        }
        if n > 128 {
            out.push("at most 128 characters".into());
        }
        let has = |f: &dyn Fn(char) -> bool| pw.chars().any(f);
        if self.require_uppercase_characters && !has(&|c| c.is_ascii_uppercase()) {
            out.push("an uppercase letter".into());
        }
        if self.require_lowercase_characters && !has(&|c| c.is_ascii_lowercase()) {
            out.push("a lowercase letter".into());
        }
        if self.require_numbers && !has(&|c| c.is_ascii_digit()) {
            out.push("a digit".into());
        }
        if self.require_symbols && !has(&|c| SYMBOLS.contains(c)) {
            out.push(format!("a symbol (one of {SYMBOLS})"));
        }
        out
    }
}

/// An argon2id hash of `pw` (PHC string, with its own salt).
pub fn hash(pw: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes encode");
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .expect("argon2 hashes any password with default parameters")
}

/// Whether `pw` is the one `phc` hashes.
pub fn verify(pw: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> PasswordPolicy {
        PasswordPolicy {
            minimum_password_length: 16,
            require_uppercase_characters: true,
            require_lowercase_characters: true,
            require_numbers: true,
            require_symbols: true,
            password_reuse_prevention: 5,
            ..Default::default()
        }
    }

    #[test]
    fn the_reference_policy_names_what_is_missing() {
        let p = reference();
        assert!(p.check("Correct-Horse-42-Battery").is_empty());
        assert_eq!(
            p.check("short"),
            vec![
                "at least 16 characters (it has 5)".to_string(),
                "an uppercase letter".into(),
                "a digit".into(),
                format!("a symbol (one of {SYMBOLS})"),
            ]
        );
        assert_eq!(
            p.check("ALLUPPERCASE1234!"),
            vec!["a lowercase letter".to_string()]
        );
        assert!(PasswordPolicy::default().check("12345678").is_empty());
        assert_eq!(PasswordPolicy::default().check("1234567").len(), 1);
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("Correct-Horse-42-Battery");
        let b = hash("Correct-Horse-42-Battery");
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("Correct-Horse-42-Battery", &a));
        assert!(!verify("correct-horse-42-battery", &a));
        assert!(!verify("x", "not a hash"));
    }
}

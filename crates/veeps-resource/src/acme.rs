//! The contract between ACME certificates and what answers their challenges: DNS-01 TXT
//! records in veeps' own zones (the DNS part), HTTP-01 tokens served by veeps' balancers.

/// Publishes DNS-01 challenge answers.
pub trait Dns01: Send + Sync {
    /// Answers TXT `value` at `name` (fully qualified, like `_acme-challenge.example.com`)
    /// until withdrawn; an error when no public zone of veeps holds the name.
    fn publish(&self, name: &str, value: &str) -> Result<(), String>;
    /// Stops answering `value` at `name`.
    fn withdraw(&self, name: &str, value: &str);
}

/// Serves HTTP-01 challenge answers at `/.well-known/acme-challenge/TOKEN` on port 80 of
/// the names being validated.
#[async_trait::async_trait]
pub trait Http01: Send + Sync {
    /// Serves `key_authorization` for `token` (on every plain-HTTP listener) until
    /// withdrawn; returns once it is served.
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<(), String>;
    /// Stops serving `token`.
    async fn withdraw(&self, token: &str);
}

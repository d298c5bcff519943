//! Notification topics: deliveries by webhook (HTTP POST of JSON), email (SMTP), and
//! Slack-compatible incoming webhooks, retried with backoff and recorded.

use serde::{Deserialize, Serialize};

/// How a subscriber is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `webhook`, `email` or `slack`.
    pub protocol: String,
    /// A URL, or an email address.
    pub endpoint: String,
}

/// One delivery attempt's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// Its sequence number within the topic.
    pub seq: u64,
    /// When the message was published.
    pub time: String,
    /// The subscriber.
    pub subscription: Subscription,
    /// The subject.
    pub subject: String,
    /// `delivered` or `failed` (or `pending` while retrying).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: Option<String>,
}

/// Where email goes out.
#[derive(Debug, Clone, Default)]
pub struct SmtpConfig {
    /// `host:port` of a relay (no authentication, plain SMTP).
    pub relay: Option<String>,
    /// The sender.
    pub from: String,
}

/// Sends one message to one subscriber (blocking). Returns the error, if any.
pub fn send(
    sub: &Subscription,
    subject: &str,
    message: &serde_json::Value,
    smtp: &SmtpConfig,
) -> Result<(), String> {
    match sub.protocol.as_str() {
        "webhook" => post(
            &sub.endpoint,
            &serde_json::json!({"subject": subject, "message": message}),
        ),
        "slack" => {
            let text = format!(
                "*{subject}*\n{}",
                message
                    .get("text")
                    .and_then(|t| t.as_str())
                    .map(String::from)
                    .unwrap_or_else(|| message.to_string())
            );
            post(&sub.endpoint, &serde_json::json!({"text": text}))
        }
        "email" => {
            use lettre::Transport;
            let relay = smtp
                .relay
                .as_ref()
                .ok_or("no SMTP relay is configured (veeps server --smtp-relay HOST:PORT)")?;
            let (host, port) = relay
                .rsplit_once(':')
                .ok_or_else(|| format!("SMTP relay \"{relay}\" must be HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("SMTP relay \"{relay}\" must be HOST:PORT"))?;
            let body = message
                .get("text")
                .and_then(|t| t.as_str())
                .map(String::from)
                .unwrap_or_else(|| serde_json::to_string_pretty(message).unwrap_or_default());
            let email = lettre::Message::builder()
                .from(
                    smtp.from
                        .parse()
                        .map_err(|e| format!("sender {}: {e}", smtp.from))?,
                )
                .to(sub
                    .endpoint
                    .parse()
                    .map_err(|e| format!("recipient {}: {e}", sub.endpoint))?)
                .subject(subject)
                .body(body)
                .map_err(|e| e.to_string())?;
            let mailer = lettre::SmtpTransport::builder_dangerous(host)
                .port(port)
                .timeout(Some(std::time::Duration::from_secs(10)))
                .build();
            mailer
                .send(&email)
                .map(|_| ())
                .map_err(|e| format!("SMTP: {e}"))
        }
        other => Err(format!("unknown protocol \"{other}\"")),
    }
}

fn post(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build();
    match agent.post(url).send_json(body) {
        Ok(r) if (200..300).contains(&r.status()) => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
        Err(e) => Err(e.to_string()),
    }
}

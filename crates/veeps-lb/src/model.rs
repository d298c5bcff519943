//! What a load balancer is configured with, as recorded: balancers, listeners, rules,
//! target groups and attachments. The data plane compiles these into a snapshot.

use serde::{Deserialize, Serialize};

/// A load balancer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LbSpec {
    /// Its id (`lb-...`, also its ARN).
    pub id: String,
    /// The environment.
    pub env: String,
    /// Its name (the log group is `lb-NAME`).
    pub name: String,
    /// Internal (only inside its VPC) or internet-facing.
    pub internal: bool,
    /// Subnets (the balancer's endpoint is placed in the first).
    pub subnets: Vec<String>,
    /// Security groups of its endpoint.
    pub security_groups: Vec<String>,
    /// Seconds a connection may idle, and a target may take to answer.
    pub idle_timeout: u64,
    /// Access logs on.
    pub access_logs: bool,
}

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    /// Plain.
    #[serde(rename = "HTTP")]
    Http,
    /// TLS.
    #[serde(rename = "HTTPS")]
    Https,
}

/// What a listener or rule does with a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Action {
    /// Forward to target groups, by weight.
    Forward {
        /// `(target group id, weight)`.
        groups: Vec<(String, u32)>,
        /// Seconds a client sticks to its target (0: off).
        #[serde(default)]
        stickiness_secs: u64,
    },
    /// Answer with a redirect; `#{host}`, `#{port}`, `#{path}`, `#{query}`, `#{protocol}`
    /// keep the request's parts.
    Redirect {
        /// `HTTP`, `HTTPS` or `#{protocol}`.
        protocol: String,
        /// Host.
        host: String,
        /// Port.
        port: String,
        /// Path.
        path: String,
        /// Query (without `?`).
        query: String,
        /// 301 or 302.
        status: u16,
    },
    /// Answer with a fixed response.
    Fixed {
        /// Status.
        status: u16,
        /// Content type.
        content_type: String,
        /// Body.
        body: String,
    },
}

/// A listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerSpec {
    /// Its id (`listener-...`).
    pub id: String,
    /// Its balancer.
    pub lb_id: String,
    /// Its port.
    pub port: u16,
    /// HTTP or HTTPS.
    pub protocol: Protocol,
    /// Certificates for SNI (the first is the default).
    pub certificates: Vec<String>,
    /// What requests no rule matches get.
    pub default_action: Action,
    /// Also serve this listener on this port of the host's loopback (how the machine
    /// itself reaches a balancer at a fixed address).
    #[serde(default)]
    pub host_port: Option<u16>,
    /// Credentials the default action asks for first.
    #[serde(default)]
    pub default_auth: Option<BasicAuth>,
}

/// HTTP Basic authentication (RFC 7617) in front of an action: users and their passwords'
/// argon2id hashes (PHC strings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BasicAuth {
    /// The realm named in the challenge.
    pub realm: String,
    /// `(user, hash)`, by user.
    pub users: Vec<(String, String)>,
}

/// One condition of a rule; all of a rule's conditions must match.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Condition {
    /// The Host header matches one of these patterns (`*` and `?`, case-insensitive).
    Host(Vec<String>),
    /// The path matches one of these patterns (`*` and `?`).
    Path(Vec<String>),
    /// The method is one of these.
    Method(Vec<String>),
    /// A header matches one of these patterns.
    Header {
        /// The header's name.
        name: String,
        /// Patterns for its value.
        values: Vec<String>,
    },
    /// A query parameter (`key` empty: any) has a value matching one of these patterns.
    Query(Vec<(String, String)>),
    /// The client's address is in one of these ranges.
    SourceIp(Vec<String>),
}

/// A listener rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleSpec {
    /// Its id.
    pub id: String,
    /// Its listener.
    pub listener_id: String,
    /// Lower goes first.
    pub priority: u32,
    /// All must match.
    pub conditions: Vec<Condition>,
    /// What matching requests get.
    pub action: Action,
    /// Credentials asked for before the action.
    #[serde(default)]
    pub auth: Option<BasicAuth>,
}

/// A target group's health check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthSpec {
    /// Path asked.
    pub path: String,
    /// Port (`None`: the target's).
    pub port: Option<u16>,
    /// HTTP or HTTPS.
    pub protocol: Protocol,
    /// Seconds between checks.
    pub interval: f64,
    /// Seconds a check may take.
    pub timeout: f64,
    /// Consecutive successes to enter service.
    pub healthy_threshold: u32,
    /// Consecutive failures to leave it.
    pub unhealthy_threshold: u32,
    /// Good statuses: `200`, `200-299`, `200,302`.
    pub matcher: String,
}

/// A target group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgSpec {
    /// Its id (`tg-...`, also its ARN).
    pub id: String,
    /// Its name.
    pub name: String,
    /// How targets are spoken to.
    pub protocol: Protocol,
    /// Targets' port (for group instances and attachments without one).
    pub port: u16,
    /// Health checks.
    pub health: HealthSpec,
    /// Seconds a deregistered target keeps its in-flight requests.
    pub deregistration_delay: u64,
    /// `round_robin` or `least_outstanding_requests`.
    pub algorithm: String,
    /// Seconds of stickiness (0: off).
    pub stickiness_secs: u64,
    /// A function that answers every request (a `lambda` target group), instead of targets.
    #[serde(default)]
    pub function: Option<String>,
    /// Its events and answers carry multi-value headers and query parameters.
    #[serde(default)]
    pub multi_value_headers: bool,
}

/// A single address attached to a target group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachmentSpec {
    /// Its id.
    pub id: String,
    /// The target group.
    pub tg_id: String,
    /// The address.
    pub target: String,
    /// The port (`None`: the group's).
    pub port: Option<u16>,
}

/// Parses a matcher into status ranges.
pub fn parse_matcher(m: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = vec![];
    for part in m.split(',').map(str::trim) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (a, b): (u16, u16) = (
            a.parse()
                .map_err(|_| format!("\"{m}\": \"{part}\" is not a status code"))?,
            b.parse()
                .map_err(|_| format!("\"{m}\": \"{part}\" is not a status code"))?,
        );
        if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
            return Err(format!(
                "\"{m}\": \"{part}\" is not a status range within 100-599"
            ));
        }
        out.push((a, b));
    }
    Ok(out)
}

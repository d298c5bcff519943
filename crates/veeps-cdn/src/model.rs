//! What the edge serves: distributions compiled by the control plane into the data plane's
//! configuration.

use crate::cache::Bounds;
use crate::policy::Ttls;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The data plane's configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaneConfig {
    /// The plain HTTP listener.
    pub http: Option<SocketAddr>,
    /// The HTTPS listener (certificates by name, from the distributions).
    pub https: Option<SocketAddr>,
    /// The cache's bounds.
    pub bounds: Option<Bounds>,
    /// A CA (PEM) trusted for HTTPS origins beside the system's roots (veeps' own).
    #[serde(default)]
    pub origin_ca: Option<String>,
    /// Every distribution served.
    pub distributions: Vec<Distribution>,
}

/// A distribution as the edge serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Its id (`E` and 13 characters, as CloudFront's).
    pub id: String,
    /// Its environment.
    pub env: String,
    /// Its own name (`ID.cdn.localhost`).
    pub domain: String,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// Answers at all.
    pub enabled: bool,
    /// What `/` serves (`index.html`).
    pub default_root_object: Option<String>,
    /// Plain HTTP requests are redirected to HTTPS.
    pub redirect_to_https: bool,
    /// Where answers come from.
    pub origins: Vec<Origin>,
    /// By path pattern, in order; the last is the default (`*`).
    pub behaviors: Vec<Behavior>,
    /// Pages for the origin's errors.
    pub custom_errors: Vec<CustomError>,
    /// Its certificate and key (PEM), for its names over HTTPS.
    pub tls: Option<(String, String)>,
}

/// An origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Its id within the distribution.
    pub id: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` sent to it.
    pub host: String,
    /// Prefixed to every path asked of it.
    pub path: String,
    /// Asked over HTTPS (at `host`, resolved when connecting, and verified for it).
    #[serde(default)]
    pub https: bool,
}

/// A cache behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behavior {
    /// Paths it covers (`*` for the default).
    pub pattern: String,
    /// The origin it asks.
    pub origin: String,
    /// Freshness bounds.
    pub ttls: Ttls,
    /// Methods passed on (others are refused with 403, as CloudFront does).
    pub allowed_methods: Vec<String>,
    /// Methods whose answers are cached (GET and HEAD, optionally OPTIONS).
    pub cached_methods: Vec<String>,
    /// The query string is part of the cache key (and passed on); otherwise dropped.
    pub query_string: bool,
    /// Request headers in the cache key (and passed on).
    pub headers: Vec<String>,
    /// Cookies in the cache key (and passed on); others are not sent to the origin.
    pub cookies: Vec<String>,
    /// Text is compressed (gzip, brotli) as the client accepts.
    pub compress: bool,
}

/// What to answer when the origin answers an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomError {
    /// The origin's status.
    pub error_code: u16,
    /// The status sent instead (the origin's when absent).
    pub response_code: Option<u16>,
    /// The page sent instead (a path of the distribution).
    pub response_page_path: Option<String>,
    /// How long the error is cached (seconds; CloudFront's default 10).
    pub error_caching_min_ttl: u64,
}

/// A distribution as declared and stored: origins by name, resolved to addresses each
/// time the edge's configuration is made (a bucket website's listener, a balancer's
/// address, any `HOST[:PORT]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistSpec {
    /// What the edge serves, origins and certificate aside.
    pub dist: Distribution,
    /// Origins as declared.
    pub origins: Vec<OriginSpec>,
    /// The certificate (a `certificate`'s id) for its aliases over HTTPS.
    pub certificate: Option<String>,
}

/// An origin as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginSpec {
    /// Its id within the distribution.
    pub id: String,
    /// A bucket's `website_endpoint`, a balancer's `dns_name`, or `HOST[:PORT]`.
    pub domain_name: String,
    /// Its port when `domain_name` names none.
    pub http_port: u16,
    /// Its HTTPS port.
    #[serde(default = "https_port")]
    pub https_port: u16,
    /// `http-only` or `https-only`.
    #[serde(default = "http_only")]
    pub protocol_policy: String,
    /// Prefixed to every path asked of it.
    pub origin_path: String,
}

fn https_port() -> u16 {
    443
}

fn http_only() -> String {
    "http-only".into()
}

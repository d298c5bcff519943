//! The listener: credentials, virtual-host addressing, Signature Version 2 time bounds, and
//! the accept loop with its limits and metrics.

use super::*;

/// Credentials: the root key pair (the root token's owner) and, later, users' keys.
pub struct Auth {
    root_id: String,
    root_secret: String,
}

impl Auth {
    /// Root credentials derived from the root API token.
    pub fn from_root_token(token: &str) -> Auth {
        use sha2::Digest;
        let id = hex::encode(sha2::Sha256::digest(format!("s3-id:{token}").as_bytes()))[..20]
            .to_uppercase();
        let secret = hex::encode(sha2::Sha256::digest(
            format!("s3-secret:{token}").as_bytes(),
        ))[..40]
            .to_string();
        Auth {
            root_id: format!("VK{}", &id[..18]),
            root_secret: secret,
        }
    }

    /// A given pair.
    pub fn from_pair(id: &str, secret: &str) -> Auth {
        Auth {
            root_id: id.into(),
            root_secret: secret.into(),
        }
    }

    /// The root access key id and secret.
    pub fn root(&self) -> (&str, &str) {
        (&self.root_id, &self.root_secret)
    }
}

/// Virtual-host-style addressing: `BUCKET.s3.localhost` or `BUCKET.localhost` (any port)
/// names a bucket; any other host (an address, `localhost`) means path-style.
pub(super) struct Hosts;

impl s3s::host::S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let vh = s3s::host::VirtualHost::new(host);
        Ok(match bucket_of_host(host) {
            Some(b) => vh.with_bucket(b),
            None => vh,
        })
    }
}

/// The bucket a `Host` header names, in virtual-host style.
pub(super) fn bucket_of_host(host: &str) -> Option<String> {
    crate::website::bucket_from_host(host, |_| false)
        .filter(|b| crate::store::check_bucket_name(b).is_ok())
}

/// The bucket a request concerns, for its metrics.
pub(super) fn bucket_of(req: &hyper::Request<hyper::body::Incoming>) -> String {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    bucket_of_host(host).unwrap_or_else(|| {
        let p = req.uri().path().trim_start_matches('/');
        p.split('/').next().unwrap_or_default().to_string()
    })
}

/// The access key id a request is signed with (header or presigned query; SigV4 or V2).
pub(super) fn access_key_of(req: &hyper::Request<hyper::body::Incoming>) -> Option<&str> {
    // Its leading letters and digits, 128 at most.
    fn clean(s: &str) -> Option<&str> {
        let end = s
            .bytes()
            .take(128)
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(s.len().min(128));
        (end > 0).then(|| &s[..end])
    }
    if let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
    {
        if let Some(rest) = h.split("Credential=").nth(1) {
            return clean(rest);
        }
        if let Some(rest) = h.strip_prefix("AWS ") {
            return clean(rest);
        }
    }
    let q = req.uri().query().unwrap_or_default();
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        match k {
            "X-Amz-Credential" | "AWSAccessKeyId" => clean(v),
            _ => None,
        }
    })
}

pub(super) fn length(h: &hyper::HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Requests signed with Signature Version 2 get SigV4's time bounds, which s3s does not
/// apply to them: a signed header request is refused when its date is more than 15
/// minutes from now (a replayed request from 2001 is not accepted), and a presigned URL
/// when it lives longer than 7 days. `Some` is the refusal.
pub(super) fn check_sig_v2(
    req: &hyper::Request<hyper::body::Incoming>,
) -> Option<hyper::Response<s3s::Body>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header_v2 = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.starts_with("AWS "));
    if header_v2 {
        let date = req
            .headers()
            .get("x-amz-date")
            .or_else(|| req.headers().get("date"))
            .and_then(|d| d.to_str().ok())
            .and_then(|d| {
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc2822)
                    .ok()
                    .or_else(|| {
                        // HTTP dates say GMT where RFC 2822 says +0000.
                        time::OffsetDateTime::parse(
                            &d.replace("GMT", "+0000"),
                            &time::format_description::well_known::Rfc2822,
                        )
                        .ok()
                    })
            });
        return match date {
            Some(t) if (t.unix_timestamp() - now).abs() <= 15 * 60 => None,
            Some(_) => Some(refuse(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                hyper::StatusCode::FORBIDDEN,
            )),
            None => Some(refuse(
                "AccessDenied",
                "AWS authentication requires a valid Date or x-amz-date header",
                hyper::StatusCode::FORBIDDEN,
            )),
        };
    }
    let expires = req.uri().query().and_then(|q| {
        let signed = q.split('&').any(|p| p.starts_with("Signature="));
        q.split('&')
            .find_map(|p| p.strip_prefix("Expires="))
            .filter(|_| signed)
            .map(|e| e.parse::<i64>().unwrap_or(i64::MAX))
    });
    match expires {
        Some(e) if e - now > 7 * 24 * 3600 => Some(refuse(
            "AuthorizationQueryParametersError",
            "a presigned URL may live at most 7 days (604800 seconds)",
            hyper::StatusCode::BAD_REQUEST,
        )),
        _ => None,
    }
}

pub(super) fn refuse(
    code: &str,
    msg: &str,
    status: hyper::StatusCode,
) -> hyper::Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>"
    );
    let mut r = hyper::Response::new(s3s::Body::from(xml));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

/// What the S3 listener reports to and serves with, besides its requests.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Where writes go as audit events.
    pub audit: Option<Arc<dyn veeps_state::AuditSink>>,
    /// Where failed signatures go, and who is banned.
    pub intrusion: Option<Arc<dyn veeps_resource::intrusion::Intrusion>>,
    /// TLS, if the listener serves it.
    pub tls: Option<veeps_http::TlsConfig>,
    /// The other AWS APIs served on this listener, by SigV4 service name.
    pub edge: Option<Arc<veeps_resource::edge::Edge>>,
}

/// Serves the S3 API on `listener` within `limits` until the task is dropped, counting
/// every request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    gate: crate::access::Gate,
    stats: Arc<crate::stats::Stats>,
    limits: veeps_http::Limits,
    hooks: Hooks,
) {
    let Hooks {
        audit,
        intrusion,
        tls,
        edge,
    } = hooks;
    let api = api.with_access(gate.access.clone());
    let direct = Arc::new((api.clone(), gate.clone()));
    let mut b = s3s::service::S3ServiceBuilder::new(api);
    b.set_auth(gate.clone());
    b.set_access(gate);
    b.set_host(Hosts);
    let svc = b.build();
    let make = move |peer: std::net::SocketAddr| {
        // What a connection's requests use, shared once per connection: a request then
        // takes one reference that no other core touches.
        let conn = Arc::new((
            svc.clone(),
            direct.clone(),
            stats.clone(),
            audit.clone(),
            intrusion.clone(),
            edge.clone(),
        ));
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let conn = conn.clone();
            async move {
                let (svc, direct, stats, audit, intrusion, edge) = &*conn;
                // A banned client (where the kernel does not drop it already) is refused.
                if intrusion.as_ref().is_some_and(|i| i.banned(peer.ip())) {
                    let mut r = refuse(
                        "AccessDenied",
                        "this address is banned after repeated failed authentications",
                        hyper::StatusCode::FORBIDDEN,
                    );
                    r.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                    return Ok(r);
                }
                // Another AWS API's request (by its signature's scope, or its own path
                // unsigned) goes to that API.
                if let Some(edge) = &edge {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|h| h.to_str().ok());
                    let service = veeps_iam::sigv4::scope_service(auth, req.uri().query());
                    if service.as_deref() != Some("s3") {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default();
                        let route = edge.route(service.as_deref(), host, req.uri().path());
                        if let Some(other) = route {
                            let resp = other.call(req.map(axum::body::Body::new), peer).await;
                            let (parts, body) = resp.into_parts();
                            return Ok(hyper::Response::from_parts(parts, s3s::Body::from(body)));
                        }
                    }
                }
                let signed = intrusion.is_some() && access_key_of(&req).is_some();
                // Writes are audit events: who (the access key), from where, what, and
                // the answer.
                let write = matches!(
                    *req.method(),
                    hyper::Method::PUT | hyper::Method::POST | hyper::Method::DELETE
                );
                let event = (write && audit.is_some()).then(|| {
                    let mut action = format!("S3 {} {}", req.method(), req.uri().path());
                    if action.len() > 256 {
                        let mut cut = 256;
                        while !action.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        action.truncate(cut);
                        action.push('…');
                    }
                    (
                        access_key_of(&req).unwrap_or("anonymous").to_string(),
                        action,
                    )
                });
                let started = std::time::Instant::now();
                let bucket = bucket_of(&req);
                let bytes_in = match length(req.headers(), "x-amz-decoded-content-length") {
                    0 => length(req.headers(), "content-length"),
                    n => n,
                };
                req.extensions_mut().insert(crate::access::Peer(peer));
                let has_body = bytes_in > 0 || req.headers().contains_key("transfer-encoding");
                let mut r = match check_sig_v2(&req) {
                    Some(refused) => Ok(refused),
                    None => match super::direct::get(&req, &direct.0, &direct.1, peer) {
                        Some(answer) => Ok(answer),
                        None => hyper::service::Service::call(svc, req).await,
                    },
                };
                // An error answered before the body was read ends the connection: a client
                // that sends the body anyway (after waiting for `100 Continue` in vain)
                // would otherwise have it read as the start of its next request.
                if let Ok(resp) = &mut r {
                    if has_body && resp.status().as_u16() >= 400 {
                        resp.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                }
                // A signature that does not match, or a key that does not exist, is a
                // failed authentication.
                if let (Ok(resp), Some(i)) = (&r, &intrusion) {
                    if signed && resp.status() == hyper::StatusCode::FORBIDDEN {
                        let failed = resp.body().bytes().is_some_and(|b| {
                            let t = String::from_utf8_lossy(&b);
                            t.contains("<Code>SignatureDoesNotMatch</Code>")
                                || t.contains("<Code>InvalidAccessKeyId</Code>")
                        });
                        if failed {
                            i.failed("s3", peer.ip());
                        }
                    }
                }
                let (status, out) = match &r {
                    Ok(resp) => (
                        resp.status().as_u16(),
                        length(resp.headers(), "content-length"),
                    ),
                    Err(_) => (500, 0),
                };
                // The bucket lookup deciding the label is a page-cache read, like a GET's.
                stats.record(
                    &bucket,
                    status,
                    bytes_in,
                    out,
                    started.elapsed().as_secs_f64(),
                );
                if let (Some((who, action)), Some(a)) = (event, &audit) {
                    a.note(veeps_state::AuditRecord {
                        who,
                        source: peer.ip().to_string(),
                        action,
                        result: status,
                    });
                }
                r
            }
        })
    };
    match tls {
        Some(cfg) => veeps_http::serve_tls(listener, "s3", limits, cfg, make).await,
        None => veeps_http::serve(listener, "s3", limits, make).await,
    }
}

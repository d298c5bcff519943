//! The phases of a request through a balancer, as pure functions over a per-request
//! context: route (which rule's action), respond or redirect, choose a target group by
//! weight, filter the request to the target and its response, and the access log line.
//! The I/O around them (accepting, forwarding, retrying) is in the parent module.

use super::{Compiled, Snapshot, HOP};
use crate::auth::Guard;
use crate::matching::{matches, RequestView};
use crate::model::Protocol;
use crate::targets::TgState;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What the phases know of one request.
pub struct RequestCx {
    /// The client.
    pub client: SocketAddr,
    /// The method.
    pub method: hyper::Method,
    /// The host without a port.
    pub host: String,
    /// The request's URI (its path and query are what rules see).
    pub uri: hyper::Uri,
}

impl RequestCx {
    /// The context of a request; the host comes from `Host`, else the URI's authority.
    pub fn of<B>(req: &hyper::Request<B>, client: SocketAddr) -> RequestCx {
        let host_header = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(String::from)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        RequestCx {
            client,
            method: req.method().clone(),
            host: strip_port(&host_header).to_string(),
            uri: req.uri().clone(),
        }
    }

    /// The path.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The raw query (without `?`; empty when there is none).
    pub fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }
}

/// `host:port` without its port (a bare host as it is).
pub fn strip_port(h: &str) -> &str {
    h.rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map(|(h, _)| h)
        .unwrap_or(h)
}

/// The header that tells a target which user authenticated (any the client sent is
/// removed).
pub const AUTH_USER: HeaderName = HeaderName::from_static("x-veeps-auth-user");

/// Route: the action of the first rule (in priority order) whose conditions all hold, else
/// the default action; with the credentials it asks for first, if any.
pub fn route(
    snap: &Snapshot,
    cx: &RequestCx,
    headers: &HeaderMap,
) -> (Arc<Compiled>, Option<Arc<Guard>>) {
    // An ACME CA validating a name (HTTP-01) asks before any rule can send it elsewhere.
    if let Some(token) = cx.path().strip_prefix("/.well-known/acme-challenge/") {
        if let Some(answer) = snap.challenges.get(token) {
            let a = Arc::new(Compiled::Other(crate::model::Action::Fixed {
                status: 200,
                content_type: "application/octet-stream".into(),
                body: answer.clone(),
            }));
            return (a, None);
        }
    }
    let hdr = |n: &str| -> Vec<String> {
        headers
            .get_all(n)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let view = RequestView {
        host: &cx.host,
        path: cx.path(),
        method: cx.method.as_str(),
        query: cx.query(),
        client: cx.client.ip(),
        header: &hdr,
    };
    snap.rules
        .iter()
        .find(|(_, conds, _, _)| conds.iter().all(|c| matches(c, &view)))
        .map(|(_, _, a, g)| (a.clone(), g.clone()))
        .unwrap_or_else(|| (snap.default.clone(), snap.default_guard.clone()))
}

/// A redirect as declared (each part may use `#{host}`, `#{port}`, `#{path}`, `#{query}`
/// and `#{protocol}`, as ALB's do).
pub struct Redirect<'a> {
    /// Scheme.
    pub protocol: &'a str,
    /// Host.
    pub host: &'a str,
    /// Port.
    pub port: &'a str,
    /// Path.
    pub path: &'a str,
    /// Query.
    pub query: &'a str,
}

/// Respond: the `Location` of a redirect for this request, arriving on a listener of
/// `protocol` and `port`; default ports are left out.
pub fn redirect_location(r: &Redirect, cx: &RequestCx, protocol: Protocol, port: u16) -> String {
    let proto_now = match protocol {
        Protocol::Http => "http",
        Protocol::Https => "https",
    };
    let sub = |s: &str| {
        s.replace("#{host}", &cx.host)
            .replace("#{port}", &port.to_string())
            .replace("#{path}", cx.path().trim_start_matches('/'))
            .replace("#{query}", cx.query())
            .replace("#{protocol}", proto_now)
    };
    let scheme = sub(r.protocol).to_lowercase();
    let port = sub(r.port);
    let default_port = (scheme == "https" && port == "443") || (scheme == "http" && port == "80");
    let mut loc = format!("{scheme}://{}", sub(r.host));
    if !default_port {
        loc.push(':');
        loc.push_str(&port);
    }
    loc.push('/');
    loc.push_str(sub(r.path).trim_start_matches('/'));
    let q = sub(r.query);
    if !q.is_empty() {
        loc.push('?');
        loc.push_str(&q);
    }
    loc
}

/// Choose a target group: by weight, with `roll` a uniformly random number.
pub fn choose_group(groups: &[(String, Arc<TgState>, u32)], roll: u32) -> Option<Arc<TgState>> {
    let total: u32 = groups.iter().map(|g| g.2).sum();
    if groups.len() == 1 || total == 0 {
        return groups.first().map(|g| g.1.clone());
    }
    let mut x = roll % total;
    groups
        .iter()
        .find(|g| {
            if x < g.2 {
                true
            } else {
                x -= g.2;
                false
            }
        })
        .map(|g| g.1.clone())
}

/// The target chosen by the sticky cookie, if the request carries one.
pub fn sticky_target(headers: &HeaderMap) -> Option<SocketAddr> {
    for v in headers.get_all(hyper::header::COOKIE) {
        for c in v.to_str().ok()?.split(';') {
            if let Some(x) = c.trim().strip_prefix("VEEPSLB=") {
                return x.parse().ok();
            }
        }
    }
    None
}

/// The sticky cookie that sends a client back to `target` for `seconds`.
pub fn sticky_cookie(target: SocketAddr, seconds: u64) -> String {
    format!("VEEPSLB={target}; Max-Age={seconds}; Path=/; HttpOnly")
}

/// Upstream request filter: hop-by-hop headers out (an upgrade's own back in), `Host` kept
/// (from the authority for HTTP/2), `X-Forwarded-For`, `-Proto` and `-Port` set.
pub fn upstream_headers(
    headers: &mut HeaderMap,
    client: IpAddr,
    authority: Option<&str>,
    upgrade: Option<&str>,
    protocol: Protocol,
    port: u16,
) {
    strip_hop(headers);
    headers.remove(hyper::header::UPGRADE);
    if !headers.contains_key(hyper::header::HOST) {
        if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(hyper::header::HOST, v);
        }
    }
    let mut xff = Vec::with_capacity(48);
    if let Some(prev) = headers.get(XFF) {
        xff.extend_from_slice(prev.as_bytes());
        xff.extend_from_slice(b", ");
    }
    push_ip(&mut xff, client);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
        headers.insert(XFF, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(match protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        match port {
            80 => HeaderValue::from_static("80"),
            443 => HeaderValue::from_static("443"),
            p => HeaderValue::from(p),
        },
    );
    if let Some(v) = upgrade.and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert(hyper::header::UPGRADE, v);
        headers.insert(
            hyper::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
}

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Appends an address as text (IPv4 without the formatting machinery: once per request).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + (o / 10) % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Response filter: hop-by-hop headers out.
pub fn downstream_headers(headers: &mut HeaderMap) {
    strip_hop(headers);
}

/// Removes hop-by-hop headers; one pass over the names when there are none (the usual case).
fn strip_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| HOP.contains(k)) {
        return;
    }
    for h in &HOP {
        headers.remove(h);
    }
}

/// Whether a request may be sent again to another target after the first refused it or
/// reset before answering: idempotent methods (RFC 9110) without a body, as nginx's
/// `proxy_next_upstream error` does by default.
pub fn replayable(method: &hyper::Method, headers: &HeaderMap, body_empty: bool) -> bool {
    idempotent(method) && body_empty && !headers.contains_key(hyper::header::UPGRADE)
}

/// Whether a method is idempotent (RFC 9110 section 9.2.2): sending it twice does what
/// sending it once does.
pub fn idempotent(method: &hyper::Method) -> bool {
    use hyper::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// One access log line's fields, known when the response's headers leave.
pub struct AccessLog {
    /// The client.
    pub client: SocketAddr,
    /// Method.
    pub method: String,
    /// Path and query.
    pub target_uri: String,
    /// HTTP version.
    pub version: hyper::Version,
    /// Status sent.
    pub status: u16,
    /// The target that answered (`None`: the balancer answered).
    pub target: Option<SocketAddr>,
    /// Time until the response's headers, in ms.
    pub target_ms: f64,
}

impl AccessLog {
    /// The line, once the body is sent: `bytes` of it after `total_ms`.
    pub fn line(&self, bytes: u64, total_ms: f64) -> String {
        let target = self
            .target
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into());
        format!(
            "{} \"{} {} {:?}\" {} {bytes} target={target} target_ms={:.1} total_ms={total_ms:.1}",
            self.client, self.method, self.target_uri, self.version, self.status, self.target_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_their_display_writes_them() {
        let mut ips: Vec<IpAddr> = vec!["::1".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        for o in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            ips.push(IpAddr::from([o, 255 - o, o / 2, 7]));
        }
        for ip in ips {
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    fn cx(host: &str, path: &str, query: &str) -> RequestCx {
        RequestCx {
            client: "10.0.0.9:5000".parse().unwrap(),
            method: hyper::Method::GET,
            host: strip_port(host).into(),
            uri: if query.is_empty() {
                path.parse().unwrap()
            } else {
                format!("{path}?{query}").parse().unwrap()
            },
        }
    }

    #[test]
    fn redirects_substitute_what_alb_substitutes() {
        #[allow(clippy::type_complexity)]
        let check = |r: (&str, &str, &str, &str, &str),
                     req: (&str, &str, &str),
                     on: (Protocol, u16),
                     want: &str| {
            let r = Redirect {
                protocol: r.0,
                host: r.1,
                port: r.2,
                path: r.3,
                query: r.4,
            };
            let got = redirect_location(&r, &cx(req.0, req.1, req.2), on.0, on.1);
            assert_eq!(got, want);
        };
        let keep = ("#{protocol}", "#{host}", "#{port}", "/#{path}", "#{query}");
        // To HTTPS on its default port: the port is left out.
        check(
            ("HTTPS", "#{host}", "443", "/#{path}", "#{query}"),
            ("app.test:8080", "/a/b", "x=1"),
            (Protocol::Http, 8080),
            "https://app.test/a/b?x=1",
        );
        check(
            keep,
            ("app.test", "/", ""),
            (Protocol::Http, 8080),
            "http://app.test:8080/",
        );
        check(
            ("HTTP", "other.test", "80", "/new/#{path}", "from=#{host}"),
            ("app.test", "/old", ""),
            (Protocol::Https, 443),
            "http://other.test/new/old?from=app.test",
        );
    }

    #[test]
    fn hosts_lose_their_port_only() {
        for (h, want) in [
            ("app.test:8080", "app.test"),
            ("app.test", "app.test"),
            ("[::1]:80", "[::1]"),
            ("host:notaport", "host:notaport"),
        ] {
            assert_eq!(strip_port(h), want, "{h}");
        }
    }

    #[test]
    fn the_sticky_cookie_round_trips_and_bad_ones_are_ignored() {
        let t: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::COOKIE,
            HeaderValue::from_str(&format!(
                "a=1; {}",
                sticky_cookie(t, 60).split(';').next().unwrap()
            ))
            .unwrap(),
        );
        assert_eq!(sticky_target(&h), Some(t));
        h.insert(
            hyper::header::COOKIE,
            HeaderValue::from_static("VEEPSLB=nonsense"),
        );
        assert_eq!(sticky_target(&h), None);
    }

    #[test]
    fn the_upstream_request_carries_forwarding_headers_and_no_hop_by_hop_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        upstream_headers(
            &mut h,
            "10.0.0.9".parse().unwrap(),
            Some("app.test"),
            None,
            Protocol::Https,
            443,
        );
        let mut got: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "host: app.test",
                "x-forwarded-for: 192.0.2.1, 10.0.0.9",
                "x-forwarded-port: 443",
                "x-forwarded-proto: https",
            ]
        );
        // A WebSocket upgrade keeps its own Upgrade and Connection.
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("ws.test"));
        upstream_headers(
            &mut h,
            "10.0.0.9".parse().unwrap(),
            None,
            Some("websocket"),
            Protocol::Http,
            80,
        );
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn only_idempotent_bodiless_requests_are_replayed() {
        use hyper::Method;
        let none = HeaderMap::new();
        let mut ws = HeaderMap::new();
        ws.insert("upgrade", HeaderValue::from_static("websocket"));
        for (m, h, empty, want) in [
            (Method::GET, &none, true, true),
            (Method::HEAD, &none, true, true),
            (Method::DELETE, &none, true, true),
            (Method::PUT, &none, false, false),
            (Method::POST, &none, true, false),
            (Method::PATCH, &none, true, false),
            (Method::GET, &ws, true, false),
        ] {
            assert_eq!(replayable(&m, h, empty), want, "{m} {h:?} {empty}");
        }
    }

    #[test]
    fn access_log_lines_read_like_alb_fields() {
        let l = AccessLog {
            client: "10.0.0.9:5000".parse().unwrap(),
            method: "GET".into(),
            target_uri: "/a?b=1".into(),
            version: hyper::Version::HTTP_11,
            status: 200,
            target: Some("10.1.0.4:8080".parse().unwrap()),
            target_ms: 1.25,
        };
        assert_eq!(
            l.line(512, 2.5),
            "10.0.0.9:5000 \"GET /a?b=1 HTTP/1.1\" 200 512 target=10.1.0.4:8080 target_ms=1.2 total_ms=2.5"
        );
        let fixed = AccessLog {
            target: None,
            status: 503,
            ..l
        };
        assert!(fixed.line(0, 0.1).contains("503 0 target=- "));
    }
}

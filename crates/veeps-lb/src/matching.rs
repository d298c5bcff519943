//! Rule matching: ALB's wildcard patterns and conditions, evaluated in priority order.

use crate::model::Condition;
use std::net::IpAddr;

pub use veeps_resource::wildcard;

/// What a request offers to conditions.
pub struct RequestView<'a> {
    /// The Host header (without port).
    pub host: &'a str,
    /// The path (without query).
    pub path: &'a str,
    /// The method.
    pub method: &'a str,
    /// The raw query.
    pub query: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// Header lookup.
    pub header: &'a dyn Fn(&str) -> Vec<String>,
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if `c` holds for the request.
pub fn matches(c: &Condition, r: &RequestView) -> bool {
    match c {
        Condition::Host(ps) => ps.iter().any(|p| wildcard(p, r.host, true)),
        Condition::Path(ps) => ps.iter().any(|p| wildcard(p, r.path, false)),
        Condition::Method(ms) => ms.iter().any(|m| m.eq_ignore_ascii_case(r.method)),
        Condition::Header { name, values } => {
            let got = (r.header)(name);
            got.iter()
                .any(|g| values.iter().any(|p| wildcard(p, g, true)))
        }
        Condition::Query(pairs) => {
            let q = query_pairs(r.query);
            pairs.iter().any(|(k, vp)| {
                q.iter().any(|(qk, qv)| {
                    (k.is_empty() || wildcard(k, qk, true)) && wildcard(vp, qv, true)
                })
            })
        }
        Condition::SourceIp(cidrs) => cidrs.iter().any(|c| {
            c.parse::<ipnet::IpNet>()
                .map(|n| n.contains(&r.client))
                .unwrap_or(false)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_like_alb() {
        assert!(wildcard("/api/*", "/api/v1/items", false));
        assert!(wildcard(
            "/sample-app-frontend*",
            "/sample-app-frontend/service/db",
            false
        ));
        assert!(!wildcard("/api/*", "/API/v1", false));
        assert!(wildcard("*.example.com", "Shop.Example.com", true));
        assert!(!wildcard("*.example.com", "example.com", true));
        assert!(wildcard("/a?c", "/abc", false));
        assert!(wildcard("*", "", false));
        assert!(wildcard("**x*", "yyyxyy", false));
        assert!(!wildcard("a*b*c", "aXXbXX", false));
        // Hostile patterns finish quickly (no exponential backtracking).
        let long = "a".repeat(10_000);
        assert!(!wildcard(&"*a".repeat(50), &format!("{long}b"), false));
    }

    #[test]
    fn conditions() {
        let hdr = |n: &str| {
            if n.eq_ignore_ascii_case("x-canary") {
                vec!["yes".to_string()]
            } else {
                vec![]
            }
        };
        let r = RequestView {
            host: "api.example.com",
            path: "/v1/items",
            method: "POST",
            query: "color=dark%20blue&x",
            client: "10.0.3.7".parse().unwrap(),
            header: &hdr,
        };
        assert!(matches(&Condition::Host(vec!["*.example.com".into()]), &r));
        assert!(matches(&Condition::Path(vec!["/v1/*".into()]), &r));
        assert!(matches(
            &Condition::Method(vec!["get".into(), "post".into()]),
            &r
        ));
        assert!(matches(
            &Condition::Header {
                name: "X-Canary".into(),
                values: vec!["y*".into()]
            },
            &r
        ));
        assert!(!matches(
            &Condition::Header {
                name: "X-Other".into(),
                values: vec!["*".into()]
            },
            &r
        ));
        assert!(matches(
            &Condition::Query(vec![("color".into(), "dark blue".into())]),
            &r
        ));
        assert!(matches(
            &Condition::Query(vec![("".into(), "dark*".into())]),
            &r
        ));
        assert!(!matches(
            &Condition::Query(vec![("color".into(), "red".into())]),
            &r
        ));
        assert!(matches(
            &Condition::SourceIp(vec!["10.0.0.0/16".into()]),
            &r
        ));
        assert!(!matches(
            &Condition::SourceIp(vec!["192.168.0.0/16".into(), "bad".into()]),
            &r
        ));
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz%41"), "%zzA");
    }
}

//! What the edge decides without I/O: how long an origin's answer stays fresh (the
//! origin's `Cache-Control` and `Expires` bounded by the behaviour's TTLs, as CloudFront
//! does), which behaviour a path falls under, conditional requests and byte ranges.

use std::time::{Duration, SystemTime};

/// A behaviour's bounds on freshness, in seconds (CloudFront's `min_ttl`, `default_ttl`,
/// `max_ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ttls {
    /// Fresh at least this long, whatever the origin says.
    pub min: u64,
    /// Fresh this long when the origin says nothing.
    pub default: u64,
    /// Fresh at most this long, whatever the origin says.
    pub max: u64,
}

/// An origin's caching directives (RFC 9111 5.2.2), as far as a shared cache heeds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `max-age`.
    pub max_age: Option<u64>,
    /// `s-maxage` (wins over `max-age` in a shared cache).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache`: stored, but revalidated before each use.
    pub no_cache: bool,
    /// `private`: for one user's cache only.
    pub private: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<u64>,
}

/// Reads every `Cache-Control` value of a response. Unknown directives are ignored, a
/// malformed number makes its directive count as absent (`max-age=x` is not `max-age=0`).
pub fn directives<'a>(values: impl IntoIterator<Item = &'a str>) -> Directives {
    let mut d = Directives::default();
    for v in values {
        for part in v.split(',') {
            let part = part.trim();
            let (name, arg) = match part.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (part, None),
            };
            let secs = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "max-age" => d.max_age = secs().or(d.max_age),
                "s-maxage" => d.s_maxage = secs().or(d.s_maxage),
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                "stale-if-error" => d.stale_if_error = secs(),
                _ => {}
            }
        }
    }
    d
}

/// How long an answer stays fresh at the edge, or `None` when it must not be stored.
/// CloudFront's rules: the origin's `s-maxage`, else `max-age`, else `Expires` (against
/// the origin's `Date`), else the default, always within `[min, max]`; `no-store`,
/// `private` and `no-cache` store nothing unless `min` is above zero (then `min`), and
/// `no-cache` alone stores the answer to revalidate it each time.
pub fn freshness(
    d: &Directives,
    expires: Option<SystemTime>,
    date: SystemTime,
    ttls: &Ttls,
) -> Option<u64> {
    if d.no_store || d.private {
        return (ttls.min > 0).then_some(ttls.min);
    }
    if d.no_cache {
        return Some(ttls.min);
    }
    let said = d
        .s_maxage
        .or(d.max_age)
        .or_else(|| expires.map(|e| e.duration_since(date).unwrap_or(Duration::ZERO).as_secs()));
    let ttl = said.unwrap_or(ttls.default);
    Some(ttl.clamp(ttls.min, ttls.max.max(ttls.min)))
}

/// Whether `path` falls under a behaviour's `pattern`: CloudFront's path patterns, where
/// `*` is any run of characters (`/` included) and `?` one character, matched against the
/// whole path, case-sensitively.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern = pattern.strip_prefix('/').unwrap_or(pattern).as_bytes();
    let path = path.strip_prefix('/').unwrap_or(path).as_bytes();
    // Iterative glob with one backtrack point: linear for one `*`, never exponential.
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < path.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == path[s]) {
            p += 1;
            s += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, s));
            p += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Whether an invalidation path (`/images/*`, `/index.html`, `/*`) covers `path`: a
/// trailing `*` is a prefix, anything else the exact path.
pub fn invalidates(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// Whether a request's validators match a stored answer's, so that `304 Not Modified`
/// answers it (RFC 9110 13.1.2 and 13.1.3: `If-None-Match` with weak comparison wins over
/// `If-Modified-Since`).
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<SystemTime>,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    if let Some(inm) = if_none_match {
        let Some(etag) = etag else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    match (if_modified_since, last_modified) {
        (Some(since), Some(lm)) => lm <= since,
        _ => false,
    }
}

/// A byte range of a body of `len` bytes that a `Range` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The whole body (no range, several ranges, or a unit other than bytes).
    Whole,
    /// `start..=end`.
    Part(u64, u64),
    /// Nothing of it: `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Reads a `Range` header against a body of `len` bytes (RFC 9110 14.1.2). One range is
/// served as it asks; several are answered with the whole body, which RFC 9110 allows.
pub fn range(header: Option<&str>, len: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        // bytes=-N: the last N bytes.
        (None, Some(n)) if a.is_empty() => {
            if n == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part(len.saturating_sub(n), len - 1)
            }
        }
        (Some(start), None) if b.is_empty() => {
            if start >= len {
                Range::Unsatisfiable
            } else {
                Range::Part(start, len - 1)
            }
        }
        (Some(start), Some(end)) if start <= end => {
            if start >= len {
                Range::Unsatisfiable
            } else {
                Range::Part(start, end.min(len - 1))
            }
        }
        _ => Range::Whole,
    }
}

/// A content coding the edge compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Coding {
    /// `br`.
    Brotli,
    /// `gzip`.
    Gzip,
}

impl Coding {
    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The coding to answer with, from a request's `Accept-Encoding`: brotli when accepted,
/// else gzip, else none (`q=0` refuses a coding).
pub fn negotiate(accept_encoding: Option<&str>) -> Option<Coding> {
    let accept = accept_encoding?;
    let mut br = false;
    let mut gzip = false;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match name.as_str() {
            "br" => br = true,
            "gzip" | "x-gzip" => gzip = true,
            "*" => {
                br = true;
                gzip = true;
            }
            _ => {}
        }
    }
    if br {
        Some(Coding::Brotli)
    } else if gzip {
        Some(Coding::Gzip)
    } else {
        None
    }
}

/// Whether a media type is worth compressing (text and the structured formats; not
/// images, archives or video, which are compressed already), as CloudFront's list.
pub fn compressible(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || matches!(
            ct.as_str(),
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "application/x-javascript"
                | "application/ld+json"
                | "application/manifest+json"
                | "application/wasm"
                | "image/svg+xml"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Ttls = Ttls {
        min: 0,
        default: 30,
        max: 60,
    };

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn freshness_is_the_origins_word_within_the_behaviours_bounds() {
        let f = |cc: &str| freshness(&directives([cc]), None, at(0), &T);
        // The reference's 0/30/60: max-age=3600 is capped at 60, silence gets 30.
        assert_eq!(f("max-age=3600"), Some(60));
        assert_eq!(f("public, max-age=10"), Some(10));
        assert_eq!(f(""), Some(30));
        // s-maxage wins over max-age in a shared cache.
        assert_eq!(f("max-age=5, s-maxage=20"), Some(20));
        // Never stored: no-store, private (with min_ttl 0); no-cache: stored, stale at once.
        assert_eq!(f("no-store"), None);
        assert_eq!(f("private, max-age=50"), None);
        assert_eq!(f("no-cache"), Some(0));
        // A min_ttl above zero holds whatever the origin says (CloudFront's rule).
        let m = Ttls {
            min: 5,
            default: 30,
            max: 60,
        };
        assert_eq!(
            freshness(&directives(["no-store"]), None, at(0), &m),
            Some(5)
        );
        assert_eq!(
            freshness(&directives(["max-age=1"]), None, at(0), &m),
            Some(5)
        );
        // Expires against the origin's Date; one in the past is stale at once.
        assert_eq!(
            freshness(&directives([]), Some(at(100)), at(80), &T),
            Some(20)
        );
        assert_eq!(
            freshness(&directives([]), Some(at(10)), at(80), &T),
            Some(0)
        );
        // A malformed number is no directive at all.
        assert_eq!(f("max-age=soon"), Some(30));
        let d = directives(["max-age=1, stale-while-revalidate=30", "stale-if-error=600"]);
        assert_eq!(d.stale_while_revalidate, Some(30));
        assert_eq!(d.stale_if_error, Some(600));
        assert!(directives(["Proxy-Revalidate"]).must_revalidate);
    }

    #[test]
    fn path_patterns_and_invalidation_paths() {
        assert!(path_matches("/images/*", "/images/a/b.png"));
        assert!(path_matches("images/*.png", "/images/x.png"));
        assert!(!path_matches("/images/*.png", "/images/x.jpg"));
        assert!(path_matches("*.js", "/a/b/c.js"));
        assert!(path_matches("/a?c", "/abc"));
        assert!(!path_matches("/a?c", "/ac"));
        assert!(path_matches("*", "/"));
        assert!(!path_matches("/API/*", "/api/x"));
        // Many stars against a long path stay fast.
        let long = "/".to_string() + &"a".repeat(5000);
        assert!(!path_matches("/*a*a*a*a*a*a*b", &long));
        assert!(invalidates("/*", "/anything"));
        assert!(invalidates("/img/*", "/img/a.png"));
        assert!(!invalidates("/img/*", "/css/a.css"));
        assert!(invalidates("/index.html", "/index.html"));
        assert!(!invalidates("/index.html", "/index.html.bak"));
    }

    #[test]
    fn validators_answer_304() {
        assert!(not_modified(Some("\"a\""), None, Some("\"a\""), None));
        assert!(not_modified(
            Some("W/\"a\", \"b\""),
            None,
            Some("\"a\""),
            None
        ));
        assert!(!not_modified(Some("\"b\""), None, Some("\"a\""), None));
        assert!(not_modified(Some("*"), None, Some("\"a\""), None));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            Some("\"b\""),
            Some(at(100)),
            Some("\"a\""),
            Some(at(50))
        ));
        assert!(not_modified(None, Some(at(100)), None, Some(at(50))));
        assert!(!not_modified(None, Some(at(10)), None, Some(at(50))));
        assert!(!not_modified(None, None, Some("\"a\""), Some(at(50))));
    }

    #[test]
    fn ranges_of_a_cached_body() {
        assert_eq!(range(None, 100), Range::Whole);
        assert_eq!(range(Some("bytes=0-9"), 100), Range::Part(0, 9));
        assert_eq!(range(Some("bytes=90-"), 100), Range::Part(90, 99));
        assert_eq!(range(Some("bytes=-10"), 100), Range::Part(90, 99));
        assert_eq!(range(Some("bytes=-500"), 100), Range::Part(0, 99));
        assert_eq!(range(Some("bytes=50-500"), 100), Range::Part(50, 99));
        assert_eq!(range(Some("bytes=100-"), 100), Range::Unsatisfiable);
        assert_eq!(range(Some("bytes=-0"), 100), Range::Unsatisfiable);
        assert_eq!(range(Some("bytes=0-1,5-6"), 100), Range::Whole);
        assert_eq!(range(Some("bytes=9-1"), 100), Range::Whole);
        assert_eq!(range(Some("items=0-1"), 100), Range::Whole);
        assert_eq!(range(Some("bytes=x-y"), 100), Range::Whole);
    }

    #[test]
    fn compression_is_negotiated() {
        assert_eq!(negotiate(Some("gzip, deflate, br")), Some(Coding::Brotli));
        assert_eq!(negotiate(Some("gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("br;q=0, gzip;q=0.5")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("identity")), None);
        assert_eq!(negotiate(None), None);
        assert_eq!(negotiate(Some("*")), Some(Coding::Brotli));
        assert!(compressible(Some("text/html; charset=utf-8")));
        assert!(compressible(Some("application/json")));
        assert!(!compressible(Some("image/png")));
        assert!(!compressible(None));
    }
}

//! AWS Signature Version 4 as a server checks it, for the AWS APIs other than S3 (whose
//! listener checks its own): the `Authorization` header's credential scope, the canonical
//! request (paths encoded twice, as every service but S3 signs them), the signing key
//! derived from the secret, a constant-time comparison, and a date within 15 minutes.

use sha2::{Digest, Sha256};

/// Longest clock skew accepted, in seconds (AWS's).
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// What a valid signature says about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The access key id.
    pub access_key: String,
    /// The region of the credential scope.
    pub region: String,
    /// The service of the credential scope (`lambda`).
    pub service: String,
}

/// Why a request is refused, with the code AWS's JSON APIs answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No `Authorization` header.
    #[error("Missing Authentication Token")]
    Missing,
    /// A header that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// The access key id is unknown.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The signature does not match.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    Mismatch,
    /// The date is too far from now.
    #[error(
        "Signature expired: {0} is now earlier or later than 15 minutes from the current time."
    )]
    Expired(String),
}

impl SigError {
    /// The error code (`x-amzn-ErrorType`) AWS answers with.
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Missing => "MissingAuthenticationTokenException",
            SigError::Malformed(_) => "IncompleteSignatureException",
            SigError::UnknownKey => "UnrecognizedClientException",
            SigError::Mismatch | SigError::Expired(_) => "InvalidSignatureException",
        }
    }
}

/// The service a request's credential scope names (header or presigned query), if any:
/// what routes it on an endpoint that serves several.
pub fn scope_service(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    let cred = authorization
        .and_then(|a| a.split("Credential=").nth(1))
        .map(|c| c.split([',', ' ']).next().unwrap_or_default().to_string())
        .or_else(|| {
            query?
                .split('&')
                .find_map(|p| p.strip_prefix("X-Amz-Credential="))
                .map(pct_decode)
        })?;
    cred.split('/').nth(3).map(String::from)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    Keyed::new(key).mac(data)
}

/// HMAC-SHA256 under one key, its padded key blocks already hashed: a MAC is then the
/// data's blocks and one more.
#[derive(Clone)]
struct Keyed {
    inner: Sha256,
    outer: Sha256,
}

impl Keyed {
    fn new(key: &[u8]) -> Keyed {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(k.map(|b| b ^ 0x36));
        let mut outer = Sha256::new();
        outer.update(k.map(|b| b ^ 0x5c));
        Keyed { inner, outer }
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(data);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// Signing keys a thread derived lately, with the secret and scope each is for.
type SigningCache = Vec<(String, String, String, String, Keyed)>;

/// Signing keys kept per thread: a day's key serves every request of its scope (as the
/// SDKs keep theirs), and deriving one is four HMACs, most of a small request's check.
const SIGNING_KEYS: usize = 16;

thread_local! {
    static SIGNING: std::cell::RefCell<SigningCache> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The SigV4 signing key of `secret` for `date`/`region`/`service`, as HMAC states.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Keyed {
    let derive = || {
        let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        Keyed::new(&hmac(&k, b"aws4_request"))
    };
    SIGNING.with(|c| {
        let Ok(mut cache) = c.try_borrow_mut() else {
            return derive();
        };
        let hit = cache
            .iter()
            .find(|(s, d, r, v, _)| s == secret && d == date && r == region && v == service);
        if let Some((.., k)) = hit {
            return k.clone();
        }
        let k = derive();
        if cache.len() >= SIGNING_KEYS {
            cache.remove(0);
        }
        cache.push((
            secret.to_string(),
            date.to_string(),
            region.to_string(),
            service.to_string(),
            k.clone(),
        ));
        k
    })
}

/// `s` percent-encoded as SigV4 wants: everything but `A-Za-z0-9-._~` (and `/` when
/// `keep_slash`).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// `s` with its `%XX` escapes decoded (bytes that are not UTF-8 replaced).
pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical query string: every pair decoded, encoded strictly, sorted (without
/// `X-Amz-Signature`).
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !p.starts_with("X-Amz-Signature="))
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (canonical_part(k), canonical_part(v))
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len());
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// A query's key or value in canonical form: decoded and encoded strictly; as it is when
/// it is already so (unreserved bytes, and escapes in upper-case hex of ASCII bytes that
/// are not), as signed URLs' parameters are.
fn canonical_part(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let hex = |h: u8| match h {
        b'0'..=b'9' => Some(h - b'0'),
        b'A'..=b'F' => Some(h - b'A' + 10),
        _ => None,
    };
    let mut i = 0;
    let canonical = loop {
        let Some(&c) = b.get(i) else {
            break true;
        };
        if unreserved(c) {
            i += 1;
            continue;
        }
        let escaped = (c == b'%')
            .then(|| Some(hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(v) if v < 0x80 && !unreserved(v) => i += 3,
            _ => break false,
        }
    };
    if canonical {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(uri_encode(&pct_decode(s), false))
    }
}

struct Auth<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_auth(h: &str) -> Result<Auth<'_>, SigError> {
    let bad = |m: &str| SigError::Malformed(m.to_string());
    let rest = h
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| bad("Authorization header requires the AWS4-HMAC-SHA256 algorithm"))?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let cred = cred.ok_or_else(|| bad("Authorization header requires 'Credential' parameter"))?;
    let signed =
        signed.ok_or_else(|| bad("Authorization header requires 'SignedHeaders' parameter"))?;
    let signature =
        sig.ok_or_else(|| bad("Authorization header requires 'Signature' parameter"))?;
    let f: Vec<&str> = cred.split('/').collect();
    if f.len() != 5 || f[4] != "aws4_request" {
        return Err(bad(
            "Credential should be scoped to a valid region, like ACCESS_KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    }
    Ok(Auth {
        access_key: f[0],
        date: f[1],
        region: f[2],
        service: f[3],
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// An `X-Amz-Date` (`20261202T061500Z`) in Unix seconds.
pub fn amz_time(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(s, &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Checks a request signed with SigV4 in its `Authorization` header: `path` and `query` as
/// sent (still percent-encoded), `headers` as (name, value) pairs, and `body` whole;
/// `secret` gives the secret of an access key id. `now` is Unix seconds.
pub fn verify<'h>(
    method: &str,
    path: &str,
    query: &str,
    headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    body: &[u8],
    now: i64,
    secret: impl FnOnce(&str) -> Option<String>,
) -> Result<Signed, SigError> {
    let header = |name: &str| -> Vec<String> {
        headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let authz = header("authorization");
    let authz = authz.first().ok_or(SigError::Missing)?;
    let a = parse_auth(authz)?;
    let date = header("x-amz-date").into_iter().next().ok_or_else(|| {
        SigError::Malformed("a request signed with SigV4 needs X-Amz-Date".into())
    })?;
    let t = amz_time(&date)
        .ok_or_else(|| SigError::Malformed(format!("X-Amz-Date {date} is not a date")))?;
    if !date.starts_with(a.date) {
        return Err(SigError::Malformed(
            "the credential's date is not X-Amz-Date's".into(),
        ));
    }
    if (t - now).abs() > MAX_SKEW_SECS {
        return Err(SigError::Expired(date));
    }
    if !a.signed_headers.contains(&"host") {
        return Err(SigError::Malformed("'Host' must be a signed header".into()));
    }
    let secret = secret(a.access_key).ok_or(SigError::UnknownKey)?;
    let body_hash = hex::encode(Sha256::digest(body));
    let payload = match header("x-amz-content-sha256").into_iter().next() {
        Some(h) if h == "UNSIGNED-PAYLOAD" => h,
        Some(h) if h.eq_ignore_ascii_case(&body_hash) => h,
        Some(_) => return Err(SigError::Mismatch),
        None => body_hash,
    };
    let mut canonical = format!(
        "{method}\n{}\n{}\n",
        uri_encode(if path.is_empty() { "/" } else { path }, true),
        canonical_query(query)
    );
    for name in &a.signed_headers {
        let values = header(name);
        let joined = values
            .iter()
            .map(|v| canonical_value(v).into_owned())
            .collect::<Vec<_>>()
            .join(",");
        canonical.push_str(&format!("{}:{joined}\n", name.to_ascii_lowercase()));
    }
    canonical.push_str(&format!("\n{}\n{payload}", a.signed_headers.join(";")));
    let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    if !signature_matches(&secret, a.date, a.region, a.service, &to_sign, a.signature) {
        return Err(SigError::Mismatch);
    }
    Ok(Signed {
        access_key: a.access_key.to_string(),
        region: a.region.to_string(),
        service: a.service.to_string(),
    })
}

/// A header's value as SigV4 signs it: trimmed, inner runs of spaces made one.
pub fn canonical_value(v: &str) -> std::borrow::Cow<'_, str> {
    let b = v.as_bytes();
    let space = |c: &u8| (*c as char).is_whitespace();
    let plain = v.is_ascii()
        && !b.first().is_some_and(space)
        && !b.last().is_some_and(space)
        && !b
            .iter()
            .enumerate()
            .any(|(i, c)| space(c) && (*c != b' ' || b.get(i + 1).is_some_and(space)));
    if plain {
        std::borrow::Cow::Borrowed(v)
    } else {
        std::borrow::Cow::Owned(v.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// Whether `signature` (hex) is the SigV4 signature of `to_sign` under `secret` for the
/// scope `date`/`region`/`service`; compared in constant time.
pub fn signature_matches(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    to_sign: &str,
    signature: &str,
) -> bool {
    let mut want = [0u8; 64];
    let mac = signing_key(secret, date, region, service).mac(to_sign.as_bytes());
    if hex::encode_to_slice(mac, &mut want).is_err() {
        return false;
    }
    let got = signature.as_bytes();
    want.len() == got.len()
        && want
            .iter()
            .zip(got.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (the IAM ListUsers GET of the SigV4 documentation).
    #[test]
    fn the_documented_example_verifies_and_a_changed_byte_does_not() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        let headers = |auth: &'static str| {
            vec![
                ("Authorization", auth.as_bytes()),
                (
                    "Content-Type",
                    &b"application/x-www-form-urlencoded; charset=utf-8"[..],
                ),
                ("Host", &b"iam.amazonaws.com"[..]),
                ("X-Amz-Date", &b"20150830T123600Z"[..]),
            ]
        };
        let now = amz_time("20150830T123600Z").unwrap();
        let run = |query: &str, auth: &'static str, now: i64| {
            verify(
                "GET",
                "/",
                query,
                headers(auth).into_iter(),
                b"",
                now,
                |k| (k == "AKIDEXAMPLE").then(|| secret.to_string()),
            )
        };
        let ok = run("Action=ListUsers&Version=2010-05-08", auth, now).unwrap();
        assert_eq!(ok.service, "iam");
        assert_eq!(ok.access_key, "AKIDEXAMPLE");
        // The query's order does not matter; its content does.
        assert!(run("Version=2010-05-08&Action=ListUsers", auth, now).is_ok());
        assert_eq!(
            run("Action=ListGroups&Version=2010-05-08", auth, now),
            Err(SigError::Mismatch)
        );
        assert!(matches!(
            run("Action=ListUsers&Version=2010-05-08", auth, now + 16 * 60),
            Err(SigError::Expired(_))
        ));
        let other = "AWS4-HMAC-SHA256 Credential=AKIDOTHER/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        assert_eq!(
            run("Action=ListUsers&Version=2010-05-08", other, now),
            Err(SigError::UnknownKey)
        );
        for bad in ["AWS4-HMAC-SHA256 Credential=x", "Basic abc", ""] {
            let leaked: &'static str = Box::leak(bad.to_string().into_boxed_str());
            assert!(run("", leaked, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_scope_names_the_service() {
        assert_eq!(
            scope_service(
                Some("AWS4-HMAC-SHA256 Credential=AK/20261201/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00"),
                None
            )
            .as_deref(),
            Some("lambda")
        );
        assert_eq!(
            scope_service(
                None,
                Some("X-Amz-Credential=AK%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=1")
            )
            .as_deref(),
            Some("s3")
        );
        assert_eq!(scope_service(Some("AWS AK:sig"), None), None);
    }

    #[test]
    fn every_byte_but_the_unreserved_is_escaped_in_upper_case_hex() {
        assert_eq!(uri_encode("a b/é~*", false), "a%20b%2F%C3%A9~%2A");
        assert_eq!(uri_encode("a b/é~*", true), "a%20b/%C3%A9~%2A");
        assert_eq!(
            canonical_query("b=2&a=x%2Fy&X-Amz-Signature=00&a=%7e"),
            "a=x%2Fy&a=~&b=2"
        );
    }

    #[test]
    fn paths_are_encoded_as_services_other_than_s3_sign_them() {
        assert_eq!(
            uri_encode(
                "/2015-03-31/functions/arn%3Aveeps%3Alambda/invocations",
                true
            ),
            "/2015-03-31/functions/arn%253Aveeps%253Alambda/invocations"
        );
    }

    #[test]
    fn canonical_queries_are_the_same_whether_a_part_is_taken_as_it_is_or_recoded() {
        // Every part decoded and encoded again, as SigV4's documentation spells it.
        let slow = |query: &str| {
            let mut pairs: Vec<(String, String)> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| !p.starts_with("X-Amz-Signature="))
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (
                        uri_encode(&pct_decode(k), false),
                        uri_encode(&pct_decode(v), false),
                    )
                })
                .collect();
            pairs.sort();
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        let pieces = [
            "a",
            "Z",
            "0",
            "-",
            ".",
            "_",
            "~",
            "%2F",
            "%2f",
            "%41",
            "%7E",
            "%C3%A9",
            "%C3",
            "%",
            "%2",
            "%G0",
            "+",
            " ",
            "é",
            "/",
            "=",
            "&",
            "X-Amz-Signature=",
            "%00",
            "%7F",
            "%80",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let n = (next() % 12) as usize;
            let q: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            assert_eq!(canonical_query(&q), slow(&q), "{q:?}");
        }
        let presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261202%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261202T101010Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        assert_eq!(canonical_query(presigned), slow(presigned));
        assert!(matches!(
            canonical_part("AK%2F20261202%2Fus-east-1%2Fs3%2Faws4_request"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn header_values_are_trimmed_and_their_inner_runs_made_one_space() {
        for v in [
            "",
            " ",
            "a",
            "a b",
            " a",
            "a ",
            "a  b",
            "a\tb",
            "a \t b",
            "a\x0bb",
            "\u{a0}a",
            "é  è",
            "a b c",
            "host.example:9000",
        ] {
            assert_eq!(
                canonical_value(v),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
                "{v:?}"
            );
        }
    }

    #[test]
    fn kept_signing_keys_verify_exactly_what_derived_ones_do() {
        // Derived afresh each time, as SigV4's documentation spells it.
        let sign = |secret: &str, date: &str, region: &str, to_sign: &str| {
            let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
            let k = hmac(&k, region.as_bytes());
            let k = hmac(&k, b"s3");
            let k = hmac(&k, b"aws4_request");
            hex::encode(hmac(&k, to_sign.as_bytes()))
        };
        // More scopes than are kept, twice over, so that keys are both found and dropped.
        for round in 0..2 {
            for i in 0..(SIGNING_KEYS * 2) {
                let (secret, other) = (format!("secret-{i}"), format!("secret-{}", i + 1));
                let date = format!("202612{:02}", 1 + i % 28);
                let to_sign = format!("request {round} {i}");
                let sig = sign(&secret, &date, "us-east-1", &to_sign);
                let verifies = |secret: &str, region: &str, service: &str, to_sign: &str| {
                    signature_matches(secret, &date, region, service, to_sign, &sig)
                };
                assert!(verifies(&secret, "us-east-1", "s3", &to_sign));
                // The same scope under another secret, another region or service, or
                // another string to sign does not verify.
                assert!(!verifies(&other, "us-east-1", "s3", &to_sign));
                assert!(!verifies(&secret, "eu-west-1", "s3", &to_sign));
                assert!(!verifies(&secret, "us-east-1", "sqs", &to_sign));
                assert!(!verifies(&secret, "us-east-1", "s3", "x"));
            }
        }
        SIGNING.with(|c| assert!(c.borrow().len() <= SIGNING_KEYS));
    }
}

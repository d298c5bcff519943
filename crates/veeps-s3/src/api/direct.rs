//! The direct path of the commonest read: a GET of a whole small object signed with SigV4
//! (a presigned URL, or the `Authorization` header as the SDKs sign), path-style, with no
//! query beyond the signature's and no header that asks for more (no range, condition,
//! checksum or other `x-amz-*`). It checks the signature
//! as s3s does, authorises with the same [`Gate`] functions as every request, and answers
//! with the headers s3s would write. Anything else, and anything that does not verify, is
//! not allowed or is not found, goes the general way, which gives S3's own error answers
//! (and counts failed signatures): this path only ever serves what that way would serve.

use super::serve::bucket_of_host;
use super::*;
use crate::access::{Gate, Peer};
use veeps_iam::sigv4::canonical_value;

/// Headers a request on this path may carry; any other sends it the general way.
const PLAIN_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "referer",
];

/// Headers a request signed in its `Authorization` header may carry besides, and sign.
const SIGNING_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
];

/// The SHA-256 of an empty body, in hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The presigned URL's parameters, each exactly once and nothing else.
const PRESIGN_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// Longest life of a presigned URL (seconds) and the clock skew allowed ahead of now.
const MAX_EXPIRES: i64 = 7 * 24 * 3600;
const MAX_SKEW: i64 = 900;

/// The answer to `req` when it is a plain signed GET this path serves; `None` sends it the
/// general way.
pub(super) fn get<B>(
    req: &hyper::Request<B>,
    api: &Api,
    gate: &Gate,
    peer: std::net::SocketAddr,
) -> Option<hyper::Response<s3s::Body>> {
    if req.method() != hyper::Method::GET || req.version() > hyper::Version::HTTP_11 {
        return None;
    }
    let headers = req.headers();
    if headers
        .keys()
        .any(|n| !PLAIN_HEADERS.contains(&n.as_str()) && !SIGNING_HEADERS.contains(&n.as_str()))
        || headers.keys_len() != headers.len()
    {
        return None;
    }
    let host = headers.get(hyper::header::HOST)?.to_str().ok()?;
    if bucket_of_host(host).is_some() {
        return None;
    }
    let (bucket, key) = plain_path(req.uri().path())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (p, canonical) = match (req.uri().query(), headers.get("authorization")) {
        (Some(query), None) => {
            let p = presigned(query)?;
            if now - p.date > p.expires
                || p.date - now > MAX_SKEW
                || headers.contains_key("x-amz-date")
                || headers.contains_key("x-amz-content-sha256")
            {
                return None;
            }
            let canonical = format!(
                "GET\n{}\n{}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD",
                req.uri().path(),
                veeps_iam::sigv4::canonical_query(query),
                canonical_value(host),
            );
            (p, canonical)
        }
        (None, Some(authorization)) => {
            let (p, signed) = header_signed(authorization.to_str().ok()?, headers)?;
            if (now - p.date).abs() > MAX_SKEW {
                return None;
            }
            let mut canonical = format!("GET\n{}\n\n", req.uri().path());
            for name in signed.split(';') {
                let value = headers.get(name)?.to_str().ok()?;
                canonical.push_str(&format!("{name}:{}\n", canonical_value(value)));
            }
            let payload = headers.get("x-amz-content-sha256")?.to_str().ok()?;
            canonical.push_str(&format!("\n{signed}\n{payload}"));
            (p, canonical)
        }
        _ => return None,
    };
    // Temporary credentials go the general way, which checks their session token.
    if gate.access.session(p.access_key).is_some() {
        return None;
    }
    let secret = gate.secret_of(p.access_key)?;
    // `AWS4-HMAC-SHA256\nDATE\nDAY/REGION/s3/aws4_request\nHEX(SHA256(canonical))`.
    let mut hash = [0u8; 64];
    hex::encode_to_slice(
        <sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()),
        &mut hash,
    )
    .ok()?;
    let mut to_sign = String::with_capacity(160);
    for part in [
        "AWS4-HMAC-SHA256\n",
        p.amz_date,
        "\n",
        p.day,
        "/",
        p.region,
        "/s3/aws4_request\n",
        std::str::from_utf8(&hash).ok()?,
    ] {
        to_sign.push_str(part);
    }
    if !veeps_iam::sigv4::signature_matches(&secret, p.day, p.region, "s3", &to_sign, p.signature) {
        return None;
    }
    let creds = s3s::auth::Credentials {
        access_key: p.access_key.to_string(),
        secret_key: s3s::auth::SecretKey::from(secret),
    };
    let caller = gate.caller(Some(&creds), req.headers(), req.uri(), Some(Peer(peer)));
    let action = crate::access::action_of("GetObject", false)?;
    let resource = format!("arn:aws:s3:::{bucket}/{key}");
    if !caller.may(&gate.access, action, bucket, &resource) {
        return None;
    }
    let store = &api.store;
    let (b, meta, body) = ObjectStore::again_if_replaced(|| {
        let (b, meta) = store.lookup(bucket, key, None)?;
        if meta.size > SMALL || !meta.metadata.values().all(|v| plain_value(v)) {
            return Ok(None);
        }
        let body = store.reader(&b, &meta, None)?.read_whole()?;
        Ok(Some((b, meta, body)))
    })
    .ok()??;
    let len = body.len() as i64;
    let out = objects::get_output(
        &meta,
        b.versioning,
        None,
        len,
        StreamingBlob::from(s3s::Body::from(body.clone())),
    );
    respond(out, body)
}

/// A path-style `/bucket/key` whose every byte is unreserved (so it is its own canonical
/// form and needs no decoding), with a valid bucket name and a plain key.
fn plain_path(path: &str) -> Option<(&str, &str)> {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    let (bucket, key) = path.strip_prefix('/')?.split_once('/')?;
    let plain_key = !key.is_empty()
        && !key.starts_with('/')
        && !key.ends_with('/')
        && !key.contains("//")
        && key.split('/').all(|s| s != "." && s != "..");
    (plain && plain_key && crate::store::check_bucket_name(bucket).is_ok()).then_some((bucket, key))
}

/// An `Authorization` header's signature and its signed headers (`;`-separated), when
/// it is AWS4-HMAC-SHA256 with an S3 scope and signs `host`, `x-amz-date` and
/// `x-amz-content-sha256` (an unsigned payload or an empty body's hash), in order, and
/// nothing but headers this path lets through, all present.
fn header_signed<'a>(
    authorization: &'a str,
    headers: &'a hyper::HeaderMap,
) -> Option<(Presigned<'a>, &'a str)> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (slot, v) = if let Some(v) = part.strip_prefix("Credential=") {
            (&mut credential, v)
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            (&mut signed, v)
        } else if let Some(v) = part.strip_prefix("Signature=") {
            (&mut signature, v)
        } else {
            return None;
        };
        if slot.replace(v).is_some() {
            return None;
        }
    }
    let (credential, signed, signature) = (credential?, signed?, signature?);
    let names: Vec<&str> = signed.split(';').collect();
    let sorted = names.windows(2).all(|w| w[0] < w[1]);
    let known = names.iter().all(|n| {
        *n != "authorization"
            && (PLAIN_HEADERS.contains(n) || SIGNING_HEADERS.contains(n))
            && headers.contains_key(*n)
    });
    let required = ["host", "x-amz-date", "x-amz-content-sha256"]
        .iter()
        .all(|r| names.contains(r));
    let payload = headers.get("x-amz-content-sha256")?.to_str().ok()?;
    if !sorted || !known || !required || !(payload == "UNSIGNED-PAYLOAD" || payload == EMPTY_SHA256)
    {
        return None;
    }
    let amz_date = headers.get("x-amz-date")?.to_str().ok()?;
    Some((scope(credential, "/", amz_date, signature)?, signed))
}

/// Whether a user metadata value goes out as it is (s3s encodes others, RFC 2047).
fn plain_value(v: &str) -> bool {
    v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A presigned URL's parts.
struct Presigned<'a> {
    access_key: &'a str,
    day: &'a str,
    region: &'a str,
    amz_date: &'a str,
    /// `X-Amz-Date` in Unix seconds.
    date: i64,
    expires: i64,
    signature: &'a str,
}

/// The presigned parameters of `query`, when it has exactly those and they are well
/// formed: AWS4-HMAC-SHA256, an S3 scope of the date's day, `host` alone signed.
fn presigned(query: &str) -> Option<Presigned<'_>> {
    let mut found: [Option<&str>; 6] = [None; 6];
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=')?;
        let i = PRESIGN_PARAMS.iter().position(|p| *p == k)?;
        if found[i].replace(v).is_some() {
            return None;
        }
    }
    let [Some(algorithm), Some(credential), Some(amz_date), Some(expires), Some(signed), Some(signature)] =
        found
    else {
        return None;
    };
    if algorithm != "AWS4-HMAC-SHA256" || signed != "host" {
        return None;
    }
    // `AK%2FDAY%2FREGION%2Fs3%2Faws4_request`.
    let p = scope(credential, "%2F", amz_date, signature)?;
    let expires: i64 = expires.parse().ok()?;
    (1..=MAX_EXPIRES)
        .contains(&expires)
        .then_some(Presigned { expires, ..p })
}

/// A credential's scope (`AK/DAY/REGION/s3/aws4_request`, its parts split at `sep`), its
/// date and its signature, checked (plain parts, the scope's day the date's, 64 hex
/// digits); `expires` is left 0.
fn scope<'a>(
    credential: &'a str,
    sep: &str,
    amz_date: &'a str,
    signature: &'a str,
) -> Option<Presigned<'a>> {
    let mut parts = credential.split(sep);
    let (Some(access_key), Some(day), Some(region), Some(service), Some(end), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let plain =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if service != "s3"
        || end != "aws4_request"
        || !plain(access_key)
        || !plain(region)
        || day.len() != 8
        || !amz_date.starts_with(day)
        || signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let date = veeps_iam::sigv4::amz_time(amz_date)?;
    Some(Presigned {
        access_key,
        day,
        region,
        amz_date,
        date,
        expires: 0,
        signature,
    })
}

/// The answer, with the headers s3s writes for the same output, in its order.
fn respond(out: GetObjectOutput, body: Bytes) -> Option<hyper::Response<s3s::Body>> {
    use hyper::header::{self, HeaderName, HeaderValue};
    let mut r = hyper::Response::new(s3s::Body::from(body));
    let h = r.headers_mut();
    let mut put = |name: HeaderName, v: Option<String>| -> Option<()> {
        if let Some(v) = v {
            h.insert(name, HeaderValue::try_from(v).ok()?);
        }
        Some(())
    };
    put(header::ACCEPT_RANGES, out.accept_ranges)?;
    put(header::CACHE_CONTROL, out.cache_control)?;
    put(header::CONTENT_DISPOSITION, out.content_disposition)?;
    put(header::CONTENT_ENCODING, out.content_encoding)?;
    put(header::CONTENT_LANGUAGE, out.content_language)?;
    put(
        header::CONTENT_LENGTH,
        out.content_length.map(|n| n.to_string()),
    )?;
    put(header::CONTENT_TYPE, out.content_type)?;
    put(
        header::ETAG,
        out.e_tag.map(|e| format!("\"{}\"", e.value())),
    )?;
    put(header::LAST_MODIFIED, out.last_modified.and_then(http_date))?;
    for (k, v) in out.metadata.unwrap_or_default() {
        let name = HeaderName::try_from(format!("x-amz-meta-{k}")).ok()?;
        put(name, Some(v))?;
    }
    put(
        HeaderName::from_static("x-amz-server-side-encryption"),
        out.server_side_encryption.map(|s| s.as_str().to_string()),
    )?;
    put(
        HeaderName::from_static("x-amz-storage-class"),
        out.storage_class.map(|s| s.as_str().to_string()),
    )?;
    put(HeaderName::from_static("x-amz-version-id"), out.version_id)?;
    Some(r)
}

/// `t` as s3s writes an HTTP date (`Wed, 02 Dec 2026 11:50:00 GMT`), without a format
/// description to interpret each time.
fn http_date(t: s3s::dto::Timestamp) -> Option<String> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = time::OffsetDateTime::from(t.clone());
    if !d.offset().is_utc() || !(0..=9999).contains(&d.year()) {
        let mut v = vec![];
        t.format(s3s::dto::TimestampFormat::HttpDate, &mut v).ok()?;
        return String::from_utf8(v).ok();
    }
    let mut out = String::with_capacity(29);
    let two = |out: &mut String, n: u8| {
        out.push((b'0' + n / 10) as char);
        out.push((b'0' + n % 10) as char);
    };
    out.push_str(DAYS[d.weekday().number_days_from_monday() as usize]);
    out.push_str(", ");
    two(&mut out, d.day());
    out.push(' ');
    out.push_str(MONTHS[d.month() as usize - 1]);
    out.push(' ');
    let y = d.year() as u16;
    two(&mut out, (y / 100) as u8);
    two(&mut out, (y % 100) as u8);
    out.push(' ');
    two(&mut out, d.hour());
    out.push(':');
    two(&mut out, d.minute());
    out.push(':');
    two(&mut out, d.second());
    out.push_str(" GMT");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Access;
    use std::collections::BTreeMap;
    use veeps_kms::Kms;
    use veeps_state::Store;

    const ROOT: (&str, &str) = (
        "VKROOTKEY000000000",
        "rootsecret0000000000000000000000000000000",
    );
    const PEER: &str = "192.0.2.10:40000";

    #[test]
    fn http_dates_are_written_as_s3s_writes_them() {
        let mut t = -63_000_000_000i64;
        while t < 253_000_000_000 {
            let d = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
            let ts = s3s::dto::Timestamp::from(d);
            let mut v = vec![];
            ts.format(s3s::dto::TimestampFormat::HttpDate, &mut v)
                .unwrap();
            assert_eq!(http_date(ts), Some(String::from_utf8(v).unwrap()), "{d}");
            t += 7_777_777;
        }
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        ring::hmac::sign(&k, data.as_bytes()).as_ref().to_vec()
    }

    /// A URL presigned as the AWS SDKs do, `age` seconds old and living `expires`.
    fn presign(id: &str, secret: &str, path: &str, age: i64, expires: i64) -> String {
        let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(age);
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let amz = t.format(&fmt).unwrap();
        let day = &amz[..8];
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={id}%2F{day}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={amz}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
        );
        let canonical = format!(
            "GET\n{path}\n{}\nhost:127.0.0.1:9000\n\nhost\nUNSIGNED-PAYLOAD",
            veeps_iam::sigv4::canonical_query(&query)
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz}\n{day}/us-east-1/s3/aws4_request\n{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()))
        );
        let k = hmac(format!("AWS4{secret}").as_bytes(), day);
        let k = hmac(&k, "us-east-1");
        let k = hmac(&k, "s3");
        let k = hmac(&k, "aws4_request");
        let sig = hex::encode(hmac(&k, &to_sign));
        format!("{path}?{query}&X-Amz-Signature={sig}")
    }

    /// The headers the SDKs sign a GET of `path` with, `age` seconds old.
    fn signed_headers(
        id: &str,
        secret: &str,
        path: &str,
        age: i64,
        payload: &str,
    ) -> Vec<(&'static str, &'static str)> {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(age);
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let amz = t.format(&fmt).unwrap();
        let day = amz[..8].to_string();
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "GET\n{path}\n\nhost:127.0.0.1:9000\nx-amz-content-sha256:{payload}\nx-amz-date:{amz}\n\n{signed}\n{payload}"
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz}\n{day}/us-east-1/s3/aws4_request\n{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()))
        );
        let k = hmac(format!("AWS4{secret}").as_bytes(), &day);
        let k = hmac(&k, "us-east-1");
        let k = hmac(&k, "s3");
        let k = hmac(&k, "aws4_request");
        let sig = hex::encode(hmac(&k, &to_sign));
        vec![
            ("x-amz-date", leak(amz.clone())),
            ("x-amz-content-sha256", leak(payload.to_string())),
            (
                "authorization",
                leak(format!("AWS4-HMAC-SHA256 Credential={id}/{day}/us-east-1/s3/aws4_request, SignedHeaders={signed}, Signature={sig}")),
            ),
        ]
    }

    fn request(url: &str, extra: &[(&str, &str)]) -> hyper::Request<s3s::Body> {
        let mut b = hyper::Request::get(url)
            .header("host", "127.0.0.1:9000")
            .header("user-agent", "test");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let mut r = b.body(s3s::Body::empty()).unwrap();
        r.extensions_mut().insert(Peer(PEER.parse().unwrap()));
        r
    }

    async fn whole(r: hyper::Response<s3s::Body>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use http_body_util::BodyExt;
        let status = r.status().as_u16();
        let mut heads: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        heads.sort();
        let body = BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, heads, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_direct_path_serves_exactly_what_the_general_one_would_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let state = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let kms = Arc::new(Kms::open(d.path(), state.clone()).unwrap());
        let store = Arc::new(ObjectStore::open(d.path(), state.clone(), kms.clone()).unwrap());
        let access = Arc::new(Access::new(state, kms));
        let gate = Gate {
            access: access.clone(),
            root_id: ROOT.0.into(),
            root_secret: ROOT.1.into(),
        };
        let api = Api::new(store.clone()).with_access(access.clone());
        let mut b = s3s::service::S3ServiceBuilder::new(api.clone());
        b.set_auth(gate.clone());
        b.set_access(gate.clone());
        b.set_host(super::super::serve::Hosts);
        let svc = b.build();

        let (alice, alice_secret) = access.create_key("alice").unwrap();
        let (bob, bob_secret) = access.create_key("bob").unwrap();
        for (name, env) in [
            ("site", "e"),
            ("other", "e"),
            ("veeps-audit", "e"),
            ("ver", "e"),
        ] {
            store.create_bucket(name, env).unwrap();
        }
        store.set_versioning("ver", Versioning::Enabled).unwrap();
        access
            .set_policy(
                "site",
                Some(
                    r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"},
            {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/alice"]},"Action":["s3:*"],"Resource":["arn:aws:s3:::site","arn:aws:s3:::site/*"]},
            {"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/private/*"}]}"#,
                ),
            )
            .unwrap();
        let rich = PutOptions {
            content_type: Some("text/html".into()),
            cache_control: Some("max-age=60".into()),
            metadata: BTreeMap::from([("owner".into(), "web team".into())]),
            headers: BTreeMap::from([
                ("content-language".into(), "en".into()),
                ("content-disposition".into(), "inline".into()),
            ]),
        };
        store
            .put("site", "index.html", &b"<h1>hi</h1>"[..], rich)
            .unwrap();
        store
            .put("site", "private/x", &b"secret"[..], PutOptions::default())
            .unwrap();
        store
            .put("site", "empty", &b""[..], PutOptions::default())
            .unwrap();
        let accented = PutOptions {
            metadata: BTreeMap::from([("who".into(), "José".into())]),
            ..Default::default()
        };
        store.put("site", "accented", &b"a"[..], accented).unwrap();
        store
            .put("other", "y", &b"y"[..], PutOptions::default())
            .unwrap();
        store
            .put("veeps-audit", "z", &b"z"[..], PutOptions::default())
            .unwrap();
        store
            .put("ver", "v", &b"v1"[..], PutOptions::default())
            .unwrap();
        let big = vec![7u8; (SMALL + 1) as usize];
        store
            .put("site", "big", &big[..], PutOptions::default())
            .unwrap();

        let peer: std::net::SocketAddr = PEER.parse().unwrap();
        let root = |p: &str| presign(ROOT.0, ROOT.1, p, 0, 60);
        let al = |p: &str| presign(&alice.id, &alice_secret, p, 0, 60);
        let bo = |p: &str| presign(&bob.id, &bob_secret, p, 0, 60);
        let tampered = {
            let mut u = al("/site/index.html");
            let last = if u.ends_with('0') { '1' } else { '0' };
            u.pop();
            u.push(last);
            u
        };
        let unsigned = "UNSIGNED-PAYLOAD";
        let hroot = |p: &str| signed_headers(ROOT.0, ROOT.1, p, 0, unsigned);
        let mut with_sdk = signed_headers(
            &alice.id,
            &alice_secret,
            "/site/index.html",
            0,
            EMPTY_SHA256,
        );
        with_sdk.push((
            "amz-sdk-invocation-id",
            "4d1f0a7e-1111-2222-3333-444455556666",
        ));
        with_sdk.push(("amz-sdk-request", "attempt=1; max=3"));
        let mut bad_sig_tail = hroot("/site/index.html");
        let a = bad_sig_tail[2].1;
        let flipped = if a.ends_with('0') { "1" } else { "0" };
        bad_sig_tail[2].1 = Box::leak(format!("{}{flipped}", &a[..a.len() - 1]).into_boxed_str());
        // A body's hash signed for a GET without one.
        let body_hash = signed_headers(ROOT.0, ROOT.1, "/site/index.html", 0, &"0".repeat(64));
        // (url, extra headers, served directly, the general way's status)
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, bool, u16);
        let cases: Vec<Case> = vec![
            (root("/site/index.html"), vec![], true, 200),
            (al("/site/index.html"), vec![], true, 200),
            (bo("/site/index.html"), vec![("accept", "*/*")], true, 200),
            (root("/site/empty"), vec![], true, 200),
            (root("/ver/v"), vec![], true, 200),
            (root("/veeps-audit/z"), vec![], true, 200),
            (bo("/other/y"), vec![], false, 403),
            (al("/site/private/x"), vec![], false, 403),
            (bo("/veeps-audit/z"), vec![], false, 403),
            (root("/site/missing"), vec![], false, 404),
            (root("/nobucket/k"), vec![], false, 404),
            (tampered, vec![], false, 403),
            (
                presign(&alice.id, &alice_secret, "/site/index.html", 7200, 60),
                vec![],
                false,
                403,
            ),
            (
                presign(&alice.id, &alice_secret, "/site/index.html", -3600, 60),
                vec![],
                false,
                403,
            ),
            (
                presign("VKNOSUCHKEY", "x", "/site/index.html", 0, 60),
                vec![],
                false,
                403,
            ),
            (
                root("/site/index.html"),
                vec![("range", "bytes=0-1")],
                false,
                206,
            ),
            (
                root("/site/index.html"),
                vec![("if-none-match", "*")],
                false,
                304,
            ),
            (root("/site/accented"), vec![], false, 200),
            (root("/site/big"), vec![], false, 200),
            (
                root("/site/index.html").replace("X-Amz-Expires=60", "X-Amz-Expires=61"),
                vec![],
                false,
                403,
            ),
            ("/site/index.html".to_string(), vec![], false, 200),
            // Signed in the Authorization header, as the SDKs and the CLI sign.
            (
                "/site/index.html".into(),
                hroot("/site/index.html"),
                true,
                200,
            ),
            ("/ver/v".into(), hroot("/ver/v"), true, 200),
            ("/site/index.html".into(), with_sdk, true, 200),
            (
                "/other/y".into(),
                signed_headers(&bob.id, &bob_secret, "/other/y", 0, unsigned),
                false,
                403,
            ),
            (
                "/site/private/x".into(),
                signed_headers(&alice.id, &alice_secret, "/site/private/x", 0, unsigned),
                false,
                403,
            ),
            ("/site/missing".into(), hroot("/site/missing"), false, 404),
            ("/site/index.html".into(), bad_sig_tail, false, 403),
            (
                "/site/index.html".into(),
                signed_headers(ROOT.0, ROOT.1, "/site/index.html", 1200, unsigned),
                false,
                403,
            ),
            (
                "/site/other.html".into(),
                hroot("/site/index.html"),
                false,
                403,
            ),
            ("/site/index.html".into(), body_hash, false, 200),
            (
                "/site/index.html".into(),
                [hroot("/site/index.html"), vec![("range", "bytes=1-2")]].concat(),
                false,
                206,
            ),
            (
                "/site/index.html".into(),
                [
                    hroot("/site/index.html"),
                    vec![("x-amz-checksum-mode", "ENABLED")],
                ]
                .concat(),
                false,
                200,
            ),
        ];
        for (url, extra, direct_ok, status) in cases {
            let direct = get(&request(&url, &extra), &api, &gate, peer);
            let general = whole(svc.call(request(&url, &extra)).await.unwrap()).await;
            assert_eq!(
                general.0,
                status,
                "{url} {extra:?}: {:?}",
                String::from_utf8_lossy(&general.2)
            );
            assert_eq!(direct.is_some(), direct_ok, "{url} {extra:?}");
            if let Some(r) = direct {
                assert_eq!(whole(r).await, general, "{url}");
            }
        }
        // A 304 carries what a cache revalidates with.
        let url = root("/site/index.html");
        let not_modified = whole(
            svc.call(request(&url, &[("if-none-match", "*")]))
                .await
                .unwrap(),
        )
        .await;
        let etag = format!(
            "\"{}\"",
            store.lookup("site", "index.html", None).unwrap().1.etag
        );
        assert_eq!(not_modified.0, 304);
        assert!(
            not_modified.1.contains(&("etag".into(), etag)),
            "{:?}",
            not_modified.1
        );
        assert!(not_modified.1.iter().any(|(k, _)| k == "last-modified"));
    }
}

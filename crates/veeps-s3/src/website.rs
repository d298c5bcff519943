//! Website hosting: buckets with a `website` setting served over plain HTTP, as S3's website
//! endpoints do: index documents for "directories", a redirect from `dir` to `dir/`, the
//! error document with status 404, and only what the bucket's policy lets anyone read.
//!
//! A request names its bucket by its `Host` (the bucket's own name, or
//! `BUCKET.s3-website.localhost` / `BUCKET.localhost`), or else by its first path segment.

use crate::access::Access;
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;

/// Domains under which `BUCKET.DOMAIN` names a bucket.
pub const DOMAINS: &[&str] = &["s3-website.localhost", "s3.localhost", "localhost"];

/// What the website server needs.
pub struct Site {
    /// Buckets and objects.
    pub store: Arc<ObjectStore>,
    /// Bucket policies.
    pub access: Arc<Access>,
    /// Request metrics.
    pub stats: Arc<crate::stats::Stats>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn page(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    let html = format!(
        "<html><head><title>{} {code}</title></head><body><h1>{} {code}</h1><ul><li>Code: {code}</li><li>Message: {msg}</li></ul></body></html>\n",
        status.as_u16(),
        status.as_u16()
    );
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(html)).map_err(|e| match e {}).boxed())
        .unwrap_or_default()
}

/// The bucket named by a `Host` header, if it names one.
pub fn bucket_from_host(host: &str, exists: impl Fn(&str) -> bool) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    // Lowered only when it has to be: most hosts are lower case already.
    let name: std::borrow::Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    };
    if DOMAINS.contains(&name.as_ref()) {
        return None;
    }
    for d in DOMAINS {
        if let Some(b) = name.strip_suffix(d).and_then(|h| h.strip_suffix('.')) {
            if !b.is_empty() {
                return Some(b.to_string());
            }
        }
    }
    exists(&name).then(|| name.into_owned())
}

impl Site {
    async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let head = req.method() == hyper::Method::HEAD;
        let (bucket, resp) = if req.method() != hyper::Method::GET && !head {
            (
                String::new(),
                page(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "a website answers GET and HEAD only",
                ),
            )
        } else {
            let me = self.clone();
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let path = req.uri().path().to_string();
            let inm = req
                .headers()
                .get("if-none-match")
                .and_then(|h| h.to_str().ok())
                .map(|s| s.trim_matches('"').to_string());
            let cx = crate::access::RequestCx {
                source_ip: Some(peer.ip()),
                user_agent: header(&req, "user-agent"),
                referer: header(&req, "referer"),
                ..Default::default()
            };
            tokio::task::spawn_blocking(move || me.answer(&host, &path, inm, head, &cx))
                .await
                .unwrap_or_else(|_| {
                    (
                        String::new(),
                        page(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "failed"),
                    )
                })
        };
        let out = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.stats.record(
            &bucket,
            resp.status().as_u16(),
            0,
            out,
            started.elapsed().as_secs_f64(),
        );
        resp
    }

    /// The answer to a GET or HEAD, with the bucket it concerned.
    fn answer(
        &self,
        host: &str,
        path: &str,
        if_none_match: Option<String>,
        head: bool,
        cx: &crate::access::RequestCx,
    ) -> (String, Response<Body>) {
        let decoded = percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .to_string();
        let rest = decoded.trim_start_matches('/');
        let (bucket, key, base) = match bucket_from_host(host, |b| self.store.bucket(b).is_ok()) {
            Some(b) => (b, rest.to_string(), String::from("/")),
            None => {
                let (b, k) = rest.split_once('/').unwrap_or((rest, ""));
                (b.to_string(), k.to_string(), format!("/{b}/"))
            }
        };
        // A missing bucket and one without a website get the same answer, so the website
        // port does not tell which buckets exist.
        let Some(site) = self.store.bucket(&bucket).ok().and_then(|b| b.website) else {
            return (
                String::new(),
                page(
                    StatusCode::NOT_FOUND,
                    "NoSuchWebsiteConfiguration",
                    "no website is configured under this name",
                ),
            );
        };
        let key = if key.is_empty() || key.ends_with('/') {
            format!("{key}{}", site.index_document)
        } else {
            key
        };
        let readable = |k: &str| {
            self.access.allowed(
                cx,
                "s3:GetObject",
                &bucket,
                &format!("arn:aws:s3:::{bucket}/{k}"),
            )
        };
        // As S3 does: a missing key is 404 only to those who may list the bucket, else 403.
        let listable = || {
            self.access.allowed(
                cx,
                "s3:ListBucket",
                &bucket,
                &format!("arn:aws:s3:::{bucket}"),
            )
        };
        if !readable(&key) {
            return (
                bucket,
                page(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "the bucket's policy does not let anyone read this object",
                ),
            );
        }
        match self.store.head(&bucket, &key) {
            Ok(m) => {
                if if_none_match.as_deref() == Some(m.etag.as_str()) {
                    let r = Response::builder()
                        .status(StatusCode::NOT_MODIFIED)
                        .header("etag", format!("\"{}\"", m.etag))
                        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                        .unwrap_or_default();
                    return (bucket, r);
                }
                let r = self.object(&bucket, &m, StatusCode::OK, head);
                (bucket, r)
            }
            Err(StoreError::NoSuchKey(_)) => {
                let dir = format!("{key}/{}", site.index_document);
                if readable(&dir) && self.store.head(&bucket, &dir).is_ok() {
                    let r = Response::builder()
                        .status(StatusCode::FOUND)
                        .header("location", format!("{base}{key}/"))
                        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                        .unwrap_or_default();
                    return (bucket, r);
                }
                let (status, code, msg) = if listable() {
                    (
                        StatusCode::NOT_FOUND,
                        "NoSuchKey",
                        "the specified key does not exist",
                    )
                } else {
                    (StatusCode::FORBIDDEN, "AccessDenied", "access denied")
                };
                if let Some(ed) = &site.error_document {
                    if readable(ed) {
                        if let Ok(m) = self.store.head(&bucket, ed) {
                            let r = self.object(&bucket, &m, status, head);
                            return (bucket, r);
                        }
                    }
                }
                (bucket, page(status, code, msg))
            }
            Err(e) => (
                bucket,
                page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &e.to_string(),
                ),
            ),
        }
    }

    /// An object's body (streamed) with its headers.
    fn object(
        &self,
        bucket: &str,
        m: &ObjectMeta,
        status: StatusCode,
        head: bool,
    ) -> Response<Body> {
        let b = Response::builder()
            .status(status)
            .header(
                "content-type",
                m.content_type.as_deref().unwrap_or("binary/octet-stream"),
            )
            .header("content-length", m.size)
            .header("etag", format!("\"{}\"", m.etag))
            .header("last-modified", httpdate(m.last_modified_ms));
        let b = match &m.cache_control {
            Some(c) => b.header("cache-control", c),
            None => b,
        };
        let b = m
            .headers
            .iter()
            .fold(b, |b, (k, v)| b.header(k.as_str(), v.as_str()));
        let body = if head || m.size == 0 {
            Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
        } else {
            match self
                .store
                .open_version(bucket, &m.key, Some(&m.version_label()), None)
            {
                Ok((_, r)) => stream(r),
                Err(e) => {
                    return page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        &e.to_string(),
                    )
                }
            }
        };
        b.body(body).unwrap_or_default()
    }
}

fn header(req: &Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn httpdate(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .map(|s| s.replace("+0000", "GMT"))
        .unwrap_or_default()
}

/// A body read on a blocking thread, a chunk at a time.
fn stream(mut r: crate::store::BlobReader) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; crate::store::CHUNK];
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Frame::data(Bytes::from(buf)))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let s = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    StreamBody::new(s).boxed()
}

/// Serves websites on `listener` within `limits` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, site: Arc<Site>, limits: veeps_http::Limits) {
    veeps_http::serve(listener, "s3-website", limits, move |peer| {
        let site = site.clone();
        hyper::service::service_fn(move |req| {
            let site = site.clone();
            async move { Ok::<_, Infallible>(site.handle(req, peer).await) }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_buckets() {
        let none = |_: &str| false;
        assert_eq!(
            bucket_from_host("site.s3-website.localhost:9080", none).as_deref(),
            Some("site")
        );
        assert_eq!(
            bucket_from_host("docs.localhost", none).as_deref(),
            Some("docs")
        );
        assert_eq!(bucket_from_host("127.0.0.1:9080", none), None);
        assert_eq!(bucket_from_host("localhost:9080", none), None);
        assert_eq!(
            bucket_from_host("www.example.com", |b| b == "www.example.com").as_deref(),
            Some("www.example.com")
        );
        // Host names are case-insensitive; buckets are named in lower case.
        assert_eq!(
            bucket_from_host("Site.S3-Website.LOCALHOST:9080", none).as_deref(),
            Some("site")
        );
        assert_eq!(
            bucket_from_host("WWW.Example.com", |b| b == "www.example.com").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(bucket_from_host("LOCALHOST", none), None);
    }
}

//! The S3 REST API over [`crate::store`], on `s3s` (protocol, SigV4 with header and query
//! signatures, `aws-chunked` bodies, path- and virtual-host-style addressing). Bodies are
//! streamed into the store without buffering whole uploads.

use crate::store::{ObjectMeta, ObjectStore, PutOptions, StoreError, Versioning, Website, MAX_PUT};
use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The environment whose key protects buckets created through the API.
pub const API_ENV: &str = "s3";

/// The S3 service.
#[derive(Clone)]
pub struct Api {
    store: Arc<ObjectStore>,
    access: Option<Arc<crate::access::Access>>,
}

impl Api {
    /// The API over a store.
    pub fn new(store: Arc<ObjectStore>) -> Api {
        Api {
            store,
            access: None,
        }
    }

    /// With the policies that authorise what one request does to several resources
    /// (each key of a DeleteObjects).
    pub fn with_access(mut self, access: Arc<crate::access::Access>) -> Api {
        self.access = Some(access);
        self
    }

    /// Whether the request's caller may do `action` on `key` of `bucket`.
    fn may<T>(&self, req: &S3Request<T>, action: &str, bucket: &str, key: &str) -> bool {
        match (req.extensions.get::<crate::access::Caller>(), &self.access) {
            (Some(c), Some(a)) => c.may(a, action, bucket, &format!("arn:aws:s3:::{bucket}/{key}")),
            // No gate in front (tests of the API alone): everything is allowed.
            (None, None) => true,
            _ => false,
        }
    }
}

/// Refuses what veeps does not implement, rather than ignoring it.
fn unsupported(what: &str) -> s3s::S3Error {
    s3_error!(NotImplemented, "{what} is not supported by veeps")
}

/// What a write asks for that veeps does not implement (each refused, never ignored).
#[derive(Default)]
struct WriteAsks<'a> {
    sse_c: bool,
    sse: Option<&'a ServerSideEncryption>,
    kms_key: bool,
    lock: bool,
    tags: bool,
    acl: Option<&'a ObjectCannedACL>,
}

fn refuse_unimplemented(w: WriteAsks<'_>) -> S3Result<()> {
    if w.sse_c {
        return Err(unsupported(
            "server-side encryption with customer keys (SSE-C)",
        ));
    }
    if let Some(sse) = w.sse.filter(|s| s.as_str() != ServerSideEncryption::AES256) {
        return Err(unsupported(&format!(
            "server-side encryption {} (every object is encrypted with AES256 under its environment's key)",
            sse.as_str()
        )));
    }
    if w.kms_key {
        return Err(unsupported("SSE-KMS keys"));
    }
    if w.lock {
        return Err(unsupported("object lock"));
    }
    if w.tags {
        return Err(unsupported("object tags"));
    }
    match w.acl {
        Some(acl) if !matches!(acl.as_str(), "private" | "bucket-owner-full-control") => {
            Err(unsupported(&format!(
                "the canned ACL {} (grant access with a bucket policy)",
                acl.as_str()
            )))
        }
        _ => Ok(()),
    }
}

/// SSE-C headers on a read: no object here was written with a customer key.
fn no_customer_key(algorithm: &Option<String>) -> S3Result<()> {
    match algorithm {
        Some(_) => Err(s3_error!(
            InvalidRequest,
            "the encryption parameters are not applicable to this object (it was not written with a customer-provided key)"
        )),
        None => Ok(()),
    }
}

/// A `Content-MD5` header (base64 of the 16-byte digest) as hex.
fn content_md5(v: &Option<String>) -> S3Result<Option<String>> {
    let Some(m) = v else { return Ok(None) };
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, m)
        .ok()
        .filter(|d| d.len() == 16)
        .ok_or_else(|| {
            s3_error!(
                InvalidDigest,
                "Content-MD5 is not the base64 of an MD5 digest"
            )
        })?;
    Ok(Some(hex::encode(raw)))
}

/// The write condition of `If-None-Match` / `If-Match` on a write or delete.
fn write_if(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<crate::store::WriteIf> {
    use crate::store::WriteIf;
    match (if_match, if_none_match) {
        (None, None) => Ok(WriteIf::Always),
        (None, Some(ETagCondition::Any)) => Ok(WriteIf::Absent),
        (None, Some(ETagCondition::ETag(_))) => Err(s3_error!(
            NotImplemented,
            "on a write, If-None-Match takes only *"
        )),
        (Some(ETagCondition::Any), None) => Ok(WriteIf::Matches("*".into())),
        (Some(ETagCondition::ETag(e)), None) => Ok(WriteIf::Matches(etag_value(e))),
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidRequest,
            "give If-Match or If-None-Match, not both"
        )),
    }
}

fn err(e: StoreError) -> s3s::S3Error {
    let msg = e.to_string();
    match e {
        StoreError::NoSuchBucket(_) => s3_error!(NoSuchBucket, "{msg}"),
        StoreError::NoSuchKey(_) => s3_error!(NoSuchKey, "{msg}"),
        StoreError::BucketExists(_) => s3_error!(BucketAlreadyOwnedByYou, "{msg}"),
        StoreError::BucketNotEmpty(_) => s3_error!(BucketNotEmpty, "{msg}"),
        StoreError::InvalidBucketName(_) => s3_error!(InvalidBucketName, "{msg}"),
        StoreError::KeyTooLong(_) => s3_error!(KeyTooLongError, "{msg}"),
        StoreError::InvalidKey(_) => s3_error!(InvalidArgument, "{msg}"),
        StoreError::InvalidRange => s3_error!(InvalidRange, "{msg}"),
        StoreError::NoSuchUpload(_) => s3_error!(NoSuchUpload, "{msg}"),
        StoreError::InvalidPart(_) => s3_error!(InvalidPart, "{msg}"),
        StoreError::InvalidPartOrder => s3_error!(InvalidPartOrder, "{msg}"),
        StoreError::EntityTooSmall(_) => s3_error!(EntityTooSmall, "{msg}"),
        StoreError::EntityTooLarge => s3_error!(EntityTooLarge, "{msg}"),
        StoreError::DeleteMarker(_) => s3_error!(MethodNotAllowed, "{msg}"),
        StoreError::NoSuchVersion(_) => s3_error!(NoSuchVersion, "{msg}"),
        StoreError::BadDigest | StoreError::ChecksumMismatch(_) => s3_error!(BadDigest, "{msg}"),
        StoreError::PreconditionFailed(_) => s3_error!(PreconditionFailed, "{msg}"),
        StoreError::IncompleteBody => s3_error!(IncompleteBody, "{msg}"),
        StoreError::Internal(_) => {
            tracing::error!(error = %msg, "object store failure");
            s3_error!(InternalError, "{msg}")
        }
    }
}

fn time(ms: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn etag(m: &ObjectMeta) -> ETag {
    ETag::Strong(m.etag.clone())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| s3_error!(InternalError, "{e}"))?
        .map_err(err)
}

/// Bodies up to this size are read whole on the lookup's thread and sent in one piece.
const SMALL: u64 = 256 * 1024;

/// A body to send: whole, or read as it goes.
enum Body {
    Whole(Bytes),
    Stream(Box<crate::store::BlobReader>),
}

/// What the async side sends the blocking writer.
enum Piece {
    Data(Bytes),
    /// The body ended where it should: only then is the end of the channel an end of body.
    End,
}

/// A blocking reader over chunks sent from the async side. A channel closed without
/// [`Piece::End`] (the client went away, the request was dropped) is an error, never a
/// short body.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Piece>>,
    cur: Bytes,
    ended: bool,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Piece::Data(b))) => self.cur = b,
                Some(Ok(Piece::End)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                None => return Err(std::io::Error::other(StoreError::IncompleteBody)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// The `x-amz-checksum-*` algorithms S3 accepts.
const CHECKSUMS: &[&str] = &["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// Verifies a body's `x-amz-checksum-*` values, from its headers or its trailer, as it is
/// read: a mismatch fails the read at the end, so nothing is committed.
struct Verify<R> {
    inner: R,
    hasher: s3s::checksum::ChecksumHasher,
    headers: hyper::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
}

/// The hashers for the checksums a request names (none: bytes pass through unchecked).
fn hasher_for(headers: &hyper::HeaderMap) -> S3Result<s3s::checksum::ChecksumHasher> {
    use s3s::crypto::Checksum as _;
    let trailer = headers
        .get("x-amz-trailer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let named = |alg: &str| {
        let h = format!("x-amz-checksum-{alg}");
        headers.contains_key(h.as_str()) || trailer.split(',').any(|t| t.trim() == h)
    };
    for (name, _) in headers.iter() {
        if let Some(alg) = name.as_str().strip_prefix("x-amz-checksum-") {
            if alg != "type" && alg != "algorithm" && !CHECKSUMS.contains(&alg) {
                return Err(s3_error!(
                    InvalidRequest,
                    "unknown checksum algorithm {alg}"
                ));
            }
        }
    }
    Ok(s3s::checksum::ChecksumHasher {
        crc32: named("crc32").then(s3s::crypto::Crc32::new),
        crc32c: named("crc32c").then(s3s::crypto::Crc32c::new),
        crc64nvme: named("crc64nvme").then(s3s::crypto::Crc64Nvme::new),
        sha1: named("sha1").then(s3s::crypto::Sha1::new),
        sha256: named("sha256").then(s3s::crypto::Sha256::new),
    })
}

impl<R> Verify<R> {
    /// Compares what was computed with what the client sent.
    fn finish(&mut self) -> Result<(), StoreError> {
        let got = std::mem::take(&mut self.hasher).finalize();
        let trailer: hyper::HeaderMap = self
            .trailers
            .as_ref()
            .and_then(|t| t.read(|h| h.clone()))
            .unwrap_or_default();
        for (alg, value) in [
            ("crc32", &got.checksum_crc32),
            ("crc32c", &got.checksum_crc32c),
            ("crc64nvme", &got.checksum_crc64nvme),
            ("sha1", &got.checksum_sha1),
            ("sha256", &got.checksum_sha256),
        ] {
            let Some(value) = value else { continue };
            let h = format!("x-amz-checksum-{alg}");
            let want = self
                .headers
                .get(h.as_str())
                .or_else(|| trailer.get(h.as_str()))
                .and_then(|v| v.to_str().ok());
            match want {
                Some(w) if w.trim() == value => {}
                Some(_) => return Err(StoreError::ChecksumMismatch(alg.to_ascii_uppercase())),
                None => {
                    return Err(StoreError::ChecksumMismatch(format!(
                        "{} (named by x-amz-trailer but not sent)",
                        alg.to_ascii_uppercase()
                    )))
                }
            }
        }
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish().map_err(std::io::Error::other)?;
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// [`stream_into`] through a [`Verify`] of the checksums the request names.
async fn stream_verified<T: Send + 'static>(
    body: Option<StreamingBlob>,
    headers: hyper::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
    write: impl FnOnce(Verify<ChannelReader>) -> Result<T, StoreError> + Send + 'static,
) -> S3Result<T> {
    let hasher = hasher_for(&headers)?;
    stream_into(body, move |r| {
        write(Verify {
            inner: r,
            hasher,
            headers,
            trailers,
        })
    })
    .await
}

/// Streams `body` into `write` (run on a blocking thread with a reader of the body).
async fn stream_into<T: Send + 'static>(
    body: Option<StreamingBlob>,
    write: impl FnOnce(ChannelReader) -> Result<T, StoreError> + Send + 'static,
) -> S3Result<T> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Piece>>(8);
    let writer = tokio::task::spawn_blocking(move || {
        write(ChannelReader {
            rx,
            cur: Bytes::new(),
            ended: false,
        })
    });
    let mut whole = true;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let item = chunk
                .map(Piece::Data)
                .map_err(|e| std::io::Error::other(e.to_string()));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                whole = false;
                break;
            }
        }
    }
    if whole {
        let _ = tx.send(Ok(Piece::End)).await;
    }
    drop(tx);
    writer
        .await
        .map_err(|e| s3_error!(InternalError, "{e}"))?
        .map_err(err)
}

/// A body read from the store on a blocking thread, 64 KiB at a time.
fn stream_out(mut r: crate::store::BlobReader) -> StreamingBlob {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; crate::store::CHUNK];
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
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
    StreamingBlob::wrap(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

fn secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn condition_holds(c: &ETagCondition, m: &ObjectMeta) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => etag_value(e) == m.etag,
    }
}

/// HTTP's conditional request rules (RFC 9110 §13.2.2) as S3 applies them.
fn preconditions(
    m: &ObjectMeta,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = m.last_modified_ms / 1000;
    match if_match {
        Some(c) if !condition_holds(c, m) => {
            return Err(s3_error!(PreconditionFailed, "If-Match does not hold"));
        }
        None if if_unmodified_since.is_some_and(|t| modified > secs(t)) => {
            return Err(s3_error!(
                PreconditionFailed,
                "the object was modified since If-Unmodified-Since"
            ));
        }
        _ => {}
    }
    match if_none_match {
        Some(c) if condition_holds(c, m) => Err(s3_error!(NotModified)),
        None if if_modified_since.is_some_and(|t| modified <= secs(t)) => {
            Err(s3_error!(NotModified))
        }
        _ => Ok(()),
    }
}

fn etag_value(e: &ETag) -> String {
    match e {
        ETag::Strong(s) | ETag::Weak(s) => s.clone(),
    }
}

/// The standard headers an object keeps: `(Content-Encoding, Content-Disposition,
/// Content-Language)`.
type Kept<'a> = (&'a Option<String>, &'a Option<String>, &'a Option<String>);

/// What a request says about the object besides its body.
fn put_options(
    content_type: &Option<String>,
    cache_control: &Option<String>,
    metadata: &Option<Metadata>,
    kept: Kept<'_>,
) -> PutOptions {
    let mut headers = std::collections::BTreeMap::new();
    for (name, v) in [
        ("content-encoding", kept.0),
        ("content-disposition", kept.1),
        ("content-language", kept.2),
    ] {
        if let Some(v) = v {
            headers.insert(name.to_string(), v.clone());
        }
    }
    PutOptions {
        content_type: content_type.clone(),
        cache_control: cache_control.clone(),
        metadata: metadata.clone().unwrap_or_default().into_iter().collect(),
        headers,
    }
}

/// Headers of a write that veeps does not keep: refused, never ignored.
fn unkept(expires: bool, redirect: bool, storage_class: Option<&StorageClass>) -> S3Result<()> {
    if expires {
        return Err(unsupported("the Expires header on objects"));
    }
    if redirect {
        return Err(unsupported("x-amz-website-redirect-location"));
    }
    match storage_class {
        Some(c) if c.as_str() != StorageClass::STANDARD => Err(unsupported(&format!(
            "storage class {} at write time (lifecycle transitions set classes)",
            c.as_str()
        ))),
        _ => Ok(()),
    }
}

fn header(m: &ObjectMeta, name: &str) -> Option<String> {
    m.headers.get(name).cloned()
}

fn object(m: ObjectMeta) -> Object {
    Object {
        e_tag: Some(etag(&m)),
        size: Some(m.size as i64),
        last_modified: Some(time(m.last_modified_ms)),
        storage_class: Some(ObjectStorageClass::from(class(&m))),
        key: Some(m.key),
        ..Default::default()
    }
}

fn class(m: &ObjectMeta) -> String {
    m.storage_class.clone().unwrap_or_else(|| "STANDARD".into())
}

/// The version id to report: none for buckets that never had versioning.
fn version_out(m: &ObjectMeta, b: Versioning) -> Option<String> {
    (b != Versioning::Off).then(|| m.version_label())
}

fn sse() -> Option<ServerSideEncryption> {
    Some(ServerSideEncryption::from_static(
        ServerSideEncryption::AES256,
    ))
}

#[async_trait::async_trait]
impl S3 for Api {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let store = self.store.clone();
        let bs = blocking(move || store.buckets()).await?;
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(
                bs.into_iter()
                    .map(|b| Bucket {
                        name: Some(b.name),
                        creation_date: Some(time(b.created_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        if crate::access::is_reserved(&req.input.bucket) {
            return Err(s3_error!(
                AccessDenied,
                "the bucket name {} is reserved for veeps' own use",
                req.input.bucket
            ));
        }
        if req.input.object_lock_enabled_for_bucket == Some(true) {
            return Err(unsupported("object lock"));
        }
        let store = self.store.clone();
        let name = req.input.bucket.clone();
        blocking(move || store.create_bucket(&name, API_ENV)).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let store = self.store.clone();
        blocking(move || store.bucket(&req.input.bucket)).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let store = self.store.clone();
        blocking(move || store.delete_bucket(&req.input.bucket)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let S3Request {
            input,
            headers,
            trailing_headers,
            ..
        } = req;
        refuse_unimplemented(WriteAsks {
            sse_c: input.sse_customer_algorithm.is_some() || input.sse_customer_key.is_some(),
            sse: input.server_side_encryption.as_ref(),
            kms_key: input.ssekms_key_id.is_some() || input.ssekms_encryption_context.is_some(),
            lock: input.object_lock_mode.is_some()
                || input.object_lock_retain_until_date.is_some()
                || input.object_lock_legal_hold_status.is_some(),
            tags: input.tagging.is_some(),
            acl: input.acl.as_ref(),
        })?;
        if input.write_offset_bytes.is_some() {
            return Err(unsupported("appends (x-amz-write-offset-bytes)"));
        }
        if input.content_length.is_some_and(|n| n as u64 > MAX_PUT) {
            return Err(err(StoreError::EntityTooLarge));
        }
        let md5 = content_md5(&input.content_md5)?;
        let checks = crate::store::PutChecks {
            md5,
            write_if: write_if(input.if_match.as_ref(), input.if_none_match.as_ref())?,
        };
        let store = self.store.clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        unkept(
            input.expires.is_some(),
            input.website_redirect_location.is_some(),
            input.storage_class.as_ref(),
        )?;
        let opts = put_options(
            &input.content_type,
            &input.cache_control,
            &input.metadata,
            (
                &input.content_encoding,
                &input.content_disposition,
                &input.content_language,
            ),
        );
        let meta = stream_verified(input.body, headers, trailing_headers, move |r| {
            store.put_if(&bucket, &key, r, opts, &checks)
        })
        .await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta)),
            size: Some(meta.size as i64),
            version_id: meta.versioned.then(|| meta.version_id.clone()),
            server_side_encryption: sse(),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        no_customer_key(&input.sse_customer_algorithm)?;
        let store = self.store.clone();
        let i = input.clone();
        // Look up, check, open, and read a small body whole, here: these are page-cache
        // reads of microseconds, cheaper than a hand-off to a blocking thread (which cost
        // half the throughput of small GETs). Large bodies stream from a blocking thread.
        let look = move || -> Result<_, StoreError> {
            let (b, meta) = store.lookup(&i.bucket, &i.key, i.version_id.as_deref())?;
            let checked = preconditions(
                &meta,
                i.if_match.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
                i.if_unmodified_since.as_ref(),
            )
            .and_then(|()| match &i.range {
                None => Ok(None),
                Some(r) => r
                    .check(meta.size)
                    .map(|rg| Some((rg.start, rg.end.saturating_sub(1))))
                    .map_err(|_| s3_error!(InvalidRange, "the range is not satisfiable")),
            });
            let range = match checked {
                Ok(r) => r,
                Err(e) => return Ok((meta, b.versioning, Err(e))),
            };
            let len = match range {
                Some((a, z)) => z - a + 1,
                None => meta.size,
            };
            let mut reader = store.reader(&b, &meta, range)?;
            let body = if len <= SMALL {
                let mut buf = Vec::with_capacity(len as usize);
                std::io::Read::read_to_end(&mut reader, &mut buf)?;
                Body::Whole(Bytes::from(buf))
            } else {
                Body::Stream(Box::new(reader))
            };
            Ok((meta, b.versioning, Ok((range, len, body))))
        };
        let (meta, ver, found) = look().map_err(err)?;
        let (range, len, body) = found?;
        let len = len as i64;
        let body = match body {
            Body::Whole(b) => StreamingBlob::from(s3s::Body::from(b)),
            Body::Stream(r) => stream_out(*r),
        };
        let content_range = range.map(|(a, z)| format!("bytes {a}-{z}/{}", meta.size));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta)),
            last_modified: Some(time(meta.last_modified_ms)),
            content_type: meta.content_type.clone(),
            cache_control: meta.cache_control.clone(),
            content_encoding: header(&meta, "content-encoding"),
            content_disposition: header(&meta, "content-disposition"),
            content_language: header(&meta, "content-language"),
            metadata: Some(meta.metadata.clone().into_iter().collect()),
            version_id: version_out(&meta, ver),
            storage_class: meta.storage_class.clone().map(StorageClass::from),
            server_side_encryption: sse(),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        no_customer_key(&req.input.sse_customer_algorithm)?;
        let store = self.store.clone();
        let (b, k, v) = (
            req.input.bucket.clone(),
            req.input.key.clone(),
            req.input.version_id.clone(),
        );
        let (bk, meta) = blocking(move || store.lookup(&b, &k, v.as_deref())).await?;
        let ver = bk.versioning;
        let i = &req.input;
        preconditions(
            &meta,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            e_tag: Some(etag(&meta)),
            last_modified: Some(time(meta.last_modified_ms)),
            content_type: meta.content_type.clone(),
            cache_control: meta.cache_control.clone(),
            content_encoding: header(&meta, "content-encoding"),
            content_disposition: header(&meta, "content-disposition"),
            content_language: header(&meta, "content-language"),
            accept_ranges: Some("bytes".into()),
            metadata: Some(meta.metadata.clone().into_iter().collect()),
            version_id: version_out(&meta, ver),
            storage_class: meta.storage_class.clone().map(StorageClass::from),
            server_side_encryption: sse(),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let store = self.store.clone();
        let i = req.input;
        if i.if_match_last_modified_time.is_some() || i.if_match_size.is_some() {
            return Err(unsupported(
                "x-amz-if-match-last-modified-time and x-amz-if-match-size",
            ));
        }
        let cond = write_if(i.if_match.as_ref(), None)?;
        if i.version_id.is_some() && cond != crate::store::WriteIf::Always {
            return Err(unsupported("If-Match on a delete of a given version"));
        }
        let d = blocking(move || match &i.version_id {
            Some(v) => store.delete_version(&i.bucket, &i.key, v),
            None => store.delete_if(&i.bucket, &i.key, &cond),
        })
        .await?;
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: d.delete_marker.then_some(true),
            version_id: d.version_id,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        // The continuation token is the last key returned (opaque to clients).
        let after = i.continuation_token.clone().or(i.start_after.clone());
        let (page, max) = self
            .page(&i.bucket, &i.prefix, &i.delimiter, after, i.max_keys)
            .await?;
        let count = (page.contents.len() + page.prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            max_keys: Some(max),
            key_count: Some(count),
            continuation_token: i.continuation_token,
            start_after: i.start_after,
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next,
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        // S3's conditional copy: If-Match / If-None-Match on the destination.
        let cond = |name: &str| {
            req.headers
                .get(name)
                .map(|v| ETagCondition::parse_http_header(v.as_bytes()))
                .transpose()
                .map_err(|_| s3_error!(InvalidArgument, "{name} is not an ETag or *"))
        };
        let dest_if = write_if(cond("if-match")?.as_ref(), cond("if-none-match")?.as_ref())?;
        let i = req.input;
        refuse_unimplemented(WriteAsks {
            sse_c: i.sse_customer_algorithm.is_some()
                || i.copy_source_sse_customer_algorithm.is_some(),
            sse: i.server_side_encryption.as_ref(),
            kms_key: i.ssekms_key_id.is_some(),
            lock: i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some(),
            tags: i.tagging.is_some(),
            acl: i.acl.as_ref(),
        })?;
        let CopySource::Bucket {
            bucket: sb,
            key: sk,
            version_id: sv,
        } = &i.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copies from access points are not supported"
            ));
        };
        let (sb, sk, sv) = (
            sb.to_string(),
            sk.to_string(),
            sv.as_deref().map(String::from),
        );
        let store = self.store.clone();
        let (b2, k2, v2) = (sb.clone(), sk.clone(), sv.clone());
        let src = blocking(move || store.head_version(&b2, &k2, v2.as_deref())).await?;
        preconditions(
            &src,
            i.copy_source_if_match.as_ref(),
            i.copy_source_if_none_match.as_ref(),
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| {
            if e.code() == &S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed)
            } else {
                e
            }
        })?;
        // Metadata is copied unless REPLACE is asked for.
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let opts = if replace {
            put_options(
                &i.content_type,
                &i.cache_control,
                &i.metadata,
                (
                    &i.content_encoding,
                    &i.content_disposition,
                    &i.content_language,
                ),
            )
        } else {
            PutOptions {
                content_type: src.content_type.clone(),
                cache_control: src.cache_control.clone(),
                metadata: src.metadata.clone(),
                headers: src.headers.clone(),
            }
        };
        if !replace && sb == i.bucket && sk == i.key && sv.is_none() {
            return Err(s3_error!(InvalidRequest, "copying an object onto itself needs a metadata change (x-amz-metadata-directive: REPLACE)"));
        }
        let store = self.store.clone();
        let (db, dk) = (i.bucket.clone(), i.key.clone());
        let checks = crate::store::PutChecks {
            md5: None,
            write_if: dest_if,
        };
        let meta = blocking(move || {
            let (_, reader) = store.open_version(&sb, &sk, sv.as_deref(), None)?;
            store.put_if(&db, &dk, reader, opts, &checks)
        })
        .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(time(meta.last_modified_ms)),
                ..Default::default()
            }),
            version_id: meta.versioned.then(|| meta.version_id.clone()),
            server_side_encryption: sse(),
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input.clone();
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1,000 keys per request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let store = self.store.clone();
        let b = i.bucket.clone();
        // Each key is authorised on its own, as S3 does: a denied key is an AccessDenied
        // entry in the answer, and the others are deleted.
        let keys: Vec<(String, Option<String>, bool)> = i
            .delete
            .objects
            .iter()
            .map(|o| {
                let action = if o.version_id.is_some() {
                    "s3:DeleteObjectVersion"
                } else {
                    "s3:DeleteObject"
                };
                let ok = self.may(&req, action, &i.bucket, &o.key);
                (o.key.clone(), o.version_id.clone(), ok)
            })
            .collect();
        let results = blocking(move || {
            store.bucket(&b)?;
            Ok(keys
                .into_iter()
                .map(|(k, v, ok)| {
                    if !ok {
                        return (Err(("AccessDenied", "Access Denied".to_string())), k, v);
                    }
                    let r = match &v {
                        Some(v) => store.delete_version(&b, &k, v),
                        None => store.delete(&b, &k),
                    };
                    (r.map_err(|e| ("InternalError", e.to_string())), k, v)
                })
                .collect::<Vec<_>>())
        })
        .await?;
        let (mut deleted, mut errors) = (vec![], vec![]);
        for (r, k, v) in results {
            match r {
                Ok(d) if !quiet => deleted.push(DeletedObject {
                    key: Some(k),
                    delete_marker: d.delete_marker.then_some(true),
                    version_id: d.version_id,
                    ..Default::default()
                }),
                Ok(_) => {}
                Err((code, m)) => errors.push(Error {
                    code: Some(code.into()),
                    key: Some(k),
                    message: Some(m),
                    version_id: v,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        refuse_unimplemented(WriteAsks {
            sse_c: i.sse_customer_algorithm.is_some(),
            sse: i.server_side_encryption.as_ref(),
            kms_key: i.ssekms_key_id.is_some(),
            lock: i.object_lock_mode.is_some() || i.object_lock_legal_hold_status.is_some(),
            tags: i.tagging.is_some(),
            acl: i.acl.as_ref(),
        })?;
        let store = self.store.clone();
        let (b, k) = (i.bucket.clone(), i.key.clone());
        unkept(
            i.expires.is_some(),
            i.website_redirect_location.is_some(),
            i.storage_class.as_ref(),
        )?;
        let opts = put_options(
            &i.content_type,
            &i.cache_control,
            &i.metadata,
            (
                &i.content_encoding,
                &i.content_disposition,
                &i.content_language,
            ),
        );
        let up = blocking(move || store.create_upload(&b, &k, opts)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(up.id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let S3Request {
            input: i,
            headers,
            trailing_headers,
            ..
        } = req;
        if i.sse_customer_algorithm.is_some() {
            return Err(unsupported(
                "server-side encryption with customer keys (SSE-C)",
            ));
        }
        let store = self.store.clone();
        let (b, id, n) = (i.bucket.clone(), i.upload_id.clone(), i.part_number);
        if !(1..=10_000).contains(&n) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10,000"));
        }
        if i.content_length
            .is_some_and(|n| n as u64 > crate::store::MAX_PART)
        {
            return Err(err(StoreError::EntityTooLarge));
        }
        let md5 = content_md5(&i.content_md5)?;
        let part = stream_verified(i.body, headers, trailing_headers, move |r| {
            store.put_part_if(&b, &id, n as u32, r, md5.as_deref())
        })
        .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        if i.sse_customer_algorithm.is_some() {
            return Err(unsupported(
                "server-side encryption with customer keys (SSE-C)",
            ));
        }
        let checks = crate::store::PutChecks {
            md5: None,
            write_if: write_if(i.if_match.as_ref(), i.if_none_match.as_ref())?,
        };
        let listed: Vec<(u32, String)> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0).max(0) as u32,
                    p.e_tag.as_ref().map(etag_value).unwrap_or_default(),
                )
            })
            .collect();
        let store = self.store.clone();
        let (b, id) = (i.bucket.clone(), i.upload_id.clone());
        let meta = blocking(move || store.complete(&b, &id, &listed, &checks)).await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(meta.key.clone()),
            e_tag: Some(etag(&meta)),
            location: Some(format!("/{}/{}", i.bucket, meta.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let store = self.store.clone();
        blocking(move || store.abort(&req.input.bucket, &req.input.upload_id)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let store = self.store.clone();
        let (b, id) = (i.bucket.clone(), i.upload_id.clone());
        let parts = blocking(move || store.parts(&b, &id)).await?;
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            is_truncated: Some(false),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| Part {
                        part_number: Some(p.number as i32),
                        e_tag: Some(ETag::Strong(p.etag)),
                        size: Some(p.size as i64),
                        last_modified: Some(time(p.last_modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let store = self.store.clone();
        let b = i.bucket.clone();
        let ups = blocking(move || store.uploads(&b)).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            is_truncated: Some(false),
            uploads: Some(
                ups.into_iter()
                    .filter(|u| u.key.starts_with(&prefix))
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(time(u.initiated_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let (page, max) = self
            .page(
                &i.bucket,
                &i.prefix,
                &i.delimiter,
                i.marker.clone(),
                i.max_keys,
            )
            .await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            marker: i.marker,
            max_keys: Some(max),
            is_truncated: Some(page.next.is_some()),
            next_marker: page.next,
            contents: Some(page.contents),
            common_prefixes: Some(page.prefixes),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        let store = self.store.clone();
        let max = i.max_keys.unwrap_or(1000).clamp(0, 1000);
        let (b, p, d, km, vm) = (
            i.bucket.clone(),
            i.prefix.clone().unwrap_or_default(),
            i.delimiter.clone(),
            i.key_marker.clone(),
            i.version_id_marker.clone(),
        );
        let l = blocking(move || {
            store.list_versions(
                &b,
                &p,
                d.as_deref(),
                km.as_deref(),
                vm.as_deref(),
                max as usize,
            )
        })
        .await?;
        let (mut versions, mut markers) = (vec![], vec![]);
        for (m, latest) in l.versions {
            if m.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(latest),
                    last_modified: Some(time(m.last_modified_ms)),
                    version_id: Some(m.version_label()),
                    key: Some(m.key),
                    ..Default::default()
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(etag(&m)),
                    is_latest: Some(latest),
                    last_modified: Some(time(m.last_modified_ms)),
                    size: Some(m.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from(class(&m))),
                    version_id: Some(m.version_label()),
                    key: Some(m.key),
                    ..Default::default()
                });
            }
        }
        let (nk, nv) = match l.next.clone() {
            Some((k, v)) => (Some(k), v),
            None => (None, None),
        };
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            key_marker: i.key_marker,
            version_id_marker: i.version_id_marker,
            max_keys: Some(max),
            is_truncated: Some(l.next.is_some()),
            next_key_marker: nk,
            next_version_id_marker: nv,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                l.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let i = req.input;
        let want = match i
            .versioning_configuration
            .status
            .as_ref()
            .map(|s| s.as_str())
        {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            other => {
                return Err(s3_error!(
                    MalformedXML,
                    "versioning status {other:?} is neither Enabled nor Suspended"
                ))
            }
        };
        let store = self.store.clone();
        blocking(move || store.set_versioning(&i.bucket, want)).await?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let store = self.store.clone();
        let b = blocking(move || store.bucket(&req.input.bucket)).await?;
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: match b.versioning {
                Versioning::Off => None,
                Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                    BucketVersioningStatus::ENABLED,
                )),
                Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                    BucketVersioningStatus::SUSPENDED,
                )),
            },
            ..Default::default()
        }))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let i = req.input;
        let rules = i
            .lifecycle_configuration
            .map(|c| c.rules)
            .unwrap_or_default()
            .into_iter()
            .map(rule_in)
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.store.clone();
        blocking(move || {
            store.configure(&i.bucket, |b| {
                b.lifecycle = rules;
                Ok(())
            })
        })
        .await?;
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let store = self.store.clone();
        let b = blocking(move || store.bucket(&req.input.bucket)).await?;
        if b.lifecycle.is_empty() {
            return Err(s3_error!(
                NoSuchLifecycleConfiguration,
                "the bucket has no lifecycle rules"
            ));
        }
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(b.lifecycle.iter().map(rule_out).collect()),
            ..Default::default()
        }))
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        let store = self.store.clone();
        blocking(move || {
            store.configure(&req.input.bucket, |b| {
                b.lifecycle.clear();
                Ok(())
            })
        })
        .await?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
    }

    async fn put_bucket_website(
        &self,
        req: S3Request<PutBucketWebsiteInput>,
    ) -> S3Result<S3Response<PutBucketWebsiteOutput>> {
        let i = req.input;
        let c = i.website_configuration;
        let Some(index) = c.index_document.map(|d| d.suffix) else {
            return Err(s3_error!(
                InvalidArgument,
                "a website needs an IndexDocument (redirect-only websites are not supported)"
            ));
        };
        if index.is_empty() || index.contains('/') {
            return Err(s3_error!(
                InvalidArgument,
                "the IndexDocument suffix must be non-empty and hold no slash"
            ));
        }
        let w = Website {
            index_document: index,
            error_document: c.error_document.map(|d| d.key),
        };
        let store = self.store.clone();
        blocking(move || {
            store.configure(&i.bucket, |b| {
                b.website = Some(w);
                Ok(())
            })
        })
        .await?;
        Ok(S3Response::new(PutBucketWebsiteOutput::default()))
    }

    async fn get_bucket_website(
        &self,
        req: S3Request<GetBucketWebsiteInput>,
    ) -> S3Result<S3Response<GetBucketWebsiteOutput>> {
        let store = self.store.clone();
        let b = blocking(move || store.bucket(&req.input.bucket)).await?;
        let Some(w) = b.website else {
            return Err(s3_error!(
                NoSuchWebsiteConfiguration,
                "the bucket is not a website"
            ));
        };
        Ok(S3Response::new(GetBucketWebsiteOutput {
            index_document: Some(IndexDocument {
                suffix: w.index_document,
            }),
            error_document: w.error_document.map(|key| ErrorDocument { key }),
            ..Default::default()
        }))
    }

    async fn delete_bucket_website(
        &self,
        req: S3Request<DeleteBucketWebsiteInput>,
    ) -> S3Result<S3Response<DeleteBucketWebsiteOutput>> {
        let store = self.store.clone();
        blocking(move || {
            store.configure(&req.input.bucket, |b| {
                b.website = None;
                Ok(())
            })
        })
        .await?;
        Ok(S3Response::new(DeleteBucketWebsiteOutput::default()))
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let store = self.store.clone();
        blocking(move || store.bucket(&req.input.bucket)).await?;
        // Every object is encrypted with its own key under the environment's key.
        Ok(S3Response::new(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
                rules: vec![ServerSideEncryptionRule {
                    apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                        sse_algorithm: ServerSideEncryption::from_static(
                            ServerSideEncryption::AES256,
                        ),
                        kms_master_key_id: None,
                    }),
                    bucket_key_enabled: Some(true),
                }],
            }),
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let store = self.store.clone();
        blocking(move || store.bucket(&req.input.bucket)).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }
}

/// A lifecycle rule from S3's XML.
fn rule_in(r: LifecycleRule) -> S3Result<crate::lifecycle::Rule> {
    let days = |d: Option<i32>| d.filter(|d| *d >= 0).map(|d| d as u32);
    let refuse = |what: &str| Err(unsupported(&format!("lifecycle rules with {what}")));
    // Every filter S3 has is applied, or the rule is refused: never a rule wider than
    // the one given.
    let (mut prefix, mut greater, mut less) = (r.prefix.clone(), None, None);
    if let Some(f) = &r.filter {
        if f.tag.is_some() {
            return refuse("tag filters");
        }
        if let Some(and) = &f.and {
            if and.tags.as_ref().is_some_and(|t| !t.is_empty()) {
                return refuse("tag filters");
            }
            prefix = and.prefix.clone().or(prefix);
            greater = and.object_size_greater_than;
            less = and.object_size_less_than;
        }
        prefix = f.prefix.clone().or(prefix);
        greater = f.object_size_greater_than.or(greater);
        less = f.object_size_less_than.or(less);
    }
    if r.expiration.as_ref().is_some_and(|e| e.date.is_some())
        || r.transitions
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.date.is_some()))
    {
        return refuse("dates (give days)");
    }
    if r.noncurrent_version_transitions
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        return refuse("noncurrent version transitions");
    }
    let size = |v: Option<i64>| v.map(|n| n.max(0) as u64);
    let prefix = prefix.unwrap_or_default();
    let rule = crate::lifecycle::Rule {
        id: r
            .id
            .clone()
            .unwrap_or_else(|| format!("rule-{}", hex::encode(rand::random::<[u8; 4]>()))),
        prefix,
        enabled: r.status.as_str() == ExpirationStatus::ENABLED,
        expiration_days: days(r.expiration.as_ref().and_then(|e| e.days)),
        noncurrent_expiration_days: days(
            r.noncurrent_version_expiration
                .as_ref()
                .and_then(|e| e.noncurrent_days),
        ),
        transitions: r
            .transitions
            .unwrap_or_default()
            .into_iter()
            .map(|t| crate::lifecycle::Transition {
                days: days(t.days).unwrap_or(0),
                storage_class: t
                    .storage_class
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        abort_incomplete_days: days(
            r.abort_incomplete_multipart_upload
                .as_ref()
                .and_then(|a| a.days_after_initiation),
        ),
        size_greater_than: size(greater),
        size_less_than: size(less),
        newer_noncurrent_versions: days(
            r.noncurrent_version_expiration
                .as_ref()
                .and_then(|e| e.newer_noncurrent_versions),
        ),
        expired_object_delete_marker: r
            .expiration
            .as_ref()
            .and_then(|e| e.expired_object_delete_marker)
            .unwrap_or(false),
    };
    rule.check()
        .map_err(|m| s3_error!(InvalidArgument, "{m}"))?;
    Ok(rule)
}

/// A lifecycle rule as S3's XML.
fn rule_out(r: &crate::lifecycle::Rule) -> LifecycleRule {
    LifecycleRule {
        id: Some(r.id.clone()),
        filter: Some(
            if r.size_greater_than.is_some() || r.size_less_than.is_some() {
                LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: Some(r.prefix.clone()),
                        object_size_greater_than: r.size_greater_than.map(|n| n as i64),
                        object_size_less_than: r.size_less_than.map(|n| n as i64),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                LifecycleRuleFilter {
                    prefix: Some(r.prefix.clone()),
                    ..Default::default()
                }
            },
        ),
        status: ExpirationStatus::from(if r.enabled { "Enabled" } else { "Disabled" }.to_string()),
        expiration: (r.expiration_days.is_some() || r.expired_object_delete_marker).then(|| {
            LifecycleExpiration {
                days: r.expiration_days.map(|d| d as i32),
                expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
                ..Default::default()
            }
        }),
        noncurrent_version_expiration: r.noncurrent_expiration_days.map(|d| {
            NoncurrentVersionExpiration {
                noncurrent_days: Some(d as i32),
                newer_noncurrent_versions: r.newer_noncurrent_versions.map(|n| n as i32),
            }
        }),
        transitions: Some(
            r.transitions
                .iter()
                .map(|t| Transition {
                    days: Some(t.days as i32),
                    storage_class: Some(TransitionStorageClass::from(t.storage_class.clone())),
                    ..Default::default()
                })
                .collect(),
        ),
        abort_incomplete_multipart_upload: r.abort_incomplete_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d as i32),
            }
        }),
        noncurrent_version_transitions: None,
        prefix: None,
    }
}

/// A page of a listing, as both ListObjects versions answer it.
struct Page {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    next: Option<String>,
}

impl Api {
    /// One page of keys after `after`; returns it with the page size used.
    async fn page(
        &self,
        bucket: &str,
        prefix: &Option<String>,
        delimiter: &Option<String>,
        after: Option<String>,
        max_keys: Option<i32>,
    ) -> S3Result<(Page, i32)> {
        let store = self.store.clone();
        let (b, p, d) = (
            bucket.to_string(),
            prefix.clone().unwrap_or_default(),
            delimiter.clone(),
        );
        let max = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let l = blocking(move || store.list(&b, &p, d.as_deref(), after.as_deref(), max)).await?;
        let page = Page {
            contents: l.objects.into_iter().map(object).collect(),
            prefixes: l
                .common_prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(p) })
                .collect(),
            next: l.next,
        };
        Ok((page, max as i32))
    }
}

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
struct Hosts;

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
fn bucket_of_host(host: &str) -> Option<String> {
    crate::website::bucket_from_host(host, |_| false)
        .filter(|b| crate::store::check_bucket_name(b).is_ok())
}

/// The bucket a request concerns, for its metrics.
fn bucket_of(req: &hyper::Request<hyper::body::Incoming>) -> String {
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

fn length(h: &hyper::HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Requests signed with Signature Version 2 get SigV4's time bounds, which s3s does not
/// apply to them: a signed header request is refused when its date is more than 15
/// minutes from now (a replayed request from 2001 is not accepted), and a presigned URL
/// when it lives longer than 7 days. `Some` is the refusal.
fn check_sig_v2(req: &hyper::Request<hyper::body::Incoming>) -> Option<hyper::Response<s3s::Body>> {
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

fn refuse(code: &str, msg: &str, status: hyper::StatusCode) -> hyper::Response<s3s::Body> {
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

/// Serves the S3 API on `listener` within `limits` until the task is dropped, counting
/// every request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    gate: crate::access::Gate,
    stats: Arc<crate::stats::Stats>,
    limits: veeps_http::Limits,
) {
    let api = api.with_access(gate.access.clone());
    let mut b = s3s::service::S3ServiceBuilder::new(api);
    b.set_auth(gate.clone());
    b.set_access(gate);
    b.set_host(Hosts);
    let svc = b.build();
    veeps_http::serve(listener, "s3", limits, move |peer| {
        let svc = svc.clone();
        let stats = stats.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let svc = svc.clone();
            let stats = stats.clone();
            async move {
                let started = std::time::Instant::now();
                let bucket = bucket_of(&req);
                let bytes_in = match length(req.headers(), "x-amz-decoded-content-length") {
                    0 => length(req.headers(), "content-length"),
                    n => n,
                };
                req.extensions_mut().insert(crate::access::Peer(peer));
                let r = match check_sig_v2(&req) {
                    Some(refused) => Ok(refused),
                    None => hyper::service::Service::call(&svc, req).await,
                };
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
                r
            }
        })
    })
    .await
}

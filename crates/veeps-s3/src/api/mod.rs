//! The S3 REST API over [`crate::store`], on `s3s` (protocol, SigV4 with header and query
//! signatures, `aws-chunked` bodies, path- and virtual-host-style addressing). Bodies are
//! streamed into the store without buffering whole uploads.

mod body;
mod buckets;
mod direct;
mod listing;
mod multipart;
mod objects;
mod serve;
mod settings;

use body::*;
pub use serve::{serve, Auth, Hooks};

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
        StoreError::InvalidArgument(_) => s3_error!(InvalidArgument, "{msg}"),
        // Replaced more times in a row than a read tries again: busy, as S3 says.
        StoreError::Replaced => s3_error!(SlowDown, "{msg}"),
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
        Some(c) if condition_holds(c, m) => Err(not_modified(m)),
        None if if_modified_since.is_some_and(|t| modified <= secs(t)) => Err(not_modified(m)),
        _ => Ok(()),
    }
}

/// A 304, with the `ETag` and `Last-Modified` a cache revalidates with (RFC 9110 §15.4.5).
fn not_modified(m: &ObjectMeta) -> s3s::S3Error {
    let mut e = s3_error!(NotModified);
    let mut h = hyper::HeaderMap::new();
    if let Ok(v) = hyper::header::HeaderValue::try_from(format!("\"{}\"", m.etag)) {
        h.insert(hyper::header::ETAG, v);
    }
    let mut date = vec![];
    if time(m.last_modified_ms)
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
    {
        if let Ok(v) = hyper::header::HeaderValue::try_from(date) {
            h.insert(hyper::header::LAST_MODIFIED, v);
        }
    }
    e.set_headers(h);
    e
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
        buckets::list_buckets(self, _req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        buckets::head_bucket(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        buckets::delete_bucket(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        listing::list_objects_v2(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        listing::list_objects(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        listing::list_object_versions(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        settings::put_bucket_versioning(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        settings::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        settings::put_bucket_lifecycle_configuration(self, req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        settings::get_bucket_lifecycle_configuration(self, req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        settings::delete_bucket_lifecycle(self, req).await
    }

    async fn put_bucket_website(
        &self,
        req: S3Request<PutBucketWebsiteInput>,
    ) -> S3Result<S3Response<PutBucketWebsiteOutput>> {
        settings::put_bucket_website(self, req).await
    }

    async fn get_bucket_website(
        &self,
        req: S3Request<GetBucketWebsiteInput>,
    ) -> S3Result<S3Response<GetBucketWebsiteOutput>> {
        settings::get_bucket_website(self, req).await
    }

    async fn delete_bucket_website(
        &self,
        req: S3Request<DeleteBucketWebsiteInput>,
    ) -> S3Result<S3Response<DeleteBucketWebsiteOutput>> {
        settings::delete_bucket_website(self, req).await
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        buckets::get_bucket_encryption(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        buckets::get_bucket_location(self, req).await
    }
}

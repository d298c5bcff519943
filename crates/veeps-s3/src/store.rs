//! The object store behind the S3 API: buckets and object metadata in the state store,
//! object bodies in blob files encrypted with a data key per object (AES-256-GCM in 64 KiB
//! chunks, so ranges decrypt only what they need), the data key wrapped by the bucket's
//! environment key.
//!
//! Crash safety: a body is written to a temporary file, synced and renamed into place, and
//! only then is its metadata committed in one store transaction; a crash before the
//! commit leaves an orphan blob that [`ObjectStore::open`] removes, never a visible
//! half-written object. Acknowledged objects are on disk and in the store.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veeps_kms::Kms;
use veeps_state::Store;

/// Plaintext bytes per encrypted chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

/// Why a store operation failed (each maps to S3's own error code).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `NoSuchBucket`.
    #[error("the bucket {0} does not exist")]
    NoSuchBucket(String),
    /// `NoSuchKey`.
    #[error("the key {0} does not exist")]
    NoSuchKey(String),
    /// `BucketAlreadyOwnedByYou`.
    #[error("the bucket {0} already exists")]
    BucketExists(String),
    /// `BucketNotEmpty`.
    #[error("the bucket {0} is not empty")]
    BucketNotEmpty(String),
    /// `InvalidBucketName`.
    #[error("{0}")]
    InvalidBucketName(String),
    /// `KeyTooLongError`.
    #[error("a key is at most 1,024 bytes long; this one is {0}")]
    KeyTooLong(usize),
    /// `InvalidArgument`.
    #[error("{0}")]
    InvalidKey(String),
    /// `InvalidRange`.
    #[error("the range is not satisfiable")]
    InvalidRange,
    /// `NoSuchUpload`.
    #[error("the multipart upload {0} does not exist (completed or aborted?)")]
    NoSuchUpload(String),
    /// `InvalidPart`.
    #[error("{0}")]
    InvalidPart(String),
    /// `InvalidPartOrder`.
    #[error("the parts must be listed in ascending order of part number")]
    InvalidPartOrder,
    /// `EntityTooSmall`.
    #[error("part {0} is smaller than 5 MiB and is not the last part")]
    EntityTooSmall(u32),
    /// `EntityTooLarge`.
    #[error("the body is larger than S3 allows (5 GiB for a PUT or a part); use a multipart upload for bigger objects")]
    EntityTooLarge,
    /// `MethodNotAllowed`: the version asked for is a delete marker.
    #[error("the version {0} is a delete marker")]
    DeleteMarker(String),
    /// `NoSuchVersion`.
    #[error("the version {0} does not exist")]
    NoSuchVersion(String),
    /// `BadDigest`: the body does not match the Content-MD5 the client sent.
    #[error("the Content-MD5 you specified did not match what we received")]
    BadDigest,
    /// `BadDigest` for an `x-amz-checksum-*` header (S3 answers this code too).
    #[error("the {0} checksum you specified did not match what we received")]
    ChecksumMismatch(String),
    /// `PreconditionFailed`: a conditional write or delete whose condition does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// `IncompleteBody`: the client went away before the whole body arrived.
    #[error("the request body ended before the object was complete")]
    IncompleteBody,
    /// `InternalError`.
    #[error("object store: {0}")]
    Internal(String),
}

/// A multipart upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Upload {
    /// Its id.
    pub id: String,
    /// The key it will complete.
    pub key: String,
    /// Content type, cache control and metadata for the object (stored flat, as before).
    #[serde(flatten)]
    pub opts: PutOptions,
    /// When it started (ms).
    pub initiated_ms: i64,
}

/// An uploaded part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    /// 1 to 10,000.
    pub number: u32,
    /// MD5 of the part, hex.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// When it was uploaded (ms).
    pub last_modified_ms: i64,
    wrapped_key: Vec<u8>,
    name: String,
}

/// Parts other than the last are at least this big.
pub const MIN_PART: u64 = 5 * 1024 * 1024;

impl From<std::io::Error> for StoreError {
    /// A body reader may fail with a [`StoreError`] inside an I/O error (a digest that
    /// does not match, a client gone): that error comes back out as itself.
    fn from(e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|i| i.is::<StoreError>()) {
            if let Some(inner) = e.into_inner() {
                if let Ok(se) = inner.downcast::<StoreError>() {
                    return *se;
                }
            }
            return StoreError::Internal("a body reader failed".into());
        }
        StoreError::Internal(e.to_string())
    }
}

/// When a write or delete may happen, checked atomically with it (S3's conditional writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteIf {
    /// Always.
    #[default]
    Always,
    /// Only when the key has no current object (`If-None-Match: *`).
    Absent,
    /// Only when the current object's ETag is this one (`If-Match`).
    Matches(String),
    /// Only when the current version is this one (lifecycle acts on what it read).
    Version(String),
}

impl WriteIf {
    fn check(&self, key: &str, cur: Option<&ObjectMeta>) -> Result<(), StoreError> {
        let live = cur.filter(|m| !m.delete_marker);
        match (self, live) {
            (WriteIf::Always, _) => Ok(()),
            (WriteIf::Absent, None) => Ok(()),
            (WriteIf::Absent, Some(_)) => Err(StoreError::PreconditionFailed(format!(
                "{key} already exists (If-None-Match: *)"
            ))),
            (WriteIf::Matches(_), None) => Err(StoreError::NoSuchKey(key.into())),
            (WriteIf::Matches(e), Some(m)) if e == "*" || e.trim_matches('"') == m.etag => Ok(()),
            (WriteIf::Matches(_), Some(_)) => Err(StoreError::PreconditionFailed(format!(
                "the ETag of {key} is not the one If-Match names"
            ))),
            (WriteIf::Version(v), Some(m)) if *v == m.version_id => Ok(()),
            (WriteIf::Version(_), _) => Err(StoreError::PreconditionFailed(format!(
                "{key} changed meanwhile"
            ))),
        }
    }
}

/// A bucket's versioning state, as S3 has it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: a put replaces, a delete removes.
    #[default]
    Off,
    /// Every put keeps the previous version; a delete adds a delete marker.
    Enabled,
    /// Puts replace the `null` version; earlier versions are kept.
    Suspended,
}

/// Website hosting settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Website {
    /// Served for a request of a "directory" (`/`, `/docs/`).
    pub index_document: String,
    /// Served, with status 404, when a key does not exist.
    pub error_document: Option<String>,
}

/// A bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// The environment whose key protects its objects.
    pub env: String,
    /// When it was created (ms).
    pub created_ms: i64,
    /// Versioning state.
    #[serde(default)]
    pub versioning: Versioning,
    /// Website hosting, if on.
    #[serde(default)]
    pub website: Option<Website>,
    /// Lifecycle rules.
    #[serde(default)]
    pub lifecycle: Vec<crate::lifecycle::Rule>,
}

/// An object's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: String,
    /// Its version (also its blob's name).
    pub version_id: String,
    /// Bytes.
    pub size: u64,
    /// MD5 of the body, hex (S3's ETag for single-part objects).
    pub etag: String,
    /// Content type.
    pub content_type: Option<String>,
    /// Cache control.
    pub cache_control: Option<String>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: BTreeMap<String, String>,
    /// `Content-Encoding`, `Content-Disposition`, `Content-Language`, as given.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Last modified (ms).
    pub last_modified_ms: i64,
    /// The data key, wrapped by the environment's key.
    pub wrapped_key: Vec<u8>,
    /// A delete marker (no body).
    #[serde(default)]
    pub delete_marker: bool,
    /// Whether the version id is its own (false: S3's `null` version).
    #[serde(default)]
    pub versioned: bool,
    /// Storage class set by a lifecycle transition (`STANDARD` when `None`).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// When it stopped being the current version (ms; 0 while current).
    #[serde(default)]
    pub noncurrent_ms: i64,
}

impl ObjectMeta {
    /// The version id clients see: `null` for objects written while versioning was off.
    pub fn version_label(&self) -> String {
        if self.versioned {
            self.version_id.clone()
        } else {
            "null".into()
        }
    }

    /// When this version was written (ns), for ordering versions of a key.
    fn created_ns(&self) -> u64 {
        self.version_id
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .filter(|_| self.version_id.len() == 32)
            .unwrap_or(self.last_modified_ms.max(0) as u64 * 1_000_000)
    }
}

/// What a delete did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deleted {
    /// The version removed or the delete marker added (as clients see it).
    pub version_id: Option<String>,
    /// Whether a delete marker was added or removed.
    pub delete_marker: bool,
}

/// A page of [`ObjectStore::list_versions`].
#[derive(Debug, Clone, Default)]
pub struct VersionListing {
    /// Versions and delete markers, by key then newest first, with whether each is the
    /// current one.
    pub versions: Vec<(ObjectMeta, bool)>,
    /// Prefixes rolled up at the delimiter.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts: key and version id markers.
    pub next: Option<(String, Option<String>)>,
}

/// The largest single PUT S3 accepts.
pub const MAX_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// What a put carries besides the body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PutOptions {
    /// Content type.
    pub content_type: Option<String>,
    /// Cache control.
    pub cache_control: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// `Content-Encoding`, `Content-Disposition`, `Content-Language`, as given.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What a put must check before its object becomes visible.
#[derive(Debug, Clone, Default)]
pub struct PutChecks {
    /// The body's MD5 (hex) the client sent (`Content-MD5`).
    pub md5: Option<String>,
    /// The write condition (`If-None-Match: *`, `If-Match`).
    pub write_if: WriteIf,
}

/// The largest part of a multipart upload S3 accepts.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Objects, by key.
    pub objects: Vec<ObjectMeta>,
    /// Prefixes rolled up at the delimiter.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts (exclusive), if truncated.
    pub next: Option<String>,
}

/// Checks a bucket name by S3's rules.
pub fn check_bucket_name(n: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidBucketName(format!(
            "bucket name \"{n}\": {why}"
        )))
    };
    if n.len() < 3 || n.len() > 63 {
        return bad("must be 3 to 63 characters long");
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may hold only lowercase letters, digits, dots and hyphens");
    }
    let (first, last) = (n.as_bytes()[0], n.as_bytes()[n.len() - 1]);
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must begin and end with a letter or a digit");
    }
    if n.contains("..") || n.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not hold two adjacent dots or look like an IP address");
    }
    Ok(())
}

/// Checks an object key: at most 1,024 bytes, no NUL, no `..` segment, not absolute.
pub fn check_key(k: &str) -> Result<(), StoreError> {
    if k.len() > 1024 {
        return Err(StoreError::KeyTooLong(k.len()));
    }
    if k.is_empty() {
        return Err(StoreError::InvalidKey(
            "a key is at least 1 byte long".into(),
        ));
    }
    if k.contains('\0') || k.starts_with('/') || k.split('/').any(|s| s == "..") {
        return Err(StoreError::InvalidKey(
            "a key holds no NUL byte, does not start with / and has no .. segment".into(),
        ));
    }
    Ok(())
}

use veeps_sys::now_ms;

const K_BUCKET: &str = "s3/bucket/";
const K_OBJECT: &str = "s3/object/";
const K_UPLOAD: &str = "s3/upload/";
const K_PART: &str = "s3/part/";
const K_VERSION: &str = "s3/version/";

fn object_key(bucket: &str, key: &str) -> String {
    format!("{K_OBJECT}{bucket}/{key}")
}

/// Noncurrent versions of a key sort under this prefix, newest first (keys never hold NUL).
fn versions_prefix(bucket: &str, key: &str) -> String {
    format!("{K_VERSION}{bucket}/{key}\0")
}

fn version_key(bucket: &str, m: &ObjectMeta) -> String {
    format!(
        "{}{:016x}{}",
        versions_prefix(bucket, &m.key),
        u64::MAX - m.created_ns(),
        m.version_id
    )
}

fn new_version_id() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{ns:016x}{}", hex::encode(rand::random::<[u8; 8]>()))
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn nonce(chunk: u64) -> [u8; 12] {
    // Each object has its own key, so a counter nonce is unique; the version is in the AAD.
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&chunk.to_be_bytes());
    n
}

fn aad(version: &str, chunk: u64, last: bool) -> Vec<u8> {
    // Binding the chunk number and the last flag stops reordering and truncation.
    format!("{version}:{chunk}:{}", last as u8).into_bytes()
}

/// Key locks: a key's read-modify-write of its versions happens under its stripe.
const STRIPES: usize = 64;

/// The object store.
pub struct ObjectStore {
    dir: PathBuf,
    store: Arc<Store>,
    kms: Arc<Kms>,
    /// Serialises changes to one key's versions (commit, delete, lifecycle rewrites).
    keys: Vec<std::sync::Mutex<()>>,
    /// Commits hold it shared, bucket creation and deletion exclusively, so no object is
    /// committed into a bucket being deleted.
    buckets_lock: std::sync::RwLock<()>,
    /// Serialises recording parts with ending uploads, so no part outlives its upload.
    uploads: std::sync::Mutex<()>,
}

/// Removes a temporary file unless kept (every error path of a write leaves nothing).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl ObjectStore {
    /// Opens the store under `data_dir/s3`, removing blobs no committed object names.
    pub fn open(
        data_dir: &Path,
        store: Arc<Store>,
        kms: Arc<Kms>,
    ) -> Result<ObjectStore, StoreError> {
        let dir = data_dir.join("s3");
        std::fs::create_dir_all(dir.join("blobs"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::create_dir_all(dir.join("parts"))?;
        let me = ObjectStore {
            dir,
            store,
            kms,
            keys: (0..STRIPES).map(|_| std::sync::Mutex::new(())).collect(),
            buckets_lock: std::sync::RwLock::new(()),
            uploads: std::sync::Mutex::new(()),
        };
        me.collect_garbage()?;
        Ok(me)
    }

    fn collect_garbage(&self) -> Result<(), StoreError> {
        for e in std::fs::read_dir(self.dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let live: std::collections::HashSet<String> = self
            .store
            .kv_scan::<ObjectMeta>(K_OBJECT)
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .into_iter()
            .chain(
                self.store
                    .kv_scan::<ObjectMeta>(K_VERSION)
                    .map_err(internal)?,
            )
            .map(|(_, m)| m.version_id)
            .collect();
        let parts: std::collections::HashSet<String> = self
            .store
            .kv_scan::<Part>(K_PART)
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .into_iter()
            .map(|(_, p)| p.name)
            .collect();
        for e in std::fs::read_dir(self.dir.join("parts"))?.flatten() {
            if !parts.contains(&e.file_name().to_string_lossy().to_string()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        for e in std::fs::read_dir(self.dir.join("blobs"))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                tracing::info!(blob = %name, "removing the body of an object that was never committed");
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn lock_key(&self, bucket: &str, key: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (bucket, key).hash(&mut h);
        self.keys[h.finish() as usize % STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn shared_buckets(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.buckets_lock.read().unwrap_or_else(|p| p.into_inner())
    }

    fn exclusive_buckets(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.buckets_lock.write().unwrap_or_else(|p| p.into_inner())
    }

    fn blob(&self, version: &str) -> PathBuf {
        self.dir.join("blobs").join(version)
    }

    /// Creates a bucket protected by `env`'s key.
    pub fn create_bucket(&self, name: &str, env: &str) -> Result<Bucket, StoreError> {
        check_bucket_name(name)?;
        let _g = self.exclusive_buckets();
        if self.bucket(name).is_ok() {
            return Err(StoreError::BucketExists(name.into()));
        }
        self.kms
            .ensure_env_key(env)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let b = Bucket {
            name: name.into(),
            env: env.into(),
            created_ms: now_ms(),
            versioning: Versioning::Off,
            website: None,
            lifecycle: vec![],
        };
        self.store
            .kv_put(&format!("{K_BUCKET}{name}"), &b)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(b)
    }

    /// A bucket.
    pub fn bucket(&self, name: &str) -> Result<Bucket, StoreError> {
        self.store
            .kv_get::<Bucket>(&format!("{K_BUCKET}{name}"))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .ok_or_else(|| StoreError::NoSuchBucket(name.into()))
    }

    /// Every bucket, by name.
    pub fn buckets(&self) -> Result<Vec<Bucket>, StoreError> {
        Ok(self
            .store
            .kv_scan::<Bucket>(K_BUCKET)
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// Deletes an empty bucket, with its policy and its uploads in progress.
    pub fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let _g = self.exclusive_buckets();
        let _u = self.uploads_lock();
        self.bucket(name)?;
        let any = self.list(name, "", None, None, 1)?;
        let versions = self
            .store
            .kv_scan_page::<ObjectMeta>(&format!("{K_VERSION}{name}/"), None, 1)
            .map_err(internal)?;
        let markers = self
            .store
            .kv_scan_page::<ObjectMeta>(&object_key(name, ""), None, 1)
            .map_err(internal)?;
        if !any.objects.is_empty()
            || !any.common_prefixes.is_empty()
            || !versions.is_empty()
            || !markers.is_empty()
        {
            return Err(StoreError::BucketNotEmpty(name.into()));
        }
        // What belongs to the bucket goes with it, in one transaction: its policy and its
        // uploads in progress (a bucket made again under the name starts clean).
        use veeps_state::KvOp;
        let mut ops = vec![
            KvOp::Delete(format!("{K_BUCKET}{name}")),
            KvOp::Delete(format!("{}{name}", crate::access::K_POLICY)),
        ];
        let mut files = vec![];
        for (k, u) in self
            .store
            .kv_scan::<Upload>(&format!("{K_UPLOAD}{name}/"))
            .map_err(internal)?
        {
            for (pk, p) in self
                .store
                .kv_scan::<Part>(&format!("{K_PART}{}/", u.id))
                .map_err(internal)?
            {
                ops.push(KvOp::Delete(pk));
                files.push(self.dir.join("parts").join(p.name));
            }
            ops.push(KvOp::Delete(k));
        }
        self.store.kv_batch(ops).map_err(internal)?;
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }

    /// Stores an object from a body read in pieces; returns its metadata once durable.
    pub fn put<R: Read>(
        &self,
        bucket: &str,
        key: &str,
        body: R,
        opts: PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_if(bucket, key, body, opts, &PutChecks::default())
    }

    /// [`ObjectStore::put`] with the checks a request asks for: the body's MD5, a write
    /// condition. Nothing changes unless every check holds; the body is never visible.
    pub fn put_if<R: Read>(
        &self,
        bucket: &str,
        key: &str,
        body: R,
        opts: PutOptions,
        checks: &PutChecks,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_with(bucket, key, body, opts, None, checks)
    }

    /// [`ObjectStore::put_if`], with the ETag given (multipart objects have their own kind).
    fn put_with<R: Read>(
        &self,
        bucket: &str,
        key: &str,
        body: R,
        opts: PutOptions,
        etag: Option<String>,
        checks: &PutChecks,
    ) -> Result<ObjectMeta, StoreError> {
        let b = self.bucket(bucket)?;
        check_key(key)?;
        if checks.write_if != WriteIf::Always {
            // Fail early when the condition already does not hold (checked again at commit).
            let _k = self.lock_key(bucket, key);
            checks
                .write_if
                .check(key, self.meta(bucket, key).ok().as_ref())?;
        }
        let version = new_version_id();
        let max = if etag.is_some() { u64::MAX } else { MAX_PUT };
        let (wrapped, size, md5) =
            self.write_blob(&b.env, &version, &self.blob(&version), body, max)?;
        let blob = TempFile(Some(self.blob(&version)));
        if checks.md5.as_ref().is_some_and(|want| *want != md5) {
            return Err(StoreError::BadDigest);
        }
        let meta = ObjectMeta {
            key: key.into(),
            version_id: version,
            size,
            etag: etag.unwrap_or(md5),
            content_type: opts.content_type,
            cache_control: opts.cache_control,
            metadata: opts.metadata,
            headers: opts.headers,
            last_modified_ms: now_ms(),
            wrapped_key: wrapped,
            delete_marker: false,
            versioned: false,
            storage_class: None,
            noncurrent_ms: 0,
        };
        let meta = self.commit(bucket, meta, &checks.write_if)?;
        blob.keep();
        Ok(meta)
    }

    /// Makes `meta` the current version of its key: under the key's lock, reads the
    /// current version, checks `cond`, and writes both in one transaction. The previous
    /// current version is kept as noncurrent when versioning keeps it, or its body removed
    /// once the commit is durable. Returns `meta` as committed.
    fn commit(
        &self,
        bucket: &str,
        mut meta: ObjectMeta,
        cond: &WriteIf,
    ) -> Result<ObjectMeta, StoreError> {
        use veeps_state::KvOp;
        let _b = self.shared_buckets();
        let _k = self.lock_key(bucket, &meta.key);
        // The bucket as it is now (it may have been deleted or its versioning changed
        // while the body was written).
        let b = self.bucket(bucket)?;
        meta.versioned = b.versioning == Versioning::Enabled;
        let cur = self.meta(bucket, &meta.key).ok();
        cond.check(&meta.key, cur.as_ref())?;
        let mut ops = vec![KvOp::put(object_key(bucket, &meta.key), &meta)];
        let mut dropped = vec![];
        if let Some(mut old) = cur {
            let kept = match b.versioning {
                Versioning::Off => false,
                Versioning::Enabled => true,
                Versioning::Suspended => old.versioned,
            };
            if !kept {
                // Without versioning, or the null version replaced while suspended.
                if !old.delete_marker {
                    dropped.push(old.version_id.clone());
                }
            } else {
                old.noncurrent_ms = now_ms();
                ops.push(KvOp::put(version_key(bucket, &old), &old));
            }
        }
        if !meta.versioned {
            // At most one null version: an older noncurrent one goes too.
            for (k, v) in self
                .store
                .kv_scan::<ObjectMeta>(&versions_prefix(bucket, &meta.key))
                .map_err(internal)?
            {
                if !v.versioned {
                    ops.push(KvOp::Delete(k));
                    if !v.delete_marker {
                        dropped.push(v.version_id);
                    }
                }
            }
        }
        self.store.kv_batch(ops).map_err(internal)?;
        for v in dropped {
            let _ = std::fs::remove_file(self.blob(&v));
        }
        Ok(meta)
    }

    /// Encrypts `body` into `dest` (through a synced temporary file renamed into place)
    /// with a new data key of `env`; returns the wrapped key, the size and the MD5 (hex).
    fn write_blob<R: Read>(
        &self,
        env: &str,
        name: &str,
        dest: &Path,
        mut body: R,
        max: u64,
    ) -> Result<(Vec<u8>, u64, String), StoreError> {
        let dk = self
            .kms
            .generate_data_key(env)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let cipher = Aes256Gcm::new_from_slice(&dk.plaintext)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let tmp = self.dir.join("tmp").join(name);
        let guard = TempFile(Some(tmp.clone()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK];
        let mut idx = 0u64;
        // Read a chunk ahead, so the last one is known as last.
        let mut filled = read_full(&mut body, &mut buf)?;
        loop {
            let mut next = vec![0u8; CHUNK];
            let next_filled = if filled == CHUNK {
                read_full(&mut body, &mut next)?
            } else {
                0
            };
            let last = next_filled == 0;
            let chunk = &buf[..filled];
            md5.update(chunk);
            size += filled as u64;
            if size > max {
                // Stop reading at the limit: the rest of the body is never stored.
                return Err(StoreError::EntityTooLarge);
            }
            let sealed = cipher
                .encrypt(
                    Nonce::from_slice(&nonce(idx)),
                    Payload {
                        msg: chunk,
                        aad: &aad(name, idx, last),
                    },
                )
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            out.write_all(&sealed)?;
            if last {
                break;
            }
            idx += 1;
            buf = next;
            filled = next_filled;
        }
        let f = out
            .into_inner()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dest)?;
        guard.keep();
        if let Some(Ok(d)) = dest.parent().map(std::fs::File::open) {
            let _ = d.sync_all();
        }
        Ok((dk.wrapped, size, hex::encode(md5.finalize())))
    }

    /// A reader of `range` (inclusive) of a blob, decrypting chunk by chunk.
    fn blob_reader(
        &self,
        env: &str,
        name: &str,
        path: &Path,
        wrapped: &[u8],
        size: u64,
        range: (u64, u64),
    ) -> Result<BlobReader, StoreError> {
        let key = self
            .kms
            .decrypt_data_key(env, wrapped)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut file = std::fs::File::open(path)?;
        let first = range.0 / CHUNK as u64;
        file.seek(SeekFrom::Start(first * (CHUNK + TAG) as u64))?;
        Ok(BlobReader {
            file,
            cipher,
            name: name.to_string(),
            size,
            next_chunk: first,
            pos: range.0,
            end: range.1,
            buf: vec![],
            buf_off: 0,
        })
    }

    /// An object's metadata (the current version's).
    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.head_version(bucket, key, None)
    }

    /// The metadata of a version of an object (the current one when `None`); a delete
    /// marker asked for by id is [`StoreError::DeleteMarker`], the current one
    /// [`StoreError::NoSuchKey`].
    pub fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        Ok(self.lookup(bucket, key, version)?.1)
    }

    /// A bucket and a version of one of its objects ([`ObjectStore::head_version`]'s
    /// rules), in one pass.
    pub fn lookup(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<(Bucket, ObjectMeta), StoreError> {
        let b = self.bucket(bucket)?;
        let m = match version {
            None => self.meta(bucket, key)?,
            Some(v) => self.find_version(bucket, key, v)?.1,
        };
        match (m.delete_marker, version) {
            (false, _) => Ok((b, m)),
            (true, None) => Err(StoreError::NoSuchKey(key.into())),
            (true, Some(v)) => Err(StoreError::DeleteMarker(v.into())),
        }
    }

    /// The current version (perhaps a delete marker), the bucket known to exist.
    fn meta(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.store
            .kv_get::<ObjectMeta>(&object_key(bucket, key))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .ok_or_else(|| StoreError::NoSuchKey(key.into()))
    }

    /// A version by the id clients see, with its record's key (`None` when current).
    fn find_version(
        &self,
        bucket: &str,
        key: &str,
        label: &str,
    ) -> Result<(Option<String>, ObjectMeta), StoreError> {
        if let Ok(m) = self.meta(bucket, key) {
            if m.version_label() == label {
                return Ok((None, m));
            }
        }
        self.store
            .kv_scan::<ObjectMeta>(&versions_prefix(bucket, key))
            .map_err(internal)?
            .into_iter()
            .find(|(_, m)| m.version_label() == label)
            .map(|(k, m)| (Some(k), m))
            .ok_or_else(|| StoreError::NoSuchVersion(label.into()))
    }

    /// Opens `range` (inclusive; all when `None`) of an object for reading, decrypting only
    /// the chunks it covers, as it is read.
    pub fn open_read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectMeta, BlobReader), StoreError> {
        self.open_version(bucket, key, None, range)
    }

    /// [`ObjectStore::open_read`] of a given version (the current one when `None`).
    pub fn open_version(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectMeta, BlobReader), StoreError> {
        let (b, meta) = self.lookup(bucket, key, version)?;
        let r = self.reader(&b, &meta, range)?;
        Ok((meta, r))
    }

    /// A reader of `range` (inclusive; all when `None`) of a version found by
    /// [`ObjectStore::lookup`].
    pub fn reader(
        &self,
        b: &Bucket,
        meta: &ObjectMeta,
        range: Option<(u64, u64)>,
    ) -> Result<BlobReader, StoreError> {
        let (start, end) = match range {
            None if meta.size == 0 => (0, 0),
            None => (0, meta.size - 1),
            Some((s, e)) if s >= meta.size || s > e => return Err(StoreError::InvalidRange),
            Some((s, e)) => (s, e.min(meta.size - 1)),
        };
        let mut r = self.blob_reader(
            &b.env,
            &meta.version_id,
            &self.blob(&meta.version_id),
            &meta.wrapped_key,
            meta.size,
            (start, end),
        )?;
        if meta.size == 0 {
            r.pos = 1;
        }
        Ok(r)
    }

    /// Reads `range` (inclusive; all when `None`) of an object into memory.
    pub fn read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectMeta, Vec<u8>), StoreError> {
        let (meta, mut r) = self.open_read(bucket, key, range)?;
        let mut out = vec![];
        r.read_to_end(&mut out)?;
        Ok((meta, out))
    }

    /// Starts a multipart upload.
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        opts: PutOptions,
    ) -> Result<Upload, StoreError> {
        self.bucket(bucket)?;
        check_key(key)?;
        let u = Upload {
            id: format!("{}{}", now_ms(), hex::encode(rand::random::<[u8; 12]>())),
            key: key.into(),
            opts,
            initiated_ms: now_ms(),
        };
        self.store
            .kv_put(&format!("{K_UPLOAD}{bucket}/{}", u.id), &u)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(u)
    }

    /// An upload in progress.
    pub fn upload(&self, bucket: &str, id: &str) -> Result<Upload, StoreError> {
        self.bucket(bucket)?;
        self.store
            .kv_get::<Upload>(&format!("{K_UPLOAD}{bucket}/{id}"))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .ok_or_else(|| StoreError::NoSuchUpload(id.into()))
    }

    /// Uploads in progress in a bucket.
    pub fn uploads(&self, bucket: &str) -> Result<Vec<Upload>, StoreError> {
        self.bucket(bucket)?;
        Ok(self
            .store
            .kv_scan::<Upload>(&format!("{K_UPLOAD}{bucket}/"))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .into_iter()
            .map(|(_, u)| u)
            .collect())
    }

    /// Stores one part (replacing a part of the same number).
    pub fn put_part<R: Read>(
        &self,
        bucket: &str,
        id: &str,
        number: u32,
        body: R,
    ) -> Result<Part, StoreError> {
        self.put_part_if(bucket, id, number, body, None)
    }

    /// [`ObjectStore::put_part`], when the part's MD5 (hex) is `md5`.
    pub fn put_part_if<R: Read>(
        &self,
        bucket: &str,
        id: &str,
        number: u32,
        body: R,
        md5: Option<&str>,
    ) -> Result<Part, StoreError> {
        let b = self.bucket(bucket)?;
        self.upload(bucket, id)?;
        if !(1..=10_000).contains(&number) {
            return Err(StoreError::InvalidPart(format!(
                "part number {number} is not from 1 to 10,000"
            )));
        }
        let name = format!("{id}-{number}-{}", hex::encode(rand::random::<[u8; 4]>()));
        let path = self.dir.join("parts").join(&name);
        let (wrapped, size, digest) = self.write_blob(&b.env, &name, &path, body, MAX_PART)?;
        let file = TempFile(Some(path));
        if md5.is_some_and(|want| want != digest) {
            return Err(StoreError::BadDigest);
        }
        let p = Part {
            number,
            etag: digest,
            size,
            last_modified_ms: now_ms(),
            wrapped_key: wrapped,
            name,
        };
        let k = format!("{K_PART}{id}/{number:05}");
        // The upload may have been completed or aborted while the part was written: then
        // the part is not recorded (and its file goes).
        let _u = self.uploads_lock();
        self.upload(bucket, id)?;
        let old: Option<Part> = self.store.kv_get(&k).map_err(internal)?;
        self.store.kv_put(&k, &p).map_err(internal)?;
        file.keep();
        if let Some(o) = old {
            let _ = std::fs::remove_file(self.dir.join("parts").join(o.name));
        }
        Ok(p)
    }

    /// The parts of an upload, by number.
    pub fn parts(&self, bucket: &str, id: &str) -> Result<Vec<Part>, StoreError> {
        self.upload(bucket, id)?;
        Ok(self
            .store
            .kv_scan::<Part>(&format!("{K_PART}{id}/"))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Joins the listed parts `(number, etag)` into the object when `checks` hold; the
    /// upload ends.
    pub fn complete(
        &self,
        bucket: &str,
        id: &str,
        listed: &[(u32, String)],
        checks: &PutChecks,
    ) -> Result<ObjectMeta, StoreError> {
        let b = self.bucket(bucket)?;
        let up = self.upload(bucket, id)?;
        let have = self.parts(bucket, id)?;
        if listed.is_empty() {
            return Err(StoreError::InvalidPart("list at least one part".into()));
        }
        if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(StoreError::InvalidPartOrder);
        }
        let mut chosen = vec![];
        for (i, (n, tag)) in listed.iter().enumerate() {
            let p = have
                .iter()
                .find(|p| p.number == *n && p.etag == tag.trim_matches('"'))
                .ok_or_else(|| {
                    StoreError::InvalidPart(format!("part {n} with ETag {tag} was not uploaded"))
                })?;
            if i + 1 < listed.len() && p.size < MIN_PART {
                return Err(StoreError::EntityTooSmall(*n));
            }
            chosen.push(p.clone());
        }
        let mut md5s = vec![];
        for p in &chosen {
            md5s.extend(hex::decode(&p.etag).unwrap_or_default());
        }
        let etag = format!("{}-{}", hex::encode(Md5::digest(&md5s)), chosen.len());
        let mut readers: Vec<BlobReader> = vec![];
        for p in &chosen {
            let path = self.dir.join("parts").join(&p.name);
            readers.push(self.blob_reader(
                &b.env,
                &p.name,
                &path,
                &p.wrapped_key,
                p.size,
                (0, p.size.saturating_sub(1)),
            )?);
        }
        let body = Chain { readers, at: 0 };
        let meta = self.put_with(bucket, &up.key, body, up.opts.clone(), Some(etag), checks)?;
        self.end_upload(bucket, id)?;
        Ok(meta)
    }

    /// Abandons an upload and its parts.
    pub fn abort(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        self.upload(bucket, id)?;
        self.end_upload(bucket, id)
    }

    fn uploads_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes an upload and every part recorded for it, in one transaction.
    fn end_upload(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        use veeps_state::KvOp;
        let _u = self.uploads_lock();
        let parts = self
            .store
            .kv_scan::<Part>(&format!("{K_PART}{id}/"))
            .map_err(internal)?;
        let mut ops: Vec<KvOp> = parts.iter().map(|(k, _)| KvOp::Delete(k.clone())).collect();
        ops.push(KvOp::Delete(format!("{K_UPLOAD}{bucket}/{id}")));
        self.store.kv_batch(ops).map_err(internal)?;
        for (_, p) in parts {
            let _ = std::fs::remove_file(self.dir.join("parts").join(&p.name));
        }
        Ok(())
    }

    /// Deletes an object (deleting a missing one succeeds, as in S3). With versioning on,
    /// this adds a delete marker and keeps the versions.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<Deleted, StoreError> {
        self.delete_if(bucket, key, &WriteIf::Always)
    }

    /// [`ObjectStore::delete`] when `cond` holds (`If-Match`), checked atomically.
    pub fn delete_if(
        &self,
        bucket: &str,
        key: &str,
        cond: &WriteIf,
    ) -> Result<Deleted, StoreError> {
        let b = self.bucket(bucket)?;
        if b.versioning == Versioning::Off {
            let _k = self.lock_key(bucket, key);
            let cur = self.meta(bucket, key).ok();
            cond.check(key, cur.as_ref())?;
            if let Some(m) = cur {
                self.store
                    .kv_delete(&object_key(bucket, key))
                    .map_err(internal)?;
                let _ = std::fs::remove_file(self.blob(&m.version_id));
            }
            return Ok(Deleted::default());
        }
        let marker = ObjectMeta {
            key: key.into(),
            version_id: new_version_id(),
            size: 0,
            etag: String::new(),
            content_type: None,
            cache_control: None,
            metadata: BTreeMap::new(),
            headers: BTreeMap::new(),
            last_modified_ms: now_ms(),
            wrapped_key: vec![],
            delete_marker: true,
            versioned: b.versioning == Versioning::Enabled,
            storage_class: None,
            noncurrent_ms: 0,
        };
        let marker = self.commit(bucket, marker, cond)?;
        Ok(Deleted {
            version_id: Some(marker.version_label()),
            delete_marker: true,
        })
    }

    /// Deletes one version for good; when it was the current one, the newest remaining
    /// version becomes current.
    pub fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        label: &str,
    ) -> Result<Deleted, StoreError> {
        use veeps_state::KvOp;
        self.bucket(bucket)?;
        let _k = self.lock_key(bucket, key);
        let (rec, m) = match self.find_version(bucket, key, label) {
            Ok(x) => x,
            // Deleting a version that is not there succeeds, as in S3.
            Err(StoreError::NoSuchVersion(_)) => return Ok(Deleted::default()),
            Err(e) => return Err(e),
        };
        let ops = match rec {
            Some(k) => vec![KvOp::Delete(k)],
            None => {
                let newest = self
                    .store
                    .kv_scan_page::<ObjectMeta>(&versions_prefix(bucket, key), None, 1)
                    .map_err(internal)?
                    .into_iter()
                    .next();
                match newest {
                    Some((k, mut n)) => {
                        n.noncurrent_ms = 0;
                        vec![KvOp::Delete(k), KvOp::put(object_key(bucket, key), &n)]
                    }
                    None => vec![KvOp::Delete(object_key(bucket, key))],
                }
            }
        };
        self.store.kv_batch(ops).map_err(internal)?;
        if !m.delete_marker {
            let _ = std::fs::remove_file(self.blob(&m.version_id));
        }
        Ok(Deleted {
            version_id: Some(label.into()),
            delete_marker: m.delete_marker,
        })
    }

    /// Turns versioning on or suspends it (once on, a bucket never returns to off).
    pub fn set_versioning(&self, name: &str, v: Versioning) -> Result<Bucket, StoreError> {
        self.configure(name, |b| {
            b.versioning = match (b.versioning, v) {
                (Versioning::Off, Versioning::Off) => Versioning::Off,
                (_, Versioning::Off) => Versioning::Suspended,
                (_, v) => v,
            };
            Ok(())
        })
    }

    /// Sets a bucket's versioning, website and lifecycle settings.
    pub fn configure(
        &self,
        name: &str,
        f: impl FnOnce(&mut Bucket) -> Result<(), StoreError>,
    ) -> Result<Bucket, StoreError> {
        let mut b = self.bucket(name)?;
        f(&mut b)?;
        self.store
            .kv_put(&format!("{K_BUCKET}{name}"), &b)
            .map_err(internal)?;
        Ok(b)
    }

    /// Noncurrent versions of `key`, newest first, with their record keys.
    pub(crate) fn noncurrent(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<(String, ObjectMeta)>, StoreError> {
        self.store
            .kv_scan(&versions_prefix(bucket, key))
            .map_err(internal)
    }

    /// Rewrites a version's record in place (a lifecycle transition).
    pub(crate) fn rewrite(
        &self,
        bucket: &str,
        record: Option<&str>,
        m: &ObjectMeta,
    ) -> Result<(), StoreError> {
        let k = record
            .map(String::from)
            .unwrap_or_else(|| object_key(bucket, &m.key));
        // Only the version it was read as: a put or delete since then wins.
        let _k = self.lock_key(bucket, &m.key);
        match self.store.kv_get::<ObjectMeta>(&k).map_err(internal)? {
            Some(now) if now.version_id == m.version_id => {
                self.store.kv_put(&k, m).map_err(internal)
            }
            _ => Ok(()),
        }
    }

    /// Lists versions and delete markers of keys under `prefix`, after the markers of a
    /// previous page (a version marker resumes inside its key); at most `max` entries.
    pub fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        key_marker: Option<&str>,
        version_marker: Option<&str>,
        max: usize,
    ) -> Result<VersionListing, StoreError> {
        self.bucket(bucket)?;
        let mut out = VersionListing::default();
        let full = |out: &VersionListing| out.versions.len() + out.common_prefixes.len() >= max;
        let mut last: Option<(String, Option<String>)> = None;
        if let (Some(k), Some(v)) = (key_marker, version_marker) {
            if let Ok(cur) = self.meta(bucket, k) {
                let mut past = false;
                for (m, latest) in self.with_noncurrent(bucket, cur)? {
                    if !past {
                        past = m.version_label() == v;
                        continue;
                    }
                    if full(&out) {
                        out.next = last;
                        return Ok(out);
                    }
                    last = Some((m.key.clone(), Some(m.version_label())));
                    out.versions.push((m, latest));
                }
            }
        }
        let mut start = key_marker.map(String::from);
        loop {
            let page = self.walk(bucket, prefix, delimiter, start.as_deref(), 64, true)?;
            if page.objects.is_empty() && page.common_prefixes.is_empty() {
                return Ok(out);
            }
            let mut entries: Vec<(String, Option<ObjectMeta>)> = page
                .objects
                .into_iter()
                .map(|m| (m.key.clone(), Some(m)))
                .chain(page.common_prefixes.into_iter().map(|p| (p, None)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, cur) in entries {
                match cur {
                    None => {
                        if full(&out) {
                            out.next = last;
                            return Ok(out);
                        }
                        last = Some((key.clone(), None));
                        out.common_prefixes.push(key.clone());
                    }
                    Some(cur) => {
                        for (m, latest) in self.with_noncurrent(bucket, cur)? {
                            if full(&out) {
                                out.next = last;
                                return Ok(out);
                            }
                            last = Some((m.key.clone(), Some(m.version_label())));
                            out.versions.push((m, latest));
                        }
                    }
                }
                start = Some(key);
            }
        }
    }

    /// The current version of a key, then its noncurrent ones, newest first.
    fn with_noncurrent(
        &self,
        bucket: &str,
        cur: ObjectMeta,
    ) -> Result<Vec<(ObjectMeta, bool)>, StoreError> {
        let key = cur.key.clone();
        let mut all = vec![(cur, true)];
        all.extend(
            self.noncurrent(bucket, &key)?
                .into_iter()
                .map(|(_, m)| (m, false)),
        );
        Ok(all)
    }

    /// Lists keys under `prefix` after `start_after`, rolling up at `delimiter`; at most
    /// `max` entries (objects and prefixes together). Delete markers are not listed.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Listing, StoreError> {
        self.walk(bucket, prefix, delimiter, start_after, max, false)
    }

    /// Deletes every version and delete marker in a bucket, and its uploads in progress.
    pub fn empty_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        loop {
            let page = self.walk_all(bucket, "", None, 1000)?;
            if page.is_empty() {
                break;
            }
            for cur in page {
                for (_, m) in self.noncurrent(bucket, &cur.key)? {
                    self.delete_version(bucket, &m.key, &m.version_label())?;
                }
                self.delete_version(bucket, &cur.key, &cur.version_label())?;
            }
        }
        for u in self.uploads(bucket)? {
            self.abort(bucket, &u.id)?;
        }
        Ok(())
    }

    /// Objects and bytes stored in a bucket, every version counted.
    pub fn usage(&self, bucket: &str) -> Result<(u64, u64), StoreError> {
        let (mut n, mut bytes) = (0, 0);
        for (_, m) in self
            .store
            .kv_scan::<ObjectMeta>(&object_key(bucket, ""))
            .map_err(internal)?
            .into_iter()
            .chain(
                self.store
                    .kv_scan::<ObjectMeta>(&format!("{K_VERSION}{bucket}/"))
                    .map_err(internal)?,
            )
        {
            if !m.delete_marker {
                n += 1;
                bytes += m.size;
            }
        }
        Ok((n, bytes))
    }

    /// Current versions and delete markers under `prefix` after `after`, a page at a time.
    pub(crate) fn walk_all(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self.walk(bucket, prefix, None, after, max, true)?.objects)
    }

    /// [`ObjectStore::list`], with delete markers when `markers`. Reads the store a page at
    /// a time and jumps over rolled-up prefixes, so a page costs what it returns.
    fn walk(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max: usize,
        markers: bool,
    ) -> Result<Listing, StoreError> {
        self.bucket(bucket)?;
        let scan = object_key(bucket, prefix);
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut cursor = start_after.map(|s| object_key(bucket, s));
        let mut out = Listing::default();
        let mut last_key: Option<String> = None;
        'scan: loop {
            let batch = self
                .store
                .kv_scan_page::<ObjectMeta>(&scan, cursor.as_deref(), max.clamp(16, 1000) + 1)
                .map_err(internal)?;
            if batch.is_empty() {
                break;
            }
            for (k, m) in batch {
                cursor = Some(k);
                if m.delete_marker && !markers {
                    continue;
                }
                let rolled = delimiter.and_then(|d| {
                    m.key[prefix.len()..]
                        .find(d)
                        .map(|i| m.key[..prefix.len() + i + d.len()].to_string())
                });
                if let Some(p) = rolled {
                    // Everything under p is one entry: continue after its last possible key.
                    cursor = Some(format!("{}\u{10FFFF}", object_key(bucket, &p)));
                    if start_after.is_some_and(|s| p.as_str() <= s) {
                        continue 'scan;
                    }
                    if out.objects.len() + out.common_prefixes.len() >= max {
                        out.next = last_key;
                        break 'scan;
                    }
                    last_key = Some(p.clone());
                    out.common_prefixes.push(p);
                    continue 'scan;
                }
                if out.objects.len() + out.common_prefixes.len() >= max {
                    out.next = last_key;
                    break 'scan;
                }
                last_key = Some(m.key.clone());
                out.objects.push(m);
            }
        }
        Ok(out)
    }
}

/// Readers one after the other.
struct Chain {
    readers: Vec<BlobReader>,
    at: usize,
}

impl Read for Chain {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at < self.readers.len() {
            let n = self.readers[self.at].read(out)?;
            if n > 0 {
                return Ok(n);
            }
            self.at += 1;
        }
        Ok(0)
    }
}

/// Reads a range of an encrypted blob, one chunk at a time.
pub struct BlobReader {
    file: std::fs::File,
    cipher: Aes256Gcm,
    name: String,
    size: u64,
    next_chunk: u64,
    /// Next plaintext offset to hand out.
    pos: u64,
    /// Last plaintext offset to hand out (inclusive).
    end: u64,
    buf: Vec<u8>,
    buf_off: usize,
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos > self.end || self.size == 0 {
            return Ok(0);
        }
        if self.buf_off >= self.buf.len() {
            let chunks = self.size.div_ceil(CHUNK as u64);
            let idx = self.next_chunk;
            let plain_len = if idx == chunks - 1 {
                (self.size - idx * CHUNK as u64) as usize
            } else {
                CHUNK
            };
            let mut sealed = vec![0u8; plain_len + TAG];
            self.file.read_exact(&mut sealed)?;
            let plain = self
                .cipher
                .decrypt(
                    Nonce::from_slice(&nonce(idx)),
                    Payload {
                        msg: &sealed,
                        aad: &aad(&self.name, idx, idx == chunks - 1),
                    },
                )
                .map_err(|_| std::io::Error::other("a body chunk fails its integrity check"))?;
            self.buf = plain;
            self.buf_off = (self.pos - idx * CHUNK as u64) as usize;
            self.next_chunk += 1;
        }
        let avail = (self.buf.len() - self.buf_off).min((self.end - self.pos + 1) as usize);
        let n = avail.min(out.len());
        out[..n].copy_from_slice(&self.buf[self.buf_off..self.buf_off + n]);
        self.buf_off += n;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(d: &Path) -> ObjectStore {
        let store = Arc::new(Store::open(&d.join("state.redb")).unwrap());
        let kms = Arc::new(Kms::open(d, store.clone()).unwrap());
        ObjectStore::open(d, store, kms).unwrap()
    }

    #[test]
    fn objects_round_trip_encrypted_with_ranges_listing_and_restart() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.create_bucket("photos", "prod").unwrap();
        assert!(matches!(
            s.create_bucket("photos", "prod"),
            Err(StoreError::BucketExists(_))
        ));
        let body: Vec<u8> = (0..(3 * CHUNK + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let m = s
            .put(
                "photos",
                "2026/a.jpg",
                &body[..],
                PutOptions {
                    content_type: Some("image/jpeg".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(m.size, body.len() as u64);
        assert_eq!(m.etag, hex::encode(Md5::digest(&body)));
        // Encrypted at rest: the plaintext is nowhere in the blob.
        let raw = std::fs::read(d.path().join("s3/blobs").join(&m.version_id)).unwrap();
        assert!(!raw.windows(64).any(|w| w == &body[1000..1064]));
        assert_eq!(s.read("photos", "2026/a.jpg", None).unwrap().1, body);
        for (a, b) in [
            (0, 0),
            (10, 70_000),
            (CHUNK as u64 - 1, CHUNK as u64),
            (3 * CHUNK as u64, 10_000_000),
        ] {
            let got = s.read("photos", "2026/a.jpg", Some((a, b))).unwrap().1;
            let end = (b as usize).min(body.len() - 1);
            assert_eq!(got, &body[a as usize..=end], "{a}-{b}");
        }
        assert!(matches!(
            s.read("photos", "2026/a.jpg", Some((10_000_000, 10_000_001))),
            Err(StoreError::InvalidRange)
        ));
        s.put("photos", "2026/b.jpg", &b""[..], PutOptions::default())
            .unwrap();
        s.put("photos", "2027/c.jpg", &b"c"[..], PutOptions::default())
            .unwrap();
        s.put("photos", "index.html", &b"<h1>"[..], PutOptions::default())
            .unwrap();
        let l = s.list("photos", "", Some("/"), None, 1000).unwrap();
        assert_eq!(l.common_prefixes, vec!["2026/", "2027/"]);
        assert_eq!(
            l.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            vec!["index.html"]
        );
        let page = s.list("photos", "2026/", None, None, 1).unwrap();
        assert_eq!(page.objects[0].key, "2026/a.jpg");
        let rest = s
            .list("photos", "2026/", None, page.next.as_deref(), 1)
            .unwrap();
        assert_eq!(rest.objects[0].key, "2026/b.jpg");
        assert!(matches!(
            s.delete_bucket("photos"),
            Err(StoreError::BucketNotEmpty(_))
        ));
        // A leftover temporary body and an orphan blob vanish at the next open; committed
        // objects stay.
        std::fs::write(d.path().join("s3/tmp/partial"), b"x").unwrap();
        std::fs::write(d.path().join("s3/blobs/orphan"), b"x").unwrap();
        drop(s);
        let s = open(d.path());
        assert!(!d.path().join("s3/blobs/orphan").exists());
        assert_eq!(s.read("photos", "2026/a.jpg", None).unwrap().1, body);
        for k in ["2026/a.jpg", "2026/b.jpg", "2027/c.jpg", "index.html"] {
            s.delete("photos", k).unwrap();
        }
        s.delete("photos", "never-there").unwrap();
        s.delete_bucket("photos").unwrap();
        assert!(matches!(
            s.head("photos", "x"),
            Err(StoreError::NoSuchBucket(_))
        ));
    }

    #[test]
    fn multipart_uploads_join_parts_and_clean_up() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.create_bucket("big", "prod").unwrap();
        let up = s
            .create_upload("big", "video.mp4", PutOptions::default())
            .unwrap();
        let p1: Vec<u8> = (0..MIN_PART as usize).map(|i| (i % 253) as u8).collect();
        let p2 = b"the tail".to_vec();
        let e2 = s.put_part("big", &up.id, 2, &p2[..]).unwrap().etag;
        let e1 = s.put_part("big", &up.id, 1, &p1[..]).unwrap().etag;
        assert!(matches!(
            s.complete(
                "big",
                &up.id,
                &[(2, e2.clone()), (1, e1.clone())],
                &PutChecks::default()
            ),
            Err(StoreError::InvalidPartOrder)
        ));
        assert!(matches!(
            s.complete("big", &up.id, &[(1, "bad".into())], &PutChecks::default()),
            Err(StoreError::InvalidPart(_))
        ));
        let m = s
            .complete(
                "big",
                &up.id,
                &[(1, e1.clone()), (2, e2.clone())],
                &PutChecks::default(),
            )
            .unwrap();
        assert!(m.etag.ends_with("-2"), "{}", m.etag);
        let mut all = p1.clone();
        all.extend(&p2);
        assert_eq!(s.read("big", "video.mp4", None).unwrap().1, all);
        assert!(matches!(
            s.upload("big", &up.id),
            Err(StoreError::NoSuchUpload(_))
        ));
        assert_eq!(
            std::fs::read_dir(d.path().join("s3/parts"))
                .unwrap()
                .count(),
            0
        );
        // Small non-last parts are refused; abort removes everything.
        let up = s.create_upload("big", "x", PutOptions::default()).unwrap();
        let a = s.put_part("big", &up.id, 1, &b"small"[..]).unwrap().etag;
        let b = s.put_part("big", &up.id, 2, &b"small"[..]).unwrap().etag;
        assert!(matches!(
            s.complete("big", &up.id, &[(1, a), (2, b)], &PutChecks::default()),
            Err(StoreError::EntityTooSmall(1))
        ));
        assert_eq!(s.uploads("big").unwrap().len(), 1);
        s.abort("big", &up.id).unwrap();
        assert!(s.uploads("big").unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(d.path().join("s3/parts"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn versions_markers_and_lifecycle() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.create_bucket("docs", "prod").unwrap();
        // Written while versioning was off: the null version.
        s.put("docs", "a", &b"v0"[..], PutOptions::default())
            .unwrap();
        s.set_versioning("docs", Versioning::Enabled).unwrap();
        let v1 = s
            .put("docs", "a", &b"v1"[..], PutOptions::default())
            .unwrap();
        let v2 = s
            .put("docs", "a", &b"v2"[..], PutOptions::default())
            .unwrap();
        assert!(v1.versioned && v2.versioned);
        assert_eq!(s.read("docs", "a", None).unwrap().1, b"v2");
        let (_, mut r) = s
            .open_version("docs", "a", Some(&v1.version_id), None)
            .unwrap();
        let mut got = vec![];
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"v1");
        let (_, mut r) = s.open_version("docs", "a", Some("null"), None).unwrap();
        got.clear();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"v0");
        // A delete adds a marker: the key is gone from listings, its versions stay.
        let del = s.delete("docs", "a").unwrap();
        assert!(del.delete_marker);
        assert!(matches!(s.head("docs", "a"), Err(StoreError::NoSuchKey(_))));
        assert!(s
            .list("docs", "", None, None, 10)
            .unwrap()
            .objects
            .is_empty());
        let vs = s.list_versions("docs", "", None, None, None, 100).unwrap();
        let labels: Vec<(String, bool, bool)> = vs
            .versions
            .iter()
            .map(|(m, latest)| (m.version_label(), m.delete_marker, *latest))
            .collect();
        assert_eq!(labels.len(), 4, "{labels:?}");
        assert!(labels[0].1 && labels[0].2);
        assert_eq!(labels[1].0, v2.version_id);
        assert_eq!(labels[3].0, "null");
        // Paging through versions one at a time visits each once.
        let mut seen = vec![];
        let (mut km, mut vm) = (None::<String>, None::<String>);
        loop {
            let p = s
                .list_versions("docs", "", None, km.as_deref(), vm.as_deref(), 1)
                .unwrap();
            seen.extend(p.versions.iter().map(|(m, _)| m.version_label()));
            match p.next {
                Some((k, v)) => (km, vm) = (Some(k), v),
                None => break,
            }
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        // Removing the marker by id brings the newest version back.
        s.delete_version("docs", "a", labels[0].0.as_str()).unwrap();
        assert_eq!(s.read("docs", "a", None).unwrap().1, b"v2");
        assert!(matches!(
            s.delete_bucket("docs"),
            Err(StoreError::BucketNotEmpty(_))
        ));
        // Lifecycle, with a day of 1 ms: noncurrent versions go, the current one expires
        // into a marker, and the lone marker goes at the next run.
        s.configure("docs", |b| {
            b.lifecycle = vec![crate::lifecycle::Rule {
                id: "all".into(),
                enabled: true,
                expiration_days: Some(2),
                noncurrent_expiration_days: Some(1),
                ..Default::default()
            }];
            Ok(())
        })
        .unwrap();
        let later = now_ms() + 10_000;
        let r = s.run_lifecycle(later, 1).unwrap();
        assert_eq!((r.expired, r.noncurrent_removed), (1, 2), "{r:?}");
        let r = s.run_lifecycle(later + 10_000, 1).unwrap();
        assert_eq!((r.noncurrent_removed, r.markers_removed), (1, 1), "{r:?}");
        assert!(s
            .list_versions("docs", "", None, None, None, 100)
            .unwrap()
            .versions
            .is_empty());
        assert_eq!(
            std::fs::read_dir(d.path().join("s3/blobs"))
                .unwrap()
                .count(),
            0
        );
        s.delete_bucket("docs").unwrap();
    }

    #[test]
    fn names_and_keys_follow_s3s_rules() {
        for ok in ["abc", "my-bucket.logs", "a1b2c3"] {
            check_bucket_name(ok).unwrap();
        }
        for bad in [
            "ab",
            "Upper",
            "-start",
            "end-",
            "a..b",
            "192.168.1.1",
            &"a".repeat(64),
            "under_score",
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        check_key("a/b/c.txt").unwrap();
        for bad in ["", "/abs", "a/../b", "..", "nul\0byte", &"k".repeat(1025)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    fn files(d: &Path, sub: &str) -> usize {
        std::fs::read_dir(d.join("s3").join(sub)).unwrap().count()
    }

    /// A body that fails after `ok` bytes, like a client gone mid-upload.
    struct Failing {
        left: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = buf.len().min(self.left);
            buf[..n].fill(b'x');
            self.left -= n;
            Ok(n)
        }
    }

    /// Issue: 40 concurrent PUTs to one key of a versioned bucket were all acknowledged
    /// and only 19 versions listed. Every acknowledged version must be there; without
    /// versioning, the losers' bodies are collected at once.
    #[test]
    fn concurrent_puts_to_one_key_lose_no_acknowledged_version() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(open(d.path()));
        s.create_bucket("ver", "prod").unwrap();
        s.set_versioning("ver", Versioning::Enabled).unwrap();
        s.create_bucket("plain", "prod").unwrap();
        let acked: Vec<String> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..40)
                .map(|i| {
                    let s = s.clone();
                    sc.spawn(move || {
                        s.put(
                            "plain",
                            "k",
                            format!("p{i}").as_bytes(),
                            PutOptions::default(),
                        )
                        .unwrap();
                        s.put(
                            "ver",
                            "k",
                            format!("v{i}").as_bytes(),
                            PutOptions::default(),
                        )
                        .unwrap()
                        .version_id
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let listed = s.list_versions("ver", "", None, None, None, 1000).unwrap();
        let mut ids: Vec<String> = listed
            .versions
            .iter()
            .map(|(m, _)| m.version_id.clone())
            .collect();
        ids.sort();
        let mut want = acked.clone();
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(listed.versions.iter().filter(|(_, cur)| *cur).count(), 1);
        // 40 versioned bodies and the one current unversioned body: nothing orphaned.
        assert_eq!(files(d.path(), "blobs"), 41);
        assert_eq!(files(d.path(), "tmp"), 0);
    }

    /// Issue: a PUT with a wrong Content-MD5 destroyed the object it would have replaced.
    /// A failed check or a body that breaks off leaves the previous object as it was, and
    /// leaves no file behind.
    #[test]
    fn a_failed_put_leaves_the_previous_object_and_no_files() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.create_bucket("bkt", "prod").unwrap();
        s.put("bkt", "k", &b"old"[..], PutOptions::default())
            .unwrap();
        let wrong = PutChecks {
            md5: Some(hex::encode(Md5::digest(b"something else"))),
            ..Default::default()
        };
        assert!(matches!(
            s.put_if("bkt", "k", &b"new"[..], PutOptions::default(), &wrong),
            Err(StoreError::BadDigest)
        ));
        assert!(matches!(
            s.put("bkt", "k", Failing { left: 200_000 }, PutOptions::default()),
            Err(StoreError::Internal(_))
        ));
        assert_eq!(s.read("bkt", "k", None).unwrap().1, b"old");
        assert_eq!(files(d.path(), "blobs"), 1);
        assert_eq!(files(d.path(), "tmp"), 0);
        // A right digest passes.
        let right = PutChecks {
            md5: Some(hex::encode(Md5::digest(b"new"))),
            ..Default::default()
        };
        s.put_if("bkt", "k", &b"new"[..], PutOptions::default(), &right)
            .unwrap();
        assert_eq!(s.read("bkt", "k", None).unwrap().1, b"new");
        // Parts: a wrong digest, a broken body and a part for an upload that ended leave
        // nothing behind.
        let up = s
            .create_upload("bkt", "big", PutOptions::default())
            .unwrap();
        assert!(matches!(
            s.put_part_if("bkt", &up.id, 1, &b"part"[..], Some("00")),
            Err(StoreError::BadDigest)
        ));
        assert!(s
            .put_part("bkt", &up.id, 1, Failing { left: 70_000 })
            .is_err());
        s.abort("bkt", &up.id).unwrap();
        assert!(matches!(
            s.put_part("bkt", &up.id, 1, &b"late"[..]),
            Err(StoreError::NoSuchUpload(_))
        ));
        assert_eq!(files(d.path(), "parts"), 0);
        assert_eq!(files(d.path(), "tmp"), 0);
    }

    /// Bodies stop being read at the limit (a chunked upload of unknown length included).
    #[test]
    fn bodies_stop_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.create_bucket("bkt", "prod").unwrap();
        struct Endless(Arc<std::sync::atomic::AtomicU64>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0
                    .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(buf.len())
            }
        }
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let dest = d.path().join("s3").join("blobs").join("x");
        let r = s.write_blob("prod", "x", &dest, Endless(read.clone()), 1 << 20);
        assert!(matches!(r, Err(StoreError::EntityTooLarge)));
        let n = read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n <= (1 << 20) + 2 * CHUNK as u64, "read {n} bytes");
        assert!(!dest.exists());
        assert_eq!(files(d.path(), "tmp"), 0);
    }

    /// If-None-Match: * creates once, however many try at the same time; If-Match
    /// replaces or deletes only the version it names.
    #[test]
    fn conditional_writes_are_atomic() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(open(d.path()));
        s.create_bucket("bkt", "prod").unwrap();
        let create = PutChecks {
            write_if: WriteIf::Absent,
            ..Default::default()
        };
        let won = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..16)
                .map(|i| {
                    let (s, c) = (s.clone(), create.clone());
                    sc.spawn(move || {
                        s.put_if(
                            "bkt",
                            "once",
                            format!("{i}").as_bytes(),
                            PutOptions::default(),
                            &c,
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .filter(|r| {
                    assert!(r.is_ok() || matches!(r, Err(StoreError::PreconditionFailed(_))));
                    r.is_ok()
                })
                .count()
        });
        assert_eq!(won, 1);
        let cur = s.head("bkt", "once").unwrap();
        let stale = PutChecks {
            write_if: WriteIf::Matches("\"0123\"".into()),
            ..Default::default()
        };
        assert!(matches!(
            s.put_if("bkt", "once", &b"x"[..], PutOptions::default(), &stale),
            Err(StoreError::PreconditionFailed(_))
        ));
        assert!(matches!(
            s.delete_if("bkt", "once", &WriteIf::Matches("nope".into())),
            Err(StoreError::PreconditionFailed(_))
        ));
        assert!(matches!(
            s.put_if("bkt", "missing", &b"x"[..], PutOptions::default(), &stale),
            Err(StoreError::NoSuchKey(_))
        ));
        let fresh = PutChecks {
            write_if: WriteIf::Matches(format!("\"{}\"", cur.etag)),
            ..Default::default()
        };
        s.put_if("bkt", "once", &b"y"[..], PutOptions::default(), &fresh)
            .unwrap();
        let now = s.head("bkt", "once").unwrap();
        s.delete_if("bkt", "once", &WriteIf::Matches(now.etag.clone()))
            .unwrap();
        assert!(s.head("bkt", "once").is_err());
        assert_eq!(files(d.path(), "blobs"), 0);
    }

    /// Issue: a bucket made again under a deleted one's name inherited its public policy
    /// (and its uploads). They go with the bucket.
    #[test]
    fn a_deleted_bucket_takes_its_policy_and_uploads_with_it() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("state.redb")).unwrap());
        let kms = Arc::new(Kms::open(d.path(), store.clone()).unwrap());
        let s = ObjectStore::open(d.path(), store.clone(), kms.clone()).unwrap();
        let access = crate::access::Access::new(store, kms);
        s.create_bucket("site", "s3").unwrap();
        access
            .set_policy(
                "site",
                Some(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::site/*"}]}"#),
            )
            .unwrap();
        let up = s.create_upload("site", "k", PutOptions::default()).unwrap();
        s.put_part("site", &up.id, 1, &b"part"[..]).unwrap();
        s.delete_bucket("site").unwrap();
        s.create_bucket("site", "s3").unwrap();
        assert_eq!(access.policy("site"), None);
        assert!(s.uploads("site").unwrap().is_empty());
        assert_eq!(files(d.path(), "parts"), 0);
    }
}

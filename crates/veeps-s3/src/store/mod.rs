//! The object store behind the S3 API: buckets and object metadata in the state store,
//! object bodies in blob files encrypted with a data key per object (AES-256-GCM in 64 KiB
//! chunks, so ranges decrypt only what they need), the data key wrapped by the bucket's
//! environment key.
//!
//! Crash safety: a body is written to a temporary file, synced and renamed into place, and
//! only then is its metadata committed in one store transaction; a crash before the
//! commit leaves an orphan blob that [`ObjectStore::open`] removes, never a visible
//! half-written object. Acknowledged objects are on disk and in the store.

use md5::{Digest, Md5};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use veeps_kms::Kms;
use veeps_state::Store;
use veeps_sys::now_ms;

/// Plaintext bytes per encrypted chunk.
pub const CHUNK: usize = 64 * 1024;

/// How many times a read looks an object up again when the version it found was replaced
/// before its body was opened (see [`ObjectStore::again_if_replaced`]).
const OPEN_TRIES: usize = 50;
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
    /// A setting that is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("object store: {0}")]
    Internal(String),
    /// The version looked up was replaced (its body removed) before it was opened: look
    /// it up again.
    #[error("the object changed while it was being read; try again")]
    Replaced,
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
    #[serde(with = "veeps_state::b64")]
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
    /// The data key, wrapped by the environment's key (base64 in the record).
    #[serde(with = "veeps_state::b64")]
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

const K_BUCKET: &str = "s3/bucket/";
const K_OBJECT: &str = "s3/object/";
const K_UPLOAD: &str = "s3/upload/";
const K_PART: &str = "s3/part/";
const K_VERSION: &str = "s3/version/";
/// Uploads completed lately, so that a retried CompleteMultipartUpload answers as the first.
const K_COMPLETED: &str = "s3/completed/";

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
    /// Records read, by their key, with the store's generation they were read at: a read
    /// of a hot object costs no transaction and no decoding while nothing is written.
    records: Records,
    /// Bodies kept open for reading, with their keys.
    open_blobs: blob::OpenBlobs,
}

/// Most records [`Records`] keeps (it starts again empty when full).
const RECORDS_MAX: usize = 16_384;

/// Decoded bucket and object records, each valid while the store's generation has not
/// moved since it was read (see `veeps_state::Store::generation`).
#[derive(Default)]
struct Records {
    buckets: std::sync::RwLock<HashMap<String, (u64, Arc<Bucket>)>>,
    objects: std::sync::RwLock<HashMap<String, (u64, Arc<ObjectMeta>)>>,
}

impl Records {
    fn get<T>(
        map: &std::sync::RwLock<HashMap<String, (u64, Arc<T>)>>,
        key: &str,
        now: u64,
    ) -> Option<Arc<T>> {
        match map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            Some((g, v)) if *g == now => Some(v.clone()),
            _ => None,
        }
    }

    fn put<T>(
        map: &std::sync::RwLock<HashMap<String, (u64, Arc<T>)>>,
        key: &str,
        read_at: u64,
        v: Arc<T>,
    ) {
        let mut m = map.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= RECORDS_MAX {
            m.clear();
        }
        m.insert(key.to_string(), (read_at, v));
    }
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
            records: Records::default(),
            open_blobs: blob::OpenBlobs::default(),
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

    /// Removes a version's body, and closes it if open (so its space is freed). Removed
    /// first: a reader that opened it just before keeps it open only until it sees it gone.
    fn remove_blob(&self, version: &str) {
        let _ = std::fs::remove_file(self.blob(version));
        self.open_blobs.forget(version);
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
        let g = self.store.generation();
        if let Some(b) = Records::get(&self.records.buckets, name, g) {
            return Ok((*b).clone());
        }
        let b = self
            .store
            .kv_get::<Bucket>(&format!("{K_BUCKET}{name}"))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .ok_or_else(|| StoreError::NoSuchBucket(name.into()))?;
        Records::put(&self.records.buckets, name, g, Arc::new(b.clone()));
        Ok(b)
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
            KvOp::Delete(format!("{}{name}", notify::K_RULES)),
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
        for (k, _) in self
            .store
            .kv_scan::<serde_json::Value>(&format!("{K_COMPLETED}{name}/"))
            .map_err(internal)?
        {
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
        let name = if meta.delete_marker {
            "ObjectRemoved:DeleteMarkerCreated"
        } else {
            "ObjectCreated:Put"
        };
        ops.extend(self.event_ops(bucket, name, &meta.key, Some(&meta)));
        self.store.kv_batch(ops).map_err(internal)?;
        for v in dropped {
            self.remove_blob(&v);
        }
        Ok(meta)
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
        let k = object_key(bucket, key);
        let g = self.store.generation();
        if let Some(m) = Records::get(&self.records.objects, &k, g) {
            return Ok((*m).clone());
        }
        let m = self
            .store
            .kv_get::<ObjectMeta>(&k)
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .ok_or_else(|| StoreError::NoSuchKey(key.into()))?;
        Records::put(&self.records.objects, &k, g, Arc::new(m.clone()));
        Ok(m)
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
        Self::again_if_replaced(|| {
            let (b, meta) = self.lookup(bucket, key, version)?;
            let r = self.reader(&b, &meta, range)?;
            Ok((meta, r))
        })
    }

    /// Runs `read` (a lookup and the opening of what it found) again while the version
    /// it found was replaced before its body opened: each time a newer version was
    /// committed meanwhile. After [`OPEN_TRIES`] tries, [`StoreError::Replaced`].
    pub fn again_if_replaced<T>(
        mut read: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tries = 0;
        loop {
            match read() {
                Err(StoreError::Replaced) if tries < OPEN_TRIES => {
                    tries += 1;
                    std::thread::yield_now();
                }
                r => return r,
            }
        }
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
            &|| self.blob(&meta.version_id),
            &meta.wrapped_key,
            meta.size,
            (start, end),
            true,
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

mod blob;
mod multipart;
pub mod notify;
mod versions;

pub use blob::BlobReader;
use blob::Chain;

#[cfg(test)]
mod tests;

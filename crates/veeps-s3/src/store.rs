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
    /// `KeyTooLongError` or `InvalidArgument`.
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
    /// Content type and metadata for the object.
    pub content_type: Option<String>,
    /// Cache control.
    pub cache_control: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
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
    fn from(e: std::io::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
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
    /// Last modified (ms).
    pub last_modified_ms: i64,
    /// The data key, wrapped by the environment's key.
    pub wrapped_key: Vec<u8>,
}

/// What a put carries besides the body.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Content type.
    pub content_type: Option<String>,
    /// Cache control.
    pub cache_control: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
}

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
    if k.is_empty() || k.len() > 1024 {
        return Err(StoreError::InvalidKey(format!(
            "a key is 1 to 1,024 bytes long; this one is {}",
            k.len()
        )));
    }
    if k.contains('\0') || k.starts_with('/') || k.split('/').any(|s| s == "..") {
        return Err(StoreError::InvalidKey(
            "a key holds no NUL byte, does not start with / and has no .. segment".into(),
        ));
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const K_BUCKET: &str = "s3/bucket/";
const K_OBJECT: &str = "s3/object/";
const K_UPLOAD: &str = "s3/upload/";
const K_PART: &str = "s3/part/";

fn object_key(bucket: &str, key: &str) -> String {
    format!("{K_OBJECT}{bucket}/{key}")
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

/// The object store.
pub struct ObjectStore {
    dir: PathBuf,
    store: Arc<Store>,
    kms: Arc<Kms>,
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
        let me = ObjectStore { dir, store, kms };
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

    fn blob(&self, version: &str) -> PathBuf {
        self.dir.join("blobs").join(version)
    }

    /// Creates a bucket protected by `env`'s key.
    pub fn create_bucket(&self, name: &str, env: &str) -> Result<Bucket, StoreError> {
        check_bucket_name(name)?;
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

    /// Deletes an empty bucket.
    pub fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        self.bucket(name)?;
        let any = self.list(name, "", None, None, 1)?;
        if !any.objects.is_empty() || !any.common_prefixes.is_empty() {
            return Err(StoreError::BucketNotEmpty(name.into()));
        }
        self.store
            .kv_delete(&format!("{K_BUCKET}{name}"))
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// Stores an object from a body read in pieces; returns its metadata once durable.
    pub fn put<R: Read>(
        &self,
        bucket: &str,
        key: &str,
        body: R,
        opts: PutOptions,
    ) -> Result<ObjectMeta, StoreError> {
        self.put_with(bucket, key, body, opts, None)
    }

    /// [`ObjectStore::put`], with the ETag given (multipart objects have their own kind).
    fn put_with<R: Read>(
        &self,
        bucket: &str,
        key: &str,
        body: R,
        opts: PutOptions,
        etag: Option<String>,
    ) -> Result<ObjectMeta, StoreError> {
        let b = self.bucket(bucket)?;
        check_key(key)?;
        let version = format!("{}{}", now_ms(), hex::encode(rand::random::<[u8; 8]>()));
        let (wrapped, size, md5) = self.write_blob(&b.env, &version, &self.blob(&version), body)?;
        let meta = ObjectMeta {
            key: key.into(),
            version_id: version,
            size,
            etag: etag.unwrap_or(md5),
            content_type: opts.content_type,
            cache_control: opts.cache_control,
            metadata: opts.metadata,
            last_modified_ms: now_ms(),
            wrapped_key: wrapped,
        };
        let old = self.meta(bucket, key).ok();
        self.store
            .kv_put(&object_key(bucket, key), &meta)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        // The replaced body goes once the new one is committed.
        if let Some(o) = old {
            let _ = std::fs::remove_file(self.blob(&o.version_id));
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
    ) -> Result<(Vec<u8>, u64, String), StoreError> {
        let dk = self
            .kms
            .generate_data_key(env)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let cipher = Aes256Gcm::new_from_slice(&dk.plaintext)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let tmp = self.dir.join("tmp").join(name);
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

    /// An object's metadata.
    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.bucket(bucket)?;
        self.meta(bucket, key)
    }

    /// An object's metadata, the bucket known to exist.
    fn meta(&self, bucket: &str, key: &str) -> Result<ObjectMeta, StoreError> {
        self.store
            .kv_get::<ObjectMeta>(&object_key(bucket, key))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .ok_or_else(|| StoreError::NoSuchKey(key.into()))
    }

    /// Opens `range` (inclusive; all when `None`) of an object for reading, decrypting only
    /// the chunks it covers, as it is read.
    pub fn open_read(
        &self,
        bucket: &str,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ObjectMeta, BlobReader), StoreError> {
        let b = self.bucket(bucket)?;
        let meta = self.meta(bucket, key)?;
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
        Ok((meta, r))
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
            content_type: opts.content_type,
            cache_control: opts.cache_control,
            metadata: opts.metadata,
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
        let b = self.bucket(bucket)?;
        self.upload(bucket, id)?;
        if !(1..=10_000).contains(&number) {
            return Err(StoreError::InvalidPart(format!(
                "part number {number} is not from 1 to 10,000"
            )));
        }
        let name = format!("{id}-{number}-{}", hex::encode(rand::random::<[u8; 4]>()));
        let (wrapped, size, md5) =
            self.write_blob(&b.env, &name, &self.dir.join("parts").join(&name), body)?;
        let p = Part {
            number,
            etag: md5,
            size,
            last_modified_ms: now_ms(),
            wrapped_key: wrapped,
            name,
        };
        let k = format!("{K_PART}{id}/{number:05}");
        let old: Option<Part> = self
            .store
            .kv_get(&k)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        self.store
            .kv_put(&k, &p)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
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

    /// Joins the listed parts `(number, etag)` into the object; the upload ends.
    pub fn complete(
        &self,
        bucket: &str,
        id: &str,
        listed: &[(u32, String)],
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
        let opts = PutOptions {
            content_type: up.content_type.clone(),
            cache_control: up.cache_control.clone(),
            metadata: up.metadata.clone(),
        };
        let meta = self.put_with(bucket, &up.key, body, opts, Some(etag))?;
        self.end_upload(bucket, id, &have)?;
        Ok(meta)
    }

    /// Abandons an upload and its parts.
    pub fn abort(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        let have = self.parts(bucket, id)?;
        self.end_upload(bucket, id, &have)
    }

    fn end_upload(&self, bucket: &str, id: &str, parts: &[Part]) -> Result<(), StoreError> {
        for p in parts {
            self.store
                .kv_delete(&format!("{K_PART}{id}/{:05}", p.number))
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let _ = std::fs::remove_file(self.dir.join("parts").join(&p.name));
        }
        self.store
            .kv_delete(&format!("{K_UPLOAD}{bucket}/{id}"))
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// Deletes an object (deleting a missing one succeeds, as in S3).
    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.bucket(bucket)?;
        if let Ok(m) = self.meta(bucket, key) {
            self.store
                .kv_delete(&object_key(bucket, key))
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let _ = std::fs::remove_file(self.blob(&m.version_id));
        }
        Ok(())
    }

    /// Lists keys under `prefix` after `start_after`, rolling up at `delimiter`; at most
    /// `max` entries (objects and prefixes together).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Listing, StoreError> {
        self.bucket(bucket)?;
        let all = self
            .store
            .kv_scan::<ObjectMeta>(&object_key(bucket, prefix))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut out = Listing::default();
        let mut last_key: Option<String> = None;
        for (_, m) in all {
            if start_after.is_some_and(|s| m.key.as_str() <= s) {
                continue;
            }
            let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                m.key[prefix.len()..]
                    .find(d)
                    .map(|i| m.key[..prefix.len() + i + d.len()].to_string())
            });
            if let Some(p) = &rolled {
                if out.common_prefixes.last() == Some(p) {
                    continue;
                }
                if start_after.is_some_and(|s| p.as_str() <= s) {
                    continue;
                }
            }
            if out.objects.len() + out.common_prefixes.len() >= max {
                out.next = last_key;
                break;
            }
            match rolled {
                Some(p) => {
                    // Skip the rest of this prefix: continue after its last possible key.
                    last_key = Some(p.clone());
                    out.common_prefixes.push(p);
                }
                None => {
                    last_key = Some(m.key.clone());
                    out.objects.push(m);
                }
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
            s.complete("big", &up.id, &[(2, e2.clone()), (1, e1.clone())]),
            Err(StoreError::InvalidPartOrder)
        ));
        assert!(matches!(
            s.complete("big", &up.id, &[(1, "bad".into())]),
            Err(StoreError::InvalidPart(_))
        ));
        let m = s
            .complete("big", &up.id, &[(1, e1.clone()), (2, e2.clone())])
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
            s.complete("big", &up.id, &[(1, a), (2, b)]),
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
}

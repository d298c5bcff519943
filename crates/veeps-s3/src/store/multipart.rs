//! Multipart uploads: parts written as sealed blobs of their own, joined at completion
//! into one object version in one transaction.

use super::*;

/// How long a completed upload answers a retried CompleteMultipartUpload (S3 does for a
/// while too; after that, NoSuchUpload).
pub(super) const COMPLETED_FOR_MS: i64 = 24 * 3600 * 1000;

/// How an upload was completed.
#[derive(Serialize, Deserialize)]
pub(super) struct Completed {
    parts: Vec<(u32, String)>,
    meta: ObjectMeta,
    at_ms: i64,
}

impl ObjectStore {
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
        let up = match self.upload(bucket, id) {
            Err(StoreError::NoSuchUpload(e)) => {
                return self
                    .completed_before(bucket, id, listed)
                    .ok_or(StoreError::NoSuchUpload(e))
            }
            other => other?,
        };
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
            readers.push(self.blob_reader(
                &b.env,
                &p.name,
                &|| self.dir.join("parts").join(&p.name),
                &p.wrapped_key,
                p.size,
                (0, p.size.saturating_sub(1)),
                false,
            )?);
        }
        let body = Chain { readers, at: 0 };
        let meta = self.put_with(bucket, &up.key, body, up.opts.clone(), Some(etag), checks)?;
        let done = Completed {
            parts: listed.to_vec(),
            meta: meta.clone(),
            at_ms: now_ms(),
        };
        self.end_upload_with(bucket, id, Some(done))?;
        Ok(meta)
    }

    /// The answer of an upload completed within [`COMPLETED_FOR_MS`] with the same parts:
    /// a client whose first CompleteMultipartUpload succeeded but whose answer was lost
    /// retries it, and gets the same answer, as from S3.
    fn completed_before(
        &self,
        bucket: &str,
        id: &str,
        listed: &[(u32, String)],
    ) -> Option<ObjectMeta> {
        let c: Completed = self
            .store
            .kv_get(&format!("{K_COMPLETED}{bucket}/{id}"))
            .ok()
            .flatten()?;
        let same = |a: &[(u32, String)], b: &[(u32, String)]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| x.0 == y.0 && x.1.trim_matches('"') == y.1.trim_matches('"'))
        };
        (now_ms() - c.at_ms < COMPLETED_FOR_MS && same(&c.parts, listed)).then_some(c.meta)
    }

    /// Forgets completions older than [`COMPLETED_FOR_MS`] (the lifecycle pass calls it).
    pub(crate) fn forget_old_completions(&self, now_ms: i64) -> Result<(), StoreError> {
        use veeps_state::KvOp;
        let old: Vec<KvOp> = self
            .store
            .kv_scan::<Completed>(K_COMPLETED)
            .map_err(internal)?
            .into_iter()
            .filter(|(_, c)| now_ms - c.at_ms >= COMPLETED_FOR_MS)
            .map(|(k, _)| KvOp::Delete(k))
            .collect();
        if !old.is_empty() {
            self.store.kv_batch(old).map_err(internal)?;
        }
        Ok(())
    }

    /// Abandons an upload and its parts.
    pub fn abort(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        self.upload(bucket, id)?;
        self.end_upload(bucket, id)
    }

    pub(super) fn uploads_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes an upload and every part recorded for it, in one transaction.
    pub(super) fn end_upload(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        self.end_upload_with(bucket, id, None)
    }

    /// [`ObjectStore::end_upload`], recording how it was completed in the same
    /// transaction.
    fn end_upload_with(
        &self,
        bucket: &str,
        id: &str,
        done: Option<Completed>,
    ) -> Result<(), StoreError> {
        use veeps_state::KvOp;
        let _u = self.uploads_lock();
        let parts = self
            .store
            .kv_scan::<Part>(&format!("{K_PART}{id}/"))
            .map_err(internal)?;
        let mut ops: Vec<KvOp> = parts.iter().map(|(k, _)| KvOp::Delete(k.clone())).collect();
        ops.push(KvOp::Delete(format!("{K_UPLOAD}{bucket}/{id}")));
        if let Some(done) = done {
            ops.push(KvOp::put(format!("{K_COMPLETED}{bucket}/{id}"), &done));
        }
        self.store.kv_batch(ops).map_err(internal)?;
        for (_, p) in parts {
            let _ = std::fs::remove_file(self.dir.join("parts").join(&p.name));
        }
        Ok(())
    }
}

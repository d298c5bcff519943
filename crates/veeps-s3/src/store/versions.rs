//! Deletes, versions and delete markers, and bucket settings (versioning, website,
//! lifecycle rules): what changes a key's history or a bucket's configuration.

use super::*;

impl ObjectStore {
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
                let mut ops = vec![veeps_state::KvOp::Delete(object_key(bucket, key))];
                ops.extend(self.event_ops(bucket, "ObjectRemoved:Delete", key, Some(&m)));
                self.store.kv_batch(ops).map_err(internal)?;
                self.remove_blob(&m.version_id);
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
        let mut ops = match rec {
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
        ops.extend(self.event_ops(bucket, "ObjectRemoved:Delete", key, Some(&m)));
        self.store.kv_batch(ops).map_err(internal)?;
        if !m.delete_marker {
            self.remove_blob(&m.version_id);
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
    pub(super) fn with_noncurrent(
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
}

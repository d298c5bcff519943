//! The edge's store: answers kept whole (status, headers, body) by cache key, in memory
//! within a byte bound and on disk within another, so that the cache survives a restart.
//! Eviction is least-recently-used with a second chance: an object asked for again since it
//! came in is moved back instead of evicted once, so that a scan of objects asked for once
//! does not push out the hot ones.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An answer as the edge keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// The cache key.
    pub key: String,
    /// The distribution it belongs to.
    pub dist: String,
    /// The request path it answers (what invalidations match).
    pub path: String,
    /// The origin's status.
    pub status: u16,
    /// The origin's end-to-end headers (hop-by-hop ones left out), in order.
    pub headers: Vec<(String, String)>,
    /// When it was stored or last revalidated (milliseconds since the epoch).
    pub stored_ms: u64,
    /// Fresh for this long after `stored_ms` (seconds).
    pub fresh_for: u64,
    /// Never served stale (`must-revalidate`).
    pub must_revalidate: bool,
    /// Served stale while revalidated in the background this long past freshness.
    pub stale_while_revalidate: u64,
    /// Served stale when the origin fails this long past freshness.
    pub stale_if_error: u64,
}

impl Meta {
    /// A header's first value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many milliseconds past freshness it is at `now_ms` (0 while fresh).
    pub fn stale_by_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_ms + self.fresh_for.saturating_mul(1000))
    }

    /// Whether it is fresh at `now_ms`.
    pub fn fresh(&self, now_ms: u64) -> bool {
        now_ms < self.stored_ms + self.fresh_for.saturating_mul(1000)
    }
}

/// A stored answer.
#[derive(Debug)]
pub struct Object {
    /// What it is.
    pub meta: Meta,
    /// Its body.
    pub body: Bytes,
    /// Compressed forms made from the body, kept while it is in memory.
    pub coded: Mutex<HashMap<crate::policy::Coding, Bytes>>,
}

impl Object {
    /// An object.
    pub fn new(meta: Meta, body: Bytes) -> Arc<Object> {
        Arc::new(Object {
            meta,
            body,
            coded: Mutex::new(HashMap::new()),
        })
    }

    fn size(&self) -> u64 {
        self.body.len() as u64 + 512
    }
}

/// Bounds of a cache, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Bodies held in memory.
    pub memory: u64,
    /// Files on disk.
    pub disk: u64,
}

struct Slot {
    dist: String,
    path: String,
    /// In memory.
    object: Option<Arc<Object>>,
    /// On disk, this many bytes.
    disk: Option<u64>,
    /// Position in the recency order.
    tick: u64,
    /// Asked for again since it came in (or since its last second chance).
    again: bool,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Recency order: tick -> key, least recent first.
    order: BTreeMap<u64, String>,
    tick: u64,
    memory: u64,
    disk: u64,
}

/// Counters of a cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Objects known (in memory or on disk).
    pub objects: u64,
    /// Bytes in memory.
    pub memory_bytes: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Objects evicted (from disk: gone).
    pub evictions: u64,
}

/// The store.
pub struct Cache {
    dir: Option<PathBuf>,
    bounds: Mutex<Bounds>,
    inner: Mutex<Inner>,
    evictions: std::sync::atomic::AtomicU64,
}

fn file_name(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Cache {
    /// A cache keeping its files in `dir` (made if missing), or in memory only. What `dir`
    /// already holds is known again, least recently written first; unreadable files go.
    pub fn open(dir: Option<&Path>, bounds: Bounds) -> std::io::Result<Cache> {
        let cache = Cache {
            dir: dir.map(Path::to_path_buf),
            bounds: Mutex::new(bounds),
            inner: Mutex::new(Inner::default()),
            evictions: Default::default(),
        };
        let Some(dir) = dir else {
            return Ok(cache);
        };
        std::fs::create_dir_all(dir)?;
        let mut found = vec![];
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp") {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            match read_meta(&p) {
                Some(meta) if file_name(&meta.key) == name => {
                    let md = e.metadata()?;
                    let mtime = md.modified().ok();
                    found.push((mtime, meta, md.len()));
                }
                _ => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        found.sort_by_key(|(t, _, _)| *t);
        {
            let mut inner = cache.inner.lock().unwrap_or_else(|p| p.into_inner());
            for (_, meta, len) in found {
                inner.tick += 1;
                let tick = inner.tick;
                inner.order.insert(tick, meta.key.clone());
                inner.disk += len;
                inner.slots.insert(
                    meta.key.clone(),
                    Slot {
                        dist: meta.dist,
                        path: meta.path,
                        object: None,
                        disk: Some(len),
                        tick,
                        again: false,
                    },
                );
            }
        }
        cache.evict();
        Ok(cache)
    }

    /// New bounds (applied at once).
    pub fn set_bounds(&self, bounds: Bounds) {
        *self.bounds.lock().unwrap_or_else(|p| p.into_inner()) = bounds;
        self.evict();
    }

    /// The object under `key` if it is in memory (it becomes the most recent); `None`
    /// when it is not, or only on disk.
    pub fn get_memory(&self, key: &str) -> Option<Arc<Object>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        let slot = inner.slots.get_mut(key)?;
        let o = slot.object.clone()?;
        inner.order.remove(&slot.tick);
        inner.tick += 1;
        slot.tick = inner.tick;
        slot.again = true;
        inner.order.insert(slot.tick, key.to_string());
        Some(o)
    }

    /// The object under `key`, from memory or disk; it becomes the most recent.
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        let on_disk = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            let slot = inner.slots.get_mut(key)?;
            inner.order.remove(&slot.tick);
            inner.tick += 1;
            slot.tick = inner.tick;
            slot.again = true;
            inner.order.insert(slot.tick, key.to_string());
            if let Some(o) = &slot.object {
                return Some(o.clone());
            }
            slot.disk.is_some()
        };
        if !on_disk {
            return None;
        }
        let dir = self.dir.as_ref()?;
        let object = match read_object(&dir.join(file_name(key))) {
            Some(o) if o.meta.key == key => o,
            _ => {
                self.remove(key);
                return None;
            }
        };
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            if let Some(slot) = inner.slots.get_mut(key) {
                if slot.object.is_none() {
                    inner.memory += object.size();
                    slot.object = Some(object.clone());
                }
            }
        }
        self.evict();
        Some(object)
    }

    /// Keeps `object` under its key (replacing what was there), on disk first when the
    /// cache has a directory.
    pub fn put(&self, object: Arc<Object>) {
        let key = object.meta.key.clone();
        let disk = self.dir.as_ref().and_then(|dir| {
            let bytes = encode(&object);
            let path = dir.join(file_name(&key));
            let tmp = dir.join(format!("{}.tmp.{}", file_name(&key), rand::random::<u32>()));
            let ok = std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &path).is_ok();
            if !ok {
                let _ = std::fs::remove_file(&tmp);
            }
            ok.then_some(bytes.len() as u64)
        });
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            if let Some(old) = inner.slots.remove(&key) {
                inner.order.remove(&old.tick);
                inner.memory -= old.object.map(|o| o.size()).unwrap_or(0);
                inner.disk -= old.disk.unwrap_or(0);
            }
            inner.tick += 1;
            let tick = inner.tick;
            inner.order.insert(tick, key.clone());
            inner.memory += object.size();
            inner.disk += disk.unwrap_or(0);
            inner.slots.insert(
                key,
                Slot {
                    dist: object.meta.dist.clone(),
                    path: object.meta.path.clone(),
                    object: Some(object),
                    disk,
                    tick,
                    again: false,
                },
            );
        }
        self.evict();
    }

    /// Forgets `key`, in memory and on disk.
    pub fn remove(&self, key: &str) {
        let gone = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            let Some(old) = inner.slots.remove(key) else {
                return;
            };
            inner.order.remove(&old.tick);
            inner.memory -= old.object.map(|o| o.size()).unwrap_or(0);
            inner.disk -= old.disk.unwrap_or(0);
            old.disk.is_some()
        };
        if let (true, Some(dir)) = (gone, &self.dir) {
            let _ = std::fs::remove_file(dir.join(file_name(key)));
        }
    }

    /// Forgets every object of `dist` whose path one of `paths` covers (see
    /// [`crate::policy::invalidates`]); how many.
    pub fn invalidate(&self, dist: &str, paths: &[String]) -> usize {
        let keys: Vec<String> = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner
                .slots
                .iter()
                .filter(|(_, s)| {
                    s.dist == dist && paths.iter().any(|p| crate::policy::invalidates(p, &s.path))
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    /// Forgets every object of distributions not in `keep`.
    pub fn retain_dists(&self, keep: &[String]) {
        let keys: Vec<String> = {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner
                .slots
                .iter()
                .filter(|(_, s)| !keep.contains(&s.dist))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in &keys {
            self.remove(k);
        }
    }

    /// What it holds.
    pub fn usage(&self) -> Usage {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Usage {
            objects: inner.slots.len() as u64,
            memory_bytes: inner.memory,
            disk_bytes: inner.disk,
            evictions: self.evictions.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Brings memory and disk within their bounds: bodies leave memory (staying on disk),
    /// files leave disk (the object is gone), least recent first, each object asked for
    /// again since it came in getting one second chance.
    fn evict(&self) {
        let bounds = *self.bounds.lock().unwrap_or_else(|p| p.into_inner());
        let persistent = self.dir.is_some();
        let mut files = vec![];
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let inner = &mut *inner;
            // Whole objects go while the disk (without one, memory) is over its bound.
            let mut chances = inner.slots.len();
            loop {
                let over = if persistent {
                    inner.disk > bounds.disk
                } else {
                    inner.memory > bounds.memory
                };
                let Some((&tick, _)) = inner.order.iter().next().filter(|_| over) else {
                    break;
                };
                let key = inner.order.remove(&tick).unwrap_or_default();
                let Some(slot) = inner.slots.get_mut(&key) else {
                    continue;
                };
                if slot.again && chances > 0 {
                    chances -= 1;
                    slot.again = false;
                    inner.tick += 1;
                    slot.tick = inner.tick;
                    inner.order.insert(slot.tick, key);
                    continue;
                }
                let Some(slot) = inner.slots.remove(&key) else {
                    continue;
                };
                inner.memory -= slot.object.map(|o| o.size()).unwrap_or(0);
                inner.disk -= slot.disk.unwrap_or(0);
                if slot.disk.is_some() {
                    files.push(key);
                }
                self.evictions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // With a disk, bodies leave memory least recent first, and stay on disk.
            if persistent {
                for key in inner.order.values() {
                    if inner.memory <= bounds.memory {
                        break;
                    }
                    if let Some(o) = inner.slots.get_mut(key).and_then(|s| s.object.take()) {
                        inner.memory -= o.size();
                    }
                }
            }
        }
        if let Some(dir) = &self.dir {
            for k in files {
                let _ = std::fs::remove_file(dir.join(file_name(&k)));
            }
        }
    }
}

fn encode(o: &Object) -> Vec<u8> {
    let meta = serde_json::to_vec(&o.meta).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + meta.len() + o.body.len());
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&o.body);
    out
}

fn read_meta(path: &Path) -> Option<Meta> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 4];
    f.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return None;
    }
    let mut meta = vec![0u8; len];
    f.read_exact(&mut meta).ok()?;
    serde_json::from_slice(&meta).ok()
}

fn read_object(path: &Path) -> Option<Arc<Object>> {
    let bytes = std::fs::read(path).ok()?;
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let meta: Meta = serde_json::from_slice(bytes.get(4..4 + len)?).ok()?;
    let body = Bytes::copy_from_slice(&bytes[4 + len..]);
    Some(Object::new(meta, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: usize) -> Arc<Object> {
        Object::new(
            Meta {
                key: key.into(),
                dist: "d1".into(),
                path: format!("/{key}"),
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
                stored_ms: 1,
                fresh_for: 30,
                must_revalidate: false,
                stale_while_revalidate: 0,
                stale_if_error: 0,
            },
            Bytes::from(vec![b'x'; size]),
        )
    }

    #[test]
    fn objects_survive_a_restart_and_bounds_hold() {
        let d = tempfile::tempdir().unwrap();
        let bounds = Bounds {
            memory: 10_000,
            disk: 1_000_000,
        };
        let c = Cache::open(Some(d.path()), bounds).unwrap();
        for i in 0..20 {
            c.put(obj(&format!("k{i}"), 1000));
        }
        // Memory holds what fits; disk holds all.
        let u = c.usage();
        assert!(u.memory_bytes <= 10_000, "{u:?}");
        assert_eq!(u.objects, 20);
        assert_eq!(c.get("k0").unwrap().body.len(), 1000);
        drop(c);
        // Known again after a restart, bodies read back from disk.
        let c = Cache::open(Some(d.path()), bounds).unwrap();
        assert_eq!(c.usage().objects, 20);
        let o = c.get("k7").unwrap();
        assert_eq!(o.meta.path, "/k7");
        assert_eq!(o.body.len(), 1000);
        // A torn file is dropped, not served.
        std::fs::write(d.path().join(file_name("k3")), b"\x00\x00\x10\x00{").unwrap();
        std::fs::write(d.path().join("junk.tmp.1"), b"x").unwrap();
        let c = Cache::open(Some(d.path()), bounds).unwrap();
        assert_eq!(c.usage().objects, 19);
        assert!(c.get("k3").is_none());
        assert!(!d.path().join("junk.tmp.1").exists());
    }

    #[test]
    fn eviction_under_a_small_bound_keeps_the_hot_object() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(
            Some(d.path()),
            Bounds {
                memory: 4_000,
                disk: 20_000,
            },
        )
        .unwrap();
        c.put(obj("hot", 1000));
        for i in 0..200 {
            assert!(c.get("hot").is_some(), "hot evicted after {i} others");
            c.put(obj(&format!("once{i}"), 1000));
        }
        let u = c.usage();
        assert!(u.disk_bytes <= 20_000 && u.memory_bytes <= 4_000, "{u:?}");
        assert!(u.evictions >= 180, "{u:?}");
        assert!(c.get("once0").is_none());
        assert!(c.get("once199").is_some());
        // The files on disk are exactly the objects known.
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count() as u64,
            c.usage().objects
        );
    }

    #[test]
    fn invalidation_by_path_pattern_within_a_distribution() {
        let c = Cache::open(
            None,
            Bounds {
                memory: 1 << 20,
                disk: 0,
            },
        )
        .unwrap();
        for k in ["img-a", "img-b", "css"] {
            c.put(obj(k, 10));
        }
        let mut other = obj("img-c", 10);
        Arc::get_mut(&mut other).unwrap().meta.dist = "d2".into();
        c.put(other);
        assert_eq!(c.invalidate("d1", &["/img-*".into()]), 2);
        assert!(c.get("img-a").is_none());
        assert!(c.get("css").is_some());
        assert!(
            c.get("img-c").is_some(),
            "another distribution's object stays"
        );
        assert_eq!(c.invalidate("d1", &["/*".into()]), 1);
        c.retain_dists(&[]);
        assert_eq!(c.usage().objects, 0);
        assert_eq!(c.usage().memory_bytes, 0);
    }
}

//! The embedded time-series store.
//!
//! Samples land in a per-series in-memory *head* (Gorilla-compressed) and in a write-ahead
//! log (fsync'd once a second by the server, so a crash loses at most that second). Every
//! block period (2 h by default) the head is written as an immutable *block* file and the
//! log starts over. Blocks older than the raw retention are downsampled to 5-minute
//! aggregates (min, max, sum, count), those older than theirs to 1-hour aggregates, and the
//! oldest deleted — CloudWatch's scheme (raw 15 days, 5 minutes 63 days, 1 hour 455 days).

use crate::gorilla::Chunk;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// Disk I/O failed.
    #[error("metrics store: {0}")]
    Io(#[from] std::io::Error),
    /// A query was malformed.
    #[error("{0}")]
    Query(String),
}

/// Labels of a series, sorted.
pub type Labels = BTreeMap<String, String>;

/// How long each resolution is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Length of a block of raw data.
    pub block_ms: i64,
    /// Raw samples are kept this long.
    pub raw_ms: i64,
    /// 5-minute aggregates are kept this long.
    pub five_min_ms: i64,
    /// 1-hour aggregates are kept this long.
    pub hour_ms: i64,
}

const DAY: i64 = 86_400_000;

impl Retention {
    /// Parses `RAW,5M,1H` (like `15d,63d,455d`): how long each resolution is kept. Each
    /// must be at least the one before it, and raw data at least a block's length.
    pub fn parse(s: &str) -> Result<Retention, String> {
        let parts: Vec<&str> = s.split(',').collect();
        let [raw, five, hour] = parts.as_slice() else {
            return Err(format!(
                "\"{s}\" must be three durations, RAW,5M,1H, like 15d,63d,455d"
            ));
        };
        let (raw, five, hour) = (
            crate::parse_duration_ms(raw)?,
            crate::parse_duration_ms(five)?,
            crate::parse_duration_ms(hour)?,
        );
        let d = Retention::default();
        if raw < d.block_ms {
            return Err(format!(
                "raw data must be kept at least {} h (one block)",
                d.block_ms / 3_600_000
            ));
        }
        if five < raw || hour < five {
            return Err(format!(
                "\"{s}\": each resolution must be kept at least as long as the one before it"
            ));
        }
        Ok(Retention {
            raw_ms: raw,
            five_min_ms: five,
            hour_ms: hour,
            ..d
        })
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            block_ms: 2 * 3_600_000,
            raw_ms: 15 * DAY,
            five_min_ms: 63 * DAY,
            hour_ms: 455 * DAY,
        }
    }
}

/// The canonical key of a series: `name{a="1",b="2"}`.
pub fn series_key(name: &str, labels: &Labels) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{name}{{{}}}", l.join(","))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeriesDef {
    name: String,
    labels: Labels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Res {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "5m")]
    FiveMin,
    #[serde(rename = "1h")]
    Hour,
}

impl Res {
    fn bucket_ms(self) -> i64 {
        match self {
            Res::Raw => 0,
            Res::FiveMin => 300_000,
            Res::Hour => 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkRef {
    off: u64,
    len: u64,
    count: u32,
    /// The encoding (see [`crate::codec`]).
    #[serde(default)]
    enc: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlockSeries {
    name: String,
    labels: Labels,
    /// Raw: one chunk of values; aggregates: min, max, sum, count.
    chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlockMeta {
    start: i64,
    end: i64,
    res: Res,
    series: BTreeMap<String, BlockSeries>,
    /// The compressed frames of the data (empty in the first format: data stored raw).
    #[serde(skip)]
    frames: Vec<Frame>,
    #[serde(skip)]
    path: PathBuf,
    #[serde(skip)]
    data_off: u64,
}

/// A block's header as the second format stores it (compressed): the series in a list,
/// their keys derived from names and labels, and where each frame of chunks lies.
#[derive(Serialize, Deserialize)]
struct DiskMeta {
    start: i64,
    end: i64,
    res: Res,
    series: Vec<BlockSeries>,
    frames: Vec<Frame>,
}

/// Consecutive chunks compressed together. Chunk offsets count in the uncompressed data;
/// `raw_off..raw_off + raw_len` of it is `len` bytes at `off` of the file's data.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Frame {
    off: u64,
    len: u64,
    raw_off: u64,
    raw_len: u64,
}

/// The first format: a JSON header, chunks stored as encoded. Still read.
const MAGIC: &[u8; 8] = b"VTSDB01\n";
/// The second: a zstd-compressed header, chunks in zstd frames of about [`FRAME_BYTES`].
const MAGIC2: &[u8; 8] = b"VTSDB02\n";
/// Uncompressed bytes of chunks per frame: a query of one series decompresses one frame.
const FRAME_BYTES: usize = 64 * 1024;
/// zstd's level for blocks, written once and read many times.
const ZSTD_LEVEL: i32 = 9;

/// One aggregated point: min, max, sum and count of the samples in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Sum of samples.
    pub sum: f64,
    /// Number of samples.
    pub count: f64,
}

/// The statistic of a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// Mean.
    Avg,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// Sum.
    Sum,
    /// Number of samples.
    Count,
    /// A percentile (0-100), nearest rank over raw samples.
    P(f64),
}

impl Stat {
    /// Parses `avg`, `min`, `max`, `sum`, `count`, `p50`, `p90`, `p99`...
    pub fn parse(s: &str) -> Result<Stat, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "avg" | "average" => Stat::Avg,
            "min" | "minimum" => Stat::Min,
            "max" | "maximum" => Stat::Max,
            "sum" => Stat::Sum,
            "count" | "samplecount" => Stat::Count,
            p if p.starts_with('p') => Stat::P(
                p[1..]
                    .parse()
                    .ok()
                    .filter(|v: &f64| (0.0..=100.0).contains(v))
                    .ok_or_else(|| format!("\"{s}\" is not a percentile like p90"))?,
            ),
            _ => {
                return Err(format!(
                "unknown statistic \"{s}\": use avg, min, max, sum, count, or pNN (p50, p90, p99)"
            ))
            }
        })
    }
}

/// A label matcher of a selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// The label.
    pub label: String,
    /// Its value.
    pub value: String,
    /// `!=` instead of `=`.
    pub negate: bool,
}

/// A parsed selector: `name{label="v",other!="w"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The metric name.
    pub name: String,
    /// Label matchers.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses a selector.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        let (name, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.')
        {
            return Err(format!("invalid metric name in \"{s}\": use a name like host_cpu_usage_percent{{env=\"prod\"}}"));
        }
        let mut matchers = vec![];
        if let Some(rest) = rest {
            let body = rest
                .strip_suffix('}')
                .ok_or_else(|| format!("\"{s}\": missing closing }}"))?;
            let mut chars = body.chars().peekable();
            loop {
                while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    break;
                }
                let label: String = std::iter::from_fn(|| {
                    chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')
                })
                .collect();
                if label.is_empty() {
                    return Err(format!("\"{s}\": expected a label name"));
                }
                let negate = match (chars.next(), chars.peek()) {
                    (Some('='), _) => false,
                    (Some('!'), Some('=')) => {
                        chars.next();
                        true
                    }
                    _ => return Err(format!("\"{s}\": expected = or != after {label}")),
                };
                if chars.next() != Some('"') {
                    return Err(format!(
                        "\"{s}\": label values are quoted, like {label}=\"value\""
                    ));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => value.extend(chars.next()),
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(format!("\"{s}\": unterminated label value")),
                    }
                }
                matchers.push(Matcher {
                    label,
                    value,
                    negate,
                });
            }
        }
        Ok(Selector {
            name: name.to_string(),
            matchers,
        })
    }

    /// True if a series matches.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        name == self.name
            && self.matchers.iter().all(|m| {
                (labels.get(&m.label).map(String::as_str).unwrap_or("") == m.value) != m.negate
            })
    }
}

/// One series of a query result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesResult {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// `(period start in ms, value)`, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// What a query reads under the lock: matching series, their head samples, the blocks.
type QueryInputs = (
    Vec<(u32, SeriesDef)>,
    HashMap<u32, Vec<(i64, f64)>>,
    Vec<BlockMeta>,
);

struct Inner {
    ids: HashMap<String, u32>,
    defs: Vec<SeriesDef>,
    /// Series per metric name.
    families: HashMap<String, usize>,
    head: HashMap<u32, Chunk>,
    head_start: Option<i64>,
    last: HashMap<u32, (i64, f64)>,
    wal: BufWriter<File>,
    wal_known: HashSet<u32>,
    blocks: Vec<BlockMeta>,
    samples: u64,
}

/// The store.
pub struct Tsdb {
    dir: PathBuf,
    retention: Retention,
    inner: Mutex<Inner>,
    /// Samples refused because their series would pass a cap.
    dropped: std::sync::atomic::AtomicU64,
}

/// Series one metric name may have: a label fed by callers (a path, a name) cannot grow
/// the store without bound.
pub const MAX_SERIES_PER_METRIC: usize = 10_000;
/// Series the store holds in all.
pub const MAX_SERIES: usize = 200_000;

fn wal_path(dir: &Path) -> PathBuf {
    dir.join("wal")
}

impl Tsdb {
    /// Opens (or creates) the store in `dir`: loads block indexes and replays the log.
    pub fn open(dir: &Path, retention: Retention) -> Result<Tsdb, TsdbError> {
        std::fs::create_dir_all(dir.join("blocks"))?;
        let mut blocks = vec![];
        for e in std::fs::read_dir(dir.join("blocks"))? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) == Some("tmp") {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            match read_block_meta(&p) {
                Ok(m) => blocks.push(m),
                Err(err) => {
                    tracing::warn!(path = %p.display(), %err, "skipping an unreadable metrics block")
                }
            }
        }
        // A kill while downsampling leaves the finer block beside the coarser one made from
        // it (the same span). The coarser one is whole (renamed into place first), so the
        // finer one goes, as the maintenance would have removed it.
        let grain = |r: Res| match r {
            Res::Raw => 0u8,
            Res::FiveMin => 1,
            Res::Hour => 2,
        };
        let mut coarsest: HashMap<(i64, i64), u8> = HashMap::new();
        for b in &blocks {
            let g = coarsest.entry((b.start, b.end)).or_default();
            *g = (*g).max(grain(b.res));
        }
        blocks.retain(|b| {
            let keep = grain(b.res) >= coarsest[&(b.start, b.end)];
            if !keep {
                let _ = std::fs::remove_file(&b.path);
            }
            keep
        });
        blocks.sort_by_key(|b| b.start);
        let mut ids = HashMap::new();
        let mut defs: Vec<SeriesDef> = vec![];
        let mut head: HashMap<u32, Chunk> = HashMap::new();
        let mut last = HashMap::new();
        let mut head_start = None;
        // Replay the log; a torn last record (crash mid-write) ends the replay.
        let mut wal_ids: HashMap<u32, u32> = HashMap::new();
        if let Ok(mut f) = File::open(wal_path(dir)) {
            let mut buf = vec![];
            f.read_to_end(&mut buf)?;
            let mut i = 0;
            while i < buf.len() {
                match buf[i] {
                    b'S' if i + 7 <= buf.len() => {
                        let wid =
                            u32::from_le_bytes(buf[i + 1..i + 5].try_into().unwrap_or_default());
                        let len =
                            u16::from_le_bytes(buf[i + 5..i + 7].try_into().unwrap_or_default())
                                as usize;
                        let Some(raw) = buf.get(i + 7..i + 7 + len) else {
                            break;
                        };
                        let Ok(def) = serde_json::from_slice::<SeriesDef>(raw) else {
                            break;
                        };
                        let key = series_key(&def.name, &def.labels);
                        let id = *ids.entry(key).or_insert_with(|| {
                            defs.push(def);
                            (defs.len() - 1) as u32
                        });
                        wal_ids.insert(wid, id);
                        i += 7 + len;
                    }
                    b'P' if i + 21 <= buf.len() => {
                        let wid =
                            u32::from_le_bytes(buf[i + 1..i + 5].try_into().unwrap_or_default());
                        let ts =
                            i64::from_le_bytes(buf[i + 5..i + 13].try_into().unwrap_or_default());
                        let v =
                            f64::from_le_bytes(buf[i + 13..i + 21].try_into().unwrap_or_default());
                        if let Some(id) = wal_ids.get(&wid) {
                            if head.entry(*id).or_default().push(ts, v) {
                                last.insert(*id, (ts, v));
                            }
                        }
                        i += 21;
                    }
                    _ => break,
                }
            }
        }
        // A kill after a block was renamed into place and before the log was cut leaves
        // the block's samples in the log too: what a block holds is not replayed again.
        for (id, chunk) in head.iter_mut() {
            let samples = Chunk::decode(chunk.bytes(), chunk.len());
            let (Some(first), Some(end)) = (samples.first(), samples.last()) else {
                continue;
            };
            let def = &defs[*id as usize];
            let key = series_key(&def.name, &def.labels);
            let mut held = HashSet::new();
            for b in blocks
                .iter()
                .filter(|b| b.res == Res::Raw && b.end >= first.0 && b.start <= end.0)
            {
                // A damaged block is the queries' error, not a reason not to open.
                for c in b
                    .series
                    .get(&key)
                    .map(|s| &s.chunks[..])
                    .unwrap_or_default()
                {
                    if let Ok(held_here) = read_chunk(b, c) {
                        held.extend(held_here.into_iter().map(|(t, _)| t));
                    }
                }
            }
            let kept: Vec<(i64, f64)> = samples
                .into_iter()
                .filter(|(t, _)| !held.contains(t))
                .collect();
            if let Some(&(t, _)) = kept.first() {
                head_start = Some(head_start.map_or(t, |s: i64| s.min(t)));
            }
            if !held.is_empty() {
                let mut fresh = Chunk::new();
                for (t, v) in kept {
                    fresh.push(t, v);
                }
                *chunk = fresh;
            }
        }
        head.retain(|_, c| !c.is_empty());
        // Start a fresh log holding what was replayed.
        let tmp = dir.join("wal.tmp");
        let mut w = BufWriter::new(File::create(&tmp)?);
        let mut wal_known = HashSet::new();
        for (id, chunk) in &head {
            write_series_def(&mut w, *id, &defs[*id as usize])?;
            wal_known.insert(*id);
            for (ts, v) in Chunk::decode(chunk.bytes(), chunk.len()) {
                write_point(&mut w, *id, ts, v)?;
            }
        }
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, wal_path(dir))?;
        let wal = BufWriter::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(wal_path(dir))?,
        );
        for b in &blocks {
            for (key, s) in &b.series {
                if !ids.contains_key(key) {
                    defs.push(SeriesDef {
                        name: s.name.clone(),
                        labels: s.labels.clone(),
                    });
                    ids.insert(key.clone(), (defs.len() - 1) as u32);
                }
            }
        }
        let samples = head.values().map(|c| c.len() as u64).sum();
        let mut families: HashMap<String, usize> = HashMap::new();
        for d in &defs {
            *families.entry(d.name.clone()).or_default() += 1;
        }
        Ok(Tsdb {
            dir: dir.to_path_buf(),
            retention,
            dropped: std::sync::atomic::AtomicU64::new(0),
            inner: Mutex::new(Inner {
                ids,
                defs,
                families,
                head,
                head_start,
                last,
                wal,
                wal_known,
                blocks,
                samples,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a sample. Samples older than the series' last one are dropped.
    pub fn append(&self, name: &str, labels: &Labels, ts: i64, v: f64) -> Result<(), TsdbError> {
        let key = series_key(name, labels);
        let mut g = self.lock();
        let inner = &mut *g;
        let id = match inner.ids.get(&key) {
            Some(id) => *id,
            None => {
                let family = inner.families.get(name).copied().unwrap_or(0);
                if family >= MAX_SERIES_PER_METRIC || inner.defs.len() >= MAX_SERIES {
                    self.dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                *inner.families.entry(name.to_string()).or_default() += 1;
                inner.defs.push(SeriesDef {
                    name: name.to_string(),
                    labels: labels.clone(),
                });
                let id = (inner.defs.len() - 1) as u32;
                inner.ids.insert(key, id);
                id
            }
        };
        if !inner.head.entry(id).or_default().push(ts, v) {
            return Ok(());
        }
        if inner.wal_known.insert(id) {
            write_series_def(&mut inner.wal, id, &inner.defs[id as usize])?;
        }
        write_point(&mut inner.wal, id, ts, v)?;
        inner.last.insert(id, (ts, v));
        inner.head_start = Some(inner.head_start.map_or(ts, |s| s.min(ts)));
        inner.samples += 1;
        Ok(())
    }

    /// Samples refused so far because a new series would pass [`MAX_SERIES_PER_METRIC`]
    /// or [`MAX_SERIES`].
    pub fn dropped_samples(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), TsdbError> {
        let mut g = self.lock();
        g.wal.flush()?;
        g.wal.get_ref().sync_data()?;
        Ok(())
    }

    /// Writes the head as a block and starts a new log.
    pub fn flush_head(&self) -> Result<(), TsdbError> {
        let mut g = self.lock();
        let inner = &mut *g;
        if inner.head.values().all(Chunk::is_empty) {
            return Ok(());
        }
        let mut series = BTreeMap::new();
        let mut data: Vec<u8> = vec![];
        let (mut start, mut end) = (i64::MAX, i64::MIN);
        for (id, chunk) in &inner.head {
            if chunk.is_empty() {
                continue;
            }
            let samples = Chunk::decode(chunk.bytes(), chunk.len());
            start = start.min(samples[0].0);
            end = end.max(samples[samples.len() - 1].0);
            let def = &inner.defs[*id as usize];
            let off = data.len() as u64;
            let (enc, bytes) = crate::codec::encode(&samples);
            data.extend_from_slice(&bytes);
            series.insert(
                series_key(&def.name, &def.labels),
                BlockSeries {
                    name: def.name.clone(),
                    labels: def.labels.clone(),
                    chunks: vec![ChunkRef {
                        off,
                        len: bytes.len() as u64,
                        count: chunk.len(),
                        enc,
                    }],
                },
            );
        }
        let meta = BlockMeta {
            start,
            end,
            res: Res::Raw,
            series,
            frames: vec![],
            path: PathBuf::new(),
            data_off: 0,
        };
        let meta = write_block(&self.dir, meta, &data)?;
        inner.blocks.push(meta);
        inner.blocks.sort_by_key(|b| b.start);
        inner.head.clear();
        inner.head_start = None;
        inner.wal_known.clear();
        let f = File::create(wal_path(&self.dir))?;
        f.sync_all()?;
        // What the old writer still buffers is in the block now: dropped, not flushed into
        // the new log (the same file, appended to), where a restart would count it again.
        let old = std::mem::replace(&mut inner.wal, BufWriter::new(f));
        drop(old.into_parts());
        Ok(())
    }

    /// Flushes the head when its block period is over; downsamples and expires blocks by
    /// the retention, as of `now_ms`.
    pub fn maintain(&self, now_ms: i64) -> Result<(), TsdbError> {
        let due = self
            .lock()
            .head_start
            .is_some_and(|s| now_ms - s >= self.retention.block_ms);
        if due {
            self.flush_head()?;
        }
        let r = self.retention;
        let blocks: Vec<BlockMeta> = self.lock().blocks.clone();
        for b in blocks {
            let (limit, next) = match b.res {
                Res::Raw => (r.raw_ms, Some(Res::FiveMin)),
                Res::FiveMin => (r.five_min_ms, Some(Res::Hour)),
                Res::Hour => (r.hour_ms, None),
            };
            if b.end >= now_ms - limit {
                continue;
            }
            let replacement = match next {
                Some(res) if b.end >= now_ms - r.hour_ms => Some(downsample(&b, res)?),
                _ => None,
            };
            let mut g = self.lock();
            if let Some(data) = replacement {
                let meta = write_block(&self.dir, data.0, &data.1)?;
                g.blocks.push(meta);
            }
            let _ = std::fs::remove_file(&b.path);
            g.blocks.retain(|x| x.path != b.path);
            g.blocks.sort_by_key(|b| b.start);
        }
        Ok(())
    }

    /// Every series whose labels match `env` (all if `None`): name and labels.
    pub fn list(&self, env: Option<&str>) -> Vec<(String, Labels)> {
        let g = self.lock();
        let mut out: Vec<(String, Labels)> = g
            .defs
            .iter()
            .filter(|d| env.is_none_or(|e| d.labels.get("env").map(String::as_str) == Some(e)))
            .map(|d| (d.name.clone(), d.labels.clone()))
            .collect();
        out.sort_by_key(|a| series_key(&a.0, &a.1));
        out
    }

    /// The latest sample of every series (for Prometheus exposition).
    pub fn latest(&self) -> Vec<(String, Labels, i64, f64)> {
        let g = self.lock();
        let mut out: Vec<_> = g
            .last
            .iter()
            .map(|(id, (ts, v))| {
                let d = &g.defs[*id as usize];
                (d.name.clone(), d.labels.clone(), *ts, *v)
            })
            .collect();
        out.sort_by_key(|a| series_key(&a.0, &a.1));
        out
    }

    /// Number of samples appended since the store opened (including replayed ones).
    pub fn samples(&self) -> u64 {
        self.lock().samples
    }

    /// Bytes on disk (blocks and log).
    pub fn disk_bytes(&self) -> u64 {
        fn size(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| {
                            if e.path().is_dir() {
                                size(&e.path())
                            } else {
                                e.metadata().map(|m| m.len()).unwrap_or(0)
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        size(&self.dir)
    }

    /// Queries series matching `sel` between `from` and `to` (ms): one value per `period`
    /// of the statistic. Percentiles over downsampled data use the bucket means.
    pub fn query(
        &self,
        sel: &Selector,
        from: i64,
        to: i64,
        period_ms: i64,
        stat: Stat,
    ) -> Result<Vec<SeriesResult>, TsdbError> {
        if period_ms <= 0 {
            return Err(TsdbError::Query("the period must be positive".into()));
        }
        let (matching, head, blocks): QueryInputs = {
            let g = self.lock();
            let matching: Vec<(u32, SeriesDef)> = g
                .defs
                .iter()
                .enumerate()
                .filter(|(_, d)| sel.matches(&d.name, &d.labels))
                .map(|(i, d)| (i as u32, d.clone()))
                .collect();
            let head = matching
                .iter()
                .filter_map(|(id, _)| {
                    g.head
                        .get(id)
                        .map(|c| (*id, Chunk::decode(c.bytes(), c.len())))
                })
                .collect();
            let blocks = g
                .blocks
                .iter()
                .filter(|b| b.end >= from && b.start <= to)
                .cloned()
                .collect();
            (matching, head, blocks)
        };
        let mut out = vec![];
        for (id, def) in matching {
            let key = series_key(&def.name, &def.labels);
            let mut raw: Vec<(i64, f64)> = vec![];
            let mut aggs: Vec<(i64, Agg)> = vec![];
            for b in &blocks {
                let Some(s) = b.series.get(&key) else {
                    continue;
                };
                match b.res {
                    Res::Raw => raw.extend(
                        read_chunk(b, &s.chunks[0])?
                            .into_iter()
                            .filter(|(t, _)| *t >= from && *t <= to),
                    ),
                    _ => {
                        let parts: Vec<Vec<(i64, f64)>> = s
                            .chunks
                            .iter()
                            .map(|c| read_chunk(b, c))
                            .collect::<Result<_, _>>()?;
                        for (i, (t, min)) in parts[0].iter().enumerate() {
                            if *t >= from && *t <= to {
                                aggs.push((
                                    *t,
                                    Agg {
                                        min: *min,
                                        max: parts[1][i].1,
                                        sum: parts[2][i].1,
                                        count: parts[3][i].1,
                                    },
                                ));
                            }
                        }
                    }
                }
            }
            if let Some(h) = head.get(&id) {
                raw.extend(h.iter().filter(|(t, _)| *t >= from && *t <= to));
            }
            let mut buckets: BTreeMap<i64, (Vec<f64>, Vec<Agg>)> = BTreeMap::new();
            for (t, v) in raw {
                buckets
                    .entry(from + (t - from) / period_ms * period_ms)
                    .or_default()
                    .0
                    .push(v);
            }
            for (t, a) in aggs {
                buckets
                    .entry(from + (t - from) / period_ms * period_ms)
                    .or_default()
                    .1
                    .push(a);
            }
            let points: Vec<(i64, f64)> = buckets
                .into_iter()
                .filter_map(|(t, (vals, aggs))| statistic(stat, vals, &aggs).map(|v| (t, v)))
                .collect();
            out.push(SeriesResult {
                name: def.name,
                labels: def.labels,
                points,
            });
        }
        Ok(out)
    }
}

/// The statistic of a bucket's raw values and aggregates; `None` when it is empty.
pub fn statistic(stat: Stat, mut vals: Vec<f64>, aggs: &[Agg]) -> Option<f64> {
    let count = vals.len() as f64 + aggs.iter().map(|a| a.count).sum::<f64>();
    if count == 0.0 {
        return None;
    }
    let sum = vals.iter().sum::<f64>() + aggs.iter().map(|a| a.sum).sum::<f64>();
    Some(match stat {
        Stat::Sum => sum,
        Stat::Count => count,
        Stat::Avg => sum / count,
        Stat::Min => vals
            .iter()
            .copied()
            .chain(aggs.iter().map(|a| a.min))
            .fold(f64::INFINITY, f64::min),
        Stat::Max => vals
            .iter()
            .copied()
            .chain(aggs.iter().map(|a| a.max))
            .fold(f64::NEG_INFINITY, f64::max),
        Stat::P(p) => {
            vals.extend(aggs.iter().map(|a| a.sum / a.count.max(1.0)));
            vals.sort_by(|a, b| a.total_cmp(b));
            let rank = ((p / 100.0) * vals.len() as f64).ceil().max(1.0) as usize;
            vals[rank.min(vals.len()) - 1]
        }
    })
}

fn write_series_def(w: &mut impl Write, id: u32, def: &SeriesDef) -> std::io::Result<()> {
    let raw = serde_json::to_vec(def).unwrap_or_default();
    w.write_all(b"S")?;
    w.write_all(&id.to_le_bytes())?;
    w.write_all(&(raw.len() as u16).to_le_bytes())?;
    w.write_all(&raw)
}

fn write_point(w: &mut impl Write, id: u32, ts: i64, v: f64) -> std::io::Result<()> {
    let mut rec = [0u8; 21];
    rec[0] = b'P';
    rec[1..5].copy_from_slice(&id.to_le_bytes());
    rec[5..13].copy_from_slice(&ts.to_le_bytes());
    rec[13..21].copy_from_slice(&v.to_le_bytes());
    w.write_all(&rec)
}

/// Writes a block (second format): chunks cut into frames at chunk boundaries, each
/// compressed; the header compressed too. Atomic: a temporary file renamed into place.
fn write_block(dir: &Path, mut meta: BlockMeta, data: &[u8]) -> Result<BlockMeta, TsdbError> {
    let res = match meta.res {
        Res::Raw => "raw",
        Res::FiveMin => "5m",
        Res::Hour => "1h",
    };
    let path = dir
        .join("blocks")
        .join(format!("{}-{}-{res}.blk", meta.start, meta.end));
    let tmp = path.with_extension("tmp");
    // Chunk boundaries in data order; frames end only on one.
    let mut ends: Vec<u64> = meta
        .series
        .values()
        .flat_map(|s| s.chunks.iter().map(|c| c.off + c.len))
        .collect();
    ends.sort_unstable();
    ends.dedup();
    // Each frame carries a checksum: a damaged frame is an error, never wrong values.
    let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    zstd.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    let (mut frames, mut body) = (vec![], vec![]);
    let mut raw_off = 0u64;
    for end in ends {
        let last = end == data.len() as u64;
        if end - raw_off < FRAME_BYTES as u64 && !last {
            continue;
        }
        let raw = &data[raw_off as usize..end as usize];
        let z = zstd.compress(raw)?;
        frames.push(Frame {
            off: body.len() as u64,
            len: z.len() as u64,
            raw_off,
            raw_len: raw.len() as u64,
        });
        body.extend_from_slice(&z);
        raw_off = end;
    }
    let disk = DiskMeta {
        start: meta.start,
        end: meta.end,
        res: meta.res,
        series: meta.series.values().cloned().collect(),
        frames,
    };
    let header = zstd.compress(&serde_json::to_vec(&disk).unwrap_or_default())?;
    let mut f = BufWriter::new(File::create(&tmp)?);
    f.write_all(MAGIC2)?;
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(&header)?;
    f.write_all(&body)?;
    f.flush()?;
    f.get_ref().sync_all()?;
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = File::open(dir.join("blocks")) {
        let _ = d.sync_all();
    }
    meta.data_off = 16 + header.len() as u64;
    meta.path = path;
    meta.frames = disk.frames;
    Ok(meta)
}

/// The most a block's header, or a frame, may take uncompressed (a store at its series
/// cap takes a few tens of MiB).
const MAX_HEADER_BYTES: usize = 1 << 30;

fn read_block_meta(p: &Path) -> Result<BlockMeta, TsdbError> {
    let mut f = File::open(p)?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head)?;
    let v2 = &head[..8] == MAGIC2;
    if &head[..8] != MAGIC && !v2 {
        return Err(TsdbError::Query("not a metrics block".into()));
    }
    let len = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    if len > f.metadata()?.len() {
        return Err(TsdbError::Query("a truncated metrics block".into()));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    let bad = |e: &dyn std::fmt::Display| TsdbError::Query(format!("a damaged metrics block: {e}"));
    let mut meta: BlockMeta = if v2 {
        // Room for what the frame says it holds (not the cap: every block opened at start
        // would reserve it).
        let size = zstd::zstd_safe::get_frame_content_size(&buf)
            .ok()
            .flatten()
            .filter(|n| *n <= MAX_HEADER_BYTES as u64)
            .ok_or_else(|| bad(&"its header's size is unknown or too large"))?;
        let raw = zstd::bulk::decompress(&buf, size as usize).map_err(|e| bad(&e))?;
        let d: DiskMeta = serde_json::from_slice(&raw).map_err(|e| bad(&e))?;
        BlockMeta {
            start: d.start,
            end: d.end,
            res: d.res,
            series: d
                .series
                .into_iter()
                .map(|s| (series_key(&s.name, &s.labels), s))
                .collect(),
            frames: d.frames,
            path: PathBuf::new(),
            data_off: 0,
        }
    } else {
        serde_json::from_slice(&buf).map_err(|e| bad(&e))?
    };
    meta.path = p.to_path_buf();
    meta.data_off = 16 + len;
    Ok(meta)
}

fn read_chunk(b: &BlockMeta, c: &ChunkRef) -> Result<Vec<(i64, f64)>, TsdbError> {
    let mut f = File::open(&b.path)?;
    if b.frames.is_empty() {
        f.seek(SeekFrom::Start(b.data_off + c.off))?;
        let mut buf = vec![0u8; c.len as usize];
        f.read_exact(&mut buf)?;
        return Ok(crate::codec::decode(c.enc, &buf, c.count));
    }
    if c.len == 0 {
        return Ok(crate::codec::decode(c.enc, &[], c.count));
    }
    let damaged = || TsdbError::Query("a damaged metrics block".into());
    let i = b
        .frames
        .partition_point(|fr| fr.raw_off + fr.raw_len <= c.off);
    let fr = b.frames.get(i).ok_or_else(damaged)?;
    let (from, to) = (c.off - fr.raw_off, c.off - fr.raw_off + c.len);
    if c.off < fr.raw_off
        || to > fr.raw_len
        || fr.len > f.metadata()?.len()
        || fr.raw_len > MAX_HEADER_BYTES as u64
    {
        return Err(damaged());
    }
    f.seek(SeekFrom::Start(b.data_off + fr.off))?;
    let mut z = vec![0u8; fr.len as usize];
    f.read_exact(&mut z)?;
    let raw = zstd::bulk::decompress(&z, fr.raw_len as usize).map_err(|_| damaged())?;
    let chunk = raw.get(from as usize..to as usize).ok_or_else(damaged)?;
    Ok(crate::codec::decode(c.enc, chunk, c.count))
}

/// Aggregates a block into buckets of `res`.
fn downsample(b: &BlockMeta, res: Res) -> Result<(BlockMeta, Vec<u8>), TsdbError> {
    let step = res.bucket_ms();
    let mut data = vec![];
    let mut series = BTreeMap::new();
    for (key, s) in &b.series {
        let mut buckets: BTreeMap<i64, Agg> = BTreeMap::new();
        let mut add = |t: i64, a: Agg| {
            let e = buckets.entry(t.div_euclid(step) * step).or_insert(Agg {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                sum: 0.0,
                count: 0.0,
            });
            e.min = e.min.min(a.min);
            e.max = e.max.max(a.max);
            e.sum += a.sum;
            e.count += a.count;
        };
        if b.res == Res::Raw {
            for (t, v) in read_chunk(b, &s.chunks[0])? {
                add(
                    t,
                    Agg {
                        min: v,
                        max: v,
                        sum: v,
                        count: 1.0,
                    },
                );
            }
        } else {
            let parts: Vec<Vec<(i64, f64)>> = s
                .chunks
                .iter()
                .map(|c| read_chunk(b, c))
                .collect::<Result<_, _>>()?;
            for (i, (t, min)) in parts[0].iter().enumerate() {
                add(
                    *t,
                    Agg {
                        min: *min,
                        max: parts[1][i].1,
                        sum: parts[2][i].1,
                        count: parts[3][i].1,
                    },
                );
            }
        }
        let mut chunks = vec![];
        for pick in [
            |a: &Agg| a.min,
            |a: &Agg| a.max,
            |a: &Agg| a.sum,
            |a: &Agg| a.count,
        ] {
            let samples: Vec<(i64, f64)> = buckets.iter().map(|(t, a)| (*t, pick(a))).collect();
            let (enc, bytes) = crate::codec::encode(&samples);
            chunks.push(ChunkRef {
                off: data.len() as u64,
                len: bytes.len() as u64,
                count: samples.len() as u32,
                enc,
            });
            data.extend_from_slice(&bytes);
        }
        series.insert(
            key.clone(),
            BlockSeries {
                name: s.name.clone(),
                labels: s.labels.clone(),
                chunks,
            },
        );
    }
    Ok((
        BlockMeta {
            start: b.start,
            end: b.end,
            res,
            series,
            frames: vec![],
            path: PathBuf::new(),
            data_off: 0,
        },
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Issue "Trust what exists", item 13: series named after callers' input grew the
    /// store without bound. A metric name has at most MAX_SERIES_PER_METRIC series; what
    /// would pass it is counted, not stored, and other metrics are unaffected.
    #[test]
    fn series_are_capped_per_metric_and_drops_counted() {
        let d = tempfile::tempdir().unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        for i in 0..MAX_SERIES_PER_METRIC + 5 {
            db.append("flood", &labels(&[("path", &i.to_string())]), 10_000, 1.0)
                .unwrap();
        }
        assert_eq!(db.dropped_samples(), 5);
        db.append("other", &labels(&[("a", "b")]), 10_000, 1.0)
            .unwrap();
        assert_eq!(db.dropped_samples(), 5);
        // An existing series keeps taking samples.
        db.append("flood", &labels(&[("path", "0")]), 20_000, 2.0)
            .unwrap();
        assert_eq!(db.dropped_samples(), 5);
        drop(db);
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        db.append("flood", &labels(&[("path", "new")]), 30_000, 1.0)
            .unwrap();
        assert_eq!(db.dropped_samples(), 1, "the cap holds across a restart");
    }

    #[test]
    fn every_statistic_over_head_and_blocks_and_restart() {
        let d = tempfile::tempdir().unwrap();
        let l = labels(&[("env", "prod"), ("group", "web")]);
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        for i in 0..60 {
            db.append("cpu", &l, i * 10_000, i as f64).unwrap();
        }
        db.append("cpu", &labels(&[("env", "stage")]), 0, 99.0)
            .unwrap();
        let sel = Selector::parse("cpu{env=\"prod\"}").unwrap();
        let q = |db: &Tsdb, stat| db.query(&sel, 0, 600_000, 300_000, stat).unwrap();
        let check = |db: &Tsdb| {
            assert_eq!(q(db, Stat::Avg)[0].points, vec![(0, 14.5), (300_000, 44.5)]);
            assert_eq!(q(db, Stat::Min)[0].points, vec![(0, 0.0), (300_000, 30.0)]);
            assert_eq!(q(db, Stat::Max)[0].points, vec![(0, 29.0), (300_000, 59.0)]);
            assert_eq!(
                q(db, Stat::Sum)[0].points,
                vec![(0, 435.0), (300_000, 1335.0)]
            );
            assert_eq!(
                q(db, Stat::Count)[0].points,
                vec![(0, 30.0), (300_000, 30.0)]
            );
            assert_eq!(
                q(db, Stat::P(50.0))[0].points,
                vec![(0, 14.0), (300_000, 44.0)]
            );
            assert_eq!(
                q(db, Stat::P(90.0))[0].points,
                vec![(0, 26.0), (300_000, 56.0)]
            );
            assert_eq!(
                q(db, Stat::P(99.0))[0].points,
                vec![(0, 29.0), (300_000, 59.0)]
            );
            assert_eq!(q(db, Stat::Avg).len(), 1, "the stage series does not match");
        };
        check(&db);
        db.sync().unwrap();
        drop(db);
        // Restart: replayed from the log.
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        check(&db);
        // Half in a block, half in the head.
        db.flush_head().unwrap();
        check(&db);
        drop(db);
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        check(&db);
        assert_eq!(db.list(Some("prod")).len(), 1);
        assert_eq!(db.list(None).len(), 2);
    }

    #[test]
    fn downsampling_and_retention_follow_the_clock() {
        let d = tempfile::tempdir().unwrap();
        let r = Retention {
            block_ms: 3_600_000,
            raw_ms: DAY,
            five_min_ms: 2 * DAY,
            hour_ms: 3 * DAY,
        };
        let db = Tsdb::open(d.path(), r).unwrap();
        let l = labels(&[("env", "e")]);
        for i in 0..360 {
            db.append("m", &l, i * 10_000, (i % 30) as f64).unwrap();
        }
        db.flush_head().unwrap();
        let sel = Selector::parse("m").unwrap();
        let before = db.query(&sel, 0, 3_600_000, 3_600_000, Stat::Avg).unwrap()[0]
            .points
            .clone();
        // After a day: 5-minute aggregates, same averages, min and max.
        db.maintain(DAY + 4_000_000).unwrap();
        let files: Vec<String> = std::fs::read_dir(d.path().join("blocks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(files.iter().all(|f| f.ends_with("-5m.blk")), "{files:?}");
        assert_eq!(
            db.query(&sel, 0, 3_600_000, 3_600_000, Stat::Avg).unwrap()[0].points,
            before
        );
        assert_eq!(
            db.query(&sel, 0, 3_600_000, 3_600_000, Stat::Max).unwrap()[0].points,
            vec![(0, 29.0)]
        );
        assert_eq!(
            db.query(&sel, 0, 3_600_000, 3_600_000, Stat::Count)
                .unwrap()[0]
                .points,
            vec![(0, 360.0)]
        );
        // After two days: hourly.
        db.maintain(2 * DAY + 4_000_000).unwrap();
        let files: Vec<String> = std::fs::read_dir(d.path().join("blocks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(files.iter().all(|f| f.ends_with("-1h.blk")), "{files:?}");
        assert_eq!(
            db.query(&sel, 0, 3_600_000, 3_600_000, Stat::Avg).unwrap()[0].points,
            before
        );
        // After three days: gone.
        db.maintain(3 * DAY + 4_000_000).unwrap();
        assert!(
            db.query(&sel, 0, 3_600_000, 3_600_000, Stat::Avg).unwrap()[0]
                .points
                .is_empty()
        );
        assert_eq!(
            std::fs::read_dir(d.path().join("blocks")).unwrap().count(),
            0
        );
    }

    /// A kill while a block is downsampled, after the coarser block is written and before
    /// the finer one is removed: its samples count once after a restart. (Samples appended
    /// since the last sync are in the block, and never again in the log.)
    #[test]
    fn a_crash_in_the_middle_of_downsampling_counts_no_sample_twice() {
        let d = tempfile::tempdir().unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        let l = labels(&[("s", "a")]);
        for i in 0..100 {
            db.append("m", &l, i * 1000, 1.0).unwrap();
        }
        db.flush_head().unwrap();
        let raw = db.lock().blocks[0].clone();
        let (meta, data) = downsample(&raw, Res::FiveMin).unwrap();
        write_block(d.path(), meta, &data).unwrap();
        drop(db);
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        let sel = Selector::parse("m").unwrap();
        let r = db
            .query(&sel, 0, 1_000_000, 1_000_000, Stat::Count)
            .unwrap();
        assert_eq!(r[0].points, vec![(0, 100.0)]);
        assert!(!raw.path.exists(), "the finer block stays");
    }

    /// A kill after a block is renamed into place and before the log is cut leaves the
    /// block's samples in the log as well: they are not counted twice after a restart.
    #[test]
    fn a_crash_between_a_block_and_the_cut_of_its_log_counts_no_sample_twice() {
        let d = tempfile::tempdir().unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        let (a, b) = (labels(&[("s", "a")]), labels(&[("s", "b")]));
        for i in 0..100 {
            db.append("m", &a, i * 1000, 1.0).unwrap();
            // A series behind the other: its later samples fall inside the block's span.
            if i < 50 {
                db.append("m", &b, i * 1000, 2.0).unwrap();
            }
        }
        db.sync().unwrap();
        let log = std::fs::read(wal_path(d.path())).unwrap();
        db.flush_head().unwrap();
        drop(db);
        // As if killed after the block was renamed into place and before the log was cut.
        std::fs::write(wal_path(d.path()), &log).unwrap();
        let counts = |db: &Tsdb| -> Vec<f64> {
            let sel = Selector::parse("m").unwrap();
            let mut r = db
                .query(&sel, 0, 1_000_000, 1_000_000, Stat::Count)
                .unwrap();
            r.sort_by(|x, y| x.labels.cmp(&y.labels));
            r.iter().map(|s| s.points[0].1).collect()
        };
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        assert_eq!(counts(&db), vec![100.0, 50.0]);
        // Samples after the restart count once, through the next block and restart too,
        // including the lagging series' samples inside the first block's span.
        for i in 50..60 {
            db.append("m", &b, i * 1000, 2.0).unwrap();
        }
        db.append("m", &a, 100_000, 1.0).unwrap();
        assert_eq!(counts(&db), vec![101.0, 60.0]);
        db.sync().unwrap();
        drop(db);
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        assert_eq!(counts(&db), vec![101.0, 60.0]);
        db.flush_head().unwrap();
        drop(db);
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        assert_eq!(counts(&db), vec![101.0, 60.0]);
    }

    /// Blocks are written compressed, in frames of chunks: a series is read back exactly,
    /// whichever frame holds it; blocks of the first format (uncompressed) still read; a
    /// damaged frame is an error for the queries that need it, never a panic.
    #[test]
    fn blocks_compress_in_frames_and_the_first_format_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        let value = |s: i64, i: i64| ((s * 7919 + i * 104_729) % 100_003) as f64 / 7.0;
        for s in 0..200 {
            let l = labels(&[("series", &s.to_string())]);
            for i in 0..720 {
                db.append("noisy", &l, i * 10_000, value(s, i)).unwrap();
            }
        }
        db.flush_head().unwrap();
        let path = std::fs::read_dir(d.path().join("blocks"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let meta = read_block_meta(&path).unwrap();
        assert!(meta.frames.len() > 2, "{} frames", meta.frames.len());
        let raw: u64 = meta.frames.iter().map(|f| f.raw_len).sum();
        let stored = std::fs::metadata(&path).unwrap().len();
        assert!(stored < raw, "{stored} bytes stored for {raw} encoded");
        let check = |db: &Tsdb| {
            for s in [0, 77, 199] {
                let sel = Selector::parse(&format!("noisy{{series=\"{s}\"}}")).unwrap();
                let got = db.query(&sel, 0, 7_200_000, 10_000, Stat::Avg).unwrap();
                let want: Vec<(i64, f64)> = (0..720).map(|i| (i * 10_000, value(s, i))).collect();
                assert_eq!(got[0].points, want, "series {s}");
            }
        };
        check(&db);
        drop(db);
        check(&Tsdb::open(d.path(), Retention::default()).unwrap());

        // A block of the first format: a JSON header and the chunks as encoded.
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(old.path().join("blocks")).unwrap();
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 10_000, i as f64)).collect();
        let (enc, data) = crate::codec::encode(&samples);
        let l = labels(&[("env", "e")]);
        let mut meta = BlockMeta {
            start: 0,
            end: 990_000,
            res: Res::Raw,
            series: BTreeMap::new(),
            frames: vec![],
            path: PathBuf::new(),
            data_off: 0,
        };
        meta.series.insert(
            series_key("m", &l),
            BlockSeries {
                name: "m".into(),
                labels: l,
                chunks: vec![ChunkRef {
                    off: 0,
                    len: data.len() as u64,
                    count: 100,
                    enc,
                }],
            },
        );
        let header = serde_json::to_vec(&meta).unwrap();
        let mut file = MAGIC.to_vec();
        file.extend((header.len() as u64).to_le_bytes());
        file.extend(header);
        file.extend(data);
        std::fs::write(old.path().join("blocks/0-990000-raw.blk"), file).unwrap();
        let db = Tsdb::open(old.path(), Retention::default()).unwrap();
        let sel = Selector::parse("m").unwrap();
        let got = db.query(&sel, 0, 1_000_000, 10_000, Stat::Avg).unwrap();
        assert_eq!(got[0].points, samples);

        // Damage the middle of the new block's data: queries fail, nothing panics.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() - 1000;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        let sel = Selector::parse("noisy").unwrap();
        assert!(db.query(&sel, 0, 7_200_000, 300_000, Stat::Max).is_err());
        bytes.truncate(40);
        std::fs::write(&path, &bytes).unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        assert!(db.list(None).is_empty(), "a truncated block is skipped");
    }

    #[test]
    fn a_torn_log_record_loses_only_itself() {
        let d = tempfile::tempdir().unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        for i in 0..10 {
            db.append("m", &Labels::new(), i * 10_000, 1.0).unwrap();
        }
        db.sync().unwrap();
        drop(db);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("wal"))
            .unwrap();
        f.write_all(b"P\x00\x00\x00").unwrap();
        let db = Tsdb::open(d.path(), Retention::default()).unwrap();
        let sel = Selector::parse("m").unwrap();
        assert_eq!(
            db.query(&sel, 0, 1_000_000, 1_000_000, Stat::Count)
                .unwrap()[0]
                .points,
            vec![(0, 10.0)]
        );
    }

    #[test]
    fn retention_is_parsed_and_checked() {
        let r = Retention::parse("7d,30d,365d").unwrap();
        assert_eq!(
            (r.raw_ms, r.five_min_ms, r.hour_ms),
            (7 * DAY, 30 * DAY, 365 * DAY)
        );
        assert_eq!(r.block_ms, Retention::default().block_ms);
        for bad in [
            "",
            "7d",
            "7d,30d",
            "1h,2d,3d",
            "15d,3d,455d",
            "7x,30d,365d",
            "7d,30d,365d,1d",
        ] {
            assert!(Retention::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn selectors() {
        let s = Selector::parse("cpu{env=\"prod\", group!=\"db\"}").unwrap();
        assert!(s.matches("cpu", &labels(&[("env", "prod"), ("group", "web")])));
        assert!(!s.matches("cpu", &labels(&[("env", "prod"), ("group", "db")])));
        assert!(Selector::parse("cpu{env=prod}").is_err());
        assert!(Selector::parse("{env=\"x\"}").is_err());
        assert!(Stat::parse("p101").is_err());
    }
}

//! The log store: every line of every instance, balancer, database, build and the server
//! itself, per environment and log group, in hourly segment files; searched by time range
//! and substring, followed live, expired per group.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One log line (the wire type: what the API sends is what the store keeps).
pub use veeps_wire::LogLine;

const HOUR: i64 = 3_600_000;
/// Lines longer than this are cut.
pub const MAX_LINE: usize = 64 * 1024;

/// The store.
pub struct LogStore {
    dir: PathBuf,
    writers: Mutex<HashMap<PathBuf, BufWriter<File>>>,
    retention_days: Mutex<HashMap<(String, String), u32>>,
    default_days: u32,
    tx: tokio::sync::broadcast::Sender<LogLine>,
}

/// A name as a file name: ASCII letters, digits, `-`, `_` and `.` (not leading) kept,
/// every other byte of its UTF-8 as `%XX`.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn escape(text: &str) -> String {
    let t: String = text.chars().take(MAX_LINE).collect();
    t.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What to search.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The environment.
    pub env: String,
    /// A log group, or a group/source prefix (empty: everything).
    pub source: String,
    /// From (ms).
    pub from: i64,
    /// To (ms).
    pub to: i64,
    /// Only lines containing this.
    pub grep: Option<String>,
    /// At most this many lines (the newest).
    pub limit: usize,
}

impl LogQuery {
    /// True if a line matches (time aside).
    pub fn matches(&self, l: &LogLine) -> bool {
        l.env == self.env
            && (self.source.is_empty()
                || l.group == self.source
                || format!("{}/{}", l.group, l.source).starts_with(&self.source)
                || l.source.starts_with(&self.source))
            && self
                .grep
                .as_ref()
                .is_none_or(|g| l.text.contains(g.as_str()))
    }
}

impl LogStore {
    /// Opens (or creates) the store in `dir`, keeping groups `default_days` unless set.
    pub fn open(dir: &Path, default_days: u32) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let (tx, _) = tokio::sync::broadcast::channel(4096);
        Ok(LogStore {
            dir: dir.to_path_buf(),
            writers: Mutex::new(HashMap::new()),
            retention_days: Mutex::new(HashMap::new()),
            default_days,
            tx,
        })
    }

    /// Sets a group's retention in days.
    pub fn set_retention(&self, env: &str, group: &str, days: u32) {
        self.retention_days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((env.to_string(), group.to_string()), days);
    }

    /// A group's retention in days, if one was set.
    pub fn retention(&self, env: &str, group: &str) -> Option<u32> {
        self.retention_days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(env.to_string(), group.to_string()))
            .copied()
    }

    /// Forgets a group's retention (it falls back to the default).
    pub fn clear_retention(&self, env: &str, group: &str) {
        self.retention_days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(env.to_string(), group.to_string()));
    }

    fn segment(&self, env: &str, group: &str, ts: i64) -> PathBuf {
        self.dir
            .join(enc(env))
            .join(enc(group))
            .join(format!("{}.log", ts.div_euclid(HOUR) * HOUR))
    }

    /// Appends a line (visible to search at once, to followers at once; durable at the
    /// next [`LogStore::sync`]).
    pub fn append(&self, line: LogLine) -> std::io::Result<()> {
        let path = self.segment(&line.env, &line.group, line.ts);
        {
            let mut w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            if !w.contains_key(&path) {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p)?;
                }
                // Close writers of other hours of this group.
                let dir = path.parent().map(Path::to_path_buf);
                w.retain(|k, v| {
                    let keep = k.parent().map(Path::to_path_buf) != dir;
                    if !keep {
                        let _ = v.flush();
                    }
                    keep
                });
                w.insert(
                    path.clone(),
                    BufWriter::new(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)?,
                    ),
                );
            }
            let f = w.get_mut(&path).expect("inserted above");
            writeln!(
                f,
                "{}\t{}\t{}\t{}",
                line.ts,
                escape(&line.source),
                escape(&line.stream),
                escape(&line.text)
            )?;
        }
        let _ = self.tx.send(line);
        Ok(())
    }

    /// Flushes and syncs every open segment. Only the flushes hold the writers' lock: the
    /// syncs (tens of milliseconds on a busy disk) run on duplicates of the files, so
    /// appends never wait for a disk.
    pub fn sync(&self) -> std::io::Result<()> {
        let files: Vec<File> = {
            let mut w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::with_capacity(w.len());
            for f in w.values_mut() {
                f.flush()?;
                out.push(f.get_ref().try_clone()?);
            }
            out
        };
        for f in files {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Follows new lines.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LogLine> {
        self.tx.subscribe()
    }

    /// The log groups of an environment.
    pub fn groups(&self, env: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.join(enc(env)))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| dec(&e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Searches: oldest first, the newest `limit` lines that match. Segments are read
    /// newest hour first, and reading stops once an hour's segments have filled `limit`.
    pub fn search(&self, q: &LogQuery) -> std::io::Result<Vec<LogLine>> {
        let _ = self.sync();
        let env_dir = self.dir.join(enc(&q.env));
        let needle = q.grep.as_ref().map(|g| escape(g).into_bytes());
        let finder = needle
            .as_ref()
            .map(|n| memchr::memmem::Finder::new(n.as_slice()));
        let mut segs: Vec<(i64, String, PathBuf)> = vec![];
        for group in self.groups(&q.env) {
            if !(q.source.is_empty()
                || group.starts_with(&q.source)
                || q.source.starts_with(&group))
            {
                continue;
            }
            let gdir = env_dir.join(enc(&group));
            let rd = match std::fs::read_dir(&gdir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            segs.extend(rd.filter_map(Result::ok).filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")
                    .and_then(|s| s.parse().ok())
                    .filter(|h: &i64| h.saturating_add(HOUR) >= q.from && *h <= q.to)
                    .map(|h: i64| (h, group.clone(), e.path()))
            }));
        }
        segs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = vec![];
        let mut i = 0;
        while i < segs.len() {
            let hour = segs[i].0;
            while i < segs.len() && segs[i].0 == hour {
                let (_, group, path) = &segs[i];
                i += 1;
                let data = match std::fs::read(path) {
                    Ok(d) => d,
                    // Expired between listing and reading.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let mut handle = |line: &[u8]| {
                    let s = String::from_utf8_lossy(line);
                    let mut parts = s.splitn(4, '\t');
                    let (Some(ts), Some(src), Some(stream), Some(text)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    else {
                        return;
                    };
                    let Ok(ts) = ts.parse::<i64>() else { return };
                    if ts < q.from || ts > q.to {
                        return;
                    }
                    let l = LogLine {
                        ts,
                        env: q.env.clone(),
                        group: group.clone(),
                        source: unescape(src),
                        stream: unescape(stream),
                        text: unescape(text),
                    };
                    if q.matches(&l) {
                        out.push(l);
                    }
                };
                match &finder {
                    // Substring search over the raw file, then the lines around the hits.
                    Some(f) => {
                        let mut pos = 0;
                        while let Some(i) = f.find(&data[pos..]) {
                            let at = pos + i;
                            let start = memchr::memrchr(b'\n', &data[..at])
                                .map(|p| p + 1)
                                .unwrap_or(0);
                            let end = memchr::memchr(b'\n', &data[at..])
                                .map(|p| at + p)
                                .unwrap_or(data.len());
                            handle(&data[start..end]);
                            pos = end;
                            if pos >= data.len() {
                                break;
                            }
                        }
                    }
                    None => data
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .for_each(&mut handle),
                }
            }
            if q.limit > 0 && out.len() >= q.limit {
                break;
            }
        }
        out.sort_by_key(|l| l.ts);
        if q.limit > 0 && out.len() > q.limit {
            out.drain(..out.len() - q.limit);
        }
        Ok(out)
    }

    /// Deletes segments past their group's retention as of `now_ms`; returns how many.
    pub fn expire(&self, now_ms: i64) -> std::io::Result<usize> {
        let mut n = 0;
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(_) => return Ok(0),
        };
        for env in rd.filter_map(Result::ok) {
            let env_name = dec(&env.file_name().to_string_lossy());
            for group in std::fs::read_dir(env.path())?.filter_map(Result::ok) {
                let gname = dec(&group.file_name().to_string_lossy());
                let days = self
                    .retention_days
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&(env_name.clone(), gname))
                    .copied()
                    .unwrap_or(self.default_days);
                let limit = now_ms - days as i64 * 86_400_000;
                for seg in std::fs::read_dir(group.path())?.filter_map(Result::ok) {
                    let hour: Option<i64> = seg
                        .file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")
                        .and_then(|s| s.parse().ok());
                    if hour.is_some_and(|h| h + HOUR < limit) {
                        self.writers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&seg.path());
                        std::fs::remove_file(seg.path())?;
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: i64, group: &str, source: &str, text: &str) -> LogLine {
        LogLine {
            ts,
            env: "prod".into(),
            group: group.into(),
            source: source.into(),
            stream: "stdout".into(),
            text: text.into(),
        }
    }

    #[test]
    fn search_by_time_source_and_text_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), 30).unwrap();
        s.append(line(1_000, "web", "i-1", "GET /health 200"))
            .unwrap();
        s.append(line(2_000, "web", "i-2", "error: db\tdown\nretrying"))
            .unwrap();
        s.append(line(HOUR + 5, "db", "node-0", "checkpoint complete"))
            .unwrap();
        let all = s
            .search(&LogQuery {
                env: "prod".into(),
                from: 0,
                to: i64::MAX,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].text, "error: db\tdown\nretrying");
        let web = s
            .search(&LogQuery {
                env: "prod".into(),
                source: "web".into(),
                from: 0,
                to: i64::MAX,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(web.len(), 2);
        let inst = s
            .search(&LogQuery {
                env: "prod".into(),
                source: "web/i-2".into(),
                from: 0,
                to: i64::MAX,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(inst.len(), 1);
        let grep = s
            .search(&LogQuery {
                env: "prod".into(),
                from: 0,
                to: i64::MAX,
                grep: Some("db\tdown".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(grep.len(), 1);
        let late = s
            .search(&LogQuery {
                env: "prod".into(),
                from: 1_500,
                to: i64::MAX,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(late.len(), 2);
        s.set_retention("prod", "web", 1);
        assert_eq!(
            s.expire(2 * 86_400_000).unwrap(),
            1,
            "only web's old segment goes"
        );
        assert_eq!(
            s.search(&LogQuery {
                env: "prod".into(),
                from: 0,
                to: i64::MAX,
                ..Default::default()
            })
            .unwrap()
            .len(),
            1
        );
        assert_eq!(s.groups("prod"), vec!["db".to_string(), "web".to_string()]);
    }

    #[test]
    fn odd_names_stay_apart_and_limit_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path(), 30).unwrap();
        for g in ["café", "cafè", "..", "a/b", "%41"] {
            s.append(line(1_000, g, "x", g)).unwrap();
        }
        let mut groups = s.groups("prod");
        groups.sort();
        assert_eq!(groups, vec!["%41", "..", "a/b", "cafè", "café"]);
        assert!(d.path().join("prod").read_dir().unwrap().count() == 5);
        for h in 0..5 {
            for k in 0..10 {
                s.append(line(h * HOUR + k, "web", "i-1", &format!("{h}-{k}")))
                    .unwrap();
            }
        }
        let q = LogQuery {
            env: "prod".into(),
            source: "web".into(),
            from: 0,
            to: i64::MAX,
            limit: 15,
            ..Default::default()
        };
        let got: Vec<String> = s.search(&q).unwrap().into_iter().map(|l| l.text).collect();
        assert_eq!(got.len(), 15);
        assert_eq!(got.first().map(String::as_str), Some("3-5"));
        assert_eq!(got.last().map(String::as_str), Some("4-9"));
    }
}

//! A bounded on-disk spool of log lines, for producers that outlive the control plane
//! (an instance's supervisor, a data-plane process): the producer appends, the control
//! plane reads from where it last stopped (its cursor survives it), so lines written while
//! it is down are delivered when it returns. Two files, `out.log` and `out.log.1`, each at
//! most half the limit: when the reader is away too long the oldest lines go first.
//!
//! A record is one line, `TS STREAM TEXT` (milliseconds since the epoch, a word, the text
//! without a newline), written with one `write` so a reader never sees half a record
//! followed by another. Each file starts with `0 spool GENERATION`, which names it for the
//! reader's cursor (inode numbers are reused).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const CURRENT: &str = "out.log";
const PREVIOUS: &str = "out.log.1";
/// How long a writer thread fed by a queue gathers lines before it writes them together
/// ([`SpoolWriter::append`], then [`SpoolWriter::flush`]): a busy producer wakes it a few
/// times a second rather than once a line.
pub const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Longer than any record (lines are cut at [`crate::logs::MAX_LINE`]).
const MAX_RECORD: usize = 2 * crate::logs::MAX_LINE;

/// The appending side.
pub struct SpoolWriter {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Bytes per file before it is rotated.
    half: u64,
    /// Whole records appended and not yet written ([`SpoolWriter::append`]).
    pending: Vec<u8>,
}

impl SpoolWriter {
    /// Appends to the spool in `dir`, keeping at most about `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<SpoolWriter> {
        let (file, len) = new_file(&dir.join(CURRENT))?;
        Ok(SpoolWriter {
            dir: dir.to_path_buf(),
            file,
            len,
            half: (limit / 2).max(4096),
            pending: Vec::new(),
        })
    }

    /// Appends one line, written at once.
    pub fn line(&mut self, ts: i64, stream: &str, text: &str) -> std::io::Result<()> {
        self.append(ts, stream, text)?;
        self.flush()
    }

    /// Appends one line to those written together by the next [`SpoolWriter::flush`] (one
    /// `write` for many records: a reader takes only whole ones).
    pub fn append(&mut self, ts: i64, stream: &str, text: &str) -> std::io::Result<()> {
        let start = self.pending.len();
        write!(self.pending, "{ts} {stream} ")?;
        let from = self.pending.len();
        self.pending.extend_from_slice(text.as_bytes());
        for b in &mut self.pending[from..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        self.pending.push(b'\n');
        // A file never grows past its half by more than one record: the records before
        // this one go to it, this one starts the next.
        if self.len + self.pending.len() as u64 >= self.half && start > 0 {
            let rec = self.pending.split_off(start);
            self.flush()?;
            self.pending = rec;
        }
        if self.pending.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what [`SpoolWriter::append`] gathered, rotating the file once it is full.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.pending);
        let n = self.pending.len() as u64;
        self.pending.clear();
        r?;
        self.len += n;
        if self.len >= self.half {
            std::fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            (self.file, self.len) = new_file(&self.dir.join(CURRENT))?;
        }
        Ok(())
    }
}

/// Opens `path` for appending, starting it with its generation when it is new.
fn new_file(path: &Path) -> std::io::Result<(File, u64)> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut len = file.metadata()?.len();
    if len == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let header = format!("0 spool {nanos:x}{:x}\n", std::process::id());
        file.write_all(header.as_bytes())?;
        len = header.len() as u64;
    }
    Ok((file, len))
}

/// The generation a spool file starts with.
fn generation(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let mut buf = [0u8; 80];
    let n = f.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?.lines().next()?;
    line.strip_prefix("0 spool ").map(str::to_string)
}

/// One line read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was written (ms since the epoch).
    pub ts: i64,
    /// Its stream (`stdout`, `stderr`, `access`...).
    pub stream: String,
    /// The text.
    pub text: String,
}

/// Where the reader stands: the file (by generation) and the offset in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    gen: String,
    offset: u64,
}

/// The reading side; its cursor is kept in a file of the reader's own.
pub struct SpoolReader {
    dir: PathBuf,
    cursor_path: PathBuf,
    cursor: Cursor,
}

impl SpoolReader {
    /// Reads the spool in `dir` from the cursor kept in `cursor_path` (from the start when
    /// there is none).
    pub fn open(dir: &Path, cursor_path: &Path) -> SpoolReader {
        let cursor = std::fs::read_to_string(cursor_path)
            .ok()
            .and_then(|s| {
                let (a, b) = s.trim().split_once(' ')?;
                Some(Cursor {
                    gen: a.to_string(),
                    offset: b.parse().ok()?,
                })
            })
            .unwrap_or_default();
        SpoolReader {
            dir: dir.to_path_buf(),
            cursor_path: cursor_path.to_path_buf(),
            cursor,
        }
    }

    /// The records written since the last call (at most about `max` bytes of them), and
    /// whether some were lost because the spool turned over twice while unread. The cursor
    /// is saved before returning.
    pub fn read(&mut self, max: usize) -> std::io::Result<(Vec<Record>, bool)> {
        let (cur, prev) = (self.dir.join(CURRENT), self.dir.join(PREVIOUS));
        let (cur_gen, prev_gen) = (generation(&cur), generation(&prev));
        let mut lost = false;
        let mut out = vec![];
        let start = self.cursor.clone();
        let at = |g: &Option<String>, c: &Cursor| g.as_deref() == Some(c.gen.as_str());
        if !at(&cur_gen, &self.cursor) && !at(&prev_gen, &self.cursor) {
            // New, or the file it was in is gone: from the oldest there is.
            lost = !self.cursor.gen.is_empty();
            self.cursor = Cursor {
                gen: prev_gen.clone().or(cur_gen.clone()).unwrap_or_default(),
                offset: 0,
            };
        }
        let mut budget = max;
        if at(&prev_gen, &self.cursor) {
            // Finish the rotated file (complete: nothing is added to it), then go on.
            let done = read_lines(&prev, &mut self.cursor.offset, &mut budget, &mut out)?;
            if done {
                if let Some(g) = &cur_gen {
                    self.cursor = Cursor {
                        gen: g.clone(),
                        offset: 0,
                    };
                }
            }
        }
        if at(&cur_gen, &self.cursor) && budget > 0 {
            read_lines(&cur, &mut self.cursor.offset, &mut budget, &mut out)?;
        }
        if self.cursor != start {
            let tmp = self.cursor_path.with_extension("tmp");
            std::fs::write(
                &tmp,
                format!("{} {}\n", self.cursor.gen, self.cursor.offset),
            )?;
            std::fs::rename(&tmp, &self.cursor_path)?;
        }
        Ok((out, lost))
    }
}

/// Reads complete records from `offset` (advancing it) until the end or the budget;
/// true when it reached the end of the file.
fn read_lines(
    path: &Path,
    offset: &mut u64,
    budget: &mut usize,
    out: &mut Vec<Record>,
) -> std::io::Result<bool> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if *offset > len {
        *offset = len;
    }
    // At least one whole record, however small the budget.
    let remaining = (len - *offset) as usize;
    let want = remaining.min((*budget).max(MAX_RECORD));
    let mut buf = vec![0u8; want];
    f.seek(SeekFrom::Start(*offset))?;
    f.read_exact(&mut buf)?;
    // Only complete records; a half-written one is read next time.
    let end = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        // Longer than any record the writer makes: skip it rather than stall.
        None if want >= MAX_RECORD => want,
        None => 0,
    };
    for line in buf[..end].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let s = String::from_utf8_lossy(line);
        let mut it = s.splitn(3, ' ');
        let (Some(ts), Some(stream)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(ts) = ts.parse() else { continue };
        if stream == "spool" {
            continue;
        }
        out.push(Record {
            ts,
            stream: stream.to_string(),
            text: it.next().unwrap_or("").to_string(),
        });
    }
    *offset += end as u64;
    *budget = budget.saturating_sub(end);
    Ok(*offset >= len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[Record]) -> Vec<String> {
        v.iter().map(|r| r.text.clone()).collect()
    }

    #[test]
    fn lines_come_back_once_across_rotation_and_a_new_reader() {
        let d = tempfile::tempdir().unwrap();
        let cur = d.path().join("cursor");
        let mut w = SpoolWriter::open(d.path(), 8192).unwrap();
        w.line(1, "stdout", "one").unwrap();
        w.line(2, "stderr", "two\nlines").unwrap();
        let mut r = SpoolReader::open(d.path(), &cur);
        let (got, lost) = r.read(1 << 20).unwrap();
        assert!(!lost);
        assert_eq!(texts(&got), ["one", "two lines"]);
        assert_eq!(got[1].stream, "stderr");
        assert_eq!(r.read(1 << 20).unwrap().0, vec![]);
        // The reader goes away; the writer rotates once; a new reader goes on from the
        // saved cursor and misses nothing.
        drop(r);
        let big = "x".repeat(100);
        for i in 0..50 {
            w.line(10 + i, "stdout", &format!("{i} {big}")).unwrap();
        }
        assert!(d.path().join(PREVIOUS).exists());
        let mut r = SpoolReader::open(d.path(), &cur);
        let mut all = vec![];
        loop {
            let (got, lost) = r.read(1000).unwrap();
            assert!(!lost);
            if got.is_empty() {
                break;
            }
            all.extend(got);
        }
        assert_eq!(all.len(), 50);
        assert!(all[0].text.starts_with("0 ") && all[49].text.starts_with("49 "));
    }

    /// Lines appended in batches come back once each, in order, across rotations, with no
    /// file more than one record past its half; nothing is read before its flush.
    #[test]
    fn appended_batches_come_back_whole_across_rotations() {
        let d = tempfile::tempdir().unwrap();
        let cur = d.path().join("cursor");
        let mut w = SpoolWriter::open(d.path(), 8192).unwrap();
        let mut r = SpoolReader::open(d.path(), &cur);
        let mut all = vec![];
        let mut n = 0;
        for batch in 0..12 {
            for _ in 0..(batch * 3) {
                w.append(
                    n,
                    "access",
                    &format!("{n} {}\r\n", "z".repeat(n as usize % 90)),
                )
                .unwrap();
                n += 1;
            }
            if batch % 4 == 0 {
                // Not written yet (unless the batch filled a file).
                let (got, _) = r.read(1 << 20).unwrap();
                all.extend(got);
            }
            w.flush().unwrap();
            for f in [CURRENT, PREVIOUS] {
                if let Ok(m) = std::fs::metadata(d.path().join(f)) {
                    assert!(m.len() < 4096 + 120, "{f}: {}", m.len());
                }
            }
            let (got, lost) = r.read(1 << 20).unwrap();
            assert!(!lost);
            all.extend(got);
        }
        assert!(d.path().join(PREVIOUS).exists());
        let texts = texts(&all);
        assert_eq!(texts.len(), n as usize);
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(*t, format!("{i} {}  ", "z".repeat(i % 90)));
        }
    }

    #[test]
    fn a_reader_away_for_two_rotations_is_told_lines_were_lost() {
        let d = tempfile::tempdir().unwrap();
        let cur = d.path().join("cursor");
        let mut w = SpoolWriter::open(d.path(), 8192).unwrap();
        w.line(1, "stdout", "first").unwrap();
        let mut r = SpoolReader::open(d.path(), &cur);
        r.read(10).unwrap();
        let big = "y".repeat(200);
        for i in 0..100 {
            w.line(i, "stdout", &big).unwrap();
        }
        let (got, lost) = r.read(1 << 20).unwrap();
        assert!(lost);
        assert!(!got.is_empty());
        // A half-written record is not read until it is complete.
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join(CURRENT))
            .unwrap()
            .write_all(b"5 stdout half")
            .unwrap();
        let before = r.read(1 << 20).unwrap().0.len();
        assert_eq!(before, 0);
    }
}

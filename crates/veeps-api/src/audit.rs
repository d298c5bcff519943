//! The audit log's writer: entries go to a thread of their own that writes them in
//! batches (one transaction, one fsync for many calls), never on the runtime's threads.
//! Calls made with the token wait until their entry is durable; refused calls do not, and
//! are bounded: their path is truncated, each source gets a few entries a minute, and what
//! is dropped is counted, and summed up in an entry of its own once the minute is over
//! ("dropped N refused calls from ADDRESS"), so the log says what it does not hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use veeps_state::{AuditRecord, Store};

/// Refused calls recorded per source and minute; the rest are counted, not written.
pub const REFUSED_PER_MINUTE: u32 = 10;
/// Characters of a refused call's path that are kept.
pub const REFUSED_PATH_CHARS: usize = 128;
/// Sources whose refusals are tracked at once (older windows are forgotten).
const SOURCES: usize = 10_000;

/// Each source's current minute and how many refused calls it made in it.
type Windows = Mutex<HashMap<String, (i64, u32)>>;

/// The summary entry of a source's minute with `count` refused calls, if some were dropped.
fn summary(source: &str, minute: i64, count: u32) -> Option<AuditRecord> {
    let dropped = count.checked_sub(REFUSED_PER_MINUTE).filter(|d| *d > 0)?;
    let when = time::OffsetDateTime::from_unix_timestamp(minute * 60)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Some(AuditRecord {
        who: "veeps".into(),
        source: source.into(),
        action: format!("dropped {dropped} refused calls (over {REFUSED_PER_MINUTE} a minute) in the minute from {when}"),
        result: 429,
    })
}

/// Takes the windows of minutes before `now_secs`'s, returning their summaries.
fn close_windows(w: &Windows, now_secs: i64) -> Vec<AuditRecord> {
    let minute = now_secs / 60;
    let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = vec![];
    w.retain(|source, (m, n)| {
        if *m >= minute {
            return true;
        }
        out.extend(summary(source, *m, *n));
        false
    });
    out
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Pending {
    record: AuditRecord,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Writes audit entries off the runtime, in batches.
pub struct Auditor {
    tx: std::sync::mpsc::SyncSender<Pending>,
    windows: Arc<Windows>,
    /// Refused-call entries dropped by the rate limit or a full queue.
    pub dropped: AtomicU64,
}

impl Auditor {
    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<Store>) -> Arc<Auditor> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(65_536);
        let windows: Arc<Windows> = Arc::default();
        let w = windows.clone();
        std::thread::Builder::new()
            .name("veeps-audit".into())
            .spawn(move || loop {
                // Every half minute at least: the summaries of minutes that are over.
                let first = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                    Ok(p) => Some(p),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let closed = close_windows(&w, now_secs());
                if !closed.is_empty() {
                    if let Err(e) = store.append_audit_batch(&closed) {
                        tracing::error!(error = %e, "audit log write failed");
                    }
                }
                if let Some(first) = first {
                    let mut batch = vec![first];
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(p) => batch.push(p),
                            Err(_) => break,
                        }
                    }
                    let records: Vec<AuditRecord> =
                        batch.iter().map(|p| p.record.clone()).collect();
                    if let Err(e) = store.append_audit_batch(&records) {
                        tracing::error!(error = %e, entries = records.len(), "audit log write failed");
                    }
                    for p in batch {
                        if let Some(d) = p.done {
                            let _ = d.send(());
                        }
                    }
                }
            })
            .expect("start the audit writer thread");
        Arc::new(Auditor {
            tx,
            windows,
            dropped: AtomicU64::new(0),
        })
    }

    /// Records a call made with the token; returns once the entry is durable.
    pub async fn record(&self, record: AuditRecord) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let p = Pending {
            record,
            done: Some(done),
        };
        // Only a full queue needs a blocking thread to wait on.
        let sent = match self.tx.try_send(p) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(p)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(p).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        };
        if sent {
            let _ = wait.await;
        }
    }

    /// Queues an entry without waiting for it (S3 writes); counted when the queue is full.
    pub fn note(&self, record: AuditRecord) {
        let p = Pending { record, done: None };
        if self.tx.try_send(p).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a refused call, within the per-source bound; never waits.
    pub fn refused(&self, who: &str, source: &str, action: &str, now_secs: i64) {
        if !self.admit(source, now_secs) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut kept: String = action.chars().take(REFUSED_PATH_CHARS).collect();
        if kept.len() < action.len() {
            kept.push('…');
        }
        let action = kept;
        let p = Pending {
            record: AuditRecord {
                who: who.into(),
                source: source.into(),
                action,
                result: 401,
            },
            done: None,
        };
        if self.tx.try_send(p).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `source` may have one more refused-call entry this minute. Windows that end
    /// here (the source's previous minute, or others evicted to make room) are summed up.
    fn admit(&self, source: &str, now_secs: i64) -> bool {
        let minute = now_secs / 60;
        let mut closed = vec![];
        let admitted = {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            if w.len() >= SOURCES && !w.contains_key(source) {
                w.retain(|s, (m, n)| {
                    let keep = *m == minute;
                    if !keep {
                        closed.extend(summary(s, *m, *n));
                    }
                    keep
                });
            }
            if w.len() >= SOURCES && !w.contains_key(source) {
                false
            } else {
                let e = w.entry(source.to_string()).or_insert((minute, 0));
                if e.0 != minute {
                    closed.extend(summary(source, e.0, e.1));
                    *e = (minute, 0);
                }
                e.1 += 1;
                e.1 <= REFUSED_PER_MINUTE
            }
        };
        for record in closed {
            self.note(record);
        }
        admitted
    }
}

/// S3 writes reach the audit log through the same writer.
impl veeps_state::AuditSink for Auditor {
    fn note(&self, record: AuditRecord) {
        Auditor::note(self, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_calls_are_bounded_per_source_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&d.path().join("s.redb")).unwrap());
        let a = Auditor::start(store.clone());
        let long = format!("GET /{}", "x".repeat(10_000));
        // Minutes ahead of the clock: the writer closes only minutes that are over.
        let t = (now_secs() / 60 + 100) * 60;
        for _ in 0..1000 {
            a.refused("anonymous", "10.0.0.1", &long, t);
        }
        a.refused("anonymous", "10.0.0.2", "GET /", t);
        // A call with the token waits for its entry, and so for the batch before it.
        let token_call = || AuditRecord {
            who: "root".into(),
            source: "127.0.0.1".into(),
            action: "GET /v1/status".into(),
            result: 200,
        };
        a.record(token_call()).await;
        let entries = store.audit(10_000).unwrap();
        assert_eq!(entries.len(), REFUSED_PER_MINUTE as usize + 2);
        // The next minute, the drops of the last are summed up in an entry of their own.
        a.refused("anonymous", "10.0.0.1", "GET /", t + 65);
        a.record(token_call()).await;
        let entries = store.audit(10_000).unwrap();
        let sum = entries
            .iter()
            .find(|e| e.action.starts_with("dropped"))
            .expect("a summary of the dropped entries");
        assert_eq!(sum.source, "10.0.0.1");
        assert!(
            sum.action.starts_with("dropped 990 refused calls"),
            "{}",
            sum.action
        );
        let minute = time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert!(sum.action.contains(&minute), "{} ({minute})", sum.action);
        assert!(entries
            .iter()
            .all(|e| e.action.chars().count() <= REFUSED_PATH_CHARS + 1));
        assert_eq!(
            a.dropped.load(Ordering::Relaxed),
            1000 - REFUSED_PER_MINUTE as u64
        );
        // The next minute, the source is admitted again.
        assert!(a.admit("10.0.0.1", 120));
        assert_eq!(store.verify_audit().unwrap(), Ok(entries.len() as u64));
    }

    #[test]
    fn pruning_keeps_the_chain_verifiable() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s.redb")).unwrap();
        for i in 0..5 {
            store
                .append_audit("root", "x", &format!("GET /{i}"), 200)
                .unwrap();
        }
        // Everything is older than a cutoff in the future, but the newest entry stays.
        assert_eq!(store.prune_audit("9999-01-01T00:00:00Z").unwrap(), 4);
        store.append_audit("root", "x", "GET /after", 200).unwrap();
        assert_eq!(store.verify_audit().unwrap(), Ok(2));
        assert_eq!(store.prune_audit("2000-01-01T00:00:00Z").unwrap(), 0);
    }
}

//! S3 request metrics per bucket (requests, errors, bytes in and out, latency) and bucket
//! usage (objects, bytes), reported to monitoring every collection interval.

use crate::store::ObjectStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use veeps_obs::collect::{Collector, Sample};

#[derive(Default)]
struct Counters {
    requests: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    bytes_in: u64,
    bytes_out: u64,
    latencies: Vec<f64>,
}

/// Request counters by bucket, and the last usage count.
pub struct Stats {
    store: Arc<ObjectStore>,
    /// Buckets known to exist (refreshed every collection), so labelling a request costs
    /// no store read.
    known: std::sync::RwLock<std::collections::HashSet<String>>,
    /// Counters by bucket, in shards: each thread counts in a shard of its own (the API's
    /// workers each in theirs), so requests on different cores share no lock or cache
    /// line; a collection adds the shards up.
    shards: Box<[Shard]>,
    usage: Mutex<HashMap<String, (u64, u64)>>,
}

/// One shard of the request counters, a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<HashMap<String, Counters>>);

/// Shards of request counters (threads beyond it share).
const SHARDS: usize = 8;

/// The shard of the calling thread: threads take shards in turn as they first count.
fn my_shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
    }
    MINE.with(|m| *m)
}

/// Latencies kept per bucket between two collections.
const MAX_LATENCIES: usize = 10_000;

impl Stats {
    /// Counters for the buckets of `store`.
    pub fn new(store: Arc<ObjectStore>) -> Arc<Stats> {
        Arc::new(Stats {
            store,
            known: Default::default(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            usage: Mutex::default(),
        })
    }

    /// Counts one request (`bucket` empty for service-level calls).
    /// Only existing buckets get series of their own: requests naming anything else
    /// (a typo, an attacker's random names) count under the empty bucket label, so callers
    /// cannot grow the number of series.
    pub fn record(&self, bucket: &str, status: u16, bytes_in: u64, bytes_out: u64, secs: f64) {
        let count = |c: &mut Counters| {
            c.requests += 1;
            c.errors_4xx += u64::from((400..500).contains(&status));
            c.errors_5xx += u64::from(status >= 500);
            c.bytes_in += bytes_in;
            c.bytes_out += bytes_out;
            if c.latencies.len() < MAX_LATENCIES {
                c.latencies.push(secs);
            }
        };
        let shard = &self.shards[my_shard()].0;
        // A bucket this shard counts already is known to exist.
        if let Some(c) = shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(bucket)
        {
            count(c);
            return;
        }
        let known = || {
            self.known
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(bucket)
        };
        let bucket = if bucket.is_empty() {
            ""
        } else if known() {
            bucket
        } else if self.store.bucket(bucket).is_ok() {
            self.known
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(bucket.to_string());
            bucket
        } else {
            ""
        };
        let mut g = shard.lock().unwrap_or_else(|p| p.into_inner());
        count(g.entry(bucket.to_string()).or_default());
    }

    /// Recounts objects and bytes per bucket (every version counts, as S3 bills it).
    pub fn count_usage(&self) {
        let Ok(buckets) = self.store.buckets() else {
            return;
        };
        let mut out = HashMap::new();
        for b in buckets {
            if let Ok(u) = self.store.usage(&b.name) {
                out.insert(b.name, u);
            }
        }
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = out;
    }
}

impl Collector for Stats {
    fn collect(&self, out: &mut Vec<Sample>) {
        let envs: HashMap<String, String> = self
            .store
            .buckets()
            .unwrap_or_default()
            .into_iter()
            .map(|b| (b.name, b.env))
            .collect();
        let env_of = |b: &str| envs.get(b).cloned().unwrap_or_else(|| "s3".into());
        // The shards added up, their latencies taken; deleted buckets' series end.
        let mut g: HashMap<String, Counters> = HashMap::new();
        for shard in &self.shards {
            let mut s = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            s.retain(|b, _| b.is_empty() || envs.contains_key(b));
            for (bucket, c) in s.iter_mut() {
                let sum = g.entry(bucket.clone()).or_default();
                sum.requests += c.requests;
                sum.errors_4xx += c.errors_4xx;
                sum.errors_5xx += c.errors_5xx;
                sum.bytes_in += c.bytes_in;
                sum.bytes_out += c.bytes_out;
                sum.latencies.append(&mut c.latencies);
            }
        }
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = envs.keys().cloned().collect();
        for (bucket, c) in g.iter_mut() {
            let env = env_of(bucket);
            let l = [("env", env.as_str()), ("bucket", bucket.as_str())];
            out.push(Sample::new("s3_requests_total", &l, c.requests as f64));
            out.push(Sample::new("s3_4xx_errors_total", &l, c.errors_4xx as f64));
            out.push(Sample::new("s3_5xx_errors_total", &l, c.errors_5xx as f64));
            out.push(Sample::new(
                "s3_bytes_uploaded_total",
                &l,
                c.bytes_in as f64,
            ));
            out.push(Sample::new(
                "s3_bytes_downloaded_total",
                &l,
                c.bytes_out as f64,
            ));
            let mut lat = std::mem::take(&mut c.latencies);
            if !lat.is_empty() {
                lat.sort_by(|a, b| a.total_cmp(b));
                let avg = lat.iter().sum::<f64>() / lat.len() as f64;
                let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1];
                out.push(Sample::new("s3_request_latency_seconds_avg", &l, avg));
                out.push(Sample::new("s3_request_latency_seconds_p99", &l, p99));
            }
        }
        for (bucket, (objects, bytes)) in
            self.usage.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let env = env_of(bucket);
            let l = [("env", env.as_str()), ("bucket", bucket.as_str())];
            out.push(Sample::new("s3_bucket_objects", &l, *objects as f64));
            out.push(Sample::new("s3_bucket_size_bytes", &l, *bytes as f64));
        }
    }
}

/// Applies lifecycle rules and recounts usage, forever; a lifecycle "day" lasts `day`
/// (shortened in tests).
pub async fn run_background(stats: Arc<Stats>, day: std::time::Duration) {
    let every = (day / 24).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(600),
    );
    loop {
        tokio::time::sleep(every).await;
        let s = stats.clone();
        let day_ms = day.as_millis().max(1) as i64;
        let _ = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            match s.store.run_lifecycle(now, day_ms) {
                Ok(r) if r != Default::default() => {
                    tracing::info!(
                        expired = r.expired,
                        noncurrent = r.noncurrent_removed,
                        markers = r.markers_removed,
                        transitioned = r.transitioned,
                        aborted = r.aborted,
                        "lifecycle rules applied"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lifecycle run failed; retrying at the next"),
            }
            s.count_usage();
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_per_bucket_and_names_of_no_bucket_share_one_label() {
        let d = tempfile::tempdir().unwrap();
        let state = Arc::new(veeps_state::Store::open(&d.path().join("state.redb")).unwrap());
        let kms = Arc::new(veeps_kms::Kms::open(d.path(), state.clone()).unwrap());
        let store = Arc::new(ObjectStore::open(d.path(), state, kms).unwrap());
        store.create_bucket("photos", "prod").unwrap();
        let stats = Stats::new(store);
        // More threads than shards, each counting known and unknown buckets.
        std::thread::scope(|s| {
            for t in 0..(SHARDS + 3) {
                let stats = &stats;
                s.spawn(move || {
                    for i in 0..100 {
                        stats.record("photos", if i % 10 == 0 { 404 } else { 200 }, 1, 2, 0.001);
                        stats.record(&format!("nope-{t}-{i}"), 404, 0, 0, 0.002);
                    }
                });
            }
        });
        let value = |out: &[Sample], name: &str, bucket: &str| {
            out.iter()
                .filter(|s| {
                    s.name == name && s.labels.iter().any(|(k, v)| k == "bucket" && v == bucket)
                })
                .map(|s| s.value)
                .sum::<f64>()
        };
        let threads = (SHARDS + 3) as f64;
        let mut out = vec![];
        stats.collect(&mut out);
        assert_eq!(value(&out, "s3_requests_total", "photos"), 100.0 * threads);
        assert_eq!(value(&out, "s3_4xx_errors_total", "photos"), 10.0 * threads);
        assert_eq!(
            value(&out, "s3_bytes_downloaded_total", "photos"),
            200.0 * threads
        );
        assert_eq!(value(&out, "s3_requests_total", ""), 100.0 * threads);
        // One series per label, however many shards counted it.
        let series = out.iter().filter(|s| s.name == "s3_requests_total").count();
        assert_eq!(series, 2, "{out:?}");
        let avg = value(&out, "s3_request_latency_seconds_avg", "photos");
        assert!((avg - 0.001).abs() < 1e-9, "{avg}");
        // Counters stay (they are totals); latencies start over.
        let mut again = vec![];
        stats.collect(&mut again);
        assert_eq!(
            value(&again, "s3_requests_total", "photos"),
            100.0 * threads
        );
        assert!(!again
            .iter()
            .any(|s| s.name == "s3_request_latency_seconds_avg"));
    }
}

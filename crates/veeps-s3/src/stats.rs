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
    by_bucket: Mutex<HashMap<String, Counters>>,
    usage: Mutex<HashMap<String, (u64, u64)>>,
}

/// Latencies kept per bucket between two collections.
const MAX_LATENCIES: usize = 10_000;

impl Stats {
    /// Counters for the buckets of `store`.
    pub fn new(store: Arc<ObjectStore>) -> Arc<Stats> {
        Arc::new(Stats {
            store,
            known: Default::default(),
            by_bucket: Mutex::default(),
            usage: Mutex::default(),
        })
    }

    /// Counts one request (`bucket` empty for service-level calls).
    /// Only existing buckets get series of their own: requests naming anything else
    /// (a typo, an attacker's random names) count under the empty bucket label, so callers
    /// cannot grow the number of series.
    pub fn record(&self, bucket: &str, status: u16, bytes_in: u64, bytes_out: u64, secs: f64) {
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
        let mut g = self.by_bucket.lock().unwrap_or_else(|p| p.into_inner());
        let c = g.entry(bucket.to_string()).or_default();
        c.requests += 1;
        c.errors_4xx += u64::from((400..500).contains(&status));
        c.errors_5xx += u64::from(status >= 500);
        c.bytes_in += bytes_in;
        c.bytes_out += bytes_out;
        if c.latencies.len() < MAX_LATENCIES {
            c.latencies.push(secs);
        }
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
        let mut g = self.by_bucket.lock().unwrap_or_else(|p| p.into_inner());
        // Deleted buckets' series end.
        g.retain(|b, _| b.is_empty() || envs.contains_key(b));
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
        drop(g);
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

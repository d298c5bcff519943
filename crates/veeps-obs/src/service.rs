//! The observability service of a server: the stores, the collectors, alarm evaluation and
//! deliveries, and the background loops that drive them.

use crate::alarm::{evaluate, AlarmState, Comparison, MissingData};
use crate::collect::{Collector, Sample};
use crate::logs::{LogLine, LogStore};
use crate::topics::{send, Delivery, SmtpConfig, Subscription};
use crate::tsdb::{Labels, Retention, Selector, Stat, Tsdb};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use veeps_state::Store;
use veeps_sys::now_ms;

/// An alarm's definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlarmSpec {
    /// The metric.
    pub metric: String,
    /// Labels the series must have (besides `env`).
    pub labels: Labels,
    /// `avg`, `min`, `max`, `sum`, `count`, `pNN`.
    pub statistic: String,
    /// Seconds per datapoint.
    pub period: u64,
    /// N.
    pub evaluation_periods: usize,
    /// M.
    pub datapoints_to_alarm: usize,
    /// The comparison.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// Missing data treatment.
    pub missing: MissingData,
    /// Topics notified on entering ALARM.
    pub alarm_actions: Vec<String>,
    /// Topics notified on entering OK.
    pub ok_actions: Vec<String>,
    /// Topics notified on entering INSUFFICIENT_DATA.
    pub insufficient_data_actions: Vec<String>,
    /// Free text.
    pub description: String,
}

/// A state change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// When.
    pub time: String,
    /// From.
    pub from: AlarmState,
    /// To.
    pub to: AlarmState,
    /// Why.
    pub reason: String,
}

/// An alarm with its state and history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlarmRecord {
    /// Its environment.
    pub env: String,
    /// Its name.
    pub name: String,
    /// Its definition.
    pub spec: AlarmSpec,
    /// Its state.
    pub state: AlarmState,
    /// Why it is in that state.
    pub reason: String,
    /// When it was last evaluated (ms).
    pub evaluated_at: i64,
    /// State changes, newest last (the last 100).
    pub history: Vec<Transition>,
}

/// Something an alarm can trigger besides topics (like a step scaling policy).
pub trait AlarmAction: Send + Sync {
    /// Called when an alarm naming `action` enters `state`.
    fn trigger(&self, env: &str, action: &str, alarm: &str, state: AlarmState);
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ObsConfig {
    /// Metric retention.
    pub retention: Retention,
    /// Default log retention, days.
    pub log_days: u32,
    /// Email relay.
    pub smtp: SmtpConfig,
}

impl Default for ObsConfig {
    fn default() -> Self {
        ObsConfig {
            retention: Retention::default(),
            log_days: 30,
            smtp: SmtpConfig {
                relay: None,
                from: "veeps@localhost".into(),
            },
        }
    }
}

/// The service.
pub struct Obs {
    /// Metrics.
    pub tsdb: Arc<Tsdb>,
    /// Logs.
    pub logs: Arc<LogStore>,
    store: Arc<Store>,
    smtp: SmtpConfig,
    collectors: Mutex<Vec<Arc<dyn Collector>>>,
    actions: Mutex<Vec<Arc<dyn AlarmAction>>>,
    eval_lock: tokio::sync::Mutex<()>,
    /// Spools read into the log store, by key.
    follows: Arc<Mutex<HashMap<String, Follow>>>,
    pumping: std::sync::atomic::AtomicBool,
}

/// A spool whose lines go to the log store under one environment, group and source.
struct Follow {
    env: String,
    group: String,
    source: String,
    reader: crate::spool::SpoolReader,
}

impl Follow {
    /// Moves what the spool holds into the store. A record's stream `SOURCE/STREAM`
    /// names its own source.
    fn pump(&mut self, logs: &LogStore, key: &str) {
        loop {
            let (recs, lost) = match self.reader.read(1 << 20) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%key, error = %e, "cannot read a spool");
                    return;
                }
            };
            let mut lines = Vec::with_capacity(recs.len() + 1);
            if lost {
                lines.push(LogLine {
                    ts: now_ms(),
                    env: self.env.clone(),
                    group: self.group.clone(),
                    source: self.source.clone(),
                    stream: "stderr".into(),
                    text: "veeps: some lines were lost (more than the spool holds was written while veeps was away)".into(),
                });
            }
            if recs.is_empty() && lines.is_empty() {
                return;
            }
            let empty = recs.is_empty();
            for r in recs {
                let (source, stream) = match r.stream.split_once('/') {
                    Some((src, st)) => (src.to_string(), st.to_string()),
                    None => (self.source.clone(), r.stream),
                };
                lines.push(LogLine {
                    ts: r.ts,
                    env: self.env.clone(),
                    group: self.group.clone(),
                    source,
                    stream,
                    text: r.text,
                });
            }
            for l in lines {
                if let Err(e) = logs.append(l) {
                    tracing::warn!(error = %e, "log store write failed");
                }
            }
            if empty {
                return;
            }
        }
    }
}

const K_ALARM: &str = "obs/alarm/";
const K_TOPIC: &str = "obs/topic/";
const K_DELIVERY: &str = "obs/delivery/";

impl Obs {
    /// Opens the stores under `data_dir`.
    pub fn open(data_dir: &Path, store: Arc<Store>, config: ObsConfig) -> std::io::Result<Obs> {
        let tsdb = Tsdb::open(&data_dir.join("metrics"), config.retention)
            .map_err(std::io::Error::other)?;
        let logs = LogStore::open(&data_dir.join("logs"), config.log_days)?;
        Ok(Obs {
            tsdb: Arc::new(tsdb),
            logs: Arc::new(logs),
            store,
            smtp: config.smtp,
            collectors: Mutex::new(vec![]),
            actions: Mutex::new(vec![]),
            eval_lock: tokio::sync::Mutex::new(()),
            follows: Arc::new(Mutex::new(HashMap::new())),
            pumping: false.into(),
        })
    }

    /// Reads the spool in `dir` (written by a process that outlives the control plane)
    /// into the log store from now on, from where the last reader stopped (its cursor is
    /// `dir/out.read`): lines written while veeps was away arrive now.
    pub fn follow(&self, key: &str, dir: &Path, env: &str, group: &str, source: &str) {
        let reader = crate::spool::SpoolReader::open(dir, &dir.join("out.read"));
        self.follows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.to_string(),
                Follow {
                    env: env.into(),
                    group: group.into(),
                    source: source.into(),
                    reader,
                },
            );
        if !self.pumping.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let follows = Arc::downgrade(&self.follows);
            let logs = self.logs.clone();
            std::thread::Builder::new()
                .name("log-spools".into())
                .spawn(move || {
                    while let Some(f) = follows.upgrade() {
                        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                        for (k, fl) in f.iter_mut() {
                            fl.pump(&logs, k);
                        }
                        drop(f);
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                })
                .ok();
        }
    }

    /// Reads what is left of a followed spool, and stops following it.
    pub fn unfollow(&self, key: &str) {
        let f = self
            .follows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(mut f) = f {
            f.pump(&self.logs, key);
        }
    }

    /// Reads every followed spool now (before the server stops).
    pub fn pump_spools(&self) {
        let mut f = self.follows.lock().unwrap_or_else(|p| p.into_inner());
        for (k, fl) in f.iter_mut() {
            fl.pump(&self.logs, k);
        }
    }

    /// Registers a collector.
    pub fn register(&self, c: Arc<dyn Collector>) {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }

    /// Registers an alarm action handler.
    pub fn register_action(&self, a: Arc<dyn AlarmAction>) {
        self.actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(a);
    }

    /// Records samples now.
    pub fn record(&self, samples: &[Sample]) {
        self.record_at(now_ms(), samples)
    }

    /// Records samples at `ts`.
    pub fn record_at(&self, ts: i64, samples: &[Sample]) {
        for s in samples {
            if let Err(e) = self.tsdb.append(&s.name, &s.labels, ts, s.value) {
                tracing::warn!(error = %e, "metrics store write failed");
            }
        }
    }

    /// Appends a log line.
    pub fn log(&self, line: LogLine) {
        if let Err(e) = self.logs.append(line) {
            tracing::warn!(error = %e, "log store write failed");
        }
    }

    /// Copies a child process's stdout and stderr into the log store, a line at a time,
    /// under `env`, `group` and `source`, until they close. Lines longer than
    /// [`MAX_LINE`] are split, bytes that are not UTF-8 are kept (replaced), and the pipes
    /// are read to their end whatever they carry, so the child never dies of SIGPIPE.
    pub fn capture(
        self: &Arc<Self>,
        child: &mut tokio::process::Child,
        env: &str,
        group: &str,
        source: &str,
    ) {
        type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
        let outs: [(&str, Option<Reader>); 2] = [
            ("stdout", child.stdout.take().map(|s| Box::new(s) as Reader)),
            ("stderr", child.stderr.take().map(|s| Box::new(s) as Reader)),
        ];
        for (stream, reader) in outs {
            let Some(mut reader) = reader else { continue };
            let obs = self.clone();
            let (env, group, source) = (env.to_string(), group.to_string(), source.to_string());
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut lines = Lines::default();
                let mut buf = vec![0u8; 16 * 1024];
                let emit = |text: String| {
                    obs.log(LogLine {
                        ts: now_ms(),
                        env: env.clone(),
                        group: group.clone(),
                        source: source.clone(),
                        stream: stream.into(),
                        text,
                    })
                };
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => lines.push(&buf[..n], &emit),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                lines.finish(&emit);
            });
        }
    }

    /// Runs every collector once.
    pub fn collect(&self) {
        let cs: Vec<Arc<dyn Collector>> = self
            .collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = vec![];
        for c in cs {
            c.collect(&mut out);
        }
        out.push(Sample::new(
            "obs_samples_dropped_total",
            &[("env", "system")],
            self.tsdb.dropped_samples() as f64,
        ));
        for s in &mut out {
            s.value = collected_precision(&s.name, s.value);
        }
        let ts = now_ms() / 10_000 * 10_000;
        self.record_at(ts, &out);
    }

    /// Starts the background loops: durability (1 s), collection (10 s), alarm evaluation
    /// (10 s), and store maintenance (1 min).
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                t.tick().await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = m.tsdb.sync();
                    let _ = m.logs.sync();
                })
                .await;
            }
        });
        let me = self.clone();
        // Collection and alarm evaluation interval (10 s; shorter for tests).
        let every = std::env::var("VEEPS_OBS_INTERVAL_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(10);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(every));
            loop {
                t.tick().await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.collect()).await;
                me.evaluate_alarms(now_ms()).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let every = std::env::var("VEEPS_OBS_MAINTAIN_SECS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(60);
            let mut t = tokio::time::interval(std::time::Duration::from_secs(every));
            loop {
                t.tick().await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = m.tsdb.maintain(now_ms()) {
                        tracing::warn!(error = %e, "metrics maintenance failed");
                    }
                    let _ = m.logs.expire(now_ms());
                })
                .await;
            }
        });
    }

    /// Defines (or redefines) an alarm, keeping its state.
    pub fn put_alarm(
        &self,
        env: &str,
        name: &str,
        spec: AlarmSpec,
    ) -> Result<(), veeps_state::StateError> {
        let key = format!("{K_ALARM}{env}/{name}");
        let rec = match self.store.kv_get::<AlarmRecord>(&key)? {
            Some(r) => AlarmRecord { spec, ..r },
            None => AlarmRecord {
                env: env.into(),
                name: name.into(),
                spec,
                state: AlarmState::InsufficientData,
                reason: "not evaluated yet".into(),
                evaluated_at: 0,
                history: vec![],
            },
        };
        self.store.kv_put(&key, &rec)
    }

    /// Removes an alarm.
    pub fn delete_alarm(&self, env: &str, name: &str) -> Result<(), veeps_state::StateError> {
        self.store.kv_delete(&format!("{K_ALARM}{env}/{name}"))
    }

    /// The alarms of an environment.
    pub fn alarms(&self, env: &str) -> Result<Vec<AlarmRecord>, veeps_state::StateError> {
        Ok(self
            .store
            .kv_scan::<AlarmRecord>(&format!("{K_ALARM}{env}/"))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// One alarm.
    pub fn alarm(
        &self,
        env: &str,
        name: &str,
    ) -> Result<Option<AlarmRecord>, veeps_state::StateError> {
        self.store.kv_get(&format!("{K_ALARM}{env}/{name}"))
    }

    /// Defines a topic's subscriptions.
    pub fn put_topic(
        &self,
        env: &str,
        name: &str,
        subs: &[Subscription],
    ) -> Result<(), veeps_state::StateError> {
        self.store.kv_put(&format!("{K_TOPIC}{env}/{name}"), &subs)
    }

    /// A topic's subscriptions, if the topic exists.
    pub fn topic(
        &self,
        env: &str,
        name: &str,
    ) -> Result<Option<Vec<Subscription>>, veeps_state::StateError> {
        self.store.kv_get(&format!("{K_TOPIC}{env}/{name}"))
    }

    /// Removes a topic.
    pub fn delete_topic(&self, env: &str, name: &str) -> Result<(), veeps_state::StateError> {
        self.store.kv_delete(&format!("{K_TOPIC}{env}/{name}"))
    }

    /// Deliveries of a topic, oldest first.
    pub fn deliveries(
        &self,
        env: &str,
        topic: &str,
    ) -> Result<Vec<Delivery>, veeps_state::StateError> {
        Ok(self
            .store
            .kv_scan::<Delivery>(&format!("{K_DELIVERY}{env}/{topic}/"))?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Publishes to a topic (its name, or its id `topic:ENV:NAME`); each subscriber gets it
    /// in the background, retried with backoff (5 attempts), every attempt recorded.
    pub fn publish(
        self: &Arc<Self>,
        env: &str,
        topic: &str,
        subject: &str,
        message: serde_json::Value,
    ) {
        // `topic:ENV:NAME` (a topic's id) may name another environment's topic, like the
        // one alarm topic of mgmt; a bare name is the publisher's own.
        let (env, name) = match topic.strip_prefix("topic:").and_then(|r| r.split_once(':')) {
            Some((e, n)) if !e.is_empty() => (e, n.to_string()),
            _ => (env, topic.rsplit(':').next().unwrap_or(topic).to_string()),
        };
        let subs: Vec<Subscription> = match self.store.kv_get(&format!("{K_TOPIC}{env}/{name}")) {
            Ok(Some(s)) => s,
            _ => {
                tracing::warn!(env, topic, "publish to an unknown topic");
                return;
            }
        };
        for sub in subs {
            let me = self.clone();
            let (env, name, subject, message) = (
                env.to_string(),
                name.clone(),
                subject.to_string(),
                message.clone(),
            );
            tokio::spawn(async move {
                let seq = now_ms() as u64 * 1000 + rand_u16() as u64 % 1000;
                let key = format!("{K_DELIVERY}{env}/{name}/{seq:020}");
                let mut d = Delivery {
                    seq,
                    time: veeps_state::now(),
                    subscription: sub.clone(),
                    subject: subject.clone(),
                    status: "pending".into(),
                    attempts: 0,
                    error: None,
                };
                let mut backoff = std::time::Duration::from_millis(500);
                loop {
                    d.attempts += 1;
                    let (s2, subj, msg, smtp) = (
                        sub.clone(),
                        subject.clone(),
                        message.clone(),
                        me.smtp.clone(),
                    );
                    let r = tokio::task::spawn_blocking(move || send(&s2, &subj, &msg, &smtp))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    match r {
                        Ok(()) => {
                            d.status = "delivered".into();
                            d.error = None;
                        }
                        Err(e) => {
                            d.error = Some(e);
                            d.status = if d.attempts >= 5 {
                                "failed".into()
                            } else {
                                "pending".into()
                            };
                        }
                    }
                    let _ = me.store.kv_put(&key, &d);
                    if d.status != "pending" {
                        if d.status == "failed" {
                            tracing::warn!(env, topic = %name, endpoint = %d.subscription.endpoint, error = ?d.error, "a notification could not be delivered");
                        }
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            });
        }
    }

    /// Evaluates every alarm whose period has ended, as of `now`; notifies on transitions.
    pub async fn evaluate_alarms(self: &Arc<Self>, now: i64) {
        let _g = self.eval_lock.lock().await;
        let Ok(all) = self.store.kv_scan::<AlarmRecord>(K_ALARM) else {
            return;
        };
        for (key, mut rec) in all {
            let period = rec.spec.period.max(10) as i64 * 1000;
            let end = now.div_euclid(period) * period;
            if rec.evaluated_at >= end {
                continue;
            }
            let n = rec.spec.evaluation_periods.max(1);
            let points = self.datapoints(&rec, end, period, n);
            let (state, reason) = evaluate(
                &points,
                rec.spec.datapoints_to_alarm.clamp(1, n),
                rec.spec.comparison,
                rec.spec.threshold,
                rec.spec.missing,
                rec.state,
            );
            rec.evaluated_at = end;
            rec.reason = reason.clone();
            let changed = state != rec.state;
            if changed {
                rec.history.push(Transition {
                    time: veeps_state::now(),
                    from: rec.state,
                    to: state,
                    reason: reason.clone(),
                });
                if rec.history.len() > 100 {
                    rec.history.remove(0);
                }
                rec.state = state;
            }
            let _ = self.store.kv_put(&key, &rec);
            if changed {
                tracing::info!(env = %rec.env, alarm = %rec.name, state = %state, "alarm state changed");
                let targets = match state {
                    AlarmState::Alarm => &rec.spec.alarm_actions,
                    AlarmState::Ok => &rec.spec.ok_actions,
                    AlarmState::InsufficientData => &rec.spec.insufficient_data_actions,
                };
                let message = serde_json::json!({"alarm": rec.name, "env": rec.env, "state": state, "reason": reason, "text": format!("{} is now {state}: {reason}", rec.name), "description": rec.spec.description});
                for t in targets {
                    if t.starts_with("topic:") || !t.contains(':') {
                        self.publish(
                            &rec.env,
                            t,
                            &format!("[{state}] {} ({})", rec.name, rec.env),
                            message.clone(),
                        );
                    } else {
                        for a in self
                            .actions
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .iter()
                        {
                            a.trigger(&rec.env, t, &rec.name, state);
                        }
                    }
                }
            }
        }
    }

    fn datapoints(&self, rec: &AlarmRecord, end: i64, period: i64, n: usize) -> Vec<Option<f64>> {
        // An alarm watches its own environment's series unless its labels name another
        // (`env = "system"` for the host and the server).
        let mut labels = rec.spec.labels.clone();
        labels
            .entry("env".into())
            .or_insert_with(|| rec.env.clone());
        let sel = Selector {
            name: rec.spec.metric.clone(),
            matchers: labels
                .into_iter()
                .map(|(label, value)| crate::tsdb::Matcher {
                    label,
                    value,
                    negate: false,
                })
                .collect(),
        };
        let stat = Stat::parse(&rec.spec.statistic).unwrap_or(Stat::Avg);
        let from = end - n as i64 * period;
        let series = self
            .tsdb
            .query(&sel, from, end - 1, period, stat)
            .unwrap_or_default();
        (0..n)
            .map(|k| {
                let start = from + k as i64 * period;
                let vals: Vec<f64> = series
                    .iter()
                    .filter_map(|s| s.points.iter().find(|(t, _)| *t == start).map(|(_, v)| *v))
                    .collect();
                if vals.is_empty() {
                    return None;
                }
                Some(match stat {
                    Stat::Sum | Stat::Count => vals.iter().sum(),
                    Stat::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    Stat::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                    _ => vals.iter().sum::<f64>() / vals.len() as f64,
                })
            })
            .collect()
    }

    /// Prometheus text exposition of the latest sample of every series.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut last_name = String::new();
        for (name, labels, ts, v) in self.tsdb.latest() {
            let pname: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if pname != last_name {
                out.push_str(&format!(
                    "# TYPE {pname} {}\n",
                    if pname.ends_with("_total") {
                        "counter"
                    } else {
                        "gauge"
                    }
                ));
                last_name = pname.clone();
            }
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}=\"{}\"",
                        v.replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n")
                    )
                })
                .collect();
            let value = if v.is_nan() {
                "NaN".to_string()
            } else if v.is_infinite() {
                if v > 0.0 {
                    "+Inf".into()
                } else {
                    "-Inf".into()
                }
            } else {
                format!("{v}")
            };
            if l.is_empty() {
                out.push_str(&format!("{pname} {value} {ts}\n"));
            } else {
                out.push_str(&format!("{pname}{{{}}} {value} {ts}\n", l.join(",")));
            }
        }
        out
    }
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (t >> 16)) as u16
}

/// Seconds since the epoch as ms (shared clock for callers).
pub fn now() -> i64 {
    now_ms()
}

/// All samples of a map, for tests and tools.
pub fn samples_from(map: &BTreeMap<String, f64>, labels: &[(&str, &str)]) -> Vec<Sample> {
    map.iter()
        .map(|(k, v)| Sample::new(k, labels, *v))
        .collect()
}

/// The longest log line kept whole; longer ones are split into lines of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Splits a byte stream into log lines: at newlines, and at [`MAX_LINE`] bytes.
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Feeds bytes; calls `emit` for every line completed.
    pub fn push(&mut self, mut bytes: &[u8], emit: &impl Fn(String)) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let take = bytes.len().min(room);
            match bytes[..take].iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&bytes[..i]);
                    self.flush(emit);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.pending.len() >= MAX_LINE {
                        self.flush(emit);
                    }
                }
            }
        }
    }

    /// Emits what is left (a last line without a newline).
    pub fn finish(&mut self, emit: &impl Fn(String)) {
        if !self.pending.is_empty() {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &impl Fn(String)) {
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        emit(String::from_utf8_lossy(&line).into_owned());
    }
}

/// A collected value kept to the precision its unit is measured in: percentages to 0.01,
/// seconds to the microsecond, other fractions to 0.001; whole numbers as they are. The
/// digits dropped are noise of the measurement (jiffies, histogram interpolation), and
/// short decimals store in a fraction of the bytes of full-precision floats. Samples sent
/// to the API are stored exactly as sent.
pub fn collected_precision(name: &str, v: f64) -> f64 {
    if !v.is_finite() || v.fract() == 0.0 || v.abs() >= 1e12 {
        return v;
    }
    let places = if name.ends_with("_percent") {
        2
    } else if name.ends_with("_seconds") || name.contains("_seconds_") {
        6
    } else {
        3
    };
    let m = 10f64.powi(places);
    (v * m).round() / m
}

#[cfg(test)]
mod lines_tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let out = std::cell::RefCell::new(vec![]);
        let emit = |s: String| out.borrow_mut().push(s);
        let mut l = Lines::default();
        for c in chunks {
            l.push(c, &emit);
        }
        l.finish(&emit);
        out.into_inner()
    }

    #[test]
    fn collected_values_keep_their_units_precision() {
        assert_eq!(
            collected_precision("host_cpu_usage_percent", 13.867876954109937),
            13.87
        );
        assert_eq!(
            collected_precision("lb_target_response_seconds_p99", 0.01948396937220458),
            0.019484
        );
        assert_eq!(
            collected_precision("reconcile_duration_seconds", 0.026044558),
            0.026045
        );
        assert_eq!(
            collected_precision("lb_requests_per_target", 6.666666666666667),
            6.667
        );
        assert_eq!(
            collected_precision("host_memory_total_bytes", 25_000_000_001.0),
            25_000_000_001.0
        );
        assert!(collected_precision("x_percent", f64::NAN).is_nan());
        // Rounded values are short decimals: the store keeps them in a few bits each.
        let (enc, _) = crate::codec::encode(&[(0, 13.87), (10_000, 14.02)]);
        assert_eq!(enc, crate::codec::DECIMAL);
    }

    /// Issue "Trust what exists", item 16: a line without a newline was buffered without
    /// bound, and one byte that is not UTF-8 ended the capture (the app then died of
    /// SIGPIPE). Long lines split; invalid bytes stay, replaced.
    #[test]
    fn lines_are_bounded_and_bytes_kept() {
        assert_eq!(split(&[b"a\nb", b"c\r\n", b"tail"]), ["a", "bc", "tail"]);
        assert_eq!(
            split(&[b"ok \xff\xfe bytes\nnext\n"]),
            ["ok \u{fffd}\u{fffd} bytes", "next"]
        );
        let long = vec![b'x'; MAX_LINE * 3 + 5];
        let got = split(&[&long[..1000], &long[1000..]]);
        assert_eq!(got.len(), 4);
        assert!(got[..3].iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(got[3].len(), 5);
    }
}

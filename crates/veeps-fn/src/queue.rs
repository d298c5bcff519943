//! Asynchronous invocations (`InvocationType: Event`), queued durably: an event is written to
//! the store before the caller hears `202`, and leaves it only once it has run, or has been
//! handed to the function's dead-letter target. A failed run is retried (by default twice,
//! after one and then two retry delays, as Lambda does); a throttled one is retried without
//! counting, until the event's maximum age. A server killed meanwhile runs the queue from
//! where it was at its next start: an event may run twice, never zero times.

use crate::Functions;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const K_QUEUE: &str = "fn/queue/";
/// Asynchronous invocations running at once, all functions together.
const MAX_RUNNING: usize = 16;
/// Events waiting at once, all functions together: more are refused (`429`).
pub const MAX_QUEUED: usize = 100_000;
/// Bytes of events waiting at once, all functions together: more are refused (`429`).
pub const MAX_QUEUED_BYTES: u64 = 1 << 30;

/// One queued event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Queued {
    /// The request id the caller was given.
    pub id: String,
    /// The function.
    pub function: String,
    /// The event (base64 in the store's JSON).
    #[serde(with = "veeps_state::b64")]
    pub payload: Vec<u8>,
    /// Runs so far that failed.
    pub attempts: u32,
    /// Not before this (ms since the epoch).
    pub not_before: i64,
    /// When it was queued (ms).
    pub queued_at: i64,
    /// The last failure's error document.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The queue's runner state.
#[derive(Default)]
pub struct Queue {
    /// Keys running now.
    running: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
    /// Events in the store.
    count: AtomicUsize,
    /// Their payloads' bytes.
    bytes: AtomicU64,
}

impl Queue {
    /// Counts what a previous run left.
    pub(crate) fn open(&self, store: &veeps_state::Store) {
        let all = store.kv_scan::<Queued>(K_QUEUE).unwrap_or_default();
        let bytes = all.iter().map(|(_, q)| q.payload.len() as u64).sum();
        self.count.store(all.len(), Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

fn key(q: &Queued) -> String {
    format!("{K_QUEUE}{:016}-{}", q.queued_at, q.id)
}

impl Functions {
    /// Queues an event for `function`; returns its request id once it is durable.
    pub fn enqueue(&self, function: &str, payload: Bytes) -> Result<String, crate::InvokeError> {
        if self.queue.count.load(Ordering::Relaxed) >= MAX_QUEUED
            || self.queue.bytes.load(Ordering::Relaxed) + payload.len() as u64 > MAX_QUEUED_BYTES
        {
            return Err(crate::InvokeError::Throttled(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
            ));
        }
        let now = veeps_obs::service::now();
        let q = Queued {
            id: crate::uuid4(),
            function: function.to_string(),
            payload: payload.to_vec(),
            attempts: 0,
            not_before: now,
            queued_at: now,
            last_error: None,
        };
        self.store
            .kv_put(&key(&q), &q)
            .map_err(|e| crate::InvokeError::Service(format!("queueing the event: {e}")))?;
        self.queue.count.fetch_add(1, Ordering::Relaxed);
        self.queue
            .bytes
            .fetch_add(q.payload.len() as u64, Ordering::Relaxed);
        self.queue.wake.notify_one();
        Ok(q.id)
    }

    /// Events waiting (for tests and metrics).
    pub fn queued(&self) -> Vec<Queued> {
        self.store
            .kv_scan::<Queued>(K_QUEUE)
            .map(|v| v.into_iter().map(|(_, q)| q).collect())
            .unwrap_or_default()
    }

    /// Runs the queue until the task is dropped.
    pub async fn run_queue(self: Arc<Self>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING));
        loop {
            self.take_bucket_events();
            let now = veeps_obs::service::now();
            let due: Vec<(String, Queued)> = self
                .store
                .kv_scan::<Queued>(K_QUEUE)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, q)| q.not_before <= now)
                .collect();
            for (k, q) in due {
                {
                    let mut running = self.queue.running.lock().unwrap_or_else(|p| p.into_inner());
                    if running.contains(&k) {
                        continue;
                    }
                    running.insert(k.clone());
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    me.run_one(&k, q).await;
                    me.queue
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&k);
                    me.queue.wake.notify_one();
                });
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(500), self.queue.wake.notified()).await;
        }
    }

    /// Moves bucket notifications into the queue: each is queued (durably) before the
    /// object store forgets it, so none is lost; one for a function that no longer exists
    /// is dropped.
    fn take_bucket_events(&self) {
        let Some(objects) = self.objects.get() else {
            return;
        };
        for (k, ev) in objects.pending_events(256) {
            if self.get(&ev.function).is_some()
                && self
                    .enqueue(&ev.function, Bytes::from(ev.event.to_string()))
                    .is_err()
            {
                return;
            }
            objects.event_delivered(&k);
        }
    }

    async fn run_one(&self, k: &str, mut q: Queued) {
        let Some(rec) = self.get(&q.function) else {
            // The function is gone: so is its queue.
            self.done(k, q.payload.len());
            return;
        };
        let now = veeps_obs::service::now();
        let expired = now - q.queued_at > self.opts.max_event_age.as_millis() as i64;
        let outcome = if expired {
            None
        } else {
            Some(
                self.invoke(
                    &q.function,
                    Bytes::from(q.payload.clone()),
                    crate::Call::default(),
                )
                .await,
            )
        };
        match outcome {
            Some(Ok(out)) if out.function_error.is_none() => {
                self.done(k, q.payload.len());
            }
            Some(Err(crate::InvokeError::Throttled(_))) => {
                // Throttles do not count; they wait a little.
                q.not_before = now + 1000;
                let _ = self.store.kv_put(k, &q);
            }
            other => {
                let error = match other {
                    Some(Ok(out)) => String::from_utf8_lossy(&out.payload).into_owned(),
                    Some(Err(e)) => e.to_string(),
                    None => "the event is older than the maximum event age".into(),
                };
                q.attempts += 1;
                q.last_error = Some(error.clone());
                if expired || q.attempts > rec.max_retry_attempts {
                    let condition = if expired {
                        "EventAgeExceeded"
                    } else {
                        "RetriesExhausted"
                    };
                    self.dead_letter(&rec, &q, condition, &error);
                    self.done(k, q.payload.len());
                } else {
                    // One delay, then two, then four...
                    let delay = self.opts.retry_delay.as_millis() as i64
                        * (1i64 << (q.attempts - 1).min(10));
                    q.not_before = veeps_obs::service::now() + delay;
                    let _ = self.store.kv_put(k, &q);
                }
            }
        }
    }

    /// Hands a failed event to the function's dead-letter bucket and topic (a record in
    /// Lambda's destination format), or logs that it is dropped.
    fn dead_letter(&self, rec: &crate::FunctionRecord, q: &Queued, condition: &str, error: &str) {
        let payload: serde_json::Value = serde_json::from_slice(&q.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&q.payload).into_owned())
        });
        let response: serde_json::Value = serde_json::from_str(error)
            .unwrap_or_else(|_| serde_json::Value::String(error.to_string()));
        let record = serde_json::json!({
            "version": "1.0",
            "timestamp": crate::rfc3339_now(),
            "requestContext": {
                "requestId": q.id,
                "functionArn": format!("{}:$LATEST", rec.arn()),
                "condition": condition,
                "approximateInvokeCount": q.attempts,
            },
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": response,
        });
        let mut delivered = false;
        if let (Some(bucket), Some(objects)) = (&rec.dead_letter_bucket, self.objects.get()) {
            let key = format!("{}/{}.json", rec.name, q.id);
            let body = record.to_string().into_bytes();
            let opts = veeps_s3::store::PutOptions {
                content_type: Some("application/json".into()),
                ..Default::default()
            };
            match objects.put(bucket, &key, &body[..], opts) {
                Ok(_) => delivered = true,
                Err(e) => {
                    tracing::warn!(function = %rec.name, %bucket, error = %e, "cannot write a failed event to its dead-letter bucket")
                }
            }
        }
        if let Some(topic) = &rec.dead_letter_topic {
            self.obs.publish(
                &rec.env,
                topic,
                &format!(
                    "{}: an asynchronous invocation failed ({condition})",
                    rec.name
                ),
                record.clone(),
            );
            delivered = true;
        }
        if !delivered {
            tracing::warn!(function = %rec.name, request_id = %q.id, %condition, "an asynchronous invocation failed and the function has no dead-letter target; it is dropped");
        }
    }
}

impl Functions {
    fn done(&self, k: &str, len: usize) {
        if self.store.kv_delete(k).is_ok() {
            let _ = self
                .queue
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            let _ = self
                .queue
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    n.checked_sub(len as u64)
                });
        }
    }
}

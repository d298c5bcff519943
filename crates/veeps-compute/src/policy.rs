//! Scaling policies: target tracking on the group's average CPU, simple/step scaling
//! triggered by alarms, and scheduled actions (cron), with cooldowns and warm-up.

use crate::group::Compute;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use veeps_obs::alarm::AlarmState;
use veeps_sys::now_ms;

/// What a policy does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum PolicyKind {
    /// Keep the group's average CPU (percent of the instances' limits) near a target.
    TargetCpu {
        /// The target, percent.
        target: f64,
    },
    /// Keep the load balancers' requests per minute per in-service instance near a target.
    TargetRequests {
        /// The target, requests per minute per instance.
        target: f64,
    },
    /// Change the desired count when an alarm naming the policy goes off.
    Step {
        /// `ChangeInCapacity`, `ExactCapacity` or `PercentChangeInCapacity`.
        adjustment_type: String,
        /// The change.
        adjustment: i64,
    },
    /// Set the bounds and desired count at times given by a cron expression (UTC).
    Scheduled {
        /// `[sec] min hour day-of-month month day-of-week`.
        recurrence: String,
        /// New minimum, if set.
        min_size: Option<u32>,
        /// New maximum, if set.
        max_size: Option<u32>,
        /// New desired count, if set.
        desired: Option<u32>,
    },
}

/// A policy as declared.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// Its id (`policy:ENV:NAME`, what alarm actions name).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The group it scales.
    pub group_id: String,
    /// What it does.
    pub kind: PolicyKind,
    /// Seconds after a scaling before the next scale-in (and, for step policies, any).
    pub cooldown_secs: u64,
    /// Seconds a new instance needs before its metrics count (the scale-out cooldown).
    pub warmup_secs: u64,
}

#[derive(Default)]
struct PolicyState {
    /// The last request count seen, and when (for requests per target).
    last_count: Option<(i64, u64)>,
    readings: VecDeque<f64>,
    last_action_ms: i64,
    last_fired: Option<i64>,
}

/// The policies of one server, evaluated once a second.
pub struct Policies {
    compute: Arc<Compute>,
    policies: Mutex<HashMap<String, (Policy, PolicyState)>>,
    running: std::sync::atomic::AtomicBool,
}

const K_POLICY: &str = "compute/policy/";

impl Policies {
    /// The policies, loaded from the store.
    pub fn new(compute: Arc<Compute>, store: &veeps_state::Store) -> Arc<Policies> {
        let mut map = HashMap::new();
        for (_, p) in store.kv_scan::<Policy>(K_POLICY).unwrap_or_default() {
            map.insert(p.id.clone(), (p, PolicyState::default()));
        }
        Arc::new(Policies {
            compute,
            policies: Mutex::new(map),
            running: false.into(),
        })
    }

    /// Starts evaluating once a second (once; later calls do nothing).
    pub fn run(self: &Arc<Self>) {
        if self.running.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                t.tick().await;
                let Some(me) = weak.upgrade() else { break };
                me.evaluate(now_ms());
            }
        });
    }

    /// Adds or replaces a policy.
    pub fn put(&self, store: &veeps_state::Store, p: Policy) -> Result<(), String> {
        if let PolicyKind::Scheduled { recurrence, .. } = &p.kind {
            Cron::parse(recurrence)?;
        }
        store
            .kv_put(&format!("{K_POLICY}{}", p.id), &p)
            .map_err(|e| e.to_string())?;
        let mut m = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        let state = m.remove(&p.id).map(|(_, s)| s).unwrap_or_default();
        m.insert(p.id.clone(), (p, state));
        Ok(())
    }

    /// Removes a policy.
    pub fn remove(&self, store: &veeps_state::Store, id: &str) -> Result<(), String> {
        store
            .kv_delete(&format!("{K_POLICY}{id}"))
            .map_err(|e| e.to_string())?;
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    /// True if the policy exists.
    pub fn exists(&self, id: &str) -> bool {
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    fn evaluate(&self, now: i64) {
        let mut m = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        for (p, st) in m.values_mut() {
            let Some(rec) = self.compute.record(&p.group_id) else {
                continue;
            };
            match &p.kind {
                PolicyKind::TargetCpu { .. } | PolicyKind::TargetRequests { .. } => {
                    let (target, what) = match &p.kind {
                        PolicyKind::TargetCpu { target } => (*target, "average CPU (%)"),
                        PolicyKind::TargetRequests { target } => {
                            (*target, "requests per minute per instance")
                        }
                        _ => continue,
                    };
                    let reading = match &p.kind {
                        PolicyKind::TargetCpu { .. } => self.compute.average_cpu(&p.group_id),
                        _ => {
                            let Some(total) = self.compute.requests_served(&rec.spec.target_groups)
                            else {
                                continue;
                            };
                            let prev = st.last_count.replace((now, total));
                            let in_service = rec
                                .instances
                                .iter()
                                .filter(|i| i.lifecycle == crate::group::Lifecycle::InService)
                                .count()
                                .max(1) as f64;
                            prev.filter(|(t, _)| now > *t).map(|(t, n)| {
                                total.saturating_sub(n) as f64 * 60_000.0
                                    / (now - t) as f64
                                    / in_service
                            })
                        }
                    };
                    let Some(avg) = reading else {
                        continue;
                    };
                    st.readings.push_back(avg);
                    while st.readings.len() > 5 {
                        st.readings.pop_front();
                    }
                    if st.readings.len() < 3 {
                        continue;
                    }
                    let mean = st.readings.iter().sum::<f64>() / st.readings.len() as f64;
                    let in_service = rec
                        .instances
                        .iter()
                        .filter(|i| i.lifecycle == crate::group::Lifecycle::InService)
                        .count()
                        .max(1) as f64;
                    let want = (in_service * mean / target.max(1.0)).ceil() as i64;
                    let since = now - st.last_action_ms.max(rec.last_scaled_ms);
                    let cause = format!(
                        "policy {}: {what} {mean:.1} against a target of {target}",
                        p.name
                    );
                    if want > rec.desired as i64 && since >= p.warmup_secs as i64 * 1000 {
                        st.last_action_ms = now;
                        st.readings.clear();
                        self.compute.set_desired(&p.group_id, want, cause);
                    } else if want < rec.desired as i64
                        && mean < target * 0.9
                        && since >= p.cooldown_secs as i64 * 1000
                    {
                        // Scale in one at a time, conservatively.
                        st.last_action_ms = now;
                        st.readings.clear();
                        self.compute
                            .set_desired(&p.group_id, rec.desired as i64 - 1, cause);
                    }
                }
                PolicyKind::Scheduled {
                    recurrence,
                    min_size,
                    max_size,
                    desired,
                } => {
                    let Ok(cron) = Cron::parse(recurrence) else {
                        continue;
                    };
                    let sec = now.div_euclid(1000);
                    let slot = if cron.has_seconds {
                        sec
                    } else {
                        sec - sec.rem_euclid(60)
                    };
                    if st.last_fired == Some(slot) || !cron.matches(sec) {
                        continue;
                    }
                    st.last_fired = Some(slot);
                    self.compute.set_bounds(
                        &p.group_id,
                        *min_size,
                        *max_size,
                        *desired,
                        format!("scheduled action {} ({recurrence})", p.name),
                    );
                }
                PolicyKind::Step { .. } => {}
            }
        }
    }

    /// Runs a step policy (an alarm naming it went off).
    pub fn trigger(&self, id: &str, alarm: &str, state: AlarmState) {
        if state != AlarmState::Alarm {
            return;
        }
        let mut m = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        let Some((p, st)) = m.get_mut(id) else {
            return;
        };
        let PolicyKind::Step {
            adjustment_type,
            adjustment,
        } = &p.kind
        else {
            return;
        };
        let Some(rec) = self.compute.record(&p.group_id) else {
            return;
        };
        let now = now_ms();
        if now - st.last_action_ms < p.cooldown_secs as i64 * 1000 {
            tracing::info!(policy = %p.name, alarm, "in cooldown; the alarm is not acted on");
            return;
        }
        let cur = rec.desired as i64;
        let want = match adjustment_type.as_str() {
            "ExactCapacity" => *adjustment,
            "PercentChangeInCapacity" => {
                let d = (cur as f64 * *adjustment as f64 / 100.0).round() as i64;
                cur + if d == 0 { adjustment.signum() } else { d }
            }
            _ => cur + adjustment,
        };
        st.last_action_ms = now;
        self.compute.set_desired(
            &p.group_id,
            want,
            format!(
                "alarm {alarm} went off; policy {} ({adjustment_type} {adjustment})",
                p.name
            ),
        );
    }
}

/// Hands alarm actions naming a policy to it.
pub struct PolicyAction(pub Arc<Policies>);

impl veeps_obs::service::AlarmAction for PolicyAction {
    fn trigger(&self, _env: &str, action: &str, alarm: &str, state: AlarmState) {
        if action.starts_with("policy:") {
            self.0.trigger(action, alarm, state);
        }
    }
}

/// A cron expression: `min hour dom month dow`, or with seconds first (six fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    fields: Vec<Vec<bool>>,
    /// Six fields were given.
    pub has_seconds: bool,
}

impl Cron {
    /// Parses `*`, numbers, `a-b`, `*/n`, `a-b/n` and lists of them in each field.
    pub fn parse(s: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let (has_seconds, ranges): (bool, &[(u32, u32)]) = match parts.len() {
            5 => (false, &[(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]),
            6 => (true, &[(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]),
            n => {
                return Err(format!(
                    "\"{s}\" has {n} fields; a cron expression has 5 (min hour day month weekday) or 6 (seconds first)"
                ))
            }
        };
        let mut fields = vec![];
        for (f, (lo, hi)) in parts.iter().zip(ranges) {
            let mut set = vec![false; *hi as usize + 1];
            for item in f.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, st)) => (
                        r,
                        st.parse::<u32>()
                            .ok()
                            .filter(|v| *v > 0)
                            .ok_or_else(|| format!("\"{item}\" in \"{s}\": bad step"))?,
                    ),
                    None => (item, 1),
                };
                let (a, b) = if range == "*" {
                    (*lo, *hi)
                } else if let Some((a, b)) = range.split_once('-') {
                    (
                        a.parse()
                            .map_err(|_| format!("\"{item}\" in \"{s}\": not a number"))?,
                        b.parse()
                            .map_err(|_| format!("\"{item}\" in \"{s}\": not a number"))?,
                    )
                } else {
                    let v: u32 = range
                        .parse()
                        .map_err(|_| format!("\"{item}\" in \"{s}\": not a number"))?;
                    (v, if item.contains('/') { *hi } else { v })
                };
                if a < *lo || b > *hi || a > b {
                    return Err(format!("\"{item}\" in \"{s}\" is outside {lo}-{hi}"));
                }
                let mut v = a;
                while v <= b {
                    set[v as usize] = true;
                    v += step;
                }
            }
            fields.push(set);
        }
        Ok(Cron {
            fields,
            has_seconds,
        })
    }

    /// True if the expression matches `unix_secs` (UTC).
    pub fn matches(&self, unix_secs: i64) -> bool {
        let days = unix_secs.div_euclid(86_400);
        let rem = unix_secs.rem_euclid(86_400);
        let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let mo = if mp < 10 { mp + 3 } else { mp - 9 };
        let dow = (days + 4).rem_euclid(7);
        let mut vals = vec![m, h, d, mo, dow];
        if self.has_seconds {
            vals.insert(0, s);
        }
        self.fields
            .iter()
            .zip(vals)
            .all(|(f, v)| f.get(v as usize).copied().unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_matches_like_cron() {
        // 2026-11-25 (a Wednesday) 12:30:15 UTC.
        let t = 1_795_609_815;
        assert!(Cron::parse("30 12 * * *").unwrap().matches(t));
        assert!(Cron::parse("30 12 25 11 3").unwrap().matches(t));
        assert!(!Cron::parse("30 12 * * 1-2").unwrap().matches(t));
        assert!(Cron::parse("*/15 * * * *").unwrap().matches(t));
        assert!(!Cron::parse("*/7 * * * *").unwrap().matches(t));
        assert!(Cron::parse("15 30 12 * * *").unwrap().matches(t));
        assert!(Cron::parse("*/5 * * * * *").unwrap().matches(t));
        assert!(!Cron::parse("*/4 * * * * *").unwrap().matches(t));
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?}");
        }
    }
}

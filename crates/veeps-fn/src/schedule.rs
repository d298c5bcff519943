//! Schedules, as EventBridge's: `rate(5 minutes)` or `cron(0 12 * * ? *)` (six fields:
//! minutes, hours, day of month, month, day of week `1-7` or `SUN-SAT`, year; `?` in one of
//! the day fields), in UTC. Each firing queues an asynchronous invocation of its function
//! (durably, so retries and dead letters apply) with EventBridge's scheduled event, or the
//! schedule's own input. The last firing is recorded: a restart neither repeats a firing
//! nor catches up the ones missed while veeps was down (EventBridge does not either).

use crate::Functions;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

const K_SCHEDULE: &str = "fn/schedule/";

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every this many minutes.
    Rate(u64),
    /// At the minutes the fields match.
    Cron(Box<Cron>),
}

/// The six fields, as sets of the values each matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    /// `None`: `?`.
    dom: Option<BTreeSet<u32>>,
    months: BTreeSet<u32>,
    /// 1 = Sunday; `None`: `?`.
    dow: Option<BTreeSet<u32>>,
    years: BTreeSet<u32>,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(s: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<BTreeSet<u32>, String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(lo + i as u32);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| format!("{what}: \"{v}\" is not from {lo} to {hi}"))
    };
    let mut out = BTreeSet::new();
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{what}: step \"{st}\" is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a > b {
            return Err(format!("{what}: the range {range} runs backwards"));
        }
        out.extend((a..=b).step_by(step as usize));
    }
    Ok(out)
}

/// Parses `rate(...)` or `cron(...)`.
pub fn parse(expr: &str) -> Result<Expr, String> {
    let bad = |why: String| {
        format!(
            "schedule \"{expr}\": {why}; write like \"rate(5 minutes)\" or \"cron(0 12 * * ? *)\""
        )
    };
    if let Some(inner) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        let (n, unit) = inner
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("a rate is a number and a unit".into()))?;
        let n: u64 = n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(format!("\"{n}\" is not a positive whole number")))?;
        let per = match (unit, n == 1) {
            ("minute", true) | ("minutes", false) => 1,
            ("hour", true) | ("hours", false) => 60,
            ("day", true) | ("days", false) => 1440,
            _ => {
                return Err(bad(format!(
                    "the unit \"{unit}\" is not one of minute(s), hour(s), day(s) (singular for 1, plural otherwise)"
                )))
            }
        };
        return Ok(Expr::Rate(n * per));
    }
    let inner = expr
        .strip_prefix("cron(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad("it is neither rate(...) nor cron(...)".into()))?;
    let f: Vec<&str> = inner.split_whitespace().collect();
    if f.len() != 6 {
        return Err(bad(format!(
            "a cron expression has 6 fields, this one {}",
            f.len()
        )));
    }
    if f.iter().any(|x| x.contains(['L', 'W', '#'])) {
        return Err(bad("L, W and # are not supported".into()));
    }
    let q = |s: &str| s == "?";
    if q(f[2]) == q(f[4]) {
        return Err(bad(
            "one of day-of-month and day-of-week must be ?, and only one".into(),
        ));
    }
    Ok(Expr::Cron(Box::new(Cron {
        minutes: field(f[0], 0, 59, &[], "minutes").map_err(bad)?,
        hours: field(f[1], 0, 23, &[], "hours").map_err(bad)?,
        dom: (!q(f[2]))
            .then(|| field(f[2], 1, 31, &[], "day of month"))
            .transpose()
            .map_err(bad)?,
        months: field(f[3], 1, 12, MONTHS, "month").map_err(bad)?,
        dow: (!q(f[4]))
            .then(|| field(f[4], 1, 7, DAYS, "day of week"))
            .transpose()
            .map_err(bad)?,
        years: field(f[5], 1970, 2199, &[], "year").map_err(bad)?,
    })))
}

impl Cron {
    fn matches(&self, t: time::OffsetDateTime) -> bool {
        let dow = t.weekday().number_from_sunday() as u32;
        self.minutes.contains(&(t.minute() as u32))
            && self.hours.contains(&(t.hour() as u32))
            && self.months.contains(&(t.month() as u32))
            && self.years.contains(&(t.year() as u32))
            && self
                .dom
                .as_ref()
                .is_none_or(|d| d.contains(&(t.day() as u32)))
            && self.dow.as_ref().is_none_or(|d| d.contains(&dow))
    }

    /// The first minute after `after` (Unix seconds) it matches, within ten years.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut m = after.div_euclid(60) * 60 + 60;
        let end = after + 10 * 366 * 86_400;
        while m < end {
            let t = time::OffsetDateTime::from_unix_timestamp(m).ok()?;
            // Skip whole days, then whole hours, that cannot match.
            let day_ok = self.months.contains(&(t.month() as u32))
                && self.years.contains(&(t.year() as u32))
                && self
                    .dom
                    .as_ref()
                    .is_none_or(|d| d.contains(&(t.day() as u32)))
                && self
                    .dow
                    .as_ref()
                    .is_none_or(|d| d.contains(&(t.weekday().number_from_sunday() as u32)));
            if !day_ok {
                m = (m.div_euclid(86_400) + 1) * 86_400;
                continue;
            }
            if !self.hours.contains(&(t.hour() as u32)) {
                m = (m.div_euclid(3600) + 1) * 3600;
                continue;
            }
            if self.matches(t) {
                return Some(m);
            }
            m += 60;
        }
        None
    }
}

/// A schedule as veeps keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleRecord {
    /// The environment.
    pub env: String,
    /// Its name.
    pub name: String,
    /// `rate(...)` or `cron(...)`.
    pub expression: String,
    /// The function it invokes.
    pub function: String,
    /// The event (JSON), instead of EventBridge's scheduled event.
    pub input: Option<String>,
    /// Off: it does not fire.
    pub enabled: bool,
    /// When it fired last, or was made (ms).
    pub last: i64,
}

impl Functions {
    /// Records a schedule (its last firing kept when it existed).
    pub fn put_schedule(&self, mut s: ScheduleRecord) -> Result<(), String> {
        parse(&s.expression)?;
        let k = format!("{K_SCHEDULE}{}/{}", s.env, s.name);
        if let Ok(Some(prior)) = self.store.kv_get::<ScheduleRecord>(&k) {
            s.last = prior.last;
        }
        self.store.kv_put(&k, &s).map_err(|e| e.to_string())
    }

    /// Removes a schedule.
    pub fn delete_schedule(&self, env: &str, name: &str) -> Result<(), String> {
        self.store
            .kv_delete(&format!("{K_SCHEDULE}{env}/{name}"))
            .map_err(|e| e.to_string())
    }

    /// A schedule.
    pub fn schedule(&self, env: &str, name: &str) -> Option<ScheduleRecord> {
        self.store
            .kv_get(&format!("{K_SCHEDULE}{env}/{name}"))
            .ok()
            .flatten()
    }

    /// Fires the schedules that are due (called every second).
    pub(crate) fn fire_schedules(&self) {
        let now = veeps_obs::service::now();
        let minute = self.opts.minute.as_millis().max(1) as i64;
        for (k, mut s) in self
            .store
            .kv_scan::<ScheduleRecord>(K_SCHEDULE)
            .unwrap_or_default()
        {
            if !s.enabled {
                continue;
            }
            let due = match parse(&s.expression) {
                Ok(Expr::Rate(n)) => s.last + n as i64 * minute,
                Ok(Expr::Cron(c)) => match c.next_after(s.last / 1000) {
                    Some(t) => t * 1000,
                    None => continue,
                },
                Err(_) => continue,
            };
            if now < due {
                continue;
            }
            let event = s.input.clone().unwrap_or_else(|| {
                serde_json::json!({
                    "version": "0",
                    "id": crate::uuid4(),
                    "detail-type": "Scheduled Event",
                    "source": "aws.events",
                    "account": "000000000000",
                    "time": crate::rfc3339_now(),
                    "region": "us-east-1",
                    "resources": [format!("arn:veeps:events:{}:rule/{}", s.env, s.name)],
                    "detail": {},
                })
                .to_string()
            });
            // Recorded first: a crash between the two skips one firing rather than
            // repeating it. Missed firings are not caught up.
            s.last = now.max(due);
            if self.store.kv_put(&k, &s).is_err() {
                continue;
            }
            if self.get(&s.function).is_some() {
                if let Err(e) = self.enqueue(&s.function, Bytes::from(event)) {
                    tracing::warn!(schedule = %s.name, function = %s.function, error = %e, "a schedule could not queue its invocation");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn rates_and_crons_parse_as_eventbridge_reads_them() {
        assert_eq!(parse("rate(1 minute)").unwrap(), Expr::Rate(1));
        assert_eq!(parse("rate(2 hours)").unwrap(), Expr::Rate(120));
        assert_eq!(parse("rate(3 days)").unwrap(), Expr::Rate(4320));
        for bad in [
            "rate(1 minutes)",
            "rate(2 minute)",
            "rate(0 minutes)",
            "rate(5 seconds)",
            "cron(0 12 * * * *)",
            "cron(0 12 ? * ? *)",
            "cron(0 12 * *)",
            "cron(0 25 * * ? *)",
            "cron(0 12 L * ? *)",
            "every day",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let Expr::Cron(c) = parse("cron(0 12 * * ? *)").unwrap() else {
            panic!()
        };
        assert_eq!(
            c.next_after(at("2026-12-01T11:59:00Z")),
            Some(at("2026-12-01T12:00:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-12-01T12:00:00Z")),
            Some(at("2026-12-02T12:00:00Z"))
        );
        // Weekdays at 08:15 (MON-FRI: 2-6); 2026-12-05 is a Saturday.
        let Expr::Cron(c) = parse("cron(15 8 ? * MON-FRI *)").unwrap() else {
            panic!()
        };
        assert_eq!(
            c.next_after(at("2026-12-04T09:00:00Z")),
            Some(at("2026-12-07T08:15:00Z"))
        );
        // Every 10 minutes on the first of the month, in 2027 only.
        let Expr::Cron(c) = parse("cron(0/10 * 1 * ? 2027)").unwrap() else {
            panic!()
        };
        assert_eq!(
            c.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            c.next_after(at("2027-01-01T00:00:00Z")),
            Some(at("2027-01-01T00:10:00Z"))
        );
        let Expr::Cron(c) = parse("cron(0 0 29 FEB ? 2027)").unwrap() else {
            panic!()
        };
        assert_eq!(c.next_after(at("2026-12-01T00:00:00Z")), None);
    }
}

//! Date and time functions, on RFC 3339 timestamps as Terraform's.

use super::*;
use ::time::format_description::well_known::Rfc3339;
use ::time::{Duration, OffsetDateTime, UtcOffset};

fn timestamp(c: &Call, i: usize) -> Result<OffsetDateTime, Diagnostic> {
    let s = c.str(i)?;
    OffsetDateTime::parse(&s, &Rfc3339).map_err(|e| {
        c.arg_err(
            i,
            format!("{s:?} is not an RFC 3339 timestamp (like 2024-01-02T15:04:05Z): {e}"),
        )
    })
}

/// As Go's `time.RFC3339`: whole seconds, `Z` for UTC.
/// Now, as `timestamp()` gives it (RFC 3339, UTC, whole seconds).
pub fn now() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    format!("{base}{}", offset(t.offset(), true, true))
}

/// `+07:00` (`colon`), `+0700`, or `Z` for UTC (`zulu`).
fn offset(o: UtcOffset, colon: bool, zulu: bool) -> String {
    if zulu && o.is_utc() {
        return "Z".into();
    }
    let (h, m, _) = o.as_hms();
    let sign = if o.is_negative() { '-' } else { '+' };
    let sep = if colon { ":" } else { "" };
    format!("{sign}{:02}{sep}{:02}", h.unsigned_abs(), m.unsigned_abs())
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `formatdate(spec, timestamp)`, with Terraform's verbs (`YYYY`, `MMM`, `DD`, `EEEE`,
/// `hh`, `HH`, `AA`, `mm`, `ss`, `ZZZZZ`, ...), quoted literals and other characters as
/// they are.
pub(super) fn formatdate(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let spec: Vec<char> = c.str(0)?.chars().collect();
    let t = timestamp(c, 1)?;
    let mut out = String::new();
    let mut i = 0;
    while i < spec.len() {
        let ch = spec[i];
        if ch == '\'' {
            // 'literal', and '' for a quote.
            if spec.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let Some(end) = spec[i + 1..].iter().position(|x| *x == '\'') else {
                return Err(c.arg_err(0, "a quoted literal is not closed"));
            };
            out.extend(&spec[i + 1..i + 1 + end]);
            i += end + 2;
            continue;
        }
        if !ch.is_ascii_alphabetic() {
            out.push(ch);
            i += 1;
            continue;
        }
        let n = spec[i..].iter().take_while(|x| **x == ch).count();
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        let month = MONTHS[usize::from(u8::from(t.month())) - 1];
        let weekday = format!("{:?}", t.weekday());
        let piece = match (ch, n) {
            ('Y', 4) => format!("{:04}", t.year()),
            ('Y', 2) => format!("{:02}", t.year().rem_euclid(100)),
            ('M', 1) => u8::from(t.month()).to_string(),
            ('M', 2) => format!("{:02}", u8::from(t.month())),
            ('M', 3) => month[..3].to_string(),
            ('M', 4) => month.to_string(),
            ('D', 1) => t.day().to_string(),
            ('D', 2) => format!("{:02}", t.day()),
            ('E', 3) => weekday[..3].to_string(),
            ('E', 4) => weekday,
            ('h', 1) => t.hour().to_string(),
            ('h', 2) => format!("{:02}", t.hour()),
            ('H', 1) => hour12.to_string(),
            ('H', 2) => format!("{hour12:02}"),
            ('A', 2) => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
            ('a', 2) => if t.hour() < 12 { "am" } else { "pm" }.to_string(),
            ('m', 1) => t.minute().to_string(),
            ('m', 2) => format!("{:02}", t.minute()),
            ('s', 1) => t.second().to_string(),
            ('s', 2) => format!("{:02}", t.second()),
            ('Z', 1) => offset(t.offset(), true, true),
            ('Z', 3) if t.offset().is_utc() => "UTC".to_string(),
            ('Z', 3) | ('Z', 4) => offset(t.offset(), false, false),
            ('Z', 5) => offset(t.offset(), true, false),
            _ => {
                return Err(c.arg_err(
                    0,
                    format!(
                        "invalid date format verb {:?}: quote literal letters, like 'T'",
                        spec[i..i + n].iter().collect::<String>()
                    ),
                ))
            }
        };
        out.push_str(&piece);
        i += n;
    }
    Ok(Value::String(out))
}

/// A duration in Go's syntax (`1h30m`, `-10s`, `1.5h`, `250ms`).
fn duration(c: &Call, i: usize) -> Result<Duration, Diagnostic> {
    let s = c.str(i)?;
    let bad = || {
        c.arg_err(
            i,
            format!("{s:?} is not a duration (like \"1h30m\" or \"-10s\")"),
        )
    };
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(&s)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|ch: char| ch.is_ascii_digit() || ch == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * nanos;
        rest = &rest[unit_len..];
    }
    let d = Duration::nanoseconds(total as i64);
    Ok(if neg { -d } else { d })
}

/// `timeadd(timestamp, duration)`: in the timestamp's own offset.
pub(super) fn timeadd(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let t = timestamp(c, 0)?;
    let d = duration(c, 1)?;
    let sum = t
        .checked_add(d)
        .ok_or_else(|| c.err("the result is out of range"))?;
    Ok(Value::String(rfc3339(sum)))
}

/// `timecmp(a, b)`: -1, 0 or 1 as instant `a` is before, at or after `b`.
pub(super) fn timecmp(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(2, 2)?;
    let (a, b) = (timestamp(c, 0)?, timestamp(c, 1)?);
    Ok(Value::from(match a.cmp(&b) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }))
}

/// `timestamp()` and `plantimestamp()`: now, in UTC, in RFC 3339 with whole seconds.
pub(super) fn timestamp_now(c: &Call) -> Result<Value, Diagnostic> {
    c.arity(0, 0)?;
    if c.name == "plantimestamp" {
        if let Some(t) = c.ctx.scope.plan_time() {
            return Ok(Value::String(t.to_string()));
        }
    }
    if c.name == "timestamp" && !c.ctx.scope.applying() {
        return Ok(Value::Unknown);
    }
    Ok(Value::String(rfc3339(OffsetDateTime::now_utc())))
}

//! Alarms with CloudWatch's semantics: a statistic over a period, M breaching datapoints
//! out of the last N, and a treatment of missing data.

use serde::{Deserialize, Serialize};

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    /// Not breaching.
    #[serde(rename = "OK")]
    Ok,
    /// Breaching.
    #[serde(rename = "ALARM")]
    Alarm,
    /// Not enough data to tell.
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl std::fmt::Display for AlarmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        })
    }
}

/// How a datapoint is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// `>`.
    GreaterThanThreshold,
    /// `>=`.
    GreaterThanOrEqualToThreshold,
    /// `<`.
    LessThanThreshold,
    /// `<=`.
    LessThanOrEqualToThreshold,
}

impl Comparison {
    /// Parses CloudWatch's names (or `>`, `>=`, `<`, `<=`).
    pub fn parse(s: &str) -> Option<Comparison> {
        Some(match s {
            "GreaterThanThreshold" | ">" => Comparison::GreaterThanThreshold,
            "GreaterThanOrEqualToThreshold" | ">=" => Comparison::GreaterThanOrEqualToThreshold,
            "LessThanThreshold" | "<" => Comparison::LessThanThreshold,
            "LessThanOrEqualToThreshold" | "<=" => Comparison::LessThanOrEqualToThreshold,
            _ => return None,
        })
    }
    fn breaches(self, v: f64, t: f64) -> bool {
        match self {
            Comparison::GreaterThanThreshold => v > t,
            Comparison::GreaterThanOrEqualToThreshold => v >= t,
            Comparison::LessThanThreshold => v < t,
            Comparison::LessThanOrEqualToThreshold => v <= t,
        }
    }
}

/// What a missing datapoint counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissingData {
    /// Not considered; all missing gives INSUFFICIENT_DATA.
    #[serde(rename = "missing")]
    Missing,
    /// Not considered; all missing keeps the current state.
    #[serde(rename = "ignore")]
    Ignore,
    /// Counts as breaching.
    #[serde(rename = "breaching")]
    Breaching,
    /// Counts as not breaching.
    #[serde(rename = "notBreaching")]
    NotBreaching,
}

impl MissingData {
    /// Parses `missing`, `ignore`, `breaching`, `notBreaching` (or `not_breaching`).
    pub fn parse(s: &str) -> Option<MissingData> {
        Some(match s {
            "missing" => MissingData::Missing,
            "ignore" => MissingData::Ignore,
            "breaching" => MissingData::Breaching,
            "notBreaching" | "not_breaching" => MissingData::NotBreaching,
            _ => return None,
        })
    }
}

/// The decision for the last N datapoints (oldest first; `None` = missing), with the reason.
pub fn evaluate(
    points: &[Option<f64>],
    m: usize,
    cmp: Comparison,
    threshold: f64,
    missing: MissingData,
    current: AlarmState,
) -> (AlarmState, String) {
    let n = points.len();
    let mut present = 0;
    let mut breaching = 0;
    for p in points {
        match (p, missing) {
            (Some(v), _) => {
                present += 1;
                if cmp.breaches(*v, threshold) {
                    breaching += 1;
                }
            }
            (None, MissingData::Breaching) => {
                present += 1;
                breaching += 1;
            }
            (None, MissingData::NotBreaching) => present += 1,
            (None, _) => {}
        }
    }
    let shown: Vec<String> = points
        .iter()
        .map(|p| {
            p.map(|v| format!("{v}"))
                .unwrap_or_else(|| "missing".into())
        })
        .collect();
    let why = format!(
        "[{}] against {threshold} ({breaching} of {n} breaching, {m} needed)",
        shown.join(", ")
    );
    if present == 0 {
        return match missing {
            MissingData::Ignore => (current, format!("no data; state kept: {why}")),
            _ => (AlarmState::InsufficientData, format!("no data: {why}")),
        };
    }
    if breaching >= m {
        return (AlarmState::Alarm, format!("threshold crossed: {why}"));
    }
    if present - breaching > n - m || present == n {
        return (AlarmState::Ok, format!("threshold not crossed: {why}"));
    }
    // Too few datapoints to decide either way.
    let state = if current == AlarmState::InsufficientData && missing == MissingData::Missing {
        AlarmState::InsufficientData
    } else {
        current
    };
    (
        state,
        format!("not enough data to decide; state kept: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlarmState::*;
    use MissingData as M;

    const GT: Comparison = Comparison::GreaterThanThreshold;

    #[test]
    fn m_of_n() {
        assert_eq!(
            evaluate(
                &[Some(95.0), Some(10.0), Some(91.0)],
                2,
                GT,
                90.0,
                M::Missing,
                Ok
            )
            .0,
            Alarm
        );
        assert_eq!(
            evaluate(
                &[Some(95.0), Some(10.0), Some(11.0)],
                2,
                GT,
                90.0,
                M::Missing,
                Alarm
            )
            .0,
            Ok
        );
        assert_eq!(
            evaluate(&[Some(90.0)], 1, GT, 90.0, M::Missing, Ok).0,
            Ok,
            "equal is not greater"
        );
        assert_eq!(
            evaluate(
                &[Some(90.0)],
                1,
                Comparison::GreaterThanOrEqualToThreshold,
                90.0,
                M::Missing,
                Ok
            )
            .0,
            Alarm
        );
        assert_eq!(
            evaluate(
                &[Some(50.0)],
                1,
                Comparison::LessThanThreshold,
                100.0,
                M::Missing,
                Ok
            )
            .0,
            Alarm
        );
    }

    #[test]
    fn missing_data_treatments() {
        let none = [None, None, None];
        assert_eq!(
            evaluate(&none, 2, GT, 90.0, M::Missing, Ok).0,
            InsufficientData
        );
        assert_eq!(
            evaluate(&none, 2, GT, 90.0, M::Ignore, Alarm).0,
            Alarm,
            "ignore keeps the state"
        );
        assert_eq!(evaluate(&none, 2, GT, 90.0, M::Breaching, Ok).0, Alarm);
        assert_eq!(evaluate(&none, 2, GT, 90.0, M::NotBreaching, Alarm).0, Ok);
        let some = [Some(95.0), None, None];
        assert_eq!(
            evaluate(&some, 2, GT, 90.0, M::Breaching, Ok).0,
            Alarm,
            "missing counts as breaching"
        );
        assert_eq!(
            evaluate(&some, 2, GT, 90.0, M::NotBreaching, Alarm).0,
            Ok,
            "missing counts as fine"
        );
        assert_eq!(
            evaluate(&some, 2, GT, 90.0, M::Missing, Ok).0,
            Ok,
            "undecided: the state is kept"
        );
        assert_eq!(
            evaluate(&some, 2, GT, 90.0, M::Missing, InsufficientData).0,
            InsufficientData
        );
        assert_eq!(
            evaluate(
                &[Some(1.0), Some(2.0), None],
                2,
                GT,
                90.0,
                M::Missing,
                Alarm
            )
            .0,
            Ok,
            "two fine of three: ALARM is out of reach"
        );
    }
}

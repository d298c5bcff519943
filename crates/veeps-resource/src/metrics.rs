//! Metric samples and the collectors that produce them: the contract between a part that
//! runs something and the metrics store (`veeps-obs`), which asks every collector for its
//! samples each collection interval.

use std::collections::BTreeMap;

/// Label names to values; every series carries `env`.
pub type Labels = BTreeMap<String, String>;

/// One sample a collector produced.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels (include `env`).
    pub labels: Labels,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A sample with labels.
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }
}

/// Produces samples when asked, every collection interval.
pub trait Collector: Send + Sync {
    /// Appends this interval's samples.
    fn collect(&self, out: &mut Vec<Sample>);
}

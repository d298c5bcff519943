//! Built-in resource types that need no other part of veeps.

mod environment;
mod local_file;
pub mod part;
mod random_id;
mod random_password;
mod time_sleep;

pub use environment::EnvironmentData;
pub use local_file::LocalFile;
pub use random_id::RandomId;
pub use random_password::RandomPassword;
pub use time_sleep::TimeSleep;

use veeps_resource::Registry;

/// Registers every built-in type.
pub fn register(r: &mut Registry) {
    r.register(RandomPassword::new());
    r.register(RandomId::new());
    r.register(LocalFile::new());
    r.register(TimeSleep::new());
    r.register_data(EnvironmentData::new());
}

/// Copies the settable attributes of `config` over `state` (for in-place updates).
pub(crate) fn merge_config(
    state: &veeps_lang::Value,
    config: &veeps_lang::Value,
) -> veeps_lang::Value {
    let mut out = state.as_object().cloned().unwrap_or_default();
    if let Some(c) = config.as_object() {
        for (k, v) in c {
            if !v.is_null() || !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    veeps_lang::Value::Object(out)
}

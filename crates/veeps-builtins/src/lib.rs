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

//! Compute: images, launch templates, auto scaling groups and scaling policies.
//!
//! [`image`] builds and stores images; [`group`] supervises groups of instances (each a
//! process confined by [`sandbox`] to its endpoint namespace, its [`cgroup`] and an
//! unprivileged user, held by its [`shim`], which outlives the control plane); [`policy`] scales them; [`resources`] are the resource types.

pub use veeps_sys::cgroup;
pub use veeps_sys::confine as sandbox;
pub mod egress;
pub mod group;
pub mod http;
pub mod image;
pub mod part;
pub mod policy;
pub mod resources;
pub mod shim;
pub mod update;

pub use group::Compute;

/// Bytes used by the files under `p`.
pub fn disk_used(p: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path, depth: u32) -> u64 {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if md.is_file() {
            return md.len();
        }
        if !md.is_dir() || depth > 64 {
            return 0;
        }
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| walk(&e.path(), depth + 1))
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(p, 0)
}

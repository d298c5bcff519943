//! Resource limits through cgroups: v1 (`cpu`, `cpuacct`, `memory`, `pids` hierarchies, as
//! on this machine) or v2 (one unified hierarchy), found at start.

use std::path::{Path, PathBuf};

/// Which cgroup interface the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// Separate hierarchies under `/sys/fs/cgroup/{cpu,cpuacct,memory,pids}`.
    V1,
    /// The unified hierarchy at `/sys/fs/cgroup`.
    V2,
    /// None usable (not root, or no cgroup filesystem): limits are not enforced.
    None(String),
}

/// The limits of one instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// CPUs (0.5 is half of one).
    pub cpu: f64,
    /// Bytes of memory.
    pub memory: u64,
    /// Most processes and threads.
    pub pids: u64,
}

const ROOT: &str = "/sys/fs/cgroup";
const PERIOD_US: u64 = 100_000;

/// Detects the host's cgroup interface (and whether we may write to it).
pub fn detect() -> Flavor {
    detect_at(Path::new(ROOT))
}

fn detect_at(root: &Path) -> Flavor {
    if root.join("cgroup.controllers").exists() {
        let probe = root.join(format!("veeps-probe-{}", std::process::id()));
        return match std::fs::create_dir(&probe) {
            Ok(()) => {
                let _ = std::fs::remove_dir(&probe);
                Flavor::V2
            }
            Err(e) => Flavor::None(format!("cannot create cgroups in {}: {e}", root.display())),
        };
    }
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        if !root.join(c).join("cgroup.procs").exists() {
            return Flavor::None(format!("no {c} cgroup hierarchy under {}", root.display()));
        }
    }
    let probe = root
        .join("pids")
        .join(format!("veeps-probe-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Flavor::V1
        }
        Err(e) => Flavor::None(format!("cannot create cgroups in {}: {e}", root.display())),
    }
}

/// One instance's cgroup (a directory per hierarchy on v1, one on v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    flavor: Flavor,
    /// `PREFIX/NAME`, relative to each hierarchy.
    rel: PathBuf,
}

fn write(p: &Path, v: &str) -> std::io::Result<()> {
    std::fs::write(p, v).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

impl Cgroup {
    /// The cgroup `prefix/name` (not created yet).
    pub fn new(flavor: &Flavor, prefix: &str, name: &str) -> Cgroup {
        Cgroup {
            flavor: flavor.clone(),
            rel: Path::new(prefix).join(name),
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        match self.flavor {
            Flavor::V1 => ["cpu", "cpuacct", "memory", "pids"]
                .iter()
                .map(|c| Path::new(ROOT).join(c).join(&self.rel))
                .collect(),
            Flavor::V2 => vec![Path::new(ROOT).join(&self.rel)],
            Flavor::None(_) => vec![],
        }
    }

    fn dir(&self, controller: &str) -> PathBuf {
        match self.flavor {
            Flavor::V1 => Path::new(ROOT).join(controller).join(&self.rel),
            _ => Path::new(ROOT).join(&self.rel),
        }
    }

    /// Creates it with these limits (or updates them). Idempotent.
    pub fn create(&self, l: Limits) -> std::io::Result<()> {
        match self.flavor {
            Flavor::None(_) => return Ok(()),
            Flavor::V2 => {
                // Controllers must be enabled in the parent for its children.
                if let Some(parent) = Path::new(ROOT).join(&self.rel).parent() {
                    std::fs::create_dir_all(parent)?;
                    let _ = write(
                        &Path::new(ROOT).join("cgroup.subtree_control"),
                        "+cpu +memory +pids",
                    );
                    let _ = write(&parent.join("cgroup.subtree_control"), "+cpu +memory +pids");
                }
            }
            Flavor::V1 => {}
        }
        for d in self.dirs() {
            std::fs::create_dir_all(&d)?;
        }
        let quota = ((l.cpu * PERIOD_US as f64) as u64).max(1000);
        match self.flavor {
            Flavor::V1 => {
                write(
                    &self.dir("cpu").join("cpu.cfs_period_us"),
                    &PERIOD_US.to_string(),
                )?;
                write(
                    &self.dir("cpu").join("cpu.cfs_quota_us"),
                    &quota.to_string(),
                )?;
                let m = self.dir("memory");
                // Lowering below current use fails with EBUSY; a restart fixes that.
                let _ = write(&m.join("memory.memsw.limit_in_bytes"), "-1");
                write(&m.join("memory.limit_in_bytes"), &l.memory.to_string())?;
                // Swap would let a memory hog live on: limit memory plus swap too.
                let _ = write(
                    &m.join("memory.memsw.limit_in_bytes"),
                    &l.memory.to_string(),
                );
                write(&self.dir("pids").join("pids.max"), &l.pids.to_string())?;
            }
            Flavor::V2 => {
                let d = self.dir("");
                write(&d.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
                write(&d.join("memory.max"), &l.memory.to_string())?;
                let _ = write(&d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &l.pids.to_string())?;
            }
            Flavor::None(_) => {}
        }
        Ok(())
    }

    /// The `cgroup.procs` files a new process writes its pid to, one per hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Pids of every process in it.
    pub fn pids(&self) -> Vec<i32> {
        let Some(d) = self.dirs().into_iter().next_back() else {
            return vec![];
        };
        std::fs::read_to_string(d.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process in it (SIGKILL), waiting briefly until it is empty.
    pub fn kill_all(&self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                // SAFETY: kill(2) with a pid read from our own cgroup; no memory is touched.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Kills what is left and removes it.
    pub fn remove(&self) {
        self.kill_all();
        for d in self.dirs() {
            let _ = std::fs::remove_dir(&d);
            // The prefix's directory goes with its last instance.
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    /// CPU time used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> Option<u64> {
        match self.flavor {
            Flavor::V1 => std::fs::read_to_string(self.dir("cpuacct").join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok(),
            Flavor::V2 => std::fs::read_to_string(self.dir("").join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000),
            Flavor::None(_) => None,
        }
    }

    /// Memory in use, in bytes (without the page cache where the kernel says).
    pub fn memory_bytes(&self) -> Option<u64> {
        let (file, stat) = match self.flavor {
            Flavor::V1 => (
                self.dir("memory").join("memory.usage_in_bytes"),
                (
                    "total_inactive_file ",
                    self.dir("memory").join("memory.stat"),
                ),
            ),
            Flavor::V2 => (
                self.dir("").join("memory.current"),
                ("inactive_file ", self.dir("").join("memory.stat")),
            ),
            Flavor::None(_) => return None,
        };
        let used: u64 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let inactive = std::fs::read_to_string(stat.1)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(stat.0))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Some(used.saturating_sub(inactive))
    }

    /// The most memory it has used at once, in bytes (v1 `max_usage_in_bytes`, v2 `peak`).
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let file = match self.flavor {
            Flavor::V1 => self.dir("memory").join("memory.max_usage_in_bytes"),
            Flavor::V2 => self.dir("").join("memory.peak"),
            Flavor::None(_) => return None,
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// How many times the memory limit killed something (v1 `oom_control`, v2 events).
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.flavor {
            Flavor::V1 => (self.dir("memory").join("memory.oom_control"), "oom_kill "),
            Flavor::V2 => (self.dir("").join("memory.events"), "oom_kill "),
            Flavor::None(_) => return 0,
        };
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v1_and_v2_layouts_and_refuses_what_it_cannot_write() {
        let d = tempfile::tempdir().unwrap();
        for c in ["cpu", "cpuacct", "memory", "pids"] {
            std::fs::create_dir_all(d.path().join(c)).unwrap();
            std::fs::write(d.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        assert_eq!(detect_at(d.path()), Flavor::V1);
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(detect_at(d.path()), Flavor::V2);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(detect_at(empty.path()), Flavor::None(_)));
    }
}

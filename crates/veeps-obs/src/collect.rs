//! Collectors: what produces metrics every 10 s. Parts register their own.

use std::path::PathBuf;
use std::sync::Mutex;

pub use veeps_resource::metrics::{Collector, Sample};

/// The host: CPU, memory, disk (of the data directory) and network.
pub struct HostCollector {
    data_dir: PathBuf,
    host: String,
    last_cpu: Mutex<Option<(u64, u64)>>,
}

impl HostCollector {
    /// A collector for this host.
    pub fn new(data_dir: PathBuf) -> HostCollector {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        HostCollector {
            data_dir,
            host,
            last_cpu: Mutex::new(None),
        }
    }
}

impl Collector for HostCollector {
    fn collect(&self, out: &mut Vec<Sample>) {
        let l = [("env", "system"), ("host", self.host.as_str())];
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            if let Some(cpu) = stat.lines().next() {
                let v: Vec<u64> = cpu
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let total: u64 = v.iter().sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                let mut last = self.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((t0, i0)) = *last {
                    let dt = total.saturating_sub(t0);
                    if dt > 0 {
                        out.push(Sample::new(
                            "host_cpu_usage_percent",
                            &l,
                            100.0 * (1.0 - idle.saturating_sub(i0) as f64 / dt as f64),
                        ));
                    }
                }
                *last = Some((total, idle));
            }
        }
        if let Ok(mem) = std::fs::read_to_string("/proc/meminfo") {
            let get = |k: &str| {
                mem.lines()
                    .find(|l| l.starts_with(k))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|kb| kb * 1024.0)
            };
            if let (Some(total), Some(avail)) = (get("MemTotal:"), get("MemAvailable:")) {
                out.push(Sample::new("host_memory_total_bytes", &l, total));
                out.push(Sample::new("host_memory_available_bytes", &l, avail));
                out.push(Sample::new(
                    "host_memory_used_percent",
                    &l,
                    100.0 * (1.0 - avail / total),
                ));
            }
        }
        if let Some((total, free)) = disk(&self.data_dir) {
            out.push(Sample::new("host_disk_total_bytes", &l, total));
            out.push(Sample::new("host_disk_free_bytes", &l, free));
            out.push(Sample::new(
                "host_disk_used_percent",
                &l,
                100.0 * (1.0 - free / total.max(1.0)),
            ));
        }
        if let Ok(dev) = std::fs::read_to_string("/proc/net/dev") {
            let (mut rx, mut tx) = (0f64, 0f64);
            for line in dev.lines().skip(2) {
                let Some((name, rest)) = line.split_once(':') else {
                    continue;
                };
                if name.trim() == "lo" {
                    continue;
                }
                let v: Vec<f64> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                rx += v.first().copied().unwrap_or(0.0);
                tx += v.get(8).copied().unwrap_or(0.0);
            }
            out.push(Sample::new("host_network_receive_bytes_total", &l, rx));
            out.push(Sample::new("host_network_transmit_bytes_total", &l, tx));
        }
    }
}

/// Total and free bytes of the filesystem holding `p`.
pub fn disk(p: &std::path::Path) -> Option<(f64, f64)> {
    veeps_sys::proc::disk_space(p).map(|(t, f)| (t as f64, f as f64))
}

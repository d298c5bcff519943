//! Egress allow lists for builds. A build has no network; one with an allow list runs in a
//! network namespace of its own that has only loopback, where veeps listens on each
//! allowed `host:port` and relays connections to the real one from the host. Names on the
//! list resolve (through the build's own `/etc/hosts`) to loopback addresses of that
//! namespace; nothing else resolves, and no other address is reachable: not by TCP, UDP,
//! DNS or ICMP, since there is no route out.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most entries in one allow list.
pub const MAX_ENTRIES: usize = 64;
/// Most connections open at once through one build's allow list.
pub const MAX_CONNECTIONS: usize = 64;
/// How long connecting to an allowed destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allowed {
    /// A DNS name or an IP address.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `host:port` (`[v6]:port` for IPv6 addresses).
pub fn parse(s: &str) -> Result<Allowed, String> {
    let bad = |why: &str| format!("\"{s}\": {why}; give HOST:PORT, like \"deb.debian.org:443\"");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(|| bad("no port"))?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or_else(|| bad("no port"))?
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    if host.parse::<IpAddr>().is_err() {
        let ok = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            return Err(bad("the host is neither a DNS name nor an IP address"));
        }
    }
    Ok(Allowed {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Parses a whole list: duplicates merge, and it has at most [`MAX_ENTRIES`].
pub fn parse_all(list: &[String]) -> Result<Vec<Allowed>, String> {
    if list.len() > MAX_ENTRIES {
        return Err(format!(
            "{} entries; an egress allow list has at most {MAX_ENTRIES}",
            list.len()
        ));
    }
    let mut out: Vec<Allowed> = list.iter().map(|s| parse(s)).collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Where in the build's namespace each allowed destination is reached: IP addresses at
/// themselves, `localhost` at 127.0.0.1, other names at 127.0.1.N (in the order given).
fn local_addrs(allowed: &[Allowed]) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    let mut next = 1u8;
    for a in allowed {
        if out.contains_key(&a.host) {
            continue;
        }
        let ip = if let Ok(ip) = a.host.parse::<IpAddr>() {
            ip
        } else if a.host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 1, next));
            next = next.wrapping_add(1);
            ip
        };
        out.insert(a.host.clone(), ip);
    }
    out
}

/// The build's `/etc/hosts`: loopback, and each allowed name.
pub fn hosts_file(allowed: &[Allowed]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    for (host, ip) in local_addrs(allowed) {
        if host != "localhost" && host.parse::<IpAddr>().is_err() {
            s.push_str(&format!("{ip}\t{host}\n"));
        }
    }
    s
}

async fn run(args: &[&str]) -> std::io::Result<()> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Deletes the build namespaces a previous run of veeps left (it was killed mid-build).
pub fn sweep(prefix: &str) {
    let stem = format!("{prefix}bld-");
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&stem) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &name])
                .status();
        }
    }
}

/// Connections relayed to one destination, and bytes each way.
#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// A build's namespace with its relays; dropping it stops them and deletes the namespace.
pub struct Gate {
    ns: String,
    hosts: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counts: Vec<(String, Arc<Counts>)>,
}

impl Gate {
    /// Makes namespace `ns` (loopback only), listens in it on each allowed destination and
    /// writes its hosts file into `dir`.
    pub async fn open(ns: &str, allowed: &[Allowed], dir: &Path) -> std::io::Result<Gate> {
        let _ = run(&["netns", "del", ns]).await;
        run(&["netns", "add", ns]).await?;
        let mut gate = Gate {
            ns: ns.to_string(),
            hosts: dir.join("hosts"),
            tasks: vec![],
            counts: vec![],
        };
        run(&["-n", ns, "link", "set", "lo", "up"]).await?;
        let addrs = local_addrs(allowed);
        for ip in addrs.values() {
            if !ip.is_loopback() {
                let cidr = match ip {
                    IpAddr::V4(_) => format!("{ip}/32"),
                    IpAddr::V6(_) => format!("{ip}/128"),
                };
                run(&["-n", ns, "addr", "add", &cidr, "dev", "lo"]).await?;
            }
        }
        std::fs::write(&gate.hosts, hosts_file(allowed))?;
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut bound: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for a in allowed {
            let local = SocketAddr::new(addrs[&a.host], a.port);
            // `localhost:P` and `127.0.0.1:P` are one place in the namespace.
            if let Some(&i) = bound.get(&local) {
                gate.counts[i].0.push_str(&format!(" = {a}"));
                continue;
            }
            bound.insert(local, gate.counts.len());
            let listener = veeps_sys::netns::in_netns(ns, move || {
                let l = std::net::TcpListener::bind(local)?;
                l.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(l)
            })??;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let counts = Arc::new(Counts::default());
            gate.counts.push((a.to_string(), counts.clone()));
            let (a, permits) = (a.clone(), permits.clone());
            gate.tasks.push(tokio::spawn(async move {
                relay(listener, a, counts, permits).await;
            }));
        }
        Ok(gate)
    }

    /// The namespace builds run in.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    /// The hosts file to mount on the build's `/etc/hosts`.
    pub fn hosts(&self) -> &Path {
        &self.hosts
    }

    /// One line per destination: connections and bytes.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (a, c) in &self.counts {
            s.push_str(&format!(
                "egress {a}: {} connections ({} refused: more than {MAX_CONNECTIONS} at once or unreachable), {} bytes out, {} bytes in\n",
                c.connections.load(Ordering::Relaxed),
                c.refused.load(Ordering::Relaxed),
                c.sent.load(Ordering::Relaxed),
                c.received.load(Ordering::Relaxed),
            ));
        }
        s
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn relay(
    listener: tokio::net::TcpListener,
    to: Allowed,
    counts: Arc<Counts>,
    permits: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (to, counts) = (to.clone(), counts.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let target = (to.host.as_str(), to.port);
            let out =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await;
            let Ok(Ok(mut out)) = out else {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            counts.connections.fetch_add(1, Ordering::Relaxed);
            if let Ok((sent, received)) =
                tokio::io::copy_bidirectional(&mut inbound, &mut out).await
            {
                counts.sent.fetch_add(sent, Ordering::Relaxed);
                counts.received.fetch_add(received, Ordering::Relaxed);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_parse_strictly() {
        assert_eq!(
            parse("Deb.Debian.org:443").unwrap(),
            Allowed {
                host: "deb.debian.org".into(),
                port: 443
            }
        );
        assert_eq!(parse("[::1]:8080").unwrap().host, "::1");
        assert_eq!(parse("10.0.0.1:80").unwrap().to_string(), "10.0.0.1:80");
        for bad in [
            "deb.debian.org",
            "host:0",
            "host:70000",
            ":80",
            "bad host:80",
            "-x.org:80",
            "a..b:80",
            "[::1]80",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("h{i}:80")).collect();
        assert!(parse_all(&many).is_err());
        let twice = parse_all(&["a.org:80".into(), "A.org:80".into()]).unwrap();
        assert_eq!(twice.len(), 1);
    }

    #[test]
    fn names_resolve_to_loopback_and_nothing_else_does() {
        let list = parse_all(&[
            "mirror.example:80".into(),
            "mirror.example:443".into(),
            "pypi.org:443".into(),
            "localhost:9000".into(),
            "192.0.2.7:80".into(),
        ])
        .unwrap();
        let h = hosts_file(&list);
        assert_eq!(
            h,
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tmirror.example\n127.0.1.2\tpypi.org\n"
        );
        let addrs = local_addrs(&list);
        assert_eq!(addrs["192.0.2.7"].to_string(), "192.0.2.7");
        assert_eq!(addrs["localhost"].to_string(), "127.0.0.1");
    }
}

//! Running `ip`, `nft` and `sysctl`, and entering network namespaces.

use crate::NetError;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// Runs a program; the error carries its stderr.
pub async fn run(prog: &str, args: &[&str]) -> Result<String, NetError> {
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| NetError::Command(format!("{prog}: {e}")))?;
    tracing::debug!(cmd = %format!("{prog} {}", args.join(" ")), us = started.elapsed().as_micros() as u64, ok = out.status.success(), "ran");
    if !out.status.success() {
        return Err(NetError::Command(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Runs `ip` in a namespace (or the host's with `None`).
pub async fn ip(ns: Option<&str>, args: &[&str]) -> Result<String, NetError> {
    let mut full: Vec<&str> = vec![];
    if let Some(n) = ns {
        full.extend(["-n", n]);
    }
    full.extend_from_slice(args);
    run("ip", &full).await
}

/// True if `ip` succeeds (used to test for existence).
pub async fn ip_ok(ns: Option<&str>, args: &[&str]) -> bool {
    ip(ns, args).await.is_ok()
}

/// Loads an nftables ruleset in a namespace (or the host's).
pub async fn nft(ns: Option<&str>, ruleset: &str) -> Result<(), NetError> {
    let started = std::time::Instant::now();
    let r = nft_inner(ns, ruleset).await;
    tracing::debug!(cmd = %format!("nft in {}", ns.unwrap_or("host")), us = started.elapsed().as_micros() as u64, ok = r.is_ok(), "ran");
    r
}

async fn nft_inner(ns: Option<&str>, ruleset: &str) -> Result<(), NetError> {
    // In a namespace: run nft from a thread that entered it (cheaper than `ip netns exec`).
    if let Some(n) = ns {
        let (n, rules) = (n.to_string(), ruleset.to_string());
        let res = tokio::task::spawn_blocking(move || {
            in_netns(&n.clone(), move || -> Result<(), String> {
                use std::io::Write as _;
                let mut child = std::process::Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("nft: {e}"))?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin
                        .write_all(rules.as_bytes())
                        .map_err(|e| format!("nft: {e}"))?;
                }
                let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "nft in {n}: {}\nruleset:\n{rules}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(())
            })
            .map_err(|e| format!("cannot enter namespace: {e}"))?
        })
        .await
        .map_err(|e| NetError::Command(e.to_string()))?;
        return res.map_err(NetError::Command);
    }
    nft_exec(ns, ruleset).await
}

/// The ruleset in namespace `ns`, as `nft list ruleset` prints it.
pub async fn nft_list(ns: &str) -> Result<String, NetError> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "ruleset"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| NetError::Command(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(NetError::Command(format!(
            "nft list ruleset in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn nft_exec(ns: Option<&str>, ruleset: &str) -> Result<(), NetError> {
    let mut cmd = match ns {
        Some(n) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", n, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = tokio::process::Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Command(format!("nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .await
            .map_err(|e| NetError::Command(format!("nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NetError::Command(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(NetError::Command(format!(
            "nft in {}: {}\nruleset:\n{ruleset}",
            ns.unwrap_or("the host"),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Sets a sysctl inside a namespace.
pub async fn sysctl(ns: Option<&str>, key: &str, value: &str) -> Result<(), NetError> {
    // /proc/sys is per network namespace for net.*: write it from a thread inside.
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let v = value.to_string();
    match ns {
        Some(n) => {
            let n = n.to_string();
            tokio::task::spawn_blocking(move || in_netns(&n, move || std::fs::write(&path, v)))
                .await
                .map_err(|e| NetError::Command(e.to_string()))?
                .map_err(|e| NetError::Command(format!("sysctl {key}: {e}")))?
                .map_err(|e| NetError::Command(format!("sysctl {key}: {e}")))
        }
        None => {
            std::fs::write(&path, v).map_err(|e| NetError::Command(format!("sysctl {key}: {e}")))
        }
    }
}

/// Sets a sysctl with the `sysctl` program.
pub async fn sysctl_cmd(ns: Option<&str>, key: &str, value: &str) -> Result<(), NetError> {
    let kv = format!("{key}={value}");
    match ns {
        Some(n) => run("ip", &["netns", "exec", n, "sysctl", "-qw", &kv])
            .await
            .map(|_| ()),
        None => run("sysctl", &["-qw", &kv]).await.map(|_| ()),
    }
}

/// True if the named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    !name.is_empty() && std::path::Path::new("/run/netns").join(name).exists()
}

/// The inode of a named network namespace (it differs from a namespace of the same name
/// made again while the first lives), if it exists.
pub fn netns_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    if name.is_empty() {
        return None;
    }
    std::fs::metadata(std::path::Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// The network namespaces that exist.
pub async fn netns_list() -> Vec<String> {
    match run("ip", &["netns", "list"]).await {
        Ok(out) => out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect(),
        Err(_) => vec![],
    }
}

pub use veeps_sys::netns::in_netns;

/// True if this process may administer networking (CAP_NET_ADMIN) and has `ip` and `nft`.
pub fn can_isolate() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if eff & (1 << 12) == 0 {
        return Err(
            "this process lacks CAP_NET_ADMIN (run veeps as root for isolated networking)".into(),
        );
    }
    for prog in ["ip", "nft"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "`{prog}` is not installed (install iproute2 and nftables)"
            ));
        }
    }
    Ok(())
}

//! `veeps db`: operating database clusters.

use crate::ops::{api_err, client, fmt_ts};
use crate::{DbCmd, Global};
use serde_json::json;

type R = Result<i32, String>;

/// Runs a `veeps db` command.
pub fn run(g: &Global, cmd: DbCmd) -> R {
    match cmd {
        DbCmd::Status { env, cluster } => status(g, &env, &cluster),
        DbCmd::Failover { env, cluster, to } => {
            let v = client(g)?
                .post(
                    &format!("/v1/envs/{env}/db/{cluster}/failover"),
                    &json!({ "to": to }),
                )
                .map_err(api_err)?;
            println!("{}", v["message"].as_str().unwrap_or("done"));
            Ok(0)
        }
        DbCmd::Backups { env, cluster } => {
            let v = client(g)?
                .get(&format!("/v1/envs/{env}/db/{cluster}/backups"))
                .map_err(api_err)?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            println!("{:<28} {:<10} {:>12}  TIME", "NAME", "KIND", "BYTES");
            for b in v.as_array().into_iter().flatten() {
                let when = fmt_ts(b["time_ms"].as_i64().unwrap_or(0));
                println!(
                    "{:<28} {:<10} {:>12}  {when}",
                    b["name"].as_str().unwrap_or(""),
                    b["kind"].as_str().unwrap_or(""),
                    b["size"].as_u64().unwrap_or(0)
                );
            }
            Ok(0)
        }
        DbCmd::Snapshot { env, cluster, name } => {
            let v = client(g)?
                .post(
                    &format!("/v1/envs/{env}/db/{cluster}/backups"),
                    &json!({ "name": name }),
                )
                .map_err(api_err)?;
            println!(
                "Snapshot {} of {cluster} taken ({} bytes).",
                v["name"].as_str().unwrap_or(""),
                v["size"]
            );
            Ok(0)
        }
        DbCmd::Restore {
            env,
            cluster,
            to_time,
            snapshot,
            new_cluster,
        } => {
            let v = client(g)?
                .post(
                    &format!("/v1/envs/{env}/db/{cluster}/restore"),
                    &json!({ "to_time": to_time, "snapshot": snapshot, "new_cluster": new_cluster }),
                )
                .map_err(api_err)?;
            println!(
                "Restored into {} (endpoint {}, reader endpoint {}).",
                v["cluster"].as_str().unwrap_or(""),
                v["endpoint"].as_str().unwrap_or(""),
                v["reader_endpoint"].as_str().unwrap_or("")
            );
            Ok(0)
        }
        DbCmd::Delete { env, cluster } => {
            client(g)?
                .delete(&format!("/v1/envs/{env}/db/{cluster}"))
                .map_err(api_err)?;
            println!("Deleted {cluster} (its backups are kept).");
            Ok(0)
        }
        DbCmd::Events { env, cluster } => {
            let v = client(g)?
                .get(&format!("/v1/envs/{env}/db/{cluster}/events"))
                .map_err(api_err)?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            for e in v.as_array().into_iter().flatten() {
                let when = fmt_ts(e["ts"].as_i64().unwrap_or(0));
                println!(
                    "{when}  {:<11} {}",
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        DbCmd::Psql {
            env,
            cluster,
            reader,
            args,
        } => psql(g, &env, &cluster, reader, &args),
    }
}

fn status(g: &Global, env: &str, cluster: &str) -> R {
    let v = client(g)?
        .get(&format!("/v1/envs/{env}/db/{cluster}"))
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{cluster}: writer endpoint {}, reader endpoint {}",
        v["endpoint"].as_str().unwrap_or(""),
        v["reader_endpoint"].as_str().unwrap_or("")
    );
    println!(
        "{:<14} {:<7} {:<16} {:<8} {:>12} {:>9} {:>8}",
        "NODE", "ROLE", "ADDRESS", "HEALTH", "LAG BYTES", "LAG SECS", "PID"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        println!(
            "{:<14} {:<7} {:<16} {:<8} {:>12} {:>9.2} {:>8}",
            n["name"].as_str().unwrap_or(""),
            n["role"].as_str().unwrap_or(""),
            n["address"].as_str().unwrap_or(""),
            if n["healthy"].as_bool().unwrap_or(false) {
                "healthy"
            } else {
                "DOWN"
            },
            n["lag_bytes"].as_i64().unwrap_or(0),
            n["lag_seconds"].as_f64().unwrap_or(0.0),
            n["pid"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or("-".into())
        );
    }
    Ok(0)
}

/// Runs `psql` in the endpoint's namespace (inside the cluster's VPC) with the master
/// credentials; the API call that hands them out is in the audit log.
fn psql(g: &Global, env: &str, cluster: &str, reader: bool, args: &[String]) -> R {
    let v = client(g)?
        .get(&format!("/v1/envs/{env}/db/{cluster}/psql?reader={reader}"))
        .map_err(api_err)?;
    let ns = v["netns"].as_str().unwrap_or_default();
    let psql = "/usr/lib/postgresql/15/bin/psql";
    let mut c = if ns.is_empty() {
        std::process::Command::new(psql)
    } else {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", ns, psql]);
        c
    };
    c.args(args);
    for (k, val) in v["env"].as_object().into_iter().flatten() {
        c.env(k, val.as_str().unwrap_or_default());
    }
    let status = c
        .status()
        .map_err(|e| format!("cannot run psql ({psql}): {e}"))?;
    Ok(status.code().unwrap_or(1))
}

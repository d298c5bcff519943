//! `veeps db`: operating database clusters.

use crate::ops::{api_err, client, fmt_ts};
use crate::{DbCmd, Global};
use veeps_wire::{DbBackup, DbEvent, DbRestored, DbStatus, Done, PsqlTarget};

type R = Result<i32, String>;

/// Runs a `veeps db` command.
pub fn run(g: &Global, cmd: DbCmd) -> R {
    match cmd {
        DbCmd::Status { env, cluster } => status(g, &env, &cluster),
        DbCmd::Failover { env, cluster, to } => {
            let v: Done = client(g)?
                .post_as(
                    &format!("/v1/envs/{env}/db/{cluster}/failover"),
                    &veeps_wire::DbFailover { to },
                )
                .map_err(api_err)?;
            println!("{}", v.message);
            Ok(0)
        }
        DbCmd::Backups { env, cluster } => {
            let v: Vec<DbBackup> = client(g)?
                .get_as(&format!("/v1/envs/{env}/db/{cluster}/backups"))
                .map_err(api_err)?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            println!("{:<28} {:<10} {:>12}  TIME", "NAME", "KIND", "BYTES");
            for b in v {
                let when = fmt_ts(b.time_ms);
                println!("{:<28} {:<10} {:>12}  {when}", b.name, b.kind, b.size);
            }
            Ok(0)
        }
        DbCmd::Snapshot { env, cluster, name } => {
            let v: DbBackup = client(g)?
                .post_as(
                    &format!("/v1/envs/{env}/db/{cluster}/backups"),
                    &veeps_wire::DbSnapshot { name: Some(name) },
                )
                .map_err(api_err)?;
            println!("Snapshot {} of {cluster} taken ({} bytes).", v.name, v.size);
            Ok(0)
        }
        DbCmd::Restore {
            env,
            cluster,
            to_time,
            snapshot,
            new_cluster,
        } => {
            let v: DbRestored = client(g)?
                .post_as(
                    &format!("/v1/envs/{env}/db/{cluster}/restore"),
                    &veeps_wire::DbRestore {
                        new_cluster: Some(new_cluster),
                        to_time,
                        snapshot,
                    },
                )
                .map_err(api_err)?;
            println!(
                "Restored into {} (endpoint {}, reader endpoint {}).",
                v.cluster, v.endpoint, v.reader_endpoint
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
            let v: Vec<DbEvent> = client(g)?
                .get_as(&format!("/v1/envs/{env}/db/{cluster}/events"))
                .map_err(api_err)?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            for e in v {
                println!("{}  {:<11} {}", fmt_ts(e.ts), e.kind, e.message);
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
    let v: DbStatus = client(g)?
        .get_as(&format!("/v1/envs/{env}/db/{cluster}"))
        .map_err(api_err)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{cluster}: writer endpoint {}, reader endpoint {}, synchronous commits {}",
        v.endpoint, v.reader_endpoint, v.synchronous
    );
    println!(
        "{:<14} {:<7} {:<16} {:<8} {:>12} {:>9} {:>8}",
        "NODE", "ROLE", "ADDRESS", "HEALTH", "LAG BYTES", "LAG SECS", "PID"
    );
    for n in v.nodes {
        println!(
            "{:<14} {:<7} {:<16} {:<8} {:>12} {:>9.2} {:>8}",
            n.name,
            n.role,
            n.address,
            if n.healthy { "healthy" } else { "DOWN" },
            n.lag_bytes,
            n.lag_seconds,
            n.pid.map(|p| p.to_string()).unwrap_or("-".into())
        );
    }
    Ok(0)
}

/// Runs `psql` in the endpoint's namespace (inside the cluster's VPC) with the master
/// credentials; the API call that hands them out is in the audit log.
fn psql(g: &Global, env: &str, cluster: &str, reader: bool, args: &[String]) -> R {
    let v: PsqlTarget = client(g)?
        .get_as(&format!("/v1/envs/{env}/db/{cluster}/psql?reader={reader}"))
        .map_err(api_err)?;
    let ns = v.netns.as_str();
    let psql = "/usr/lib/postgresql/15/bin/psql";
    let mut c = if ns.is_empty() {
        std::process::Command::new(psql)
    } else {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", ns, psql]);
        c
    };
    c.args(args);
    c.envs(&v.env);
    let status = c
        .status()
        .map_err(|e| format!("cannot run psql ({psql}): {e}"))?;
    Ok(status.code().unwrap_or(1))
}

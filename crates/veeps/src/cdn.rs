//! `veeps cdn`: operating distributions.

use crate::ops::{api_err, client};
use crate::Global;
use clap::Subcommand;
use veeps_cdn::http::Invalidation;

/// `veeps cdn ...`.
#[derive(Subcommand)]
pub enum CdnCmd {
    /// Forget cached objects under paths at the edge, at once (`/index.html`, `/images/*`)
    Invalidate {
        /// The environment
        env: String,
        /// The distribution's id or domain name
        distribution: String,
        /// Paths, each starting with / and maybe ending with *
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

/// Runs a `veeps cdn` command.
pub fn run(g: &Global, cmd: CdnCmd) -> Result<i32, String> {
    match cmd {
        CdnCmd::Invalidate {
            env,
            distribution,
            paths,
        } => {
            let done: Invalidation = client(g)?
                .post_as(
                    &format!("/v1/envs/{env}/cdn/{distribution}/invalidations"),
                    &Invalidation { paths, objects: 0 },
                )
                .map_err(api_err)?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&done).unwrap_or_default()
                );
            } else {
                println!(
                    "invalidated {} at the edge: {} cached object(s) forgotten",
                    done.paths.join(" "),
                    done.objects
                );
            }
            Ok(0)
        }
    }
}

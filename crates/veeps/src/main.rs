//! The `veeps` command: a thin layer over the veeps crates.

mod cdn;
mod db;
mod envs;
mod iam;
mod ops;
mod up;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// veeps: the whole hosting stack (infrastructure as code, networks, load balancers, fleets,
/// databases, storage and more) in one binary, on your own Linux machines.
#[derive(Parser)]
#[command(name = "veeps", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Clone)]
pub struct Global {
    /// URL of the veeps server [default: http://127.0.0.1:7480]
    #[arg(long, global = true, env = "VEEPS_ADDR")]
    pub server: Option<String>,
    /// The data directory (state, keys, the root token) [default: $XDG_DATA_HOME/veeps or ~/.local/share/veeps]
    #[arg(long, global = true, env = "VEEPS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON for scripts instead of text
    #[arg(long, global = true)]
    pub json: bool,
}

/// Options of commands that read a configuration.
#[derive(Args, Clone, Default)]
pub struct VarArgs {
    /// Set a root variable: -var NAME=VALUE (repeatable; also -v)
    #[arg(long = "var", short = 'v', value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read root variables from a file: -var-file FILE (repeatable; after terraform.tfvars and *.auto.tfvars)
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

/// Flags Terraform spells with one dash; veeps accepts them as Terraform users type them.
const TERRAFORM_FLAGS: &[&str] = &[
    "var",
    "var-file",
    "auto-approve",
    "destroy",
    "detailed-exitcode",
    "json",
];

/// `-var x=1` and `-var=x=1` (Terraform's spelling) as `--var x=1` (clap's), for the flags
/// of [`TERRAFORM_FLAGS`], up to a `--`.
pub fn terraform_spelling(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut rest = false;
    args.into_iter()
        .map(|a| {
            if rest || a == "--" {
                rest = true;
                return a;
            }
            let Some(body) = a.strip_prefix('-').filter(|b| !b.starts_with('-')) else {
                return a;
            };
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            if TERRAFORM_FLAGS.contains(&name) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// The exit code of a command line veeps cannot parse (BSD's EX_USAGE): apart from 1 (an
/// error) and 2 (`plan --detailed-exitcode`: changes), so scripts never mistake one for
/// the other.
pub const EXIT_USAGE: i32 = 64;

/// Where object storage answers.
#[derive(clap::Args, Clone, Debug)]
pub struct S3Args {
    /// Address of the S3 API
    #[arg(long, default_value = "0.0.0.0:9000")]
    pub s3_listen: String,
    /// Address of bucket websites (plain HTTP; `BUCKET.s3-website.localhost` or `/BUCKET/`)
    #[arg(long, default_value = "0.0.0.0:9080")]
    pub s3_website_listen: String,
    /// Serve the S3 API over TLS with a certificate from veeps' CA (clients trust
    /// DATA_DIR/pki/ca.crt: `aws --ca-bundle`)
    #[arg(long)]
    pub s3_tls: bool,
    /// Length of a lifecycle "day" (for trying rules out quickly), like 10s
    #[arg(long, hide = true, value_parser = parse_day)]
    pub s3_lifecycle_day: Option<std::time::Duration>,
    /// Function environments alive at once, all functions together (more invocations at
    /// once are throttled)
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub function_environments: usize,
    /// How long an idle function environment stays warm, like 5m
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_day)]
    pub function_idle: std::time::Duration,
    /// The first retry delay of a failed asynchronous invocation (then twice it), like 1m
    #[arg(long, hide = true, default_value = "1m", value_parser = parse_day)]
    pub function_retry_delay: std::time::Duration,
    /// How long a schedule's minute lasts (for trying rates out quickly), like 1s
    #[arg(long, hide = true, default_value = "1m", value_parser = parse_day)]
    pub schedule_minute: std::time::Duration,
}

impl S3Args {
    /// The functions' options these give (functions answer on the same endpoint).
    pub fn apply(&self, o: &mut veeps_api::server::ServerOptions) {
        o.functions = Some(veeps_fn::FnOptions {
            max_environments: self.function_environments.max(1),
            idle_timeout: self.function_idle,
            retry_delay: self.function_retry_delay,
            minute: self.schedule_minute,
            ..Default::default()
        });
    }
}

/// Where DNS answers, and its limits.
#[derive(clap::Args, Clone, Debug)]
pub struct DnsArgs {
    /// Address of the public DNS listener, UDP and TCP (public zones; "off" serves none)
    #[arg(long, default_value = "0.0.0.0:53")]
    pub dns_listen: String,
    /// Queries per second answered from one address (0: no limit)
    #[arg(long, value_name = "QPS", default_value_t = 1000)]
    pub dns_rate_limit: u32,
    /// Identical answers per second to one /24 (response rate limiting; 0: no limit)
    #[arg(long, value_name = "RPS", default_value_t = 100)]
    pub dns_rrl: u32,
    #[command(flatten)]
    pub cdn: CdnArgs,
}

/// Where the CDN's edge answers.
#[derive(clap::Args, Clone, Debug)]
pub struct CdnArgs {
    /// Address of the CDN's edge over plain HTTP ("off" serves none)
    #[arg(long, default_value = "0.0.0.0:8180")]
    pub cdn_listen: String,
    /// Address of the CDN's edge over HTTPS, each distribution's names with its certificate
    /// ("off" serves none)
    #[arg(long, default_value = "0.0.0.0:8143")]
    pub cdn_tls_listen: String,
}

impl DnsArgs {
    /// The server options these give.
    pub fn apply(&self, o: &mut veeps_api::server::ServerOptions) {
        o.dns_listen = (self.dns_listen != "off").then(|| self.dns_listen.clone());
        o.dns_limits = Some(veeps_dns::server::Limits {
            per_source: self.dns_rate_limit,
            responses: self.dns_rrl,
            slip: 2,
        });
        let on = |a: &String| (a != "off").then(|| a.clone());
        o.cdn_listen = on(&self.cdn.cdn_listen);
        o.cdn_tls_listen = on(&self.cdn.cdn_tls_listen);
    }
}

fn parse_day(s: &str) -> Result<std::time::Duration, String> {
    match veeps_obs::parse_duration_ms(s)? {
        ms if ms > 0 => Ok(std::time::Duration::from_millis(ms as u64)),
        _ => Err(format!("{s:?}: a day lasts longer than nothing")),
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the control plane: the API, the state store and the controllers
    Server {
        /// Address of the API
        #[arg(long, default_value = veeps_api::DEFAULT_LISTEN)]
        listen: String,
        /// SMTP relay for email notifications (HOST:PORT)
        #[arg(long, env = "VEEPS_SMTP_RELAY")]
        smtp_relay: Option<String>,
        /// Sender address of email notifications
        #[arg(long, env = "VEEPS_SMTP_FROM")]
        smtp_from: Option<String>,
        /// How long metrics are kept at raw (10 s), 5-minute and 1-hour resolution
        #[arg(long, value_name = "RAW,5M,1H", default_value = "15d,63d,455d", value_parser = veeps_obs::tsdb::Retention::parse)]
        metrics_retention: veeps_obs::tsdb::Retention,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        dns: DnsArgs,
        /// Days of logs kept in log groups that set no retention of their own
        #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3653))]
        log_retention_days: u32,
        /// Days of audit log kept (older entries are removed; the rest still verify)
        #[arg(long, value_name = "DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36530))]
        audit_retention_days: u32,
        /// Where signed audit digests are copied as they are made, hourly (default
        /// DATA_DIR/audit-digests): keep it where whoever can write the data directory cannot
        #[arg(long, value_name = "DIR")]
        audit_export: Option<PathBuf>,
        /// Days after which sealed audit entries are copied, encrypted, to the reserved
        /// bucket veeps-audit (retention later removes them from the log, not from there)
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        audit_archive_days: u32,
        /// Serve the API over TLS with a certificate from veeps' CA: `auto` does when
        /// --listen is not a loopback address (clients trust DATA_DIR/pki/ca.crt, or the
        /// file VEEPS_CA_FILE names)
        #[arg(long, value_name = "on|off|auto", default_value = "auto", value_parser = ["on", "off", "auto"])]
        api_tls: String,
    },
    /// Start veeps and deploy every environment under DIR (default: the bundled example), then stay in the foreground
    Up {
        /// A directory of environments (or one environment)
        dir: Option<PathBuf>,
        /// Address of the API
        #[arg(long, default_value = veeps_api::DEFAULT_LISTEN)]
        listen: String,
        #[command(flatten)]
        vars: VarArgs,
        /// Apply and exit instead of staying in the foreground
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        dns: DnsArgs,
    },
    /// Check a configuration: syntax, types, references, schemas (no server needed)
    Validate {
        /// An environment directory (or a directory of environments)
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Rewrite configuration files in the canonical layout
    Fmt {
        /// A directory or a file
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Do not write; exit 3 if any file is not formatted
        #[arg(long)]
        check: bool,
        /// Also format sub-directories
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Show what apply would change
    Plan {
        /// An environment directory (or a directory of environments)
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
        /// Plan destruction of everything in the environment
        #[arg(long)]
        destroy: bool,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make the environment match its configuration
    Apply {
        /// An environment directory (or a directory of environments)
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
    },
    /// Destroy everything an environment manages
    Destroy {
        /// An environment directory
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
    },
    /// Show an environment's outputs
    Output {
        /// An environment directory or name
        env: String,
        /// One output (printed raw, even if sensitive)
        name: Option<String>,
    },
    /// Inspect recorded state
    #[command(subcommand)]
    State(StateCmd),
    /// List the applied versions of an environment
    History {
        /// The environment
        env: String,
    },
    /// Plan and apply the configuration recorded as version N
    Rollback {
        /// The environment
        env: String,
        /// The version to return to
        #[arg(long)]
        to: u64,
        /// Do not ask for confirmation
        #[arg(long)]
        auto_approve: bool,
    },
    /// Remove an environment's lock whoever holds it
    ForceUnlock {
        /// The environment
        env: String,
    },
    /// List and query metrics
    #[command(subcommand)]
    Metrics(MetricsCmd),
    /// Search and follow logs
    Logs {
        /// The environment (`system` for the server and host)
        env: String,
        /// A log group, or GROUP/SOURCE (default: all)
        source: Option<String>,
        /// Keep printing new lines
        #[arg(short, long)]
        follow: bool,
        /// How far back, like 30s, 10m, 1h, 2d
        #[arg(long, default_value = "1h")]
        since: String,
        /// Only lines containing this text
        #[arg(long)]
        grep: Option<String>,
        /// At most this many lines (the newest)
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// List the alarms of an environment with their states
    Alarms {
        /// The environment
        env: String,
    },
    /// Inspect one alarm
    #[command(subcommand)]
    Alarm(AlarmCmd),
    /// Build and list images
    #[command(subcommand)]
    Image(ImageCmd),
    /// List the auto scaling groups of an environment and their instances
    Instances {
        /// The environment
        env: String,
        /// Only this group
        #[arg(long)]
        group: Option<String>,
    },
    /// What happened to an auto scaling group: launches, terminations and why
    Activity {
        /// The environment
        env: String,
        /// The group's name
        group: String,
    },
    /// veeps' certificate authority
    #[command(subcommand)]
    Ca(CaCmd),
    /// Secrets that can be committed: `kmscrypt::` values only an environment's key opens
    #[command(subcommand)]
    Kms(KmsCmd),
    /// Stop the running server and everything it started (instances, balancers, databases); `veeps server` alone leaves them serving when it ends
    Down,
    /// Operate PostgreSQL clusters: status, switchover, backups, restore, psql
    #[command(subcommand)]
    Db(DbCmd),
    /// The CDN: invalidate cached paths of a distribution
    #[command(subcommand)]
    Cdn(crate::cdn::CdnCmd),
    /// Users' credentials: passwords, MFA devices, tokens; the root token; policy simulation
    #[command(subcommand)]
    Iam(crate::iam::IamCmd),
    /// Log in as an IAM user (password from VEEPS_PASSWORD or standard input); later
    /// commands use the session until it expires or `veeps logout`
    Login {
        /// The user
        user: String,
        /// The current code of the user's MFA device (or a recovery code)
        #[arg(long)]
        code: Option<String>,
        /// How long the session lasts (like 1h; at most 12h)
        #[arg(long, default_value = "12h")]
        duration: String,
    },
    /// Addresses banned by the ban policies' jails
    Bans,
    /// Lift the ban of an address
    Unban {
        /// The address (for IPv6, any address of the banned /64)
        address: String,
    },
    /// End the session of `veeps login`
    Logout,
    /// Who the commands run as
    Whoami,
    /// Object storage: the root key pair, lifecycle rules on demand
    #[command(subcommand)]
    S3(S3Cmd),
    /// Target health of every load balancer's target groups
    Targets {
        /// The environment
        env: String,
    },
    /// List the deliveries of a notification topic
    Deliveries {
        /// The environment
        env: String,
        /// The topic's name
        topic: String,
    },
    /// Show or verify the audit log of API calls
    Audit {
        /// Check the hash chain and the signed digests instead of listing
        #[arg(long)]
        verify: bool,
        /// With --verify: digests kept elsewhere (files, or directories of digest-*.json) to
        /// check the log against; any change up to the newest is found
        #[arg(long, value_name = "PATH")]
        anchor: Vec<PathBuf>,
        /// With --verify: check only what was written from this time on (RFC 3339, like
        /// 2026-11-01T00:00:00Z): entries and digests before it are not read
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Seal the entries written since the last digest now (it is also done hourly)
        #[arg(long)]
        seal: bool,
        /// How many entries to list
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub enum MetricsCmd {
    /// List the series of an environment (`system` for the host and server)
    List {
        /// The environment
        env: String,
    },
    /// Query a series: one value per period
    Query {
        /// The environment
        env: String,
        /// A selector, like 'host_cpu_usage_percent{host="a"}'
        selector: String,
        /// How far back, like 10m, 1h, 2d
        #[arg(long, default_value = "1h")]
        since: String,
        /// Seconds per value
        #[arg(long, default_value_t = 60)]
        period: u64,
        /// avg, min, max, sum, count, p50, p90, p99
        #[arg(long, default_value = "avg")]
        stat: String,
    },
}

#[derive(Subcommand)]
pub enum S3Cmd {
    /// The S3 endpoint's root access key id and secret (for the AWS CLI, SDKs)
    Credentials,
    /// Apply every bucket's lifecycle rules now and print what they did
    Lifecycle {
        /// As if this many lifecycle days had passed (to try rules out without waiting)
        #[arg(long, default_value_t = 0)]
        advance_days: u32,
    },
}

#[derive(Subcommand)]
pub enum KmsCmd {
    /// Encrypt a secret for ENV: prints a `kmscrypt::` value to put in configuration (the
    /// secret is read from standard input unless --value gives it)
    Encrypt {
        /// The environment whose key encrypts it
        env: String,
        /// The secret (beware: it stays in your shell's history)
        #[arg(long)]
        value: Option<String>,
    },
    /// Print FILE with each `kmscrypt::` value of ENV replaced by its plaintext
    Decrypt {
        /// The environment whose key decrypts
        env: String,
        /// The file (`-` for standard input)
        file: PathBuf,
    },
    /// Print ENV's key sealed with a passphrase (VEEPS_KMS_PASSPHRASE, or the first line of
    /// standard input), to import on another machine
    ExportKey {
        /// The environment
        env: String,
    },
    /// ENV's key: its versions, its kms_key policy, a scheduled deletion
    Describe {
        /// The environment
        env: String,
    },
    /// Rotate ENV's key now: new values use the new version, every version still decrypts
    Rotate {
        /// The environment
        env: String,
    },
    /// Keep ENV's key, scheduled for deletion when its kms_key was removed
    CancelDeletion {
        /// The environment
        env: String,
    },
    /// Make an exported key ENV's key here (before ENV's first use), so that its kmscrypt::
    /// values open here too
    ImportKey {
        /// The environment
        env: String,
        /// The file `veeps kms export-key` wrote
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// Print the CA certificate (PEM), for clients to trust
    Cert,
}

#[derive(Subcommand)]
pub enum DbCmd {
    /// Each node's role, health, replication lag and process
    Status {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
    },
    /// A planned switchover to another node, losing no committed transaction
    Failover {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
        /// The node to promote (default: the most caught-up reader)
        #[arg(long)]
        to: Option<String>,
    },
    /// List base backups (automated and snapshots)
    Backups {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
    },
    /// Take a base backup now
    Snapshot {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
        /// The snapshot's name
        name: String,
    },
    /// Point-in-time restore into a new cluster
    Restore {
        /// The environment
        env: String,
        /// The cluster to restore from
        cluster: String,
        /// The moment to restore to (RFC 3339, like 2026-11-25T12:00:00Z; latest if left out)
        #[arg(long)]
        to_time: Option<String>,
        /// Restore this snapshot instead of the latest base backup before the time
        #[arg(long)]
        snapshot: Option<String>,
        /// The new cluster's name
        #[arg(long)]
        new_cluster: String,
    },
    /// Delete a cluster made by a restore (declared clusters go with `destroy`)
    Delete {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
    },
    /// The cluster's activity: failovers, switchovers, rebuilds, backups
    Events {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
    },
    /// Run psql inside the cluster's VPC against its writer (or reader) endpoint
    Psql {
        /// The environment
        env: String,
        /// The cluster's name
        cluster: String,
        /// Connect to the reader endpoint
        #[arg(long)]
        reader: bool,
        /// Arguments for psql (after --)
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum ImageCmd {
    /// List every built image, by name and version
    List,
    /// Build an image from a source directory (nothing is rebuilt if the inputs are unchanged)
    Build {
        /// The source directory
        dir: PathBuf,
        /// The image's name
        name: String,
        /// A build command, run with sh in a copy of DIR without network (repeatable)
        #[arg(long = "run", value_name = "CMD")]
        run: Vec<String>,
        /// A path to keep from the build directory (repeatable; default: everything)
        #[arg(long = "keep", value_name = "PATH")]
        keep: Vec<String>,
        /// The command that starts an instance, like "./app --port 8080"
        #[arg(long)]
        entrypoint: String,
        /// An environment variable of builds and instances (repeatable)
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Seconds the build may take
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// A HOST:PORT build commands may connect to (repeatable; default: no network)
        #[arg(long = "egress", value_name = "HOST:PORT")]
        egress: Vec<String>,
    },
    /// The images of an environment that rebuild themselves (auto_update), and how each
    /// last went
    Updates {
        /// The environment
        env: String,
    },
    /// Run an image's auto-update now: rebuild, and roll out if its files changed
    Update {
        /// The environment
        env: String,
        /// The image resource's address, like image.web
        address: String,
    },
}

#[derive(Subcommand)]
pub enum AlarmCmd {
    /// The state changes of an alarm
    History {
        /// The environment
        env: String,
        /// The alarm's name
        name: String,
    },
}

#[derive(Subcommand)]
pub enum StateCmd {
    /// List the resource instances of an environment
    List {
        /// The environment
        env: String,
    },
    /// Show one resource instance
    Show {
        /// The environment
        env: String,
        /// Its address, like random_id.x or module.net.random_id.y[0]
        address: String,
    },
}

/// Logs to stderr (filtered by `VEEPS_LOG`, else `default`) and to the server's log store.
/// By default the S3 protocol library says only what went wrong: its info-level spans
/// around every request's signature check cost a GET of 4 KiB a tenth of its time.
fn init_log(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VEEPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},s3s=warn")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // The server's own log events also go to its log store (env `system`, group `server`).
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(veeps_obs::layer::ServerLogLayer)
        .init();
}

fn main() {
    // The data plane's processes, started by the server (an instance's or a database node's
    // shim, a balancer, a reader endpoint): no CLI around them.
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(a) if a == "shim" => std::process::exit(veeps_compute::shim::main(args.collect())),
        Some(a) if a == "lb-plane" => {
            init_log("info");
            std::process::exit(veeps_lb::plane::main(args.collect()))
        }
        Some(a) if a == "dns-plane" => {
            init_log("info");
            std::process::exit(veeps_dns::plane::main(args.collect()))
        }
        Some(a) if a == "cdn-plane" => {
            init_log("info");
            std::process::exit(veeps_cdn::plane::main(args.collect()))
        }
        Some(a) if a == "db-proxy" => std::process::exit(veeps_db::proxy::main(args.collect())),
        _ => {}
    }
    let cli = match Cli::try_parse_from(terraform_spelling(std::env::args())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let log_default = match cli.command {
        Command::Server { .. } => "info",
        _ => "warn",
    };
    init_log(log_default);
    if !matches!(cli.command, Command::Server { .. } | Command::Up { .. }) {
        // Like other Unix tools, end quietly when the reader of our output goes away
        // (`veeps logs ... | head`) instead of failing to print.
        veeps_sys::proc::default_sigpipe();
    }
    let code = ops::run(cli);
    std::process::exit(code);
}

//! `knot`: run a knotwork node and talk to it.
//!
//! The one place that composes every knotwork crate: the node runtime with
//! the task, gossip, NAT and DHT services, mDNS discovery, `knot.toml`
//! ([`config`]) and the control socket ([`control`]).
//!
//! One module per subcommand ([`cmd`]); `main` parses the arguments (clap),
//! sets up logging (`knot run`: the `[log]` section of knot.toml and its
//! `KNOT_LOG_*` variables; other commands: `RUST_LOG`, to stderr) and
//! dispatches. Commands print for
//! people by default and one JSON value (or one JSON object per line, for
//! streams) with `--json`.

mod cmd;
mod config;
mod control;
mod error;
mod metrics_http;
mod settings;

use cmd::{
    config as config_cmd, connect, demo, dht, gossip, health, id, metrics, peers, ping, run,
    status, task,
};

use std::process::ExitCode;

use knotwork_log::{LogConfig, LogGuard};

use clap::{Parser, Subcommand};

/// What a command returns: an error is printed as `error: …` and exits 1.
pub(crate) type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// knot: a knotwork peer-to-peer node.
#[derive(Debug, Parser)]
#[command(name = "knot", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: settings::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (if missing) and show this node's identity.
    Id(id::Args),
    /// Run a node: listen, dial seeds and peers, serve the control socket.
    Run(run::Args),
    /// Measure round-trip times to a node, like ping(8).
    Ping(ping::Args),
    /// Make the running node dial an address (a relay address too).
    Connect(connect::Args),
    /// List the peers of the running node.
    Peers(peers::Args),
    /// Show the running node's identity, addresses and counters.
    Status(status::Args),
    /// Show the running node's health, or a connected peer's.
    Health(health::Args),
    /// Start N nodes in this process; they share a batch of hashing tasks.
    Demo(demo::Args),
    /// Use the running node's DHT: put/get records, provide, find.
    #[command(subcommand)]
    Dht(dht::Command),
    /// Publish on the running node's gossip.
    #[command(subcommand)]
    Gossip(gossip::Command),
    /// Run a task on a peer of the running node.
    #[command(subcommand)]
    Task(task::Command),
    /// Show the running node's metrics (Prometheus text).
    Metrics(metrics::Args),
    /// Work with knot.toml.
    #[command(subcommand)]
    Config(config_cmd::Command),
}

/// Sets up logging for `command`: `knot run` as its `[log]` section says
/// (`RUST_LOG` when it sets no level), the others to stderr at `RUST_LOG`
/// or warnings. A config that does not load falls back
/// to stderr: the command itself reports it.
fn init_logging(global: &settings::Global, command: &Command) -> CliResult<LogGuard> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut config = LogConfig {
        level: rust_log.clone().unwrap_or_else(|| "warn".to_owned()),
        ..LogConfig::default()
    };
    if matches!(command, Command::Run(_))
        && let Ok(file) = global.file_config()
    {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        config = file.log.log_config(home.as_deref(), rust_log);
    }
    Ok(knotwork_log::init_logging(&config)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log = match init_logging(&cli.global, &cli.command) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let global = cli.global;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Id(args) => id::run(&global, args),
            Command::Run(args) => run::run(&global, args).await,
            Command::Ping(args) => ping::run(&global, args).await,
            Command::Connect(args) => connect::run(&global, args).await,
            Command::Peers(args) => peers::run(&global, args).await,
            Command::Status(args) => status::run(&global, args).await,
            Command::Health(args) => health::run(&global, args).await,
            Command::Demo(args) => demo::run(&global, args).await,
            Command::Dht(cmd) => dht::run(&global, cmd).await,
            Command::Gossip(cmd) => gossip::run(&global, cmd).await,
            Command::Task(cmd) => task::run(&global, cmd).await,
            Command::Metrics(args) => metrics::run(&global, args).await,
            Command::Config(cmd) => config_cmd::run(&global, cmd),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `knot health [PEER]`: the running node's health verdict, or a connected
//! peer's (asked over the health protocol), through the control socket.
//! `knot health --watch PEER` follows a peer's health: the node subscribes
//! to the changes the peer pushes, and the command prints each one as it
//! arrives until the peer disconnects (or Ctrl-C).
//!
//! # Format
//! `health: ok|degraded|failing`, then one `- <reason>` line per finding;
//! with `--json`: `{"level","reasons"}`. Exits 1 unless the level is ok.
//! With `--watch`, each change the same way (with `--json`, one object per
//! line); exits 1 when the peer is gone.

use std::process::ExitCode;
use std::time::Duration;

use crate::control::{self, Request, Response};
use knotwork_tasks::HealthStatus;
use knotwork_tasks::health::HealthLevel;

use crate::CliResult;
use crate::settings::{Global, print_json};

/// How often `--watch` asks the local node for the peer's latest update.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// Arguments of `knot health`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A connected peer's id; without it, the node's own health.
    peer: Option<String>,
    /// Follow the peer's health changes as it pushes them.
    #[arg(long, requires = "peer")]
    watch: bool,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    let data_dir = global.data_dir()?;
    if let (true, Some(peer)) = (args.watch, &args.peer) {
        return watch(global, &data_dir, peer).await;
    }
    let request = Request::Health { peer: args.peer };
    let Response::Health(status) = control::request(&data_dir, &request).await? else {
        return Err("the node answered another request".into());
    };
    show(global, &status)?;
    Ok(if status.level == HealthLevel::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints each status the node received from `peer` that differs from the
/// one printed before, until the peer is gone.
async fn watch(global: &Global, data_dir: &std::path::Path, peer: &str) -> CliResult<ExitCode> {
    let request = Request::HealthWatch {
        peer: peer.to_owned(),
    };
    let mut shown: Option<HealthStatus> = None;
    loop {
        let Response::HealthWatch { status, .. } = control::request(data_dir, &request).await?
        else {
            return Err("the node answered another request".into());
        };
        if let Some(status) = status.filter(|s| shown.as_ref() != Some(s)) {
            show(global, &status)?;
            shown = Some(status);
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

fn show(global: &Global, status: &HealthStatus) -> CliResult<()> {
    if global.json {
        return print_json(status);
    }
    let level = match status.level {
        HealthLevel::Ok => "ok",
        HealthLevel::Degraded => "degraded",
        HealthLevel::Failing => "failing",
    };
    println!("health: {level}");
    for reason in &status.reasons {
        println!("- {}", super::printable(reason));
    }
    Ok(())
}

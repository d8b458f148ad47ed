//! `knot health [PEER]`: the running node's health verdict, or a connected
//! peer's (asked over the health protocol), through the control socket.
//!
//! # Format
//! `health: ok|degraded|failing`, then one `- <reason>` line per finding;
//! with `--json`: `{"level","reasons"}`. Exits 1 unless the level is ok.

use std::process::ExitCode;

use crate::control::{self, Request, Response};
use knotwork_tasks::health::HealthLevel;

use crate::CliResult;
use crate::settings::{Global, print_json};

/// Arguments of `knot health`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A connected peer's id; without it, the node's own health.
    peer: Option<String>,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    let request = Request::Health { peer: args.peer };
    let Response::Health(status) = control::request(&global.data_dir()?, &request).await? else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&status)?;
    } else {
        let level = match status.level {
            HealthLevel::Ok => "ok",
            HealthLevel::Degraded => "degraded",
            HealthLevel::Failing => "failing",
        };
        println!("health: {level}");
        for reason in &status.reasons {
            println!("- {}", super::printable(reason));
        }
    }
    Ok(if status.level == HealthLevel::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! `knot gossip publish TOPIC DATA`: publish on the running node's gossip,
//! through its control socket (`knot run --subscribe TOPIC` prints what
//! arrives).
//!
//! # Format
//! `published <origin>/<seq> to <n> peers`; `--json`:
//! `{"response":"gossip_published","origin","seq","sent","at_us"}`.
//!
//! # Returns
//! Exit code 1 when the message went to no peer.

use std::process::ExitCode;

use crate::control::{self, Request, Response};

use crate::CliResult;
use crate::settings::{Global, print_json};

/// `knot gossip …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Publish DATA on TOPIC.
    Publish {
        /// The topic.
        topic: String,
        /// The message (text).
        data: String,
    },
}

pub(crate) async fn run(global: &Global, cmd: Command) -> CliResult<ExitCode> {
    let Command::Publish { topic, data } = cmd;
    let request = Request::GossipPublish { topic, data };
    let response = control::request(&global.data_dir()?, &request).await?;
    let Response::GossipPublished {
        origin, seq, sent, ..
    } = &response
    else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&response)?;
    } else {
        println!("published {origin}/{seq} to {sent} peers");
    }
    Ok(if *sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

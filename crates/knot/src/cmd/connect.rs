//! `knot connect ADDR`: the running node dials ADDR once (a relay address
//! `relay/<relay-addr>/<relay-id>/<target-id>` too), through its control socket.
//!
//! # Format
//! Text: `connected <peer-id> <addr> (relayed|direct)`. With `--json`:
//! `{"peer_id","addr","relayed"}`. A failure prints `error: …` and exits 1.

use std::process::ExitCode;

use crate::control::{self, Request, Response};
use knotwork_core::PeerAddr;

use crate::CliResult;
use crate::settings::{Global, print_json};

/// Arguments of `knot connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The address to dial, e.g. tcp/10.0.0.1:4000 or relay/tcp/10.0.0.1:4000/RELAY_ID/PEER_ID.
    addr: PeerAddr,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    let request = Request::Connect {
        addr: args.addr.to_string(),
    };
    let Response::Connected {
        peer_id,
        addr,
        relayed,
    } = control::request(&global.data_dir()?, &request).await?
    else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&serde_json::json!({ "peer_id": peer_id, "addr": addr, "relayed": relayed }))?;
    } else {
        let how = if relayed { "relayed" } else { "direct" };
        println!("connected {peer_id} {addr} ({how})");
    }
    Ok(ExitCode::SUCCESS)
}

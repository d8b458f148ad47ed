//! `knot connect ADDR|PEER_ID`: the running node dials ADDR once (a relay
//! address `relay/<relay-addr>/<relay-id>/<target-id>` too, and
//! `ADDR/p2p/<PeerId>` to require that peer there), or finds PEER_ID's
//! addresses (discovery, the DHT's peer records) and tries them, direct ones
//! first, then relayed ones; through its control socket.
//!
//! # Format
//! Text: `connected <peer-id> <addr> (relayed|direct)`. With `--json`:
//! `{"peer_id","addr","relayed"}`. A failure prints `error: …` and exits 1.

use std::process::ExitCode;

use crate::control::{self, Request, Response};

use crate::CliResult;
use crate::settings::{Global, print_json};

/// Arguments of `knot connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to reach: an address (tcp/10.0.0.1:4000, relay/tcp/10.0.0.1:4000/RELAY_ID/PEER_ID,
    /// tcp/10.0.0.1:4000/p2p/PEER_ID), or a PeerId alone.
    target: String,
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    let request = Request::Connect { addr: args.target };
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

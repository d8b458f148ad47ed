//! `knot peers`: the running node's peers, through its control socket.
//!
//! # Format
//! A table: PeerId, address, direction, session kind, last RTT, time
//! connected, how the peer was found (`mdns,dht`, `seed`, `-` for a peer
//! that dialed in); a relayed channel's address starts with `relay/`. With
//! `--json`: `{"peers":[{"peer_id","addr","direction","session","rtt_us",
//! "connected_ms","relayed","sources"}]}`.

use std::process::ExitCode;

use crate::control::{self, Direction, Request, Response};

use crate::CliResult;
use crate::settings::{Global, human_duration, print_json};

/// Arguments of `knot peers`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(global: &Global, _args: Args) -> CliResult<ExitCode> {
    let Response::Peers { peers } = control::request(&global.data_dir()?, &Request::Peers).await?
    else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&serde_json::json!({ "peers": peers }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if peers.is_empty() {
        println!("no peers");
        return Ok(ExitCode::SUCCESS);
    }
    let id_width = peers.iter().map(|p| p.peer_id.len()).max().unwrap_or(0);
    let addr_width = peers.iter().map(|p| p.addr.len()).max().unwrap_or(0).max(7);
    println!(
        "{:id_width$}  {:addr_width$}  {:9}  {:8}  {:>10}  {:9}  SOURCES",
        "PEER", "ADDRESS", "DIRECTION", "SESSION", "RTT", "CONNECTED"
    );
    for p in peers {
        let direction = match p.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        let rtt = p
            .rtt_us
            .map_or_else(|| "-".to_owned(), |us| format!("{:.3} ms", us as f64 / 1e3));
        let sources = if p.sources.is_empty() {
            "-".to_owned()
        } else {
            p.sources.join(",")
        };
        println!(
            "{:id_width$}  {:addr_width$}  {direction:9}  {:8}  {rtt:>10}  {:9}  {sources}",
            p.peer_id,
            p.addr,
            p.session,
            human_duration(p.connected_ms)
        );
    }
    Ok(ExitCode::SUCCESS)
}

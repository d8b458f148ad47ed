//! `knot status`: the running node's identity, addresses and counters,
//! through its control socket.
//!
//! # Format
//! One `key: value` line each; with `--json`: `{"peer_id","listen",
//! "inbound","outbound","uptime_ms","banned","reachability"}`.

use std::process::ExitCode;

use crate::control::{self, Request, Response};

use crate::CliResult;
use crate::settings::{Global, human_duration, print_json};

/// Arguments of `knot status`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(global: &Global, _args: Args) -> CliResult<ExitCode> {
    let Response::Status(s) = control::request(&global.data_dir()?, &Request::Status).await? else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("peer id:  {}", s.peer_id);
    match s.listen.as_slice() {
        [] => println!("listen:   (none)"),
        addrs => println!("listen:   {}", addrs.join(", ")),
    }
    println!(
        "peers:    {} ({} inbound, {} outbound)",
        s.inbound + s.outbound,
        s.inbound,
        s.outbound
    );
    println!("uptime:   {}", human_duration(s.uptime_ms));
    println!("banned:   {}", s.banned);
    println!("reachability: {}", s.reachability);
    Ok(ExitCode::SUCCESS)
}

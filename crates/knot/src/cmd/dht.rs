//! `knot dht put|get|provide|providers|find`: the running node's DHT,
//! through its control socket.
//!
//! Keys and values are UTF-8 text. Each command asks the node once; the
//! node runs the lookup (bounded by the control exchange) and answers.
//!
//! # Format
//! Text, then the `--json` object (the node's response, tagged):
//! - `put KEY VALUE`: `stored on N peers`;
//!   `{"response":"dht_stored","stored":N}`.
//! - `get KEY`: the value, then `publisher <id>` and `expires <ms since
//!   epoch>`, or `not found`;
//!   `{"response":"dht_record","record":{"value","publisher","expires_ms"}|null}`.
//! - `provide KEY`: `announced to N peers`; as `put`.
//! - `providers KEY`: one `<id> <addr>…` line per provider, or `no
//!   providers`; `{"response":"dht_providers","providers":[{"peer_id","addrs"}]}`.
//! - `find PEER`: `<id> <addr>…`, or `not found`;
//!   `{"response":"dht_peer","peer":{"peer_id","addrs"}|null}`.
//!
//! # Returns
//! Exit code 1 when nothing was found: no record, no provider, peer not
//! reached, or a put/provide that no peer acknowledged.

use std::process::ExitCode;

use crate::control::{self, DhtPeerEntry, Request, Response};

use crate::CliResult;
use crate::settings::{Global, print_json};

/// `knot dht …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Store VALUE under KEY (signed by the node) at the closest peers.
    Put {
        /// The record key.
        key: String,
        /// The value.
        value: String,
    },
    /// Look up the record under KEY.
    Get {
        /// The record key.
        key: String,
    },
    /// Announce the node as a provider of KEY.
    Provide {
        /// The key.
        key: String,
    },
    /// Find the providers of KEY.
    Providers {
        /// The key.
        key: String,
    },
    /// Find a peer by id.
    Find {
        /// The peer's id (base58).
        peer: String,
    },
}

fn peer_line(p: &DhtPeerEntry) -> String {
    format!("{} {}", p.peer_id, p.addrs.join(" "))
}

pub(crate) async fn run(global: &Global, cmd: Command) -> CliResult<ExitCode> {
    let request = match cmd {
        Command::Put { key, value } => Request::DhtPut { key, value },
        Command::Get { key } => Request::DhtGet { key },
        Command::Provide { key } => Request::DhtProvide { key },
        Command::Providers { key } => Request::DhtProviders { key },
        Command::Find { peer } => Request::DhtFind { peer },
    };
    let providing = matches!(request, Request::DhtProvide { .. });
    let response = control::request(&global.data_dir()?, &request).await?;
    let (hit, lines) = match &response {
        Response::DhtStored { stored } => {
            let verb = if providing {
                "announced to"
            } else {
                "stored on"
            };
            (*stored > 0, vec![format!("{verb} {stored} peers")])
        }
        Response::DhtRecord { record: Some(r) } => (
            true,
            vec![
                r.value.clone(),
                format!("publisher {}", r.publisher),
                format!("expires {}", r.expires_ms),
            ],
        ),
        Response::DhtRecord { record: None } | Response::DhtPeer { peer: None } => {
            (false, vec!["not found".to_owned()])
        }
        Response::DhtProviders { providers } if providers.is_empty() => {
            (false, vec!["no providers".to_owned()])
        }
        Response::DhtProviders { providers } => (true, providers.iter().map(peer_line).collect()),
        Response::DhtPeer { peer: Some(p) } => (true, vec![peer_line(p)]),
        _ => return Err("the node answered another request".into()),
    };
    if global.json {
        print_json(&response)?;
    } else {
        // Values and addresses come from peers.
        lines
            .iter()
            .for_each(|l| println!("{}", super::printable(l)));
    }
    Ok(if hit {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

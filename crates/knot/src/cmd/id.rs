//! `knot id`: create (if missing) and show the node's identity.
//!
//! # Returns
//! The PeerId (text), or `{"peer_id", "identity", "created"}` with `--json`.

use std::process::ExitCode;

use crate::control::create_private_dir;
use knotwork_core::Keypair;
use serde::Serialize;

use crate::CliResult;
use crate::settings::{Global, IDENTITY_FILE, print_json};

/// Arguments of `knot id`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

#[derive(Serialize)]
struct Output {
    peer_id: String,
    identity: String,
    created: bool,
}

pub(crate) fn run(global: &Global, _args: Args) -> CliResult<ExitCode> {
    let dir = global.data_dir()?;
    create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(IDENTITY_FILE);
    let created = !path.exists();
    let keypair = Keypair::load_or_generate(&path)
        .map_err(|e| format!("identity {}: {e}", path.display()))?;
    let out = Output {
        peer_id: keypair.peer_id().to_string(),
        identity: path.display().to_string(),
        created,
    };
    if global.json {
        print_json(&out)?;
    } else {
        println!("{}", out.peer_id);
        if created {
            eprintln!("created a new identity in {}", out.identity);
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `knot task submit KIND INPUT`: run a task on a peer of the running node,
//! through its control socket; and the built-in tasks `knot run --worker`
//! runs for peers.
//!
//! The node places the task on its least busy task peer and waits for the
//! result (within one control exchange; a task placed again after a
//! failure counts its attempts).
//!
//! # Format
//! `done <output hex> on <worker> in <ms> ms (<attempts> attempts)`, or the
//! outcome (`failed: <error>`, `exhausted`, `no_workers`, `cancelled`);
//! `--json`: `{"response":"task_result","id","worker","outcome","output",
//! "attempts","ms"}`.
//!
//! # Returns
//! Exit code 1 unless the task is `done`.

use std::process::ExitCode;

use crate::control::{self, Request, Response};
use knotwork_tasks::TasksService;

use crate::CliResult;
use crate::settings::{Global, print_json};

/// `knot task …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run a task of KIND with INPUT on a peer and print its result.
    Submit {
        /// The task kind (`fnv` on `knot run --worker` nodes).
        kind: String,
        /// The input (text).
        input: String,
    },
}

/// FNV-1a (64 bit) of `bytes`: the `fnv` task.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Registers the built-in tasks on the node's task service: `fnv` answers
/// the FNV-1a hash of its input, little-endian.
pub(crate) fn register_builtin(apps: &TasksService) {
    apps.tasks().register("fnv", |input: Vec<u8>| async move {
        Ok(fnv(&input).to_le_bytes().to_vec())
    });
}

pub(crate) async fn run(global: &Global, cmd: Command) -> CliResult<ExitCode> {
    let Command::Submit { kind, input } = cmd;
    let response =
        control::request(&global.data_dir()?, &Request::TaskSubmit { kind, input }).await?;
    let Response::TaskResult {
        worker,
        outcome,
        output,
        attempts,
        ms,
        ..
    } = &response
    else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&response)?;
    } else {
        let worker = worker.as_deref().unwrap_or("-");
        let output = output.as_deref().unwrap_or("");
        match outcome.as_str() {
            "done" => println!("done {output} on {worker} in {ms} ms ({attempts} attempts)"),
            "failed" => println!("failed: {output}"),
            other => println!("{other}"),
        }
    }
    Ok(if outcome == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

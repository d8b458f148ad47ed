//! `knot metrics`: the running node's metrics in the Prometheus text
//! format, through its control socket (the same text `knot run --metrics`
//! serves over HTTP). With `--json`: `{"response":"metrics","text"}`.

use std::process::ExitCode;

use crate::control::{self, Request, Response};

use crate::CliResult;
use crate::settings::{Global, print_json};

/// Arguments of `knot metrics`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(global: &Global, _args: Args) -> CliResult<ExitCode> {
    let response = control::request(&global.data_dir()?, &Request::Metrics).await?;
    let Response::Metrics { text } = &response else {
        return Err("the node answered another request".into());
    };
    if global.json {
        print_json(&response)?;
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

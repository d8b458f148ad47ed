//! `knot config`: the configuration file.

use std::process::ExitCode;

use crate::config::{EXAMPLE, FileConfig};

use crate::CliResult;
use crate::settings::{Global, print_json, resolve_dir};

/// `knot config …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Print a commented example knot.toml with every field at its default.
    Example,
    /// Check the configuration (file, KNOT_* variables, flags) and print it
    /// with every field filled in.
    Check,
    /// List the KNOT_* environment variables.
    Env,
}

pub(crate) fn run(global: &Global, cmd: Command) -> CliResult<ExitCode> {
    match cmd {
        Command::Example => print!("{EXAMPLE}"),
        Command::Check => {
            let mut config = global.file_config()?;
            config.validate()?;
            config.data_dir = resolve_dir(&config.data_dir);
            if global.json {
                print_json(&config)?;
            } else {
                print!("{}", toml::to_string(&config)?);
            }
        }
        Command::Env => {
            let vars = FileConfig::env_vars();
            if global.json {
                print_json(&vars)?;
            } else {
                vars.iter().for_each(|v| println!("{v}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

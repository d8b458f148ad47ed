//! `cargo xtask bench [--quick] [--pin CPU] [-- criterion args]`: the
//! workspace's criterion benches.
//!
//! Benches are built first on all cores, then run; with `--pin CPU` the run
//! (not the build) is wrapped in `taskset -c CPU`, so a whole measurement
//! stays on one core. `--quick` asks criterion for short runs, to check that
//! benches work rather than to measure. Each kind of measurement is one
//! [`Phase`] run the same way.

use std::process::Command;

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::shell;

/// How to run the measurements.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Short runs that only check the benches work.
    pub quick: bool,
    /// The CPU to pin measurements to.
    pub pin: Option<u32>,
    /// Extra criterion arguments (a benchmark filter, `--save-baseline x`).
    pub criterion_args: Vec<String>,
}

impl Options {
    fn parse(mut flags: Flags) -> Result<Self> {
        let quick = flags.flag("--quick");
        let pin = flags.value("--pin")?;
        let criterion_args = flags.finish()?;
        Ok(Self {
            quick,
            pin,
            criterion_args,
        })
    }
}

/// One kind of measurement: how to build it and how to run it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Every `[[bench]]` target of the workspace (criterion, `harness = false`).
    Criterion,
}

impl Phase {
    const ALL: &[Phase] = &[Phase::Criterion];

    /// Builds without measuring, on every core.
    fn build(self, project: &Project) -> Command {
        match self {
            Phase::Criterion => project.cargo(["bench", "--workspace", "--bench", "*", "--no-run"]),
        }
    }

    /// Measures (cargo only checks the build is fresh, then runs the benches).
    fn measure(self, project: &Project, opts: &Options) -> Command {
        match self {
            Phase::Criterion => {
                let mut cmd = project.cargo(["bench", "--workspace", "--bench", "*", "--"]);
                if opts.quick {
                    cmd.args([
                        "--quick",
                        "--warm-up-time",
                        "0.5",
                        "--measurement-time",
                        "1",
                    ]);
                }
                cmd.args(&opts.criterion_args);
                cmd
            }
        }
    }
}

/// The command.
pub fn run(project: &Project, flags: Flags) -> Result<()> {
    let opts = Options::parse(flags)?;
    for &phase in Phase::ALL {
        shell::run(&mut phase.build(project))?;
        let mut measure = phase.measure(project, &opts);
        match opts.pin {
            Some(cpu) => shell::run(&mut pinned(cpu, &measure)?)?,
            None => shell::run(&mut measure)?,
        }
    }
    Ok(())
}

/// `taskset -c CPU <cmd>`: the same command, its process tree held to one CPU.
fn pinned(cpu: u32, cmd: &Command) -> Result<Command> {
    if !shell::succeeds(Command::new("taskset").arg("--version")) {
        return Err(Error::unavailable(
            "--pin needs `taskset` (Linux, util-linux)",
        ));
    }
    let mut pinned = Command::new("taskset");
    pinned
        .arg("-c")
        .arg(cpu.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        pinned.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => pinned.env(key, value),
            None => pinned.env_remove(key),
        };
    }
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn pinned_keeps_program_args_dir_and_env() {
        let mut cmd = Command::new("cargo");
        cmd.args(["bench", "--"]).current_dir("/tmp").env("X", "1");
        let pinned = pinned(0, &cmd).unwrap();
        assert_eq!(shell::display(&pinned), "X=1 taskset -c 0 cargo bench --");
        assert_eq!(pinned.get_current_dir(), Some(std::path::Path::new("/tmp")));
    }
}

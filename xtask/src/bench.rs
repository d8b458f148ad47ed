//! `cargo xtask bench [--quick] [--pin CPU] [-- criterion args]`: the
//! workspace's criterion benches, then the loopback perf harness
//! (`benches/src/bin/perf`).
//!
//! Each phase is built first on all cores, then run. With `--pin CPU` the
//! criterion run (not the build) is wrapped in `taskset -c CPU`, so a whole
//! measurement stays on one core; the harness pins itself (its pinned
//! placement on CPU, default 0) because it also measures unpinned. `--quick`
//! asks for short runs, to check that benches work rather than to measure;
//! the quick harness is built in the dev profile, which `cargo xtask ci`
//! has built already. The harness writes `perf.json` and `perf.svg` to
//! `<target dir>/perf`. Each kind of measurement is one [`Phase`].

use std::path::PathBuf;
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
    /// The perf harness, `benches/src/bin/perf`: raw TCP against each layer.
    Harness,
}

impl Phase {
    const ALL: &[Phase] = &[Phase::Criterion, Phase::Harness];

    /// Builds without measuring, on every core.
    fn build(self, project: &Project, opts: &Options) -> Command {
        match self {
            Phase::Criterion => project.cargo(["bench", "--workspace", "--bench", "*", "--no-run"]),
            Phase::Harness => {
                let mut cmd = project.cargo(["build", "-p", "knotwork-benches", "--bin", "perf"]);
                if !opts.quick {
                    cmd.arg("--release");
                }
                cmd
            }
        }
    }

    /// Whether the phase places its own threads (else `--pin` wraps it in taskset).
    fn pins_itself(self) -> bool {
        matches!(self, Phase::Harness)
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
            Phase::Harness => {
                let mut cmd = project.cargo(["run", "-p", "knotwork-benches", "--bin", "perf"]);
                if !opts.quick {
                    cmd.arg("--release");
                }
                cmd.arg("--");
                if opts.quick {
                    cmd.arg("--quick");
                }
                cmd.arg("--cpu")
                    .arg(opts.pin.unwrap_or(0).to_string())
                    .arg("--out")
                    .arg(perf_dir(project));
                cmd
            }
        }
    }
}

/// Where the harness writes `perf.json` and `perf.svg`.
fn perf_dir(project: &Project) -> PathBuf {
    project.target_dir().join("perf")
}

/// The harness alone with `--quick`: what `cargo xtask ci` runs to check
/// that it works (no thresholds).
pub fn harness_quick(project: &Project) -> Result<()> {
    run_phase(
        project,
        Phase::Harness,
        &Options {
            quick: true,
            ..Options::default()
        },
    )
}

fn run_phase(project: &Project, phase: Phase, opts: &Options) -> Result<()> {
    shell::run(&mut phase.build(project, opts))?;
    let mut measure = phase.measure(project, opts);
    match opts.pin {
        Some(cpu) if !phase.pins_itself() => shell::run(&mut pinned(cpu, &measure)?),
        _ => shell::run(&mut measure),
    }
}

/// The command.
pub fn run(project: &Project, flags: Flags) -> Result<()> {
    let opts = Options::parse(flags)?;
    for &phase in Phase::ALL {
        run_phase(project, phase, &opts)?;
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

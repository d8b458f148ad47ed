//! `cargo xtask bench [--quick] [--pin CPU] [-- criterion args]`: the
//! workspace's criterion benches, then the loopback perf harness
//! (`benches/src/bin/perf`).
//!
//! `cargo xtask bench --instructions`: instructions per small message and
//! round trip, by layer, under callgrind (see [`crate::instructions`]).
//!
//! `cargo xtask bench --vs libp2p [--quick] [--pin CPU]`: the harness alone,
//! built (release) with its `libp2p` feature, rust-libp2p's rows beside
//! ours in both placements ([`Vs`]). `cargo xtask ci` never does this: it
//! would compile rust-libp2p.
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
use std::str::FromStr;

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
    /// Another stack measured beside ours (the harness alone).
    pub vs: Option<Vs>,
    /// Instructions per message under callgrind instead (`--instructions`).
    pub instructions: bool,
}

/// A stack the harness can measure beside knotwork (`--vs NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vs {
    /// rust-libp2p 0.57: TCP + Noise + yamux (the harness's `libp2p` feature).
    Libp2p,
}

impl FromStr for Vs {
    /// [`Flags::value`] names the flag and the value that is not a stack.
    type Err = ();

    fn from_str(name: &str) -> std::result::Result<Self, ()> {
        match name {
            "libp2p" => Ok(Vs::Libp2p),
            _ => Err(()),
        }
    }
}

impl Vs {
    /// The harness's cargo feature that builds the other stack's rows.
    fn feature(self) -> &'static str {
        match self {
            Vs::Libp2p => "libp2p",
        }
    }

    /// The harness groups that put its rows beside ours (bulk, stream
    /// ping-pong and connect, node request/response and connect), in both
    /// placements.
    fn groups(self) -> &'static str {
        match self {
            Vs::Libp2p => "bulk,stream,node,unpinned,libp2p",
        }
    }
}

impl Options {
    fn parse(mut flags: Flags) -> Result<Self> {
        let quick = flags.flag("--quick");
        let instructions = flags.flag("--instructions");
        let pin = flags.value("--pin")?;
        let vs = flags.value("--vs")?;
        let criterion_args = flags.finish()?;
        if vs.is_some() && !criterion_args.is_empty() {
            return Err(Error::failed(
                "--vs runs the perf harness alone: no criterion arguments",
            ));
        }
        Ok(Self {
            quick,
            pin,
            criterion_args,
            vs,
            instructions,
        })
    }

    /// A release build of the harness: always but for `--quick` alone,
    /// whose dev build `cargo xtask ci` has made already (a `--vs` build
    /// is never in CI, so it is built once, optimised).
    fn release(&self) -> bool {
        !self.quick || self.vs.is_some()
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
                harness_profile(&mut cmd, opts);
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
                harness_profile(&mut cmd, opts);
                cmd.arg("--");
                if opts.quick {
                    cmd.arg("--quick");
                }
                if let Some(vs) = opts.vs {
                    cmd.arg("--only").arg(vs.groups());
                }
                cmd.arg("--cpu")
                    .arg(opts.pin.unwrap_or(0).to_string())
                    .arg("--out")
                    .arg(perf_dir(project, opts));
                cmd
            }
        }
    }
}

/// The harness's profile and features: `--release` (see
/// [`Options::release`]) and the `--vs` stack's feature.
fn harness_profile(cmd: &mut Command, opts: &Options) {
    if opts.release() {
        cmd.arg("--release");
    }
    if let Some(vs) = opts.vs {
        cmd.arg("--features").arg(vs.feature());
    }
}

/// Where the harness writes `perf.json` and `perf.svg`: `<target>/perf`,
/// `<target>/perf/vs-libp2p` for `--vs libp2p`.
fn perf_dir(project: &Project, opts: &Options) -> PathBuf {
    let dir = project.target_dir().join("perf");
    match opts.vs {
        Some(vs) => dir.join(format!("vs-{}", vs.feature())),
        None => dir,
    }
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
    if opts.instructions {
        return crate::instructions::run(project);
    }
    let phases = if opts.vs.is_some() {
        &[Phase::Harness][..]
    } else {
        Phase::ALL
    };
    for &phase in phases {
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

    fn options(words: &str) -> Result<Options> {
        Options::parse(Flags::new(words.split_whitespace().map(str::to_owned)))
    }

    #[test]
    fn vs_libp2p_builds_the_feature_in_release_and_asks_for_its_groups() {
        let project = Project::locate().unwrap();
        let opts = options("--vs libp2p --quick --pin 1").unwrap();
        let build = shell::display(&Phase::Harness.build(&project, &opts));
        assert!(build.ends_with("--release --features libp2p"), "{build}");
        let run = shell::display(&Phase::Harness.measure(&project, &opts));
        assert!(
            run.contains("--release --features libp2p -- --quick --only bulk,stream,node,unpinned,libp2p --cpu 1 --out "),
            "{run}"
        );
        assert!(run.ends_with("vs-libp2p"), "{run}");
        // A plain quick run (what CI runs) stays a dev build without libp2p.
        let plain = options("--quick").unwrap();
        let build = shell::display(&Phase::Harness.build(&project, &plain));
        assert!(
            !build.contains("--release") && !build.contains("libp2p"),
            "{build}"
        );
        assert!(options("--vs quiche").is_err());
        assert!(options("--vs libp2p -- --save-baseline x").is_err());
    }
}

//! `cargo xtask ci [--fuzz-seconds N]`: every check CI runs, in order.
//!
//! Each step prints a banner, is timed, and the first failure stops the run
//! with the fix named. A summary table closes the run either way. Fuzzing
//! takes `--fuzz-seconds` (or `KNOTWORK_FUZZ_SECONDS`, default 10) per target.
//!
//! Interop suites run when their test target exists; a registered suite
//! whose test is not written yet shows as `skipped` in the summary. Once the
//! test exists, any missing prerequisite fails the run (no `--allow-skip`).

use std::env;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::{bench, chaos, fuzz, interop, lint, package, shell, test, testnet};

const DEFAULT_FUZZ_SECONDS: u64 = 10;

/// How a step that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    /// It passed; a short note for the summary (may be empty).
    Ok(String),
    /// It had nothing to run yet (the reason).
    Skipped(String),
}

/// A passed step with nothing to add.
fn ok(_: ()) -> Done {
    Done::Ok(String::new())
}

/// One check: what to run, and what to tell the person when it fails.
struct Step<'a> {
    name: String,
    fix: String,
    action: Box<dyn FnOnce() -> Result<Done> + 'a>,
}

impl<'a> Step<'a> {
    fn new(
        name: impl Into<String>,
        fix: impl Into<String>,
        action: impl FnOnce() -> Result<Done> + 'a,
    ) -> Self {
        Self {
            name: name.into(),
            fix: fix.into(),
            action: Box::new(action),
        }
    }
}

/// How a step ended, for the summary.
struct Record {
    name: String,
    took: Duration,
    status: &'static str,
    note: String,
}

/// The command.
pub fn run(project: &Project, mut flags: Flags) -> Result<()> {
    let fuzz_seconds = match flags.value("--fuzz-seconds")? {
        Some(seconds) => seconds,
        None => match env::var("KNOTWORK_FUZZ_SECONDS") {
            Ok(text) => text.parse().map_err(|_| {
                Error::failed(format!("KNOTWORK_FUZZ_SECONDS=`{text}` is not a number"))
            })?,
            Err(_) => DEFAULT_FUZZ_SECONDS,
        },
    };
    flags.finish()?;
    println!("ci: disk at the start: {}", disk_use(project));
    run_steps(steps(project, fuzz_seconds), || disk_use(project))
}

/// What the build trees take and what the disk has left, printed after each
/// step: a run that fills the disk fails in whichever step comes next, so
/// the log has to show where the space went.
fn disk_use(project: &Project) -> String {
    let mut parts: Vec<String> = [project.target_dir(), project.path("fuzz/target")]
        .iter()
        .filter(|dir| dir.is_dir())
        .filter_map(|dir| {
            let out = shell::output(Command::new("du").arg("-sk").arg(dir)).ok()?;
            let kib: u64 = out.split_whitespace().next()?.parse().ok()?;
            let name = dir.strip_prefix(project.root()).unwrap_or(dir);
            Some(format!("{} {}", name.display(), gib(kib)))
        })
        .collect();
    let free = shell::output(
        Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(project.root()),
    )
    .ok()
    .and_then(|out| out.lines().nth(1)?.trim().parse::<u64>().ok());
    if let Some(kib) = free {
        parts.push(format!("{} free", gib(kib)));
    }
    parts.join(", ")
}

/// KiB as GiB with one decimal.
fn gib(kib: u64) -> String {
    format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
}

fn steps(project: &Project, fuzz_seconds: u64) -> Vec<Step<'_>> {
    let mut steps = vec![
        Step::new("fmt", "run `cargo fmt --all` and commit the result", || {
            shell::run(&mut project.cargo(["fmt", "--all", "--", "--check"])).map(ok)
        }),
        Step::new(
            "clippy",
            "fix the warnings above; `cargo clippy --workspace --all-targets -- -D warnings` reproduces them",
            || {
                shell::run(&mut project.cargo([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))
                .map(ok)
            },
        ),
        Step::new(
            "test",
            "the failing tests are named above; `cargo xtask test` reproduces them",
            || test::run(project, &[]).map(|runner| Done::Ok(runner.to_string())),
        ),
        Step::new(
            "doc",
            "fix the rustdoc warnings above (missing docs, broken intra-doc links)",
            || {
                shell::run(
                    project
                        .cargo(["doc", "--workspace", "--no-deps"])
                        .env("RUSTDOCFLAGS", "-D warnings"),
                )
                .map(ok)
            },
        ),
        Step::new(
            "package",
            "fix the manifest named above; `cargo xtask package` reproduces it",
            || package::package(project, false).map(|n| Done::Ok(format!("{n} crates"))),
        ),
        Step::new(
            "features",
            "a crate does not build alone with the features named above; \
             `cargo xtask features` reproduces it",
            || package::features(project).map(|n| Done::Ok(format!("{n} crates × 2"))),
        ),
        Step::new(
            "fuzz",
            "an input that crashes a target is saved under fuzz/artifacts/<target>/",
            move || {
                let reports = fuzz::all_targets(project, fuzz_seconds)?;
                Ok(Done::Ok(
                    reports
                        .iter()
                        .map(|r| format!("{} {} runs/{fuzz_seconds}s", r.target, r.runs))
                        .collect::<Vec<_>>()
                        .join(", "),
                ))
            },
        ),
        Step::new(
            "perf quick",
            "the perf harness failed; `cargo xtask bench --quick` reproduces it",
            || bench::harness_quick(project).map(ok),
        ),
        Step::new(
            "lint ci",
            "fix the actionlint/shellcheck findings above",
            || lint::ci_files(project).map(ok),
        ),
    ];
    for suite in interop::SUITES {
        let test_file = suite.test_file(project);
        steps.push(Step::new(
            format!("interop {}", suite.name),
            format!("`cargo xtask interop {}` reproduces it", suite.name),
            move || {
                if !test_file.is_file() {
                    let reason = format!("{} not written yet", test_file.display());
                    println!("ci: skipping interop suite `{}`: {reason}", suite.name);
                    return Ok(Done::Skipped(reason));
                }
                interop::run_suite(project, suite, false).map(|_| Done::Ok(String::new()))
            },
        ));
    }
    steps.push(Step::new(
        "chaos --quick",
        "`cargo xtask chaos --quick` reproduces it (root; logs under /tmp/kwc-run-*)",
        || chaos::run_suite(project, true, false, None).map(ok),
    ));
    steps.push(Step::new(
        "testnet --quick",
        "`cargo xtask testnet --quick` reproduces it (root; report under <target>/testnet, logs under /tmp/kwt-run-*)",
        || testnet::run_plan(project, &testnet::Plan::quick()).map(ok),
    ));
    steps
}

fn run_steps(steps: Vec<Step<'_>>, disk: impl Fn() -> String) -> Result<()> {
    let total = steps.len();
    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    let mut records = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        println!("\n==> ci [{}/{total}] {}", i + 1, step.name);
        let start = Instant::now();
        let result = (step.action)();
        let took = start.elapsed();
        let (status, note) = match &result {
            Ok(Done::Ok(note)) => ("ok", note.clone()),
            Ok(Done::Skipped(reason)) => ("skipped", reason.clone()),
            Err(_) => ("FAILED", String::new()),
        };
        println!(
            "==> ci [{}/{total}] {}: {status} in {:.1} s ({})",
            i + 1,
            step.name,
            took.as_secs_f64(),
            disk()
        );
        records.push(Record {
            name: step.name.clone(),
            took,
            status,
            note,
        });
        if let Err(e) = result {
            print_summary(&records, &names);
            return Err(e
                .context(format!("ci step `{}`", step.name))
                .with_fix(step.fix));
        }
    }
    print_summary(&records, &names);
    let skipped = records.iter().filter(|r| r.status == "skipped").count();
    println!("ci: ok ({} steps ok, {skipped} skipped)", total - skipped);
    Ok(())
}

fn print_summary(records: &[Record], names: &[String]) {
    println!("\n==> ci summary");
    for r in records {
        println!(
            "  {:<16} {:<7} {:>7.1} s  {}",
            r.name,
            r.status,
            r.took.as_secs_f64(),
            r.note
        );
    }
    for name in names.iter().skip(records.len()) {
        println!("  {name:<16} not run");
    }
    let total: Duration = records.iter().map(|r| r.took).sum();
    println!("  {:<16} {:<7} {:>7.1} s", "total", "", total.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn stops_at_the_first_failure_and_names_the_fix() {
        let ran_last = Cell::new(false);
        let steps = vec![
            Step::new("a", "fix a", || Ok(Done::Skipped("nothing yet".into()))),
            Step::new("b", "fix b", || Err(Error::failed("broke"))),
            Step::new("c", "fix c", || {
                ran_last.set(true);
                Ok(ok(()))
            }),
        ];
        let err = run_steps(steps, String::new).unwrap_err();
        assert_eq!(err.to_string(), "ci step `b`: broke\n  fix: fix b");
        assert!(!ran_last.get());
    }

    #[test]
    fn runs_every_step_when_all_pass() {
        let count = Cell::new(0);
        let steps = (0..3)
            .map(|i| {
                Step::new(format!("s{i}"), "", || {
                    count.set(count.get() + 1);
                    Ok(ok(()))
                })
            })
            .collect();
        run_steps(steps, String::new).unwrap();
        assert_eq!(count.get(), 3);
    }

    #[test]
    fn every_step_names_a_fix() {
        let project = Project::locate().unwrap();
        let steps = steps(&project, 1);
        assert!(steps.iter().all(|s| !s.fix.is_empty()));
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names.get(..9),
            Some(
                &[
                    "fmt",
                    "clippy",
                    "test",
                    "doc",
                    "package",
                    "features",
                    "fuzz",
                    "perf quick",
                    "lint ci"
                ][..]
            )
        );
    }
}

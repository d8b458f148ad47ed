//! `cargo xtask ci [--fuzz-seconds N]`: every check CI runs, in order.
//!
//! Each step prints a banner, is timed, and the first failure stops the run
//! with the fix named. A summary table closes the run either way. Fuzzing
//! takes `--fuzz-seconds` (or `KNOTWORK_FUZZ_SECONDS`, default 10) per target.

use std::env;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::{fuzz, interop, lint, shell, test};

const DEFAULT_FUZZ_SECONDS: u64 = 10;

/// One check: what to run, and what to tell the person when it fails.
struct Step<'a> {
    name: String,
    fix: String,
    /// Runs the check; the text is a short note for the summary.
    action: Box<dyn FnOnce() -> Result<String> + 'a>,
}

impl<'a> Step<'a> {
    fn new(
        name: impl Into<String>,
        fix: impl Into<String>,
        action: impl FnOnce() -> Result<String> + 'a,
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
    ok: bool,
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
    run_steps(steps(project, fuzz_seconds))
}

fn steps(project: &Project, fuzz_seconds: u64) -> Vec<Step<'_>> {
    let mut steps = vec![
        Step::new("fmt", "run `cargo fmt --all` and commit the result", || {
            shell::run(&mut project.cargo(["fmt", "--all", "--", "--check"]))
                .map(|()| String::new())
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
                .map(|()| String::new())
            },
        ),
        Step::new(
            "test",
            "the failing tests are named above; `cargo xtask test` reproduces them",
            || test::run(project, &[]).map(|runner| runner.to_string()),
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
                .map(|()| String::new())
            },
        ),
        Step::new(
            "fuzz",
            "an input that crashes a target is saved under fuzz/artifacts/<target>/",
            move || {
                let reports = fuzz::all_targets(project, fuzz_seconds)?;
                Ok(reports
                    .iter()
                    .map(|r| format!("{} {} runs/{fuzz_seconds}s", r.target, r.runs))
                    .collect::<Vec<_>>()
                    .join(", "))
            },
        ),
        Step::new(
            "lint ci",
            "fix the actionlint/shellcheck findings above",
            || lint::ci_files(project).map(|()| String::new()),
        ),
    ];
    for suite in interop::SUITES {
        steps.push(Step::new(
            format!("interop {}", suite.name),
            format!("`cargo xtask interop {}` reproduces it", suite.name),
            move || interop::run_suite(project, suite, false).map(|_| String::new()),
        ));
    }
    steps
}

fn run_steps(steps: Vec<Step<'_>>) -> Result<()> {
    let total = steps.len();
    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    let mut records = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        println!("\n==> ci [{}/{total}] {}", i + 1, step.name);
        let start = Instant::now();
        let result = (step.action)();
        let took = start.elapsed();
        let ok = result.is_ok();
        records.push(Record {
            name: step.name.clone(),
            took,
            ok,
            note: result.as_ref().map(String::clone).unwrap_or_default(),
        });
        println!(
            "==> ci [{}/{total}] {}: {} in {:.1} s",
            i + 1,
            step.name,
            if ok { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
        if let Err(e) = result {
            print_summary(&records, &names);
            return Err(e
                .context(format!("ci step `{}`", step.name))
                .with_fix(step.fix));
        }
    }
    print_summary(&records, &names);
    println!("ci: ok, all {total} steps succeeded");
    Ok(())
}

fn print_summary(records: &[Record], names: &[String]) {
    println!("\n==> ci summary");
    for r in records {
        let status = if r.ok { "ok" } else { "FAILED" };
        println!(
            "  {:<16} {:<7} {:>7.1} s  {}",
            r.name,
            status,
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
            Step::new("a", "fix a", || Ok(String::new())),
            Step::new("b", "fix b", || Err(Error::failed("broke"))),
            Step::new("c", "fix c", || {
                ran_last.set(true);
                Ok(String::new())
            }),
        ];
        let err = run_steps(steps).unwrap_err();
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
                    Ok(String::new())
                })
            })
            .collect();
        run_steps(steps).unwrap();
        assert_eq!(count.get(), 3);
    }

    #[test]
    fn every_step_names_a_fix() {
        let project = Project::locate().unwrap();
        let steps = steps(&project, 1);
        assert!(steps.iter().all(|s| !s.fix.is_empty()));
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names.get(..6),
            Some(&["fmt", "clippy", "test", "doc", "fuzz", "lint ci"][..])
        );
    }
}

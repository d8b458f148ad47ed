//! `knot demo` end to end: it finishes by itself, every task has exactly one
//! verified result, the stopped worker's tasks were placed again, and the
//! text output shows the live view and the summary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use serde_json::Value;

fn knot() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knot"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

#[test]
fn demo_json_summary_has_every_task_verified_once() {
    let out = knot()
        .args(["--json", "demo", "--nodes", "4", "--tasks", "300"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["tasks"], 300);
    assert_eq!(summary["verified"], 300);
    assert_eq!(summary["wrong"], 0);
    assert_eq!(summary["duplicates"], 0);
    assert!(summary["retried"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["per_worker"].as_object().unwrap().len(), 3);
    assert!(summary["elapsed_ms"].as_u64().unwrap() < 60_000);
}

#[test]
fn demo_text_output_shows_progress_and_summary() {
    let out = knot()
        .args(["demo", "--nodes", "3", "--tasks", "100"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("mesh formed"), "{text}");
    assert!(text.contains("] "), "a progress line: {text}");
    assert!(text.contains("stopped worker"), "{text}");
    assert!(
        text.contains("100/100 verified, 0 wrong, 0 duplicates"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("ok"), "{text}");
}

#[test]
fn demo_refuses_too_few_nodes() {
    let out = knot().args(["demo", "--nodes", "2"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 3"));
}

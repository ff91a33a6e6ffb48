//! CI smoke test: run the load test against a real broker binary, crash it halfway, and require
//! a passing audit.
//!
//! The broker is `SWITCHBOARD_BIN` when set (absolute, or relative to the current directory or
//! the workspace root), else the one `cargo test --workspace` builds beside the load generator;
//! the test fails, saying how to build it, when there is none (it never skips). It runs
//! `switchboard-loadtest --broker-bin $SWITCHBOARD_BIN --rate 200 --duration 3 --agents 4
//! --customers 50 --numbers 2 --crash-after 1.5 --media-share 0.1 --json FILE` with a 120 s limit
//! and asserts exit status 0, `audit.passed == true` in the JSON, and that the broker fetched
//! media from the fake Graph API; a second run adds `--username-share 0.3` (username-only
//! customers, known by their user id alone) and must pass the same checks.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn smoke_against_broker_with_crash() {
    smoke(&[]);
}

/// A third of the customers are username-only: their conversations are keyed by user id and
/// their replies sent by `recipient`, through the same crash.
#[test]
fn smoke_with_username_only_customers_and_crash() {
    smoke(&["--username-share", "0.3"]);
}

fn smoke(extra: &[&str]) {
    let bin = common::broker_bin();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    let json_path = dir.path().join("smoke.json");
    let mut child = match Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .arg("--broker-bin")
        .arg(&bin)
        .args([
            "--rate",
            "200",
            "--duration",
            "3",
            "--agents",
            "4",
            "--customers",
            "50",
            "--numbers",
            "2",
            "--crash-after",
            "1.5",
            "--media-share",
            "0.1",
        ])
        .args(extra)
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start switchboard-loadtest: {e}"),
    };

    let status =
        common::wait_for_exit(&mut child, Duration::from_secs(120), "switchboard-loadtest");

    let text = std::fs::read_to_string(&json_path).unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    assert_eq!(
        report.pointer("/audit/passed"),
        Some(&serde_json::Value::Bool(true)),
        "audit did not pass (exit {status}); audit: {}",
        report
            .get("audit")
            .map(|a| a.to_string())
            .unwrap_or_else(|| "no JSON report".into())
    );
    assert!(
        status.success(),
        "switchboard-loadtest exited with {status}"
    );
    let acked = report
        .pointer("/webhooks/messages_acked")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    assert!(acked > 0, "no inbound message was acknowledged");
    let fetched = report
        .pointer("/fake_graph/media_downloaded")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    assert!(
        fetched > 0,
        "the broker fetched no media: {}",
        report["fake_graph"]
    );
}

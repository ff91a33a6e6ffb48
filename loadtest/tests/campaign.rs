//! Smoke test of campaign mode (`--campaign`): template sends across two numbers while an agent
//! replies on the first. Requires exit status 0 (no pair-rate violation at the fake Graph API,
//! every reply and every template send reached it) and a JSON report whose figures add up.
//! No timing is asserted: the figures are for BENCHMARKS.md, not for CI.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn campaign_mode_sends_every_template_within_the_pair_rate() {
    let bin = common::broker_bin();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    let json_path = dir.path().join("campaign.json");
    let mut child = match Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .arg("--broker-bin")
        .arg(&bin)
        .args([
            "--campaign",
            "200",
            "--numbers",
            "2",
            "--mps",
            "100",
            "--agents",
            "2",
            "--drain-timeout",
            "60",
        ])
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start switchboard-loadtest: {e}"),
    };
    let status = common::wait_for_exit(
        &mut child,
        Duration::from_secs(120),
        "switchboard-loadtest --campaign",
    );
    let text = std::fs::read_to_string(&json_path).unwrap_or_default();
    assert!(status.success(), "exit status {status}; report: {text}");
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("report is not JSON ({e}): {text}"),
    };
    assert_eq!(v["template_sends"], 200, "{v}");
    assert_eq!(v["accepted"], 200, "{v}");
    assert_eq!(v["drained"], true, "{v}");
    assert_eq!(v["pair_rate_violations"], 0, "{v}");
    assert_eq!(
        v["per_number"].as_array().map(Vec::len),
        Some(2),
        "a rate for each number: {v}"
    );
}

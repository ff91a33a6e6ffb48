//! Smoke test of mixed mode (`--mixed`): one broker takes webhooks at an open-loop rate, agents
//! claiming, replying and resolving, and a template campaign over two numbers, all at once.
//! Requires exit status 0 (the audit passed: no acknowledged message lost, no reply lost or sent
//! twice; the campaign drained with no refused send and no pair-rate violation) and one JSON
//! report with every part: the webhooks' acks, claims, the agents' replies at the fake Graph
//! API, the campaign's per-number rates and the audit. No timing is asserted: the figures are
//! for BENCHMARKS.md, not for CI.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn mixed_mode_reports_every_part_and_the_audit_passes() {
    let bin = common::broker_bin();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    let json_path = dir.path().join("mixed.json");
    let mut child = match Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .arg("--broker-bin")
        .arg(&bin)
        .args([
            "--mixed",
            "--rate",
            "200",
            "--duration",
            "3",
            "--agents",
            "2",
            "--campaign",
            "500",
            "--numbers",
            "2",
            "--mps",
            "200",
        ])
        .arg("--json")
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start switchboard-loadtest: {e}"),
    };
    let status = common::wait_for_exit(
        &mut child,
        Duration::from_secs(120),
        "switchboard-loadtest --mixed",
    );
    let mut summary = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut summary);
    }
    let text = std::fs::read_to_string(&json_path).unwrap_or_default();
    assert!(
        status.success(),
        "exit status {status}; summary:\n{summary}"
    );
    let v: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("report is not JSON ({e}): {text}"),
    };

    // The inbound side: webhooks acknowledged, none lost.
    assert_eq!(v["audit"]["passed"], true, "{summary}");
    let inbound = &v["audit"]["checks"]["inbound_stored_once"]["counts"];
    assert!(inbound["acked"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert_eq!(inbound["acked"], inbound["acked_stored_once"], "{summary}");
    assert!(
        v["achieved_rate"].as_f64().unwrap_or(0.0) > 0.0,
        "{summary}"
    );
    assert!(
        v["latency_ms"]["webhook_ack"]["count"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    // The agents: claims won, replies that reached the fake Graph API.
    assert!(
        v["agents"]["claims_won"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(v["latency_ms"]["claim"]["count"].as_u64().unwrap_or(0) > 0);
    assert!(
        v["latency_ms"]["reply_to_graph"]["count"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    // The campaign, on the same broker at the same time.
    let c = &v["campaign"];
    assert_eq!(c["template_sends"], 500, "{summary}");
    assert_eq!(c["accepted"], 500, "{summary}");
    assert_eq!(c["refused"], 0, "{summary}");
    assert_eq!(c["drained"], true, "{summary}");
    assert_eq!(c["pair_rate_violations"], 0, "{summary}");
    assert_eq!(c["mps"], 200, "{summary}");
    assert_eq!(
        c["per_number"].as_array().map(Vec::len),
        Some(2),
        "a rate for each number: {summary}"
    );
    assert!(c["reply_to_graph"].is_object(), "{summary}");
    assert_eq!(v["settings"]["mixed"], true);
    // The campaign's templates and the agents' replies both reached the fake Graph API.
    let accepted = v["fake_graph"]["accepted"].as_u64().unwrap_or(0);
    let replies = v["agents"]["replies_accepted"].as_u64().unwrap_or(0);
    assert!(
        accepted >= 500 + replies,
        "{accepted} sends for 500 templates and {replies} replies"
    );
    for part in ["mixed ", "campaign ", "pair rate ", "audit      PASS"] {
        assert!(
            summary.contains(part),
            "no `{part}` in the summary:\n{summary}"
        );
    }
}

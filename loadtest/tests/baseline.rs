//! `--serve-baseline`, the process `--baseline` starts by default: it prints its loopback address
//! on its first stdout line and answers any POST with 200, until it is killed.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn the_baseline_process_prints_its_address_and_answers_200() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .arg("--serve-baseline")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the load generator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("baseline listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let body = r#"{"object":"whatsapp_business_account"}"#;
    let mut conn = TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    child.kill().expect("kill");
    child.wait().expect("reap");
}

/// `--baseline-rounds 2` against a real broker (`SWITCHBOARD_BIN` or the one built beside the
/// load generator, as in the smoke test): two rounds each report a ratio, the broker's CPU is
/// split between its slices and the baseline's, and the audit still passes.
#[test]
fn baseline_rounds_alternate_with_the_broker() {
    let bin = common::broker_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("rounds.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .arg("--broker-bin")
        .arg(&bin)
        .args([
            "--rate",
            "500",
            "--duration",
            "2",
            "--agents",
            "0",
            "--customers",
            "50",
            "--baseline",
            "--baseline-rounds",
            "2",
            "--json",
        ])
        .arg(&json)
        .stdin(Stdio::null())
        .spawn()
        .expect("run the load generator");
    let status = common::wait_for_exit(
        &mut child,
        std::time::Duration::from_secs(120),
        "switchboard-loadtest --baseline-rounds",
    );
    assert!(status.success(), "exit status {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    assert_eq!(report["audit"]["passed"], true, "{report:#}");
    let b = &report["baseline"];
    assert_eq!(b["rounds"], 2, "{b:#}");
    let ratios = b["round_ratios"].as_array().expect("round_ratios");
    assert_eq!(ratios.len(), 2, "{b:#}");
    assert!(
        ratios.iter().all(|r| r.as_f64().unwrap_or(0.0) > 0.0),
        "{b:#}"
    );
    // Open loop at 500/s: both targets got the whole schedule, one second per round each.
    assert_eq!(b["load"]["scheduled"], 1000, "{b:#}");
    assert!(
        report["achieved_rate"].as_f64().unwrap_or(0.0) > 0.0,
        "{report:#}"
    );
    assert!(b["broker_cpu_s"].as_f64().unwrap_or(0.0) > 0.0, "{b:#}");
    assert!(
        b["broker_cpu_during_baseline_s"].as_f64().is_some(),
        "{b:#}"
    );
}

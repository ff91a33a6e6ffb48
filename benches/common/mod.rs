//! Helpers shared by the benches in `benches/`, so that each bench file holds only what it measures.
//!
//! - [`broker_config`]: the TOML configuration of an in-process broker (`claim`, `reactivation`,
//!   `memory`), with [`NUMBER`] as its only phone number and optionally one agent, [`AGENT`];
//! - [`webhook_body`]: a Meta webhook body carrying one text message per customer (`claim`,
//!   `reactivation`, `webhook`);
//! - [`criterion`]: the criterion settings every criterion bench uses (short, for a small shared VM);
//! - [`typical_ns`] (with [`criterion_dir`]): reads back criterion's estimate of a benchmark this
//!   process measured, for the ratios `claim` and `durable_write` print at the end.
//!
//! Each bench includes this file with `mod common;`. Cargo does not take `benches/common/mod.rs`
//! for a bench target of its own (only `benches/*.rs` and `benches/*/main.rs` are discovered).
//! Every bench compiles the whole module but uses only part of it, hence the `#[allow(dead_code)]`
//! on the items some bench does not use.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use serde_json::json;

use switchboard::Config;

/// The business phone number id every bench broker and webhook body uses.
pub const NUMBER: &str = "106540352242922";

/// The id of the agent [`broker_config`] configures when asked for one.
#[allow(dead_code)]
pub const AGENT: &str = "bench-agent";

/// The configuration of an in-process bench broker: listening on 127.0.0.1:0, storage in `dir`
/// with the given `sync`, WhatsApp credentials that nothing checks and a Graph API address nobody
/// answers, [`NUMBER`] routed to the team `support`, and, if `agent_max_concurrent` is given, one
/// agent [`AGENT`] of that team allowed that many conversations at once.
#[allow(dead_code)]
pub fn broker_config(
    dir: &Path,
    sync: bool,
    idle_timeout_ms: u64,
    agent_max_concurrent: Option<u32>,
) -> Config {
    let path = dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[storage]
path = "{path}"
sync = {sync}

[whatsapp]
app_secret = "bench-secret"
verify_token = "bench-verify"
access_token = "bench-access"
waba_id = "102290129340398"
graph_api_base = "http://127.0.0.1:9/v25.0"

[conversations]
idle_timeout_ms = {idle_timeout_ms}

[[numbers]]
phone_number_id = "{NUMBER}"
display_phone_number = "15550783881"
default_team = "support"

[[teams]]
id = "support"
name = "Support"
"#
    );
    if let Some(max_concurrent) = agent_max_concurrent {
        text.push_str(&format!(
            r#"
[[agents]]
id = "{AGENT}"
name = "Bench"
token = "bench-token"
teams = ["support"]
role = "agent"
max_concurrent = {max_concurrent}
"#
        ));
    }
    Config::from_toml_str(&text).expect("bench config is valid")
}

/// One webhook body for [`NUMBER`] (one entry, one change) with `n` text messages "Does it come in
/// another color?", one per customer. `customer(i)` gives the `i`-th customer's profile name,
/// `wa_id` and message id (wamid).
#[allow(dead_code)]
pub fn webhook_body(n: usize, customer: impl Fn(usize) -> (String, String, String)) -> Vec<u8> {
    let customers: Vec<_> = (0..n).map(customer).collect();
    let contacts: Vec<_> = customers
        .iter()
        .map(|(name, wa_id, _)| json!({"profile": {"name": name}, "wa_id": wa_id}))
        .collect();
    let messages: Vec<_> = customers
        .iter()
        .map(|(_, wa_id, wamid)| {
            json!({
                "from": wa_id,
                "id": wamid,
                "timestamp": "1749416383",
                "type": "text",
                "text": {"body": "Does it come in another color?"}
            })
        })
        .collect();
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": NUMBER},
                    "contacts": contacts,
                    "messages": messages
                }
            }]
        }]
    });
    serde_json::to_vec(&body).expect("serialize webhook body")
}

/// The criterion settings of every criterion bench here: warm-up 1 s, measurement 3 s, 10 samples
/// (meant for a small shared VM; expect noise).
#[allow(dead_code)]
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
}

/// Where criterion writes its results (same rules as criterion 0.5 itself, minus `cargo metadata`).
#[allow(dead_code)]
pub fn criterion_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("criterion")
}

/// Typical time per iteration (ns), the middle figure criterion prints on its `time:` line, of the
/// benchmark at `path` under [`criterion_dir`] (group, function, parameter if any) if this process
/// measured it (its estimates were written at or after `since`).
#[allow(dead_code)]
pub fn typical_ns(path: &[&str], since: SystemTime) -> Option<f64> {
    let mut p = criterion_dir();
    for part in path {
        p.push(part);
    }
    p.push("new");
    p.push("estimates.json");
    let fresh = std::fs::metadata(&p).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
    // Criterion prints the slope estimate when it has one (linear sampling), else the mean.
    v["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| v["mean"]["point_estimate"].as_f64())
}

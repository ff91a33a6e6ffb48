//! Switchboard's black-box integration tests, in one test binary.
//!
//! One binary links the broker (and RocksDB) once instead of once per file: every file under
//! tests/it/ is a module here, and the harness they share is `common`. Tests are named
//! `<module>::<test>` (`cargo test --test it webhook::`). A new test file goes here too, as a
//! module, not beside this directory: `every_integration_test_is_in_this_binary` checks it.
//!
//! Metrics are process-wide, so tests that assert exact metric values run alone in a child
//! process (`common::alone`).

mod common;

mod access;
mod access_table;
mod api;
mod assignment;
mod automation;
mod automation_flows;
mod bot_handback;
mod bot_provider;
mod bot_routing;
mod coexistence;
mod config;
mod connections;
mod console;
mod contract_errors;
mod conversations;
mod crash;
mod csat;
mod delivery;
mod events;
mod found_by_fuzzing;
mod identity;
mod idle;
mod layering;
mod list_paging;
mod loose_input;
mod media;
mod message_types;
mod metrics;
mod outbound;
mod outbound_rich;
mod outbox_lanes;
mod outbox_metrics;
mod people;
mod reports;
mod routing;
mod start_conversation;
mod storage_failure;
mod teams;
mod templates;
mod templates_bulk;
mod webhook;
mod webhook_kept;
mod webhook_props;

/// tests/ holds this binary's directory and the fixtures, no test file of its own: each would be
/// a test binary linking RocksDB again.
#[test]
fn every_integration_test_is_in_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let stray: Vec<String> = std::fs::read_dir(&tests)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", tests.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    assert!(
        stray.is_empty(),
        "move {stray:?} under tests/it/ as modules of tests/it/main.rs"
    );
}

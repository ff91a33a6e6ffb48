//! Running one test in a process of its own.
//!
//! Every integration test shares one test binary, so one process, and metrics are process-wide:
//! brokers started by tests running in parallel add to the same counters and set the same gauges.
//! A test that asserts an exact value (a gauge at 0, a counter moved by exactly one, a per-number
//! count) starts with `if reran_alone!() { return; }`: the test binary runs that test again, alone
//! (`--exact`, one thread), in a child process, and the parent passes when the child did.

use std::process::Command;

/// Set in the child to the name of the test it runs alone.
pub const ALONE_ENV: &str = "SWITCHBOARD_TEST_ALONE";

/// True in the parent, once the calling test has passed in a child process of its own (the
/// caller then returns); false in that child, which runs the test's body. Panics when the child
/// failed or did not run exactly this one test (so a wrong name cannot pass silently).
macro_rules! reran_alone {
    () => {{
        fn here() {}
        $crate::common::rerun_alone(::std::any::type_name_of_val(&here))
    }};
}
pub(crate) use reran_alone;

/// See [`reran_alone!`]: `here` is the type name of a function item declared in the test's body
/// (`it::module::test_name::{{closure}}::here` or `it::module::test_name::here`).
pub fn rerun_alone(here: &str) -> bool {
    let test = test_name(here);
    if std::env::var(ALONE_ENV).as_deref() == Ok(test.as_str()) {
        return false;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no test binary path: {e}"));
    let out = Command::new(&exe)
        .args([test.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE_ENV, &test)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} alone: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test}, run alone in a child process, did not pass ({}):\n{stdout}\n{stderr}",
        out.status
    );
    true
}

/// `it::idle::passivated::{{closure}}::here` → `idle::passivated` (libtest's name: the path
/// without the crate and without what the test's body adds).
fn test_name(here: &str) -> String {
    let path: Vec<&str> = here
        .split("::")
        .skip(1)
        .filter(|s| *s != "{{closure}}")
        .collect();
    path[..path.len().saturating_sub(1)].join("::")
}

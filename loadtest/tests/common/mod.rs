//! What the load generator's integration tests share.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The broker binary the runs start: `SWITCHBOARD_BIN` (absolute, or relative to the current
/// directory or the workspace root) when set; otherwise the broker built into the same target
/// directory as this test's load generator (`target/debug/switchboard` after
/// `cargo test --workspace`, which builds it). Panics, saying how to get one, when neither
/// exists: a smoke test that skips would pass without testing anything.
pub fn broker_bin() -> PathBuf {
    let bin = match std::env::var_os("SWITCHBOARD_BIN") {
        Some(raw) => resolve(PathBuf::from(raw)),
        None => beside_the_load_generator(),
    };
    assert!(
        bin.is_file(),
        "no broker binary at {}: build it with `cargo build --bin switchboard` (or run \
         `cargo test --workspace`, which builds it), or point SWITCHBOARD_BIN at one",
        bin.display()
    );
    bin
}

fn resolve(p: PathBuf) -> PathBuf {
    if p.is_absolute() || p.exists() {
        return p;
    }
    // Relative to the workspace root (this crate lives in <root>/loadtest).
    match Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        Some(root) if root.join(&p).exists() => root.join(p),
        _ => p,
    }
}

/// `<target>/<profile>/switchboard`, next to `<target>/<profile>/switchboard-loadtest`.
fn beside_the_load_generator() -> PathBuf {
    let loadgen = Path::new(env!("CARGO_BIN_EXE_switchboard-loadtest"));
    loadgen.with_file_name(format!("switchboard{}", std::env::consts::EXE_SUFFIX))
}

/// Waits for a started `switchboard-loadtest` run to exit, at most `limit`; kills it and panics
/// (naming the run `what`) beyond that, so a hung run fails the test instead of hanging CI.
pub fn wait_for_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {} s", limit.as_secs());
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

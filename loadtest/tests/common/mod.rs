//! What the load generator's integration tests share.

use std::path::{Path, PathBuf};

/// The broker binary the runs start: `SWITCHBOARD_BIN`, absolute, or relative to the current
/// directory or the workspace root. None when unset (the test then skips with a note, so
/// `cargo test` works before the broker is built).
pub fn broker_bin() -> Option<PathBuf> {
    let raw = std::env::var_os("SWITCHBOARD_BIN")?;
    let p = PathBuf::from(raw);
    if p.is_absolute() || p.exists() {
        return Some(p);
    }
    // Relative to the workspace root (this crate lives in <root>/loadtest).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join(&p);
    Some(if root.exists() { root } else { p })
}

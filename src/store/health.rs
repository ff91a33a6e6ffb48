//! Whether storage works: failing commits (RocksDB stopped taking writes) and commits that hang,
//! for `/healthz` and the supervisor; what RocksDB holds in memory, for `/metrics`; plus the fault
//! injection their tests use.

use super::*;

impl Store {
    /// Whether the last group commit failed (and none has succeeded since).
    pub fn is_failing(&self) -> bool {
        *self.inner.health.failing.borrow()
    }

    /// How long the group commit in progress has been running, if one is (a hung disk shows
    /// here first: nothing fails, everything waits).
    pub fn commit_running_for(&self) -> Option<Duration> {
        self.inner.health.busy_for()
    }

    /// Sets the storage memory gauges (called at scrape). Here rather than in `metrics`, which
    /// only names series: metrics depends on nothing, so the store can count its commits there.
    pub async fn publish_memory(&self) {
        let u = match self.memory().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read storage memory");
                return;
            }
        };
        for (kind, v) in [
            ("memtables", u.memtables),
            ("block_cache", u.block_cache),
            ("table_readers", u.table_readers),
        ] {
            metrics::gauge!(crate::metrics::STORE_MEMORY, "kind" => kind).set(v as f64);
        }
    }

    /// Returns once commits have been failing, with none succeeding, for `persisting`.
    pub async fn failed_for(&self, persisting: Duration) {
        let mut rx = self.inner.health.failing.subscribe();
        loop {
            // (`map` drops the watch's read guard before the next await.)
            if rx.wait_for(|failing| *failing).await.map(|_| ()).is_err() {
                return std::future::pending().await;
            }
            let recovered = rx.wait_for(|failing| !*failing);
            let recovered = async { recovered.await.map(|_| ()) };
            match tokio::time::timeout(persisting, recovered).await {
                Err(_) => return,
                Ok(Err(_)) => return std::future::pending().await,
                Ok(Ok(())) => {} // a commit succeeded meanwhile
            }
        }
    }

    /// Makes every commit wait `stall` before writing, as on a hung disk (zero: none). For
    /// tests only.
    #[doc(hidden)]
    pub fn inject_write_stall(&self, stall: Duration) {
        self.inner.health.inject_stall_ms.store(
            stall.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// While `failing`, every commit fails without writing, as on a failing disk. For tests of
    /// the failure path only.
    #[doc(hidden)]
    pub fn inject_write_failure(&self, failing: bool) {
        self.inner
            .health
            .inject_failure
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }
}

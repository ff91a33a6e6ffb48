//! Short scheduler slices for the threads that latency-critical work waits on.
//!
//! Linux's EEVDF scheduler (6.6+) gives every runnable thread a virtual deadline one *slice*
//! after it becomes eligible; since 6.12 a thread may ask for its own slice (`sched_setattr`
//! with `sched_runtime` under `SCHED_OTHER`, clamped by the kernel to 0.1–100 ms), and a woken
//! thread with a shorter slice than the running one may preempt it. The default slice is a few
//! milliseconds, which is how long a thread woken on a busy core can wait before it runs. The
//! agents' lane and the group-commit writer sleep and wake once or twice per claim, each for
//! microseconds of work, and every such wait lands in a claim's latency; the webhook workers
//! keep the default and yield to them. Measured in BENCHMARKS.md (stop 17).
//!
//! Invariants: best effort and nothing else. Policy and nice value are read back and kept; a
//! kernel without custom slices (older than 6.12, or not Linux) leaves the default, and no
//! privilege is needed or used. It changes when a thread runs, never what it does. A crate of
//! its own so the broker and the load generator (for the thread that times claims) share it.

/// The slice asked for: the kernel's minimum. These threads run for microseconds per wake-up.
pub const SHORT_SLICE_NS: u64 = 100_000;

/// Asks for a short slice for the calling thread; returns whether the kernel took it.
pub fn request_short_slice() -> bool {
    imp::request(SHORT_SLICE_NS)
}

#[cfg(target_os = "linux")]
mod imp {
    /// `struct sched_attr` (SCHED_ATTR_SIZE_VER1, include/uapi/linux/sched/types.h).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
        sched_util_min: u32,
        sched_util_max: u32,
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;

    /// The calling thread's attributes, if the kernel tells them.
    fn current() -> Option<SchedAttr> {
        let size = std::mem::size_of::<SchedAttr>() as u32;
        let mut attr = SchedAttr {
            size,
            ..SchedAttr::default()
        };
        // SAFETY: the kernel writes at most `size` bytes into `attr`, a live, properly sized
        // `#[repr(C)]` value; pid 0 is the calling thread.
        let got = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        (got == 0).then_some(attr)
    }

    /// Policy, nice value and slice (`sched_runtime`) of the calling thread.
    #[cfg(test)]
    pub fn policy_nice_slice() -> Option<(u32, i32, u64)> {
        current().map(|a| (a.sched_policy, a.sched_nice, a.sched_runtime))
    }

    pub fn request(slice_ns: u64) -> bool {
        let Some(mut attr) = current() else {
            return false;
        };
        if !matches!(attr.sched_policy, SCHED_OTHER | SCHED_BATCH) {
            return false;
        }
        attr.size = std::mem::size_of::<SchedAttr>() as u32;
        attr.sched_flags = 0;
        attr.sched_runtime = slice_ns;
        // SAFETY: the kernel only reads `attr`, a live `#[repr(C)]` value of the size it states;
        // pid 0 is the calling thread.
        let set =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        set == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn request(_slice_ns: u64) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_granted_slice_is_the_one_asked_for_and_nothing_else_changes() {
        // A thread of its own: the test harness's threads keep their slices.
        let checked = std::thread::spawn(|| {
            let before = imp::policy_nice_slice().expect("sched_getattr");
            let granted = request_short_slice();
            let after = imp::policy_nice_slice().expect("sched_getattr");
            if granted {
                assert_eq!(after, (before.0, before.1, SHORT_SLICE_NS));
            } else {
                assert_eq!(after, before, "a refused request changed the thread");
            }
        })
        .join();
        assert!(checked.is_ok());
    }
}

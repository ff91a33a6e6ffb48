//! The allocator's settings: jemalloc gives memory back to the OS when the broker goes idle.
//!
//! The broker's binary allocates through jemalloc, for Rust and (unprefixed) for RocksDB's C++
//! (`src/main.rs`). Out of the box jemalloc returns freed pages to the OS only as a side effect of
//! later allocations in the same arena: a broker that goes quiet after a burst keeps its peak RSS
//! for as long as it stays quiet (issue 17: 222 MB at the peak of 200k customers, still 214 MB
//! after every actor had passivated). [`MALLOC_CONF`] turns on jemalloc's background purging
//! thread and shortens the decay of unused dirty and muzzy pages to [`DECAY_MS`], so freed memory
//! goes back within seconds of the load ending, off the request path.
//!
//! Invariants:
//! - the settings reach jemalloc through a `malloc_conf` symbol defined by the executable
//!   ([`jemalloc_conf!`]): jemalloc reads it once, before `main`, so it cannot be set later;
//! - [`settings`] reads back what jemalloc actually runs with (`opt.*` and the live
//!   `background_thread`), and the binary logs it at start-up: a string jemalloc rejected shows
//!   up there as the defaults, not silently;
//! - nothing here allocates or locks on a request path: it runs once at start-up.

use std::ffi::c_char;

/// How long unused dirty pages (and then muzzy ones) linger before jemalloc purges them. Short
/// enough that RSS follows an idle broker down within seconds, long enough that steady load reuses
/// its pages instead of purging and faulting them in again (jemalloc's default is 10 s).
pub const DECAY_MS: u64 = 1000;

/// jemalloc's options string (NUL-terminated, as `malloc_conf` must be). Keep [`DECAY_MS`] in it.
pub const MALLOC_CONF: &str = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

/// [`MALLOC_CONF`] as the C string pointer jemalloc reads (for [`jemalloc_conf!`]).
pub const MALLOC_CONF_PTR: &c_char = {
    // SAFETY: a `&'static str`'s first byte reinterpreted as a C `char` (same size and
    // alignment); the string ends with the NUL jemalloc scans for.
    unsafe { &*MALLOC_CONF.as_ptr().cast::<c_char>() }
};

/// Defines the `malloc_conf` symbol jemalloc reads before `main` ([`MALLOC_CONF`]). Invoke once,
/// at the top level of an executable that uses `tikv_jemallocator` (the broker's binary, and any
/// bench or test that wants the same allocator behaviour). jemalloc's own symbol is weak, so this
/// definition wins at link time.
#[macro_export]
macro_rules! jemalloc_conf {
    () => {
        #[cfg(not(target_env = "msvc"))]
        #[allow(non_upper_case_globals)]
        // jemalloc keeps its `_rjem_` prefix where unprefixed malloc is unsupported.
        #[cfg_attr(
            any(
                target_os = "android",
                target_os = "dragonfly",
                target_vendor = "apple"
            ),
            export_name = "_rjem_malloc_conf"
        )]
        #[cfg_attr(
            not(any(
                target_os = "android",
                target_os = "dragonfly",
                target_vendor = "apple"
            )),
            no_mangle
        )]
        pub static malloc_conf: Option<&'static ::std::ffi::c_char> =
            Some($crate::alloc::MALLOC_CONF_PTR);
    };
}

/// What jemalloc runs with, read back with `mallctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `opt.background_thread`: purging by a background thread was asked for.
    pub background_thread_opt: bool,
    /// `background_thread`: the background threads are enabled now.
    pub background_thread: bool,
    /// `opt.dirty_decay_ms` (-1: never purge).
    pub dirty_decay_ms: i64,
    /// `opt.muzzy_decay_ms` (-1: never purge).
    pub muzzy_decay_ms: i64,
}

impl Settings {
    /// Whether these are the settings [`MALLOC_CONF`] asks for.
    pub fn as_configured(&self) -> bool {
        let decay = DECAY_MS as i64;
        self.background_thread_opt
            && self.background_thread
            && self.dirty_decay_ms == decay
            && self.muzzy_decay_ms == decay
    }
}

/// Reads jemalloc's settings; `None` where jemalloc is not the allocator (msvc) or a read failed.
pub fn settings() -> Option<Settings> {
    #[cfg(not(target_env = "msvc"))]
    {
        Some(Settings {
            background_thread_opt: read::<bool>(b"opt.background_thread\0")?,
            background_thread: read::<bool>(b"background_thread\0")?,
            dirty_decay_ms: read::<isize>(b"opt.dirty_decay_ms\0")? as i64,
            muzzy_decay_ms: read::<isize>(b"opt.muzzy_decay_ms\0")? as i64,
        })
    }
    #[cfg(target_env = "msvc")]
    {
        None
    }
}

/// Logs [`settings`] once (start-up), as a warning when they are not [`MALLOC_CONF`]'s.
pub fn log_settings() {
    match settings() {
        Some(s) if s.as_configured() => tracing::info!(
            background_thread = s.background_thread,
            dirty_decay_ms = s.dirty_decay_ms,
            muzzy_decay_ms = s.muzzy_decay_ms,
            "allocator returns idle memory"
        ),
        Some(s) => tracing::warn!(
            background_thread = s.background_thread,
            dirty_decay_ms = s.dirty_decay_ms,
            muzzy_decay_ms = s.muzzy_decay_ms,
            "allocator settings are not the configured ones; idle memory may stay resident"
        ),
        None => tracing::warn!("allocator settings unreadable"),
    }
}

/// One `mallctl` read of a plain value named by a NUL-terminated `name`.
#[cfg(not(target_env = "msvc"))]
fn read<T: Copy + Default>(name: &[u8]) -> Option<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    // SAFETY: `name` is NUL-terminated; `value` is a writable `T` of `len` bytes, the type
    // jemalloc documents for each name read here (bool, ssize_t); no new value is written.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            (&mut value as *mut T).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0 && len == std::mem::size_of::<T>()).then_some(value)
}

#[cfg(all(test, not(target_env = "msvc")))]
mod tests {
    use super::*;

    // This test binary gets the same `malloc_conf` as the broker's.
    crate::jemalloc_conf!();

    #[test]
    fn conf_string_is_in_effect() {
        assert!(MALLOC_CONF.contains(&format!("dirty_decay_ms:{DECAY_MS},")));
        assert!(MALLOC_CONF.contains(&format!("muzzy_decay_ms:{DECAY_MS}\0")));
        // Allocate through jemalloc so it is initialised from `malloc_conf` before reading.
        let v = std::hint::black_box(vec![0u8; 1 << 20]);
        drop(v);
        let s = settings().expect("jemalloc settings readable");
        assert!(s.as_configured(), "{s:?}");
    }
}

//! Keeping an idle daemon's private memory small: glibc malloc and thread-stack tuning.
//!
//! A shim's work comes in bursts (create, start, exec, stats) between long idle stretches,
//! and whatever the allocator keeps from a burst stays private memory of every shim on the
//! node. Four glibc defaults cost most of it:
//! - per-thread arenas: one arena for the process ([`tune`], `M_ARENA_MAX`);
//! - fastbins: freed small chunks stay out of the free lists, so they neither coalesce nor
//!   can be trimmed ([`tune`], `M_MXFAST`);
//! - per-thread caches (tcache): up to 7 freed chunks per size class and thread, the same
//!   way; a burst leaves them scattered over the heap, each pinning its page (the tunable
//!   `glibc.malloc.tcache_count`);
//! - the cache of ended threads' stacks (up to 40 MiB): every thread that ever ran alongside
//!   another leaves its stack mapped, 8 to 24 KiB of it resident (the tunable
//!   `glibc.pthread.stack_cache_size`; [`crate::transient`] joins ended threads, so that
//!   their stacks are unmapped at once).
//!
//! The heap is trimmed ([`release_free_memory`]) when a burst is over, see
//! [`crate::transient`]. Measured on an idle shim with one sleeping container (static build),
//! together with that: heap 84 → 36 KiB, anonymous memory 224 → 120 KiB. None of this is
//! on a hot path: the cost is an uncontended lock per allocation (one arena, as before) and
//! an `mmap` per thread start.
//!
//! Tunables can only be set through the environment of a starting process, so `start`
//! passes them to the daemon it spawns ([`daemon_tunables`]) and the daemon takes them out
//! of its environment again ([`restore_environment`]): runc and the logging
//! binaries it starts see the environment containerd gave. A daemon started otherwise (by
//! hand, with `-socket`) runs with glibc's defaults, only a little larger.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The variable glibc reads its tunables from.
pub(crate) const TUNABLES_VARIABLE: &str = "GLIBC_TUNABLES";
/// What `start` puts in front of any tunables it was given (later entries win, so the
/// administrator's own settings still apply).
const DAEMON_TUNABLES: &str = "glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0";

/// The `GLIBC_TUNABLES` value for the daemon `start` is about to spawn: ours in front of
/// any already set (later entries win, so an administrator's settings still apply).
pub(crate) fn daemon_tunables() -> OsString {
    match std::env::var_os(TUNABLES_VARIABLE) {
        None => OsString::from(DAEMON_TUNABLES),
        // Already ours (a start run by a daemon that kept them): do not stack them twice.
        Some(given) if strip_daemon_tunables(&given).is_some() => given,
        Some(given) => {
            let mut value = OsString::from(DAEMON_TUNABLES);
            value.push(":");
            value.push(given);
            value
        }
    }
}

/// Undoes [`daemon_tunables`] in the daemon, whose allocator has read them already,
/// so that its children inherit the environment `start` had.
///
/// Call before the daemon starts any thread: it changes the environment.
pub(crate) fn restore_environment() {
    let Some(value) = std::env::var_os(TUNABLES_VARIABLE) else {
        return;
    };
    match strip_daemon_tunables(&value) {
        Some(given) if given.is_empty() => std::env::remove_var(TUNABLES_VARIABLE),
        Some(given) => std::env::set_var(TUNABLES_VARIABLE, given),
        None => {}
    }
}

/// What was set before `start` added its tunables; `None` if it added none.
fn strip_daemon_tunables(value: &OsStr) -> Option<OsString> {
    let rest = value.as_bytes().strip_prefix(DAEMON_TUNABLES.as_bytes())?;
    match rest {
        [] => Some(OsString::new()),
        [b':', given @ ..] => Some(OsString::from_vec(given.to_vec())),
        _ => None,
    }
}

/// Sets what `mallopt` can set: one arena for the whole process (glibc otherwise gives
/// each thread that allocates its own, each keeping its freed pages), and no fastbins.
///
/// Call before the daemon starts any thread.
pub(crate) fn tune() {
    // SAFETY: mallopt only changes allocator tuning and is thread-safe; both values are in
    // range (M_ARENA_MAX positive, M_MXFAST 0 which disables fastbins).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// Hands the heap freed by a burst of work back to the kernel: glibc keeps freed pages,
/// and an idle shim should not carry its busiest moment.
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only returns unused memory to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_what_start_added() {
        let ours = OsStr::new(DAEMON_TUNABLES);
        assert_eq!(strip_daemon_tunables(ours), Some(OsString::new()));
        let both = OsString::from(format!("{DAEMON_TUNABLES}:glibc.malloc.check=3"));
        assert_eq!(
            strip_daemon_tunables(&both),
            Some(OsString::from("glibc.malloc.check=3"))
        );
        assert_eq!(
            strip_daemon_tunables(OsStr::new("glibc.malloc.check=3")),
            None
        );
        let longer = OsString::from(format!("{DAEMON_TUNABLES}0"));
        assert_eq!(strip_daemon_tunables(&longer), None);
    }
}

//! Keeping an idle daemon's private memory small with glibc's allocator.
//!
//! A shim's work comes in bursts (create, start, exec, stats) between long idle stretches,
//! and whatever the allocator keeps from a burst stays private memory of every shim on the
//! node. Two glibc defaults that can be changed at run time cost most of it:
//! - per-thread arenas: one arena for the process ([`tune`], `M_ARENA_MAX`);
//! - fastbins: freed small chunks stay out of the free lists, so they neither coalesce nor
//!   can be trimmed ([`tune`], `M_MXFAST`).
//!
//! The heap is trimmed ([`release_free_memory`]) when a burst is over, see
//! [`crate::transient`]. None of this is on a hot path: the cost is an uncontended lock per
//! allocation (one arena, as before).
//!
//! Two more glibc costs can only be changed by tunables, which glibc reads when a program
//! starts, never later: per-thread caches of freed chunks (`glibc.malloc.tcache_count`) and
//! the cache of ended threads' stacks (`glibc.pthread.stack_cache_size`). The daemon is
//! forked from `start`, not exec'd ([`crate::launch`]), so a glibc build keeps both: on the
//! project's machine its idle daemon has ~35% more PSS than one exec'd with the tunables.
//! Release builds link musl instead (`scripts/build-release.sh`), where there is nothing to
//! tune: its allocator has no arenas or per-thread caches and hands emptied pages back by
//! itself, a joined thread's stack is unmapped at once, and its idle daemon is smaller than
//! the tuned glibc one was (benches/, README). There the functions below do nothing.

/// Sets what `mallopt` can set: one arena for the whole process (glibc otherwise gives
/// each thread that allocates its own, each keeping its freed pages), and no fastbins.
///
/// Call before the daemon starts any thread.
pub(crate) fn tune() {
    // SAFETY: mallopt only changes allocator tuning and is thread-safe; both values are in
    // range (M_ARENA_MAX positive, M_MXFAST 0 which disables fastbins).
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// Hands the heap freed by a burst of work back to the kernel: glibc keeps freed pages,
/// and an idle shim should not carry its busiest moment.
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only returns unused memory to the kernel; it is thread-safe.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

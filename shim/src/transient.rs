//! Short-lived threads, and the clean-up after a burst of them.
//!
//! Every thread that exists only while there is work (the [`crate::pool`] threads, a
//! runtime's helpers) starts through [`spawn`]. When the last of them ends, the burst is
//! over and what it freed goes back to the kernel:
//! - the heap: glibc keeps freed memory in its free lists until trimmed (musl gives it back
//!   by itself; trimming is then a no-op, see `shim/src/memory.rs`);
//! - the threads' stacks: musl, and glibc with its stack cache off (as the daemon sets it),
//!   unmap an ended thread's stack when the thread is joined, but a detached thread cannot
//!   unmap the stack it runs on: it is unmapped when the next thread ends, so the last stack
//!   of a burst would stay (12 to 24 KiB resident).
//!
//! In the daemon, ended threads are therefore handed to its main loop, which joins them and
//! then trims the heap: by then the threads have also freed what their exit frees (thread
//! handles, thread-local state). See [`install_reaper`]. Elsewhere (tests, `delete`) the last
//! thread to finish trims the heap itself and threads are detached.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{JoinHandle, ThreadId};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::memory;

/// Stack size of transient threads: handlers run runc and encode protobufs, nothing deep.
/// One size for all of them also lets a new thread reuse the stack of one that ended.
const STACK_SIZE: usize = 256 * 1024;

/// Threads started by [`spawn`] that have not finished their work.
static WORKING: AtomicUsize = AtomicUsize::new(0);

/// The daemon's reaper, once installed.
static REAPER: OnceLock<Reaper> = OnceLock::new();

/// Threads for the daemon's main loop to join.
struct Reaper {
    /// Readable while `ended` may hold threads.
    wake: EventFd,
    /// Handles of the threads still working, by thread.
    working: Mutex<HashMap<ThreadId, JoinHandle<()>>>,
    /// Handles of the threads done with their work, to join.
    ended: Mutex<Vec<JoinHandle<()>>>,
}

/// Runs `work` on a new short-lived thread named `name`.
///
/// # Errors
/// The thread could not be created; `work` is dropped unrun.
pub fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    WORKING.fetch_add(1, Ordering::SeqCst);
    // Held across the spawn so that the thread cannot end before its handle is filed.
    let mut working = REAPER.get().map(|reaper| lock(&reaper.working));
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            work();
            finish();
        });
    match spawned {
        Ok(handle) => {
            if let Some(working) = working.as_mut() {
                working.insert(handle.thread().id(), handle);
            }
            Ok(())
        }
        Err(error) => {
            WORKING.fetch_sub(1, Ordering::SeqCst);
            Err(error)
        }
    }
}

/// The end of a transient thread's work.
fn finish() {
    let last = WORKING.fetch_sub(1, Ordering::SeqCst) == 1;
    match REAPER.get() {
        Some(reaper) => reaper.file_ended(std::thread::current().id()),
        None if last => memory::release_free_memory(),
        None => {}
    }
}

impl Reaper {
    /// Moves the handle of `thread` to the ended ones and wakes the main loop.
    fn file_ended(&self, thread: ThreadId) {
        let Some(handle) = lock(&self.working).remove(&thread) else {
            // Started before the reaper existed: detached, it cleans up after itself.
            return;
        };
        lock(&self.ended).push(handle);
        // EAGAIN means the counter is saturated: a wake-up is pending anyway.
        if let Err(errno) = self.wake.write(1) {
            if errno != Errno::EAGAIN {
                log::warn!("failed to wake the main loop for an ended thread: {errno}");
            }
        }
    }
}

/// Makes the calling loop responsible for joining ended transient threads: it must call
/// [`reap`] whenever the returned descriptor is readable. Threads started before this
/// call are not affected.
///
/// # Errors
/// The eventfd could not be created; nothing is installed then.
pub fn install_reaper() -> io::Result<BorrowedFd<'static>> {
    let reaper = Reaper {
        wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        working: Mutex::default(),
        ended: Mutex::default(),
    };
    // A second install keeps the first reaper, whose descriptor the first caller polls.
    let _ = REAPER.set(reaper);
    REAPER
        .get()
        .map(|reaper| reaper.wake.as_fd())
        .ok_or_else(|| io::Error::other("the thread reaper is not installed"))
}

/// Joins the ended transient threads (each has finished its work and is exiting); once no
/// transient thread is working, returns the free heap to the kernel.
pub fn reap() {
    let Some(reaper) = REAPER.get() else {
        return;
    };
    // Reset the counter before taking the list: a thread filed after this wakes us again.
    let _ = reaper.wake.read();
    let ended = std::mem::take(&mut *lock(&reaper.ended));
    for handle in ended {
        // With panic = abort a thread cannot end in a panic; nothing to report.
        let _ = handle.join();
    }
    if WORKING.load(Ordering::SeqCst) == 0 {
        memory::release_free_memory();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only map and list updates happen under these locks; a panic cannot leave them torn.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::time::{Duration, Instant};

    #[test]
    fn the_reaper_joins_ended_threads() {
        let wake = install_reaper().unwrap();
        let (ids, finished) = crossbeam_channel::unbounded();
        for _ in 0..3 {
            let ids = ids.clone();
            spawn("test-transient", move || {
                ids.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
        }
        let ours: Vec<ThreadId> = (0..3)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        let reaper = REAPER.get().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Each thread files itself as ended and makes the descriptor readable.
        while ours.iter().any(|id| lock(&reaper.working).contains_key(id)) {
            assert!(Instant::now() < deadline, "threads never filed as ended");
            let mut fds = [PollFd::new(wake, PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(100u8)).unwrap();
        }
        reap();
        let ended = lock(&reaper.ended);
        assert!(ended
            .iter()
            .all(|handle| !ours.contains(&handle.thread().id())));
    }
}

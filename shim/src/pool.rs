//! Threads that exist only while there is work.
//!
//! An idle shim should cost no threads beyond those that wait on the kernel for it. Both
//! types here start a thread when work arrives and let it end after [`IDLE_EXIT`] without
//! any:
//! - [`WorkerPool`] runs independent jobs concurrently (the RPC handlers), up to a bound;
//! - [`SerialQueue`] hands items, in order, to one handler that keeps its state between
//!   threads (the event publisher, a runtime's exit dispatcher).
//!
//! Their threads start through [`crate::transient::spawn`], which cleans up after a burst.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::transient;

/// How long a thread waits for more work before it ends. containerd's requests for one
/// task come in bursts a few milliseconds apart (Create, Start, State; Kill, Wait, Delete),
/// so a fifth of a second keeps a burst on one thread, while an idle shim is back to its
/// permanent threads well within a second of the last request. Starting a thread again
/// costs some 50 µs.
pub const IDLE_EXIT: Duration = Duration::from_millis(200);

type Job = Box<dyn FnOnce() + Send>;

/// A bounded set of worker threads, started on demand and ended when idle.
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    name: &'static str,
    max_threads: usize,
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("name", &self.shared.name)
            .field("max_threads", &self.shared.max_threads)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// A pool of at most `max_threads` threads named `name`; none start until work arrives.
    pub fn new(name: &'static str, max_threads: usize) -> Self {
        Self {
            shared: Arc::new(PoolShared {
                name,
                max_threads: max_threads.max(1),
                state: Mutex::default(),
                work: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on a pool thread, starting one if none is idle and the bound allows.
    ///
    /// Jobs beyond the bound wait in order for a thread to come free.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        let mut state = self.shared.lock();
        state.jobs.push_back(Box::new(job));
        self.shared.work.notify_one();
        // Idle threads that have not woken yet will take the queued jobs, one each.
        if state.idle >= state.jobs.len() || state.threads >= self.shared.max_threads {
            return;
        }
        state.threads += 1;
        drop(state);
        if let Err(error) = self.spawn_worker() {
            // The queued job waits for a running thread; with none, the next job retries.
            log::error!("failed to start a {} thread: {error}", self.shared.name);
            self.shared.lock().threads -= 1;
        }
    }

    /// The number of threads alive now.
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    fn spawn_worker(&self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        transient::spawn(self.shared.name, move || shared.work_until_idle())
    }
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Only queue and counter updates happen under the lock; jobs run outside it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work_until_idle(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout_while(state, IDLE_EXIT, |state| state.jobs.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                if state.threads == 0 {
                    // The queue's buffer would otherwise keep the size of the longest burst.
                    state.jobs = VecDeque::new();
                }
                return;
            }
        }
    }
}

/// Items handled one at a time, in the order queued, by a thread that runs only while
/// items are pending; the handler (and whatever it holds, e.g. a connection) outlives it.
pub struct SerialQueue<T> {
    shared: Arc<QueueShared<T>>,
}

struct QueueShared<T> {
    name: &'static str,
    state: Mutex<QueueState<T>>,
    handler: Mutex<Box<dyn FnMut(T) + Send>>,
    /// Signalled when an item arrives and when the queue becomes empty.
    changed: Condvar,
}

struct QueueState<T> {
    items: VecDeque<T>,
    running: bool,
    /// Items taken by the thread and not yet handled completely.
    in_hand: usize,
}

impl<T> Clone for SerialQueue<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> std::fmt::Debug for SerialQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialQueue")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> SerialQueue<T> {
    /// A queue whose items go to `handler` on a thread named `name`.
    pub fn new(name: &'static str, handler: impl FnMut(T) + Send + 'static) -> Self {
        Self {
            shared: Arc::new(QueueShared {
                name,
                state: Mutex::new(QueueState {
                    items: VecDeque::new(),
                    running: false,
                    in_hand: 0,
                }),
                handler: Mutex::new(Box::new(handler)),
                changed: Condvar::new(),
            }),
        }
    }

    /// Queues `item`, starting the thread if it is not running.
    pub fn push(&self, item: T) {
        let mut state = self.shared.lock();
        state.items.push_back(item);
        self.shared.changed.notify_all();
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        let shared = Arc::clone(&self.shared);
        let spawned = transient::spawn(self.shared.name, move || shared.drain_until_idle());
        if let Err(error) = spawned {
            // The item stays queued; the next push tries again.
            log::error!("failed to start the {} thread: {error}", self.shared.name);
            self.shared.lock().running = false;
        }
    }

    /// Waits until every item queued before this call has been handled, at most `timeout`.
    /// Returns whether the queue emptied in time.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |state| {
                !state.items.is_empty() || state.in_hand > 0
            })
            .unwrap_or_else(PoisonError::into_inner);
        state.items.is_empty() && state.in_hand == 0
    }

    /// Whether the queue's thread is alive now.
    pub fn is_running(&self) -> bool {
        self.shared.lock().running
    }
}

impl<T> QueueShared<T> {
    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        // Only queue updates happen under the lock; the handler runs outside it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn drain_until_idle(&self) {
        // One thread at a time holds the handler: `running` admits a single thread.
        let mut handler = self.handler.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                state.in_hand += 1;
                drop(state);
                handler(item);
                state = self.lock();
                state.in_hand -= 1;
                if state.items.is_empty() {
                    self.changed.notify_all();
                }
                continue;
            }
            let (next, timeout) = self
                .changed
                .wait_timeout_while(state, IDLE_EXIT, |state| state.items.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            if timeout.timed_out() && state.items.is_empty() {
                state.running = false;
                // The queue's buffer would otherwise keep the size of the longest burst.
                state.items = VecDeque::new();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn pool_runs_jobs_concurrently_up_to_its_bound() {
        let pool = WorkerPool::new("test-pool", 2);
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (release_tx, release) = crossbeam_channel::unbounded::<()>();
        for _ in 0..3 {
            let started_tx = started_tx.clone();
            let release = release.clone();
            pool.execute(move || {
                started_tx.send(()).unwrap();
                release.recv().unwrap();
            });
        }
        // Two run at once; the third waits for a free thread.
        for _ in 0..2 {
            started.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert!(started.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(pool.threads(), 2);
        release_tx.send(()).unwrap();
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
    }

    #[test]
    fn idle_threads_end() {
        let pool = WorkerPool::new("test-idle", 4);
        let (done_tx, done) = crossbeam_channel::unbounded();
        pool.execute(move || done_tx.send(()).unwrap());
        done.recv_timeout(Duration::from_secs(10)).unwrap();
        let deadline = std::time::Instant::now() + IDLE_EXIT * 10;
        while pool.threads() > 0 {
            assert!(std::time::Instant::now() < deadline, "worker never ended");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn serial_queue_keeps_order_across_thread_restarts() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handled = Arc::new(AtomicUsize::new(0));
        let queue = {
            let seen = Arc::clone(&seen);
            let handled = Arc::clone(&handled);
            SerialQueue::new("test-serial", move |item: u32| {
                seen.lock().unwrap().push(item);
                handled.fetch_add(1, Ordering::SeqCst);
            })
        };
        for item in 0..100 {
            queue.push(item);
        }
        assert!(queue.wait_empty(Duration::from_secs(10)));
        let deadline = std::time::Instant::now() + IDLE_EXIT * 10;
        while queue.is_running() {
            assert!(
                std::time::Instant::now() < deadline,
                "queue thread never ended"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        queue.push(100);
        assert!(queue.wait_empty(Duration::from_secs(10)));
        assert_eq!(*seen.lock().unwrap(), (0..=100).collect::<Vec<_>>());
        assert_eq!(handled.load(Ordering::SeqCst), 101);
    }
}

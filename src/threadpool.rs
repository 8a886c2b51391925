//! A persistent thread pool for splitting one kernel call across cores.
//!
//! `n - 1` worker threads live as long as the pool; the calling thread is the n-th worker.
//! A dispatch ([`ThreadPool::run`]) allocates nothing: the job is published through a
//! generation counter, workers spin briefly and then park on a condvar, tasks are claimed from
//! an atomic counter, and `run` returns only after every worker has finished with the job.
//! With one thread `run` just calls the job in a loop.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations before a waiting worker parks (roughly 50-100 µs).
const SPIN: u32 = 20_000;

/// The job of one dispatch, erased to `'static` (see the SAFETY notes in `run`).
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped (SeqCst) once per dispatch and once at shutdown.
    generation: AtomicU64,
    /// Written by `run` only while no worker is between seeing a generation and finishing
    /// it (`active == 0`); read by each worker once per generation after seeing it.
    job: UnsafeCell<(Job, usize)>,
    /// Next task index to claim.
    next: AtomicUsize,
    /// Workers that have not yet finished the current generation.
    active: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// The first panic payload of the current dispatch.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is the only non-Sync field; the protocol above makes every access to it
// happen-before or happen-after each other access (publish via SeqCst `generation`, finish
// via AcqRel `active`), and the job itself is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above.
unsafe impl Send for Shared {}

/// A fixed set of threads that run the tasks of one call in parallel.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the one dispatch that owns the workers.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads())
            .finish()
    }
}

fn noop(_: usize) {}

impl ThreadPool {
    /// A pool of `n` threads counting the caller (`n = 0` is taken as 1). If the OS refuses
    /// to start a thread the pool keeps the ones it got; [`ThreadPool::n_threads`] tells.
    pub fn new(n: usize) -> ThreadPool {
        let noop_job: &'static (dyn Fn(usize) + Sync) = &noop;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new((noop_job as Job, 0)),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let mut workers = Vec::new();
        for i in 1..n.max(1) {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("pipit-{i}"))
                .spawn(move || worker(&s))
            {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads that run tasks, counting the caller of [`ThreadPool::run`].
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` once for every `i` in `0..n_tasks`, spread over the pool's threads (the
    /// caller included), and returns when all calls are done. A panic in any task is
    /// re-raised here after every thread has stopped using `f`. A `run` from inside a task,
    /// or while another thread's `run` is in progress, calls its tasks on the calling thread.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            for i in 0..n_tasks {
                f(i);
            }
            return;
        }
        // A call from inside a task, or concurrent with another dispatch, runs inline: the
        // workers belong to one dispatch at a time.
        let _serial = match self.run_lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                for i in 0..n_tasks {
                    f(i);
                }
                return;
            }
        };
        let s = &*self.shared;
        // SAFETY: erasing the lifetime is sound because this function does not return (nor
        // unwind) before `active` is back to 0, i.e. before every worker is done with `f`;
        // workers never touch the job of a generation after decrementing `active`.
        let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
        // SAFETY: `active == 0` (the previous `run` waited for it, and the run lock excludes
        // concurrent dispatches), so no worker is reading `job`.
        unsafe { *s.job.get() = (job, n_tasks) };
        s.next.store(0, Ordering::Relaxed);
        s.active.store(self.workers.len(), Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = panic::catch_unwind(AssertUnwindSafe(|| work(s, f, n_tasks)));
        let mut spins = 0u32;
        while s.active.load(Ordering::Acquire) != 0 {
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(p) = mine {
            panic::resume_unwind(p);
        }
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = theirs {
            panic::resume_unwind(p);
        }
    }
}

/// Claims and runs tasks until none are left.
fn work(s: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            return;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            if s.generation.load(Ordering::SeqCst) != seen {
                break;
            }
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        seen = s.generation.load(Ordering::SeqCst);
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: `run` wrote `job` before the SeqCst generation bump we observed and will
        // not write it again until we decrement `active` below.
        let (job, n_tasks) = unsafe { *s.job.get() };
        // SAFETY: the pointee outlives this generation (`run` waits for `active == 0`).
        let f = unsafe { &*job };
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| work(s, f, n_tasks))) {
            let mut slot = s.panic.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(p);
            }
            // Stop the other threads from starting further tasks of a failed dispatch.
            s.next.store(usize::MAX / 2, Ordering::Relaxed);
        }
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for n in 1..=4 {
            let pool = ThreadPool::new(n);
            assert_eq!(pool.n_threads(), n);
            for n_tasks in [0, 1, 2, 3, 7, 64] {
                let hits: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
                for _ in 0..50 {
                    pool.run(n_tasks, &|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 50),
                    "n={n} tasks={n_tasks}"
                );
            }
        }
    }

    #[test]
    fn panic_is_reraised_and_pool_survives() {
        let pool = ThreadPool::new(3);
        for bad in [0, 5] {
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(8, &|i| {
                    if i == bad {
                        panic!("task {i} failed");
                    }
                })
            }));
            assert!(r.is_err());
        }
        let count = AtomicUsize::new(0);
        pool.run(10, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn nested_and_concurrent_runs_complete() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(count.load(Ordering::Relaxed), 12);
        std::thread::scope(|sc| {
            for _ in 0..3 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        pool.run(5, &|_| {
                            count.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 12 + 3 * 200 * 5);
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let count = AtomicUsize::new(0);
        pool.run(4, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }
}

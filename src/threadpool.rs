//! A persistent thread pool for splitting one kernel call across cores.
//!
//! `n - 1` worker threads live as long as the pool; the calling thread is the n-th worker.
//! A dispatch ([`ThreadPool::run`]) allocates nothing. The job is published in a slot, then
//! one atomic word packing `(generation, n_tasks, next task)` is stored; every thread (the
//! caller first) claims tasks by compare-and-swap on that word, and `run` returns once all
//! tasks are *done* — it never waits for a worker that has not woken up, so a descheduled
//! worker costs nothing (the caller simply runs its share). A late worker's claim fails
//! because the generation has moved on. Idle workers spin briefly, then park on a condvar.
//! With one thread `run` just calls the job in a loop.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spin iterations before an idle worker parks (tens of microseconds).
const SPIN: u32 = 20_000;
/// Spin iterations before a waiting caller starts yielding its time slice.
const CALLER_SPIN: u32 = 2_000;
/// Most tasks one dispatch can carry (the claim word has 16 bits for each index).
const MAX_TASKS: usize = u16::MAX as usize;

/// The job of one dispatch, erased to `'static` (see the SAFETY notes in `run`).
type Job = *const (dyn Fn(usize) + Sync);

/// `generation << 32 | n_tasks << 16 | next`.
fn pack(generation: u32, n_tasks: usize, next: usize) -> u64 {
    (u64::from(generation) << 32) | ((n_tasks as u64) << 16) | next as u64
}

fn unpack(c: u64) -> (u32, usize, usize) {
    (
        (c >> 32) as u32,
        ((c >> 16) & 0xffff) as usize,
        (c & 0xffff) as usize,
    )
}

struct Shared {
    /// The claim word (see `pack`). Stored with SeqCst when a dispatch is published.
    claim: AtomicU64,
    /// The current job. Written by `run` only while no task of the previous dispatch is
    /// unclaimed or running; read by a thread only right after it claimed a task of the
    /// current dispatch (so `run` is still waiting for that task and the job is alive).
    job: UnsafeCell<Job>,
    /// Tasks of the current dispatch that have finished (or panicked).
    done: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// Workers that have started running (`new` waits for all of them).
    started: AtomicUsize,
    /// The first panic payload of the current dispatch.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is the only non-Sync field; by the protocol documented on it, every read
// happens after the write it observes (Release store of `claim` -> AcqRel claim CAS) and
// before the next write (the task's `done` increment -> `run`'s Acquire wait), and the job
// itself is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above.
unsafe impl Send for Shared {}

impl Shared {
    /// Claims the next task of the current dispatch: its index and the job.
    fn claim(&self) -> Option<(usize, Job)> {
        let mut c = self.claim.load(Ordering::Acquire);
        loop {
            let (_, n, i) = unpack(c);
            if i >= n {
                return None;
            }
            match self
                .claim
                .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: we own unfinished task `i` of the dispatch whose job is in the slot
                // (see `job`), so the slot holds that dispatch's job and is not being written.
                Ok(_) => return Some((i, unsafe { *self.job.get() })),
                Err(now) => c = now,
            }
        }
    }

    /// Claims and runs tasks until none are left, recording panics.
    fn work(&self) {
        while let Some((i, job)) = self.claim() {
            // SAFETY: the job outlives its dispatch's `run` call, which cannot return before
            // this task's `done` increment below.
            let f = unsafe { &*job };
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| f(i))) {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(p);
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// A fixed set of threads that run the tasks of one call in parallel.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held by the one dispatch that owns the workers.
    run_lock: Mutex<u32>,
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
            claim: AtomicU64::new(0),
            job: UnsafeCell::new(noop_job as Job),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            started: AtomicUsize::new(0),
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
        // Ready means ready: thread start-up (and its allocations) happens here, not during
        // the first dispatches.
        while shared.started.load(Ordering::Acquire) < workers.len() {
            std::thread::yield_now();
        }
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(0),
        }
    }

    /// Threads that run tasks, counting the caller of [`ThreadPool::run`].
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` once for every `i` in `0..n_tasks`, spread over the pool's threads (the
    /// caller included), and returns when all calls are done. A panic in any task is
    /// re-raised here after every task has finished. A `run` from inside a task, or while
    /// another thread's `run` is in progress, calls its tasks on the calling thread.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            for i in 0..n_tasks {
                f(i);
            }
            return;
        }
        let mut generation = match self.run_lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                for i in 0..n_tasks {
                    f(i);
                }
                return;
            }
        };
        let mut base = 0;
        while base < n_tasks {
            let n = (n_tasks - base).min(MAX_TASKS);
            *generation = generation.wrapping_add(1);
            self.dispatch(*generation, n, &|i| f(base + i));
            base += n;
        }
    }

    fn dispatch(&self, generation: u32, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        // SAFETY: erasing the lifetime is sound because this function does not return (nor
        // unwind) before `done == n_tasks`, i.e. before every claimed call of `f` finished,
        // and no thread can claim a task of this dispatch after that.
        let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
        // SAFETY: every task of the previous dispatch is done (its `run` waited for that) and
        // its claim word is exhausted, so no thread is reading the slot.
        unsafe { *s.job.get() = job };
        s.done.store(0, Ordering::Relaxed);
        s.claim
            .store(pack(generation, n_tasks, 0), Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        s.work();
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < n_tasks {
            if spins < CALLER_SPIN {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        let payload = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = payload {
            panic::resume_unwind(p);
        }
    }
}

fn worker(s: &Shared) {
    s.started.fetch_add(1, Ordering::Release);
    let mut seen = 0u32;
    loop {
        let mut spins = 0u32;
        loop {
            if unpack(s.claim.load(Ordering::SeqCst)).0 != seen
                || s.shutdown.load(Ordering::Relaxed)
            {
                break;
            }
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while unpack(s.claim.load(Ordering::SeqCst)).0 == seen
                && !s.shutdown.load(Ordering::SeqCst)
            {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = unpack(s.claim.load(Ordering::SeqCst)).0;
        s.work();
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
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
    fn more_tasks_than_one_claim_word_holds() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(MAX_TASKS * 2 + 3, &|i| {
            count.fetch_add(i, Ordering::Relaxed);
        });
        let n = MAX_TASKS * 2 + 3;
        assert_eq!(count.load(Ordering::Relaxed), n * (n - 1) / 2);
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

//! One pool of worker threads, sized by `--threads`, for the parallel parts of a step.
//!
//! `run(f)` calls `f(i, n)` on every thread `i` of `n` (the caller is thread 0) and returns
//! when all are done. Workers spin briefly for the next job (a decode step issues hundreds
//! of small jobs, so waking from sleep each time would cost more than the work), then park,
//! so an idle pool uses no CPU.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Bumped once per job; workers run each generation once.
    generation: AtomicUsize,
    /// Workers still running the current job.
    pending: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    stop: AtomicBool,
    panicked: AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is Sync and outlives every use (run() waits for all workers).
unsafe impl Send for JobPtr {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
}

const SPIN: u32 = 20_000;

impl Pool {
    /// A pool of `n_threads` threads in all (the caller counts as one).
    pub fn new(n_threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: Mutex::new(None),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let n = n_threads.max(1);
        let workers = (1..n)
            .map(|i| {
                let s = shared.clone();
                let h = thread::Builder::new()
                    .name(format!("bantam-worker-{i}"))
                    .spawn(move || worker(s, i, n))
                    .expect("spawn worker thread");
                let t = h.thread().clone();
                (h, t)
            })
            .collect();
        Pool { shared, workers }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(i, n)` on all `n` threads and wait for them.
    pub fn run<F: Fn(usize, usize) + Sync>(&self, f: F) {
        let n = self.n_threads();
        if n == 1 {
            f(0, 1);
            return;
        }
        let job: *const (dyn Fn(usize, usize) + Sync + '_) = &f;
        // SAFETY: we erase the lifetime; every worker finishes with the pointer before
        // this function returns (we wait for `pending` to reach zero below).
        let ptr = JobPtr(unsafe {
            std::mem::transmute::<*const (dyn Fn(usize, usize) + Sync + '_), *const Job>(job)
        });
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
        self.shared.pending.store(n - 1, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for (_, t) in &self.workers {
            t.unpark();
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0, n)));
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if let Err(p) = r {
            std::panic::resume_unwind(p);
        }
        if self.shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a worker thread panicked");
        }
    }

    /// Split `0..len` into `n` near-equal contiguous ranges; range `i`.
    pub fn range(i: usize, n: usize, len: usize) -> std::ops::Range<usize> {
        let per = len / n;
        let extra = len % n;
        let start = i * per + i.min(extra);
        start..start + per + usize::from(i < extra)
    }
}

fn worker(s: Arc<Shared>, i: usize, n: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                thread::park_timeout(std::time::Duration::from_millis(50));
            }
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(p)) = job {
            // SAFETY: the job outlives this call (Pool::run waits on `pending`).
            let f = unsafe { &*p };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i, n))).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (h, t) in self.workers.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn runs_every_thread_once_per_job() {
        let pool = Pool::new(3);
        for _ in 0..1000 {
            let hits = AtomicUsize::new(0);
            pool.run(|i, n| {
                assert_eq!(n, 3);
                hits.fetch_add(1 << (8 * i), Ordering::SeqCst);
            });
            assert_eq!(hits.load(Ordering::SeqCst), 0x010101);
        }
    }
    #[test]
    fn ranges_cover_exactly() {
        for len in 0..50 {
            for n in 1..5 {
                let v: Vec<usize> = (0..n).flat_map(|i| Pool::range(i, n, len)).collect();
                assert_eq!(v, (0..len).collect::<Vec<_>>());
            }
        }
    }
}

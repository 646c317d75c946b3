//! One pool of worker threads, sized by `--threads`, for the parallel parts of a step.
//!
//! `run_chunks(n, f)` calls `f(i, n)` once for every chunk `i < n`, on whichever threads are
//! running: each thread (the caller included) claims chunks from a shared counter until none
//! are left, and the caller waits only for chunks already claimed. So a worker that the OS
//! has not scheduled (another process holds its core) delays nothing: the others take its
//! share. `run(f)` is the common case of one chunk per thread.
//!
//! Workers spin briefly for the next job (a decode step issues hundreds of small jobs, so
//! waking from sleep each time would cost more than the work), then park, so an idle pool
//! uses no CPU.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};

type Job = dyn Fn(usize, usize) + Sync;

/// `state` packs the job generation, its chunk count and the next unclaimed chunk, so a
/// claim (one compare-and-swap) is valid only for the generation the claimer saw.
const GEN_SHIFT: u32 = 40;
const N_SHIFT: u32 = 20;
const FIELD: u64 = (1 << 20) - 1;

fn pack(gen: u64, n: u64, next: u64) -> u64 {
    (gen << GEN_SHIFT) | (n << N_SHIFT) | next
}
fn unpack(s: u64) -> (u64, u64, u64) {
    (s >> GEN_SHIFT, (s >> N_SHIFT) & FIELD, s & FIELD)
}

struct Shared {
    state: AtomicU64,
    /// Chunks of the current job finished.
    done: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    stop: AtomicBool,
    panicked: AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is Sync, and is used only while its job has unfinished chunks, during
// which `run_chunks` has not returned.
unsafe impl Send for JobPtr {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
}

const SPIN: u32 = 20_000;
/// Most chunks one job may have.
pub const MAX_CHUNKS: usize = FIELD as usize;

impl Pool {
    /// A pool of `n_threads` threads in all (the caller counts as one).
    pub fn new(n_threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let n = n_threads.max(1);
        let workers = (1..n)
            .map(|i| {
                let s = shared.clone();
                let h = thread::Builder::new().name(format!("bantam-worker-{i}")).spawn(move || worker(s)).expect("spawn worker thread");
                let t = h.thread().clone();
                (h, t)
            })
            .collect();
        Pool { shared, workers }
    }

    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(i, n)` for each `i < n` where `n` is the number of threads.
    pub fn run<F: Fn(usize, usize) + Sync>(&self, f: F) {
        self.run_chunks(self.n_threads(), f)
    }

    /// Run `f(i, n)` once for each chunk `i < n`, spread over the running threads.
    pub fn run_chunks<F: Fn(usize, usize) + Sync>(&self, n: usize, f: F) {
        assert!(n <= MAX_CHUNKS, "too many chunks");
        if n == 0 {
            return;
        }
        if self.workers.is_empty() || n == 1 {
            (0..n).for_each(|i| f(i, n));
            return;
        }
        let job: *const (dyn Fn(usize, usize) + Sync + '_) = &f;
        // SAFETY: we erase the lifetime; a pointer is used only by a thread holding a claimed
        // chunk of this job, and we return only when every chunk is done.
        let ptr = JobPtr(unsafe { std::mem::transmute::<*const (dyn Fn(usize, usize) + Sync + '_), *const Job>(job) });
        let s = &self.shared;
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
        s.done.store(0, Ordering::SeqCst);
        let (gen, _, _) = unpack(s.state.load(Ordering::SeqCst));
        let gen = (gen + 1) & ((1 << (64 - GEN_SHIFT)) - 1);
        s.state.store(pack(gen, n as u64, 0), Ordering::SeqCst);
        for (_, t) in &self.workers {
            t.unpark();
        }
        let mut first_panic = None;
        while let Some(i) = claim(s, gen) {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i, n))) {
                first_panic.get_or_insert(p);
            }
            s.done.fetch_add(1, Ordering::AcqRel);
        }
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < n {
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a worker thread panicked");
        }
    }

    /// `f(t, rows)` for each row `t < n` of `K` buffers at once, `rows[k]` being row `t` of
    /// `bufs[k]` (`bufs[k].1` values a row; each buffer holds at least `n` rows). The rows
    /// are spread over the threads where there are at least `min_rows` of them, else run
    /// here; either way each row sees only its own values, so the result is the same.
    pub fn rows<const K: usize, F: Fn(usize, [&mut [f32]; K]) + Sync>(&self, bufs: [(&mut [f32], usize); K], n: usize, min_rows: usize, f: F) {
        for (b, len) in &bufs {
            assert!(b.len() >= n * len, "a buffer shorter than its rows");
        }
        let mut bufs = bufs; // held (borrowed mutably) until every row is done
        let ptrs: [(SendPtr, usize); K] = std::array::from_fn(|k| (SendPtr(bufs[k].0.as_mut_ptr()), bufs[k].1));
        let chunks = if n >= min_rows { self.n_threads().min(n) } else { 1 };
        self.run_chunks(chunks, |i, nc| {
            for t in Pool::range(i, nc, n) {
                // SAFETY: row t of each buffer is in bounds (checked above) and belongs to
                // this chunk alone; the buffers are borrowed mutably for the whole run.
                let rows = ptrs.map(|(p, len)| unsafe { std::slice::from_raw_parts_mut(p.at(t * len), len) });
                f(t, rows);
            }
        });
    }

    /// Split `0..len` into `n` near-equal contiguous ranges; range `i`.
    pub fn range(i: usize, n: usize, len: usize) -> std::ops::Range<usize> {
        let per = len / n;
        let extra = len % n;
        let start = i * per + i.min(extra);
        start..start + per + usize::from(i < extra)
    }
}

/// Claim the next chunk of generation `gen`, if any is left.
fn claim(s: &Shared, gen: u64) -> Option<usize> {
    let mut cur = s.state.load(Ordering::Acquire);
    loop {
        let (g, n, next) = unpack(cur);
        if g != gen || next >= n {
            return None;
        }
        match s.state.compare_exchange_weak(cur, pack(g, n, next + 1), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(next as usize),
            Err(c) => cur = c,
        }
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let gen = loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let (g, n, next) = unpack(s.state.load(Ordering::Acquire));
            if g != seen {
                seen = g;
                if next < n {
                    break g;
                }
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                thread::park_timeout(std::time::Duration::from_millis(50));
            }
        };
        while let Some(i) = claim(&s, gen) {
            // A claimed chunk keeps its job alive: read the pointer after claiming.
            let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(JobPtr(p)) = job {
                let (_, n, _) = unpack(s.state.load(Ordering::Acquire));
                // SAFETY: the job outlives every claimed chunk (run_chunks waits on `done`).
                let f = unsafe { &*p };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i, n as usize))).is_err() {
                    s.panicked.store(true, Ordering::SeqCst);
                }
            }
            s.done.fetch_add(1, Ordering::AcqRel);
        }
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
    fn runs_every_chunk_once_per_job() {
        let pool = Pool::new(3);
        for round in 0..2000 {
            let n = 1 + round % 9;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run_chunks(n, |i, total| {
                assert_eq!(total, n);
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
        }
    }
    #[test]
    fn a_busy_core_does_not_stall_the_caller() {
        // More threads than cores: jobs still complete (the caller takes unclaimed chunks).
        let pool = Pool::new(8);
        let sum = AtomicUsize::new(0);
        for _ in 0..500 {
            pool.run(|i, _| {
                sum.fetch_add(i, Ordering::SeqCst);
            });
        }
        assert_eq!(sum.load(Ordering::SeqCst), 500 * 28);
    }
    #[test]
    fn rows_hand_each_row_of_every_buffer_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for (n, min_rows) in [(0, 1), (1, 1), (7, 8), (8, 8), (23, 1)] {
                let (mut a, mut b) = (vec![0.0f32; 3 * n + 1], vec![1.0f32; 2 * n]);
                pool.rows([(&mut a, 3), (&mut b, 2)], n, min_rows, |t, [a, b]| {
                    assert_eq!((a.len(), b.len()), (3, 2));
                    a.iter_mut().for_each(|v| *v += t as f32);
                    b[1] += a[0];
                });
                for t in 0..n {
                    assert_eq!(&a[3 * t..3 * t + 3], &[t as f32; 3], "{threads} threads, {n} rows");
                    assert_eq!(&b[2 * t..2 * t + 2], &[1.0, 1.0 + t as f32]);
                }
                assert_eq!(a[3 * n], 0.0, "past the rows: untouched");
            }
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
    #[test]
    fn panics_propagate() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run_chunks(4, |i, _| assert!(i != 2))));
        assert!(r.is_err());
        pool.run_chunks(4, |_, _| {}); // still usable
    }
}

/// A raw pointer the pool's threads may share: each writes its own disjoint part of one
/// buffer (its rows, its jobs' outputs, its scratch), which the caller guarantees.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: the pointer is only dereferenced at disjoint offsets by different threads, and the
// buffer outlives the pool run that uses it (callers' contract).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub fn get(self) -> *mut f32 {
        self.0
    }

    /// The pointer `i` elements on.
    ///
    /// # Safety
    /// `i` must stay inside the buffer the pointer came from.
    pub unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps `i` inside the buffer.
        unsafe { self.0.add(i) }
    }
}

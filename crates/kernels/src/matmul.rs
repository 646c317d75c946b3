//! Quantized matrix times a batch of activation rows: `out[t, r] = W[r, :] · x[t, :]`.
//!
//! The activations are quantized once per call into the weight type's [`ActType`]; rows of
//! W are split across the pool's threads, and each thread walks its rows in tiles so a
//! tile of weights stays in cache while every token of the batch passes over it.

use crate::dot::{dot4_fn, dot_fn, ActType, Dot4Fn, DotFn, Isa};
use crate::pool::Pool;
use gguf::GgmlType;

/// A weight matrix `[rows, cols]` (row-major, `cols` contiguous) in a ggml type, borrowed
/// from the mapped file.
#[derive(Clone, Copy)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    dot: DotFn,
    dot4: Option<Dot4Fn>,
    row_bytes: usize,
}

impl<'a> QMatrix<'a> {
    /// `data` must be exactly `rows` rows of `cols` elements of `ty`; returns `None` if not.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8], isa: Isa) -> Option<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        (row_bytes * rows == data.len()).then_some(QMatrix { ty, rows, cols, data, dot: dot_fn(ty, isa), dot4: dot4_fn(ty, isa), row_bytes })
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize row `r` into `out` (`cols` elements).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        crate::dequant::dequantize_row(self.ty, self.row(r), out)
    }
}

/// Scratch for quantized activations, grown on demand and reused (no allocation per call
/// once it has reached its working size). One slot per activation type, so matrices of
/// different types can share one input.
#[derive(Default)]
pub struct ActBuf {
    slots: [ActSlot; 4],
}

#[derive(Default)]
struct ActSlot {
    words: Vec<u64>,
}

fn slot_index(at: ActType) -> usize {
    match at {
        ActType::F32 => 0,
        ActType::Q8_0 => 1,
        ActType::Q8_1 => 2,
        ActType::Q8K => 3,
    }
}

impl ActSlot {
    /// Quantize `x` (`[n, cols]`) into this slot; returns the bytes of the `n` rows.
    fn fill(&mut self, pool: &Pool, at: ActType, x: &[f32], n: usize, cols: usize) {
        let arb = at.row_bytes(cols);
        let len = arb * n;
        if self.words.len() * 8 < len {
            self.words.resize(len.div_ceil(8), 0);
        }
        // SAFETY: u64 storage viewed as bytes (8-aligned, so any block type fits).
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, len) };
        if n >= 8 {
            let p = bytes.as_mut_ptr() as usize;
            pool.run(|i, nt| {
                for t in Pool::range(i, nt, n) {
                    // SAFETY: each thread writes its own activation rows.
                    let dst = unsafe { std::slice::from_raw_parts_mut((p as *mut u8).add(t * arb), arb) };
                    at.quantize(&x[t * cols..(t + 1) * cols], dst);
                }
            });
        } else {
            for t in 0..n {
                at.quantize(&x[t * cols..(t + 1) * cols], &mut bytes[t * arb..(t + 1) * arb]);
            }
        }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: as in `fill`; `len` bytes were written there.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, len) }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: threads write disjoint elements (their own rows of W).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Most matrices [`matmul_many`] takes in one pass.
pub const MAX_JOBS: usize = 4;

/// Rows of W a thread handles per tile.
const TILE: usize = 16;

/// `out[t * w.rows + r] = W[r] · x[t]` for `t < n`. x: `[n, w.cols]`, out: `[n, w.rows]`.
pub fn matmul(pool: &Pool, w: &QMatrix, x: &[f32], n: usize, act: &mut ActBuf, out: &mut [f32]) {
    matmul_many(pool, &mut [(w, out)], x, n, act)
}

/// Several matrices applied to one input in one parallel pass (Q, K and V; gate and up):
/// the input is quantized once per activation type and the rows of all matrices are split
/// across the threads together, so a decode step waits on one job instead of several.
/// x: `[n, cols]`; each output `[n, rows_i]`.
pub fn matmul_many(pool: &Pool, jobs: &mut [(&QMatrix, &mut [f32])], x: &[f32], n: usize, act: &mut ActBuf) {
    let Some(cols) = jobs.first().map(|(w, _)| w.cols) else { return };
    assert_eq!(x.len(), n * cols, "activation shape");
    for (w, out) in jobs.iter() {
        assert_eq!(w.cols, cols, "matrices sharing an input must have the same columns");
        assert_eq!(out.len(), n * w.rows, "output shape");
    }
    let mut filled = [false; 4];
    for (w, _) in jobs.iter() {
        let at = ActType::of(w.ty);
        let k = slot_index(at);
        if !filled[k] {
            act.slots[k].fill(pool, at, x, n, cols);
            filled[k] = true;
        }
    }
    let total: usize = jobs.iter().map(|(w, _)| w.rows).sum();
    assert!(jobs.len() <= MAX_JOBS, "at most {MAX_JOBS} matrices per pass");
    let mut parts: [Option<(QMatrix, SendPtr)>; MAX_JOBS] = [None; MAX_JOBS];
    for (p, (w, out)) in parts.iter_mut().zip(jobs.iter_mut()) {
        *p = Some((**w, SendPtr(out.as_mut_ptr())));
    }
    let act = &*act;
    // Several chunks per thread, so threads that run sooner take more of them.
    let n_chunks = (total / TILE).clamp(1, 4 * pool.n_threads());
    pool.run_chunks(n_chunks, |i, nc| {
        let range = Pool::range(i, nc, total);
        let mut base = 0;
        for (w, optr) in parts.iter().flatten() {
            let (lo, hi) = (range.start.max(base), range.end.min(base + w.rows));
            if lo < hi {
                let at = ActType::of(w.ty);
                let slot = &act.slots[slot_index(at)];
                let arb = at.row_bytes(cols);
                rows_times_acts(w, slot.bytes(arb * n), arb, n, lo - base..hi - base, *optr);
            }
            base += w.rows;
        }
    });
}

/// The products of rows `range` of `w` with all `n` activation rows, tile by tile.
fn rows_times_acts(w: &QMatrix, abytes: &[u8], arb: usize, n: usize, range: std::ops::Range<usize>, optr: SendPtr) {
    let rows = w.rows;
    let mut r0 = range.start;
    while r0 < range.end {
        let r1 = (r0 + TILE).min(range.end);
        let mut t = 0;
        if let Some(dot4) = w.dot4 {
            while t + 4 <= n {
                let a: [&[u8]; 4] = std::array::from_fn(|k| &abytes[(t + k) * arb..(t + k + 1) * arb]);
                for r in r0..r1 {
                    let v = dot4(w.row(r), a);
                    for (k, vk) in v.into_iter().enumerate() {
                        // SAFETY: r is in this thread's range, t + k < n: in bounds, unshared.
                        unsafe { *optr.0.add((t + k) * rows + r) = vk };
                    }
                }
                t += 4;
            }
        }
        for t in t..n {
            let a = &abytes[t * arb..(t + 1) * arb];
            for r in r0..r1 {
                let v = (w.dot)(w.row(r), a);
                // SAFETY: r is in this thread's range, t < n: in bounds and unshared.
                unsafe { *optr.0.add(t * rows + r) = v };
            }
        }
        r0 = r1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::quantize_weights_q8_0;

    #[test]
    fn matmul_matches_naive() {
        let (rows, cols, n) = (37, 64, 9);
        let wf: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5).collect();
        let wq = quantize_weights_q8_0(&wf);
        let bytes = crate::blocks::block_bytes(&wq);
        let w = QMatrix::new(GgmlType::Q8_0, rows, cols, bytes, Isa::detect()).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5).collect();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut out = vec![0f32; n * rows];
            matmul(&pool, &w, &x, n, &mut ActBuf::default(), &mut out);
            // The same matrix twice through matmul_many gives the same products.
            let (mut o1, mut o2) = (vec![0f32; n * rows], vec![0f32; n * rows]);
            matmul_many(&pool, &mut [(&w, &mut o1[..]), (&w, &mut o2[..])], &x, n, &mut ActBuf::default());
            assert_eq!(o1, out);
            assert_eq!(o2, out);
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|k| wf[r * cols + k] * x[t * cols + k]).sum();
                    assert!((out[t * rows + r] - want).abs() < 0.05, "t{t} r{r}: {} vs {want}", out[t * rows + r]);
                }
            }
        }
    }
}

//! Quantized matrix times a batch of activation rows: `out[t, r] = W[r, :] · x[t, :]`.
//!
//! The activations are quantized once per call into the weight type's [`ActType`]; rows of
//! W are split across the pool's threads, and each thread walks its rows in tiles so a
//! tile of weights stays in cache while every token of the batch passes over it.

use crate::dot::{act_scales_x4, dot4_fn, dot_fn, ActType, Dot4Fn, DotFn, Isa};
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
        (row_bytes * rows == data.len()).then_some(QMatrix {
            ty,
            rows,
            cols,
            data,
            dot: dot_fn(ty, isa),
            dot4: dot4_fn(ty, isa),
            row_bytes,
        })
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
/// once it has reached its working size).
#[derive(Default)]
pub struct ActBuf {
    words: Vec<u64>,
    /// Per group of four activation rows: f32 block scales (`d`, then `s`), for [`Dot4Fn`].
    scales: Vec<Vec<f32>>,
}

impl ActBuf {
    fn bytes(&mut self, n: usize) -> &mut [u8] {
        if self.words.len() * 8 < n {
            self.words.resize(n.div_ceil(8), 0);
        }
        // SAFETY: u64 storage viewed as bytes (8-aligned, so any block type fits).
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, n) }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: threads write disjoint elements (their own rows of W).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Rows of W a thread handles per tile.
const TILE: usize = 16;

/// `out[t * w.rows + r] = W[r] · x[t]` for `t < n`. x: `[n, w.cols]`, out: `[n, w.rows]`.
pub fn matmul(pool: &Pool, w: &QMatrix, x: &[f32], n: usize, act: &mut ActBuf, out: &mut [f32]) {
    assert_eq!(x.len(), n * w.cols, "activation shape");
    assert_eq!(out.len(), n * w.rows, "output shape");
    let at = ActType::of(w.ty);
    let arb = at.row_bytes(w.cols);
    let abytes = act.bytes(arb * n);
    // SAFETY: detach the byte view from `act` so its scale vectors can be filled below;
    // `bytes` returned a slice of `act.words`, which is not touched again in this call.
    let abytes = unsafe { std::slice::from_raw_parts_mut(abytes.as_mut_ptr(), abytes.len()) };
    if n >= 8 {
        let p = abytes.as_mut_ptr() as usize;
        pool.run(|i, nt| {
            for t in Pool::range(i, nt, n) {
                // SAFETY: each thread writes its own activation rows.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut((p as *mut u8).add(t * arb), arb) };
                at.quantize(&x[t * w.cols..(t + 1) * w.cols], dst);
            }
        });
    } else {
        for t in 0..n {
            at.quantize(
                &x[t * w.cols..(t + 1) * w.cols],
                &mut abytes[t * arb..(t + 1) * arb],
            );
        }
    }
    let abytes: &[u8] = abytes;
    let n_groups = if w.dot4.is_some() { n / 4 } else { 0 };
    if act.scales.len() < 2 * n_groups {
        act.scales.resize_with(2 * n_groups, Vec::new);
    }
    for g in 0..n_groups {
        let rows: [&[u8]; 4] = std::array::from_fn(|k| &abytes[(4 * g + k) * arb..(4 * g + k + 1) * arb]);
        let (d, s) = act.scales[2 * g..2 * g + 2].split_at_mut(1);
        act_scales_x4(at, rows, &mut d[0], &mut s[0]);
    }
    let scales = &act.scales;
    let optr = SendPtr(out.as_mut_ptr());
    let rows = w.rows;
    pool.run(|i, nt| {
        let optr = optr;
        let range = Pool::range(i, nt, rows);
        let mut r0 = range.start;
        while r0 < range.end {
            let r1 = (r0 + TILE).min(range.end);
            let mut t = 0;
            if let Some(dot4) = w.dot4 {
                while t + 4 <= n {
                    let a: [&[u8]; 4] = std::array::from_fn(|k| &abytes[(t + k) * arb..(t + k + 1) * arb]);
                    let (d, s) = (&scales[2 * (t / 4)], &scales[2 * (t / 4) + 1]);
                    for r in r0..r1 {
                        let v = dot4(w.row(r), a, d, s);
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
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::quantize_weights_q8_0;

    #[test]
    fn matmul_matches_naive() {
        let (rows, cols, n) = (37, 64, 9);
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
            .collect();
        let wq = quantize_weights_q8_0(&wf);
        let bytes = crate::blocks::block_bytes(&wq);
        let w = QMatrix::new(GgmlType::Q8_0, rows, cols, bytes, Isa::detect()).unwrap();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
            .collect();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut out = vec![0f32; n * rows];
            matmul(&pool, &w, &x, n, &mut ActBuf::default(), &mut out);
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|k| wf[r * cols + k] * x[t * cols + k]).sum();
                    assert!(
                        (out[t * rows + r] - want).abs() < 0.05,
                        "t{t} r{r}: {} vs {want}",
                        out[t * rows + r]
                    );
                }
            }
        }
    }
}

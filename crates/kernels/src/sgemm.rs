//! f32 matrix products for training (`model::train`): register-tiled, with every output
//! element summed in one fixed order whatever the tile it falls in, so a result does not
//! depend on how many rows or tokens are computed together.
//!
//! Two shapes cover the forward and backward passes:
//! - [`nt`]: `out = x · wᵀ`, each element a dot product over `k` (eight lanes, each summed
//!   in order with fused multiply-adds, then `((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7))`, then the
//!   `k mod 8` last terms one by one, unfused);
//! - [`nn_acc`]: `y += c · w`, each element a chain `y = c_r·w_r + y` over `r` ascending
//!   (fused).
//!
//! On x86 with AVX2 and FMA, tiles of 4 rows × 3 tokens ([`nt`]) and 6 tokens × 16 columns
//! ([`nn_acc`]) in registers; elsewhere the portable loops, fused where the CPU fuses
//! (aarch64, or x86's AVX2 level) and unfused on x86's scalar level.

use crate::dot::Isa;

/// Rows of a row-major matrix: row `i` starts at `data[i * ld]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub ld: usize,
}

/// Rows of a row-major matrix, written.
#[derive(Debug)]
pub struct StridedMut<'a> {
    pub data: &'a mut [f32],
    pub ld: usize,
}

impl<'a> Strided<'a> {
    pub fn new(data: &'a [f32], ld: usize) -> Strided<'a> {
        Strided { data, ld }
    }
    /// Panics unless `n` rows of `len` are inside the slice.
    fn check(&self, n: usize, len: usize, what: &str) {
        assert!(
            n == 0 || len == 0 || (n - 1) * self.ld + len <= self.data.len(),
            "sgemm: {what} is {} floats, short of {n} rows of {len} (stride {})",
            self.data.len(),
            self.ld
        );
    }
}

impl<'a> StridedMut<'a> {
    pub fn new(data: &'a mut [f32], ld: usize) -> StridedMut<'a> {
        StridedMut { data, ld }
    }
    fn check(&self, n: usize, len: usize, what: &str) {
        Strided { data: self.data, ld: self.ld }.check(n, len, what)
    }
}

/// `out[t][r] = Σ_{j<k} x[t][j] · w[r][j]` for `t < n_t`, `r < n_r`.
pub fn nt(isa: Isa, k: usize, w: Strided, n_r: usize, x: Strided, n_t: usize, out: StridedMut) {
    w.check(n_r, k, "w");
    x.check(n_t, k, "x");
    out.check(n_t, n_r, "out");
    if n_r == 0 || n_t == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fused_x86(isa) {
        // SAFETY: the CPU has AVX2 and FMA; the extents were checked above.
        return unsafe { x86::nt(k, w, n_r, x, n_t, out) };
    }
    if fma(isa) {
        nt_lanes::<true>(k, w, n_r, x, n_t, out)
    } else {
        nt_lanes::<false>(k, w, n_r, x, n_t, out)
    }
}

/// `y[t][j] += Σ_{r<k} c[t][r] · w[r][j]` for `t < n_t`, `j < n`.
pub fn nn_acc(isa: Isa, n: usize, w: Strided, k: usize, c: Strided, n_t: usize, y: StridedMut) {
    w.check(k, n, "w");
    c.check(n_t, k, "c");
    y.check(n_t, n, "y");
    if n == 0 || k == 0 || n_t == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if fused_x86(isa) {
        // SAFETY: as in `nt`.
        return unsafe { x86::nn_acc(n, w, k, c, n_t, y) };
    }
    if fma(isa) {
        nn_lanes::<true>(n, w, k, c, n_t, y)
    } else {
        nn_lanes::<false>(n, w, k, c, n_t, y)
    }
}

#[cfg(target_arch = "x86_64")]
fn fused_x86(isa: Isa) -> bool {
    matches!(isa, Isa::Avx2 | Isa::AvxVnni | Isa::Vnni)
}

/// Whether the level fuses multiply-adds (aarch64 always can).
fn fma(isa: Isa) -> bool {
    !matches!(isa, Isa::Scalar) || cfg!(target_arch = "aarch64")
}

/// `a · b + c`, one rounding where `F`.
#[inline(always)]
fn madd<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// [`nt`] one element at a time, in the tiles' order. The twin of the x86 tiles with `F`.
pub fn nt_lanes<const F: bool>(k: usize, w: Strided, n_r: usize, x: Strided, n_t: usize, out: StridedMut) {
    let k8 = k / 8 * 8;
    for t in 0..n_t {
        let xt = &x.data[t * x.ld..t * x.ld + k];
        for r in 0..n_r {
            let wr = &w.data[r * w.ld..r * w.ld + k];
            let mut a = [0f32; 8];
            for j in (0..k8).step_by(8) {
                for l in 0..8 {
                    a[l] = madd::<F>(wr[j + l], xt[j + l], a[l]);
                }
            }
            let mut s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
            for j in k8..k {
                s += wr[j] * xt[j];
            }
            out.data[t * out.ld + r] = s;
        }
    }
}

/// [`nn_acc`] row by row (each element's chain over `r` ascending, as the tiles').
pub fn nn_lanes<const F: bool>(n: usize, w: Strided, k: usize, c: Strided, n_t: usize, y: StridedMut) {
    for t in 0..n_t {
        let yt = &mut y.data[t * y.ld..t * y.ld + n];
        for r in 0..k {
            let cr = c.data[t * c.ld + r];
            let wr = &w.data[r * w.ld..r * w.ld + n];
            for (o, &v) in yt.iter_mut().zip(wr) {
                *o = madd::<F>(cr, v, *o);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Strided, StridedMut};
    use std::arch::x86_64::*;

    /// Rows of `w` per [`nt`] tile, tokens per tile.
    const NT_R: usize = 4;
    const NT_T: usize = 3;
    /// Tokens per [`nn_acc`] tile, vectors of eight columns per tile.
    const NN_T: usize = 6;
    const NN_C: usize = 2;

    /// `((l0+l4)+(l1+l5))+((l2+l6)+(l3+l7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nt(k: usize, w: Strided, n_r: usize, x: Strided, n_t: usize, out: StridedMut) {
        // SAFETY: the callers pass pointers to the extents `nt` and `nn_acc` checked.
        unsafe {
            let (wp, xp, op) = (w.data.as_ptr(), x.data.as_ptr(), out.data.as_mut_ptr());
            let mut t0 = 0;
            while t0 < n_t {
                let tn = (n_t - t0).min(NT_T);
                let (xt, ot) = (xp.add(t0 * x.ld), op.add(t0 * out.ld));
                match tn {
                    3 => nt_rows::<3>(k, wp, w.ld, n_r, xt, x.ld, ot, out.ld),
                    2 => nt_rows::<2>(k, wp, w.ld, n_r, xt, x.ld, ot, out.ld),
                    _ => nt_rows::<1>(k, wp, w.ld, n_r, xt, x.ld, ot, out.ld),
                }
                t0 += tn;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nt_rows<const T: usize>(k: usize, w: *const f32, ldw: usize, n_r: usize, x: *const f32, ldx: usize, out: *mut f32, ldo: usize) {
        // SAFETY: the callers pass pointers to the extents `nt` and `nn_acc` checked.
        unsafe {
            let mut r0 = 0;
            while r0 < n_r {
                let rn = (n_r - r0).min(NT_R);
                let (wr, o) = (w.add(r0 * ldw), out.add(r0));
                match rn {
                    4 => nt_tile::<4, T>(k, wr, ldw, x, ldx, o, ldo),
                    3 => nt_tile::<3, T>(k, wr, ldw, x, ldx, o, ldo),
                    2 => nt_tile::<2, T>(k, wr, ldw, x, ldx, o, ldo),
                    _ => nt_tile::<1, T>(k, wr, ldw, x, ldx, o, ldo),
                }
                r0 += rn;
            }
        }
    }

    /// `R` rows × `T` tokens: `R·T` accumulators, `R + T` loads per `R·T` multiply-adds.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nt_tile<const R: usize, const T: usize>(k: usize, w: *const f32, ldw: usize, x: *const f32, ldx: usize, out: *mut f32, ldo: usize) {
        // SAFETY: the callers pass pointers to the extents `nt` and `nn_acc` checked.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let k8 = k / 8 * 8;
            let mut j = 0;
            while j < k8 {
                let mut xv = [_mm256_setzero_ps(); T];
                for (t, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.add(t * ldx + j));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(w.add(r * ldw + j));
                    for t in 0..T {
                        a[t] = _mm256_fmadd_ps(wv, xv[t], a[t]);
                    }
                }
                j += 8;
            }
            for (r, a) in acc.iter().enumerate() {
                for (t, &v) in a.iter().enumerate() {
                    let mut s = hsum(v);
                    for jj in k8..k {
                        s += *w.add(r * ldw + jj) * *x.add(t * ldx + jj);
                    }
                    *out.add(t * ldo + r) = s;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn nn_acc(n: usize, w: Strided, k: usize, c: Strided, n_t: usize, y: StridedMut) {
        // SAFETY: the callers pass pointers to the extents `nt` and `nn_acc` checked.
        unsafe {
            let (wp, cp, yp) = (w.data.as_ptr(), c.data.as_ptr(), y.data.as_mut_ptr());
            let mut t0 = 0;
            while t0 < n_t {
                let tn = (n_t - t0).min(NN_T);
                let (ct, yt) = (cp.add(t0 * c.ld), yp.add(t0 * y.ld));
                match tn {
                    6 => nn_cols::<6>(n, wp, w.ld, k, ct, c.ld, yt, y.ld),
                    5 => nn_cols::<5>(n, wp, w.ld, k, ct, c.ld, yt, y.ld),
                    4 => nn_cols::<4>(n, wp, w.ld, k, ct, c.ld, yt, y.ld),
                    3 => nn_cols::<3>(n, wp, w.ld, k, ct, c.ld, yt, y.ld),
                    2 => nn_cols::<2>(n, wp, w.ld, k, ct, c.ld, yt, y.ld),
                    _ => nn_cols::<1>(n, wp, w.ld, k, ct, c.ld, yt, y.ld),
                }
                t0 += tn;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nn_cols<const T: usize>(n: usize, w: *const f32, ldw: usize, k: usize, c: *const f32, ldc: usize, y: *mut f32, ldy: usize) {
        // SAFETY: the callers pass pointers to the extents `nt` and `nn_acc` checked.
        unsafe {
            let n8 = n / 8;
            let mut v0 = 0;
            while v0 < n8 {
                let vn = (n8 - v0).min(NN_C);
                let (wv, yv) = (w.add(v0 * 8), y.add(v0 * 8));
                match vn {
                    2 => nn_tile::<T, 2>(k, wv, ldw, c, ldc, yv, ldy),
                    _ => nn_tile::<T, 1>(k, wv, ldw, c, ldc, yv, ldy),
                }
                v0 += vn;
            }
            // The last `n mod 8` columns, one chain each.
            for t in 0..T {
                for j in n8 * 8..n {
                    let o = y.add(t * ldy + j);
                    let mut s = *o;
                    for r in 0..k {
                        s = (*c.add(t * ldc + r)).mul_add(*w.add(r * ldw + j), s);
                    }
                    *o = s;
                }
            }
        }
    }

    /// `T` tokens × `C` vectors: `T·C` accumulators, `C` loads and `T` broadcasts per `T·C`
    /// multiply-adds.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nn_tile<const T: usize, const C: usize>(k: usize, w: *const f32, ldw: usize, c: *const f32, ldc: usize, y: *mut f32, ldy: usize) {
        // SAFETY: the callers pass pointers to the extents `nt` and `nn_acc` checked.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); C]; T];
            for (t, a) in acc.iter_mut().enumerate() {
                for (v, av) in a.iter_mut().enumerate() {
                    *av = _mm256_loadu_ps(y.add(t * ldy + v * 8));
                }
            }
            for r in 0..k {
                let mut wv = [_mm256_setzero_ps(); C];
                for (v, x) in wv.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(w.add(r * ldw + v * 8));
                }
                for (t, a) in acc.iter_mut().enumerate() {
                    let cb = _mm256_broadcast_ss(&*c.add(t * ldc + r));
                    for v in 0..C {
                        a[v] = _mm256_fmadd_ps(cb, wv[v], a[v]);
                    }
                }
            }
            for (t, a) in acc.iter().enumerate() {
                for (v, &av) in a.iter().enumerate() {
                    _mm256_storeu_ps(y.add(t * ldy + v * 8), av);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every level's [`nt`] and [`nn_acc`] equal the portable loops bit for bit (fused or
    /// not as the level), at shapes with every tile remainder and strides wider than rows;
    /// and both are within rounding of f64 sums.
    #[test]
    fn tiles_equal_the_portable_loops() {
        let levels = [Isa::Scalar, Isa::detect()];
        for &(k, rows, toks) in &[(1, 1, 1), (7, 3, 2), (8, 4, 3), (13, 5, 7), (64, 9, 10), (67, 17, 13), (200, 26, 5)] {
            let (ldw, ldx, ldo) = (k + 3, k + 1, rows + 2);
            let w = data(rows * ldw, 1);
            let x = data(toks * ldx, 2);
            for isa in levels {
                let fused = fma(isa);
                // nt: out [toks, rows]
                let mut out = vec![0f32; toks * ldo];
                nt(isa, k, Strided::new(&w, ldw), rows, Strided::new(&x, ldx), toks, StridedMut::new(&mut out, ldo));
                let mut twin = vec![0f32; toks * ldo];
                let f = if fused { nt_lanes::<true> } else { nt_lanes::<false> };
                f(k, Strided::new(&w, ldw), rows, Strided::new(&x, ldx), toks, StridedMut::new(&mut twin, ldo));
                assert_eq!(out, twin, "nt {k}x{rows}x{toks} at {isa:?}");
                for t in 0..toks {
                    for r in 0..rows {
                        let exact: f64 = (0..k).map(|j| w[r * ldw + j] as f64 * x[t * ldx + j] as f64).sum();
                        assert!((out[t * ldo + r] as f64 - exact).abs() < 1e-5 * k as f64, "nt {k}x{rows}x{toks} ({t}, {r})");
                    }
                }
                // nn_acc: y [toks, n] += c [toks, k'] · w [k', n], with n = k, k' = rows.
                let (n, kk) = (k, rows);
                let c = data(toks * ldo, 3);
                let y0 = data(toks * ldx, 4);
                let mut y = y0.clone();
                nn_acc(isa, n, Strided::new(&w, ldw), kk, Strided::new(&c, ldo), toks, StridedMut::new(&mut y, ldx));
                let mut twin = y0.clone();
                let f = if fused { nn_lanes::<true> } else { nn_lanes::<false> };
                f(n, Strided::new(&w, ldw), kk, Strided::new(&c, ldo), toks, StridedMut::new(&mut twin, ldx));
                assert_eq!(y, twin, "nn_acc {n}x{kk}x{toks} at {isa:?}");
                for t in 0..toks {
                    for j in 0..ldx {
                        let want = if j < n {
                            y0[t * ldx + j] as f64 + (0..kk).map(|r| c[t * ldo + r] as f64 * w[r * ldw + j] as f64).sum::<f64>()
                        } else {
                            y0[t * ldx + j] as f64
                        };
                        assert!((y[t * ldx + j] as f64 - want).abs() < 1e-5 * (kk + 1) as f64, "nn_acc {n}x{kk}x{toks} ({t}, {j})");
                    }
                }
            }
        }
    }

    /// A tile computes what the same element computes alone: splitting the rows or tokens
    /// anywhere gives the same bits.
    #[test]
    fn a_result_does_not_depend_on_its_tile() {
        let isa = Isa::detect();
        let (k, rows, toks) = (45, 11, 9);
        let w = data(rows * k, 5);
        let x = data(toks * k, 6);
        let mut whole = vec![0f32; toks * rows];
        nt(isa, k, Strided::new(&w, k), rows, Strided::new(&x, k), toks, StridedMut::new(&mut whole, rows));
        for t in 0..toks {
            for r in 0..rows {
                let mut one = [0f32];
                nt(isa, k, Strided::new(&w[r * k..], k), 1, Strided::new(&x[t * k..], k), 1, StridedMut::new(&mut one, 1));
                assert_eq!(one[0].to_bits(), whole[t * rows + r].to_bits());
            }
        }
        let c = data(toks * rows, 7);
        let mut whole = vec![0f32; toks * k];
        nn_acc(isa, k, Strided::new(&w, k), rows, Strided::new(&c, rows), toks, StridedMut::new(&mut whole, k));
        for t in 0..toks {
            let mut one = vec![0f32; k];
            nn_acc(isa, k, Strided::new(&w, k), rows, Strided::new(&c[t * rows..], rows), 1, StridedMut::new(&mut one, k));
            assert_eq!(one, whole[t * k..(t + 1) * k]);
        }
    }
}

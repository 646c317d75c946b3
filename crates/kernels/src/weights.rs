//! Weight quantizers, bit for bit ggml's (`ggml-quants.c`): the `_ref` functions used
//! without an importance matrix and the `_impl` ones used with one.
//!
//! Files written by `bantam quantize` must be the bytes llama-quantize writes, so these are
//! straight ports: the same float operations in the same order (ggml-base is compiled
//! without FMA contraction, and Rust never contracts), the same integer truncations where C
//! stores an `int` into a `uint8_t` or `int8_t`. Rows are independent, which makes any
//! split of a tensor over threads give the same bytes.

// Index loops are kept where ggml indexes, so each function reads against its C original.
#![allow(clippy::needless_range_loop)]

use crate::blocks::*;
use crate::quantize::signed_absmax;
use gguf::GgmlType;

const GROUP_MAX_EPS: f32 = 1e-15;

/// Why a row cannot be quantized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantizeError {
    /// The type has no quantizer here (integer types, IQ quants, the activation formats).
    Unsupported(GgmlType),
    /// The row length is not a whole number of the type's blocks.
    RowLength { ty: GgmlType, n_per_row: usize },
    /// The importance matrix does not have one weight per column.
    ImatrixLength { expected: usize, got: usize },
}

impl std::fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported(t) => write!(f, "no quantizer for type {}", t.name()),
            Self::RowLength { ty, n_per_row } => {
                write!(f, "rows of {n_per_row} elements are not whole {} blocks of {}", ty.name(), ty.block_len())
            }
            Self::ImatrixLength { expected, got } => {
                write!(f, "importance matrix has {got} values for rows of {expected} columns")
            }
        }
    }
}

impl std::error::Error for QuantizeError {}

/// Whether [`quantize_rows`] can write `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
}

/// Quantize `src` (whole rows of `n_per_row`) to `ty` into `dst`, which must hold exactly
/// `src.len() / n_per_row` rows of `ty`. `imatrix` holds one importance weight per column
/// (llama-imatrix's mean squared activation); types without a weighted quantizer ignore it,
/// as ggml does.
pub fn quantize_rows(ty: GgmlType, src: &[f32], n_per_row: usize, imatrix: Option<&[f32]>, dst: &mut [u8]) -> Result<(), QuantizeError> {
    use GgmlType::*;
    if !can_quantize(ty) {
        return Err(QuantizeError::Unsupported(ty));
    }
    if n_per_row == 0 || !n_per_row.is_multiple_of(ty.block_len()) {
        return Err(QuantizeError::RowLength { ty, n_per_row });
    }
    if let Some(w) = imatrix {
        if w.len() != n_per_row {
            return Err(QuantizeError::ImatrixLength { expected: n_per_row, got: w.len() });
        }
    }
    let row_bytes = ty.row_bytes(n_per_row).expect("block-aligned row");
    assert_eq!(src.len() % n_per_row, 0, "source is not whole rows");
    assert_eq!(dst.len(), src.len() / n_per_row * row_bytes, "destination size");
    for (x, y) in src.chunks_exact(n_per_row).zip(dst.chunks_exact_mut(row_bytes)) {
        match ty {
            F32 => {
                for (o, v) in y.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            F16 => {
                for (o, v) in y.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
                }
            }
            BF16 => {
                for (o, v) in y.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
                }
            }
            Q8_0 => q8_0(x, blocks(y)),
            Q4_0 => match imatrix {
                None => q4_0(x, blocks(y)),
                Some(w) => q4_0_weighted(x, blocks(y), w),
            },
            Q4_1 => match imatrix {
                None => q4_1(x, blocks(y)),
                Some(w) => q4_1_weighted(x, blocks(y), w),
            },
            Q5_0 => match imatrix {
                None => q5_0(x, blocks(y)),
                Some(w) => q5_0_weighted(x, blocks(y), w),
            },
            Q5_1 => match imatrix {
                None => q5_1(x, blocks(y)),
                Some(w) => q5_1_weighted(x, blocks(y), w),
            },
            Q2_K => match imatrix {
                None => q2_k(x, blocks(y)),
                Some(w) => q2_k_weighted(x, blocks(y), w),
            },
            Q3_K => match imatrix {
                None => q3_k(x, blocks(y)),
                Some(w) => q3_k_weighted(x, blocks(y), Some(w)),
            },
            Q4_K => match imatrix {
                None => q4_k(x, blocks(y)),
                Some(w) => q4_k_weighted(x, blocks(y), Some(w)),
            },
            Q5_K => match imatrix {
                None => q5_k(x, blocks(y)),
                Some(w) => q5_k_weighted(x, blocks(y), Some(w)),
            },
            Q6_K => q6_k(x, blocks(y), imatrix),
            Q8_1 | Q8_K => unreachable!("excluded by can_quantize"),
        }
    }
    Ok(())
}

fn blocks<T: Block>(bytes: &mut [u8]) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    assert!(bytes.len().is_multiple_of(size));
    assert!((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()), "misaligned output");
    // SAFETY: length and alignment checked; T is plain old data (trait Block).
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut T, bytes.len() / size) }
}

/// `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept quiet.
pub fn f32_to_bf16(s: f32) -> u16 {
    let u = s.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// ggml's `nearest_int`: round half to even by the 1.5·2^23 trick. Out of range it returns
/// what C returns (callers clamp), so no check.
#[inline(always)]
fn nearest_int(f: f32) -> i32 {
    let i = (f + 12582912.0).to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

// ---------------------------------------------------------------- legacy quants

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Pack 32 five-bit values as Q5's low nibbles and the `qh` word.
fn pack5(l: &[u8; 32], qs: &mut [u8; 16]) -> [u8; 4] {
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (l[j], l[j + 16]);
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        qh |= (((a & 0x10) >> 4) as u32) << j;
        qh |= (((b & 0x10) >> 4) as u32) << (j + 16);
    }
    qh.to_le_bytes()
}

fn q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (b, xs) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
        }
    }
}

fn q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for (b, xs) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let d = signed_absmax(xs) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for j in 0..16 {
            let q0 = ((xs[j] * id + 8.5) as i32 as i8).min(15) as u8;
            let q1 = ((xs[j + 16] * id + 8.5) as i32 as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

fn q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    for (b, xs) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(xs);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        for j in 0..16 {
            let q0 = (((xs[j] - min) * id + 0.5) as i32 as i8).min(15) as u8;
            let q1 = (((xs[j + 16] - min) * id + 0.5) as i32 as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

fn q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    for (b, xs) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let d = signed_absmax(xs) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        let mut l = [0u8; 32];
        for (lj, v) in l.iter_mut().zip(xs) {
            *lj = ((v * id + 16.5) as i32 as i8).min(31) as u8;
        }
        b.qh = pack5(&l, &mut b.qs);
    }
}

fn q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    for (b, xs) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(xs);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        let mut l = [0u8; 32];
        for (lj, v) in l.iter_mut().zip(xs) {
            *lj = ((v - min) * id + 0.5) as i32 as u8;
        }
        b.qh = pack5(&l, &mut b.qs);
    }
}

/// `sigma2` of the `_impl` legacy quantizers: the mean square over the whole row.
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0f32;
    for v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

fn block_weights(xb: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &x), &q) in out.iter_mut().zip(xb).zip(qw) {
        *o = q * (sigma2 + x * x).sqrt();
    }
}

fn q4_0_weighted(x: &[f32], y: &mut [BlockQ4_0], qw: &[f32]) {
    let sigma2 = row_sigma2(x);
    let (mut weight, mut l) = ([0f32; 32], [0i8; 32]);
    for (ib, b) in y.iter_mut().enumerate() {
        let xb = &x[QK * ib..QK * ib + QK];
        block_weights(xb, &qw[QK * ib..QK * ib + QK], sigma2, &mut weight);
        let d = make_qx_quants(8, xb, &mut l, 1, Some(&weight));
        b.d = f32_to_f16(d);
        for j in 0..16 {
            b.qs[j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
        }
    }
}

fn q4_1_weighted(x: &[f32], y: &mut [BlockQ4_1], qw: &[f32]) {
    let sigma2 = row_sigma2(x);
    let (mut weight, mut l, mut aux) = ([0f32; 32], [0u8; 32], [0u8; 32]);
    for (ib, b) in y.iter_mut().enumerate() {
        let xb = &x[QK * ib..QK * ib + QK];
        block_weights(xb, &qw[QK * ib..QK * ib + QK], sigma2, &mut weight);
        let (d, min) = make_qkx3_quants(15, xb, Some(&weight), &mut l, &mut aux, -0.9, 0.05, 36);
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(-min);
        for j in 0..16 {
            b.qs[j] = l[j] | (l[j + 16] << 4);
        }
    }
}

fn q5_0_weighted(x: &[f32], y: &mut [BlockQ5_0], qw: &[f32]) {
    let sigma2 = row_sigma2(x);
    let (mut weight, mut l) = ([0f32; 32], [0i8; 32]);
    for (ib, b) in y.iter_mut().enumerate() {
        let xb = &x[QK * ib..QK * ib + QK];
        block_weights(xb, &qw[QK * ib..QK * ib + QK], sigma2, &mut weight);
        let d = make_qx_quants(16, xb, &mut l, 1, Some(&weight));
        b.d = f32_to_f16(d);
        b.qh = pack5(&l.map(|v| v as u8), &mut b.qs);
    }
}

fn q5_1_weighted(x: &[f32], y: &mut [BlockQ5_1], qw: &[f32]) {
    let sigma2 = row_sigma2(x);
    let (mut weight, mut l, mut aux) = ([0f32; 32], [0u8; 32], [0u8; 32]);
    for (ib, b) in y.iter_mut().enumerate() {
        let xb = &x[QK * ib..QK * ib + QK];
        block_weights(xb, &qw[QK * ib..QK * ib + QK], sigma2, &mut weight);
        let (d, min) = make_qkx3_quants(31, xb, Some(&weight), &mut l, &mut aux, -0.9, 0.05, 36);
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(-min);
        b.qh = pack5(&l, &mut b.qs);
    }
}

// ---------------------------------------------------------------- scale searches

/// `make_qx_quants`: symmetric levels `L - nmax` in `[-nmax, nmax)`, returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32, qw: Option<&[f32]>) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for (lo, &v) in l_out.iter_mut().zip(x) {
            let l = nearest_int(iscale * v);
            *lo = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 { (-rmse_type, true) } else { (rmse_type, false) };
    let weight = |i: usize| -> f32 {
        match qw {
            Some(w) => w[i],
            None => match rmse_type {
                1 => x[i] * x[i],
                2 => 1.0,
                3 => x[i].abs(),
                _ => x[i].abs().sqrt(),
            },
        }
    };
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 { 0.5 * (scale + 1.0 / iscale) } else { 1.0 / iscale };
    }
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = weight(i);
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]);
                l_out[i] = (nmax + l.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants`: as `make_qx_quants` with `x²` weights and a coordinate-descent refinement.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l_out[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for l in l_out[..n].iter_mut() {
            *l += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// `make_qkx2_quants` (weights given) and `make_qkx3_quants` (weights optional, `x²`
/// otherwise) share one body: levels in `[0, nmax]` with a minimum, searching `nstep + 1`
/// scales. Returns `(scale, the_min)` where the block is `scale * L - the_min`. Generic over
/// the two flags so each caller gets a loop without per-element branches, as C's inlining
/// gives ggml.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn make_qkx_quants<const USE_MAD: bool, const EQUAL_ONLY: bool>(
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut own = [0f32; 32];
    let w: &[f32] = match weights {
        Some(w) => &w[..n],
        None => {
            for (o, v) in own.iter_mut().zip(x) {
                *o = v * v;
            }
            &own[..n]
        }
    };
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = if EQUAL_ONLY { max == min } else { max <= min };
    if degenerate {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if USE_MAD { d.abs() } else { d * d };
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        best_error += w[i] * err(scale * l_out[i] as f32 + min - x[i]);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let lf = l as f32;
            sum_l += w[i] * lf;
            sum_l2 += w[i] * lf * lf;
            sum_xl += w[i] * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                cur_error += w[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(nmax: i32, x: &[f32], weights: &[f32], l: &mut [u8], laux: &mut [u8], rmin: f32, rdelta: f32, nstep: i32, use_mad: bool) -> (f32, f32) {
    if use_mad {
        make_qkx_quants::<true, true>(nmax, x, Some(weights), l, laux, rmin, rdelta, nstep)
    } else {
        make_qkx_quants::<false, true>(nmax, x, Some(weights), l, laux, rmin, rdelta, nstep)
    }
}

/// `make_qkx3_quants`; every caller in ggml passes `use_mad = false`.
#[allow(clippy::too_many_arguments)]
fn make_qkx3_quants(nmax: i32, x: &[f32], weights: Option<&[f32]>, l: &mut [u8], laux: &mut [u8], rmin: f32, rdelta: f32, nstep: i32) -> (f32, f32) {
    make_qkx_quants::<false, false>(nmax, x, weights, l, laux, rmin, rdelta, nstep)
}

/// `make_qp_quants`: non-negative levels in `[0, nmax]` for the super-block scales.
fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = max.max(v);
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let lf = l as f32;
        sumlx += qw[i] * x[i] * lf;
        suml2 += qw[i] * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

// ---------------------------------------------------------------- k-quants

/// Pack 2-bit levels as Q2_K / Q3_K store them: four 32-element groups per byte lane.
fn pack2(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] = l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

fn q2_k(x: &[f32], y: &mut [BlockQ2K]) {
    let (mut l, mut laux, mut weights) = ([0u8; QK_K], [0u8; 16], [0f32; 16]);
    let (mut mins, mut scales) = ([0f32; 16], [0f32; 16]);
    let q4scale = 15f32;
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(3, xs, &weights, &mut l[16 * j..16 * j + 16], &mut laux, -0.5, 0.1, 15, true);
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        if max_scale > 0.0 {
            let iscale = q4scale / max_scale;
            for j in 0..16 {
                b.scales[j] = nearest_int(iscale * scales[j]) as u8;
            }
            b.d = f32_to_f16(max_scale / q4scale);
        } else {
            b.scales = [0; 16];
            b.d = f32_to_f16(0.0);
        }
        if max_min > 0.0 {
            let iscale = q4scale / max_min;
            for j in 0..16 {
                let lm = nearest_int(iscale * mins[j]);
                b.scales[j] |= (lm << 4) as u8;
            }
            b.dmin = f32_to_f16(max_min / q4scale);
        } else {
            b.dmin = f32_to_f16(0.0);
        }
        requantize_q2(x, b, &mut l);
        pack2(&l, &mut b.qs);
    }
}

/// Final Q2_K levels from the stored scales and mins.
fn requantize_q2(x: &[f32], b: &BlockQ2K, l: &mut [u8; QK_K]) {
    let (dall, mall) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
    for j in 0..16 {
        let d = dall * (b.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = mall * (b.scales[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
}

fn q2_k_weighted(x: &[f32], y: &mut [BlockQ2K], qw: &[f32]) {
    let (mut l, mut laux, mut weight) = ([0u8; QK_K], [0u8; 16], [0f32; 16]);
    let (mut mins, mut scales, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        sw.fill(0.0);
        let mut sumx2 = 0f32;
        for v in x {
            sumx2 += v * v;
        }
        let sigma2 = sumx2 / QK_K as f32;
        for j in 0..16 {
            let q = &qw[QK_K * i + 16 * j..QK_K * i + 16 * j + 16];
            let xs = &x[16 * j..16 * j + 16];
            block_weights(xs, q, sigma2, &mut weight);
            for w in &weight {
                sw[j] += w;
            }
            let (s, m) = make_qkx3_quants(3, xs, Some(&weight), &mut l[16 * j..16 * j + 16], &mut laux, -0.9, 0.05, 36);
            scales[j] = s;
            mins[j] = m;
        }
        let dm = make_qp_quants(15, &scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &mins, &mut lm, &sw);
        b.d = f32_to_f16(dm);
        b.dmin = f32_to_f16(mm);
        for j in 0..16 {
            b.scales[j] = ls[j] | (lm[j] << 4);
        }
        requantize_q2(x, b, &mut l);
        pack2(&l, &mut b.qs);
    }
}

/// Store Q3_K's sixteen 6-bit scales (already offset by 32) in its 12-byte layout.
fn pack_q3_scales(levels: impl Fn(usize) -> i32, scales: &mut [u8; 12]) {
    *scales = [0; 12];
    for j in 0..16 {
        let mut l = levels(j);
        if j < 8 {
            scales[j] = (l & 0xF) as u8;
        } else {
            scales[j - 8] |= ((l & 0xF) << 4) as u8;
        }
        l >>= 4;
        scales[j % 4 + 8] |= (l << (2 * (j / 4))) as u8;
    }
}

/// Final Q3_K levels from the stored scales, then the high-bit mask and the low bits.
fn finish_q3(x: &[f32], b: &mut BlockQ3K, l: &mut [i8; QK_K]) {
    let dall = f16_to_f32(b.d);
    for j in 0..16 {
        let lo = if j < 8 { b.scales[j] & 0xF } else { b.scales[j - 8] >> 4 } as i8;
        let sc = (lo | ((((b.scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i8)) - 32;
        let d = dall * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    b.hmask = [0; QK_K / 8];
    let (mut m, mut hm) = (0usize, 1u8);
    for lj in l.iter_mut() {
        if *lj > 3 {
            b.hmask[m] |= hm;
            *lj -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm = hm.wrapping_shl(1);
        }
    }
    pack2(&l.map(|v| v as u8), &mut b.qs);
}

fn q3_k(x: &[f32], y: &mut [BlockQ3K]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16], true);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            pack_q3_scales(
                |j| {
                    let l = nearest_int(iscale * scales[j]) as i8;
                    l.clamp(-32, 31) as i32 + 32
                },
                &mut b.scales,
            );
            b.d = f32_to_f16(1.0 / iscale);
        } else {
            b.scales = [0; 12];
            b.d = f32_to_f16(0.0);
        }
        finish_q3(x, b, &mut l);
    }
}

fn q3_k_weighted(x: &[f32], y: &mut [BlockQ3K], qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let (mut scales, mut weight, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let mut ls = [0i8; 16];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let mut sumx2 = 0f32;
        for v in x {
            sumx2 += v * v;
        }
        let sigma2 = 2.0 * sumx2 / QK_K as f32;
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            match qw {
                Some(qw) => block_weights(xs, &qw[QK_K * i + 16 * j..QK_K * i + 16 * j + 16], sigma2, &mut weight),
                None => {
                    for (w, v) in weight.iter_mut().zip(xs) {
                        *w = v * v;
                    }
                }
            }
            let mut sumw = 0f32;
            for w in &weight {
                sumw += w;
            }
            sw[j] = sumw;
            scales[j] = make_qx_quants(4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
        }
        let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
        pack_q3_scales(|j| ls[j] as i32, &mut b.scales);
        b.d = f32_to_f16(d_block);
        finish_q3(x, b, &mut l);
    }
}

/// Store eight 6-bit scales and mins in the 12-byte layout of Q4_K / Q5_K.
fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8], scales: &mut [u8; K_SCALE_SIZE]) {
    *scales = [0; K_SCALE_SIZE];
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            scales[j] = s;
            scales[j + 4] = m;
        } else {
            scales[j + 4] = (s & 0xF) | ((m & 0xF) << 4);
            scales[j - 4] |= (s >> 4) << 6;
            scales[j] |= (m >> 4) << 6;
        }
    }
}

/// Final Q4_K / Q5_K levels in `[0, nmax]` from the stored scales and mins.
fn requantize_k4(x: &[f32], d: u16, dmin: u16, scales: &[u8; K_SCALE_SIZE], nmax: i32, l: &mut [u8; QK_K]) {
    let (sc, mn) = unpack_scale_min_k4(scales);
    for j in 0..8 {
        let dj = f16_to_f32(d) * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * mn[j] as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K / Q5_K without an imatrix: per-32 scales and mins from `make_qkx2_quants`, then
/// 6-bit codes relative to the largest of each.
fn k4_ref_scales(x: &[f32], nmax: i32, rmin: f32, nstep: i32, l: &mut [u8; QK_K]) -> ([u8; 8], [u8; 8], f32, f32) {
    let (mut mins, mut scales, mut weights, mut laux) = ([0f32; 8], [0f32; 8], [0f32; 32], [0u8; 32]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], &mut laux, rmin, 0.1, nstep, false);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (ls, lm, max_scale / 63.0, max_min / 63.0)
}

/// Q4_K / Q5_K with optional imatrix (`_impl`): `make_qkx3_quants` per 32, then
/// `make_qp_quants` for the 6-bit codes.
fn k4_weighted_scales(x: &[f32], qw: Option<&[f32]>, nmax: i32, l: &mut [u8; QK_K]) -> ([u8; 8], [u8; 8], f32, f32) {
    let (mut mins, mut scales, mut weights, mut laux, mut sw) = ([0f32; 8], [0f32; 8], [0f32; 32], [0u8; 32], [0f32; 8]);
    let mut sum_x2 = 0f32;
    for v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    let av_x = sigma2.sqrt();
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        match qw {
            Some(q) => block_weights(xs, &q[32 * j..32 * j + 32], sigma2, &mut weights),
            None => {
                for (w, v) in weights.iter_mut().zip(xs) {
                    *w = av_x + v.abs();
                }
            }
        }
        let mut sumw = 0f32;
        for w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx3_quants(nmax, xs, Some(&weights), &mut l[32 * j..32 * j + 32], &mut laux, -0.9, 0.05, 36);
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    (ls.map(|v| v.min(63)), lm.map(|v| v.min(63)), d_block, m_block)
}

fn pack_q4_k(l: &[u8; QK_K], qs: &mut [u8; QK_K / 2]) {
    for (n, j) in (0..QK_K).step_by(64).enumerate() {
        for k in 0..32 {
            qs[32 * n + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
}

fn pack_q5_k(l: &[u8; QK_K], qh: &mut [u8; QK_K / 8], qs: &mut [u8; QK_K / 2]) {
    *qh = [0; QK_K / 8];
    let (mut m1, mut m2) = (1u8, 2u8);
    for (g, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * g + j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
}

fn q4_k(x: &[f32], y: &mut [BlockQ4K]) {
    let mut l = [0u8; QK_K];
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (ls, lm, d, dmin) = k4_ref_scales(x, 15, -1.0, 20, &mut l);
        pack_k4_scales(&ls, &lm, &mut b.scales);
        b.d = f32_to_f16(d);
        b.dmin = f32_to_f16(dmin);
        requantize_k4(x, b.d, b.dmin, &b.scales, 15, &mut l);
        pack_q4_k(&l, &mut b.qs);
    }
}

fn q4_k_weighted(x: &[f32], y: &mut [BlockQ4K], qw: Option<&[f32]>) {
    let mut l = [0u8; QK_K];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let (ls, lm, d, dmin) = k4_weighted_scales(x, qw.map(|q| &q[QK_K * i..QK_K * i + QK_K]), 15, &mut l);
        pack_k4_scales(&ls, &lm, &mut b.scales);
        b.d = f32_to_f16(d);
        b.dmin = f32_to_f16(dmin);
        requantize_k4(x, b.d, b.dmin, &b.scales, 15, &mut l);
        pack_q4_k(&l, &mut b.qs);
    }
}

fn q5_k(x: &[f32], y: &mut [BlockQ5K]) {
    let mut l = [0u8; QK_K];
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (ls, lm, d, dmin) = k4_ref_scales(x, 31, -0.5, 15, &mut l);
        pack_k4_scales(&ls, &lm, &mut b.scales);
        b.d = f32_to_f16(d);
        b.dmin = f32_to_f16(dmin);
        requantize_k4(x, b.d, b.dmin, &b.scales, 31, &mut l);
        pack_q5_k(&l, &mut b.qh, &mut b.qs);
    }
}

fn q5_k_weighted(x: &[f32], y: &mut [BlockQ5K], qw: Option<&[f32]>) {
    let mut l = [0u8; QK_K];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let (ls, lm, d, dmin) = k4_weighted_scales(x, qw.map(|q| &q[QK_K * i..QK_K * i + QK_K]), 31, &mut l);
        pack_k4_scales(&ls, &lm, &mut b.scales);
        b.d = f32_to_f16(d);
        b.dmin = f32_to_f16(dmin);
        requantize_k4(x, b.d, b.dmin, &b.scales, 31, &mut l);
        pack_q5_k(&l, &mut b.qh, &mut b.qs);
    }
}

fn q6_k(x: &[f32], y: &mut [BlockQ6K], qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..16 {
            let w = qw.map(|q| &q[QK_K * i + 16 * ib..QK_K * i + 16 * ib + 16]);
            let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16], 1, w);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K { ql: [0; QK_K / 2], qh: [0; QK_K / 4], scales: [0; 16], d: f32_to_f16(0.0) };
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f32_to_f16(1.0 / iscale);
        for ib in 0..16 {
            b.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let dall = f16_to_f32(b.d);
        for j in 0..16 {
            let d = dall * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        for (g, j) in (0..QK_K).step_by(128).enumerate() {
            let (ql, qh) = (&mut b.ql[64 * g..64 * g + 64], &mut b.qh[32 * g..32 * g + 32]);
            for k in 0..32 {
                let lv = |o: usize| l[j + k + o] as u8;
                ql[k] = (lv(0) & 0xF) | ((lv(64) & 0xF) << 4);
                ql[k + 32] = (lv(32) & 0xF) | ((lv(96) & 0xF) << 4);
                qh[k] = (lv(0) >> 4) | ((lv(32) >> 4) << 2) | ((lv(64) >> 4) << 4) | ((lv(96) >> 4) << 6);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize_row;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                ((s >> 8) as f32 / (1 << 24) as f32 - 0.5) * if s.is_multiple_of(7) { 8.0 } else { 1.0 }
            })
            .collect()
    }

    #[test]
    fn every_type_round_trips_within_its_precision() {
        // bounds on rms error relative to the data's rms (which has outliers, as weights do):
        // each bit fewer roughly doubles the error
        use GgmlType::*;
        let n = 512;
        let x = data(4 * n, 7);
        let imatrix: Vec<f32> = data(n, 9).iter().map(|v| v * v + 0.01).collect();
        for (ty, tol) in [
            (F32, 0.0),
            (F16, 1e-3),
            (BF16, 1e-2),
            (Q8_0, 0.01),
            (Q6_K, 0.04),
            (Q5_0, 0.08),
            (Q5_1, 0.08),
            (Q5_K, 0.08),
            (Q4_0, 0.16),
            (Q4_1, 0.16),
            (Q4_K, 0.16),
            (Q3_K, 0.3),
            (Q2_K, 0.45),
        ] {
            for w in [None, Some(&imatrix[..])] {
                let mut q = vec![0u8; 4 * ty.row_bytes(n).unwrap()];
                quantize_rows(ty, &x, n, w, &mut q).unwrap();
                let mut back = vec![0f32; x.len()];
                for (r, row) in q.chunks_exact(ty.row_bytes(n).unwrap()).enumerate() {
                    dequantize_row(ty, row, &mut back[r * n..(r + 1) * n]);
                }
                let rms = (x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32).sqrt();
                let scale = (x.iter().map(|a| a * a).sum::<f32>() / x.len() as f32).sqrt();
                assert!(rms <= tol * scale, "{}: rms error {rms} of {scale} (imatrix {})", ty.name(), w.is_some());
            }
        }
    }

    #[test]
    fn zero_rows_quantize_to_zero() {
        use GgmlType::*;
        for ty in [Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
            let mut q = vec![0xAAu8; ty.row_bytes(256).unwrap()];
            quantize_rows(ty, &[0.0; 256], 256, None, &mut q).unwrap();
            let mut back = vec![1f32; 256];
            dequantize_row(ty, &q, &mut back);
            assert!(back.iter().all(|&v| v == 0.0), "{}", ty.name());
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut q = vec![0u8; 100];
        assert!(matches!(quantize_rows(GgmlType::Q4_K, &[0.0; 64], 64, None, &mut q), Err(QuantizeError::RowLength { .. })));
        assert!(matches!(quantize_rows(GgmlType::Q8_1, &[0.0; 32], 32, None, &mut q), Err(QuantizeError::Unsupported(_))));
        assert!(matches!(quantize_rows(GgmlType::Q4_0, &[0.0; 32], 32, Some(&[1.0; 16]), &mut q[..18]), Err(QuantizeError::ImatrixLength { .. })));
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(f32_to_bf16(f32::NAN) & 0x7fc0, 0x7fc0);
    }
}

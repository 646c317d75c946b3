//! Quantization of f32 rows: activations into the 8-bit formats the dot products take
//! (as ggml's x86 path does), and reference quantizers for the weight formats used to make
//! test models.

use crate::blocks::*;

/// Round half to even, as `_mm256_round_ps(_, _MM_ROUND_NEAREST)` and ggml's `nearest_int`.
/// (ggml's `nearest_int` trick, valid for |x| < 2^22; much cheaper than a libm call).
#[inline(always)]
pub(crate) fn round_even(x: f32) -> i32 {
    debug_assert!(x.abs() < 4194303.0);
    let v = (x + 12582912.0).to_bits() as i32;
    (v & 0x007f_ffff) - 0x0040_0000
}

/// The element of largest magnitude, with its sign (0 for an all-zero block).
pub(crate) fn signed_absmax(xs: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in xs {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Activations to Q8_0 (`quantize_row_q8_0`, x86): `d = amax / 127`, `q = round(x * 127 / amax)`.
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f32_to_f16(d);
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = round_even(v * id) as i8;
        }
    }
}

/// Activations to Q8_1: as Q8_0 plus `s = d * sum(q)`.
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(xs) {
            let r = round_even(v * id);
            *q = r as i8;
            sum += r;
        }
        b.d = f32_to_f16(d);
        b.s = f32_to_f16(d * sum as f32);
    }
}

/// Activations to Q8_K (`quantize_row_q8_K_ref`): scale from the element of largest
/// magnitude, keeping its sign, so that element maps to -127; sums per 16 for the mins.
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let max = signed_absmax(xs);
        if max == 0.0 {
            b.d = 0.0;
            b.qs = [0; QK_K];
            b.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = round_even(iscale * v).min(127) as i8;
        }
        for (j, s) in b.bsums.iter_mut().enumerate() {
            *s = b.qs[j * 16..j * 16 + 16].iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Weights to Q8_0 as ggml writes them (`quantize_row_q8_0_ref`, through
/// [`crate::weights`]).
pub fn quantize_weights_q8_0(x: &[f32]) -> Vec<BlockQ8_0> {
    weights_as(gguf::GgmlType::Q8_0, x, BlockQ8_0 { d: 0, qs: [0; QK] })
}

/// Weights to Q4_0 as ggml writes them (`quantize_row_q4_0_ref`).
pub fn quantize_weights_q4_0(x: &[f32]) -> Vec<BlockQ4_0> {
    weights_as(gguf::GgmlType::Q4_0, x, BlockQ4_0 { d: 0, qs: [0; 16] })
}

/// Weights to Q4_1 as ggml writes them (`quantize_row_q4_1_ref`).
pub fn quantize_weights_q4_1(x: &[f32]) -> Vec<BlockQ4_1> {
    weights_as(gguf::GgmlType::Q4_1, x, BlockQ4_1 { d: 0, m: 0, qs: [0; 16] })
}

/// Weights to Q5_0 as ggml writes them (`quantize_row_q5_0_ref`).
pub fn quantize_weights_q5_0(x: &[f32]) -> Vec<BlockQ5_0> {
    weights_as(gguf::GgmlType::Q5_0, x, BlockQ5_0 { d: 0, qh: [0; 4], qs: [0; 16] })
}

fn weights_as<T: Block>(ty: gguf::GgmlType, x: &[f32], zero: T) -> Vec<T> {
    let mut out = vec![zero; x.len() / QK];
    crate::weights::quantize_rows(ty, &x[..out.len() * QK], QK, None, block_bytes_mut(&mut out)).expect("whole blocks of a supported type");
    out
}

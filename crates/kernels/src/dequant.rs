//! Scalar dequantization of every supported tensor type to f32 (`dequantize_row_*` in
//! ggml). Used for embedding lookups, for the types without an integer dot product, and as
//! the reference the dot-product kernels are tested against.

use crate::blocks::*;
use gguf::GgmlType;

/// Dequantize one row of `out.len()` elements stored as `ty` in `src`.
/// `src` must hold exactly the row's bytes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        F16 => {
            // SAFETY: any two bytes are a valid f16; align_to only reinterprets the aligned middle.
            let (pre, mid, post) = unsafe { src.align_to::<half::f16>() };
            if pre.is_empty() && post.is_empty() && cfg!(target_endian = "little") {
                // the half crate's bulk conversion (F16C / NEON where the CPU has them)
                use half::slice::HalfFloatSliceExt;
                mid.convert_to_f32_slice(&mut out[..mid.len()]);
            } else {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
        }
        BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Q4_0 => each::<BlockQ4_0>(src, out, QK, |b, y| {
            let d = f16_to_f32(b.d);
            for j in 0..16 {
                y[j] = ((b.qs[j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }),
        Q4_1 => each::<BlockQ4_1>(src, out, QK, |b, y| {
            let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
            for j in 0..16 {
                y[j] = (b.qs[j] & 0xF) as f32 * d + m;
                y[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
            }
        }),
        Q5_0 => each::<BlockQ5_0>(src, out, QK, |b, y| {
            let d = f16_to_f32(b.d);
            let qh = u32::from_le_bytes(b.qh);
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                y[j] = (((b.qs[j] & 0xF) | h0) as i32 - 16) as f32 * d;
                y[j + 16] = (((b.qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
            }
        }),
        Q5_1 => each::<BlockQ5_1>(src, out, QK, |b, y| {
            let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
            let qh = u32::from_le_bytes(b.qh);
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                y[j] = ((b.qs[j] & 0xF) | h0) as f32 * d + m;
                y[j + 16] = ((b.qs[j] >> 4) | h1) as f32 * d + m;
            }
        }),
        Q8_0 => each::<BlockQ8_0>(src, out, QK, |b, y| {
            let d = f16_to_f32(b.d);
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * d;
            }
        }),
        Q8_1 => each::<BlockQ8_1>(src, out, QK, |b, y| {
            let d = f16_to_f32(b.d);
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * d;
            }
        }),
        Q8_K => each::<BlockQ8K>(src, out, QK_K, |b, y| {
            for (yj, &q) in y.iter_mut().zip(&b.qs) {
                *yj = q as f32 * b.d;
            }
        }),
        Q2_K => each::<BlockQ2K>(src, out, QK_K, dequant_q2k),
        Q3_K => each::<BlockQ3K>(src, out, QK_K, dequant_q3k),
        Q4_K => each::<BlockQ4K>(src, out, QK_K, dequant_q4k),
        Q5_K => each::<BlockQ5K>(src, out, QK_K, dequant_q5k),
        Q6_K => each::<BlockQ6K>(src, out, QK_K, dequant_q6k),
    }
}

fn each<T: Block>(src: &[u8], out: &mut [f32], n: usize, f: impl Fn(&T, &mut [f32])) {
    for (b, y) in as_blocks::<T>(src).iter().zip(out.chunks_exact_mut(n)) {
        f(b, y)
    }
}

fn dequant_q2k(b: &BlockQ2K, y: &mut [f32]) {
    let (d, min) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
    let mut is = 0;
    let mut o = 0;
    for n in 0..2 {
        let q = &b.qs[n * 32..n * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                for l in 0..16 {
                    y[o] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                    o += 1;
                }
            }
        }
    }
}

/// Unpack Q3_K's 16 6-bit scales (biased by 32).
pub(crate) fn unpack_q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let mut aux =
        [u32::from_le_bytes([s[0], s[1], s[2], s[3]]), u32::from_le_bytes([s[4], s[5], s[6], s[7]]), u32::from_le_bytes([s[8], s[9], s[10], s[11]]), 0];
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, byte) in a.to_le_bytes().iter().enumerate() {
            out[i * 4 + k] = (*byte as i32 - 32) as i8;
        }
    }
    out
}

fn dequant_q3k(b: &BlockQ3K, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    let scales = unpack_q3k_scales(&b.scales);
    let mut is = 0;
    let mut o = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &b.qs[n * 32..n * 32 + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 0..16 {
                    let i = l + 16 * half;
                    let v = ((q[i] >> shift) & 3) as i32 - if b.hmask[i] & m != 0 { 0 } else { 4 };
                    y[o] = dl * v as f32;
                    o += 1;
                }
            }
            m <<= 1;
        }
    }
}

fn dequant_q4k(b: &BlockQ4K, y: &mut [f32]) {
    let (d, min) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
    let (sc, mn) = unpack_scale_min_k4(&b.scales);
    for j in 0..4 {
        let q = &b.qs[j * 32..j * 32 + 32];
        let (d1, m1) = (d * sc[2 * j] as f32, min * mn[2 * j] as f32);
        let (d2, m2) = (d * sc[2 * j + 1] as f32, min * mn[2 * j + 1] as f32);
        for l in 0..32 {
            y[j * 64 + l] = d1 * (q[l] & 0xF) as f32 - m1;
            y[j * 64 + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn dequant_q5k(b: &BlockQ5K, y: &mut [f32]) {
    let (d, min) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
    let (sc, mn) = unpack_scale_min_k4(&b.scales);
    for j in 0..4 {
        let q = &b.qs[j * 32..j * 32 + 32];
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (d1, m1) = (d * sc[2 * j] as f32, min * mn[2 * j] as f32);
        let (d2, m2) = (d * sc[2 * j + 1] as f32, min * mn[2 * j + 1] as f32);
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            y[j * 64 + l] = d1 * ((q[l] & 0xF) + h1) as f32 - m1;
            y[j * 64 + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// The four 6-bit values of Q6_K at positions `l`, `l+32`, `l+64`, `l+96` of a 128-chunk.
#[inline(always)]
pub(crate) fn q6k_quad(ql: &[u8], qh: &[u8], l: usize) -> [i32; 4] {
    [
        ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32,
        ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32,
        ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32,
        ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32,
    ]
}

fn dequant_q6k(b: &BlockQ6K, y: &mut [f32]) {
    let d = f16_to_f32(b.d);
    for n in 0..2 {
        let (ql, qh, sc) = (&b.ql[n * 64..], &b.qh[n * 32..], &b.scales[n * 8..]);
        for l in 0..32 {
            let is = l / 16;
            let q = q6k_quad(ql, qh, l);
            for k in 0..4 {
                y[n * 128 + l + 32 * k] = d * sc[is + 2 * k] as f32 * q[k] as f32;
            }
        }
    }
}

//! Scalar dot products: the reference every SIMD kernel is tested against, and the path on
//! CPUs without AVX2 (aarch64 included). Integer sums per block, then one float multiply,
//! as ggml's `ggml_vec_dot_*_generic`.

use crate::blocks::*;
use crate::dequant::{q6k_quad, unpack_q3k_scales};

pub fn q4_0(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ4_0>(w), as_blocks::<BlockQ8_0>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut s = 0i32;
        for j in 0..16 {
            s += ((x.qs[j] & 0xF) as i32 - 8) * y.qs[j] as i32;
            s += ((x.qs[j] >> 4) as i32 - 8) * y.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
    }
    sum
}

pub fn q4_1(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ4_1>(w), as_blocks::<BlockQ8_1>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut s = 0i32;
        for j in 0..16 {
            s += (x.qs[j] & 0xF) as i32 * y.qs[j] as i32;
            s += (x.qs[j] >> 4) as i32 * y.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_to_f32(x.d) * f16_to_f32(y.d) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sum
}

#[inline(always)]
fn q5_pair(qs: &[u8; 16], qh: u32, j: usize) -> (i32, i32) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    (((qs[j] & 0xF) | h0) as i32, ((qs[j] >> 4) | h1) as i32)
}

pub fn q5_0(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ5_0>(w), as_blocks::<BlockQ8_0>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let qh = u32::from_le_bytes(x.qh);
        let mut s = 0i32;
        for j in 0..16 {
            let (v0, v1) = q5_pair(&x.qs, qh, j);
            s += (v0 - 16) * y.qs[j] as i32 + (v1 - 16) * y.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
    }
    sum
}

pub fn q5_1(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ5_1>(w), as_blocks::<BlockQ8_1>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let qh = u32::from_le_bytes(x.qh);
        let mut s = 0i32;
        for j in 0..16 {
            let (v0, v1) = q5_pair(&x.qs, qh, j);
            s += v0 * y.qs[j] as i32 + v1 * y.qs[j + 16] as i32;
        }
        sum += s as f32 * f16_to_f32(x.d) * f16_to_f32(y.d) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sum
}

pub fn q8_0(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ8_0>(w), as_blocks::<BlockQ8_0>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let s: i32 = x.qs.iter().zip(&y.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
        sum += s as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
    }
    sum
}

/// Sum over the 8 groups of 32 of `scale * (q · y)` minus `min * sum(y)` (Q4_K / Q5_K).
fn k4_common(d: u16, dmin: u16, scales: &[u8; 12], q: impl Fn(usize) -> i32, y: &BlockQ8K) -> f32 {
    let (sc, mn) = unpack_scale_min_k4(scales);
    let mut mins = 0i32;
    for j in 0..16 {
        mins += y.bsums[j] as i32 * mn[j / 2] as i32;
    }
    let mut s = 0i32;
    for (g, &scale) in sc.iter().enumerate() {
        let mut gs = 0i32;
        for l in 0..32 {
            gs += q(g * 32 + l) * y.qs[g * 32 + l] as i32;
        }
        s += gs * scale as i32;
    }
    f16_to_f32(d) * y.d * s as f32 - f16_to_f32(dmin) * y.d * mins as f32
}

pub fn q4_k(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ4K>(w), as_blocks::<BlockQ8K>(a));
    xs.iter()
        .zip(ys)
        .map(|(x, y)| {
            // element i: chunk i/64 of 32 bytes, low nibble for the first 32, high for the next.
            let q = |i: usize| {
                let b = x.qs[(i / 64) * 32 + i % 32];
                (if (i / 32).is_multiple_of(2) { b & 0xF } else { b >> 4 }) as i32
            };
            k4_common(x.d, x.dmin, &x.scales, q, y)
        })
        .sum()
}

pub fn q5_k(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ5K>(w), as_blocks::<BlockQ8K>(a));
    xs.iter()
        .zip(ys)
        .map(|(x, y)| {
            let q = |i: usize| {
                let l = i % 32;
                let b = x.qs[(i / 64) * 32 + l];
                let g = i / 32; // 0..8: bit g of qh[l]
                let lo = if g.is_multiple_of(2) { b & 0xF } else { b >> 4 };
                (lo + if x.qh[l] & (1 << g) != 0 { 16 } else { 0 }) as i32
            };
            k4_common(x.d, x.dmin, &x.scales, q, y)
        })
        .sum()
}

pub fn q6_k(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ6K>(w), as_blocks::<BlockQ8K>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut s = 0i32;
        for n in 0..2 {
            let (ql, qh, sc) = (&x.ql[n * 64..], &x.qh[n * 32..], &x.scales[n * 8..]);
            for l in 0..32 {
                let q = q6k_quad(ql, qh, l);
                for k in 0..4 {
                    s += sc[l / 16 + 2 * k] as i32 * q[k] * y.qs[n * 128 + l + 32 * k] as i32;
                }
            }
        }
        sum += f16_to_f32(x.d) * y.d * s as f32;
    }
    sum
}

/// Q3_K with Q8_K activations (the SIMD kernels' twin).
pub fn q3_k(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ3K>(w), as_blocks::<BlockQ8K>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let scales = unpack_q3k_scales(&x.scales);
        let mut s = 0i32;
        let (mut is, mut o, mut m) = (0, 0, 1u8);
        for n in 0..2 {
            let q = &x.qs[n * 32..];
            for shift in [0, 2, 4, 6] {
                for half in 0..2 {
                    let mut gs = 0i32;
                    for l in 0..16 {
                        let i = l + 16 * half;
                        let v = ((q[i] >> shift) & 3) as i32 - if x.hmask[i] & m != 0 { 0 } else { 4 };
                        gs += v * y.qs[o] as i32;
                        o += 1;
                    }
                    s += gs * scales[is] as i32;
                    is += 1;
                }
                m <<= 1;
            }
        }
        sum += f16_to_f32(x.d) * y.d * s as f32;
    }
    sum
}

/// Q2_K with Q8_K activations (the SIMD kernels' twin).
pub fn q2_k(w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = (as_blocks::<BlockQ2K>(w), as_blocks::<BlockQ8K>(a));
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let (mut s, mut mins) = (0i32, 0i32);
        let (mut is, mut o) = (0, 0);
        for n in 0..2 {
            let q = &x.qs[n * 32..];
            for shift in [0, 2, 4, 6] {
                for half in 0..2 {
                    let sc = x.scales[is];
                    let mut gs = 0i32;
                    for l in 0..16 {
                        gs += ((q[l + 16 * half] >> shift) & 3) as i32 * y.qs[o] as i32;
                        o += 1;
                    }
                    s += gs * (sc & 0xF) as i32;
                    mins += (sc >> 4) as i32 * y.bsums[is] as i32;
                    is += 1;
                }
            }
        }
        sum += f16_to_f32(x.d) * y.d * s as f32 - f16_to_f32(x.dmin) * y.d * mins as f32;
    }
    sum
}

//! Scalar dequantization of every supported tensor type to f32 (`dequantize_row_*` in
//! ggml). Used for embedding lookups, for the types without an integer dot product, and as
//! the reference the dot-product kernels are tested against.

use crate::blocks::*;
use gguf::GgmlType;

/// [`dequantize_row`] with the level's vector unit where it has a kernel for `ty` (the
/// 32-element types, Q4_K and Q6_K on x86's AVX2 levels), the same values bit for bit (each
/// element rounded in the scalar code's order: one conversion, one multiply and, where the
/// type has a minimum, one add).
pub fn dequantize_row_isa(ty: GgmlType, isa: crate::dot::Isa, src: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa != crate::dot::Isa::Scalar && x86::has(ty) {
        // SAFETY: every x86 level above scalar has AVX2 (Isa::available checks it).
        return unsafe { x86::dequantize_row(ty, src, out) };
    }
    let _ = isa;
    dequantize_row(ty, src, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::blocks::*;
    use gguf::GgmlType;
    use std::arch::x86_64::*;

    pub fn has(ty: GgmlType) -> bool {
        use GgmlType::*;
        matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
    }

    /// Each byte of `v` shifted right by `bits` (0..8) and masked to `mask`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn field(v: __m256i, bits: i32, mask: __m256i) -> __m256i {
        _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(bits)), mask)
    }

    /// 32 bytes as two runs of 16, each with its own scale (and offset): the 16-element
    /// groups of Q2_K, Q3_K and Q6_K.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sixteens<const SIGNED: bool>(q: __m256i, d: [f32; 2], m: Option<[f32; 2]>, y: &mut [f32]) {
        let g = eights(q);
        for (h, y) in y.chunks_exact_mut(16).enumerate() {
            let (dh, mh) = (_mm256_set1_ps(d[h]), m.map(|m| _mm256_set1_ps(m[h])));
            for (e, dst) in g[2 * h..2 * h + 2].iter().zip(y.chunks_exact_mut(8)) {
                let q = if SIGNED { _mm256_cvtepi8_epi32(*e) } else { _mm256_cvtepu8_epi32(*e) };
                put(q, dh, mh, dst);
            }
        }
    }

    /// 32 bytes as four groups of eight (in their low halves), in order.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn eights(v: __m256i) -> [__m128i; 4] {
        let (a, b) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        [a, _mm_srli_si128(a, 8), b, _mm_srli_si128(b, 8)]
    }

    /// `y[0..32] = q[i] * d (+ m)` for 32 bytes `q`, signed or not.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn bytes32<const SIGNED: bool>(q: __m256i, d: __m256, m: Option<__m256>, y: &mut [f32]) {
        for (g, dst) in eights(q).into_iter().zip(y.chunks_exact_mut(8)) {
            let q = if SIGNED { _mm256_cvtepi8_epi32(g) } else { _mm256_cvtepu8_epi32(g) };
            put(q, d, m, dst);
        }
    }

    /// `y = (q as f32) * d (+ m)`, rounded as the scalar code rounds.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn put(q: __m256i, d: __m256, m: Option<__m256>, y: &mut [f32]) {
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
        let y: &mut [f32; 8] = y.try_into().expect("eight lanes");
        // SAFETY: writes the eight floats of `y`.
        unsafe { _mm256_storeu_ps(y.as_mut_ptr(), m.map_or(v, |m| _mm256_add_ps(v, m))) };
    }

    /// The 32 elements of a 4- or 5-bit block: nibbles from `qs` (element j low, j + 16
    /// high), fifth bits from `qh` (bit i for element i), less `offset`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn nibbles(qs: &[u8; 16], qh: Option<u32>, offset: i32, d: __m256, m: Option<__m256>, y: &mut [f32]) {
        // SAFETY: reads the 16 bytes of `qs`.
        let raw = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
        let mask = _mm_set1_epi8(0x0F);
        let (lo, hi) = (_mm_and_si128(raw, mask), _mm_and_si128(_mm_srli_epi16(raw, 4), mask));
        let groups = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let off = _mm256_set1_epi32(offset);
        for (g, (bytes, dst)) in groups.into_iter().zip(y.chunks_exact_mut(8)).enumerate() {
            let mut q = _mm256_cvtepu8_epi32(bytes);
            if let Some(qh) = qh {
                let bits = _mm256_srlv_epi32(_mm256_set1_epi32((qh >> (8 * g)) as i32), lanes);
                q = _mm256_or_si256(q, _mm256_slli_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(1)), 4));
            }
            put(_mm256_sub_epi32(q, off), d, m, dst);
        }
    }

    /// # Safety
    /// The CPU must have AVX2. `src` holds whole blocks of `ty` for `out`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
        // An f16 scale broadcast, converted in registers (F16C; every AVX2 level has it).
        let f = |h: u16| _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)));
        match ty {
            GgmlType::Q4_0 => {
                for (b, y) in as_blocks::<BlockQ4_0>(src).iter().zip(out.chunks_exact_mut(QK)) {
                    nibbles(&b.qs, None, 8, f(b.d), None, y);
                }
            }
            GgmlType::Q4_1 => {
                for (b, y) in as_blocks::<BlockQ4_1>(src).iter().zip(out.chunks_exact_mut(QK)) {
                    nibbles(&b.qs, None, 0, f(b.d), Some(f(b.m)), y);
                }
            }
            GgmlType::Q5_0 => {
                for (b, y) in as_blocks::<BlockQ5_0>(src).iter().zip(out.chunks_exact_mut(QK)) {
                    nibbles(&b.qs, Some(u32::from_le_bytes(b.qh)), 16, f(b.d), None, y);
                }
            }
            GgmlType::Q5_1 => {
                for (b, y) in as_blocks::<BlockQ5_1>(src).iter().zip(out.chunks_exact_mut(QK)) {
                    nibbles(&b.qs, Some(u32::from_le_bytes(b.qh)), 0, f(b.d), Some(f(b.m)), y);
                }
            }
            GgmlType::Q8_0 => {
                for (b, y) in as_blocks::<BlockQ8_0>(src).iter().zip(out.chunks_exact_mut(QK)) {
                    // SAFETY: reads the block's 32 bytes.
                    let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) };
                    bytes32::<true>(q, f(b.d), None, y);
                }
            }
            GgmlType::Q4_K => {
                let mask = _mm256_set1_epi8(0x0F);
                for (b, y) in as_blocks::<BlockQ4K>(src).iter().zip(out.chunks_exact_mut(QK_K)) {
                    let (d, min) = (crate::blocks::f16_to_f32(b.d), crate::blocks::f16_to_f32(b.dmin));
                    let (sc, mn) = super::unpack_scale_min_k4(&b.scales);
                    for (j, y) in y.chunks_exact_mut(64).enumerate() {
                        // SAFETY: reads 32 of the block's bytes.
                        let q = unsafe { _mm256_loadu_si256(b.qs[j * 32..].as_ptr() as *const __m256i) };
                        let (lo, hi) = (_mm256_and_si256(q, mask), _mm256_and_si256(_mm256_srli_epi16(q, 4), mask));
                        // d·q − m as d·q + (−m): the same rounding.
                        let (d1, m1) = (d * sc[2 * j] as f32, min * mn[2 * j] as f32);
                        let (d2, m2) = (d * sc[2 * j + 1] as f32, min * mn[2 * j + 1] as f32);
                        let (y1, y2) = y.split_at_mut(32);
                        bytes32::<false>(lo, _mm256_set1_ps(d1), Some(_mm256_set1_ps(-m1)), y1);
                        bytes32::<false>(hi, _mm256_set1_ps(d2), Some(_mm256_set1_ps(-m2)), y2);
                    }
                }
            }
            GgmlType::Q6_K => {
                let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
                for (b, y) in as_blocks::<BlockQ6K>(src).iter().zip(out.chunks_exact_mut(QK_K)) {
                    let d = crate::blocks::f16_to_f32(b.d);
                    for (n, y) in y.chunks_exact_mut(128).enumerate() {
                        // SAFETY: reads 64 + 32 of the block's bytes.
                        let (ql0, ql1, qh) = unsafe {
                            (
                                _mm256_loadu_si256(b.ql[n * 64..].as_ptr() as *const __m256i),
                                _mm256_loadu_si256(b.ql[n * 64 + 32..].as_ptr() as *const __m256i),
                                _mm256_loadu_si256(b.qh[n * 32..].as_ptr() as *const __m256i),
                            )
                        };
                        let high = |shift: i32| _mm256_slli_epi16(field(qh, shift, m2), 4);
                        // Positions l + 32k, l < 32, as q6k_quad has them, less 32.
                        let quads = [
                            _mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                            _mm256_or_si256(_mm256_and_si256(ql1, m4), high(2)),
                            _mm256_or_si256(field(ql0, 4, m4), high(4)),
                            _mm256_or_si256(field(ql1, 4, m4), high(6)),
                        ];
                        let sc = &b.scales[n * 8..];
                        for (k, (q, y)) in quads.into_iter().zip(y.chunks_exact_mut(32)).enumerate() {
                            let q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                            // (d·sc)·q, as the scalar code multiplies; l < 16 and l ≥ 16 have
                            // scales of their own.
                            let ds = [d * sc[2 * k] as f32, d * sc[1 + 2 * k] as f32];
                            sixteens::<true>(q, ds, None, y);
                        }
                    }
                }
            }
            GgmlType::Q5_K => {
                let (mask, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
                for (b, y) in as_blocks::<BlockQ5K>(src).iter().zip(out.chunks_exact_mut(QK_K)) {
                    let (d, min) = (crate::blocks::f16_to_f32(b.d), crate::blocks::f16_to_f32(b.dmin));
                    let (sc, mn) = super::unpack_scale_min_k4(&b.scales);
                    // SAFETY: reads the block's 32 bytes of fifth bits.
                    let qh = unsafe { _mm256_loadu_si256(b.qh.as_ptr() as *const __m256i) };
                    for (j, y) in y.chunks_exact_mut(64).enumerate() {
                        // SAFETY: reads 32 of the block's bytes.
                        let q = unsafe { _mm256_loadu_si256(b.qs[j * 32..].as_ptr() as *const __m256i) };
                        // Element l's fifth bit is bit 2j (low nibble) or 2j + 1 (high) of qh[l].
                        let h1 = _mm256_slli_epi16(field(qh, 2 * j as i32, one), 4);
                        let h2 = _mm256_slli_epi16(field(qh, 2 * j as i32 + 1, one), 4);
                        let lo = _mm256_or_si256(_mm256_and_si256(q, mask), h1);
                        let hi = _mm256_or_si256(field(q, 4, mask), h2);
                        let (d1, m1) = (d * sc[2 * j] as f32, min * mn[2 * j] as f32);
                        let (d2, m2) = (d * sc[2 * j + 1] as f32, min * mn[2 * j + 1] as f32);
                        let (y1, y2) = y.split_at_mut(32);
                        bytes32::<false>(lo, _mm256_set1_ps(d1), Some(_mm256_set1_ps(-m1)), y1);
                        bytes32::<false>(hi, _mm256_set1_ps(d2), Some(_mm256_set1_ps(-m2)), y2);
                    }
                }
            }
            GgmlType::Q2_K => {
                let three = _mm256_set1_epi8(3);
                for (b, y) in as_blocks::<BlockQ2K>(src).iter().zip(out.chunks_exact_mut(QK_K)) {
                    let (d, min) = (crate::blocks::f16_to_f32(b.d), crate::blocks::f16_to_f32(b.dmin));
                    // Eight runs of 32 per half block: the 2-bit planes of its 32 bytes.
                    for (k, y) in y.chunks_exact_mut(32).enumerate() {
                        let (n, plane) = (k / 4, k % 4);
                        // SAFETY: reads 32 of the block's bytes.
                        let q = unsafe { _mm256_loadu_si256(b.qs[n * 32..].as_ptr() as *const __m256i) };
                        let (s0, s1) = (b.scales[2 * k], b.scales[2 * k + 1]);
                        let dl = [d * (s0 & 0xF) as f32, d * (s1 & 0xF) as f32];
                        let ml = [-(min * (s0 >> 4) as f32), -(min * (s1 >> 4) as f32)];
                        sixteens::<false>(field(q, 2 * plane as i32, three), dl, Some(ml), y);
                    }
                }
            }
            GgmlType::Q3_K => {
                let (three, one, four) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1), _mm256_set1_epi8(4));
                for (b, y) in as_blocks::<BlockQ3K>(src).iter().zip(out.chunks_exact_mut(QK_K)) {
                    let d = crate::blocks::f16_to_f32(b.d);
                    let scales = super::unpack_q3k_scales(&b.scales);
                    // SAFETY: reads the block's 32 bytes of high bits.
                    let hm = unsafe { _mm256_loadu_si256(b.hmask.as_ptr() as *const __m256i) };
                    for (k, y) in y.chunks_exact_mut(32).enumerate() {
                        let (n, plane) = (k / 4, k % 4);
                        // SAFETY: reads 32 of the block's bytes.
                        let q = unsafe { _mm256_loadu_si256(b.qs[n * 32..].as_ptr() as *const __m256i) };
                        // Two low bits, less 4 where the high bit (bit k of hmask) is clear.
                        let high = _mm256_slli_epi16(field(hm, k as i32, one), 2);
                        let v = _mm256_sub_epi8(_mm256_or_si256(field(q, 2 * plane as i32, three), high), four);
                        let dl = [d * scales[2 * k] as f32, d * scales[2 * k + 1] as f32];
                        sixteens::<true>(v, dl, None, y);
                    }
                }
            }
            _ => unreachable!("no AVX2 dequantization for {ty}"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::Isa;

    /// Every level's dequantization is the scalar one, bit for bit, on random blocks.
    #[test]
    fn vector_dequantization_is_the_scalar_one() {
        let mut rng = crate::dot::tests::Lcg(77);
        let cols = 256;
        for ty in crate::dot::tests::ALL {
            for isa in Isa::available() {
                for _ in 0..50 {
                    let row = crate::dot::tests::random_row(ty, cols, &mut rng);
                    let (mut want, mut got) = (vec![0f32; cols], vec![1f32; cols]);
                    dequantize_row(ty, &row, &mut want);
                    dequantize_row_isa(ty, isa, &row, &mut got);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(a.to_bits(), b.to_bits(), "{ty} {isa:?} element {i}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

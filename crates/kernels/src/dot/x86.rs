//! x86_64 dot products after ggml's `arch/x86/quants.c`, compiled twice from one source:
//! [`avx2`] (AVX2 + FMA + F16C) and [`vnni`] (the same plus AVX-512 VNNI on 256-bit
//! vectors, where one `vpdpbusd` replaces the `vpmaddubsw` + `vpmaddwd` pair).
//!
//! The public functions are safe wrappers: [`super::dot_fn`] hands them out only after
//! `is_x86_feature_detected!` confirmed the features. Each one has a scalar twin in
//! [`super::scalar`] and is compared with it in the tests.

/// Sum a per-block FMA over blocks with two accumulators, so consecutive blocks' FMAs do
/// not wait on each other (one accumulator makes the FMA latency the loop's bound). Expands
/// inside the kernels' `#[target_feature]` functions.
macro_rules! pairwise_blocks {
    ($xs:expr, $ys:expr, |$bx:ident, $by:ident, $bacc:ident| $body:expr) => {{
        let (xs, ys) = ($xs, $ys);
        let n = xs.len().min(ys.len());
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 2 <= n {
            a0 = {
                let ($bx, $by, $bacc) = (&xs[i], &ys[i], a0);
                $body
            };
            a1 = {
                let ($bx, $by, $bacc) = (&xs[i + 1], &ys[i + 1], a1);
                $body
            };
            i += 2;
        }
        if i < n {
            a0 = {
                let ($bx, $by, $bacc) = (&xs[i], &ys[i], a0);
                $body
            };
        }
        _mm256_add_ps(a0, a1)
    }};
}

macro_rules! x86_kernels {
    ($feat:literal, |$x:ident, $y:ident| $udot:expr) => {
        use crate::blocks::*;
        use std::arch::x86_64::*;

        /// f16 bits to f32 with the F16C instruction (the `half` crate's portable path is a
        /// software conversion, which costs more than the block's arithmetic).
        #[inline]
        #[target_feature(enable = $feat)]
        fn h(x: u16) -> f32 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x as i32)))
        }

        macro_rules! safe_wrapper {
            ($name:ident, $inner:ident) => {
                pub fn $name(w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: only reachable through dot_fn / dot4_fn, chosen after the CPU
                    // reported the features this module is compiled for.
                    unsafe { $inner(w, a) }
                }
            };
        }
        safe_wrapper!(q4_0, q4_0_impl);
        safe_wrapper!(q4_1, q4_1_impl);
        safe_wrapper!(q5_0, q5_0_impl);
        safe_wrapper!(q5_1, q5_1_impl);
        safe_wrapper!(q5_k, q5_k_impl);
        safe_wrapper!(q2_k, q2_k_impl);
        safe_wrapper!(q3_k, q3_k_impl);
        safe_wrapper!(q8_0, q8_0_impl);
        safe_wrapper!(q4_k, q4_k_impl);
        safe_wrapper!(q6_k, q6_k_impl);

        #[target_feature(enable = $feat)]
        fn hsum(v: __m256) -> f32 {
            let r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            let r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }

        /// 16 packed bytes -> 32 nibbles: low nibbles in the low lane (elements 0..16), high
        /// nibbles in the high lane (elements 16..32).
        #[target_feature(enable = $feat)]
        unsafe fn nibbles(p: *const u8) -> __m256i {
            // SAFETY: caller passes a pointer to 16 readable bytes.
            let t = unsafe { _mm_loadu_si128(p as *const __m128i) };
            let b = _mm256_insertf128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
            _mm256_and_si256(_mm256_set1_epi8(0xF), b)
        }

        /// 32 bits -> 32 bytes, 0xFF where the bit is set.
        #[target_feature(enable = $feat)]
        fn bits_to_bytes(x: u32) -> __m256i {
            let shuf = _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0,
            );
            let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
            let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
            _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
        }

        /// Signed bytes x·y summed in pairs of 4 into 8 i32 lanes, as floats.
        #[target_feature(enable = $feat)]
        fn dot_i8(x: __m256i, y: __m256i) -> __m256 {
            let ax = _mm256_sign_epi8(x, x);
            let sy = _mm256_sign_epi8(y, x);
            dot_u8i8(ax, sy)
        }

        /// Unsigned x times signed y, summed in groups of 4 into 8 i32 lanes, as floats.
        #[inline]
        #[target_feature(enable = $feat)]
        fn dot_u8i8(x: __m256i, y: __m256i) -> __m256 {
            _mm256_cvtepi32_ps(idot(x, y))
        }

        /// Unsigned x times signed y, summed in groups of 4 into 8 i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        fn idot($x: __m256i, $y: __m256i) -> __m256i {
            $udot
        }

        #[target_feature(enable = $feat)]
        unsafe fn load(p: &[i8; 32]) -> __m256i {
            // SAFETY: 32 readable bytes.
            unsafe { _mm256_loadu_si256(p.as_ptr() as *const __m256i) }
        }

        /// One Q4_K super-block, or with `qh` (the fifth bits: bit g of `qh[l]` for element l
        /// of group g) one Q5_K super-block, against one Q8_K block: the groups' integer dots
        /// scaled and added into `acc`, the mins' term into `acc_m`. A macro, so that each
        /// kernel is one straight loop (as a function it was not inlined, 15% slower).
        macro_rules! k4_block {
            ($blk:expr, $qh:expr, $act:expr, $acc:ident, $acc_m:ident) => {{
                let (x, y): (_, &BlockQ8K) = ($blk, $act);
                let (m4, one) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(1));
                let (sc, mn) = unpack_scale_min_k4(&x.scales);
                let mut mins = 0i32;
                for j in 0..8 {
                    mins += (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32) * mn[j] as i32;
                }
                $acc_m -= h(x.dmin) * y.d * mins as f32;
                let qh: Option<&[u8; 32]> = $qh;
                // SAFETY: qh has 32 bytes.
                let hbits = qh.map(|q| unsafe { _mm256_loadu_si256(q.as_ptr() as *const __m256i) });
                let mut sumi = _mm256_setzero_si256();
                for j in 0..4 {
                    // SAFETY: j*32 + 32 <= 128 bytes of qs; y.qs has 256.
                    let (q4, ql, qh) = unsafe {
                        (
                            _mm256_loadu_si256(x.qs.as_ptr().add(32 * j) as *const __m256i),
                            _mm256_loadu_si256(y.qs.as_ptr().add(64 * j) as *const __m256i),
                            _mm256_loadu_si256(y.qs.as_ptr().add(64 * j + 32) as *const __m256i),
                        )
                    };
                    let mut lo = _mm256_and_si256(q4, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    if let Some(hb) = hbits {
                        // Bit 2j (then 2j+1) of every qh byte, moved to 16: a 16-bit shift,
                        // then each byte masked, so nothing crosses between bytes.
                        let b0 = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * j as i32)), one);
                        let b1 = _mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(2 * j as i32 + 1)), one);
                        lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                        hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
                    }
                    let pl = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j] as i16), _mm256_maddubs_epi16(lo, ql));
                    let ph = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * j + 1] as i16), _mm256_maddubs_epi16(hi, qh));
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
                }
                $acc = _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * y.d), _mm256_cvtepi32_ps(sumi), $acc);
            }};
        }

        #[target_feature(enable = $feat)]
        unsafe fn q4_0_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ4_0>(w), as_blocks::<BlockQ8_0>(a));
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: qs has 16 bytes, y.qs 32.
                let (qx, qy) = unsafe { (nibbles(x.qs.as_ptr()), load(&y.qs)) };
                let qx = _mm256_sub_epi8(qx, _mm256_set1_epi8(8));
                _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * h(y.d)), dot_i8(qx, qy), acc)
            }))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q4_1_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ4_1>(w), as_blocks::<BlockQ8_1>(a));
            let summs: f32 = xs.iter().zip(ys).map(|(x, y)| h(x.m) * h(y.s)).sum();
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: as above.
                let (qx, qy) = unsafe { (nibbles(x.qs.as_ptr()), load(&y.qs)) };
                _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * h(y.d)), dot_u8i8(qx, qy), acc)
            })) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn q5_0_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ5_0>(w), as_blocks::<BlockQ8_0>(a));
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: as above.
                let (qx, qy) = unsafe { (nibbles(x.qs.as_ptr()), load(&y.qs)) };
                // q - 16 in two's complement: the high nibble is 0xF0 where the fifth bit is clear.
                let hi = _mm256_andnot_si256(bits_to_bytes(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0xF0u8 as i8));
                _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * h(y.d)), dot_i8(_mm256_or_si256(qx, hi), qy), acc)
            }))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q5_1_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ5_1>(w), as_blocks::<BlockQ8_1>(a));
            let summs: f32 = xs.iter().zip(ys).map(|(x, y)| h(x.m) * h(y.s)).sum();
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: as above.
                let (qx, qy) = unsafe { (nibbles(x.qs.as_ptr()), load(&y.qs)) };
                // The fifth bit of element j is bit j of qh: 16 added where it is set.
                let hi = _mm256_and_si256(bits_to_bytes(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0x10));
                _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * h(y.d)), dot_u8i8(_mm256_or_si256(qx, hi), qy), acc)
            })) + summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn q5_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ5K>(w), as_blocks::<BlockQ8K>(a));
            let (mut acc, mut acc_m) = (_mm256_setzero_ps(), 0f32);
            for (x, y) in xs.iter().zip(ys) {
                k4_block!(x, Some(&x.qh), y, acc, acc_m);
            }
            hsum(acc) + acc_m
        }

        /// Q2_K: 16 groups of 16 two-bit values, a 4-bit scale and min per group.
        #[target_feature(enable = $feat)]
        unsafe fn q2_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ2K>(w), as_blocks::<BlockQ8K>(a));
            let m3 = _mm256_set1_epi8(3);
            let mut acc = _mm256_setzero_ps();
            let mut acc_m = 0f32;
            for (x, y) in xs.iter().zip(ys) {
                let mins: i32 = (0..16).map(|g| (x.scales[g] >> 4) as i32 * y.bsums[g] as i32).sum();
                acc_m -= h(x.dmin) * y.d * mins as f32;
                let mut sumi = _mm256_setzero_si256();
                for n in 0..2 {
                    // SAFETY: 32n + 32 <= 64 bytes of qs.
                    let q = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * n) as *const __m256i) };
                    for k in 0..4 {
                        // Elements 0..16 of this slice are group g, 16..32 group g + 1.
                        let g = 8 * n + 2 * k;
                        let q2 = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32)), m3);
                        // SAFETY: 128n + 32k + 32 <= 256 bytes of y.qs.
                        let yv = unsafe { _mm256_loadu_si256(y.qs.as_ptr().add(128 * n + 32 * k) as *const __m256i) };
                        let s = _mm256_set_m128i(_mm_set1_epi16((x.scales[g + 1] & 0xF) as i16), _mm_set1_epi16((x.scales[g] & 0xF) as i16));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, _mm256_maddubs_epi16(q2, yv)));
                    }
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * y.d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum(acc) + acc_m
        }

        /// Q3_K: 16 groups of 16 three-bit values (two low bits in `qs`, the third in
        /// `hmask`, the value minus 4 where it is clear) and 6-bit signed scales. Each value
        /// is taken as `u = v + 4` (0..7, for `maddubs`) and `4 · sum(y)` (the group's
        /// `bsums`) subtracted, which is the same integer sum.
        #[target_feature(enable = $feat)]
        unsafe fn q3_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ3K>(w), as_blocks::<BlockQ8K>(a));
            let (m3, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
            let mut acc = _mm256_setzero_ps();
            for (x, y) in xs.iter().zip(ys) {
                let scales = crate::dequant::unpack_q3k_scales(&x.scales);
                let corr: i32 = (0..16).map(|g| scales[g] as i32 * y.bsums[g] as i32).sum::<i32>() * 4;
                // SAFETY: hmask has 32 bytes.
                let hbits = unsafe { _mm256_loadu_si256(x.hmask.as_ptr() as *const __m256i) };
                let mut sumi = _mm256_setzero_si256();
                for n in 0..2 {
                    // SAFETY: 32n + 32 <= 64 bytes of qs.
                    let q = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * n) as *const __m256i) };
                    for k in 0..4 {
                        let (g, bit) = (8 * n + 2 * k, (4 * n + k) as i32);
                        let lo = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32)), m3);
                        let hi = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(bit)), one);
                        let u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
                        // SAFETY: 128n + 32k + 32 <= 256 bytes of y.qs.
                        let yv = unsafe { _mm256_loadu_si256(y.qs.as_ptr().add(128 * n + 32 * k) as *const __m256i) };
                        let s = _mm256_set_m128i(_mm_set1_epi16(scales[g + 1] as i16), _mm_set1_epi16(scales[g] as i16));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, _mm256_maddubs_epi16(u, yv)));
                    }
                }
                let dxy = h(x.d) * y.d;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dxy), _mm256_cvtepi32_ps(sumi), acc);
                acc = _mm256_add_ps(acc, _mm256_setr_ps(-dxy * corr as f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
            }
            hsum(acc)
        }

        #[target_feature(enable = $feat)]
        unsafe fn q8_0_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ8_0>(w), as_blocks::<BlockQ8_0>(a));
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: 32-byte arrays.
                let (qx, qy) = unsafe { (load(&x.qs), load(&y.qs)) };
                _mm256_fmadd_ps(_mm256_set1_ps(h(x.d) * h(y.d)), dot_i8(qx, qy), acc)
            }))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q4_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ4K>(w), as_blocks::<BlockQ8K>(a));
            let (mut acc, mut acc_m) = (_mm256_setzero_ps(), 0f32);
            for (x, y) in xs.iter().zip(ys) {
                k4_block!(x, None, y, acc, acc_m);
            }
            hsum(acc) + acc_m
        }


        /// Q6_K against one Q8_K row, with the arithmetic of `q6_k_x4_impl` (the `-32`
        /// offset through `bsums`), so one token gets the same sum alone or in a group.
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ6K>(w), as_blocks::<BlockQ8K>(a));
            let m4 = _mm256_set1_epi8(0xF);
            let m2 = _mm256_set1_epi8(3);
            let mut acc = _mm256_setzero_ps();
            for (x, y) in xs.iter().zip(ys) {
                let mut sumi = _mm256_setzero_si256();
                for n in 0..2 {
                    let sc = &x.scales[n * 8..n * 8 + 8];
                    // SAFETY: offsets stay inside ql (128), qh (64) and y.qs (256).
                    let (bh, b1, b2) = unsafe {
                        (
                            _mm256_loadu_si256(x.qh.as_ptr().add(32 * n) as *const __m256i),
                            _mm256_loadu_si256(x.ql.as_ptr().add(64 * n) as *const __m256i),
                            _mm256_loadu_si256(x.ql.as_ptr().add(64 * n + 32) as *const __m256i),
                        )
                    };
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4);
                    let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4);
                    let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4);
                    let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4);
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(b1, m4), h0),
                        _mm256_or_si256(_mm256_and_si256(b2, m4), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), h3),
                    ];
                    for k in 0..4 {
                        // SAFETY: 128*n + 32*k + 32 <= 256 bytes of y.qs.
                        let yv = unsafe { _mm256_loadu_si256(y.qs.as_ptr().add(128 * n + 32 * k) as *const __m256i) };
                        let s = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1] as i16), _mm_set1_epi16(sc[2 * k] as i16));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s, _mm256_maddubs_epi16(q[k], yv)));
                    }
                }
                let dx = h(x.d);
                let corr: i32 = (0..16).map(|g| x.scales[g] as i32 * y.bsums[g] as i32).sum::<i32>() * 32;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * y.d), _mm256_cvtepi32_ps(sumi), acc);
                acc = _mm256_add_ps(acc, _mm256_setr_ps(-(dx * y.d) * corr as f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
            }
            hsum(acc)
        }

        // ---- Four activation rows at once ------------------------------------------------
        //
        // Prompt processing and batched decoding multiply each weight row with many tokens.
        // These kernels unpack a weight block once and use it against four activation rows.
        // Each row's arithmetic is exactly the single-row kernel's (same integer lanes, same
        // float operations in the same order), so a token's result does not depend on the
        // batch it is in: a request gets the same tokens alone or beside others. The tests
        // hold the two to bit equality.

        macro_rules! x4_wrapper {
            ($name:ident, $inner:ident) => {
                pub fn $name(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
                    // SAFETY: as for the single-row kernels (reached only after detection);
                    // the row lengths are checked against the block count inside.
                    unsafe { $inner(w, a) }
                }
            };
        }
        x4_wrapper!(q4_0_x4, q4_0_x4_impl);
        x4_wrapper!(q4_1_x4, q4_1_x4_impl);
        x4_wrapper!(q5_0_x4, q5_0_x4_impl);
        x4_wrapper!(q8_0_x4, q8_0_x4_impl);

        /// `pairwise_blocks!` for four activation rows: per row the same two alternating
        /// accumulators over the same blocks, so each row's sum is bit for bit the single-row
        /// kernel's. `$body` adds block `$i` into `$acc: &mut [__m256; 4]`.
        macro_rules! pairwise_blocks4 {
            ($n:expr, |$i:ident, $acc:ident| $body:block) => {{
                let n = $n;
                let (mut a0, mut a1) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
                let mut i = 0;
                while i + 2 <= n {
                    {
                        let ($i, $acc) = (i, &mut a0);
                        $body
                    }
                    {
                        let ($i, $acc) = (i + 1, &mut a1);
                        $body
                    }
                    i += 2;
                }
                if i < n {
                    let ($i, $acc) = (i, &mut a0);
                    $body
                }
                [
                    hsum(_mm256_add_ps(a0[0], a1[0])),
                    hsum(_mm256_add_ps(a0[1], a1[1])),
                    hsum(_mm256_add_ps(a0[2], a1[2])),
                    hsum(_mm256_add_ps(a0[3], a1[3])),
                ]
            }};
        }

        /// Signed weight bytes against four Q8_0 rows, each row exactly as the single-row
        /// kernels compute it (`dot_i8`); the weight block is unpacked once. `$unpack` gives
        /// the block's signed bytes from `$x`.
        macro_rules! signed_x4_kernel {
            ($impl:ident, $block:ty, |$blk:ident| $unpack:expr) => {
                #[target_feature(enable = $feat)]
                unsafe fn $impl(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
                    let xs = as_blocks::<$block>(w);
                    let ys = a.map(as_blocks::<BlockQ8_0>);
                    assert!(ys.iter().all(|y| y.len() >= xs.len()));
                    pairwise_blocks4!(xs.len(), |i, acc| {
                        let $blk = &xs[i];
                        let qx = $unpack;
                        let (ax, dx) = (_mm256_sign_epi8(qx, qx), h($blk.d));
                        for k in 0..4 {
                            let y = &ys[k][i];
                            // SAFETY: 32-byte array.
                            let sy = _mm256_sign_epi8(unsafe { load(&y.qs) }, qx);
                            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h(y.d)), dot_u8i8(ax, sy), acc[k]);
                        }
                    })
                }
            };
        }
        // SAFETY (each unpack): nibbles reads the block's 16 bytes; qs is 32 bytes.
        signed_x4_kernel!(q4_0_x4_impl, BlockQ4_0, |x| _mm256_sub_epi8(unsafe { nibbles(x.qs.as_ptr()) }, _mm256_set1_epi8(8)));
        signed_x4_kernel!(q5_0_x4_impl, BlockQ5_0, |x| _mm256_or_si256(
            unsafe { nibbles(x.qs.as_ptr()) },
            _mm256_andnot_si256(bits_to_bytes(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0xF0u8 as i8))
        ));
        signed_x4_kernel!(q8_0_x4_impl, BlockQ8_0, |x| unsafe { load(&x.qs) });

        x4_wrapper!(q4_k_x4, q4_k_x4_impl);
        x4_wrapper!(q6_k_x4, q6_k_x4_impl);

        /// Q4_K against four Q8_K rows.
        #[target_feature(enable = $feat)]
        unsafe fn q4_k_x4_impl(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            let xs = as_blocks::<BlockQ4K>(w);
            let ys = a.map(as_blocks::<BlockQ8K>);
            assert!(ys.iter().all(|y| y.len() >= xs.len()));
            let m4 = _mm256_set1_epi8(0xF);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut acc_m = [0f32; 4];
            for (i, x) in xs.iter().enumerate() {
                let (sc, mn) = unpack_scale_min_k4(&x.scales);
                let mut sumi = [_mm256_setzero_si256(); 4];
                for j in 0..4 {
                    // SAFETY: j*32 + 32 <= 128 bytes of qs.
                    let q4 = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * j) as *const __m256i) };
                    let lo = _mm256_and_si256(q4, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
                    let (sl, sh) = (_mm256_set1_epi16(sc[2 * j] as i16), _mm256_set1_epi16(sc[2 * j + 1] as i16));
                    for k in 0..4 {
                        let yq = ys[k][i].qs.as_ptr();
                        // SAFETY: 64*j + 64 <= 256 bytes of y.qs.
                        let (ql, qh) = unsafe {
                            (_mm256_loadu_si256(yq.add(64 * j) as *const __m256i), _mm256_loadu_si256(yq.add(64 * j + 32) as *const __m256i))
                        };
                        let pl = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(lo, ql));
                        let ph = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(hi, qh));
                        sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(pl, ph));
                    }
                }
                let (dx, dmin) = (h(x.d), h(x.dmin));
                for k in 0..4 {
                    let y = &ys[k][i];
                    let mut mins = 0i32;
                    for j in 0..8 {
                        mins += (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32) * mn[j] as i32;
                    }
                    acc_m[k] -= dmin * y.d * mins as f32;
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y.d), _mm256_cvtepi32_ps(sumi[k]), acc[k]);
                }
            }
            std::array::from_fn(|k| hsum(acc[k]) + acc_m[k])
        }

        /// Q6_K against four Q8_K rows. The `-32` offset is applied through the Q8_K
        /// per-16 sums (`bsums`) instead of per product: the same integers, less work.
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_x4_impl(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            let xs = as_blocks::<BlockQ6K>(w);
            let ys = a.map(as_blocks::<BlockQ8K>);
            assert!(ys.iter().all(|y| y.len() >= xs.len()));
            let m4 = _mm256_set1_epi8(0xF);
            let m2 = _mm256_set1_epi8(3);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, x) in xs.iter().enumerate() {
                let mut sumi = [_mm256_setzero_si256(); 4];
                for n in 0..2 {
                    let sc = &x.scales[n * 8..n * 8 + 8];
                    // SAFETY: offsets stay inside ql (128) and qh (64).
                    let (bh, b1, b2) = unsafe {
                        (
                            _mm256_loadu_si256(x.qh.as_ptr().add(32 * n) as *const __m256i),
                            _mm256_loadu_si256(x.ql.as_ptr().add(64 * n) as *const __m256i),
                            _mm256_loadu_si256(x.ql.as_ptr().add(64 * n + 32) as *const __m256i),
                        )
                    };
                    let hbits = |shift: i32| match shift {
                        0 => _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4),
                        2 => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4),
                        4 => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4),
                        _ => _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4),
                    };
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(b1, m4), hbits(0)),
                        _mm256_or_si256(_mm256_and_si256(b2, m4), hbits(2)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), hbits(4)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), hbits(6)),
                    ];
                    let s: [__m256i; 4] = std::array::from_fn(|kk| {
                        _mm256_set_m128i(_mm_set1_epi16(sc[2 * kk + 1] as i16), _mm_set1_epi16(sc[2 * kk] as i16))
                    });
                    for k in 0..4 {
                        let yq = ys[k][i].qs.as_ptr();
                        for kk in 0..4 {
                            // SAFETY: 128*n + 32*kk + 32 <= 256 bytes of y.qs.
                            let yv = unsafe { _mm256_loadu_si256(yq.add(128 * n + 32 * kk) as *const __m256i) };
                            sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(s[kk], _mm256_maddubs_epi16(q[kk], yv)));
                        }
                    }
                }
                let dx = h(x.d);
                for k in 0..4 {
                    let y = &ys[k][i];
                    // Σ sc_g * 32 * Σ_{group g} y: the offset the unsigned values carried.
                    let corr: i32 = (0..16).map(|g| x.scales[g] as i32 * y.bsums[g] as i32).sum::<i32>() * 32;
                    let v = _mm256_cvtepi32_ps(sumi[k]);
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * y.d), v, acc[k]);
                    acc[k] = _mm256_add_ps(acc[k], _mm256_setr_ps(-(dx * y.d) * corr as f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
                }
            }
            std::array::from_fn(|k| hsum(acc[k]))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q4_1_x4_impl(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            let xs = as_blocks::<BlockQ4_1>(w);
            let ys = a.map(as_blocks::<BlockQ8_1>);
            assert!(ys.iter().all(|y| y.len() >= xs.len()));
            let sums = pairwise_blocks4!(xs.len(), |i, acc| {
                let x = &xs[i];
                // SAFETY: 16 bytes of nibbles.
                let (qx, dx) = (unsafe { nibbles(x.qs.as_ptr()) }, h(x.d));
                for k in 0..4 {
                    let y = &ys[k][i];
                    // SAFETY: 32-byte array.
                    acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h(y.d)), dot_u8i8(qx, unsafe { load(&y.qs) }), acc[k]);
                }
            });
            std::array::from_fn(|k| {
                let summs: f32 = xs.iter().zip(ys[k]).map(|(x, y)| h(x.m) * h(y.s)).sum();
                sums[k] + summs
            })
        }
    };
}

pub mod avx2 {
    x86_kernels!("avx2,fma,f16c", |x, y| _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1)));

    /// Activations to Q8_0 / Q8_1 with AVX2 (`quantize_row_q8_0` / `q8_1` in ggml's x86 path):
    /// the same rule as the scalar quantizer, round half to even.
    pub fn quantize_q8(x: &[f32], out: &mut [u8], with_sum: bool) {
        // SAFETY: chosen only after AVX2/FMA/F16C were detected; bounds checked inside.
        unsafe { quantize_q8_impl(x, out, with_sum) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quantize_q8_impl(x: &[f32], out: &mut [u8], with_sum: bool) {
        let bsize = if with_sum { 36 } else { 34 };
        assert!(out.len() >= x.len() / QK * bsize);
        let sign = _mm256_set1_ps(-0.0);
        for (b, xs) in x.chunks_exact(QK).enumerate() {
            // SAFETY: xs has 32 floats.
            let v: [__m256; 4] = unsafe { std::array::from_fn(|i| _mm256_loadu_ps(xs.as_ptr().add(8 * i))) };
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for vi in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
            }
            let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q: [__m256i; 4] =
                std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
            let dst = &mut out[b * bsize..(b + 1) * bsize];
            let dbits = _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT), 0) as u16;
            dst[..2].copy_from_slice(&dbits.to_le_bytes());
            let qoff = if with_sum {
                let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                let s4 = _mm_hadd_epi32(s4, s4);
                let s4 = _mm_hadd_epi32(s4, s4);
                let sum = _mm_cvtsi128_si32(s4);
                let sbits = _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d * sum as f32), _MM_FROUND_TO_NEAREST_INT), 0) as u16;
                dst[2..4].copy_from_slice(&sbits.to_le_bytes());
                4
            } else {
                2
            };
            // Pack 32 i32 -> 32 i8 in order (packs interleave lanes; permute restores order).
            let p01 = _mm256_packs_epi32(q[0], q[1]);
            let p23 = _mm256_packs_epi32(q[2], q[3]);
            let p = _mm256_packs_epi16(p01, p23);
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // SAFETY: dst has 32 bytes after the header.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(qoff) as *mut __m256i, p) };
        }
    }
}

pub mod vnni {
    x86_kernels!("avx2,fma,f16c,avx512vnni,avx512vl", |x, y| _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y));
}

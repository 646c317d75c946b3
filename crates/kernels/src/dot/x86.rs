//! x86_64 dot products after ggml's `arch/x86/quants.c`, compiled three times from one
//! source: [`avx2`] (AVX2 + FMA + F16C), [`avxvnni`] (the same plus AVX-VNNI) and [`vnni`]
//! (AVX2 plus AVX-512 VNNI, VL and BW on 256-bit vectors); with VNNI one `vpdpbusd`
//! replaces the `vpmaddubsw` + `vpmaddwd` pair.
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
    (
        $feat:literal,
        $tile_rows:literal,
        $vnni:literal,
        |$x:ident, $y:ident| $udot:expr,
        |$c:ident, $xf:ident, $yf:ident| $udot_from:expr,
        |$lo4:ident, $hi1:ident| $fifth:expr
    ) => {
        use crate::blocks::*;
        use crate::dot::{ActScales, Unpacked, UnpackedK};
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

        /// Float weights against f32 activations for `R` activation rows at once: 16
        /// products per row per step in two FMA accumulators, `widen(i)` loading eight
        /// weights at element `i` as f32, then the tail (rows not a multiple of 16) summed in
        /// order. Each row's arithmetic is the same whatever `R`, so the four-row kernel
        /// gives the single-row kernel's bits.
        #[inline]
        #[target_feature(enable = $feat)]
        fn float_dot<const R: usize>(n: usize, a: [&[u8]; R], widen: impl Fn(usize) -> __m256, tail: impl Fn(usize) -> f32) -> [f32; R] {
            for ar in &a {
                assert!(ar.len() >= n * 4);
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let mut i = 0;
            while i + 16 <= n {
                let (w0, w1) = (widen(i), widen(i + 8));
                for (acc, ar) in acc.iter_mut().zip(&a) {
                    let ap = ar.as_ptr() as *const f32;
                    // SAFETY: i + 16 <= n floats of each activation row (asserted above).
                    let (x0, x1) = unsafe { (_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(ap.add(i + 8))) };
                    acc[0] = _mm256_fmadd_ps(w0, x0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(w1, x1, acc[1]);
                }
                i += 16;
            }
            std::array::from_fn(|r| {
                let mut sum = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
                for j in i..n {
                    let x = &a[r][4 * j..4 * j + 4];
                    sum += tail(j) * f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                }
                sum
            })
        }

        macro_rules! float_kernels {
            ($one:ident, $four:ident, $elem:literal, |$w:ident, $i:ident| $widen:expr, |$j:ident| $tail:expr) => {
                pub fn $one(w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: only reachable through dot_fn, after the CPU reported this
                    // module's features.
                    let [r] = unsafe { float_impl::<1>(w, [a]) };
                    r
                }
                pub fn $four(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
                    // SAFETY: as above, through dot4_fn.
                    unsafe { float_impl::<4>(w, a) }
                }
                #[target_feature(enable = $feat)]
                unsafe fn float_impl<const R: usize>($w: &[u8], a: [&[u8]; R]) -> [f32; R] {
                    let n = $w.len() / $elem;
                    let wp = $w.as_ptr();
                    // SAFETY: float_dot widens eight weights at i <= n - 8 only.
                    float_dot(n, a, |$i| unsafe { $widen(wp) }, |$j| $tail)
                }
            };
        }
        mod f32k {
            use super::*;
            float_kernels!(f32, f32_x4, 4, |w, i| |wp: *const u8| _mm256_loadu_ps((wp as *const f32).add(i)), |j| f32::from_le_bytes([
                w[4 * j],
                w[4 * j + 1],
                w[4 * j + 2],
                w[4 * j + 3]
            ]));
        }
        mod f16k {
            use super::*;
            float_kernels!(f16, f16_x4, 2, |w, i| |wp: *const u8| _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)), |j| h(
                u16::from_le_bytes([w[2 * j], w[2 * j + 1]])
            ));
        }
        mod bf16k {
            use super::*;
            // bf16 is the high half of an f32
            float_kernels!(
                bf16,
                bf16_x4,
                2,
                |w, i| |wp: *const u8| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * i) as *const __m128i)), 16)),
                |j| f32::from_bits((u16::from_le_bytes([w[2 * j], w[2 * j + 1]]) as u32) << 16)
            );
        }
        pub use bf16k::{bf16, bf16_x4};
        pub use f16k::{f16, f16_x4};
        pub use f32k::{f32, f32_x4};


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

        /// `c` plus `idot(x, y)`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn idot_from($c: __m256i, $xf: __m256i, $yf: __m256i) -> __m256i {
            $udot_from
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

        /// `dx·dy` of a weight block and its activation block, both f16 scales converted in
        /// one instruction.
        #[inline]
        #[target_feature(enable = $feat)]
        fn scale_product(d: u16, yd: u16) -> f32 {
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128((d as u32 | (yd as u32) << 16) as i32));
            _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
        }

        /// `(dx·dy, m·s)` of a block with a minimum (Q4_1, Q5_1) and its Q8_1 activation
        /// block: the four f16 scales converted in one instruction.
        #[inline]
        #[target_feature(enable = $feat)]
        fn min_scales(d: u16, m: u16, yd: u16, ys: u16) -> (f32, f32) {
            let v = _mm_cvtph_ps(_mm_set_epi32(0, 0, (yd as u32 | (ys as u32) << 16) as i32, (d as u32 | (m as u32) << 16) as i32));
            let p = _mm_mul_ps(v, _mm_movehl_ps(v, v));
            (_mm_cvtss_f32(p), _mm_cvtss_f32(_mm_movehdup_ps(p)))
        }

        /// A type with a minimum against Q8_1, one row: per block `(dx·dy)·p` into two
        /// alternating vector sums (as `pairwise_blocks!`) and `m·s` into two alternating
        /// scalar sums; `hsum(a0 + a1) + (m0 + m1)`. The tiles add the same way.
        macro_rules! min_kernel {
            ($impl:ident, $block:ty, |$blk:ident| $unpack:expr) => {
                #[target_feature(enable = $feat)]
                unsafe fn $impl(w: &[u8], a: &[u8]) -> f32 {
                    let (xs, ys) = (as_blocks::<$block>(w), as_blocks::<BlockQ8_1>(a));
                    let n = xs.len().min(ys.len());
                    let block = |i: usize| {
                        let ($blk, yb) = (&xs[i], &ys[i]);
                        let (dd, ms) = min_scales($blk.d, $blk.m, yb.d, yb.s);
                        // SAFETY: 32-byte array.
                        (_mm256_set1_ps(dd), dot_u8i8($unpack, unsafe { load(&yb.qs) }), ms)
                    };
                    let (mut a0, mut a1, mut m0, mut m1) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0f32, 0f32);
                    let mut i = 0;
                    while i + 2 <= n {
                        let (s, p, ms) = block(i);
                        a0 = _mm256_fmadd_ps(s, p, a0);
                        m0 += ms;
                        let (s, p, ms) = block(i + 1);
                        a1 = _mm256_fmadd_ps(s, p, a1);
                        m1 += ms;
                        i += 2;
                    }
                    if i < n {
                        let (s, p, ms) = block(i);
                        a0 = _mm256_fmadd_ps(s, p, a0);
                        m0 += ms;
                    }
                    hsum(_mm256_add_ps(a0, a1)) + (m0 + m1)
                }
            };
        }
        // SAFETY (each unpack): nibbles reads the block's 16 bytes.
        min_kernel!(q4_1_impl, BlockQ4_1, |x| unsafe { nibbles(x.qs.as_ptr()) });
        min_kernel!(q5_1_impl, BlockQ5_1, |x| unsafe { five_bits(&x.qs, x.qh) });

        #[target_feature(enable = $feat)]
        unsafe fn q4_0_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ4_0>(w), as_blocks::<BlockQ8_0>(a));
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: qs has 16 bytes, y.qs 32.
                let (qx, qy) = unsafe { (nibbles(x.qs.as_ptr()), load(&y.qs)) };
                let qx = _mm256_sub_epi8(qx, _mm256_set1_epi8(8));
                _mm256_fmadd_ps(_mm256_set1_ps(scale_product(x.d, y.d)), dot_i8(qx, qy), acc)
            }))
        }

        #[target_feature(enable = $feat)]
        unsafe fn q5_0_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ5_0>(w), as_blocks::<BlockQ8_0>(a));
            hsum(pairwise_blocks!(xs, ys, |x, y, acc| {
                // SAFETY: as above.
                let (qx, qy) = unsafe { (five_bits(&x.qs, x.qh), load(&y.qs)) };
                _mm256_fmadd_ps(_mm256_set1_ps(scale_product(x.d, y.d)), dot_i8(_mm256_sub_epi8(qx, _mm256_set1_epi8(16)), qy), acc)
            }))
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
                _mm256_fmadd_ps(_mm256_set1_ps(scale_product(x.d, y.d)), dot_i8(qx, qy), acc)
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


        // Tiles for prompts: TILE_ROWS weight rows against four activation rows at once, so an
        // activation block is loaded once for every row. The weights come unpacked (`Unpacked`:
        // unsigned bytes and f32 scales, written once per matmul call by the `*_unpack`
        // kernels and read by every group of four tokens) and the activations' f16 scales come
        // converted (`ActScales`). Each (row, token) product takes exactly the single-row kernel's
        // float operations: its even blocks into one sum and its odd blocks into another,
        // each in block order (two passes over the tile here, which needs half the
        // registers), then `hsum(even + odd)`, and the same integer lanes. The tests hold
        // them to bit equality.

        /// Weight rows per tile: 4 where AVX-512 gives 32 vector registers (16 sums, four
        /// unpacked rows and their scales), 2 in AVX2's 16.
        pub const TILE_ROWS: usize = $tile_rows;

        macro_rules! tile_wrapper {
            ($name:ident, $inner:ident, $unpack_name:ident, $unpack_inner:ident) => {
                pub fn $name(p: &[Unpacked], a: [&[u8]; 4], sc: &[ActScales]) -> [[f32; 4]; TILE_ROWS] {
                    // SAFETY: as for the single-row kernels (reached only after detection);
                    // the row lengths are checked inside.
                    unsafe { $inner(p, a, sc) }
                }
                pub fn $unpack_name(w: &[u8], out: &mut [Unpacked]) {
                    // SAFETY: as above; `out` is checked against the block count inside.
                    unsafe { $unpack_inner(w, out) }
                }
            };
        }
        tile_wrapper!(q4_0_tile, q4_0_tile_impl, q4_0_unpack, q4_0_unpack_impl);
        tile_wrapper!(q4_1_tile, q4_1_tile_impl, q4_1_unpack, q4_1_unpack_impl);
        tile_wrapper!(q5_0_tile, q5_0_tile_impl, q5_0_unpack, q5_0_unpack_impl);
        tile_wrapper!(q5_1_tile, q5_1_tile_impl, q5_1_unpack, q5_1_unpack_impl);
        tile_wrapper!(q8_0_tile, q8_0_tile_impl, q8_0_unpack, q8_0_unpack_impl);

        /// A panel of TILE_ROWS unpacked rows (back to back) as its rows.
        fn tile_rows(p: &[Unpacked]) -> [&[Unpacked]; TILE_ROWS] {
            assert!(p.len().is_multiple_of(TILE_ROWS), "a tile is whole rows");
            let rb = p.len() / TILE_ROWS;
            std::array::from_fn(|r| &p[r * rb..(r + 1) * rb])
        }

        /// Rows of a 32-element type (back to back in `w`) into `out`, one [`Unpacked`] per
        /// block: `$unpack` of the block (its unsigned bytes) and its scales as f32, `m` only
        /// where `$min` gives one.
        macro_rules! unpack_kernel {
            ($impl:ident, $block:ty, |$blk:ident| $unpack:expr, |$mb:ident| $min:expr) => {
                #[target_feature(enable = $feat)]
                unsafe fn $impl(w: &[u8], out: &mut [Unpacked]) {
                    let xs = as_blocks::<$block>(w);
                    assert_eq!(xs.len(), out.len(), "one unpacked block per block");
                    for (o, $blk) in out.iter_mut().zip(xs) {
                        let q = $unpack;
                        // SAFETY: `o.q` is 32 writable bytes.
                        unsafe { _mm256_storeu_si256(o.q.as_mut_ptr() as *mut __m256i, q) };
                        o.d = h($blk.d);
                        o.m = {
                            let $mb = $blk;
                            $min
                        };
                    }
                }
            };
        }

        /// The even-then-odd passes of a tile, CHUNK blocks at a time: first the chunk's
        /// `dx·dy` per (block, row, token) into a table (so that each pair's scale is one
        /// broadcast from memory), then `$body` adds block `$i` into
        /// `$acc: &mut [[__m256; 4]; TILE_ROWS]` with `$sc: &[[f32; 4]; TILE_ROWS]`, that
        /// block's scales. Gives `hsum(even + odd)` per (row, token).
        macro_rules! tile_passes {
            ($xs:expr, $act_scales:expr, |$i:ident, $sc:ident, $acc:ident| $body:block) => {{
                const CHUNK: usize = 32; // even, so a chunk's first block keeps its parity
                let (xs, act_scales): (_, &[ActScales]) = ($xs, $act_scales);
                let n = xs[0].len();
                let mut halves = [[[_mm256_setzero_ps(); 4]; TILE_ROWS]; 2];
                // Not zeroed first: on a narrow model (576 columns, 18 blocks) zeroing the
                // 2 KiB table cost 5% of the prompt.
                let mut table = [const { std::mem::MaybeUninit::<[[f32; 4]; TILE_ROWS]>::uninit() }; CHUNK];
                let mut c0 = 0;
                while c0 < n {
                    let c1 = (c0 + CHUNK).min(n);
                    for (i, entry) in (c0..c1).zip(table.iter_mut()) {
                        // SAFETY: four f32.
                        let dy = unsafe { _mm_loadu_ps(act_scales[i].d.as_ptr()) };
                        entry.write(std::array::from_fn(|r| lanes(_mm_mul_ps(_mm_set1_ps(xs[r][i].d), dy))));
                    }
                    for (pass, half) in halves.iter_mut().enumerate() {
                        let mut sums = *half;
                        let mut i = c0 + pass;
                        while i < c1 {
                            {
                                // SAFETY: entries 0..c1 - c0 were written for this chunk above.
                                let $sc = unsafe { table[i - c0].assume_init_ref() };
                                let ($i, $acc) = (i, &mut sums);
                                $body
                            }
                            i += 2;
                        }
                        *half = sums;
                    }
                    c0 = c1;
                }
                let [even, odd] = halves;
                let out: [[f32; 4]; TILE_ROWS] = std::array::from_fn(|r| std::array::from_fn(|t| hsum(_mm256_add_ps(even[r][t], odd[r][t]))));
                out
            }};
        }

        /// A tile of a 32-element type over unpacked rows, whose bytes are `x + $bias` (the
        /// signed types) or `x` (the types with a minimum, `$bias` 0); `$act` is the
        /// activation block type. The integer lanes are `dot_i8`'s (or
        /// `dot_u8i8`'s): with VNNI, `vpdpbusd` of the biased bytes started from
        /// `-bias·Σy` per lane, one instruction per pair; with AVX2, the signs as `dot_i8`.
        macro_rules! tile_kernel {
            ($impl:ident, $act:ty, $bias:literal) => {
                #[target_feature(enable = $feat)]
                unsafe fn $impl(p: &[Unpacked], a: [&[u8]; 4], act_scales: &[ActScales]) -> [[f32; 4]; TILE_ROWS] {
                    let xs = tile_rows(p);
                    let ys = a.map(as_blocks::<$act>);
                    let nb = xs[0].len();
                    assert!(ys.iter().all(|y| y.len() >= nb) && act_scales.len() >= nb);
                    let bias = _mm256_set1_epi8($bias as u8 as i8);
                    tile_passes!(xs, act_scales, |i, sc, acc| {
                        // SAFETY: 32-byte arrays.
                        let xu: [__m256i; TILE_ROWS] = std::array::from_fn(|r| unsafe { _mm256_loadu_si256(xs[r][i].q.as_ptr() as *const __m256i) });
                        // AVX2: the signed weights and their magnitudes, as `dot_i8` takes them.
                        let qx: [__m256i; TILE_ROWS] = std::array::from_fn(|r| _mm256_sub_epi8(xu[r], bias));
                        let ax: [__m256i; TILE_ROWS] = std::array::from_fn(|r| _mm256_sign_epi8(qx[r], qx[r]));
                        for t in 0..4 {
                            // SAFETY: 32-byte array.
                            let qy = unsafe { load(&ys[t][i].qs) };
                            let neg_bias_sum = if $vnni && $bias != 0 {
                                idot(bias, _mm256_sub_epi8(_mm256_setzero_si256(), qy))
                            } else {
                                _mm256_setzero_si256()
                            };
                            for r in 0..TILE_ROWS {
                                let p = if $bias == 0 {
                                    idot(xu[r], qy)
                                } else if $vnni {
                                    idot_from(neg_bias_sum, xu[r], qy)
                                } else {
                                    idot(ax[r], _mm256_sign_epi8(qy, qx[r]))
                                };
                                acc[r][t] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[r][t]), _mm256_cvtepi32_ps(p), acc[r][t]);
                            }
                        }
                    })
                }
            };
        }
        /// Low nibbles then high nibbles, with the fifth bits of `qh` (bit j for element j)
        /// as 16: the 16 bytes loaded into both halves and shifted apart (no shuffle), the
        /// fifth bits merged by byte mask where AVX-512 BW has them.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
            // SAFETY: 16 readable bytes.
            let both = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) });
            let $lo4 = _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0xF));
            let $hi1 = u32::from_le_bytes(qh);
            $fifth
        }
        tile_kernel!(q4_0_tile_impl, BlockQ8_0, 8);
        tile_kernel!(q5_0_tile_impl, BlockQ8_0, 16);
        tile_kernel!(q8_0_tile_impl, BlockQ8_0, 128);
        tile_kernel!(q4_1_tile_dots, BlockQ8_1, 0);
        tile_kernel!(q5_1_tile_dots, BlockQ8_1, 0);
        // SAFETY (each unpack): nibbles reads the block's 16 bytes; qs is 32 bytes.
        unpack_kernel!(q4_0_unpack_impl, BlockQ4_0, |x| unsafe { nibbles(x.qs.as_ptr()) }, |_x| 0.0);
        unpack_kernel!(q5_0_unpack_impl, BlockQ5_0, |x| unsafe { five_bits(&x.qs, x.qh) }, |_x| 0.0);
        unpack_kernel!(q8_0_unpack_impl, BlockQ8_0, |x| _mm256_xor_si256(unsafe { load(&x.qs) }, _mm256_set1_epi8(-128)), |_x| 0.0);
        unpack_kernel!(q4_1_unpack_impl, BlockQ4_1, |x| unsafe { nibbles(x.qs.as_ptr()) }, |x| h(x.m));
        unpack_kernel!(q5_1_unpack_impl, BlockQ5_1, |x| unsafe { five_bits(&x.qs, x.qh) }, |x| h(x.m));

        /// The types with a minimum: the tile's dots plus the `m·s` terms per (row, token) as
        /// `min_kernel!` adds them, with the four tokens in the lanes of one vector.
        macro_rules! min_tile_kernel {
            ($impl:ident, $dots:ident) => {
                #[target_feature(enable = $feat)]
                unsafe fn $impl(p: &[Unpacked], a: [&[u8]; 4], act_scales: &[ActScales]) -> [[f32; 4]; TILE_ROWS] {
                    // SAFETY: this function's contract.
                    let mut sums = unsafe { $dots(p, a, act_scales) };
                    let xs = tile_rows(p);
                    // Even and odd blocks apart, every row at once (independent additions).
                    let (mut even, mut odd) = ([_mm_setzero_ps(); TILE_ROWS], [_mm_setzero_ps(); TILE_ROWS]);
                    // SAFETY: four f32.
                    let term = |i: usize, r: usize| _mm_mul_ps(_mm_set1_ps(xs[r][i].m), unsafe { _mm_loadu_ps(act_scales[i].s.as_ptr()) });
                    let n = xs[0].len();
                    let mut i = 0;
                    while i + 2 <= n {
                        for r in 0..TILE_ROWS {
                            even[r] = _mm_add_ps(even[r], term(i, r));
                            odd[r] = _mm_add_ps(odd[r], term(i + 1, r));
                        }
                        i += 2;
                    }
                    if i < n {
                        for r in 0..TILE_ROWS {
                            even[r] = _mm_add_ps(even[r], term(i, r));
                        }
                    }
                    for (r, row) in sums.iter_mut().enumerate() {
                        for (v, mt) in row.iter_mut().zip(lanes(_mm_add_ps(even[r], odd[r]))) {
                            *v += mt;
                        }
                    }
                    sums
                }
            };
        }
        min_tile_kernel!(q4_1_tile_impl, q4_1_tile_dots);
        min_tile_kernel!(q5_1_tile_impl, q5_1_tile_dots);

        // ---- k-quant tiles: one unpacked row against four tokens -----------------------
        //
        // The row's super-blocks come unpacked (`UnpackedK`), so a group of 32 values is one
        // load, its scales one more, and the minimum / offset term one `vpmaddwd` of the
        // activation's `bsums` per token. Each token's float operations are the single-row
        // kernel's, in its order (`k4_block!`, `q6_k_impl`), and its integers the same sums.

        pub fn q4_k_unpack(w: &[u8], out: &mut [Unpacked]) {
            // SAFETY: as for the single-row kernels (reached only after detection).
            unsafe { k_unpack_impl::<false>(w, out) }
        }
        pub fn q6_k_unpack(w: &[u8], out: &mut [Unpacked]) {
            // SAFETY: as above.
            unsafe { k_unpack_impl::<true>(w, out) }
        }
        pub fn q4_k_tile(p: &[Unpacked], a: [&[u8]; 4]) -> [[f32; 4]; 1] {
            // SAFETY: as above; lengths are checked inside.
            [unsafe { k_tile_impl::<false>(p, a) }]
        }
        pub fn q6_k_tile(p: &[Unpacked], a: [&[u8]; 4]) -> [[f32; 4]; 1] {
            // SAFETY: as above.
            [unsafe { k_tile_impl::<true>(p, a) }]
        }

        /// Q4_K (`Q6` false) or Q6_K rows into [`UnpackedK`] super-blocks.
        #[target_feature(enable = $feat)]
        unsafe fn k_unpack_impl<const Q6: bool>(w: &[u8], out: &mut [Unpacked]) {
            let out = UnpackedK::view_mut(out);
            let m4 = _mm256_set1_epi8(0xF);
            let store = |dst: &mut [u8], v: __m256i| {
                assert!(dst.len() >= 32);
                // SAFETY: 32 writable bytes (asserted).
                unsafe { _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, v) }
            };
            if Q6 {
                let xs = as_blocks::<BlockQ6K>(w);
                assert_eq!(xs.len(), out.len(), "one unpacked super-block per super-block");
                let m2 = _mm256_set1_epi8(3);
                for (o, x) in out.iter_mut().zip(xs) {
                    for n in 0..2 {
                        // SAFETY: offsets stay inside ql (128) and qh (64).
                        let (bh, b1, b2) = unsafe {
                            (
                                _mm256_loadu_si256(x.qh.as_ptr().add(32 * n) as *const __m256i),
                                _mm256_loadu_si256(x.ql.as_ptr().add(64 * n) as *const __m256i),
                                _mm256_loadu_si256(x.ql.as_ptr().add(64 * n + 32) as *const __m256i),
                            )
                        };
                        let hb = |shift: i32| _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(bh, _mm_cvtsi32_si128(shift)), m2), 4);
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(b1, m4), hb(0)),
                            _mm256_or_si256(_mm256_and_si256(b2, m4), hb(2)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), hb(4)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), hb(6)),
                        ];
                        for (k, qk) in q.into_iter().enumerate() {
                            store(&mut o.q[128 * n + 32 * k..], qk);
                            let (lo, hi) = (x.scales[8 * n + 2 * k] as i16, x.scales[8 * n + 2 * k + 1] as i16);
                            o.scales[4 * n + k] = std::array::from_fn(|l| if l < 8 { lo } else { hi });
                        }
                    }
                    o.sums = x.scales.map(|s| s as i16);
                    (o.d, o.dmin) = (h(x.d), 0.0);
                }
            } else {
                let xs = as_blocks::<BlockQ4K>(w);
                assert_eq!(xs.len(), out.len(), "one unpacked super-block per super-block");
                for (o, x) in out.iter_mut().zip(xs) {
                    let (sc, mn) = unpack_scale_min_k4(&x.scales);
                    for j in 0..4 {
                        // SAFETY: 32j + 32 <= 128 bytes of qs.
                        let q4 = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(32 * j) as *const __m256i) };
                        store(&mut o.q[64 * j..], _mm256_and_si256(q4, m4));
                        store(&mut o.q[64 * j + 32..], _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4));
                    }
                    o.scales = std::array::from_fn(|g| [sc[g] as i16; 16]);
                    o.sums = std::array::from_fn(|l| mn[l / 2] as i16);
                    (o.d, o.dmin) = (h(x.d), h(x.dmin));
                }
            }
        }

        /// One unpacked Q4_K / Q6_K row against four Q8_K rows.
        #[target_feature(enable = $feat)]
        unsafe fn k_tile_impl<const Q6: bool>(p: &[Unpacked], a: [&[u8]; 4]) -> [f32; 4] {
            let xs = UnpackedK::view(p);
            let ys = a.map(as_blocks::<BlockQ8K>);
            assert!(ys.iter().all(|y| y.len() >= xs.len()));
            let load = |b: &[u8]| {
                assert!(b.len() >= 32);
                // SAFETY: 32 readable bytes (asserted).
                unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
            };
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut acc_m = _mm_setzero_ps();
            for (i, x) in xs.iter().enumerate() {
                let mut sumi = [_mm256_setzero_si256(); 4];
                for g in 0..8 {
                    let q = load(&x.q[32 * g..]);
                    let s = load(bytemuck_i16(&x.scales[g]));
                    for t in 0..4 {
                        // SAFETY: 32g + 32 <= 256 bytes of qs.
                        let yv = unsafe { _mm256_loadu_si256(ys[t][i].qs.as_ptr().add(32 * g) as *const __m256i) };
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(s, _mm256_maddubs_epi16(q, yv)));
                    }
                }
                // Σ sums·bsums per token: Q4_K's mins, Q6_K's offset (times 32 below).
                let w = load(bytemuck_i16(&x.sums));
                let m: [__m256i; 4] = std::array::from_fn(|t| _mm256_madd_epi16(w, load(bytemuck_i16(&ys[t][i].bsums))));
                let m = _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
                let m = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
                let yd = _mm_setr_ps(ys[0][i].d, ys[1][i].d, ys[2][i].d, ys[3][i].d);
                let dd = lanes(_mm_mul_ps(_mm_set1_ps(x.d), yd));
                if Q6 {
                    let corr = lanes(_mm_cvtepi32_ps(_mm_slli_epi32(m, 5)));
                    for t in 0..4 {
                        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dd[t]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
                        acc[t] = _mm256_add_ps(acc[t], _mm256_setr_ps(-dd[t] * corr[t], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
                    }
                } else {
                    acc_m = _mm_sub_ps(acc_m, _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(x.dmin), yd), _mm_cvtepi32_ps(m)));
                    for t in 0..4 {
                        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dd[t]), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
                    }
                }
            }
            let am = lanes(acc_m);
            std::array::from_fn(|t| if Q6 { hsum(acc[t]) } else { hsum(acc[t]) + am[t] })
        }

        fn bytemuck_i16(v: &[i16]) -> &[u8] {
            // SAFETY: i16 is plain data; the byte view covers the same memory.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }

        fn lanes(v: __m128) -> [f32; 4] {
            // SAFETY: four f32 lanes, the same size and plain data.
            unsafe { std::mem::transmute::<__m128, [f32; 4]>(v) }
        }
    };
}

pub mod avx2 {
    x86_kernels!(
        "avx2,fma,f16c",
        2,
        false,
        |x, y| _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1)),
        |c, x, y| _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))),
        |nib, qh| _mm256_or_si256(nib, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)))
    );

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

/// AVX2 plus AVX-VNNI: `vpdpbusd` in its VEX form, with AVX2's 16 vector registers (so
/// the tiles take two rows, as with AVX2).
pub mod avxvnni {
    x86_kernels!(
        "avx2,fma,f16c,avxvnni",
        2,
        true,
        |x, y| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, y),
        |c, x, y| _mm256_dpbusd_avx_epi32(c, x, y),
        |nib, qh| _mm256_or_si256(nib, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)))
    );
}

pub mod vnni {
    x86_kernels!(
        "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw",
        4,
        true,
        |x, y| _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y),
        |c, x, y| _mm256_dpbusd_epi32(c, x, y),
        |nib, qh| _mm256_mask_add_epi8(nib, qh, nib, _mm256_set1_epi8(0x10))
    );
}

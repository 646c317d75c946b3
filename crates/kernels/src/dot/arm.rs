//! aarch64 dot products after ggml's `arch/arm/quants.c`, compiled three times from one
//! source: [`neon`] (Advanced SIMD, which every aarch64 CPU has: byte products widened with
//! `smull` and summed pairwise), [`dotprod`] (the same with ARMv8.2's `sdot`, four byte
//! products into each i32 lane in one instruction) and [`i8mm`] (`sdot`, and the 8-bit
//! matrix multiply `smmla` in the 32-element types' prompt tiles), chosen at run time.
//!
//! Weights are unpacked to signed bytes (NEON multiplies signed by signed, so no sign
//! trick is needed) and dotted 16 at a time; the 32-element types scale each block's lanes
//! into two alternating float accumulators, the k-quants sum their groups in integers and
//! scale once per super-block; the float types (F32, F16, BF16) take four FMA accumulators
//! of four lanes. Each kernel has its scalar twin in [`super::scalar`] and is
//! compared with it in the tests (under qemu-user where the build machine is not ARM).

macro_rules! arm_kernels {
    ($feat:literal, |$acc:ident, $x:ident, $y:ident| $dot:expr) => {
        arm_kernels!($feat, |$acc, $x, $y| $dot, false, |_m, _a, _b| unreachable!("no smmla at this level"));
    };
    ($feat:literal, |$acc:ident, $x:ident, $y:ident| $dot:expr, $mmla:literal, |$mc:ident, $ma:ident, $mb:ident| $mm:expr) => {
        use crate::blocks::*;
        use crate::dot::{unpack_k, ActScales, Unpacked, UnpackedK};
        use std::arch::aarch64::*;

        /// `acc` plus the 16 byte products of `x` and `y`, summed into four i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        fn idot($acc: int32x4_t, $x: int8x16_t, $y: int8x16_t) -> int32x4_t {
            $dot
        }

        /// `smmla`: `acc` (a 2×2 i32 matrix, row-major) plus `a · bᵀ`, where `a` and `b`
        /// are 2×8 byte matrices (row 0 the low eight bytes). Only the `i8mm` level calls it.
        #[inline]
        #[target_feature(enable = $feat)]
        #[allow(unused_variables, unreachable_code)]
        fn mmla($mc: int32x4_t, $ma: int8x16_t, $mb: int8x16_t) -> int32x4_t {
            $mm
        }

        /// The 32 bytes of an 8-bit block as two vectors.
        #[inline]
        #[target_feature(enable = $feat)]
        fn load32(p: &[i8; 32]) -> (int8x16_t, int8x16_t) {
            // SAFETY: 32 readable bytes.
            unsafe { (vld1q_s8(p.as_ptr()), vld1q_s8(p.as_ptr().add(16))) }
        }

        /// 16 packed bytes as (low nibbles: elements 0..16, high nibbles: elements 16..32).
        #[inline]
        #[target_feature(enable = $feat)]
        fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
            // SAFETY: 16 readable bytes.
            let b = unsafe { vld1q_u8(qs.as_ptr()) };
            (vandq_u8(b, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(b))
        }

        /// The fifth bits of Q5_0 / Q5_1 (bit j of `qh` for element j) as 16, for elements
        /// 0..16 and 16..32.
        #[inline]
        #[target_feature(enable = $feat)]
        fn fifth_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
            let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
            let lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
            let hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
            let sixteen = vdupq_n_u8(16);
            (vandq_u8(vtstq_u8(lo, bit), sixteen), vandq_u8(vtstq_u8(hi, bit), sixteen))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn signed(v: uint8x16_t, offset: u8) -> int8x16_t {
            vreinterpretq_s8_u8(vsubq_u8(v, vdupq_n_u8(offset)))
        }

        macro_rules! safe_wrapper {
            ($name:ident, $inner:ident) => {
                pub fn $name(w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: only reachable through dot_fn, chosen after the CPU reported
                    // the features this module is compiled for.
                    unsafe { $inner(w, a) }
                }
            };
        }
        safe_wrapper!(q4_0, q4_0_impl);
        safe_wrapper!(q4_1, q4_1_impl);
        safe_wrapper!(q5_0, q5_0_impl);
        safe_wrapper!(q5_1, q5_1_impl);
        safe_wrapper!(q8_0, q8_0_impl);
        safe_wrapper!(q2_k, q2_k_impl);
        safe_wrapper!(q3_k, q3_k_impl);
        safe_wrapper!(q4_k, q4_k_impl);
        safe_wrapper!(q5_k, q5_k_impl);
        safe_wrapper!(q6_k, q6_k_impl);

        /// Float weights against f32 activations for `R` activation rows at once: 16
        /// products per row per step in four FMA accumulators, `widen(i)` giving four
        /// weights at element `i` as f32, then the tail (rows not a multiple of 16) summed in
        /// order. Each row's arithmetic is the same whatever `R`, so the four-row kernel gives
        /// the single-row kernel's bits.
        #[inline]
        #[target_feature(enable = $feat)]
        fn float_dot<const R: usize>(n: usize, a: [&[u8]; R], widen: impl Fn(usize) -> float32x4_t, tail: impl Fn(usize) -> f32) -> [f32; R] {
            for ar in &a {
                assert!(ar.len() >= n * 4);
            }
            let mut acc = [[vdupq_n_f32(0.0); 4]; R];
            let mut i = 0;
            while i + 16 <= n {
                let w: [float32x4_t; 4] = std::array::from_fn(|k| widen(i + 4 * k));
                for (acc, ar) in acc.iter_mut().zip(&a) {
                    let ap = ar.as_ptr() as *const f32;
                    for k in 0..4 {
                        // SAFETY: i + 16 <= n floats of each activation row (asserted above).
                        let x = unsafe { vld1q_f32(ap.add(i + 4 * k)) };
                        acc[k] = vfmaq_f32(acc[k], w[k], x);
                    }
                }
                i += 16;
            }
            std::array::from_fn(|r| {
                let [a0, a1, a2, a3] = acc[r];
                let mut sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
                for j in i..n {
                    let x = &a[r][4 * j..4 * j + 4];
                    sum += tail(j) * f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                }
                sum
            })
        }

        /// Four f16 values (bits) to f32: `fcvtl`, in base Advanced SIMD (stable Rust has no
        /// f16 vector type to call `vcvt_f32_f16` with).
        #[inline]
        #[target_feature(enable = $feat)]
        fn f16x4(v: uint16x4_t) -> float32x4_t {
            let out: float32x4_t;
            // SAFETY: a register-to-register conversion; reads and writes no memory.
            unsafe { std::arch::asm!("fcvtl {o:v}.4s, {i:v}.4h", i = in(vreg) v, o = out(vreg) out, options(pure, nomem, nostack)) };
            out
        }

        macro_rules! float_kernels {
            ($one:ident, $four:ident, $elem:literal, |$wp:ident, $i:ident| $widen:expr, |$w:ident, $j:ident| $tail:expr) => {
                pub fn $one(w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: only reachable through dot_fn, after the CPU reported this
                    // module's features.
                    let [r] = unsafe { $four::<1>(w, [a]) };
                    r
                }
                #[target_feature(enable = $feat)]
                pub(crate) unsafe fn $four<const R: usize>($w: &[u8], a: [&[u8]; R]) -> [f32; R] {
                    let n = $w.len() / $elem;
                    let $wp = $w.as_ptr();
                    // SAFETY: float_dot widens four weights at i <= n - 4 only.
                    float_dot(n, a, |$i| unsafe { $widen }, |$j| $tail)
                }
            };
        }
        float_kernels!(f32, f32_rows, 4, |wp, i| vld1q_f32((wp as *const f32).add(i)), |w, j| f32::from_le_bytes([
            w[4 * j],
            w[4 * j + 1],
            w[4 * j + 2],
            w[4 * j + 3]
        ]));
        float_kernels!(f16, f16_rows, 2, |wp, i| f16x4(vld1_u16((wp as *const u16).add(i))), |w, j| half::f16::from_bits(u16::from_le_bytes([
            w[2 * j],
            w[2 * j + 1]
        ]))
        .to_f32());
        // bf16 is the high half of an f32
        float_kernels!(bf16, bf16_rows, 2, |wp, i| vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16((wp as *const u16).add(i)))), |w, j| f32::from_bits(
            (u16::from_le_bytes([w[2 * j], w[2 * j + 1]]) as u32) << 16
        ));

        /// F32 / F16 / BF16 against four activation rows.
        pub fn f32_x4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: as the single-row kernels.
            unsafe { f32_rows::<4>(w, a) }
        }
        pub fn f16_x4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: as above.
            unsafe { f16_rows::<4>(w, a) }
        }
        pub fn bf16_x4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: as above.
            unsafe { bf16_rows::<4>(w, a) }
        }

        /// A 32-element type: `$unpack` gives block `$b`'s weights as two signed byte vectors
        /// and `$min` its minimum's term against activation block `$yb` (0 for the
        /// symmetric types). Blocks alternate between two accumulators, so one block's
        /// multiply-add does not wait on the last.
        /// The 32-element types' walk over `n` blocks: `block(i)` gives block `i`'s integer
        /// lanes, `dx·dy` and minimum term; the lanes are scaled into two alternating sums
        /// (even and odd blocks, so consecutive FMAs do not wait on each other) by `fma`, the
        /// minima added a pair of blocks at a time. Returns (even, odd, minima).
        #[inline]
        #[target_feature(enable = $feat)]
        fn pairwise<A: Copy>(n: usize, zero: A, block: impl Fn(usize) -> (int32x4_t, f32, f32), fma: impl Fn(A, int32x4_t, f32) -> A) -> (A, A, f32) {
            let (mut a0, mut a1, mut summs) = (zero, zero, 0f32);
            let mut i = 0;
            while i + 2 <= n {
                let (p, s, m) = block(i);
                a0 = fma(a0, p, s);
                let (q, t, mq) = block(i + 1);
                a1 = fma(a1, q, t);
                summs += m + mq;
                i += 2;
            }
            if i < n {
                let (p, s, m) = block(i);
                a0 = fma(a0, p, s);
                summs += m;
            }
            (a0, a1, summs)
        }

        macro_rules! kernel32 {
            ($impl:ident, $unpack_fn:ident, $block:ty, $act:ty, |$b:ident, $yb:ident| $unpack:expr, $min:expr, $m:expr) => {
                /// Rows into one [`Unpacked`] per block: the two signed byte vectors `$unpack`
                /// gives, and the scales as f32.
                pub fn $unpack_fn(w: &[u8], out: &mut [Unpacked]) {
                    #[target_feature(enable = $feat)]
                    unsafe fn inner(w: &[u8], out: &mut [Unpacked]) {
                        let xs = as_blocks::<$block>(w);
                        assert_eq!(xs.len(), out.len(), "one unpacked block per block");
                        for (o, $b) in out.iter_mut().zip(xs) {
                            let (x0, x1): (int8x16_t, int8x16_t) = $unpack;
                            let q = o.q.as_mut_ptr() as *mut i8;
                            // SAFETY: `o.q` is 32 writable bytes.
                            unsafe { (vst1q_s8(q, x0), vst1q_s8(q.add(16), x1)) };
                            (o.d, o.m) = (f16_to_f32($b.d), $m);
                        }
                    }
                    // SAFETY: only reachable through tile_fn, after the CPU reported this
                    // module's features.
                    unsafe { inner(w, out) }
                }
                #[target_feature(enable = $feat)]
                unsafe fn $impl(w: &[u8], a: &[u8]) -> f32 {
                    let (xs, ys) = (as_blocks::<$block>(w), as_blocks::<$act>(a));
                    let n = xs.len().min(ys.len());
                    // The block's integer dot `idot` gives, its `dx·dy` and its minimum's term.
                    let block = |i: usize| {
                        let ($b, $yb) = (&xs[i], &ys[i]);
                        let (x0, x1): (int8x16_t, int8x16_t) = $unpack;
                        let (y0, y1) = load32(&$yb.qs);
                        (idot(idot(vdupq_n_s32(0), x0, y0), x1, y1), f16_to_f32($b.d) * f16_to_f32($yb.d), $min)
                    };
                    if $mmla {
                        // The `smmla` level: each block's integer dot summed whole and then
                        // scaled, the form the matrix instruction gives the prompt tiles.
                        let (a0, a1, summs) = pairwise(n, 0f32, block, |acc, p, s| (vaddvq_s32(p) as f32).mul_add(s, acc));
                        return (a0 + a1) + summs;
                    }
                    let (a0, a1, summs) = pairwise(n, vdupq_n_f32(0.0), block, |acc, p, s| vfmaq_f32(acc, vcvtq_f32_s32(p), vdupq_n_f32(s)));
                    vaddvq_f32(vaddq_f32(a0, a1)) + summs
                }
            };
        }
        kernel32!(
            q4_0_impl,
            q4_0_unpack,
            BlockQ4_0,
            BlockQ8_0,
            |x, y| {
                let (lo, hi) = nibbles(&x.qs);
                (signed(lo, 8), signed(hi, 8))
            },
            0.0,
            0.0
        );
        kernel32!(
            q4_1_impl,
            q4_1_unpack,
            BlockQ4_1,
            BlockQ8_1,
            |x, y| {
                let (lo, hi) = nibbles(&x.qs);
                (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
            },
            f16_to_f32(x.m) * f16_to_f32(y.s),
            f16_to_f32(x.m)
        );
        kernel32!(
            q5_0_impl,
            q5_0_unpack,
            BlockQ5_0,
            BlockQ8_0,
            |x, y| {
                let ((lo, hi), (h0, h1)) = (nibbles(&x.qs), fifth_bits(x.qh));
                (signed(vorrq_u8(lo, h0), 16), signed(vorrq_u8(hi, h1), 16))
            },
            0.0,
            0.0
        );
        kernel32!(
            q5_1_impl,
            q5_1_unpack,
            BlockQ5_1,
            BlockQ8_1,
            |x, y| {
                let ((lo, hi), (h0, h1)) = (nibbles(&x.qs), fifth_bits(x.qh));
                (vreinterpretq_s8_u8(vorrq_u8(lo, h0)), vreinterpretq_s8_u8(vorrq_u8(hi, h1)))
            },
            f16_to_f32(x.m) * f16_to_f32(y.s),
            f16_to_f32(x.m)
        );
        kernel32!(q8_0_impl, q8_0_unpack, BlockQ8_0, BlockQ8_0, |x, y| load32(&x.qs), 0.0, 0.0);

        /// Weight rows per prompt tile: two rows against four tokens keep the 16 sums, the
        /// rows' bytes and the activations in NEON's 32 registers.
        pub const TILE_ROWS: usize = 2;

        /// A prompt tile of a 32-element type over unpacked rows (`Unpacked`, signed bytes),
        /// TILE_ROWS rows against four activation rows. Each (row, token) takes exactly the
        /// single-row kernel's operations (`kernel32!`): the block's lanes scaled by
        /// `dx·dy` into the even or odd block's sum, the minima's `m·s` added a pair of
        /// blocks at a time, `hsum(even + odd) + minima`; the tests hold them to bit
        /// equality.
        pub fn tile32(p: &[Unpacked], a: [&[u8]; 4], sc: &[ActScales]) -> [[f32; 4]; TILE_ROWS] {
            // SAFETY: only reachable through tile_fn, after the CPU reported this module's
            // features; lengths are checked inside.
            unsafe { tile32_impl(p, a, sc) }
        }

        /// A tile's blocks in the single-row kernels' order: `block(i, acc)` for each block
        /// `i`, and each (row, token)'s minima `m(r, t, i)` added a pair of blocks at a time
        /// (as `kernel32!` adds them); returns those sums.
        #[inline]
        #[target_feature(enable = $feat)]
        fn tile_walk<A>(nb: usize, acc: &mut A, block: impl Fn(usize, &mut A), m: impl Fn(usize, usize, usize) -> f32) -> [[f32; 4]; TILE_ROWS] {
            let mut summs = [[0f32; 4]; TILE_ROWS];
            let mut i = 0;
            while i + 2 <= nb {
                block(i, acc);
                block(i + 1, acc);
                for (r, row) in summs.iter_mut().enumerate() {
                    for (t, s) in row.iter_mut().enumerate() {
                        *s += m(r, t, i) + m(r, t, i + 1);
                    }
                }
                i += 2;
            }
            if i < nb {
                block(i, acc);
                for (r, row) in summs.iter_mut().enumerate() {
                    for (t, s) in row.iter_mut().enumerate() {
                        *s += m(r, t, i);
                    }
                }
            }
            summs
        }

        #[target_feature(enable = $feat)]
        unsafe fn tile32_impl(p: &[Unpacked], a: [&[u8]; 4], sc: &[ActScales]) -> [[f32; 4]; TILE_ROWS] {
            if $mmla {
                // SAFETY: as this function's.
                return unsafe { tile32_mmla(p, a, sc) };
            }
            assert!(p.len().is_multiple_of(TILE_ROWS), "a tile is whole rows");
            let nb = p.len() / TILE_ROWS;
            let xs: [&[Unpacked]; TILE_ROWS] = std::array::from_fn(|r| &p[r * nb..(r + 1) * nb]);
            // Q8_0 and Q8_1 blocks both end in their 32 bytes.
            let bytes = a[0].len() / nb;
            assert!(a.iter().all(|r| r.len() == a[0].len()) && bytes >= 32 && sc.len() >= nb);
            let y = |t: usize, i: usize| {
                let q = &a[t][i * bytes + bytes - 32..(i + 1) * bytes];
                // SAFETY: 32 readable bytes (the slice above is bounds-checked).
                unsafe { (vld1q_s8(q.as_ptr() as *const i8), vld1q_s8(q.as_ptr().add(16) as *const i8)) }
            };
            let mut acc = [[[vdupq_n_f32(0.0); 2]; 4]; TILE_ROWS];
            let block = |i: usize, acc: &mut [[[float32x4_t; 2]; 4]; TILE_ROWS]| {
                let x: [(int8x16_t, int8x16_t); TILE_ROWS] = std::array::from_fn(|r| {
                    let q = xs[r][i].q.as_ptr() as *const i8;
                    // SAFETY: 32 readable bytes.
                    unsafe { (vld1q_s8(q), vld1q_s8(q.add(16))) }
                });
                for t in 0..4 {
                    let (y0, y1) = y(t, i);
                    for r in 0..TILE_ROWS {
                        let p = vcvtq_f32_s32(idot(idot(vdupq_n_s32(0), x[r].0, y0), x[r].1, y1));
                        let s = xs[r][i].d * sc[i].d[t];
                        acc[r][t][i % 2] = vfmaq_f32(acc[r][t][i % 2], p, vdupq_n_f32(s));
                    }
                }
            };
            let summs = tile_walk(nb, &mut acc, block, |r, t, i| xs[r][i].m * sc[i].s[t]);
            std::array::from_fn(|r| std::array::from_fn(|t| vaddvq_f32(vaddq_f32(acc[r][t][0], acc[r][t][1])) + summs[r][t]))
        }

        /// The prompt tile with `smmla`: the two rows' blocks and two tokens' blocks as 2×8
        /// byte matrices (four per block: bytes 0..8, 8..16, 16..24, 24..32), four `smmla`
        /// giving the whole block's integer dot of each (row, token) pair in one vector
        /// `[(r0,t0), (r0,t1), (r1,t0), (r1,t1)]`; then the single-row kernel's float steps
        /// (this level's: the block's dot times `dx·dy` into the even or odd block's sum,
        /// `(even + odd) + minima`), lane by lane.
        #[target_feature(enable = $feat)]
        unsafe fn tile32_mmla(p: &[Unpacked], a: [&[u8]; 4], sc: &[ActScales]) -> [[f32; 4]; TILE_ROWS] {
            const { assert!(TILE_ROWS == 2) };
            assert!(p.len().is_multiple_of(2), "a tile is whole rows");
            let nb = p.len() / 2;
            let xs = [&p[..nb], &p[nb..]];
            let bytes = a[0].len() / nb;
            assert!(a.iter().all(|r| r.len() == a[0].len()) && bytes >= 32 && sc.len() >= nb);
            let y = |t: usize, i: usize| {
                let q = &a[t][i * bytes + bytes - 32..(i + 1) * bytes];
                // SAFETY: 32 readable bytes (the slice above is bounds-checked).
                unsafe { (vld1q_s8(q.as_ptr() as *const i8), vld1q_s8(q.as_ptr().add(16) as *const i8)) }
            };
            // Two 2×8 matrices' rows side by side: (low halves, high halves) of `u` and `v`.
            let pairs = |u: int8x16_t, v: int8x16_t| {
                let (u, v) = (vreinterpretq_s64_s8(u), vreinterpretq_s64_s8(v));
                (vreinterpretq_s8_s64(vzip1q_s64(u, v)), vreinterpretq_s8_s64(vzip2q_s64(u, v)))
            };
            // acc[pair][parity]: tokens 2·pair and 2·pair + 1, even and odd blocks.
            let mut acc = [[vdupq_n_f32(0.0); 2]; 2];
            let block = |i: usize, acc: &mut [[float32x4_t; 2]; 2]| {
                let x = |r: usize| {
                    let q = xs[r][i].q.as_ptr() as *const i8;
                    // SAFETY: 32 readable bytes.
                    unsafe { (vld1q_s8(q), vld1q_s8(q.add(16))) }
                };
                let ((a0, a1), (a2, a3)) = {
                    let (r0, r1) = (x(0), x(1));
                    (pairs(r0.0, r1.0), pairs(r0.1, r1.1))
                };
                let (d0, d1) = (xs[0][i].d, xs[1][i].d);
                // SAFETY: four f32 on the stack.
                let dr = unsafe { vld1q_f32([d0, d0, d1, d1].as_ptr()) };
                for (pair, acc) in acc.iter_mut().enumerate() {
                    let (t0, t1) = (2 * pair, 2 * pair + 1);
                    let ((u0, u1), (v0, v1)) = (y(t0, i), y(t1, i));
                    let ((b0, b1), (b2, b3)) = (pairs(u0, v0), pairs(u1, v1));
                    let m = mmla(mmla(mmla(mmla(vdupq_n_s32(0), a0, b0), a1, b1), a2, b2), a3, b3);
                    let (e0, e1) = (sc[i].d[t0], sc[i].d[t1]);
                    // SAFETY: four f32 on the stack.
                    let s = vmulq_f32(dr, unsafe { vld1q_f32([e0, e1, e0, e1].as_ptr()) });
                    acc[i % 2] = vfmaq_f32(acc[i % 2], vcvtq_f32_s32(m), s);
                }
            };
            let summs = tile_walk(nb, &mut acc, block, |r, t, i| xs[r][i].m * sc[i].s[t]);
            let mut out = [[0f32; 4]; TILE_ROWS];
            for (pair, acc) in acc.iter().enumerate() {
                let mut l = [0f32; 4];
                // SAFETY: four writable f32.
                unsafe { vst1q_f32(l.as_mut_ptr(), vaddq_f32(acc[0], acc[1])) };
                for (k, v) in l.into_iter().enumerate() {
                    let (r, t) = (k / 2, 2 * pair + k % 2);
                    out[r][t] = v + summs[r][t];
                }
            }
            out
        }

        /// Q4_K / Q6_K rows into [`UnpackedK`] super-blocks ([`unpack_k`]).
        pub fn q4_k_unpack(w: &[u8], out: &mut [Unpacked]) {
            unpack_k::<false>(w, out)
        }
        pub fn q6_k_unpack(w: &[u8], out: &mut [Unpacked]) {
            unpack_k::<true>(w, out)
        }
        pub fn q4_k_tile(p: &[Unpacked], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: only reachable through tile_fn, after the CPU reported this module's
            // features; lengths are checked inside.
            unsafe { k_tile_impl::<false>(p, a) }
        }
        pub fn q6_k_tile(p: &[Unpacked], a: [&[u8]; 4]) -> [f32; 4] {
            // SAFETY: as above.
            unsafe { k_tile_impl::<true>(p, a) }
        }

        /// One unpacked Q4_K (`Q6` false) or Q6_K row against four Q8_K rows. Per token the
        /// super-block's integer sum is the single-row kernel's (`k4_kernel!`, `q6_k_impl`:
        /// the same products, 16 at a time, times the same scales) and its float operations
        /// are the single-row kernel's, in its order.
        #[target_feature(enable = $feat)]
        unsafe fn k_tile_impl<const Q6: bool>(p: &[Unpacked], a: [&[u8]; 4]) -> [f32; 4] {
            let xs = UnpackedK::view(p);
            let ys = a.map(as_blocks::<BlockQ8K>);
            assert!(ys.iter().all(|y| y.len() >= xs.len()));
            let mut sum = [0f32; 4];
            for (i, x) in xs.iter().enumerate() {
                let mut sumi = [vdupq_n_s32(0); 4];
                for g in 0..8 {
                    for h in 0..2 {
                        let q = u16x(&x.q[32 * g + 16 * h..]);
                        let q = if Q6 { signed(q, 32) } else { vreinterpretq_s8_u8(q) };
                        let scale = x.scales[g][8 * h] as i32;
                        for (t, s) in sumi.iter_mut().enumerate() {
                            *s = vmlaq_n_s32(*s, idot(vdupq_n_s32(0), q, y16(&ys[t][i], 32 * g + 16 * h)), scale);
                        }
                    }
                }
                for t in 0..4 {
                    let y = &ys[t][i];
                    let si = vaddvq_s32(sumi[t]) as f32;
                    if Q6 {
                        sum[t] += x.d * y.d * si;
                    } else {
                        let mins: i32 = (0..16).map(|l| y.bsums[l] as i32 * x.sums[l] as i32).sum();
                        sum[t] += x.d * y.d * si - x.dmin * y.d * mins as f32;
                    }
                }
            }
            sum
        }

        /// 16 activation bytes of a Q8_K block from element `o`.
        #[inline]
        #[target_feature(enable = $feat)]
        fn y16(y: &BlockQ8K, o: usize) -> int8x16_t {
            let q = &y.qs[o..o + 16];
            // SAFETY: 16 readable bytes (the slice above is bounds-checked).
            unsafe { vld1q_s8(q.as_ptr()) }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn u16x(p: &[u8]) -> uint8x16_t {
            let q = &p[..16];
            // SAFETY: 16 readable bytes (bounds-checked above).
            unsafe { vld1q_u8(q.as_ptr()) }
        }

        /// Q4_K, or with `five` Q5_K (the fifth bit of element l of group g is bit g of
        /// `qh[l]`): 8 groups of 32, each group's dot times its 6-bit scale in integers.
        macro_rules! k4_kernel {
            ($impl:ident, $block:ty, |$xb:ident| $qh:expr) => {
                #[target_feature(enable = $feat)]
                unsafe fn $impl(w: &[u8], a: &[u8]) -> f32 {
                    let (xs, ys) = (as_blocks::<$block>(w), as_blocks::<BlockQ8K>(a));
                    let mut sum = 0f32;
                    for ($xb, y) in xs.iter().zip(ys) {
                        let (sc, mn) = unpack_scale_min_k4(&$xb.scales);
                        let mut mins = 0i32;
                        for j in 0..8 {
                            mins += (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32) * mn[j] as i32;
                        }
                        let qh: Option<&[u8; 32]> = $qh;
                        let mut sumi = vdupq_n_s32(0);
                        for j in 0..4 {
                            let q = &$xb.qs[32 * j..];
                            let (qa, qb) = (u16x(q), u16x(&q[16..]));
                            let m4 = vdupq_n_u8(0xF);
                            let (mut la, mut lb) = (vandq_u8(qa, m4), vandq_u8(qb, m4));
                            let (mut ha, mut hb) = (vshrq_n_u8::<4>(qa), vshrq_n_u8::<4>(qb));
                            if let Some(qh) = qh {
                                let (qha, qhb) = (u16x(qh), u16x(&qh[16..]));
                                let (b0, b1) = (vdupq_n_u8(1 << (2 * j)), vdupq_n_u8(2 << (2 * j)));
                                let sixteen = vdupq_n_u8(16);
                                la = vorrq_u8(la, vandq_u8(vtstq_u8(qha, b0), sixteen));
                                lb = vorrq_u8(lb, vandq_u8(vtstq_u8(qhb, b0), sixteen));
                                ha = vorrq_u8(ha, vandq_u8(vtstq_u8(qha, b1), sixteen));
                                hb = vorrq_u8(hb, vandq_u8(vtstq_u8(qhb, b1), sixteen));
                            }
                            let s = vreinterpretq_s8_u8;
                            let pl = idot(idot(vdupq_n_s32(0), s(la), y16(y, 64 * j)), s(lb), y16(y, 64 * j + 16));
                            let ph = idot(idot(vdupq_n_s32(0), s(ha), y16(y, 64 * j + 32)), s(hb), y16(y, 64 * j + 48));
                            sumi = vmlaq_n_s32(sumi, pl, sc[2 * j] as i32);
                            sumi = vmlaq_n_s32(sumi, ph, sc[2 * j + 1] as i32);
                        }
                        sum += f16_to_f32($xb.d) * y.d * vaddvq_s32(sumi) as f32 - f16_to_f32($xb.dmin) * y.d * mins as f32;
                    }
                    sum
                }
            };
        }
        k4_kernel!(q4_k_impl, BlockQ4K, |x| None);
        k4_kernel!(q5_k_impl, BlockQ5K, |x| Some(&x.qh));

        /// Q6_K: two halves of 128; per 16 elements a signed 8-bit scale.
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ6K>(w), as_blocks::<BlockQ8K>(a));
            let (m4, m3) = (vdupq_n_u8(0xF), vdupq_n_u8(3));
            let mut sum = 0f32;
            for (x, y) in xs.iter().zip(ys) {
                let mut sumi = vdupq_n_s32(0);
                for n in 0..2 {
                    let (ql, qh, sc) = (&x.ql[n * 64..], &x.qh[n * 32..], &x.scales[n * 8..]);
                    for lb in 0..2 {
                        let (l0, l1, h) = (u16x(&ql[16 * lb..]), u16x(&ql[32 + 16 * lb..]), u16x(&qh[16 * lb..]));
                        let q = [
                            vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8::<4>(vandq_u8(h, m3))),
                            vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(h), m3))),
                            vorrq_u8(vshrq_n_u8::<4>(l0), vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(h), m3))),
                            vorrq_u8(vshrq_n_u8::<4>(l1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(h))),
                        ];
                        for (k, qk) in q.into_iter().enumerate() {
                            let p = idot(vdupq_n_s32(0), signed(qk, 32), y16(y, n * 128 + 16 * lb + 32 * k));
                            sumi = vmlaq_n_s32(sumi, p, sc[lb + 2 * k] as i32);
                        }
                    }
                }
                sum += f16_to_f32(x.d) * y.d * vaddvq_s32(sumi) as f32;
            }
            sum
        }

        /// Q2_K and Q3_K share a walk: two halves of 32 bytes, four 2-bit planes each, two
        /// groups of 16 per plane in activation order. `$weights` gives the group's signed
        /// weights from the plane `v` (2-bit values), the half and the plane index.
        macro_rules! k2_walk {
            ($xe:expr, $ye:expr, |$v:ident, $half:ident, $plane:ident, $g:ident| $weights:expr, $scale:expr) => {{
                let (x, y) = ($xe, $ye);
                let mut sumi = vdupq_n_s32(0);
                let mut $g = 0;
                for n in 0..2 {
                    let halves = [u16x(&x.qs[n * 32..]), u16x(&x.qs[n * 32 + 16..])];
                    for $plane in 0..4 {
                        for ($half, q) in halves.iter().enumerate() {
                            let $v = vandq_u8(vshlq_u8(*q, vdupq_n_s8(-2 * $plane as i8)), vdupq_n_u8(3));
                            let w: int8x16_t = $weights;
                            let p = idot(vdupq_n_s32(0), w, y16(y, 16 * $g));
                            sumi = vmlaq_n_s32(sumi, p, $scale);
                            $g += 1;
                        }
                    }
                }
                vaddvq_s32(sumi)
            }};
        }

        #[target_feature(enable = $feat)]
        unsafe fn q2_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ2K>(w), as_blocks::<BlockQ8K>(a));
            let mut sum = 0f32;
            for (x, y) in xs.iter().zip(ys) {
                let s = k2_walk!(x, y, |v, _half, _plane, g| vreinterpretq_s8_u8(v), (x.scales[g] & 0xF) as i32);
                let mins: i32 = x.scales.iter().zip(&y.bsums).map(|(&sc, &b)| (sc >> 4) as i32 * b as i32).sum();
                sum += f16_to_f32(x.d) * y.d * s as f32 - f16_to_f32(x.dmin) * y.d * mins as f32;
            }
            sum
        }

        #[target_feature(enable = $feat)]
        unsafe fn q3_k_impl(w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = (as_blocks::<BlockQ3K>(w), as_blocks::<BlockQ8K>(a));
            let mut sum = 0f32;
            for (x, y) in xs.iter().zip(ys) {
                let scales = crate::dequant::unpack_q3k_scales(&x.scales);
                let hm = [u16x(&x.hmask), u16x(&x.hmask[16..])];
                // Bit (4n + plane) of hmask set: the value as is; clear: 4 less.
                let s = k2_walk!(
                    x,
                    y,
                    |v, half, plane, g| {
                        let bit = vdupq_n_u8(1 << (4 * (g / 8) + plane));
                        vreinterpretq_s8_u8(vsubq_u8(v, vbicq_u8(vdupq_n_u8(4), vtstq_u8(hm[half], bit))))
                    },
                    scales[g] as i32
                );
                sum += f16_to_f32(x.d) * y.d * s as f32;
            }
            sum
        }
    };
}

/// Advanced SIMD only: byte products widened to 16 bits, summed pairwise into i32 lanes.
pub mod neon {
    arm_kernels!("neon", |acc, x, y| vpadalq_s16(vpadalq_s16(acc, vmull_s8(vget_low_s8(x), vget_low_s8(y))), vmull_high_s8(x, y)));
}

/// `OP acc.4s, x.16b, y.16b`: an instruction that adds byte products of two vector
/// registers into a third, which `std::arch` does not offer on stable Rust.
macro_rules! acc_op {
    ($op:literal, $acc:ident, $x:ident, $y:ident) => {{
        let mut acc = $acc;
        // SAFETY: the instruction reads two vector registers and adds into a third; the
        // functions of a module that uses it run only where the CPU reported its extension.
        unsafe {
            std::arch::asm!(
                concat!($op, " {a:v}.4s, {x:v}.16b, {y:v}.16b"),
                a = inout(vreg) acc,
                x = in(vreg) $x,
                y = in(vreg) $y,
                options(pure, nomem, nostack)
            )
        };
        acc
    }};
}

/// With the dot-product extension (`sdot`: four byte products into each i32 lane).
pub mod dotprod {
    arm_kernels!("neon,dotprod", |acc, x, y| acc_op!("sdot", acc, x, y));
}

/// With the dot-product extension and the 8-bit matrix multiply (`i8mm`): as [`dotprod`],
/// but the 32-element types' prompt tiles take `smmla` (a 2×8 by 8×2 byte product, two
/// weight rows against two tokens per instruction), and their single-row kernels sum each
/// block's integer dot whole before scaling it, so that both give the same bits.
pub mod i8mm {
    arm_kernels!("neon,dotprod,i8mm", |acc, x, y| acc_op!("sdot", acc, x, y), true, |acc, a, b| acc_op!("smmla", acc, a, b));
}

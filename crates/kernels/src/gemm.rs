//! Prompt tokens through an int8 matrix multiply with 16 weight rows in the lanes of one
//! AVX-512 register (the AVX-512 VNNI level) or of two AVX2 ones (the AVX2 level), for the
//! 32-element types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants Q4_K, Q5_K, Q6_K.
//!
//! The single-row and tile kernels keep eight partial sums per (row, token) and turn each
//! block's integer lanes into floats before adding them: two float operations for every 32
//! multiply-adds. Here a group of [`GROUP`] rows is repacked per call so that one 64-byte
//! line holds four consecutive values of every row ([`Panel`]), and `vpdpbusd` of that line
//! with four activation bytes broadcast adds them into the rows' lanes: a block's whole
//! integer dot product lands in one lane, and the float work is one conversion, one
//! product and one fused add per block for 16 rows at once.
//!
//! The sums therefore have their own order, the same for every lane and every batch. For
//! one (row, token), with `u` the block's unsigned weight bytes (`w + bias`, the bias 8,
//! 16 or 128 of the symmetric types and 0 for the types with a minimum) and `q`, `d`, `s`
//! the activation block's bytes, scale and `d·Σq`:
//!
//! ```text
//! acc = 0
//! for each block:  isum = Σ u·q − bias·Σq                   (exact, i32)
//!                  acc  = fma(f32(isum), dx·dy, acc)        (dx·dy rounded to f32)
//!                  acc  = fma(m, s, acc)                    (types with a minimum)
//! ```
//!
//! The AVX2 kernel has no `vpdpbusd`: `vpmaddubsw` makes pairs of products as i16, a few
//! lines' pairs are summed as i16 while they cannot saturate, and `vpmaddwd` with ones
//! widens them into the same lanes. Integer sums are exact in any order, so both kernels
//! give the same bits.
//!
//! [`products_scalar`] is that definition written out, and the tests hold both kernels to
//! it bit for bit. Prompt tokens take this path at that level, generated tokens the single-row
//! kernels (as the dense path does at AVX2), so a token's result depends on its kind and
//! never on the batch around it.

use crate::blocks::{as_blocks, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};
use crate::dot::{ActType, Isa, Unpacked};
use gguf::GgmlType;

/// Weight rows in one group: the 16 f32 lanes of an AVX-512 register.
pub const GROUP: usize = 16;
/// Most tokens one kernel call takes (its accumulators and integer sums fill 16 of the 32
/// vector registers).
pub const TOKENS: usize = 8;

/// Whether weight type `ty` has this path at `isa` (on this CPU).
pub fn supported(ty: GgmlType, isa: Isa) -> bool {
    use GgmlType::*;
    matches!(isa, Isa::Avx2 | Isa::Vnni) && has_level(isa) && matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
}

/// The activation type the path quantizes the input to for `ty`: Q8_1 (whose `s` carries
/// the minimum's term) for the types with a minimum, Q8_0 for the others.
pub fn act_type(ty: GgmlType) -> ActType {
    if has_min(ty) {
        ActType::Q8_1
    } else {
        ActType::Q8_0
    }
}

/// What is added to the unsigned weight bytes of `ty` to make them unsigned (0 for the types
/// with a minimum, whose bytes are unsigned already).
fn bias(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        GgmlType::Q8_0 => 128,
        GgmlType::Q6_K => 32,
        _ => 0,
    }
}

/// Whether this CPU runs the kernel of `isa` (checked on every call; the detection is
/// cached).
fn has_level(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        match isa {
            Isa::Avx2 => avx2,
            Isa::Vnni => avx2 && has!("avx512vnni") && has!("avx512bw") && has!("avx512vl"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

fn has_min(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K)
}

/// The 32-value sub-blocks of Q4_K / Q5_K rows as blocks of a type with a minimum: the
/// values (unsigned, with Q5_K's fifth bit as 16), the scale `d·sc` and the minimum
/// `−dmin·mn` (both exact in f32), so that `x = d·q + m` as for Q4_1.
fn k_sub_blocks(ty: GgmlType, w: &[u8], out: &mut [Unpacked]) {
    use crate::blocks::{f16_to_f32, unpack_scale_min_k4, BlockQ4K, BlockQ5K};
    let mut put = |i: usize, d: u16, dmin: u16, scales: &[u8; 12], qs: &[u8; 128], qh: Option<&[u8; 32]>| {
        let (sc, mn) = unpack_scale_min_k4(scales);
        let (d, dmin) = (f16_to_f32(d), f16_to_f32(dmin));
        for j in 0..4 {
            let (lo, hi) = (&mut [0u8; QK], &mut [0u8; QK]);
            for l in 0..QK {
                let h = qh.map_or(0, |qh| qh[l] >> (2 * j));
                lo[l] = (qs[32 * j + l] & 0xF) | (h & 1) << 4;
                hi[l] = (qs[32 * j + l] >> 4) | (h >> 1 & 1) << 4;
            }
            out[8 * i + 2 * j] = Unpacked { q: *lo, d: d * sc[2 * j] as f32, m: -(dmin * mn[2 * j] as f32) };
            out[8 * i + 2 * j + 1] = Unpacked { q: *hi, d: d * sc[2 * j + 1] as f32, m: -(dmin * mn[2 * j + 1] as f32) };
        }
    };
    match ty {
        GgmlType::Q4_K => {
            for (i, b) in as_blocks::<BlockQ4K>(w).iter().enumerate() {
                put(i, b.d, b.dmin, &b.scales, &b.qs, None);
            }
        }
        GgmlType::Q5_K => {
            for (i, b) in as_blocks::<BlockQ5K>(w).iter().enumerate() {
                put(i, b.d, b.dmin, &b.scales, &b.qs, Some(&b.qh));
            }
        }
        _ => unreachable!("only the k-quants with a minimum"),
    }
}

/// Whether `ty`'s 32 values have a scale per half (Q6_K's 16-value groups).
fn halves(ty: GgmlType) -> bool {
    ty == GgmlType::Q6_K
}

/// The 32-value sub-blocks of Q6_K rows: the values (unsigned, `q + 32`), the first half's
/// scale `d·sc` in `d` and the second half's in `m` (both exact in f32).
fn q6_k_sub_blocks(w: &[u8], out: &mut [Unpacked]) {
    use crate::blocks::{f16_to_f32, BlockQ6K};
    for (i, b) in as_blocks::<BlockQ6K>(w).iter().enumerate() {
        let d = f16_to_f32(b.d);
        for n in 0..2 {
            let (ql, qh, sc) = (&b.ql[64 * n..64 * n + 64], &b.qh[32 * n..32 * n + 32], &b.scales[8 * n..8 * n + 8]);
            for sub in 0..4 {
                // ggml's order: ql[l] low, ql[l + 32] low, ql[l] high, ql[l + 32] high.
                let q: [u8; QK] = std::array::from_fn(|l| {
                    let byte = ql[l + 32 * (sub % 2)];
                    (if sub < 2 { byte & 0xF } else { byte >> 4 }) | (qh[l] >> (2 * sub) & 3) << 4
                });
                out[8 * i + 4 * n + sub] = Unpacked { q, d: d * sc[2 * sub] as f32, m: d * sc[2 * sub + 1] as f32 };
            }
        }
    }
}

/// One activation block as the kernel reads it: its scale, `d·Σq` (Q8_1) and `Σq`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ActEntry {
    pub d: f32,
    pub s: f32,
    pub sum: i32,
    /// Σq of the first 16 values (for the types with a scale per half).
    pub half: i32,
}

/// The entries of activation rows `rows` (Q8_0 or Q8_1 blocks, `arb` bytes a row), block
/// after block, row after row, into `out` (`rows.len() / arb * blocks` entries).
pub fn act_entries(at: ActType, rows: &[u8], arb: usize, out: &mut [ActEntry]) {
    let f = crate::blocks::f16_to_f32;
    let sum = |q: &[i8]| q.iter().map(|&q| q as i32).sum();
    match at {
        ActType::Q8_0 => {
            for (o, b) in out.iter_mut().zip(rows.chunks_exact(arb).flat_map(as_blocks::<BlockQ8_0>)) {
                *o = ActEntry { d: f(b.d), s: 0.0, sum: sum(&b.qs), half: sum(&b.qs[..QK / 2]) };
            }
        }
        ActType::Q8_1 => {
            for (o, b) in out.iter_mut().zip(rows.chunks_exact(arb).flat_map(as_blocks::<BlockQ8_1>)) {
                *o = ActEntry { d: f(b.d), s: f(b.s), sum: sum(&b.qs), half: sum(&b.qs[..QK / 2]) };
            }
        }
        _ => unreachable!("the 32-element types read Q8_0 or Q8_1 activations"),
    }
}

/// A 64-byte line: four consecutive values of each of the group's 16 rows.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Line(pub [u32; GROUP]);

/// A group of [`GROUP`] weight rows repacked for the kernel: per block, eight [`Line`]s
/// (`q[8·b + k].0[r]` holds row r's unsigned values 4k..4k+4 of block b), the rows' scales
/// `d[16·b + r]` and minima `m[16·b + r]`. Rows past the matrix are zero.
#[derive(Default)]
pub struct Panel {
    pub q: Vec<Line>,
    pub d: Vec<f32>,
    pub m: Vec<f32>,
    scratch: Vec<Unpacked>,
}

impl Panel {
    /// Repack `rows` (whole rows of `ty`, at most [`GROUP`], back to back) of `blocks`
    /// blocks of 32 values each (the k-quants' sub-blocks) for the kernel of `isa`.
    pub fn pack(&mut self, ty: GgmlType, isa: Isa, rows: &[u8], blocks: usize) {
        assert!(supported(ty, isa), "no int8 prompt path for {ty:?} at {}", isa.as_str());
        let row_bytes = ty.row_bytes(blocks * QK).expect("whole blocks");
        let n = rows.len() / row_bytes;
        assert!(n <= GROUP && n * row_bytes == rows.len(), "at most a group of whole rows");
        if self.scratch.len() < GROUP * blocks {
            self.scratch.resize(GROUP * blocks, Unpacked::default());
        }
        let scratch = &mut self.scratch[..n * blocks];
        match ty {
            GgmlType::Q4_K | GgmlType::Q5_K => k_sub_blocks(ty, rows, scratch),
            GgmlType::Q6_K => q6_k_sub_blocks(rows, scratch),
            _ => (crate::dot::tile_fn(ty, isa).expect("the 32-element types have an unpacker").unpack)(rows, scratch),
        }
        self.scratch[n * blocks..GROUP * blocks].fill(Unpacked::default());
        self.q.resize(8 * blocks, Line::default());
        self.d.resize(GROUP * blocks, 0.0);
        self.m.resize(GROUP * blocks, 0.0);
        for b in 0..blocks {
            for r in 0..GROUP {
                let u = &self.scratch[r * blocks + b];
                self.d[GROUP * b + r] = u.d;
                self.m[GROUP * b + r] = u.m;
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (scratch, q) = (&self.scratch[..GROUP * blocks], &mut self.q[..8 * blocks]);
            // SAFETY: the level was checked above; the scratch holds GROUP rows of `blocks`.
            unsafe {
                if isa == Isa::Vnni {
                    x86::transpose(scratch, blocks, q)
                } else {
                    x86::transpose_avx2(scratch, blocks, q)
                }
            }
        }
    }
}

/// The activations of one call as the kernel reads them: the quantized rows (`arb` bytes
/// each, Q8_0 or Q8_1) and their [`ActEntry`]s, `blocks` per row.
#[derive(Clone, Copy)]
pub struct Acts<'a> {
    pub at: ActType,
    pub bytes: &'a [u8],
    pub arb: usize,
    pub entries: &'a [ActEntry],
    pub blocks: usize,
}

/// `out[t][r]` = the products of the panel's rows with activation rows `t0..t0 + nt`
/// (`nt` ≤ [`TOKENS`]), in this module's order, through the kernel of `isa` (the panel
/// packed for it).
pub fn products(ty: GgmlType, isa: Isa, p: &Panel, a: &Acts, t0: usize, nt: usize, out: &mut [[f32; GROUP]; TOKENS]) {
    assert!(a.at == act_type(ty), "{ty:?} reads {:?} activations", act_type(ty));
    assert!(nt <= TOKENS && (t0 + nt) * a.arb <= a.bytes.len() && (t0 + nt) * a.blocks <= a.entries.len());
    assert!(p.q.len() >= 8 * a.blocks && p.d.len() >= GROUP * a.blocks && p.m.len() >= GROUP * a.blocks);
    assert!(supported(ty, isa), "no int8 prompt path for {ty:?} at {}", isa.as_str());
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx2 {
            // At most AVX2_TOKENS at a time: each token's sums and accumulators take two of
            // the 16 vector registers.
            for c0 in (0..nt).step_by(AVX2_TOKENS) {
                let n = AVX2_TOKENS.min(nt - c0);
                // SAFETY: AVX2 and FMA were checked above; the lengths above bound every read.
                unsafe { x86::products_avx2_for(ty, n, p, a, t0 + c0, &mut out[c0..c0 + n]) };
            }
            return;
        }
        macro_rules! go {
            ($($n:literal)*) => {
                match (nt, has_min(ty), halves(ty)) {
                    $(
                        // SAFETY: AVX-512 VNNI was checked above; the lengths above bound
                        // every read.
                        ($n, false, false) => unsafe { x86::products::<$n, false, false>(p, a, bias(ty), t0, out) },
                        ($n, true, _) => unsafe { x86::products::<$n, true, false>(p, a, 0, t0, out) },
                        ($n, false, true) => unsafe { x86::products::<$n, false, true>(p, a, bias(ty), t0, out) },
                    )*
                    _ => {}
                }
            };
        }
        go!(1 2 3 4 5 6 7 8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, a, t0, out);
}

/// Tokens the AVX2 kernel takes at once.
#[cfg(target_arch = "x86_64")]
const AVX2_TOKENS: usize = 4;

/// The product of one weight row (`ty`) with one activation row (Q8_0 for the symmetric
/// types, Q8_1 for those with a minimum) in this module's order: the definition the kernel
/// is held to.
pub fn products_scalar(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    let f = crate::blocks::f16_to_f32;
    // Each block's unsigned values, scale and minimum.
    let blocks: Vec<([u8; QK], f32, f32)> = match ty {
        GgmlType::Q4_0 => as_blocks::<BlockQ4_0>(w).iter().map(|b| (std::array::from_fn(|j| nibble(&b.qs, j)), f(b.d), 0.0)).collect(),
        GgmlType::Q4_1 => as_blocks::<BlockQ4_1>(w).iter().map(|b| (std::array::from_fn(|j| nibble(&b.qs, j)), f(b.d), f(b.m))).collect(),
        GgmlType::Q5_0 => as_blocks::<BlockQ5_0>(w).iter().map(|b| (std::array::from_fn(|j| nibble(&b.qs, j) | fifth(b.qh, j)), f(b.d), 0.0)).collect(),
        GgmlType::Q5_1 => as_blocks::<BlockQ5_1>(w).iter().map(|b| (std::array::from_fn(|j| nibble(&b.qs, j) | fifth(b.qh, j)), f(b.d), f(b.m))).collect(),
        GgmlType::Q8_0 => as_blocks::<BlockQ8_0>(w).iter().map(|b| (b.qs.map(|q| (q as u8) ^ 0x80), f(b.d), 0.0)).collect(),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            let mut u = vec![Unpacked::default(); w.len() / ty.block_bytes() * 8];
            if halves(ty) {
                q6_k_sub_blocks(w, &mut u);
            } else {
                k_sub_blocks(ty, w, &mut u);
            }
            u.iter().map(|u| (u.q, u.d, u.m)).collect()
        }
        _ => panic!("no int8 prompt path for {ty:?}"),
    };
    let (acts, min): (Vec<([i8; QK], f32, f32)>, bool) = if has_min(ty) {
        (as_blocks::<BlockQ8_1>(a).iter().map(|b| (b.qs, f(b.d), f(b.s))).collect(), true)
    } else {
        (as_blocks::<BlockQ8_0>(a).iter().map(|b| (b.qs, f(b.d), 0.0)).collect(), false)
    };
    // Σ u·q − bias·Σq over values lo..hi of a block.
    let isum = |u: &[u8; QK], q: &[i8; QK], lo: usize, hi: usize| -> i32 {
        (lo..hi).map(|j| u[j] as i32 * q[j] as i32).sum::<i32>() - bias(ty) * (lo..hi).map(|j| q[j] as i32).sum::<i32>()
    };
    let mut acc = 0.0f32;
    for ((u, dx, m), (q, dy, s)) in blocks.iter().zip(&acts) {
        if halves(ty) {
            // `m` is the second half's scale.
            acc = (isum(u, q, 0, QK / 2) as f32).mul_add(dx * dy, acc);
            acc = (isum(u, q, QK / 2, QK) as f32).mul_add(m * dy, acc);
        } else {
            acc = (isum(u, q, 0, QK) as f32).mul_add(dx * dy, acc);
        }
        if min {
            acc = m.mul_add(*s, acc);
        }
    }
    acc
}

/// Element j of a block's nibbles: the low nibble of `qs[j]` for j < 16, else the high
/// nibble of `qs[j - 16]`.
fn nibble(qs: &[u8; 16], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0xF
    } else {
        qs[j - 16] >> 4
    }
}

/// Element j's fifth bit (bit j of `qh`) as 16.
fn fifth(qh: [u8; 4], j: usize) -> u8 {
    ((u32::from_le_bytes(qh) >> j & 1) << 4) as u8
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Each block of 16 unpacked rows (`scratch[r · blocks + b]`) into its eight lines:
    /// the rows' 32 bytes as 8×16 dwords transposed in registers (rows j and j + 8 side by
    /// side in one register, then the usual 8×8 transpose in each half).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn transpose(scratch: &[Unpacked], blocks: usize, q: &mut [Line]) {
        assert!(scratch.len() == GROUP * blocks && q.len() == 8 * blocks);
        const LO: [i64; 8] = [0, 1, 8, 9, 4, 5, 12, 13];
        const HI: [i64; 8] = [2, 3, 10, 11, 6, 7, 14, 15];
        // SAFETY: 64 bytes each.
        let (lo, hi) = unsafe { (_mm512_loadu_si512(LO.as_ptr() as *const _), _mm512_loadu_si512(HI.as_ptr() as *const _)) };
        for b in 0..blocks {
            // SAFETY: `q` of an Unpacked is 32 bytes, 32-aligned.
            let row = |r: usize| unsafe { _mm256_load_si256(scratch[r * blocks + b].q.as_ptr() as *const __m256i) };
            // z[j]: row j's dwords 0..8, then row j + 8's.
            let z: [__m512i; 8] = std::array::from_fn(|j| _mm512_inserti64x4(_mm512_castsi256_si512(row(j)), row(j + 8), 1));
            // Per 128-bit lane (dwords c, c + 1, c + 2, c + 3 of four rows after these):
            let t: [__m512i; 8] = std::array::from_fn(|i| {
                let (x, y) = (z[i / 2 * 2], z[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_epi32(x, y)
                } else {
                    _mm512_unpackhi_epi32(x, y)
                }
            });
            // u[4h + c]: dword c (lanes 0, 2) and c + 4 (lanes 1, 3) of rows 4h..4h + 4.
            let u: [__m512i; 8] = std::array::from_fn(|i| {
                let (h, c) = (i / 4, i % 4);
                let (x, y) = (t[4 * h + c / 2], t[4 * h + 2 + c / 2]);
                if c % 2 == 0 {
                    _mm512_unpacklo_epi64(x, y)
                } else {
                    _mm512_unpackhi_epi64(x, y)
                }
            });
            for c in 0..4 {
                let line = q[8 * b..].as_mut_ptr() as *mut __m512i;
                // SAFETY: 8 lines per block; Line is 64-aligned.
                unsafe {
                    _mm512_store_si512(line.add(c), _mm512_permutex2var_epi64(u[c], lo, u[4 + c]));
                    _mm512_store_si512(line.add(c + 4), _mm512_permutex2var_epi64(u[c], hi, u[4 + c]));
                }
            }
        }
    }

    /// [`transpose`] with AVX2: each half of the group (rows 0..8, 8..16) as an 8×8 dword
    /// transpose into the lines' first and second 32 bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_avx2(scratch: &[Unpacked], blocks: usize, q: &mut [Line]) {
        assert!(scratch.len() == GROUP * blocks && q.len() == 8 * blocks);
        for b in 0..blocks {
            for h in 0..2 {
                // SAFETY: `q` of an Unpacked is 32 bytes, 32-aligned.
                let r: [__m256i; 8] = std::array::from_fn(|j| unsafe { _mm256_load_si256(scratch[(8 * h + j) * blocks + b].q.as_ptr() as *const __m256i) });
                // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved, dwords 0, 1 | 4, 5 and 2, 3 | 6, 7.
                let t: [__m256i; 8] = std::array::from_fn(|i| {
                    let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                    if i % 2 == 0 {
                        _mm256_unpacklo_epi32(x, y)
                    } else {
                        _mm256_unpackhi_epi32(x, y)
                    }
                });
                // u[4g + c]: dword c (low lane) and c + 4 (high lane) of rows 4g..4g + 4.
                let u: [__m256i; 8] = std::array::from_fn(|i| {
                    let (g, c) = (i / 4, i % 4);
                    let (x, y) = (t[4 * g + c / 2], t[4 * g + 2 + c / 2]);
                    if c % 2 == 0 {
                        _mm256_unpacklo_epi64(x, y)
                    } else {
                        _mm256_unpackhi_epi64(x, y)
                    }
                });
                let lines = q[8 * b..].as_mut_ptr() as *mut u8;
                for c in 0..4 {
                    // SAFETY: 8 lines of 64 bytes per block, 64-aligned; half h is 32 bytes
                    // at offset 32·h.
                    unsafe {
                        _mm256_store_si256(lines.add(64 * c + 32 * h) as *mut __m256i, _mm256_permute2x128_si256(u[c], u[4 + c], 0x20));
                        _mm256_store_si256(lines.add(64 * (c + 4) + 32 * h) as *mut __m256i, _mm256_permute2x128_si256(u[c], u[4 + c], 0x31));
                    }
                }
            }
        }
    }

    /// [`products_avx2`] for weight type `ty` and `n` (≤ [`AVX2_TOKENS`]) tokens, into
    /// `out[..n]`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn products_avx2_for(ty: GgmlType, n: usize, p: &Panel, a: &Acts, t0: usize, out: &mut [[f32; GROUP]]) {
        use GgmlType::*;
        let bias = bias(ty);
        macro_rules! go {
            ($min:literal, $halves:literal, $signed:literal, $run:literal) => {
                // SAFETY: as this function's.
                unsafe {
                    match n {
                        1 => products_avx2::<1, $min, $halves, $signed, $run>(p, a, bias, t0, out),
                        2 => products_avx2::<2, $min, $halves, $signed, $run>(p, a, bias, t0, out),
                        3 => products_avx2::<3, $min, $halves, $signed, $run>(p, a, bias, t0, out),
                        _ => products_avx2::<4, $min, $halves, $signed, $run>(p, a, bias, t0, out),
                    }
                }
            };
        }
        // RUN: the lines whose 16-bit products are summed before widening, as many as the
        // type's largest value allows without saturating (2·RUN·max·128 < 2¹⁵).
        match ty {
            Q4_0 => go!(false, false, false, 8),
            Q4_1 | Q4_K => go!(true, false, false, 8),
            Q5_0 => go!(false, false, false, 4),
            Q5_1 | Q5_K => go!(true, false, false, 4),
            Q6_K => go!(false, true, false, 2),
            Q8_0 => go!(false, false, true, 1),
            _ => unreachable!("no int8 prompt path for {ty:?}"),
        }
    }

    /// The AVX2 kernel: the group's two halves of 8 rows one after the other, each line's
    /// half `vpmaddubsw` with four bytes of a token broadcast (pairs of products as i16),
    /// RUN lines summed as i16, then `vpmaddwd` with ones into the token's i32 sums; the
    /// float work per block as in [`products`]. Q8_0 (`SIGNED`), whose unsigned bytes reach
    /// 255, takes the signed values `u − 128` as `|w|` times the activation with `w`'s sign,
    /// so no product pair passes 2¹⁵ (the activations are within ±127) and its sums start
    /// from 0 instead of `−128·Σq`: the same integers.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // b indexes the panel, the rows and the entries
    unsafe fn products_avx2<const N: usize, const MIN: bool, const HALVES: bool, const SIGNED: bool, const RUN: usize>(
        p: &Panel,
        a: &Acts,
        bias: i32,
        t0: usize,
        out: &mut [[f32; GROUP]],
    ) {
        assert!(out.len() >= N);
        let qoff = if MIN { 4 } else { 2 };
        let bb = if MIN { std::mem::size_of::<BlockQ8_1>() } else { std::mem::size_of::<BlockQ8_0>() };
        let rows: [*const u8; N] = std::array::from_fn(|t| a.bytes[(t0 + t) * a.arb..].as_ptr());
        let entries: [&[ActEntry]; N] = std::array::from_fn(|t| &a.entries[(t0 + t) * a.blocks..(t0 + t + 1) * a.blocks]);
        let (ones, flip) = (_mm256_set1_epi16(1), _mm256_set1_epi8(-128));
        let start = |x: i32| if SIGNED { _mm256_setzero_si256() } else { _mm256_set1_epi32(-bias * x) };
        for h in 0..2 {
            let mut acc = [_mm256_setzero_ps(); N];
            for b in 0..a.blocks {
                let first = |e: &ActEntry| if HALVES { e.half } else { e.sum };
                let mut isum: [__m256i; N] = std::array::from_fn(|t| start(first(&entries[t][b])));
                let mut isum2: [__m256i; N] =
                    std::array::from_fn(|t| if HALVES { start(entries[t][b].sum - entries[t][b].half) } else { _mm256_setzero_si256() });
                // SAFETY: 8 lines per block, `blocks` blocks (checked by the caller).
                let lines = unsafe { (p.q[8 * b..].as_ptr() as *const u8).add(32 * h) };
                for k0 in (0..8).step_by(RUN) {
                    let w: [__m256i; RUN] = std::array::from_fn(|j| {
                        // SAFETY: half h of line k0 + j of block b, 32-aligned.
                        let w = unsafe { _mm256_load_si256(lines.add(64 * (k0 + j)) as *const __m256i) };
                        if SIGNED {
                            _mm256_xor_si256(w, flip)
                        } else {
                            w
                        }
                    });
                    let wabs: [__m256i; RUN] = std::array::from_fn(|j| if SIGNED { _mm256_abs_epi8(w[j]) } else { w[j] });
                    for t in 0..N {
                        let mut s = _mm256_setzero_si256();
                        for j in 0..RUN {
                            // SAFETY: block b of row t0 + t, bytes 4(k0 + j)..+4 of its quants.
                            let y = _mm256_set1_epi32(unsafe { std::ptr::read_unaligned(rows[t].add(b * bb + qoff + 4 * (k0 + j)) as *const i32) });
                            let m = if SIGNED { _mm256_maddubs_epi16(wabs[j], _mm256_sign_epi8(y, w[j])) } else { _mm256_maddubs_epi16(w[j], y) };
                            s = if j == 0 { m } else { _mm256_add_epi16(s, m) };
                        }
                        let s = _mm256_madd_epi16(s, ones);
                        if HALVES && k0 >= 4 {
                            isum2[t] = _mm256_add_epi32(isum2[t], s);
                        } else {
                            isum[t] = _mm256_add_epi32(isum[t], s);
                        }
                    }
                }
                // SAFETY: 16 scales (and minima) per block; half h is 8 of them.
                let dx = unsafe { _mm256_loadu_ps(p.d[GROUP * b + 8 * h..].as_ptr()) };
                let mx = if MIN || HALVES { unsafe { _mm256_loadu_ps(p.m[GROUP * b + 8 * h..].as_ptr()) } } else { _mm256_setzero_ps() };
                for t in 0..N {
                    let e = entries[t][b];
                    let dy = _mm256_set1_ps(e.d);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dx, dy), acc[t]);
                    if HALVES {
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum2[t]), _mm256_mul_ps(mx, dy), acc[t]);
                    }
                    if MIN {
                        acc[t] = _mm256_fmadd_ps(mx, _mm256_set1_ps(e.s), acc[t]);
                    }
                }
            }
            for t in 0..N {
                // SAFETY: 8 f32 of a row of 16.
                unsafe { _mm256_storeu_ps(out[t][8 * h..].as_mut_ptr(), acc[t]) };
            }
        }
    }

    /// Tokens t0..t0 + N against the panel: per block, eight lines of weights, each
    /// `vpdpbusd` with four bytes of every token broadcast, into one integer sum per token
    /// started from `−bias·Σq`; then per token one conversion, the scales' product and one
    /// fused add (and the minimum's, with `MIN`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
    #[allow(clippy::needless_range_loop)] // b indexes the panel, the rows and the entries
    pub(super) unsafe fn products<const N: usize, const MIN: bool, const HALVES: bool>(
        p: &Panel,
        a: &Acts,
        bias: i32,
        t0: usize,
        out: &mut [[f32; GROUP]; TOKENS],
    ) {
        let qoff = if MIN { 4 } else { 2 }; // the quants' offset in a Q8_1 / Q8_0 block
        let bb = if MIN { std::mem::size_of::<BlockQ8_1>() } else { std::mem::size_of::<BlockQ8_0>() };
        let rows: [*const u8; N] = std::array::from_fn(|t| a.bytes[(t0 + t) * a.arb..].as_ptr());
        let entries: [&[ActEntry]; N] = std::array::from_fn(|t| &a.entries[(t0 + t) * a.blocks..(t0 + t + 1) * a.blocks]);
        let mut acc = [_mm512_setzero_ps(); N];
        for b in 0..a.blocks {
            // With HALVES, `isum` takes the first 16 values and `isum2` the rest.
            let first = |e: &ActEntry| if HALVES { e.half } else { e.sum };
            let mut isum: [__m512i; N] = std::array::from_fn(|t| _mm512_set1_epi32(-bias * first(&entries[t][b])));
            let mut isum2: [__m512i; N] =
                std::array::from_fn(|t| if HALVES { _mm512_set1_epi32(-bias * (entries[t][b].sum - entries[t][b].half)) } else { _mm512_setzero_si512() });
            let lines = p.q[8 * b..].as_ptr() as *const __m512i;
            for k in 0..8 {
                // SAFETY: 8 lines per block, `blocks` blocks (checked by the caller).
                let w = unsafe { _mm512_load_si512(lines.add(k)) };
                for t in 0..N {
                    // SAFETY: block b of row t0 + t, bytes 4k..4k + 4 of its quants.
                    let y = _mm512_set1_epi32(unsafe { std::ptr::read_unaligned(rows[t].add(b * bb + qoff + 4 * k) as *const i32) });
                    if HALVES && k >= 4 {
                        isum2[t] = _mm512_dpbusd_epi32(isum2[t], w, y);
                    } else {
                        isum[t] = _mm512_dpbusd_epi32(isum[t], w, y);
                    }
                }
            }
            // SAFETY: 16 scales (and minima) per block.
            let dx = unsafe { _mm512_loadu_ps(p.d[GROUP * b..].as_ptr()) };
            // The minima, or with HALVES the second half's scales.
            let mx = if MIN || HALVES { unsafe { _mm512_loadu_ps(p.m[GROUP * b..].as_ptr()) } } else { _mm512_setzero_ps() };
            for t in 0..N {
                let e = entries[t][b];
                let dy = _mm512_set1_ps(e.d);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dx, dy), acc[t]);
                if HALVES {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum2[t]), _mm512_mul_ps(mx, dy), acc[t]);
                }
                if MIN {
                    acc[t] = _mm512_fmadd_ps(mx, _mm512_set1_ps(e.s), acc[t]);
                }
            }
        }
        for t in 0..N {
            // SAFETY: 16 f32.
            unsafe { _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::tests::{random_row, Lcg};

    /// The kernel gives every (row, token) the bits of [`products_scalar`], for every type,
    /// a partial group and every token count.
    #[test]
    fn kernel_is_the_scalar_definition_bit_for_bit() {
        use GgmlType::*;
        let levels: Vec<Isa> = [Isa::Avx2, Isa::Vnni].into_iter().filter(|&isa| supported(Q4_0, isa)).collect();
        if levels.is_empty() {
            eprintln!("no AVX2 on this CPU: the int8 prompt path is not used here");
            return;
        }
        let mut rng = Lcg(7);
        let (cols, n) = (512, 11);
        for (ty, isa) in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K].into_iter().flat_map(|ty| levels.iter().map(move |&isa| (ty, isa))) {
            let at = act_type(ty);
            let blocks = cols / QK;
            let arb = at.row_bytes(cols);
            let mut abytes = vec![0u8; n * arb];
            for t in 0..n {
                let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
                at.quantize(&x, &mut abytes[t * arb..(t + 1) * arb]);
            }
            let mut entries = vec![ActEntry::default(); n * blocks];
            act_entries(at, &abytes, arb, &mut entries);
            let acts = Acts { at, bytes: &abytes, arb, entries: &entries, blocks };
            let nrows = 13; // a partial group
            let w: Vec<u8> = (0..nrows).flat_map(|_| random_row(ty, cols, &mut rng)).collect();
            let rb = w.len() / nrows;
            let mut panel = Panel::default();
            panel.pack(ty, isa, &w, blocks);
            for nt in 1..=TOKENS {
                for t0 in [0, n - nt] {
                    let mut out = [[f32::NAN; GROUP]; TOKENS];
                    products(ty, isa, &panel, &acts, t0, nt, &mut out);
                    for t in 0..nt {
                        for r in 0..nrows {
                            let want = products_scalar(ty, &w[r * rb..(r + 1) * rb], &abytes[(t0 + t) * arb..(t0 + t + 1) * arb]);
                            assert_eq!(out[t][r].to_bits(), want.to_bits(), "{ty:?} at {} row {r} token {} of {nt}", isa.as_str(), t0 + t);
                        }
                        assert!(out[t][nrows..].iter().all(|&v| v == 0.0), "{ty:?} at {}: padding rows are zero", isa.as_str());
                    }
                }
            }
        }
    }

    /// The definition is the dot product it stands for: within float rounding of the
    /// dequantized weights times the dequantized activations.
    #[test]
    fn scalar_definition_is_the_dot_product() {
        use GgmlType::*;
        let mut rng = Lcg(9);
        let cols = 256;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K] {
            let at = act_type(ty);
            let w = random_row(ty, cols, &mut rng);
            let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
            let mut a = vec![0u8; at.row_bytes(cols)];
            at.quantize(&x, &mut a);
            let mut wf = vec![0.0; cols];
            crate::dequant::dequantize_row(ty, &w, &mut wf);
            let mut af = vec![0.0; cols];
            let abl = if has_min(ty) { 36 } else { 34 };
            for (b, blk) in a.chunks_exact(abl).enumerate() {
                let d = crate::blocks::f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                for j in 0..QK {
                    af[b * QK + j] = d * (blk[abl - QK + j] as i8) as f32;
                }
            }
            let want: f64 = wf.iter().zip(&af).map(|(&w, &a)| w as f64 * a as f64).sum();
            let got = products_scalar(ty, &w, &a) as f64;
            let scale: f64 = wf.iter().zip(&af).map(|(&w, &a)| (w as f64 * a as f64).abs()).sum();
            // Q8_1's `s` is d·Σq rounded to f16, the only term not exact up to f32 rounding.
            assert!((got - want).abs() <= 2e-3 * scale + 1e-6, "{ty:?}: {got} vs {want}");
        }
    }
}

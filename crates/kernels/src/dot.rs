//! Dot products of one weight row with one activation row, per weight type.
//!
//! Each weight type names the format its activations are quantized to ([`ActType`]), as in
//! ggml (`vec_dot_type`): Q4_1/Q5_1 take Q8_1, the other 32-blocks take Q8_0, the k-quants
//! take Q8_K. Those pairs are integer dot products; the float types (F32, F16, BF16) are
//! converted in 256-element chunks and dotted with f32 activations.
//!
//! [`dot_fn`] picks the kernel for the running CPU once; every SIMD kernel has the scalar
//! twin in [`scalar`] and a test comparing them on random blocks.

use crate::blocks::*;
use crate::dequant::dequantize_row;
use crate::quantize::{quantize_q8_0, quantize_q8_1, quantize_q8_k};
use gguf::GgmlType;

pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
pub use x86::{avx2, avxvnni, vnni};
#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "aarch64")]
pub use arm::{dotprod, i8mm, neon};

/// The format of the activation operand of a weight type's dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActType {
    F32,
    Q8_0,
    Q8_1,
    Q8K,
}

impl ActType {
    pub fn of(ty: GgmlType) -> ActType {
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 => ActType::Q8_0,
            Q4_1 | Q5_1 => ActType::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => ActType::Q8K,
            F32 | F16 | BF16 | Q8_1 | Q8_K => ActType::F32,
        }
    }

    /// Bytes of an activation row of `n` elements (`n` a multiple of the block length).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            ActType::F32 => n * 4,
            ActType::Q8_0 => n / QK * std::mem::size_of::<BlockQ8_0>(),
            ActType::Q8_1 => n / QK * std::mem::size_of::<BlockQ8_1>(),
            ActType::Q8K => n / QK_K * std::mem::size_of::<BlockQ8K>(),
        }
    }

    /// Quantize (or copy) an f32 row into `out` (`row_bytes(x.len())` bytes, 4-aligned).
    pub fn quantize(self, x: &[f32], out: &mut [u8]) {
        fn view<T: Block>(out: &mut [u8]) -> &mut [T] {
            let n = out.len() / std::mem::size_of::<T>();
            assert!((out.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()));
            // SAFETY: aligned (checked), in bounds, T is plain old data.
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut T, n) }
        }
        match self {
            ActType::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(x) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            #[cfg(target_arch = "x86_64")]
            ActType::Q8_0 | ActType::Q8_1 if Isa::detect_cached() != Isa::Scalar => avx2::quantize_q8(x, out, self == ActType::Q8_1),
            ActType::Q8_0 => quantize_q8_0(x, view(out)),
            ActType::Q8_1 => quantize_q8_1(x, view(out)),
            ActType::Q8K => quantize_q8_k(x, view(out)),
        }
    }
}

/// `dot(weight_row_bytes, activation_row_bytes) -> f32`.
pub type DotFn = fn(&[u8], &[u8]) -> f32;

/// Four dot products of one weight row with four activation rows, each bit for bit what
/// the [`DotFn`] of the same type gives for that row.
pub type Dot4Fn = fn(&[u8], [&[u8]; 4]) -> [f32; 4];

/// The four-row kernel for `ty` on `isa`, where one exists.
pub fn dot4_fn(ty: GgmlType, isa: Isa) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! pick {
            ($m:ident) => {
                match ty {
                    GgmlType::Q4_0 => Some($m::q4_0_x4 as Dot4Fn),
                    GgmlType::Q5_0 => Some($m::q5_0_x4),
                    GgmlType::Q8_0 => Some($m::q8_0_x4),
                    GgmlType::Q4_K => Some($m::q4_k_x4),
                    GgmlType::Q6_K => Some($m::q6_k_x4),
                    GgmlType::F32 => Some($m::f32_x4),
                    GgmlType::F16 => Some($m::f16_x4),
                    GgmlType::BF16 => Some($m::bf16_x4),
                    _ => None,
                }
            };
        }
        match isa {
            Isa::Avx2 => return pick!(avx2),
            Isa::AvxVnni => return pick!(avxvnni),
            Isa::Vnni => return pick!(vnni),
            _ => {}
        }
    }
    let _ = (ty, isa);
    None
}

/// One weight block of a 32-element type unpacked for the prompt tiles: its values as the
/// level's tiles take them (x86: unsigned bytes, `x + bias` for the symmetric types, `x` for
/// those with a minimum; aarch64: signed bytes) and its scales as f32. A matrix's rows are unpacked once per call ([`TileKernel::unpack`]) and
/// then read by every group of tokens, instead of each group unpacking them again.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub struct Unpacked {
    pub q: [u8; 32],
    pub d: f32,
    /// The block's minimum (Q4_1, Q5_1); 0 for the symmetric types.
    pub m: f32,
}

/// A k-quant super-block (Q4_K, Q6_K) unpacked for the prompt tiles. It takes
/// [`UnpackedK::SLOTS`] consecutive [`Unpacked`] of a panel (one panel type for every tile).
/// `q`: the 256 values as unsigned bytes in element order (Q6_K's still carry its +32);
/// `scales[g]`: 32-value group g's scales as `vpmaddwd`'s i16 operand (Q4_K: one scale
/// repeated; Q6_K: the two 16-value groups' scales, eight lanes each); `sums`: what the
/// activation's 16 `bsums` are weighted by (Q4_K: each 16-value group's minimum; Q6_K: its
/// scale); `d` and `dmin` as f32.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub struct UnpackedK {
    pub q: [u8; 256],
    pub scales: [[i16; 16]; 8],
    pub sums: [i16; 16],
    pub d: f32,
    pub dmin: f32,
}

impl UnpackedK {
    /// [`Unpacked`] slots one super-block takes.
    pub const SLOTS: usize = std::mem::size_of::<UnpackedK>() / std::mem::size_of::<Unpacked>();

    /// A panel's slots as super-blocks.
    pub fn view(p: &[Unpacked]) -> &[UnpackedK] {
        assert!(p.len().is_multiple_of(Self::SLOTS), "a panel of whole super-blocks");
        // SAFETY: both types are plain old data, UnpackedK's size is a whole number of
        // slots and its alignment is Unpacked's (asserted below), so every SLOTS slots are
        // one valid UnpackedK.
        unsafe { std::slice::from_raw_parts(p.as_ptr() as *const UnpackedK, p.len() / Self::SLOTS) }
    }

    /// As [`UnpackedK::view`], writable.
    pub fn view_mut(p: &mut [Unpacked]) -> &mut [UnpackedK] {
        assert!(p.len().is_multiple_of(Self::SLOTS), "a panel of whole super-blocks");
        // SAFETY: as in `view`; the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(p.as_mut_ptr() as *mut UnpackedK, p.len() / Self::SLOTS) }
    }
}

/// Q4_K (`Q6` false) or Q6_K rows into [`UnpackedK`] super-blocks, element by element (the
/// x86 levels have their own vector version; the tests hold the tiles on both to the
/// single-row kernels).
#[cfg(any(test, target_arch = "aarch64"))]
pub(crate) fn unpack_k<const Q6: bool>(w: &[u8], out: &mut [Unpacked]) {
    let out = UnpackedK::view_mut(out);
    if Q6 {
        let xs = crate::blocks::as_blocks::<crate::blocks::BlockQ6K>(w);
        assert_eq!(xs.len(), out.len(), "one unpacked super-block per super-block");
        for (o, x) in out.iter_mut().zip(xs) {
            for n in 0..2 {
                for l in 0..32 {
                    let (lo, hi, qh) = (x.ql[64 * n + l], x.ql[64 * n + 32 + l], x.qh[32 * n + l]);
                    o.q[128 * n + l] = (lo & 0xF) | (qh & 3) << 4;
                    o.q[128 * n + 32 + l] = (hi & 0xF) | (qh >> 2 & 3) << 4;
                    o.q[128 * n + 64 + l] = (lo >> 4) | (qh >> 4 & 3) << 4;
                    o.q[128 * n + 96 + l] = (hi >> 4) | (qh >> 6 & 3) << 4;
                }
            }
            o.scales = std::array::from_fn(|g| std::array::from_fn(|l| x.scales[2 * g + l / 8] as i16));
            o.sums = x.scales.map(|s| s as i16);
            (o.d, o.dmin) = (crate::blocks::f16_to_f32(x.d), 0.0);
        }
    } else {
        let xs = crate::blocks::as_blocks::<crate::blocks::BlockQ4K>(w);
        assert_eq!(xs.len(), out.len(), "one unpacked super-block per super-block");
        for (o, x) in out.iter_mut().zip(xs) {
            let (sc, mn) = crate::blocks::unpack_scale_min_k4(&x.scales);
            for j in 0..4 {
                for l in 0..32 {
                    o.q[64 * j + l] = x.qs[32 * j + l] & 0xF;
                    o.q[64 * j + 32 + l] = x.qs[32 * j + l] >> 4;
                }
            }
            o.scales = std::array::from_fn(|g| [sc[g] as i16; 16]);
            o.sums = std::array::from_fn(|l| mn[l / 2] as i16);
            (o.d, o.dmin) = (crate::blocks::f16_to_f32(x.d), crate::blocks::f16_to_f32(x.dmin));
        }
    }
}

const _: () = {
    assert!(std::mem::size_of::<Unpacked>() == 64);
    assert!(std::mem::size_of::<UnpackedK>() == 576);
    assert!(std::mem::align_of::<UnpackedK>() == std::mem::align_of::<Unpacked>());
};

/// The f16 scales of four activation rows' blocks at one block index, as f32 (`d`, and `s`
/// for Q8_1): converted once per call for every tile that reads them.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct ActScales {
    pub d: [f32; 4],
    pub s: [f32; 4],
}

impl ActScales {
    /// Block by block, the scales of four Q8_0 or Q8_1 rows (`at`), appended to `out`.
    pub fn extend(at: ActType, a: [&[u8]; 4], out: &mut Vec<ActScales>) {
        let (bytes, with_s) = match at {
            ActType::Q8_0 => (std::mem::size_of::<BlockQ8_0>(), false),
            ActType::Q8_1 => (std::mem::size_of::<BlockQ8_1>(), true),
            _ => return,
        };
        let f = |row: &[u8], o: usize| half::f16::from_bits(u16::from_le_bytes([row[o], row[o + 1]])).to_f32();
        let nb = a[0].len() / bytes;
        out.extend((0..nb).map(|b| ActScales { d: a.map(|row| f(row, b * bytes)), s: if with_s { a.map(|row| f(row, b * bytes + 2)) } else { [0.0; 4] } }));
    }
}

/// A tile of products: `rows` unpacked weight rows (back to back, the tile's
/// [`TileKernel::rows`]) against four activation rows and their blocks' [`ActScales`],
/// `out[r][t]`, each bit for bit what the [`DotFn`] of the same type gives for that pair.
/// Rows past `rows` are zero.
pub type TileFn = fn(&[Unpacked], [&[u8]; 4], &[ActScales]) -> [[f32; 4]; MAX_TILE_ROWS];

/// Weight rows (back to back) into one [`Unpacked`] per block.
pub type UnpackFn = fn(&[u8], &mut [Unpacked]);

/// Most weight rows a [`TileFn`] takes.
pub const MAX_TILE_ROWS: usize = 4;

/// A prompt kernel: how to unpack rows, the [`TileFn`] over them, and how many weight rows
/// it takes at once.
#[derive(Clone, Copy)]
pub struct TileKernel {
    pub rows: usize,
    /// Bytes of one packed block of the weight type.
    pub block_bytes: usize,
    /// [`Unpacked`] slots per block (1, or [`UnpackedK::SLOTS`] for the k-quants).
    pub slots: usize,
    /// The activation type the tile reads.
    pub act: ActType,
    pub unpack: UnpackFn,
    pub f: TileFn,
}

impl TileKernel {
    /// The kernel for weight type `ty`: its block size, panel slots and activation type
    /// follow from the type.
    fn new(ty: GgmlType, rows: usize, unpack: UnpackFn, f: TileFn) -> TileKernel {
        let slots = if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) { UnpackedK::SLOTS } else { 1 };
        TileKernel { rows, block_bytes: ty.block_bytes(), slots, act: ActType::of(ty), unpack, f }
    }

    /// The products of weight rows `w` (exactly [`TileKernel::rows`] of them, packed) with
    /// four activation rows: unpack, then the tile. For tests and benchmarks; the matmul
    /// unpacks a whole chunk of rows once for all its tokens.
    pub fn run(&self, w: &[u8], a: [&[u8]; 4]) -> [[f32; 4]; MAX_TILE_ROWS] {
        let mut p = vec![Unpacked::default(); w.len() / self.block_bytes * self.slots];
        (self.unpack)(w, &mut p);
        let mut sc = Vec::new();
        ActScales::extend(self.act, a, &mut sc);
        (self.f)(&p, a, &sc)
    }
}

/// The tile kernel for `ty` on `isa`, where one exists (the 32-element block types, Q4_K
/// and Q6_K).
pub fn tile_fn(ty: GgmlType, isa: Isa) -> Option<TileKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! pick {
            ($m:ident) => {{
                // Widened to MAX_TILE_ROWS (a level with fewer rows leaves the rest zero).
                macro_rules! widen {
                    ($k:ident) => {
                        |p: &[Unpacked], a: [&[u8]; 4], sc: &[ActScales]| {
                            let t = $m::$k(p, a, sc);
                            std::array::from_fn(|r| if r < $m::TILE_ROWS { t[r] } else { [0.0; 4] })
                        }
                    };
                }
                // The k-quant tiles take one row.
                macro_rules! one_row {
                    ($k:ident) => {
                        |p: &[Unpacked], a: [&[u8]; 4], _: &[ActScales]| {
                            let [t] = $m::$k(p, a);
                            std::array::from_fn(|r| if r == 0 { t } else { [0.0; 4] })
                        }
                    };
                }
                match ty {
                    GgmlType::Q4_K => return Some(TileKernel::new(ty, 1, $m::q4_k_unpack, one_row!(q4_k_tile))),
                    GgmlType::Q6_K => return Some(TileKernel::new(ty, 1, $m::q6_k_unpack, one_row!(q6_k_tile))),
                    _ => {}
                }
                let (f, unpack): (TileFn, UnpackFn) = match ty {
                    GgmlType::Q4_0 => (widen!(q4_0_tile), $m::q4_0_unpack),
                    GgmlType::Q4_1 => (widen!(q4_1_tile), $m::q4_1_unpack),
                    GgmlType::Q5_0 => (widen!(q5_0_tile), $m::q5_0_unpack),
                    GgmlType::Q5_1 => (widen!(q5_1_tile), $m::q5_1_unpack),
                    GgmlType::Q8_0 => (widen!(q8_0_tile), $m::q8_0_unpack),
                    _ => return None,
                };
                Some(TileKernel::new(ty, $m::TILE_ROWS, unpack, f))
            }};
        }
        match isa {
            Isa::Avx2 => return pick!(avx2),
            Isa::AvxVnni => return pick!(avxvnni),
            Isa::Vnni => return pick!(vnni),
            _ => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! pick {
            ($m:ident) => {{
                match ty {
                    GgmlType::Q4_K => {
                        let f: TileFn = |p, a, _| std::array::from_fn(|r| if r == 0 { $m::q4_k_tile(p, a) } else { [0.0; 4] });
                        return Some(TileKernel::new(ty, 1, $m::q4_k_unpack, f));
                    }
                    GgmlType::Q6_K => {
                        let f: TileFn = |p, a, _| std::array::from_fn(|r| if r == 0 { $m::q6_k_tile(p, a) } else { [0.0; 4] });
                        return Some(TileKernel::new(ty, 1, $m::q6_k_unpack, f));
                    }
                    _ => {}
                }
                let unpack: UnpackFn = match ty {
                    GgmlType::Q4_0 => $m::q4_0_unpack,
                    GgmlType::Q4_1 => $m::q4_1_unpack,
                    GgmlType::Q5_0 => $m::q5_0_unpack,
                    GgmlType::Q5_1 => $m::q5_1_unpack,
                    GgmlType::Q8_0 => $m::q8_0_unpack,
                    _ => return None,
                };
                let f: TileFn = |p, a, sc| {
                    let t = $m::tile32(p, a, sc);
                    std::array::from_fn(|r| if r < $m::TILE_ROWS { t[r] } else { [0.0; 4] })
                };
                Some(TileKernel::new(ty, $m::TILE_ROWS, unpack, f))
            }};
        }
        match isa {
            Isa::Neon => return pick!(neon),
            Isa::NeonDot => return pick!(dotprod),
            Isa::NeonI8mm => return pick!(i8mm),
            _ => {}
        }
    }
    let _ = (ty, isa);
    None
}

/// Which instruction set the kernels use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// x86: AVX2 with FMA and F16C.
    Avx2,
    /// x86: AVX2 plus AVX-VNNI (the VEX-encoded `vpdpbusd`, without AVX-512).
    AvxVnni,
    /// x86: AVX2 plus AVX-512 VNNI, VL and BW (`vpdpbusd` and byte masks on 256-bit vectors).
    Vnni,
    /// aarch64: Advanced SIMD, which every aarch64 CPU has.
    Neon,
    /// aarch64: Advanced SIMD with the dot-product extension (`sdot`).
    NeonDot,
    /// aarch64: the dot-product extension and the 8-bit matrix multiply (`smmla`).
    NeonI8mm,
}

impl Isa {
    /// The best level this CPU has, or capped by `BANTAM_ISA` (a level's name, as
    /// [`Isa::as_str`] gives it); a name that is no level leaves the best.
    pub fn detect() -> Isa {
        Isa::capped(&Isa::available(), &std::env::var("BANTAM_ISA").unwrap_or_default())
    }

    /// The best of `levels` at or below the level named `cap` (a CPU with AVX-512 VNNI but no
    /// AVX-VNNI asked for `avx-vnni` gets AVX2, not more); the best of all when `cap` names
    /// no level.
    fn capped(levels: &[Isa], cap: &str) -> Isa {
        let allowed = match Isa::ORDER.iter().position(|l| l.as_str() == cap) {
            Some(rank) => &Isa::ORDER[..=rank],
            None => &Isa::ORDER[..],
        };
        levels.iter().rev().find(|l| allowed.contains(l)).copied().unwrap_or(Isa::Scalar)
    }

    /// Every level, lowest first within each architecture.
    const ORDER: [Isa; 7] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Vnni, Isa::Neon, Isa::NeonDot, Isa::NeonI8mm];

    /// Every level this CPU has, from scalar up.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                v.push(Isa::Avx2);
                if is_x86_feature_detected!("avxvnni") {
                    v.push(Isa::AvxVnni);
                }
                if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512bw") {
                    v.push(Isa::Vnni);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                v.push(Isa::Neon);
                if std::arch::is_aarch64_feature_detected!("dotprod") {
                    v.push(Isa::NeonDot);
                    if std::arch::is_aarch64_feature_detected!("i8mm") {
                        v.push(Isa::NeonI8mm);
                    }
                }
            }
        }
        v
    }

    /// The name `BANTAM_ISA` takes and `bantam bench` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avx-vnni",
            Isa::Vnni => "avx512-vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon-dotprod",
            Isa::NeonI8mm => "neon-i8mm",
        }
    }

    /// [`Isa::detect`], computed once per process.
    pub fn detect_cached() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(Isa::detect)
    }
}

/// The CPU's model string (`model name` in /proc/cpuinfo, as llama-bench's `cpu_info`), or
/// the architecture where it is not known.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// `return`s the SIMD kernel of the weight type `$ty` from module `$m` (every SIMD module
/// names its kernels alike); falls through for the float types.
macro_rules! pick_simd {
    ($m:ident, $ty:expr) => {
        match $ty {
            GgmlType::Q4_0 => return $m::q4_0,
            GgmlType::Q4_1 => return $m::q4_1,
            GgmlType::Q5_0 => return $m::q5_0,
            GgmlType::Q8_0 => return $m::q8_0,
            GgmlType::Q4_K => return $m::q4_k,
            GgmlType::Q6_K => return $m::q6_k,
            GgmlType::Q5_1 => return $m::q5_1,
            GgmlType::Q5_K => return $m::q5_k,
            GgmlType::Q2_K => return $m::q2_k,
            GgmlType::Q3_K => return $m::q3_k,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_1 | GgmlType::Q8_K => {}
        }
    };
}

/// The dot product for weight type `ty` on instruction set `isa`.
pub fn dot_fn(ty: GgmlType, isa: Isa) -> DotFn {
    use GgmlType::*;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    macro_rules! pick_float {
        ($m:ident) => {
            match ty {
                F32 => return $m::f32,
                F16 => return $m::f16,
                BF16 => return $m::bf16,
                _ => {}
            }
        };
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pick_float!(avx2),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => pick_float!(avxvnni),
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni => pick_float!(vnni),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => pick_float!(neon),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => pick_float!(dotprod),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonI8mm => pick_float!(i8mm),
        _ => {}
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pick_simd!(avx2, ty),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => pick_simd!(avxvnni, ty),
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni => pick_simd!(vnni, ty),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => pick_simd!(neon, ty),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => pick_simd!(dotprod, ty),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonI8mm => pick_simd!(i8mm, ty),
        _ => {}
    }
    match ty {
        Q4_0 => scalar::q4_0,
        Q4_1 => scalar::q4_1,
        Q5_0 => scalar::q5_0,
        Q5_1 => scalar::q5_1,
        Q8_0 => scalar::q8_0,
        Q4_K => scalar::q4_k,
        Q5_K => scalar::q5_k,
        Q6_K => scalar::q6_k,
        F32 => |w, a| dequant_dot(F32, w, a),
        F16 => |w, a| dequant_dot(F16, w, a),
        BF16 => |w, a| dequant_dot(BF16, w, a),
        Q2_K => scalar::q2_k,
        Q3_K => scalar::q3_k,
        Q8_1 => |w, a| dequant_dot(Q8_1, w, a),
        Q8_K => |w, a| dequant_dot(Q8_K, w, a),
    }
}

/// Dequantize 256 elements at a time onto the stack and dot with f32 activations.
fn dequant_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    const CHUNK: usize = 256;
    let n = a.len() / 4;
    let chunk = CHUNK.max(ty.block_len());
    let chunk_bytes = ty.row_bytes(chunk).expect("chunk is whole blocks");
    let mut buf = [0f32; CHUNK];
    let mut sum = 0f32;
    let mut i = 0;
    while i < n {
        let len = chunk.min(n - i);
        let wb = &w[i / ty.block_len() * ty.block_bytes()..][..ty.row_bytes(len).unwrap_or(chunk_bytes)];
        dequantize_row(ty, wb, &mut buf[..len]);
        let mut s = 0f32;
        for (x, y) in buf[..len].iter().zip(a[i * 4..(i + len) * 4].chunks_exact(4)) {
            s += x * f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        }
        sum += s;
        i += len;
    }
    sum
}

#[cfg(test)]
pub(crate) mod tests;

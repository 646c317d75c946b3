use super::*;
use crate::blocks::Block;

/// Small deterministic generator for test data.
pub(crate) struct Lcg(pub u64);
impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    pub fn f32(&mut self) -> f32 {
        self.next_u32() as f32 / (1u64 << 31) as f32 - 1.0
    }
}

/// Random bytes for `nb` blocks of `ty`, with every f16 scale set to a sane value so the
/// sums stay finite.
pub(crate) fn random_row(ty: GgmlType, n: usize, rng: &mut Lcg) -> Vec<u8> {
    let bytes = ty.row_bytes(n).unwrap();
    let mut v: Vec<u8> = (0..bytes).map(|_| rng.next_u32() as u8).collect();
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    for b in 0..bytes / ty.block_bytes() {
        for &o in scale_offsets {
            let s = f32_to_f16(0.001 + (rng.next_u32() % 1000) as f32 * 1e-5).to_le_bytes();
            v[b * ty.block_bytes() + o..][..2].copy_from_slice(&s);
        }
    }
    if matches!(ty, GgmlType::F16 | GgmlType::BF16 | GgmlType::F32) {
        let f: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        v = match ty {
            GgmlType::F32 => f.iter().flat_map(|x| x.to_le_bytes()).collect(),
            GgmlType::F16 => f.iter().flat_map(|x| f32_to_f16(*x).to_le_bytes()).collect(),
            _ => f.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect(),
        };
    }
    v
}

fn aligned(n: usize) -> Vec<u32> {
    vec![0u32; n.div_ceil(4)]
}

pub(crate) const ALL: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Each kernel (scalar and SIMD) against the f32 dot of the dequantized operands.
#[test]
fn kernels_match_dequantized_reference() {
    let mut rng = Lcg(7);
    let n = 512;
    for ty in ALL {
        for _ in 0..20 {
            let w = random_row(ty, n, &mut rng);
            let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            let at = ActType::of(ty);
            let mut abuf = aligned(at.row_bytes(n));
            let ab = &mut bytemuck_u8(&mut abuf)[..at.row_bytes(n)];
            at.quantize(&x, ab);
            // Reference: dequantize both sides to f32.
            let mut wf = vec![0f32; n];
            dequantize_row(ty, &w, &mut wf);
            let mut af = vec![0f32; n];
            let act_ty = match at {
                ActType::F32 => GgmlType::F32,
                ActType::Q8_0 => GgmlType::Q8_0,
                ActType::Q8_1 => GgmlType::Q8_1,
                ActType::Q8K => GgmlType::Q8_K,
            };
            dequantize_row(act_ty, ab, &mut af);
            let want: f64 = wf.iter().zip(&af).map(|(a, b)| *a as f64 * *b as f64).sum();
            let scale: f64 = wf.iter().zip(&af).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>() + 1e-6;
            for isa in isas() {
                let got = dot_fn(ty, isa)(&w, ab) as f64;
                assert!((got - want).abs() / scale < 1e-4, "{ty} {isa:?}: got {got} want {want} (scale {scale})");
            }
        }
    }
}

/// Every instruction set this CPU has.
fn isas() -> Vec<Isa> {
    Isa::available()
}

/// SIMD kernels against their scalar twins, tightly.
#[test]
fn simd_matches_scalar() {
    for isa in isas() {
        let mut rng = Lcg(11);
        for ty in ALL {
            for n in [256, 1024, 2816] {
                let w = random_row(ty, n, &mut rng);
                let x: Vec<f32> = (0..n).map(|_| rng.f32() * 3.0).collect();
                let at = ActType::of(ty);
                let mut abuf = aligned(at.row_bytes(n));
                let ab = &mut bytemuck_u8(&mut abuf)[..at.row_bytes(n)];
                at.quantize(&x, ab);
                let s = dot_fn(ty, Isa::Scalar)(&w, ab);
                let v = dot_fn(ty, isa)(&w, ab);
                assert!((s - v).abs() <= 1e-4 * s.abs().max(1.0), "{ty} {isa:?} n={n}: scalar {s} simd {v}");
            }
        }
    }
}

pub(crate) fn bytemuck_u8(v: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 storage viewed as bytes.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 4) }
}

#[test]
fn q8_k_quantization_matches_ggml_rule() {
    let mut x = vec![0.5f32; 256];
    x[3] = -2.0;
    let mut b = [BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] }];
    crate::quantize::quantize_q8_k(&x, &mut b);
    assert_eq!(b[0].qs[3], -127); // iscale = -127 / max = 63.5; the max maps to -127
    assert_eq!(b[0].qs[0], 32); // round(63.5 * 0.5) = round(31.75)
    assert_eq!(b[0].d, 1.0 / 63.5);
    assert_eq!(b[0].bsums[0], b[0].qs[..16].iter().map(|&q| q as i16).sum::<i16>());
}

#[test]
fn simd_activation_quantizers_match_scalar() {
    let mut rng = Lcg(5);
    for at in [ActType::Q8_0, ActType::Q8_1] {
        let x: Vec<f32> = (0..1024).map(|i| if i % 97 == 0 { 0.0 } else { rng.f32() * 5.0 }).collect();
        let n = at.row_bytes(x.len());
        let (mut a, mut b) = (aligned(n), aligned(n));
        at.quantize(&x, &mut bytemuck_u8(&mut a)[..n]);
        let bs = &mut bytemuck_u8(&mut b)[..n];
        match at {
            ActType::Q8_0 => crate::quantize::quantize_q8_0(&x, view_mut(bs)),
            _ => crate::quantize::quantize_q8_1(&x, view_mut(bs)),
        }
        assert_eq!(&bytemuck_u8(&mut a)[..n], &bytemuck_u8(&mut b)[..n], "{at:?}");
    }
}

fn view_mut<T: Block>(b: &mut [u8]) -> &mut [T] {
    let n = b.len() / std::mem::size_of::<T>();
    // SAFETY: test buffers are u32-aligned and sized to whole blocks.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut T, n) }
}

#[test]
fn four_row_kernels_equal_single_row_bit_for_bit() {
    for isa in isas() {
        let mut rng = Lcg(3);
        for ty in ALL {
            let Some(d4) = dot4_fn(ty, isa) else { continue };
            let n = 1024;
            let w = random_row(ty, n, &mut rng);
            let at = ActType::of(ty);
            let nb = at.row_bytes(n);
            let mut bufs: Vec<Vec<u32>> = (0..4).map(|_| aligned(nb)).collect();
            for b in bufs.iter_mut() {
                let x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
                at.quantize(&x, &mut bytemuck_u8(b)[..nb]);
            }
            let rows: Vec<&[u8]> = bufs.iter_mut().map(|b| &bytemuck_u8(b)[..nb]).collect();
            let got = d4(&w, [rows[0], rows[1], rows[2], rows[3]]);
            for k in 0..4 {
                let one = dot_fn(ty, isa)(&w, rows[k]);
                // Bit equality: batch invariance rests on it.
                assert_eq!(got[k].to_bits(), one.to_bits(), "{ty} {isa:?} row {k}: {} vs {one}", got[k]);
            }
        }
    }
}

#[test]
fn tile_kernels_equal_single_row_bit_for_bit() {
    for isa in isas() {
        let mut rng = Lcg(13);
        for ty in ALL {
            let Some(tile) = tile_fn(ty, isa) else { continue };
            // Odd and even block counts: the even and odd blocks are summed apart.
            for n in [1024, 1056, 32].into_iter().filter(|&n| ty.row_bytes(n).is_some()) {
                let rows: Vec<Vec<u8>> = (0..tile.rows).map(|_| random_row(ty, n, &mut rng)).collect();
                let w: Vec<u8> = rows.concat();
                let at = ActType::of(ty);
                let nb = at.row_bytes(n);
                let mut bufs: Vec<Vec<u32>> = (0..4).map(|_| aligned(nb)).collect();
                for b in bufs.iter_mut() {
                    let x: Vec<f32> = (0..n).map(|_| rng.f32() * 2.0).collect();
                    at.quantize(&x, &mut bytemuck_u8(b)[..nb]);
                }
                let acts: Vec<&[u8]> = bufs.iter_mut().map(|b| &bytemuck_u8(b)[..nb]).collect();
                let got = tile.run(&w, [acts[0], acts[1], acts[2], acts[3]]);
                for (r, row) in rows.iter().enumerate() {
                    for t in 0..4 {
                        let one = dot_fn(ty, isa)(row, acts[t]);
                        assert_eq!(got[r][t].to_bits(), one.to_bits(), "{ty} {isa:?} n={n} row {r} token {t}: {} vs {one}", got[r][t]);
                    }
                }
            }
        }
    }
}

/// The levels named in `BANTAM_EXPECT_ISAS` (comma-separated, as `Isa::as_str` names them)
/// are all present: CI sets it, so that a machine or emulator without a level cannot pass
/// the kernel tests by testing fewer of them.
#[test]
fn expected_levels_are_present() {
    let have: Vec<&str> = Isa::available().iter().map(|i| i.as_str()).collect();
    for want in std::env::var("BANTAM_EXPECT_ISAS").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
        assert!(have.contains(&want), "level {want} expected but this CPU has only {have:?}");
    }
}

#[test]
fn a_cap_never_raises_the_level() {
    let x86 = [Isa::Scalar, Isa::Avx2, Isa::Vnni]; // AVX-512 VNNI without AVX-VNNI
    assert_eq!(Isa::capped(&x86, "avx-vnni"), Isa::Avx2);
    assert_eq!(Isa::capped(&x86, "avx512-vnni"), Isa::Vnni);
    assert_eq!(Isa::capped(&x86, "scalar"), Isa::Scalar);
    assert_eq!(Isa::capped(&x86, ""), Isa::Vnni);
    assert_eq!(Isa::capped(&x86, "avx513"), Isa::Vnni);
    assert_eq!(Isa::capped(&[Isa::Scalar, Isa::Avx2], "avx512-vnni"), Isa::Avx2);
    let arm = [Isa::Scalar, Isa::Neon, Isa::NeonDot, Isa::NeonI8mm];
    assert_eq!(Isa::capped(&arm, "neon"), Isa::Neon);
    assert_eq!(Isa::capped(&arm, "neon-dotprod"), Isa::NeonDot);
    assert_eq!(Isa::capped(&arm, ""), Isa::NeonI8mm);
    assert_eq!(Isa::capped(&arm, "avx2"), Isa::Scalar);
    for level in Isa::available() {
        assert_eq!(Isa::capped(&Isa::available(), level.as_str()), level);
    }
}

/// The element-by-element k-quant unpack (aarch64's) writes what each level's own unpack
/// writes, field by field.
#[test]
fn k_quant_unpacks_agree() {
    let mut rng = Lcg(29);
    for isa in isas() {
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
            let Some(tile) = tile_fn(ty, isa) else { continue };
            let w = random_row(ty, 1024, &mut rng);
            let slots = 4 * super::UnpackedK::SLOTS;
            let (mut a, mut b) = (vec![super::Unpacked::default(); slots], vec![super::Unpacked::default(); slots]);
            (tile.unpack)(&w, &mut a);
            match ty {
                GgmlType::Q4_K => super::unpack_k::<false>(&w, &mut b),
                _ => super::unpack_k::<true>(&w, &mut b),
            }
            for (x, y) in super::UnpackedK::view(&a).iter().zip(super::UnpackedK::view(&b)) {
                assert_eq!(x.q, y.q, "{ty} {isa:?}: values");
                assert_eq!(x.scales, y.scales, "{ty} {isa:?}: scales");
                assert_eq!(x.sums, y.sums, "{ty} {isa:?}: sums");
                assert_eq!((x.d.to_bits(), x.dmin.to_bits()), (y.d.to_bits(), y.dmin.to_bits()), "{ty} {isa:?}: d, dmin");
            }
        }
    }
}

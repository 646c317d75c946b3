//! Element-wise and row operations of the forward pass, in f32, with the numerics of
//! ggml's CPU backend where they matter for matching its outputs.

use crate::blocks::{f16_to_f32, f32_to_f16};
use std::sync::OnceLock;

/// RMS norm in place with weight: `x = x / sqrt(mean(x²) + eps) * w` (sum in f64, as
/// `ggml_compute_forward_rms_norm`).
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let scale = 1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt();
    for (v, g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

/// RMS norm from `src` into `dst` with weight.
pub fn rms_norm_into(dst: &mut [f32], src: &[f32], w: &[f32], eps: f32) {
    dst.copy_from_slice(src);
    rms_norm(dst, w, eps);
}

/// `a += b`.
pub fn add_assign(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// SwiGLU: `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

fn gelu_exact_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// ggml evaluates GELU through a table indexed by the f16 rounding of the input, with f16
/// outputs (`ggml_table_gelu_f16`, GGML_GELU_FP16); we do the same to match its results.
fn gelu_table() -> &'static [u16] {
    static T: OnceLock<Vec<u16>> = OnceLock::new();
    T.get_or_init(|| (0..=u16::MAX).map(|b| f32_to_f16(gelu_exact_tanh(f16_to_f32(b)))).collect())
}

/// GeGLU: `gate = gelu(gate) * up` (`ggml_vec_geglu_f32`).
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let t = gelu_table();
    let n = gate.len().min(up.len());
    #[cfg(target_arch = "x86_64")]
    let done = if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2 and F16C were just checked.
        unsafe { geglu_f16c(&mut gate[..n], &up[..n], t) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    geglu_scalar(&mut gate[done..n], &up[done..n], t);
}

fn geglu_scalar(gate: &mut [f32], up: &[f32], t: &[u16]) {
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            f16_to_f32(t[f32_to_f16(x) as usize]) * u
        };
    }
}

/// [`geglu_scalar`] eight values at a time (the conversions with F16C, the same rounding),
/// bit for bit; returns how many values it did (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn geglu_f16c(gate: &mut [f32], up: &[f32], t: &[u16]) -> usize {
    use std::arch::x86_64::*;
    let n = gate.len() / 8 * 8;
    let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
    for (g, u) in gate[..n].chunks_exact_mut(8).zip(up.chunks_exact(8)) {
        // SAFETY: eight f32 each.
        let (x, u) = unsafe { (_mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(u.as_ptr())) };
        let mut h = [0u16; 8];
        // SAFETY: eight u16.
        unsafe { _mm_storeu_si128(h.as_mut_ptr() as *mut __m128i, _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)) };
        let looked = h.map(|h| t[h as usize]);
        // SAFETY: eight u16.
        let gelu = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(looked.as_ptr() as *const __m128i) });
        let r = _mm256_mul_ps(gelu, u);
        let r = _mm256_blendv_ps(r, _mm256_setzero_ps(), _mm256_cmp_ps::<_CMP_LE_OQ>(x, lo));
        let r = _mm256_blendv_ps(r, _mm256_mul_ps(x, u), _mm256_cmp_ps::<_CMP_GE_OQ>(x, hi));
        // SAFETY: eight f32.
        unsafe { _mm256_storeu_ps(g.as_mut_ptr(), r) };
    }
    n
}

/// Rotary embedding of one head in place. `neox`: rotate pairs `(i, i + d/2)` (GPT-NeoX
/// style, qwen2 and gemma3); otherwise adjacent pairs `(2i, 2i+1)` (llama). The angle for
/// pair i is `pos * base^(-2i/d) / factor_i`, computed as ggml does by repeated
/// multiplication in f32. `freq_factors` (Llama-3 scaling) divides per pair when present.
pub fn rope(x: &mut [f32], pos: usize, base: f32, neox: bool, freq_factors: Option<&[f32]>) {
    let d = x.len();
    let theta_scale = base.powf(-2.0 / d as f32);
    let mut theta = pos as f32;
    for i in 0..d / 2 {
        let t = match freq_factors {
            Some(f) => theta / f[i],
            None => theta,
        };
        let (s, c) = t.sin_cos();
        let (a, b) = if neox { (i, i + d / 2) } else { (2 * i, 2 * i + 1) };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
        theta *= theta_scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rope_rotates_pairs() {
        let mut x = vec![1.0, 0.0, 1.0, 0.0];
        rope(&mut x, 0, 10000.0, false, None);
        assert_eq!(x, vec![1.0, 0.0, 1.0, 0.0]);
        let mut x = vec![1.0, 0.0, 0.0, 0.0];
        rope(&mut x, 1, 10000.0, false, None);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
    }
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn geglu_vector_path_is_the_scalar_one_bit_for_bit() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")) {
            eprintln!("no AVX2 and F16C on this CPU: GeGLU takes the scalar loop alone here");
            return;
        }
        let mut seed = 12345u32;
        let mut next = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32
        };
        let n = 203; // not a multiple of 8: the tail too
        let mut x: Vec<f32> = (0..n).map(|_| (next() - 0.5) * 30.0).collect();
        x[..6].copy_from_slice(&[-10.0, 10.0, -10.000001, 9.999999, 0.0, -0.0]);
        let up: Vec<f32> = (0..n).map(|_| (next() - 0.5) * 4.0).collect();
        let (mut fast, mut slow) = (x.clone(), x);
        geglu(&mut fast, &up);
        geglu_scalar(&mut slow, &up, gelu_table());
        for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "value {i}");
        }
    }

    #[test]
    fn geglu_uses_f16_table() {
        let mut g = vec![-11.0, 0.5, 11.0];
        geglu(&mut g, &[1.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 * gelu_exact_tanh(0.5)).abs() < 2e-3);
        assert_eq!(g[2], 11.0);
    }
}

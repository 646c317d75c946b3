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

/// In-place softmax over `x`.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `sum(k[i] * q[i])` with `k` in f16 bits.
pub fn dot_f16(k: &[u16], q: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::dot::Isa::detect_cached() != crate::dot::Isa::Scalar {
        // SAFETY: AVX2/F16C/FMA present (detected).
        return unsafe { x86::dot_f16(k, q) };
    }
    k.iter().zip(q).map(|(&a, &b)| f16_to_f32(a) * b).sum()
}

/// `out += a * v` with `v` in f16 bits.
pub fn axpy_f16(out: &mut [f32], v: &[u16], a: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::dot::Isa::detect_cached() != crate::dot::Isa::Scalar {
        // SAFETY: as above.
        return unsafe { x86::axpy_f16(out, v, a) };
    }
    for (o, &b) in out.iter_mut().zip(v) {
        *o += a * f16_to_f32(b);
    }
}

/// Round f32 into f16 bits.
pub fn to_f16(dst: &mut [u16], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32_to_f16(*s);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::blocks::f16_to_f32;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(k: &[u16], q: &[f32]) -> f32 {
        let n = k.len().min(q.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n for both slices.
            let (kv, qv) = unsafe { (_mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i) as *const __m128i)), _mm256_loadu_ps(q.as_ptr().add(i))) };
            acc = _mm256_fmadd_ps(kv, qv, acc);
            i += 8;
        }
        let r = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        let mut s = _mm_cvtss_f32(r);
        while i < n {
            s += f16_to_f32(k[i]) * q[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(out: &mut [f32], v: &[u16], a: f32) {
        let n = out.len().min(v.len());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n for both slices.
            unsafe {
                let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
                let o = _mm256_loadu_ps(out.as_ptr().add(i));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_fmadd_ps(av, vv, o));
            }
            i += 8;
        }
        while i < n {
            out[i] += a * f16_to_f32(v[i]);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn f16_kernels_match_scalar() {
        let k: Vec<u16> = (0..77).map(|i| f32_to_f16((i as f32 * 0.37).sin())).collect();
        let q: Vec<f32> = (0..77).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f32 = k.iter().zip(&q).map(|(&a, &b)| f16_to_f32(a) * b).sum();
        assert!((dot_f16(&k, &q) - want).abs() < 1e-4);
        let mut o = q.clone();
        axpy_f16(&mut o, &k, 0.5);
        for i in 0..77 {
            assert!((o[i] - (q[i] + 0.5 * f16_to_f32(k[i]))).abs() < 1e-6);
        }
    }
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
    fn geglu_uses_f16_table() {
        let mut g = vec![-11.0, 0.5, 11.0];
        geglu(&mut g, &[1.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 * gelu_exact_tanh(0.5)).abs() < 2e-3);
        assert_eq!(g[2], 11.0);
    }
}

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
    fn geglu_uses_f16_table() {
        let mut g = vec![-11.0, 0.5, 11.0];
        geglu(&mut g, &[1.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 * gelu_exact_tanh(0.5)).abs() < 2e-3);
        assert_eq!(g[2], 11.0);
    }
}

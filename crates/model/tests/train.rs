//! Training's forward and backward passes (`model::train`): on the synthetic models of
//! every family (../shared/reference/synthetic: F32 weights, so the training forward is
//! exact f32), the analytic gradient of every adapted matrix's `A` and `B` matches finite
//! differences of the loss, and the training loss is the inference forward's cross-entropy
//! with the same adapter applied (`Model::forward` with `Batch::adapters`).
//!
//! Each check is a directional derivative (a random ±1 direction over one half of one
//! matrix) against the five-point stencil. Relative error below 1e-3 is required of at
//! least 90% of them (272 of 276 here); the others must be within the stencil's own spread
//! (two step sizes disagreeing) or within 1e-4 of the model's largest derivative: the
//! rounding of f32 forward and backward passes, seen on small derivatives of gemma3, whose
//! embeddings are scaled by 8.

use kernels::pool::Pool;
use model::train::{LoraParams, Rng, Trainer};
use model::{Adapters, Batch, KvCache, Model, Scratch};
use std::sync::Arc;

const ARCHS: [&str; 6] = ["llama", "qwen2", "qwen3", "gemma3", "phi3", "granite"];
const TARGETS: [&str; 8] = ["attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

fn synthetic(arch: &str) -> Model {
    let path = store::default_root().join("synthetic").join(format!("{arch}.gguf"));
    assert!(path.exists(), "{} is missing: run scripts/fetch-models.sh", path.display());
    Model::open(&path).unwrap()
}

/// An adapter on every projection, with `B` non-zero so every gradient is.
fn params(m: &Model, seed: u64) -> LoraParams {
    let mut p = LoraParams::init(m, 4, 8.0, &TARGETS, seed).unwrap();
    let mut rng = Rng(seed + 1);
    for mat in &mut p.mats {
        mat.b.iter_mut().for_each(|v| *v = (rng.uniform() - 0.5) * 0.2);
    }
    p
}

fn sequence(m: &Model, n: usize, seed: u64) -> (Vec<u32>, Vec<bool>) {
    let mut rng = Rng(seed);
    let tokens = (0..n).map(|_| (rng.next_u64() % m.config.n_vocab as u64) as u32).collect();
    let mask = (0..n).map(|i| i >= n / 3).collect();
    (tokens, mask)
}

fn loss(m: &Model, pool: &Pool, p: &LoraParams, tokens: &[u32], mask: &[bool]) -> f64 {
    Trainer::new(m, p).step(pool, p, tokens, mask, 1.0, false).unwrap().0
}

#[test]
fn gradients_match_finite_differences() {
    let pool = Pool::new(2);
    let mut worst = 0f64;
    let (mut n, mut strict) = (0, 0);
    for arch in ARCHS {
        let mut checks: Vec<(String, f64, f64, f64, f64, f64)> = Vec::new();
        let m = synthetic(arch);
        let p = params(&m, 11);
        let (tokens, mask) = sequence(&m, 20, 5);
        let mut tr = Trainer::new(&m, &p);
        tr.step(&pool, &p, &tokens, &mask, 1.0, true).unwrap();
        let grads = tr.take_grads();
        let flat = p.flat();
        // Each half of each adapted matrix: the derivative along a random ±1 direction.
        let mut offset = 0;
        let mut rng = Rng(99);
        for mat in &p.mats {
            for (name, len) in [("A", mat.a.len()), ("B", mat.b.len())] {
                let dir: Vec<f32> = (0..len).map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }).collect();
                let analytic: f64 = dir.iter().zip(&grads[offset..offset + len]).map(|(&d, &g)| d as f64 * g as f64).sum();
                let shifted = |s: f32| {
                    let mut q = p.clone();
                    let mut v = flat.clone();
                    v[offset..offset + len].iter_mut().zip(&dir).for_each(|(x, d)| *x += s * d);
                    q.set_flat(&v);
                    loss(&m, &pool, &q, &tokens, &mask)
                };
                // The five-point stencil (truncation error O(eps⁴)) at two steps: where
                // they disagree, that disagreement is the finite differences' own error
                // (the f32 loss's rounding, divided by eps), which bounds the comparison.
                let stencil = |eps: f32| (8.0 * (shifted(eps) - shifted(-eps)) - (shifted(2.0 * eps) - shifted(-2.0 * eps))) / (12.0 * eps as f64);
                let (fd, fd_half) = (stencil(1e-2), stencil(5e-3));
                let scale = fd.abs().max(analytic.abs());
                let err = (fd - analytic).abs();
                let rel = err / scale.max(1e-12);
                let noise = (fd - fd_half).abs();
                n += 1;
                if rel < 1e-3 {
                    strict += 1;
                }
                worst = worst.max(rel);
                checks.push((format!("{arch} {:?} {name}", mat.target), analytic, fd, err, rel, noise));
                offset += len;
            }
        }
        // The f32 passes' own rounding: a floor of 1e-4 of the model's largest derivative.
        let floor = 1e-4 * checks.iter().map(|c| c.1.abs()).fold(0.0, f64::max);
        for (what, analytic, fd, err, rel, noise) in checks {
            assert!(
                rel < 1e-3 || err < 2.0 * noise || err < floor,
                "{what}: analytic {analytic:.6}, finite differences {fd:.6} (relative error {rel:.2e}, their own spread {noise:.2e}, floor {floor:.1e})"
            );
        }
    }
    eprintln!("{strict} of {n} directional derivatives within 1e-3 relative error (worst {worst:.1e}); the rest within the finite differences' own spread or the f32 floor");
    // Most of them are within 1e-3: the spread only excuses the tiny or very curved ones.
    assert!(strict * 10 >= n * 9, "only {strict} of {n} within 1e-3");
}

/// The training forward computes what the inference forward computes with the adapter.
#[test]
fn training_loss_is_the_inference_cross_entropy() {
    let pool = Pool::new(2);
    let mut models: Vec<(String, Model, f64)> = ARCHS.iter().map(|a| (a.to_string(), synthetic(a), 2e-3)).collect();
    // A quantized model: the inference forward quantizes activations, training does not.
    let real = store::model_file("smollm2:135m").expect("run `bantam pull smollm2:135m` (scripts/test.sh does)");
    models.push(("smollm2:135m".into(), Model::open(real).unwrap(), 2e-2));
    for (name, m, tol) in &models {
        let p = params(m, 3);
        let (tokens, mask) = sequence(m, 24, 8);
        let train = loss(m, &pool, &p, &tokens, &mask);
        let set = Some(Arc::new(Adapters(vec![(Arc::new(p.to_adapter("t")), 1.0)])));
        let mut cache = KvCache::new(&m.config, tokens.len());
        let (mut s, mut b) = (Scratch::default(), Batch::default());
        for &t in &tokens {
            b.push(t, 0, true);
        }
        b.adapters.push(set);
        let logits = m.forward(&pool, &b, &mut [&mut cache], &mut s).unwrap();
        let nv = m.config.n_vocab;
        let mut infer = 0f64;
        for t in 0..tokens.len() - 1 {
            if mask[t] {
                let row = &logits[t * nv..(t + 1) * nv];
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
                infer += lse - row[tokens[t + 1] as usize] as f64;
            }
        }
        let rel = (train - infer).abs() / infer;
        eprintln!("{name}: training loss {train:.5}, inference {infer:.5} (relative {rel:.2e})");
        assert!(rel < *tol, "{name}: training loss {train} against inference {infer}");
    }
}

/// Gradient checkpointing recomputes each layer in the backward pass: the gradients are the
/// same, bit for bit. LoRA dropout's gradients match finite differences of the loss under
/// the same masks (a fresh trainer with the same seed draws the same masks for its first
/// sequence).
#[test]
fn checkpointing_and_dropout_keep_gradients_exact() {
    let pool = Pool::new(2);
    for arch in ["llama", "gemma3"] {
        let m = synthetic(arch);
        let p = params(&m, 4);
        let (tokens, mask) = sequence(&m, 18, 6);
        let grads_of = |checkpoint: bool, dropout: f32| {
            let mut tr = Trainer::new(&m, &p);
            tr.checkpoint = checkpoint;
            tr.dropout = dropout;
            tr.seed = 5;
            let loss = tr.step(&pool, &p, &tokens, &mask, 1.0, true).unwrap().0;
            (loss, tr.take_grads())
        };
        let plain = grads_of(false, 0.0);
        assert_eq!(plain.1, grads_of(true, 0.0).1, "{arch}: checkpointing changed the gradients");
        let dropped = grads_of(false, 0.3);
        assert_eq!(dropped.1, grads_of(true, 0.3).1, "{arch}: checkpointing changed the dropout gradients");
        assert!(dropped.0 != plain.0, "{arch}: dropout changed nothing");
        // Finite differences under the same masks, along one direction over every parameter.
        let flat = p.flat();
        let mut rng = Rng(3);
        let dir: Vec<f32> = (0..flat.len()).map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }).collect();
        let analytic: f64 = dir.iter().zip(&dropped.1).map(|(&d, &g)| d as f64 * g as f64).sum();
        let shifted = |s: f32| {
            let mut q = p.clone();
            q.set_flat(&flat.iter().zip(&dir).map(|(x, d)| x + s * d).collect::<Vec<_>>());
            let mut tr = Trainer::new(&m, &q);
            tr.dropout = 0.3;
            tr.seed = 5;
            tr.step(&pool, &q, &tokens, &mask, 1.0, true).unwrap().0
        };
        let eps = 1e-3f32;
        let fd = (8.0 * (shifted(eps) - shifted(-eps)) - (shifted(2.0 * eps) - shifted(-2.0 * eps))) / (12.0 * eps as f64);
        let rel = (fd - analytic).abs() / fd.abs().max(analytic.abs());
        eprintln!("{arch}: dropout directional derivative {analytic:.5} against {fd:.5} ({rel:.1e})");
        assert!(rel < 1e-3, "{arch}: dropout gradient {analytic} against finite differences {fd}");
    }
}

/// Sequences longer than one attention tile (32 query rows), with sliding windows shorter
/// than the sequence (gemma3's synthetic model: 8): the gradient along a random direction
/// over every parameter matches finite differences, and it is the same with one thread as
/// with two up to the rounding of the base's per-thread shares.
#[test]
fn gradients_hold_across_attention_tiles() {
    for arch in ["llama", "gemma3", "qwen2"] {
        let m = synthetic(arch);
        let p = params(&m, 21);
        let (tokens, mask) = sequence(&m, 83, 9);
        let grads_with = |threads: usize| {
            let pool = Pool::new(threads);
            let mut tr = Trainer::new(&m, &p);
            tr.step(&pool, &p, &tokens, &mask, 1.0, true).unwrap();
            tr.take_grads()
        };
        let (two, one) = (grads_with(2), grads_with(1));
        let norm = two.iter().map(|g| (*g as f64).powi(2)).sum::<f64>().sqrt();
        let diff = two.iter().zip(&one).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        assert!(diff <= 1e-5 * norm, "{arch}: one thread's gradients differ from two threads' by {diff:.2e} (norm {norm:.2e})");
        let pool = Pool::new(2);
        let flat = p.flat();
        let mut rng = Rng(17);
        let dir: Vec<f32> = (0..flat.len()).map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 }).collect();
        let analytic: f64 = dir.iter().zip(&two).map(|(&d, &g)| d as f64 * g as f64).sum();
        let shifted = |s: f32| {
            let mut q = p.clone();
            q.set_flat(&flat.iter().zip(&dir).map(|(x, d)| x + s * d).collect::<Vec<_>>());
            loss(&m, &pool, &q, &tokens, &mask)
        };
        let eps = 1e-3f32;
        let fd = (8.0 * (shifted(eps) - shifted(-eps)) - (shifted(2.0 * eps) - shifted(-2.0 * eps))) / (12.0 * eps as f64);
        let rel = (fd - analytic).abs() / fd.abs().max(analytic.abs());
        eprintln!("{arch}, 83 tokens: directional derivative {analytic:.5} against {fd:.5} ({rel:.1e})");
        assert!(rel < 1e-3, "{arch}: gradient {analytic} against finite differences {fd}");
    }
}

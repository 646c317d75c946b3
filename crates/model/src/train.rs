//! Training LoRA adapters: the decoder block's forward pass over one sequence in f32, kept
//! on a tape, and its backward pass down to the adapters' `A` and `B` (the base stays
//! frozen and quantized; its rows are dequantized on the fly, as QLoRA does on GPUs).
//!
//! The forward pass is the one of `block.rs`, configured by the same [`Config`](crate::Config) (fused or
//! separate projections, biases, qk-norm, rotary style and partial rotation, sliding
//! windows, post-norms, residual, embedding and logit scales, SwiGLU or GeGLU), computed
//! exactly in f32 so that it is differentiable: no quantized activations, no f16 cache,
//! GELU evaluated instead of read from ggml's f16 table. Its logits agree with
//! [`Model::forward`]'s within those roundings (tested). Causal attention over the whole
//! sequence from position 0 (packed examples attend across their boundaries, as simple
//! packing does).
//!
//! Per layer, with `T` tokens (shapes in comments); `Δ` marks an adapter's `f·B(A·)`:
//! ```text
//! x ── rms(attn_norm) ─ h1 ── Wq,Wk,Wv (+Δ, +bias) ─ qk-norm ─ rope ─ q,k,v
//!   softmax(q·k·scale, causal) = P ── P·v = att ── Wo (+Δ) ─ o1 ─ post-norm ─ ·rs ─ + x = x2
//! x2 ── rms(ffn_norm) ─ h2 ── Wgate,Wup (+Δ) ── act(gate)·up ─ Wdown (+Δ) ─ o2 ─ post-norm ─ ·rs ─ + x2
//! ```
//! then the final norm, the output projection at the positions that carry loss, and the
//! mean cross-entropy of the next tokens.
//!
//! Every product is a [`kernels::sgemm`] call: a projection dequantizes 16 of W's rows at a
//! time and multiplies them against all `T` tokens (threads take blocks of rows); the
//! adapters' factors are thin products over tokens; attention runs by tiles of 32 query
//! rows against the keys they see (threads take heads). The per-token loops (norms, rope,
//! activations, residuals, the loss) run over the pool by ranges of tokens. Every element
//! is summed in a fixed order, so a sequence's gradients do not depend on the tiles; the
//! base's backward adds one share per thread, so they may differ in the last bits between
//! thread counts.

use crate::config::{Activation, RopeStyle};
use crate::lora::{axpy, Adapter, Pair, Target, LAYER_TARGETS};
use crate::weights::{GateUpProj, Mat, QkvProj};
use crate::{Model, ModelError};
use kernels::pool::Pool;
use kernels::pool::SendPtr;
use kernels::sgemm::{self, Strided, StridedMut};
use std::collections::HashMap;

/// One adapted matrix being trained: `A` `[rank, cols]`, `B` `[rows, rank]`.
#[derive(Debug, Clone)]
pub struct LoraMatrix {
    pub target: Target,
    pub rows: usize,
    pub cols: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// The adapter under training: every matrix shares `rank` and `alpha`.
#[derive(Debug, Clone)]
pub struct LoraParams {
    pub rank: usize,
    pub alpha: f32,
    pub mats: Vec<LoraMatrix>,
}

impl LoraParams {
    /// A fresh adapter on the given layer `targets` (names from [`LAYER_TARGETS`] the model
    /// has): `A` uniform in ±1/√cols (PEFT's Kaiming init), `B` zero, so training starts
    /// from the base model. Deterministic in `seed`.
    pub fn init(model: &Model, rank: usize, alpha: f32, targets: &[&str], seed: u64) -> Result<LoraParams, ModelError> {
        let mut rng = Rng(seed);
        let mut mats = Vec::new();
        for il in 0..model.config.n_layer {
            for which in targets {
                let which =
                    *LAYER_TARGETS.iter().find(|&&t| t == *which).ok_or_else(|| ModelError::BadConfig(format!("{which} is not an adaptable matrix")))?;
                let Some(w) = model.file.tensor(&format!("blk.{il}.{which}.weight")) else { continue };
                let (cols, rows) = (w.row_len(), w.n_rows());
                let bound = 1.0 / (cols as f32).sqrt();
                let a = (0..rank * cols).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect();
                mats.push(LoraMatrix { target: (Some(il), which), rows, cols, a, b: vec![0.0; rows * rank] });
            }
        }
        if mats.is_empty() {
            return Err(ModelError::BadConfig(format!("the model has none of the targets {targets:?}")));
        }
        Ok(LoraParams { rank, alpha, mats })
    }

    /// The multiplier of `B A x`.
    pub fn factor(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    pub fn n_params(&self) -> usize {
        self.mats.iter().map(|m| m.a.len() + m.b.len()).sum()
    }

    /// Start from an adapter (`finetune --init`): its matrices, rank and alpha (an alpha of 0,
    /// which llama.cpp reads as a factor of 1, becomes alpha = rank).
    pub fn from_adapter(ad: &Adapter) -> Result<LoraParams, ModelError> {
        let mut mats: Vec<LoraMatrix> =
            ad.pairs().map(|(t, p)| LoraMatrix { target: *t, rows: p.rows, cols: p.cols, a: p.a.clone(), b: p.b.clone() }).collect();
        mats.sort_by_key(|m| (m.target.0, LAYER_TARGETS.iter().position(|&n| n == m.target.1)));
        let rank = mats.first().map_or(0, |m| m.a.len() / m.cols);
        if rank == 0 || mats.iter().any(|m| m.a.len() != rank * m.cols || m.target.0.is_none()) {
            return Err(ModelError::BadConfig(format!("{}: training needs one rank and layer matrices only", ad.path)));
        }
        let alpha = if ad.alpha == 0.0 { rank as f32 } else { ad.alpha };
        Ok(LoraParams { rank, alpha, mats })
    }

    /// The adapter, for inference or to write (`Adapter::to_gguf`).
    pub fn to_adapter(&self, name: &str) -> Adapter {
        let pairs = self.mats.iter().map(|m| (m.target, Pair::new(self.rank, m.rows, m.cols, m.a.clone(), m.b.clone()))).collect();
        Adapter::new(name, self.alpha, pairs)
    }

    /// Every parameter, in a fixed order (each matrix's `A`, then its `B`).
    pub fn flat(&self) -> Vec<f32> {
        self.mats.iter().flat_map(|m| m.a.iter().chain(&m.b).copied()).collect()
    }

    pub fn set_flat(&mut self, v: &[f32]) {
        let mut i = 0;
        for m in &mut self.mats {
            for x in m.a.iter_mut().chain(m.b.iter_mut()) {
                *x = v[i];
                i += 1;
            }
        }
    }
}

/// splitmix64, for initialisation and shuffling: the same on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// What one layer's forward pass keeps for its backward pass.
#[derive(Default)]
struct LayerTape {
    x: Vec<f32>,     // [T, ne] layer input
    h1: Vec<f32>,    // [T, ne] attn-normed
    q_raw: Vec<f32>, // [T, qd] projected (+bias), before qk-norm and rope
    k_raw: Vec<f32>, // [T, kvd]
    q: Vec<f32>,     // [T, qd] after rope
    k: Vec<f32>,     // [T, kvd]
    v: Vec<f32>,     // [T, vd]
    p: Vec<f32>,     // [n_head, T, T] attention probabilities (0 outside the mask)
    att: Vec<f32>,   // [T, n_head * hd_v]
    o1: Vec<f32>,    // [T, ne] Wo output before the post-norm
    x2: Vec<f32>,    // [T, ne] after the attention residual
    h2: Vec<f32>,    // [T, ne] ffn-normed
    gate: Vec<f32>,  // [T, nff] before the activation
    up: Vec<f32>,    // [T, nff]
    act: Vec<f32>,   // [T, nff] act(gate) * up
    o2: Vec<f32>,    // [T, ne] down output before the post-norm
    /// Per adapted matrix of the layer, `A x` `[T, rank]`.
    ax: HashMap<&'static str, Vec<f32>>,
    /// Per adapted matrix, its dropout mask `[T, cols]` where dropout is on.
    mask: HashMap<&'static str, Vec<f32>>,
}

/// Forward and backward over sequences, gradients summed into `grads` (same layout as
/// [`LoraParams::flat`]) until [`Trainer::take_grads`].
pub struct Trainer<'m> {
    model: &'m Model,
    /// Index of each target's matrix in the parameters.
    index: HashMap<Target, usize>,
    /// Offsets of each matrix's `A` and `B` in the flat gradient.
    offsets: Vec<(usize, usize)>,
    grads: Vec<f32>,
    tapes: Vec<LayerTape>,
    /// Keep only each layer's input on the tape and recompute the layer in the backward
    /// pass (gradient checkpointing: a layer's activations instead of all of them, for one
    /// more forward pass).
    pub checkpoint: bool,
    /// LoRA dropout: the share of each adapted matrix's input entries zeroed (and the rest
    /// scaled by `1 / (1 - p)`) on the adapter's path, in training steps only (as PEFT).
    pub dropout: f32,
    /// Seeds the dropout masks, with the sequence counter, layer and matrix.
    pub seed: u64,
    /// Training sequences so far (each one's masks differ; recomputation repeats them).
    calls: u64,
    /// Whether the forward pass running is a training one (dropout applies).
    training: bool,
}

impl<'m> Trainer<'m> {
    pub fn new(model: &'m Model, params: &LoraParams) -> Trainer<'m> {
        let mut offsets = Vec::new();
        let mut o = 0;
        for m in &params.mats {
            offsets.push((o, o + m.a.len()));
            o += m.a.len() + m.b.len();
        }
        let index = params.mats.iter().enumerate().map(|(i, m)| (m.target, i)).collect();
        Trainer { model, index, offsets, grads: vec![0.0; o], tapes: Vec::new(), checkpoint: false, dropout: 0.0, seed: 0, calls: 0, training: false }
    }

    /// Count `n` training sequences as done without running them (`finetune --resume`
    /// replays the data order to where it stopped; the dropout masks follow).
    pub fn skip(&mut self, n: usize) {
        self.calls += n as u64;
    }

    /// The summed gradients since the last call, zeroed after.
    pub fn take_grads(&mut self) -> Vec<f32> {
        let z = vec![0.0; self.grads.len()];
        std::mem::replace(&mut self.grads, z)
    }

    /// Loss of `tokens` (the summed cross-entropy of `tokens[t + 1]` at every position `t`
    /// with `loss_at[t]`) and the number of those positions; gradients of the summed loss
    /// (times `grad_scale`) are added to the trainer's. `tokens.len()` ≥ 2.
    pub fn step(
        &mut self,
        pool: &Pool,
        params: &LoraParams,
        tokens: &[u32],
        loss_at: &[bool],
        grad_scale: f32,
        backward: bool,
    ) -> Result<(f64, usize), ModelError> {
        let m = self.model;
        let c = &m.config;
        let t_n = tokens.len();
        if t_n < 2 || loss_at.len() != t_n {
            return Err(ModelError::BadBatch("a training sequence needs two tokens or more and a mask per token".into()));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(ModelError::BadBatch(format!("token id {t} is outside the vocabulary ({})", c.n_vocab)));
        }
        let ne = c.n_embd;
        // Embeddings. [T, ne]
        let embd = m.weights.tok_embd.view(&m.file, m.isa);
        let mut x = vec![0f32; t_n * ne];
        for (t, &tok) in tokens.iter().enumerate() {
            embd.dequantize_row(tok as usize, &mut x[t * ne..(t + 1) * ne]);
        }
        x.iter_mut().for_each(|v| *v *= c.embed_scale);
        self.tapes.resize_with(c.n_layer, LayerTape::default);
        self.training = backward;
        if backward {
            self.calls += 1;
        }
        for il in 0..c.n_layer {
            let mut tape = std::mem::take(&mut self.tapes[il]);
            x = self.layer_forward(pool, params, il, x, t_n, &mut tape);
            if self.checkpoint {
                // Only the input stays; the backward pass recomputes the rest.
                tape = LayerTape { x: std::mem::take(&mut tape.x), ..Default::default() };
            }
            self.tapes[il] = tape;
        }
        // Loss positions: final norm, output projection, softmax cross-entropy.
        let pos: Vec<usize> = (0..t_n - 1).filter(|&t| loss_at[t]).collect();
        if pos.is_empty() {
            return Ok((0.0, 0));
        }
        let nv = c.n_vocab;
        let mut hf = vec![0f32; pos.len() * ne];
        for (j, &t) in pos.iter().enumerate() {
            rms_fwd(&x[t * ne..(t + 1) * ne], &m.weights.output_norm, c.rms_eps, &mut hf[j * ne..(j + 1) * ne]);
        }
        let mut logits = vec![0f32; pos.len() * nv];
        dense_fwd(pool, m, &m.weights.output, &hf, pos.len(), &mut logits);
        // Each position's loss, then d loss / d logits = softmax − onehot (through the logit
        // scale) in place; threads take positions.
        let losses = std::sync::Mutex::new(vec![0f64; pos.len()]);
        let mut dlogits = logits;
        by_rows(pool, pos.len(), &mut dlogits, nv, |j0, _, rows| {
            for (j, row) in rows.chunks_exact_mut(nv).enumerate() {
                row.iter_mut().for_each(|v| *v /= c.logit_scale);
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let target = tokens[pos[j0 + j] + 1] as usize;
                let at_target = row[target];
                let mut sum = 0f64;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v as f64;
                }
                losses.lock().unwrap_or_else(|e| e.into_inner())[j0 + j] = sum.ln() + max as f64 - at_target as f64;
                let k = (grad_scale / c.logit_scale) as f64 / sum;
                row.iter_mut().for_each(|v| *v = (*v as f64 * k) as f32);
                row[target] -= grad_scale / c.logit_scale;
            }
        });
        let loss: f64 = losses.into_inner().unwrap_or_else(|e| e.into_inner()).iter().sum();
        if !backward {
            return Ok((loss, pos.len()));
        }
        // Backward: output projection and final norm.
        let mut dhf = vec![0f32; pos.len() * ne];
        dense_bwd(pool, m, &m.weights.output, &dlogits, pos.len(), &mut dhf);
        let mut dx = vec![0f32; t_n * ne];
        for (j, &t) in pos.iter().enumerate() {
            rms_bwd(&x[t * ne..(t + 1) * ne], &m.weights.output_norm, c.rms_eps, &dhf[j * ne..(j + 1) * ne], &mut dx[t * ne..(t + 1) * ne]);
        }
        for il in (0..c.n_layer).rev() {
            let mut tape = std::mem::take(&mut self.tapes[il]);
            if self.checkpoint {
                let x_in = std::mem::take(&mut tape.x);
                self.layer_forward(pool, params, il, x_in, t_n, &mut tape);
            }
            dx = self.layer_backward(pool, params, il, &tape, dx, t_n);
            self.tapes[il] = if self.checkpoint { LayerTape::default() } else { tape };
        }
        Ok((loss, pos.len()))
    }

    /// `out [T, rows] = x [T, cols] · Wᵀ + f·(x Aᵀ) Bᵀ` for the layer's matrix `name`;
    /// keeps `x Aᵀ` on the tape.
    #[allow(clippy::too_many_arguments)]
    fn proj(&self, pool: &Pool, params: &LoraParams, il: usize, name: &'static str, w: &Mat, x: &[f32], t_n: usize, out: &mut [f32], tape: &mut LayerTape) {
        dense_fwd(pool, self.model, w, x, t_n, out);
        if let Some(&mi) = self.index.get(&(Some(il), name)) {
            let lm = &params.mats[mi];
            let (r, isa) = (params.rank, self.model.isa);
            let dropped;
            let x = match self.dropout_mask(il, mi, t_n * lm.cols) {
                Some(mask) => {
                    dropped = x[..t_n * lm.cols].iter().zip(&mask).map(|(v, m)| v * m).collect::<Vec<f32>>();
                    tape.mask.insert(name, mask);
                    &dropped[..]
                }
                None => x,
            };
            // ax [T, rank] = x Aᵀ, then out += (f · ax) Bᵀ; threads take tokens.
            let mut ax = vec![0f32; t_n * r];
            by_rows(pool, t_n, &mut ax, r, |t0, tn, ax| {
                sgemm::nt(isa, lm.cols, Strided::new(&lm.a, lm.cols), r, Strided::new(&x[t0 * lm.cols..], lm.cols), tn, StridedMut::new(ax, r))
            });
            let f = params.factor();
            let fax: Vec<f32> = ax.iter().map(|v| f * v).collect();
            let bt = transpose(&lm.b, lm.rows, r); // [rank, rows]
            by_rows(pool, t_n, &mut out[..t_n * lm.rows], lm.rows, |t0, tn, o| {
                sgemm::nn_acc(isa, lm.rows, Strided::new(&bt, lm.rows), r, Strided::new(&fax[t0 * r..], r), tn, StridedMut::new(o, lm.rows))
            });
            tape.ax.insert(name, ax);
        }
    }

    /// The dropout mask of matrix `mi` of layer `il` for this sequence (`n` entries: 0, or
    /// `1 / (1 - p)`), or `None` when dropout is off or the pass is not a training one.
    fn dropout_mask(&self, il: usize, mi: usize, n: usize) -> Option<Vec<f32>> {
        if !self.training || self.dropout <= 0.0 {
            return None;
        }
        let mut rng = Rng(self.seed ^ self.calls.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((il as u64) << 32) ^ mi as u64);
        let keep = 1.0 / (1.0 - self.dropout);
        Some((0..n).map(|_| if rng.uniform() < self.dropout { 0.0 } else { keep }).collect())
    }

    /// Backward of [`Trainer::proj`]: `dx += dy · W + f·(dy B) A`, and the adapter's
    /// gradients `dB += f · dyᵀ (x Aᵀ)`, `dA += f · (dy B)ᵀ x`.
    #[allow(clippy::too_many_arguments)]
    fn proj_bwd(
        &mut self,
        pool: &Pool,
        params: &LoraParams,
        il: usize,
        name: &'static str,
        w: &Mat,
        x: &[f32],
        dy: &[f32],
        t_n: usize,
        dx: &mut [f32],
        tape: &LayerTape,
    ) {
        dense_bwd(pool, self.model, w, dy, t_n, dx);
        if let Some(&mi) = self.index.get(&(Some(il), name)) {
            let lm = &params.mats[mi];
            let (r, f, isa) = (params.rank, params.factor(), self.model.isa);
            let (rows, cols) = (lm.rows, lm.cols);
            let (oa, ob) = self.offsets[mi];
            let mask = tape.mask.get(name);
            // The adapter saw x ∘ mask.
            let dropped;
            let x = match mask {
                Some(mask) => {
                    dropped = x[..t_n * cols].iter().zip(mask).map(|(v, m)| v * m).collect::<Vec<f32>>();
                    &dropped[..]
                }
                None => &x[..t_n * cols],
            };
            // dBᵀ [rank, rows] = (f · ax)ᵀ dy; added to dB [rows, rank].
            let faxt = transpose(&tape.ax[name].iter().map(|v| f * v).collect::<Vec<f32>>(), t_n, r); // [rank, T]
            let mut dbt = vec![0f32; r * rows];
            by_rows(pool, r, &mut dbt, rows, |k0, kn, d| {
                sgemm::nn_acc(isa, rows, Strided::new(dy, rows), t_n, Strided::new(&faxt[k0 * t_n..], t_n), kn, StridedMut::new(d, rows))
            });
            let db = &mut self.grads[ob..ob + rows * r];
            for (i, g) in db.chunks_exact_mut(r).enumerate() {
                for (k, gk) in g.iter_mut().enumerate() {
                    *gk += dbt[k * rows + i];
                }
            }
            // u [T, rank] = dy (f B)
            let fbt: Vec<f32> = transpose(&lm.b, rows, r).iter().map(|v| f * v).collect(); // [rank, rows]
            let mut u = vec![0f32; t_n * r];
            by_rows(pool, t_n, &mut u, r, |t0, tn, u| {
                sgemm::nt(isa, rows, Strided::new(&fbt, rows), r, Strided::new(&dy[t0 * rows..], rows), tn, StridedMut::new(u, r))
            });
            // dA [rank, cols] += uᵀ x
            let ut = transpose(&u, t_n, r); // [rank, T]
            by_rows(pool, r, &mut self.grads[oa..oa + r * cols], cols, |k0, kn, ga| {
                sgemm::nn_acc(isa, cols, Strided::new(x, cols), t_n, Strided::new(&ut[k0 * t_n..], t_n), kn, StridedMut::new(ga, cols))
            });
            // dx += (u A) ∘ mask
            by_rows(pool, t_n, &mut dx[..t_n * cols], cols, |t0, tn, d| match mask {
                Some(mask) => {
                    let mut ua = vec![0f32; tn * cols];
                    sgemm::nn_acc(isa, cols, Strided::new(&lm.a, cols), r, Strided::new(&u[t0 * r..], r), tn, StridedMut::new(&mut ua, cols));
                    for ((o, v), m) in d.iter_mut().zip(&ua).zip(&mask[t0 * cols..]) {
                        *o += v * m;
                    }
                }
                None => sgemm::nn_acc(isa, cols, Strided::new(&lm.a, cols), r, Strided::new(&u[t0 * r..], r), tn, StridedMut::new(d, cols)),
            });
        }
    }

    fn layer_forward(&self, pool: &Pool, params: &LoraParams, il: usize, x: Vec<f32>, t_n: usize, tape: &mut LayerTape) -> Vec<f32> {
        let m = self.model;
        let c = &m.config;
        let lw = &m.weights.layers[il];
        let (ne, qd, kvd, vd, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.v_dim(), c.head_dim);
        tape.ax.clear();
        tape.mask.clear();
        let mut h1 = vec![0f32; t_n * ne];
        by_tokens(pool, t_n, &mut h1, ne, |t, hj| rms_fwd(&x[t * ne..(t + 1) * ne], &lw.attn_norm, c.rms_eps, hj));
        let (mut q, mut k, mut v) = (vec![0f32; t_n * qd], vec![0f32; t_n * kvd], vec![0f32; t_n * vd]);
        match &lw.qkv {
            QkvProj::Separate { wq, wk, wv } => {
                self.proj(pool, params, il, "attn_q", wq, &h1, t_n, &mut q, tape);
                self.proj(pool, params, il, "attn_k", wk, &h1, t_n, &mut k, tape);
                self.proj(pool, params, il, "attn_v", wv, &h1, t_n, &mut v, tape);
            }
            QkvProj::Fused(w) => {
                let width = qd + kvd + vd;
                let mut fused = vec![0f32; t_n * width];
                self.proj(pool, params, il, "attn_qkv", w, &h1, t_n, &mut fused, tape);
                for t in 0..t_n {
                    let row = &fused[t * width..(t + 1) * width];
                    q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                    k[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                    v[t * vd..(t + 1) * vd].copy_from_slice(&row[qd + kvd..]);
                }
            }
        }
        if let (Some(bq), Some(bk), Some(bv)) = (&lw.bq, &lw.bk, &lw.bv) {
            for t in 0..t_n {
                add(&mut q[t * qd..(t + 1) * qd], bq);
                add(&mut k[t * kvd..(t + 1) * kvd], bk);
                add(&mut v[t * vd..(t + 1) * vd], bv);
            }
        }
        tape.q_raw = q.clone();
        tape.k_raw = k.clone();
        let base = if c.swa_layers[il] { c.rope_base_swa } else { c.rope_base };
        let neox = c.rope_style == RopeStyle::Neox;
        let freqs = m.weights.rope_freqs.as_deref();
        for (buf, norm, width) in [(&mut q, &lw.q_norm, qd), (&mut k, &lw.k_norm, kvd)] {
            by_tokens(pool, t_n, buf, width, |t, row| {
                for head in row.chunks_exact_mut(hd) {
                    if let Some(w) = norm {
                        let src = head.to_vec();
                        rms_fwd(&src, w, c.rms_eps, head);
                    }
                    kernels::ops::rope(&mut head[..c.n_rot], t, base, neox, freqs);
                }
            });
        }
        // Attention, causal (and windowed), per head. [T, att_dim]
        let (att, p) = attention_fwd(pool, m, il, &q, &k, &v, t_n);
        let mut o1 = vec![0f32; t_n * ne];
        self.proj(pool, params, il, "attn_output", &lw.wo, &att, t_n, &mut o1, tape);
        let mut x2 = x.clone();
        by_tokens(pool, t_n, &mut x2, ne, |t, xj| branch_fwd(&o1[t * ne..(t + 1) * ne], lw.attn_post_norm.as_deref(), c.rms_eps, c.residual_scale, xj));
        let mut h2 = vec![0f32; t_n * ne];
        by_tokens(pool, t_n, &mut h2, ne, |t, hj| rms_fwd(&x2[t * ne..(t + 1) * ne], &lw.ffn_norm, c.rms_eps, hj));
        let nf = c.n_ff;
        let (mut gate, mut up) = (vec![0f32; t_n * nf], vec![0f32; t_n * nf]);
        match &lw.gate_up {
            GateUpProj::Separate { gate: wg, up: wu } => {
                self.proj(pool, params, il, "ffn_gate", wg, &h2, t_n, &mut gate, tape);
                self.proj(pool, params, il, "ffn_up", wu, &h2, t_n, &mut up, tape);
            }
            GateUpProj::Fused(w) => {
                let mut fused = vec![0f32; t_n * 2 * nf];
                self.proj(pool, params, il, "ffn_up", w, &h2, t_n, &mut fused, tape);
                for t in 0..t_n {
                    gate[t * nf..(t + 1) * nf].copy_from_slice(&fused[2 * t * nf..(2 * t + 1) * nf]);
                    up[t * nf..(t + 1) * nf].copy_from_slice(&fused[(2 * t + 1) * nf..(2 * t + 2) * nf]);
                }
            }
        }
        let mut act = vec![0f32; t_n * nf];
        by_tokens(pool, t_n, &mut act, nf, |t, a| {
            for (i, ai) in a.iter_mut().enumerate() {
                *ai = activation(c.activation, gate[t * nf + i]).0 * up[t * nf + i];
            }
        });
        let mut o2 = vec![0f32; t_n * ne];
        self.proj(pool, params, il, "ffn_down", &lw.w_down, &act, t_n, &mut o2, tape);
        let mut out = x2.clone();
        by_tokens(pool, t_n, &mut out, ne, |t, oj| branch_fwd(&o2[t * ne..(t + 1) * ne], lw.ffn_post_norm.as_deref(), c.rms_eps, c.residual_scale, oj));
        tape.x = x;
        tape.h1 = h1;
        tape.q = q;
        tape.k = k;
        tape.v = v;
        tape.p = p;
        tape.att = att;
        tape.o1 = o1;
        tape.x2 = x2;
        tape.h2 = h2;
        tape.gate = gate;
        tape.up = up;
        tape.act = act;
        tape.o2 = o2;
        out
    }

    fn layer_backward(&mut self, pool: &Pool, params: &LoraParams, il: usize, tape: &LayerTape, dout: Vec<f32>, t_n: usize) -> Vec<f32> {
        let m = self.model;
        let c = &m.config;
        let lw = &m.weights.layers[il];
        let (ne, qd, kvd, vd, hd, nf) = (c.n_embd, c.q_dim(), c.kv_dim(), c.v_dim(), c.head_dim, c.n_ff);
        let att_dim = c.n_head * c.head_dim_v;
        // Feed-forward branch: out = x2 + rs·post(o2).
        let mut dx2 = dout.clone();
        let mut do2 = vec![0f32; t_n * ne];
        by_tokens(pool, t_n, &mut do2, ne, |t, dj| {
            branch_bwd(&tape.o2[t * ne..(t + 1) * ne], lw.ffn_post_norm.as_deref(), c.rms_eps, c.residual_scale, &dout[t * ne..(t + 1) * ne], dj)
        });
        let mut dact = vec![0f32; t_n * nf];
        self.proj_bwd(pool, params, il, "ffn_down", &lw.w_down, &tape.act, &do2, t_n, &mut dact, tape);
        let (mut dgate, mut dup) = (vec![0f32; t_n * nf], vec![0f32; t_n * nf]);
        let pu = SendPtr(dup.as_mut_ptr());
        by_rows(pool, t_n, &mut dgate, nf, |t0, tn, dg| {
            // SAFETY: these tokens' rows of dup are this chunk's alone, as its rows of dgate.
            let du = unsafe { std::slice::from_raw_parts_mut(pu.at(t0 * nf), tn * nf) };
            for (i, (g, u)) in dg.iter_mut().zip(du).enumerate() {
                let j = t0 * nf + i;
                let (a, da_dg) = activation(c.activation, tape.gate[j]);
                *g = dact[j] * tape.up[j] * da_dg;
                *u = dact[j] * a;
            }
        });
        let mut dh2 = vec![0f32; t_n * ne];
        match &lw.gate_up {
            GateUpProj::Separate { gate: wg, up: wu } => {
                self.proj_bwd(pool, params, il, "ffn_gate", wg, &tape.h2, &dgate, t_n, &mut dh2, tape);
                self.proj_bwd(pool, params, il, "ffn_up", wu, &tape.h2, &dup, t_n, &mut dh2, tape);
            }
            GateUpProj::Fused(w) => {
                let mut dfused = vec![0f32; t_n * 2 * nf];
                for t in 0..t_n {
                    dfused[2 * t * nf..(2 * t + 1) * nf].copy_from_slice(&dgate[t * nf..(t + 1) * nf]);
                    dfused[(2 * t + 1) * nf..(2 * t + 2) * nf].copy_from_slice(&dup[t * nf..(t + 1) * nf]);
                }
                self.proj_bwd(pool, params, il, "ffn_up", w, &tape.h2, &dfused, t_n, &mut dh2, tape);
            }
        }
        by_tokens(pool, t_n, &mut dx2, ne, |t, dj| rms_bwd(&tape.x2[t * ne..(t + 1) * ne], &lw.ffn_norm, c.rms_eps, &dh2[t * ne..(t + 1) * ne], dj));
        // Attention branch: x2 = x + rs·post(o1).
        let mut dx = dx2.clone();
        let mut do1 = vec![0f32; t_n * ne];
        by_tokens(pool, t_n, &mut do1, ne, |t, dj| {
            branch_bwd(&tape.o1[t * ne..(t + 1) * ne], lw.attn_post_norm.as_deref(), c.rms_eps, c.residual_scale, &dx2[t * ne..(t + 1) * ne], dj)
        });
        let mut datt = vec![0f32; t_n * att_dim];
        self.proj_bwd(pool, params, il, "attn_output", &lw.wo, &tape.att, &do1, t_n, &mut datt, tape);
        let (mut dq, mut dk, dv) = attention_bwd(pool, m, il, &tape.q, &tape.k, &tape.v, &tape.p, &datt, t_n);
        // Through rope (its inverse rotation) and qk-norm, back to the raw projections.
        let base = if c.swa_layers[il] { c.rope_base_swa } else { c.rope_base };
        let neox = c.rope_style == RopeStyle::Neox;
        let freqs = m.weights.rope_freqs.as_deref();
        for (grad, raw, norm, width) in [(&mut dq, &tape.q_raw, &lw.q_norm, qd), (&mut dk, &tape.k_raw, &lw.k_norm, kvd)] {
            by_tokens(pool, t_n, grad, width, |t, row| {
                for (i, head) in row.chunks_exact_mut(hd).enumerate() {
                    rope_inv(&mut head[..c.n_rot], t, base, neox, freqs);
                    if let Some(w) = norm {
                        let src = &raw[t * width + i * hd..t * width + (i + 1) * hd];
                        let g = head.to_vec();
                        head.iter_mut().for_each(|v| *v = 0.0);
                        rms_bwd(src, w, c.rms_eps, &g, head);
                    }
                }
            });
        }
        let mut dh1 = vec![0f32; t_n * ne];
        match &lw.qkv {
            QkvProj::Separate { wq, wk, wv } => {
                self.proj_bwd(pool, params, il, "attn_q", wq, &tape.h1, &dq, t_n, &mut dh1, tape);
                self.proj_bwd(pool, params, il, "attn_k", wk, &tape.h1, &dk, t_n, &mut dh1, tape);
                self.proj_bwd(pool, params, il, "attn_v", wv, &tape.h1, &dv, t_n, &mut dh1, tape);
            }
            QkvProj::Fused(w) => {
                let width = qd + kvd + vd;
                let mut dfused = vec![0f32; t_n * width];
                for t in 0..t_n {
                    let row = &mut dfused[t * width..(t + 1) * width];
                    row[..qd].copy_from_slice(&dq[t * qd..(t + 1) * qd]);
                    row[qd..qd + kvd].copy_from_slice(&dk[t * kvd..(t + 1) * kvd]);
                    row[qd + kvd..].copy_from_slice(&dv[t * vd..(t + 1) * vd]);
                }
                self.proj_bwd(pool, params, il, "attn_qkv", w, &tape.h1, &dfused, t_n, &mut dh1, tape);
            }
        }
        by_tokens(pool, t_n, &mut dx, ne, |t, dj| rms_bwd(&tape.x[t * ne..(t + 1) * ne], &lw.attn_norm, c.rms_eps, &dh1[t * ne..(t + 1) * ne], dj));
        dx
    }
}

/// Runs `f(t, row)` for each of the `n` rows of `y` (`[n, width]`), threads taking
/// contiguous ranges.
fn by_tokens(pool: &Pool, n: usize, y: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    by_rows(pool, n, y, width, |t0, _, rows| rows.chunks_exact_mut(width).enumerate().for_each(|(j, row)| f(t0 + j, row)));
}

/// `m [rows, cols]` → `mᵀ [cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for (i, row) in m.chunks_exact(cols).take(rows).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

/// Runs `f(first, count, rows)` on contiguous ranges of the `n` rows of `y` (`[n, width]`),
/// one range per thread, each with its rows of `y` alone.
fn by_rows(pool: &Pool, n: usize, y: &mut [f32], width: usize, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    assert!(y.len() >= n * width);
    let chunks = pool.n_threads().min(n).min(kernels::pool::MAX_CHUNKS);
    let p = SendPtr(y.as_mut_ptr());
    pool.run_chunks(chunks, |i, c| {
        let range = Pool::range(i, c, n);
        if range.is_empty() {
            return;
        }
        // SAFETY: the ranges are disjoint and inside `y` (asserted above).
        let rows = unsafe { std::slice::from_raw_parts_mut(p.at(range.start * width), range.len() * width) };
        f(range.start, range.len(), rows)
    });
}

fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// `1 / sqrt(mean(x²) + eps)` (the sum in f64, as the forward pass's norm).
fn rms_inv(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    1.0 / ((sum / x.len() as f64) as f32 + eps).sqrt()
}

fn rms_fwd(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let r = rms_inv(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * r * g;
    }
}

/// `dx += ∂(rms(x)·w)/∂x · dy`: `r·(w∘dy) − r³/n · x · Σ(w∘dy∘x)`.
fn rms_bwd(x: &[f32], w: &[f32], eps: f32, dy: &[f32], dx: &mut [f32]) {
    let r = rms_inv(x, eps);
    let n = x.len() as f32;
    let s: f32 = x.iter().zip(w).zip(dy).map(|((&xi, &wi), &di)| xi * wi * di).sum();
    let k = r * r * r * s / n;
    for (((d, &xi), &wi), &di) in dx.iter_mut().zip(x).zip(w).zip(dy) {
        *d += r * wi * di - k * xi;
    }
}

/// `x += rs · post(o)` (post-norm where configured).
fn branch_fwd(o: &[f32], post: Option<&[f32]>, eps: f32, rs: f32, x: &mut [f32]) {
    match post {
        Some(w) => {
            let mut n = vec![0f32; o.len()];
            rms_fwd(o, w, eps, &mut n);
            axpy(x, rs, &n);
        }
        None => axpy(x, rs, o),
    }
}

/// `do += ∂(rs · post(o))/∂o · dx`.
fn branch_bwd(o: &[f32], post: Option<&[f32]>, eps: f32, rs: f32, dx: &[f32], d_o: &mut [f32]) {
    let scaled: Vec<f32> = dx.iter().map(|v| v * rs).collect();
    match post {
        Some(w) => rms_bwd(o, w, eps, &scaled, d_o),
        None => add(d_o, &scaled),
    }
}

/// The activation and its derivative at `g`: SiLU, or GELU (tanh form, evaluated).
fn activation(a: Activation, g: f32) -> (f32, f32) {
    match a {
        Activation::SwiGlu => {
            let s = 1.0 / (1.0 + (-g).exp());
            (g * s, s * (1.0 + g * (1.0 - s)))
        }
        Activation::GeGlu => {
            const K: f32 = 0.797_884_6;
            let u = K * (g + 0.044715 * g * g * g);
            let th = u.tanh();
            (0.5 * g * (1.0 + th), 0.5 * (1.0 + th) + 0.5 * g * (1.0 - th * th) * K * (1.0 + 3.0 * 0.044715 * g * g))
        }
    }
}

/// The inverse of `kernels::ops::rope` (rotation by the negated angles), for gradients.
fn rope_inv(x: &mut [f32], pos: usize, base: f32, neox: bool, freq_factors: Option<&[f32]>) {
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
        x[a] = x0 * c + x1 * s;
        x[b] = -x0 * s + x1 * c;
        theta *= theta_scale;
    }
}

/// Rows of a weight matrix dequantized together: each token tile reads them from the
/// cache (16 rows of the widest catalog matrix, 4864 floats, fit in L2).
const RB: usize = 16;

/// `out [T, rows] = x [T, cols] · Wᵀ`, W's rows dequantized on the fly, `RB` at a time;
/// threads take blocks of rows.
fn dense_fwd(pool: &Pool, m: &Model, w: &Mat, x: &[f32], t_n: usize, out: &mut [f32]) {
    let q = w.view(&m.file, m.isa);
    let (rows, cols) = (w.rows, w.cols);
    assert!(x.len() >= t_n * cols && out.len() >= t_n * rows, "dense_fwd: short buffers");
    let ptr = SendPtr(out.as_mut_ptr());
    let blocks = rows.div_ceil(RB);
    pool.run(|i, n| {
        let mut wb = vec![0f32; RB * cols];
        let mut o = vec![0f32; t_n * RB];
        for b in Pool::range(i, n, blocks) {
            let (r0, nr) = (b * RB, RB.min(rows - b * RB));
            for r in 0..nr {
                q.dequantize_row(r0 + r, &mut wb[r * cols..(r + 1) * cols]);
            }
            // o [T, nr]
            sgemm::nt(m.isa, cols, Strided::new(&wb, cols), nr, Strided::new(x, cols), t_n, StridedMut::new(&mut o, nr));
            for t in 0..t_n {
                // SAFETY: columns r0..r0 + nr of `out` are written by the thread owning block b only.
                let dst = unsafe { std::slice::from_raw_parts_mut(ptr.at(t * rows + r0), nr) };
                dst.copy_from_slice(&o[t * nr..(t + 1) * nr]);
            }
        }
    });
}

/// `dx [T, cols] += dy [T, rows] · W`. Threads take blocks of rows: the first adds its
/// blocks' share into `dx` (rows in order), each other one into a share of its own; the
/// shares add after, in thread order.
fn dense_bwd(pool: &Pool, m: &Model, w: &Mat, dy: &[f32], t_n: usize, dx: &mut [f32]) {
    let q = w.view(&m.file, m.isa);
    let (rows, cols) = (w.rows, w.cols);
    assert!(dy.len() >= t_n * rows && dx.len() >= t_n * cols, "dense_bwd: short buffers");
    let n_threads = pool.n_threads().min(kernels::pool::MAX_CHUNKS);
    let parts: Vec<std::sync::Mutex<Vec<f32>>> = (1..n_threads).map(|_| Default::default()).collect();
    let blocks = rows.div_ceil(RB);
    let dxp = SendPtr(dx.as_mut_ptr());
    pool.run_chunks(n_threads, |i, n| {
        let mut own = Vec::new();
        let part = if i == 0 {
            // SAFETY: only chunk 0 touches dx while the job runs.
            unsafe { std::slice::from_raw_parts_mut(dxp.at(0), t_n * cols) }
        } else {
            own.resize(t_n * cols, 0f32);
            &mut own[..]
        };
        let mut wb = vec![0f32; RB * cols];
        for b in Pool::range(i, n, blocks) {
            let (r0, nr) = (b * RB, RB.min(rows - b * RB));
            for r in 0..nr {
                q.dequantize_row(r0 + r, &mut wb[r * cols..(r + 1) * cols]);
            }
            sgemm::nn_acc(m.isa, cols, Strided::new(&wb, cols), nr, Strided::new(&dy[r0..], rows), t_n, StridedMut::new(part, cols));
        }
        if i > 0 {
            *parts[i - 1].lock().unwrap_or_else(|e| e.into_inner()) = own;
        }
    });
    let parts: Vec<Vec<f32>> = parts.into_iter().map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner())).collect();
    by_rows(pool, t_n, &mut dx[..t_n * cols], cols, |t0, tn, d| {
        for p in &parts {
            add(d, &p[t0 * cols..(t0 + tn) * cols]);
        }
    });
}

/// Query rows per attention tile: their scores against the keys any of them sees come
/// from one matrix product.
const QB: usize = 32;

/// The keys `lo..hi` that some query row of `t0..t1` sees (causal, within the window).
fn tile_keys(window: Option<usize>, t0: usize, t1: usize) -> (usize, usize) {
    (window.map_or(0, |w| (t0 + 1).saturating_sub(w)), t1)
}

/// Causal softmax attention of every head over the sequence; returns the output
/// `[T, n_head * hd_v]` and the probabilities `[n_head, T, T]` (0 outside the mask).
/// Threads take heads.
fn attention_fwd(pool: &Pool, m: &Model, il: usize, q: &[f32], k: &[f32], v: &[f32], t_n: usize) -> (Vec<f32>, Vec<f32>) {
    let c = &m.config;
    let (nh, hd, hdv, isa) = (c.n_head, c.head_dim, c.head_dim_v, m.isa);
    let group = nh / c.n_head_kv;
    let (qd, kvd, vd) = (c.q_dim(), c.kv_dim(), c.v_dim());
    let window = if c.swa_layers[il] { c.sliding_window } else { None };
    let mut out = vec![0f32; t_n * nh * hdv];
    let mut p = vec![0f32; nh * t_n * t_n];
    let (po, pp) = (SendPtr(out.as_mut_ptr()), SendPtr(p.as_mut_ptr()));
    pool.run_chunks(nh.min(kernels::pool::MAX_CHUNKS), |i, n| {
        let mut oh = vec![0f32; t_n * hdv];
        for h in Pool::range(i, n, nh) {
            let g = h / group;
            // SAFETY: head h's probabilities are this chunk's alone.
            let ph = unsafe { std::slice::from_raw_parts_mut(pp.at(h * t_n * t_n), t_n * t_n) };
            oh.iter_mut().for_each(|x| *x = 0.0);
            for t0 in (0..t_n).step_by(QB) {
                let t1 = (t0 + QB).min(t_n);
                let (lo, hi) = tile_keys(window, t0, t1);
                // S [t1 - t0, hi - lo] = Q_h Kᵀ, in place in P's rows.
                let (qt, kt) = (Strided::new(&q[t0 * qd + h * hd..], qd), Strided::new(&k[lo * kvd + g * hd..], kvd));
                sgemm::nt(isa, hd, kt, hi - lo, qt, t1 - t0, StridedMut::new(&mut ph[t0 * t_n + lo..], t_n));
                for ti in t0..t1 {
                    let row = &mut ph[ti * t_n..(ti + 1) * t_n];
                    let lo_i = window.map_or(0, |w| (ti + 1).saturating_sub(w));
                    row[lo..lo_i].iter_mut().for_each(|x| *x = 0.0);
                    row[ti + 1..hi.max(ti + 1)].iter_mut().for_each(|x| *x = 0.0);
                    let seen = &mut row[lo_i..=ti];
                    let mut max = f32::NEG_INFINITY;
                    for s in seen.iter_mut() {
                        *s *= c.attn_scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0f32;
                    for s in seen.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    seen.iter_mut().for_each(|s| *s /= sum);
                }
                // O_h [t1 - t0, hdv] = P V
                let vt = Strided::new(&v[lo * vd + g * hdv..], vd);
                sgemm::nn_acc(isa, hdv, vt, hi - lo, Strided::new(&ph[t0 * t_n + lo..], t_n), t1 - t0, StridedMut::new(&mut oh[t0 * hdv..], hdv));
            }
            for t in 0..t_n {
                // SAFETY: head h's columns of `out` are this chunk's alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(po.at(t * nh * hdv + h * hdv), hdv) };
                dst.copy_from_slice(&oh[t * hdv..(t + 1) * hdv]);
            }
        }
    });
    (out, p)
}

/// Gradients of the attention's inputs: `(dq [T, qd], dk [T, kvd], dv [T, vd])`. Threads
/// take query heads; each head's share of `dk` and `dv` is kept apart, then the heads of a
/// group add in order.
#[allow(clippy::too_many_arguments)]
fn attention_bwd(pool: &Pool, m: &Model, il: usize, q: &[f32], k: &[f32], v: &[f32], p: &[f32], dout: &[f32], t_n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = &m.config;
    let (nh, nkv, hd, hdv, isa) = (c.n_head, c.n_head_kv, c.head_dim, c.head_dim_v, m.isa);
    let group = nh / nkv;
    let (qd, kvd, vd, od) = (c.q_dim(), c.kv_dim(), c.v_dim(), nh * hdv);
    let window = if c.swa_layers[il] { c.sliding_window } else { None };
    let mut dq = vec![0f32; t_n * qd];
    // Per query head: its dk [T, hd] and dv [T, hdv].
    let mut dkh = vec![0f32; nh * t_n * hd];
    let mut dvh = vec![0f32; nh * t_n * hdv];
    let (pq, pk, pv) = (SendPtr(dq.as_mut_ptr()), SendPtr(dkh.as_mut_ptr()), SendPtr(dvh.as_mut_ptr()));
    pool.run_chunks(nh.min(kernels::pool::MAX_CHUNKS), |i, n| {
        let mut ds = vec![0f32; t_n * t_n];
        let mut dqh = vec![0f32; t_n * hd];
        let (mut dst, mut pt) = (vec![0f32; QB * t_n], vec![0f32; QB * t_n]);
        for h in Pool::range(i, n, nh) {
            let g = h / group;
            let ph = &p[h * t_n * t_n..(h + 1) * t_n * t_n];
            let dot_h = &dout[h * hdv..];
            ds.iter_mut().for_each(|x| *x = 0.0);
            dqh.iter_mut().for_each(|x| *x = 0.0);
            for t0 in (0..t_n).step_by(QB) {
                let t1 = (t0 + QB).min(t_n);
                let (lo, hi) = tile_keys(window, t0, t1);
                // dP [t1 - t0, hi - lo] = dO_h Vᵀ, in ds's rows.
                let vt = Strided::new(&v[lo * vd + g * hdv..], vd);
                sgemm::nt(isa, hdv, vt, hi - lo, Strided::new(&dot_h[t0 * od..], od), t1 - t0, StridedMut::new(&mut ds[t0 * t_n + lo..], t_n));
                // dS = P ∘ (dP − Σ P∘dP) · scale
                for ti in t0..t1 {
                    let (prow, drow) = (&ph[ti * t_n..(ti + 1) * t_n], &mut ds[ti * t_n..(ti + 1) * t_n]);
                    let sum: f32 = prow[lo..hi].iter().zip(&drow[lo..hi]).map(|(p, d)| p * d).sum();
                    for (d, &p) in drow[lo..hi].iter_mut().zip(&prow[lo..hi]) {
                        *d = p * (*d - sum) * c.attn_scale;
                    }
                }
                // dQ_h [t1 - t0, hd] = dS K
                let kt = Strided::new(&k[lo * kvd + g * hd..], kvd);
                sgemm::nn_acc(isa, hd, kt, hi - lo, Strided::new(&ds[t0 * t_n + lo..], t_n), t1 - t0, StridedMut::new(&mut dqh[t0 * hd..], hd));
            }
            for t in 0..t_n {
                // SAFETY: head h's columns of dq are this chunk's alone.
                let dst = unsafe { std::slice::from_raw_parts_mut(pq.at(t * qd + h * hd), hd) };
                dst.copy_from_slice(&dqh[t * hd..(t + 1) * hd]);
            }
            // dK_h = dSᵀ Q_h and dV_h = Pᵀ dO_h, by tiles of key rows over the queries that
            // see them (the tile's block of dSᵀ and Pᵀ transposed into `dst`, `pt`).
            // SAFETY: head h's shares are this chunk's alone.
            let (dk, dv) =
                unsafe { (std::slice::from_raw_parts_mut(pk.at(h * t_n * hd), t_n * hd), std::slice::from_raw_parts_mut(pv.at(h * t_n * hdv), t_n * hdv)) };
            for j0 in (0..t_n).step_by(QB) {
                let j1 = (j0 + QB).min(t_n);
                let hi = window.map_or(t_n, |w| (j1 + w - 1).min(t_n));
                let (nj, ni) = (j1 - j0, hi - j0);
                // dst, pt [nj, ni]: row j − j0 holds column j of dS, P over the queries j0..hi.
                for (a, ti) in (j0..hi).enumerate() {
                    for j in j0..j1 {
                        dst[(j - j0) * ni + a] = ds[ti * t_n + j];
                        pt[(j - j0) * ni + a] = ph[ti * t_n + j];
                    }
                }
                let qt = Strided::new(&q[j0 * qd + h * hd..], qd);
                sgemm::nn_acc(isa, hd, qt, ni, Strided::new(&dst, ni), nj, StridedMut::new(&mut dk[j0 * hd..], hd));
                let ot = Strided::new(&dot_h[j0 * od..], od);
                sgemm::nn_acc(isa, hdv, ot, ni, Strided::new(&pt, ni), nj, StridedMut::new(&mut dv[j0 * hdv..], hdv));
            }
        }
    });
    let (mut dk, mut dv) = (vec![0f32; t_n * kvd], vec![0f32; t_n * vd]);
    for h in 0..nh {
        let g = h / group;
        for t in 0..t_n {
            add(&mut dk[t * kvd + g * hd..t * kvd + (g + 1) * hd], &dkh[(h * t_n + t) * hd..(h * t_n + t + 1) * hd]);
            add(&mut dv[t * vd + g * hdv..t * vd + (g + 1) * hdv], &dvh[(h * t_n + t) * hdv..(h * t_n + t + 1) * hdv]);
        }
    }
    (dq, dk, dv)
}

/// AdamW over the flat parameters, with linear warm-up and cosine decay to 10% of the peak.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub warmup: usize,
    pub total: usize,
    pub step: usize,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl AdamW {
    pub fn new(n: usize, lr: f32, weight_decay: f32, warmup: usize, total: usize) -> AdamW {
        AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, warmup, total: total.max(1), step: 0, m: vec![0.0; n], v: vec![0.0; n] }
    }

    /// The learning rate of the next step (step `i`, from 0): `lr · (i + 1) / warmup` while
    /// warming up, then `lr · (0.1 + 0.9 · (1 + cos(π · progress)) / 2)` with `progress`
    /// going from 0 at the first step after warm-up towards 1 at the last.
    pub fn rate(&self) -> f32 {
        let i = self.step;
        if i < self.warmup {
            return self.lr * (i + 1) as f32 / self.warmup as f32;
        }
        let progress = ((i - self.warmup) as f32 / self.total.saturating_sub(self.warmup).max(1) as f32).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()))
    }

    /// One update of `params` with `grads` (already averaged).
    pub fn update(&mut self, params: &mut [f32], grads: &[f32]) {
        let lr = self.rate();
        self.step += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for i in 0..params.len() {
            let g = grads[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let (mh, vh) = (self.m[i] / c1, self.v[i] / c2);
            params[i] -= lr * (mh / (vh.sqrt() + self.eps) + self.weight_decay * params[i]);
        }
    }
}

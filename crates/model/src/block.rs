//! The forward pass: ONE decoder block, configured by [`Config`], run over a flattened
//! batch of tokens from several sequences, each at its own position with its own cache.
//!
//! Per layer, for `T` tokens (shapes in comments):
//! ```text
//! x [T, n_embd] ── rms_norm ── Wq,Wk,Wv (+bias) ── q [T, n_head*hd], k/v [T, n_kv*hd]
//!     qk-norm (opt) ── rope(pos) ── k,v → cache ── attention over own sequence (causal,
//!     sliding window opt) ── Wo ── post-norm (opt) ── + x
//! x ── rms_norm ── gate,up [T, n_ff] ── act(gate)*up ── Wdown ── post-norm (opt) ── + x
//! ```
//! then the final norm and output projection for the tokens that asked for logits.

use crate::config::{Activation, Config, RopeStyle};
use crate::kv_cache::KvCache;
use crate::lora::{Adapters, PerToken};
use crate::weights::{GateUpProj, Mat, QkvProj};
use crate::{Model, ModelError};
use kernels::attention::{self, KvView};
use kernels::matmul::{matmul, matmul_split, ActBuf, QMatrix};
use kernels::ops;
use kernels::pool::Pool;
use std::sync::Arc;

/// Batches of at least this many tokens spread their per-token element-wise work (norms,
/// RoPE, the gated activation, the residual adds) over the pool; smaller ones run it on the
/// engine thread, where a dispatch would cost more than the work. Each token's values are
/// its own either way.
const ROWS_APART: usize = 8;

/// A flattened batch: token `i` belongs to sequence `seq[i]` (an index into the caches
/// passed to [`Model::forward`]) and is appended at that sequence's next position. Tokens of
/// one sequence must appear in order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub seq: Vec<usize>,
    /// Whether to compute logits for this token.
    pub logits: Vec<bool>,
    /// Whether the token was read from a request (a prompt, an input to embed) rather than
    /// generated: prompt tokens may take a different path through the weights
    /// (`kernels::matmul::matmul_split`), so each kind of token has results of its own.
    pub prompt: Vec<bool>,
    /// Per sequence (by index, as `seq`), the LoRA adapters it runs with; a sequence past
    /// the end has none.
    pub adapters: Vec<Option<Arc<Adapters>>>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.seq.clear();
        self.logits.clear();
        self.prompt.clear();
        self.adapters.clear();
    }
    /// A token read from a request (its prompt, an input to embed).
    pub fn push(&mut self, token: u32, seq: usize, logits: bool) {
        self.tokens.push(token);
        self.seq.push(seq);
        self.logits.push(logits);
        self.prompt.push(true);
    }
    /// A token the model generated, fed back to decode the next.
    pub fn push_generated(&mut self, token: u32, seq: usize, logits: bool) {
        self.push(token, seq, logits);
        *self.prompt.last_mut().expect("just pushed") = false;
    }
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Buffers of the forward pass, reused across calls (they grow to the largest batch seen,
/// so a decode step allocates nothing).
#[derive(Default)]
pub struct Scratch {
    pos: Vec<usize>,
    next: Vec<usize>, // [n_sequences] next position of each sequence
    x: Vec<f32>,      // [T, n_embd] residual stream
    h: Vec<f32>,      // [T, n_embd] normed input of a sub-block
    q: Vec<f32>,      // [T, n_head * hd]
    k: Vec<f32>,      // [T, n_kv * hd]
    v: Vec<f32>,      // [T, n_kv * hd_v]
    att: Vec<f32>,    // [T, n_head * hd_v]
    o: Vec<f32>,      // [T, n_embd]
    gate: Vec<f32>,   // [T, n_ff]
    fused: Vec<f32>,  // [T, q+k+v] or [T, 2*n_ff] output of a fused projection
    up: Vec<f32>,     // [T, n_ff]
    attn: attention::Scratch,
    last: Vec<f32>,       // [n_out, n_embd]
    pub logits: Vec<f32>, // [n_out, n_vocab]
    act: ActBuf,
    /// When set, every weight matmul's input is summed into it (`bantam imatrix`).
    pub stats: Option<ActivationStats>,
}

/// Per weight matrix, the sum over tokens of each input column's square and the number of
/// tokens: what llama-imatrix collects for the importance matrix. Sums are f32, accumulated
/// token by token in batch order, as llama-imatrix accumulates them.
#[derive(Debug, Default, Clone)]
pub struct ActivationStats {
    /// Also collect `output.weight`'s input (llama-imatrix's `--process-output`).
    pub process_output: bool,
    entries: std::collections::BTreeMap<(usize, &'static str), (Vec<f32>, u64)>,
}

impl ActivationStats {
    pub fn new(process_output: bool) -> Self {
        ActivationStats { process_output, entries: Default::default() }
    }

    /// Add `x` `[n_rows, n_cols]`, the input of layer `il`'s `which` matrix (`usize::MAX`
    /// for tensors outside the blocks).
    fn add(&mut self, il: usize, which: &'static str, x: &[f32], n_cols: usize) {
        let (sums, count) = self.entries.entry((il, which)).or_insert_with(|| (vec![0.0; n_cols], 0));
        for row in x.chunks_exact(n_cols) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v * v;
            }
            *count += 1;
        }
    }

    /// `(tensor name, sums [n_cols], tokens)` for every matrix seen, by name.
    pub fn entries(&self) -> impl Iterator<Item = (String, &[f32], u64)> {
        self.entries.iter().map(|(&(il, which), (sums, n))| {
            let name = if il == usize::MAX { format!("{which}.weight") } else { format!("blk.{il}.{which}.weight") };
            (name, sums.as_slice(), *n)
        })
    }
}

impl Scratch {
    /// Bytes the buffers reach for batches of up to `n_tokens` (one of them with logits)
    /// on `n_threads` threads, with caches of up to `n_ctx` positions: what a memory plan
    /// adds to the weights and the caches.
    pub fn planned_bytes(c: &Config, n_tokens: usize, n_ctx: usize, n_threads: usize) -> usize {
        let t = n_tokens.max(1);
        let att = c.n_head * c.head_dim_v;
        let fused = (c.q_dim() + c.kv_dim() + c.v_dim()).max(2 * c.n_ff);
        let rows = t * (3 * c.n_embd + c.q_dim() + c.kv_dim() + c.v_dim() + att + 2 * c.n_ff + fused);
        // Quantized activations: at most one byte and a bit per element, four slots.
        let acts = 4 * t * c.n_embd.max(c.n_ff) * 9 / 8;
        let group = c.n_head / c.n_head_kv.max(1);
        let per_thread = attention::thread_floats(c.head_dim, c.head_dim_v, group);
        let partial = c.n_head_kv * (n_ctx / attention::KEY_CHUNK + 1) * group * (c.head_dim_v + 2);
        // The dense path's rows and products per thread (kernels::matmul::DENSE_ROWS rows).
        let dense = kernels::matmul::DENSE_ROWS * (c.n_embd.max(c.n_ff).max(att) + t);
        4 * (rows + c.n_embd + c.n_vocab + n_threads * (per_thread + dense) + partial) + acts
    }
}

fn fit(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Largest head dimension the attention kernel takes (checked at load).
pub(crate) const MAX_HEAD_DIM: usize = 512;

impl Model {
    fn view(&self, m: &Mat) -> QMatrix<'_> {
        m.view(&self.file, self.isa)
    }

    /// Whether a prompt token and a generated one can get different results (some matrix
    /// takes the dense or the int8 path for prompt tokens): then a cached generated token is not what
    /// the same token read from a prompt would have left, and a prefix cache must not serve
    /// one for the other.
    pub fn prompt_tokens_differ(&self) -> bool {
        let w = &self.weights;
        let dense = |m: &Mat| self.view(m).prompts_differ();
        w.layers.iter().any(|l| {
            let qkv = match &l.qkv {
                QkvProj::Separate { wq, wk, wv } => dense(wq) || dense(wk) || dense(wv),
                QkvProj::Fused(m) => dense(m),
            };
            let gate_up = match &l.gate_up {
                GateUpProj::Separate { gate, up } => dense(gate) || dense(up),
                GateUpProj::Fused(m) => dense(m),
            };
            qkv || gate_up || dense(&l.wo) || dense(&l.w_down)
        })
    }

    /// `out = x · mᵀ` for the batch's tokens, each by its kind (`Batch::prompt`).
    fn mm(&self, pool: &Pool, m: &Mat, batch: &Batch, x: &[f32], act: &mut ActBuf, out: &mut [f32]) {
        let n = batch.len();
        matmul_split(pool, &mut [(&self.view(m), &mut out[..n * m.rows])], &x[..n * m.cols], n, &batch.prompt, act);
    }

    /// A sub-block's output `o` joins the residual stream `x`: post-norm (gemma3) and
    /// residual scale (granite) where configured, then `x += o`. Both `[n_embd]`.
    fn add_branch(&self, x: &mut [f32], o: &mut [f32], post_norm: Option<&[f32]>) {
        let c = &self.config;
        if let Some(w) = post_norm {
            ops::rms_norm(o, w, c.rms_eps);
        }
        if c.residual_scale != 1.0 {
            o.iter_mut().for_each(|v| *v *= c.residual_scale);
        }
        ops::add_assign(x, o);
    }

    /// Run the batch; returns the logits `[n_out, n_vocab]` of the tokens marked in
    /// `batch.logits`, in batch order.
    pub fn forward<'s>(&self, pool: &Pool, batch: &Batch, caches: &mut [&mut KvCache], s: &'s mut Scratch) -> Result<&'s [f32], ModelError> {
        Ok(self.forward_split(pool, batch, caches, s, usize::MAX)?.0)
    }

    /// Run the batch; of the tokens marked in `batch.logits`, in batch order, the first
    /// `n_logits` get logits `[n_logits, n_vocab]` and the rest their final hidden states
    /// `[n_out - n_logits, n_embd]` (embeddings computed in the same pass as generation).
    pub fn forward_split<'s>(
        &self,
        pool: &Pool,
        batch: &Batch,
        caches: &mut [&mut KvCache],
        s: &'s mut Scratch,
        n_logits: usize,
    ) -> Result<(&'s [f32], &'s [f32]), ModelError> {
        let n_out = self.forward_hidden(pool, batch, caches, s)?;
        let n_logits = n_logits.min(n_out);
        let (ne, nv) = (self.config.n_embd, self.config.n_vocab);
        if s.logits.len() != n_logits * nv {
            s.logits.resize(n_logits * nv, 0.0);
        }
        if n_logits > 0 {
            if let Some(st) = s.stats.as_mut().filter(|st| st.process_output) {
                st.add(usize::MAX, "output", &s.last[..n_logits * ne], ne);
            }
            let w = self.weights.output.view(&self.file, self.isa);
            // Every token through the generated tokens' path: a prompt usually asks for one
            // token's logits, and the prompt paths would repack (or dequantize) the whole
            // vocabulary's rows for it.
            matmul(pool, &w, &s.last[..n_logits * ne], n_logits, &mut s.act, &mut s.logits[..]);
            if (PerToken { sets: &batch.adapters, seq: &batch.seq }).any() {
                // The output rows belong to the tokens marked for logits, in batch order.
                let seq: Vec<usize> = batch.seq.iter().zip(&batch.logits).filter(|(_, &l)| l).map(|(&q, _)| q).take(n_logits).collect();
                PerToken { sets: &batch.adapters, seq: &seq }.apply(pool, &(None, "output"), &s.last, ne, &mut s.logits, nv);
            }
            if self.config.logit_scale != 1.0 {
                s.logits.iter_mut().for_each(|v| *v /= self.config.logit_scale);
            }
        }
        Ok((&s.logits[..n_logits * nv], &s.last[n_logits * ne..n_out * ne]))
    }

    /// Run the batch up to the final norm; returns the final hidden states
    /// `[n_out, n_embd]` of the tokens marked in `batch.logits` (what embeddings pool).
    pub fn hidden<'s>(&self, pool: &Pool, batch: &Batch, caches: &mut [&mut KvCache], s: &'s mut Scratch) -> Result<&'s [f32], ModelError> {
        let n_out = self.forward_hidden(pool, batch, caches, s)?;
        Ok(&s.last[..n_out * self.config.n_embd])
    }

    /// The decoder layers and the final norm; leaves `[n_out, n_embd]` in `s.last` and
    /// returns `n_out`.
    fn forward_hidden(&self, pool: &Pool, batch: &Batch, caches: &mut [&mut KvCache], s: &mut Scratch) -> Result<usize, ModelError> {
        let c = &self.config;
        let t_n = batch.len();
        for (what, len) in [("seq", batch.seq.len()), ("logits", batch.logits.len()), ("prompt", batch.prompt.len())] {
            if len != t_n && !(what == "prompt" && len == 0) {
                return Err(ModelError::BadBatch(format!("{t_n} tokens but {len} entries in `{what}`")));
            }
        }
        // Positions: each sequence continues from its cache length.
        s.pos.clear();
        // Taken out of the scratch (and put back below) so it is reused without a borrow.
        let mut next = std::mem::take(&mut s.next);
        next.clear();
        next.extend(caches.iter().map(|k| k.len()));
        for (i, (&tok, &sq)) in batch.tokens.iter().zip(&batch.seq).enumerate() {
            let cache = caches.get(sq).ok_or_else(|| ModelError::BadBatch(format!("token {i} names sequence {sq} of {}", caches.len())))?;
            if tok as usize >= c.n_vocab {
                return Err(ModelError::BadBatch(format!("token id {tok} is outside the vocabulary ({})", c.n_vocab)));
            }
            if next[sq] >= cache.capacity() {
                return Err(ModelError::ContextFull { capacity: cache.capacity() });
            }
            s.pos.push(next[sq]);
            next[sq] += 1;
        }
        // A sliding-window ring has room for so many new positions per pass.
        for (sq, (cache, &n)) in caches.iter().zip(&next).enumerate() {
            if n - cache.len() > cache.max_pass() {
                return Err(ModelError::BadBatch(format!(
                    "{} tokens of sequence {sq} in one pass; its cache takes at most {} per pass",
                    n - cache.len(),
                    cache.max_pass()
                )));
            }
        }
        let (ne, qd, kvd, vd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.v_dim());
        let att_dim = c.n_head * c.head_dim_v;
        fit(&mut s.x, t_n * ne);
        fit(&mut s.h, t_n * ne);
        fit(&mut s.q, t_n * qd);
        fit(&mut s.k, t_n * kvd);
        fit(&mut s.v, t_n * vd);
        fit(&mut s.att, t_n * att_dim);
        fit(&mut s.o, t_n * ne);
        fit(&mut s.gate, t_n * c.n_ff);
        fit(&mut s.up, t_n * c.n_ff);

        let lora = PerToken { sets: &batch.adapters, seq: &batch.seq };
        // Embeddings (with an adapter's delta before the scale). [T, n_embd]
        let embd = self.weights.tok_embd.view(&self.file, self.isa);
        for (t, &tok) in batch.tokens.iter().enumerate() {
            embd.dequantize_row(tok as usize, &mut s.x[t * ne..(t + 1) * ne]);
        }
        lora.apply_embd(&batch.tokens, &mut s.x[..t_n * ne], ne);
        if c.embed_scale != 1.0 {
            s.x[..t_n * ne].iter_mut().for_each(|v| *v *= c.embed_scale);
        }

        for (il, lw) in self.weights.layers.iter().enumerate() {
            // Attention sub-block.
            pool.rows([(&mut s.h, ne), (&mut s.x, ne)], t_n, ROWS_APART, |_, [h, x]| ops::rms_norm_into(h, x, &lw.attn_norm, c.rms_eps));
            if let Some(st) = &mut s.stats {
                let names: &[&'static str] = match &lw.qkv {
                    QkvProj::Separate { .. } => &["attn_q", "attn_k", "attn_v"],
                    QkvProj::Fused(_) => &["attn_qkv"],
                };
                for n in names {
                    st.add(il, n, &s.h[..t_n * ne], ne);
                }
            }
            match &lw.qkv {
                QkvProj::Separate { wq, wk, wv } => {
                    let (wq, wk, wv) = (self.view(wq), self.view(wk), self.view(wv));
                    matmul_split(
                        pool,
                        &mut [(&wq, &mut s.q[..t_n * qd]), (&wk, &mut s.k[..t_n * kvd]), (&wv, &mut s.v[..t_n * vd])],
                        &s.h[..t_n * ne],
                        t_n,
                        &batch.prompt,
                        &mut s.act,
                    );
                    lora.apply(pool, &(Some(il), "attn_q"), &s.h, ne, &mut s.q, qd);
                    lora.apply(pool, &(Some(il), "attn_k"), &s.h, ne, &mut s.k, kvd);
                    lora.apply(pool, &(Some(il), "attn_v"), &s.h, ne, &mut s.v, vd);
                }
                QkvProj::Fused(w) => {
                    // [T, q + k + v] in s.fused, then split.
                    let width = qd + kvd + vd;
                    fit(&mut s.fused, t_n * width);
                    self.mm(pool, w, batch, &s.h, &mut s.act, &mut s.fused);
                    lora.apply(pool, &(Some(il), "attn_qkv"), &s.h, ne, &mut s.fused, width);
                    for t in 0..t_n {
                        let row = &s.fused[t * width..(t + 1) * width];
                        s.q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                        s.k[t * kvd..(t + 1) * kvd].copy_from_slice(&row[qd..qd + kvd]);
                        s.v[t * vd..(t + 1) * vd].copy_from_slice(&row[qd + kvd..]);
                    }
                }
            }
            let swa = c.swa_layers[il];
            let base = if swa { c.rope_base_swa } else { c.rope_base };
            let (pos, seq, kv) = (&s.pos, &batch.seq, &*caches);
            pool.rows([(&mut s.q, qd), (&mut s.k, kvd), (&mut s.v, vd)], t_n, ROWS_APART, |t, [q, k, v]| {
                if let (Some(bq), Some(bk), Some(bv)) = (&lw.bq, &lw.bk, &lw.bv) {
                    ops::add_assign(q, bq);
                    ops::add_assign(k, bk);
                    ops::add_assign(v, bv);
                }
                for (x, norm) in [(&mut *q, &lw.q_norm), (&mut *k, &lw.k_norm)] {
                    if let Some(w) = norm {
                        for head in x.chunks_exact_mut(c.head_dim) {
                            ops::rms_norm(head, w, c.rms_eps);
                        }
                    }
                }
                let neox = c.rope_style == RopeStyle::Neox;
                for head in q.chunks_exact_mut(c.head_dim).chain(k.chunks_exact_mut(c.head_dim)) {
                    // Only the first n_rot dims rotate (all of them but for phi3).
                    ops::rope(&mut head[..c.n_rot], pos[t], base, neox, self.weights.rope_freqs.as_deref());
                }
                // A quantized cache stores rotated heads (and the queries rotate with K).
                let types = kv[seq[t]].types();
                if let Some(n) = types.k.k_rotation(c.head_dim) {
                    attention::rotate(q, n);
                    attention::rotate(k, n);
                }
                if let Some(n) = types.v.v_rotation(c.head_dim_v) {
                    attention::rotate(v, n);
                }
            });
            for t in 0..t_n {
                caches[batch.seq[t]].store(il, s.pos[t], &s.k[t * kvd..(t + 1) * kvd], &s.v[t * vd..(t + 1) * vd]);
            }
            self.attention(pool, il, batch, caches, s);
            for t in 0..t_n {
                if let Some(n) = caches[batch.seq[t]].types().v.v_rotation(c.head_dim_v) {
                    attention::rotate(&mut s.att[t * att_dim..(t + 1) * att_dim], n);
                }
            }
            if let Some(st) = &mut s.stats {
                st.add(il, "attn_output", &s.att[..t_n * att_dim], att_dim);
            }
            self.mm(pool, &lw.wo, batch, &s.att, &mut s.act, &mut s.o);
            lora.apply(pool, &(Some(il), "attn_output"), &s.att, att_dim, &mut s.o, ne);
            pool.rows([(&mut s.x, ne), (&mut s.o, ne), (&mut s.h, ne)], t_n, ROWS_APART, |_, [x, o, h]| {
                self.add_branch(x, o, lw.attn_post_norm.as_deref());
                ops::rms_norm_into(h, x, &lw.ffn_norm, c.rms_eps);
            });
            // Feed-forward sub-block.
            let nf = t_n * c.n_ff;
            if let Some(st) = &mut s.stats {
                let names: &[&'static str] = match &lw.gate_up {
                    GateUpProj::Separate { .. } => &["ffn_gate", "ffn_up"],
                    GateUpProj::Fused(_) => &["ffn_up"],
                };
                for n in names {
                    st.add(il, n, &s.h[..t_n * ne], ne);
                }
            }
            match &lw.gate_up {
                GateUpProj::Separate { gate, up } => {
                    let (wg, wu) = (self.view(gate), self.view(up));
                    matmul_split(pool, &mut [(&wg, &mut s.gate[..nf]), (&wu, &mut s.up[..nf])], &s.h[..t_n * ne], t_n, &batch.prompt, &mut s.act);
                    lora.apply(pool, &(Some(il), "ffn_gate"), &s.h, ne, &mut s.gate, c.n_ff);
                    lora.apply(pool, &(Some(il), "ffn_up"), &s.h, ne, &mut s.up, c.n_ff);
                }
                GateUpProj::Fused(w) => {
                    // [T, 2 * n_ff]: gate first, then up.
                    let ff = c.n_ff;
                    fit(&mut s.fused, t_n * 2 * ff);
                    self.mm(pool, w, batch, &s.h, &mut s.act, &mut s.fused);
                    lora.apply(pool, &(Some(il), "ffn_up"), &s.h, ne, &mut s.fused, 2 * ff);
                    for t in 0..t_n {
                        s.gate[t * ff..(t + 1) * ff].copy_from_slice(&s.fused[2 * t * ff..(2 * t + 1) * ff]);
                        s.up[t * ff..(t + 1) * ff].copy_from_slice(&s.fused[(2 * t + 1) * ff..(2 * t + 2) * ff]);
                    }
                }
            }
            pool.rows([(&mut s.gate, c.n_ff), (&mut s.up, c.n_ff)], t_n, ROWS_APART, |_, [gate, up]| match c.activation {
                Activation::SwiGlu => ops::swiglu(gate, up),
                Activation::GeGlu => ops::geglu(gate, up),
            });
            if let Some(st) = &mut s.stats {
                st.add(il, "ffn_down", &s.gate[..nf], c.n_ff);
            }
            self.mm(pool, &lw.w_down, batch, &s.gate, &mut s.act, &mut s.o);
            lora.apply(pool, &(Some(il), "ffn_down"), &s.gate, c.n_ff, &mut s.o, ne);
            pool.rows([(&mut s.x, ne), (&mut s.o, ne)], t_n, ROWS_APART, |_, [x, o]| self.add_branch(x, o, lw.ffn_post_norm.as_deref()));
        }
        for (cache, &n) in caches.iter_mut().zip(&next) {
            cache.set_len(n);
        }
        s.next = next;

        // Final norm for the tokens that want output.
        let n_out = batch.logits.iter().filter(|&&b| b).count();
        fit(&mut s.last, n_out * ne);
        for (j, t) in (0..t_n).filter(|&t| batch.logits[t]).enumerate() {
            ops::rms_norm_into(&mut s.last[j * ne..(j + 1) * ne], &s.x[t * ne..(t + 1) * ne], &self.weights.output_norm, c.rms_eps);
        }
        Ok(n_out)
    }

    /// Attention of every (token, head) pair over its own sequence's cache, in tiles
    /// (`kernels::attention`). In: s.q `[T, n_head*hd]`, the caches; out: s.att
    /// `[T, n_head*hd_v]`.
    fn attention(&self, pool: &Pool, il: usize, batch: &Batch, caches: &[&mut KvCache], s: &mut Scratch) {
        let c = &self.config;
        let shape = attention::Shape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
            scale: c.attn_scale,
            window: if c.swa_layers[il] { c.sliding_window } else { None },
        };
        let t_n = batch.len();
        let kv = |sq: usize| -> KvView<'_> { caches[sq].layer(il) };
        attention::attention(
            pool,
            self.isa,
            &shape,
            &s.q[..t_n * c.q_dim()],
            &batch.seq,
            &s.pos,
            &kv,
            &mut s.att[..t_n * c.n_head * c.head_dim_v],
            &mut s.attn,
        );
    }
}

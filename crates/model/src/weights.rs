//! Binding GGUF tensors to the slots of the decoder block: one name table shared by the
//! families (llama.cpp's `LLM_TENSOR_*` names), with each slot optional or required as the
//! [`Config`] says. Matrices stay in the mapped file; only norm vectors and biases are
//! copied out (as f32) at load.

use crate::config::Config;
use crate::ModelError;
use gguf::{GgmlType, Gguf};
use kernels::dot::Isa;
use kernels::matmul::QMatrix;

/// A weight matrix `[rows, cols]` located in the file (no borrow, so a model can own its
/// file); `QMatrix` views are made from it on use.
#[derive(Debug, Clone, Copy)]
pub struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    offset: usize,
    len: usize,
}

impl Mat {
    pub fn view<'a>(&self, f: &'a Gguf, isa: Isa) -> QMatrix<'a> {
        QMatrix::new(self.ty, self.rows, self.cols, f.data(self.offset, self.len), isa).expect("shape checked at load")
    }
}

/// How a layer projects its input to Q, K and V.
pub enum QkvProj {
    Separate {
        wq: Mat,
        wk: Mat,
        wv: Mat,
    },
    /// One matrix whose output rows are Q, then K, then V (phi3's `attn_qkv`).
    Fused(Mat),
}

/// How a layer computes the gate and up halves of its feed-forward.
pub enum GateUpProj {
    Separate {
        gate: Mat,
        up: Mat,
    },
    /// One matrix whose output rows are the gate, then the up projection (phi3's `ffn_up`).
    Fused(Mat),
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub qkv: QkvProj,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Mat,
    pub attn_post_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub gate_up: GateUpProj,
    pub w_down: Mat,
    pub ffn_post_norm: Option<Vec<f32>>,
}

pub struct Weights {
    pub tok_embd: Mat,
    pub output_norm: Vec<f32>,
    /// The output projection (`output.weight`, or the embeddings when tied).
    pub output: Mat,
    /// Per-pair rotary frequency divisors (Llama-3 rope scaling, `rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
}

struct Binder<'a> {
    f: &'a Gguf,
}

impl Binder<'_> {
    fn mat(&self, name: &str, cols: usize, rows: usize) -> Result<Mat, ModelError> {
        let t = self.f.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.dims.len() > 2 || t.row_len() != cols || t.n_rows() != rows {
            return Err(ModelError::BadShape { name: name.to_string(), got: t.dims.clone(), want: vec![cols as u64, rows as u64] });
        }
        Ok(Mat { ty: t.ggml_type, rows, cols, offset: t.offset, len: t.size })
    }

    fn vec(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.f.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if t.n_elements() != len as u64 {
            return Err(ModelError::BadShape { name: name.to_string(), got: t.dims.clone(), want: vec![len as u64] });
        }
        let mut out = vec![0f32; len];
        let bytes = self.f.tensor_data(t);
        kernels::dequant::dequantize_row(t.ggml_type, bytes, &mut out);
        Ok(out)
    }

    fn opt_vec(&self, name: &str, len: usize, wanted: bool) -> Result<Option<Vec<f32>>, ModelError> {
        if wanted {
            self.vec(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Weights {
    pub fn bind(f: &Gguf, c: &Config) -> Result<Weights, ModelError> {
        let b = Binder { f };
        let tok_embd = b.mat("token_embd.weight", c.n_embd, c.n_vocab)?;
        let output = if f.tensor("output.weight").is_some() { b.mat("output.weight", c.n_embd, c.n_vocab)? } else { tok_embd };
        // Not preallocated: a corrupt n_layer fails at its first missing tensor, not in malloc.
        let mut layers = Vec::new();
        for il in 0..c.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            layers.push(LayerWeights {
                attn_norm: b.vec(&n("attn_norm.weight"), c.n_embd)?,
                qkv: if f.tensor(&n("attn_qkv.weight")).is_some() {
                    QkvProj::Fused(b.mat(&n("attn_qkv.weight"), c.n_embd, c.q_dim() + c.kv_dim() + c.v_dim())?)
                } else {
                    QkvProj::Separate {
                        wq: b.mat(&n("attn_q.weight"), c.n_embd, c.q_dim())?,
                        wk: b.mat(&n("attn_k.weight"), c.n_embd, c.kv_dim())?,
                        wv: b.mat(&n("attn_v.weight"), c.n_embd, c.v_dim())?,
                    }
                },
                bq: b.opt_vec(&n("attn_q.bias"), c.q_dim(), c.qkv_bias)?,
                bk: b.opt_vec(&n("attn_k.bias"), c.kv_dim(), c.qkv_bias)?,
                bv: b.opt_vec(&n("attn_v.bias"), c.v_dim(), c.qkv_bias)?,
                q_norm: b.opt_vec(&n("attn_q_norm.weight"), c.head_dim, c.qk_norm)?,
                k_norm: b.opt_vec(&n("attn_k_norm.weight"), c.head_dim, c.qk_norm)?,
                wo: b.mat(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
                attn_post_norm: b.opt_vec(&n("post_attention_norm.weight"), c.n_embd, c.post_norms)?,
                ffn_norm: b.vec(&n("ffn_norm.weight"), c.n_embd)?,
                gate_up: if f.tensor(&n("ffn_gate.weight")).is_some() {
                    GateUpProj::Separate { gate: b.mat(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?, up: b.mat(&n("ffn_up.weight"), c.n_embd, c.n_ff)? }
                } else {
                    GateUpProj::Fused(b.mat(&n("ffn_up.weight"), c.n_embd, 2 * c.n_ff)?)
                },
                w_down: b.mat(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
                ffn_post_norm: b.opt_vec(&n("post_ffw_norm.weight"), c.n_embd, c.post_norms)?,
            });
        }
        let rope_freqs = b.opt_vec("rope_freqs.weight", c.n_rot / 2, f.tensor("rope_freqs.weight").is_some())?;
        Ok(Weights { tok_embd, output_norm: b.vec("output_norm.weight", c.n_embd)?, output, rope_freqs, layers })
    }
}

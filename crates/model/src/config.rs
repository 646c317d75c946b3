//! Architecture configuration: everything that distinguishes one family's decoder block
//! from another, read from GGUF metadata. Families are data here, not code: the forward
//! pass in `block.rs` reads these fields and nothing else.

use crate::ModelError;
use gguf::Gguf;

/// The model families bantam runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
    Phi3,
    Granite,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            "granite" => Arch::Granite,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
            Arch::Granite => "granite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up`
    SwiGlu,
    /// `gelu_tanh(gate) * up`
    GeGlu,
}

/// Which pairs of a head rotary embedding rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (llama).
    Normal,
    /// Halves `(i, i + d/2)` (GPT-NeoX; qwen, gemma).
    Neox,
}

/// Everything the decoder block needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head dimension of queries and keys.
    pub head_dim: usize,
    /// Per-head dimension of values.
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    pub rope_base: f32,
    /// Rope base of the sliding-window layers, where it differs (gemma3: 10000).
    pub rope_base_swa: f32,
    pub ctx_train: usize,
    /// Sliding-window size and which layers use it.
    pub sliding_window: Option<usize>,
    pub swa_layers: Vec<bool>,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// gemma3's extra norms after attention and after the feed-forward.
    pub post_norms: bool,
    pub activation: Activation,
    /// Scale applied to the token embeddings (gemma: sqrt(n_embd)).
    pub embed_scale: f32,
    /// Scale of q·k (1/sqrt(head_dim) unless the family says otherwise).
    pub attn_scale: f32,
    /// Dimensions of each head that rotary embedding rotates (phi3: fewer than head_dim).
    pub n_rot: usize,
    /// Scale of each attention and feed-forward branch before its residual add (granite).
    pub residual_scale: f32,
    /// Logits are divided by this (granite).
    pub logit_scale: f32,
}

fn key(arch: &str, k: &str) -> String {
    format!("{arch}.{k}")
}

impl Config {
    pub fn from_gguf(f: &Gguf) -> Result<Config, ModelError> {
        let arch_name = f.metadata_str("general.architecture")?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| ModelError::UnsupportedArch(arch_name.to_string()))?;
        let a = arch_name;
        let u = |k: &str| -> Result<usize, ModelError> { Ok(f.metadata_u64(&key(a, k))? as usize) };
        let n_embd = u("embedding_length")?;
        let n_layer = u("block_count")?;
        let n_head = u("attention.head_count")?;
        let n_head_kv = u("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = u("attention.key_length").unwrap_or(n_embd.checked_div(n_head).unwrap_or(0));
        let head_dim_v = u("attention.value_length").unwrap_or(head_dim);
        let n_ff = u("feed_forward_length")?;
        let rms_eps = f.metadata_f32(&key(a, "attention.layer_norm_rms_epsilon"))?;
        let rope_base = f.metadata_f32(&key(a, "rope.freq_base")).unwrap_or(10000.0);
        let ctx_train = u("context_length")?;
        let n_vocab = match f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(t) => t.len(),
            None => f.tensor("token_embd.weight").map(|t| t.n_rows()).ok_or(ModelError::MissingTensor("token_embd.weight".into()))?,
        };
        if n_layer == 0
            || n_head == 0
            || n_head_kv == 0
            || n_head % n_head_kv != 0
            || head_dim == 0
            || head_dim % 2 != 0
            || head_dim > crate::block::MAX_HEAD_DIM
            || head_dim_v > crate::block::MAX_HEAD_DIM
        {
            return Err(ModelError::BadConfig(format!("{a}: heads {n_head}, kv heads {n_head_kv}, head dim {head_dim}, layers {n_layer} do not make a model")));
        }
        let mut c = Config {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff,
            rms_eps,
            rope_style: RopeStyle::Normal,
            rope_base,
            rope_base_swa: rope_base,
            ctx_train,
            sliding_window: None,
            swa_layers: vec![false; n_layer],
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            activation: Activation::SwiGlu,
            embed_scale: 1.0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            n_rot: u("rope.dimension_count").unwrap_or(head_dim),
            residual_scale: 1.0,
            logit_scale: 1.0,
        };
        if c.n_rot == 0 || c.n_rot > head_dim || !c.n_rot.is_multiple_of(2) {
            return Err(ModelError::BadConfig(format!("{a}: rope dimension count {} does not fit head dim {head_dim}", c.n_rot)));
        }
        let scale = |k: &str| f.metadata_f32(&key(a, k)).ok().filter(|v| *v != 0.0);
        // The family mapping: what each architecture changes in the shared block
        // (after llama.cpp's llama-model.cpp and src/models/<arch>.cpp).
        match arch {
            Arch::Llama => {}
            Arch::Qwen2 => {
                c.rope_style = RopeStyle::Neox;
                c.qkv_bias = true;
            }
            Arch::Qwen3 => {
                c.rope_style = RopeStyle::Neox;
                c.qk_norm = true;
            }
            Arch::Phi3 => c.rope_style = RopeStyle::Neox,
            Arch::Granite => {
                // llama.cpp's llm_build_granite: each scale applies only when present.
                c.embed_scale = scale("embedding_scale").unwrap_or(1.0);
                c.residual_scale = scale("residual_scale").unwrap_or(1.0);
                c.attn_scale = scale("attention.scale").unwrap_or(c.attn_scale);
                c.logit_scale = scale("logit_scale").unwrap_or(1.0);
            }
            Arch::Gemma3 => {
                c.rope_style = RopeStyle::Neox;
                c.qk_norm = true;
                c.post_norms = true;
                c.activation = Activation::GeGlu;
                c.embed_scale = (n_embd as f32).sqrt();
                // llama.cpp: rope_freq_base_train_swa = 10000 and a 5-local/1-global pattern.
                c.rope_base_swa = 10000.0;
                let window = u("attention.sliding_window").unwrap_or(0);
                if window > 0 {
                    c.sliding_window = Some(window);
                    c.swa_layers = (0..n_layer).map(|il| il % 6 < 5).collect();
                }
            }
        }
        Ok(c)
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

//! The six families: `config.json` → `{arch}.*` GGUF keys, HF tensor names → GGUF names,
//! and the data transforms llama.cpp's converter applies on the way (its `conversion/`
//! classes `LlamaModel`, `Qwen2Model`, `Qwen3Model`, `Gemma3Model`, `Phi3MiniModel`,
//! `GraniteModel` over `TextModel.set_gguf_parameters`).

use crate::{ConvertError, OutType};
use gguf::{GgmlType, Value};
use serde_json::Value as Json;
use std::path::Path;

pub use model::Arch;

/// The Hugging Face side of each family: its class and `model_type` in `config.json`.
pub trait HfArch: Sized {
    /// The HF class name in `config.json`'s `architectures`.
    fn from_hf(class: &str) -> Option<Self>;
    fn hf_class(self) -> &'static str;
    /// `config.json`'s `model_type`.
    fn hf_model_type(self) -> &'static str;
}

impl HfArch for Arch {
    fn from_hf(class: &str) -> Option<Arch> {
        Some(match class {
            "LlamaForCausalLM" | "LlamaModel" => Arch::Llama,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            "Qwen3ForCausalLM" => Arch::Qwen3,
            "Gemma3ForCausalLM" => Arch::Gemma3,
            "Phi3ForCausalLM" => Arch::Phi3,
            "GraniteForCausalLM" => Arch::Granite,
            _ => return None,
        })
    }

    fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Gemma3 => "Gemma3ForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
            Arch::Granite => "GraniteForCausalLM",
        }
    }

    fn hf_model_type(self) -> &'static str {
        match self {
            Arch::Gemma3 => "gemma3_text",
            a => a.name(),
        }
    }
}

/// HF names of the tensors outside the layers and their GGUF names (without `.weight`).
pub(crate) const GLOBAL_NAMES: [(&str, &str); 3] = [("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output")];

/// A family's layer tensors: HF stem under `model.layers.N.` and GGUF name under `blk.N.`.
/// One table, read one way by the converter and the other by `export`.
pub(crate) fn layer_names(arch: Arch) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("input_layernorm", "attn_norm"), ("self_attn.o_proj", "attn_output"), ("mlp.down_proj", "ffn_down")];
    if arch == Arch::Phi3 {
        // Fused: q, k, v rows in one matrix; gate then up rows in `ffn_up`.
        v.extend([("self_attn.qkv_proj", "attn_qkv"), ("mlp.gate_up_proj", "ffn_up")]);
    } else {
        v.extend([
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
        ]);
    }
    if matches!(arch, Arch::Qwen3 | Arch::Gemma3) {
        v.extend([("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm")]);
    }
    if arch == Arch::Gemma3 {
        v.extend([
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ]);
    } else {
        v.push(("post_attention_layernorm", "ffn_norm"));
    }
    v
}

/// llama and granite store q and k rows in HF's rotate-half order; llama.cpp's
/// adjacent-pair rope wants them interleaved (`LlamaModel.permute`).
fn permutes_qk(a: Arch) -> bool {
    matches!(a, Arch::Llama | Arch::Granite)
}

/// What happens to a tensor's values between the checkpoint and the GGUF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// Rows regrouped per head from `[half, pair]` to `[pair, half]` (`LlamaModel.permute`),
    /// with this many heads.
    Permute(usize),
    /// `x + 1`: Gemma's RMSNorm multiplies by `1 + w`; GGUF stores the multiplier.
    AddOne,
}

/// The model's shape and settings, read from `config.json`.
pub struct Hparams {
    pub arch: Arch,
    config: Json,
    rope: serde_json::Map<String, Json>,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab_size: Option<usize>,
    pub tied: bool,
}

pub(crate) struct Mapped {
    pub name: String,
    pub transform: Transform,
}

impl Hparams {
    pub fn from_config(config: &Json) -> Result<Hparams, ConvertError> {
        let mut config = config.clone();
        if let Some(text) = config.get("text_config").and_then(|t| t.as_object()).cloned() {
            if let Some(o) = config.as_object_mut() {
                o.extend(text);
            }
        }
        let class = config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .ok_or_else(|| ConvertError::Config("no \"architectures\" list".into()))?;
        let arch = Arch::from_hf(class).ok_or_else(|| ConvertError::Architecture(class.into()))?;
        apply_config_defaults(arch, &mut config);
        let get = |keys: &[&str]| keys.iter().find_map(|k| config.get(*k).and_then(|v| v.as_u64()).map(|v| v as usize));
        let need = |keys: &[&str]| get(keys).ok_or_else(|| ConvertError::Config(format!("{} is missing", keys[0])));
        let n_layer = need(&["num_hidden_layers", "n_layers", "n_layer", "num_layers"])?;
        let n_embd = need(&["hidden_size", "n_embd", "dim"])?;
        let n_head = match arch {
            Arch::Gemma3 => get(&["num_attention_heads"]).unwrap_or(8),
            _ => need(&["num_attention_heads", "n_head", "n_heads"])?,
        };
        let n_head_kv = get(&["num_key_value_heads", "n_kv_heads"]).unwrap_or(n_head);
        let head_dim = match (arch, get(&["head_dim"])) {
            (Arch::Granite, _) | (_, None) => n_embd.checked_div(n_head).unwrap_or(0),
            (_, Some(d)) => d,
        };
        let n_ff = need(&["intermediate_size", "n_inner", "hidden_dim"])?;
        let vocab_size = get(&["vocab_size"]);
        let tied = config.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(matches!(arch, Arch::Gemma3));
        if n_layer == 0 || n_embd == 0 || n_head == 0 || n_head_kv == 0 || head_dim == 0 || !n_head.is_multiple_of(n_head_kv) || n_layer > 4096 {
            return Err(ConvertError::Config(format!(
                "{n_layer} layers, width {n_embd}, {n_head} heads, {n_head_kv} kv heads, head dim {head_dim} do not make a model"
            )));
        }
        let mut rope = config.get("rope_parameters").or_else(|| config.get("rope_scaling")).and_then(|r| r.as_object()).cloned().unwrap_or_default();
        if !rope.contains_key("full_attention") && !rope.contains_key("sliding_attention") {
            let find = |keys: &[&str]| keys.iter().find_map(|k| config.get(*k)).filter(|v| !v.is_null()).cloned();
            if let Some(local) = find(&["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta", "rope_local_base_freq"]) {
                rope.insert("sliding_attention".into(), serde_json::json!({ "rope_theta": local }));
            }
            if let Some(t) = find(&["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"]) {
                rope.entry("rope_theta").or_insert(t);
            }
            if let Some(t) = rope.get("type").cloned() {
                rope.entry("rope_type").or_insert(t);
            }
            if let Some(f) = find(&["partial_rotary_factor", "rope_pct", "rope_percent"]) {
                rope.entry("partial_rotary_factor").or_insert(f);
            }
            if let Some(o) = find(&["original_max_position_embeddings"]) {
                rope.entry("original_max_position_embeddings").or_insert(o);
            }
        }
        if rope.get("long_factor").is_some_and(|f| !f.is_null()) {
            return Err(ConvertError::Config("LongRoPE scaling (rope_scaling.long_factor) is not supported".into()));
        }
        Ok(Hparams { arch, config, rope, n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, vocab_size, tied })
    }

    /// The rope parameters of full-attention layers.
    fn rope_full(&self) -> &serde_json::Map<String, Json> {
        self.rope.get("full_attention").and_then(|v| v.as_object()).unwrap_or(&self.rope)
    }

    fn n_rot(&self) -> usize {
        match self.arch {
            Arch::Phi3 => {
                let pct = self.rope.get("partial_rotary_factor").and_then(|v| v.as_f64()).unwrap_or(1.0);
                (pct * self.n_embd as f64) as usize / self.n_head
            }
            _ => self.head_dim,
        }
    }

    /// The `{arch}.*` and `general.*` keys, in the order llama.cpp's converter writes them.
    pub fn metadata(&self, meta: &mut Vec<(String, Value)>, outtype: OutType, dir: &Path, n_params: u64) {
        let a = self.arch.name();
        let c = &self.config;
        let mut set = |k: &str, v: Value| {
            let key = if k.starts_with("general.") { k.to_string() } else { format!("{a}.{k}") };
            match meta.iter_mut().find(|(n, _)| *n == key) {
                Some(slot) => slot.1 = v,
                None => meta.push((key, v)),
            }
        };
        let num = |keys: &[&str]| keys.iter().find_map(|k| c.get(*k).and_then(|v| v.as_u64())).map(|v| v as u32);
        let float = |keys: &[&str]| keys.iter().find_map(|k| c.get(*k).and_then(|v| v.as_f64())).map(|v| v as f32);
        set("general.architecture", Value::Str(a.into()));
        set("general.type", Value::Str("model".into()));
        // gguf-py's Metadata heuristics, in part: the name is the model id (config.json's
        // `_name_or_path` when it is one, else the directory's name) in title form, and the
        // size label comes from the parameter count.
        let id = c
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .filter(|p| !p.is_empty() && p.matches('/').count() <= 1)
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .or_else(|| dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())))
            .unwrap_or_else(|| "model".into());
        set("general.name", Value::Str(id_to_title(&id)));
        set("general.size_label", Value::Str(size_label(n_params)));
        let rope = self.rope_full();
        let rope_f = |k: &str| rope.get(k).and_then(|v| v.as_f64()).map(|v| v as f32);
        if self.arch == Arch::Phi3 {
            // Phi3MiniModel.set_gguf_parameters writes its own list.
            if let Some(n) = num(&["n_positions", "max_position_embeddings"]) {
                set("context_length", Value::U32(n));
            }
            if let Some(o) = rope.get("original_max_position_embeddings").and_then(|v| v.as_u64()) {
                set("rope.scaling.original_context_length", Value::U32(o as u32));
            }
            set("embedding_length", Value::U32(self.n_embd as u32));
            set("feed_forward_length", Value::U32(self.n_ff as u32));
            set("block_count", Value::U32(self.n_layer as u32));
            set("attention.head_count", Value::U32(self.n_head as u32));
            set("attention.head_count_kv", Value::U32(self.n_head_kv as u32));
            if let Some(e) = float(&["rms_norm_eps"]) {
                set("attention.layer_norm_rms_epsilon", Value::F32(e));
            }
            set("rope.dimension_count", Value::U32(self.n_rot() as u32));
            if let Some(t) = rope_f("rope_theta") {
                set("rope.freq_base", Value::F32(t));
            }
            set("general.file_type", Value::U32(outtype.file_type()));
            set("attention.sliding_window", Value::U32(num(&["sliding_window"]).unwrap_or(0)));
            set("general.quantization_version", Value::U32(2));
            return;
        }
        // TextModel.set_gguf_parameters.
        set("block_count", Value::U32(self.n_layer as u32));
        if let Some(n) = num(&["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length", "model_max_length"]) {
            set("context_length", Value::U32(n));
        }
        set("embedding_length", Value::U32(self.n_embd as u32));
        set("feed_forward_length", Value::U32(self.n_ff as u32));
        set("attention.head_count", Value::U32(self.n_head as u32));
        if let Some(n) = num(&["num_key_value_heads", "n_kv_heads"]) {
            set("attention.head_count_kv", Value::U32(n));
        }
        match rope.get("rope_type").and_then(|v| v.as_str()) {
            Some("linear") if rope_f("factor").is_some() => {
                set("rope.scaling.type", Value::Str("linear".into()));
                set("rope.scaling.factor", Value::F32(rope_f("factor").unwrap_or(1.0)));
            }
            Some("yarn") if rope_f("factor").is_some() => {
                set("rope.scaling.type", Value::Str("yarn".into()));
                set("rope.scaling.factor", Value::F32(rope_f("factor").unwrap_or(1.0)));
                if let Some(o) = rope.get("original_max_position_embeddings").and_then(|v| v.as_u64()) {
                    set("rope.scaling.original_context_length", Value::U32(o as u32));
                }
                for (hf, key) in [
                    ("extrapolation_factor", "yarn_ext_factor"),
                    ("attention_factor", "yarn_attn_factor"),
                    ("attn_factor", "yarn_attn_factor"),
                    ("beta_fast", "yarn_beta_fast"),
                    ("beta_slow", "yarn_beta_slow"),
                ] {
                    if let Some(v) = rope_f(hf) {
                        if hf != "attn_factor" || rope_f("attention_factor").is_none() {
                            set(&format!("rope.scaling.{key}"), Value::F32(v));
                        }
                    }
                }
            }
            Some("su" | "longrope") => set("rope.scaling.type", Value::Str("longrope".into())),
            _ => {}
        }
        if let Some(t) = rope_f("rope_theta") {
            set("rope.freq_base", Value::F32(t));
        }
        if let Some(t) = self.rope.get("sliding_attention").and_then(|s| s.get("rope_theta")).and_then(|v| v.as_f64()) {
            set("rope.freq_base_swa", Value::F32(t as f32));
        }
        if let Some(e) = float(&["rms_norm_eps", "norm_eps"]) {
            set("attention.layer_norm_rms_epsilon", Value::F32(e));
        }
        if self.arch != Arch::Granite {
            if let Some(d) = num(&["head_dim"]) {
                set("attention.key_length", Value::U32(d));
                set("attention.value_length", Value::U32(d));
            }
        }
        set("general.file_type", Value::U32(outtype.file_type()));
        match self.arch {
            Arch::Llama | Arch::Granite => {
                if let Some(v) = self.vocab_size {
                    set("vocab_size", Value::U32(v as u32));
                }
                set("rope.dimension_count", Value::U32(self.n_rot() as u32));
                if self.arch == Arch::Granite {
                    for (hf, key) in [
                        ("attention_multiplier", "attention.scale"),
                        ("embedding_multiplier", "embedding_scale"),
                        ("residual_multiplier", "residual_scale"),
                        ("logits_scaling", "logit_scale"),
                    ] {
                        if let Some(v) = float(&[hf]).filter(|v| *v != 0.0) {
                            set(key, Value::F32(v));
                        }
                    }
                }
            }
            Arch::Gemma3 => {
                set("context_length", Value::U32(num(&["max_position_embeddings"]).unwrap_or(131072)));
                set("attention.head_count", Value::U32(self.n_head as u32));
                set("attention.layer_norm_rms_epsilon", Value::F32(float(&["rms_norm_eps"]).unwrap_or(1e-6)));
                set("attention.key_length", Value::U32(self.head_dim as u32));
                set("attention.value_length", Value::U32(self.head_dim as u32));
                set("rope.freq_base", Value::F32(rope_f("rope_theta").unwrap_or(1_000_000.0)));
                if let Some(cap) = float(&["final_logit_softcapping"]).filter(|v| *v != 0.0) {
                    set("final_logit_softcapping", Value::F32(cap));
                }
                if c.get("sliding_window_pattern").and_then(|v| v.as_u64()) != Some(1) {
                    if let Some(w) = num(&["sliding_window"]) {
                        set("attention.sliding_window", Value::U32(w));
                    }
                }
                set("attention.head_count_kv", Value::U32(self.n_head_kv as u32));
            }
            Arch::Qwen2 | Arch::Qwen3 | Arch::Phi3 => {}
        }
        set("general.quantization_version", Value::U32(2));
    }

    /// The GGUF name of an HF tensor and its transform; `None` for tensors llama.cpp
    /// drops (rotary caches, a tied `lm_head`); an error for anything else unknown.
    pub(crate) fn map_tensor(&self, hf: &str) -> Result<Option<Mapped>, ConvertError> {
        let unknown = || ConvertError::tensor(hf, format!("not part of a {} model", self.arch.name()));
        if [".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias"].iter().any(|s| hf.ends_with(s)) {
            return Ok(None);
        }
        let (stem, suffix) = hf.rsplit_once('.').ok_or_else(unknown)?;
        if suffix != "weight" && suffix != "bias" {
            return Err(unknown());
        }
        let (name, short) = if let Some(&(_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == stem || h.strip_prefix("model.") == Some(stem)) {
            (format!("{g}.{suffix}"), g)
        } else {
            let rest = stem.strip_prefix("model.").unwrap_or(stem).strip_prefix("layers.").ok_or_else(unknown)?;
            let (layer, what) = rest.split_once('.').ok_or_else(unknown)?;
            let il: usize = layer.parse().map_err(|_| unknown())?;
            if il >= self.n_layer {
                return Err(ConvertError::tensor(hf, format!("layer {il} of a {}-layer model", self.n_layer)));
            }
            let &(_, g) = layer_names(self.arch).iter().find(|(h, _)| *h == what).ok_or_else(unknown)?;
            (format!("blk.{il}.{g}.{suffix}"), g)
        };
        let transform = match short {
            _ if short.ends_with("norm") && self.arch == Arch::Gemma3 => Transform::AddOne,
            "attn_q" if permutes_qk(self.arch) => Transform::Permute(self.n_head),
            "attn_k" if permutes_qk(self.arch) => Transform::Permute(self.n_head_kv),
            _ => Transform::None,
        };
        Ok(Some(Mapped { name, transform }))
    }

    /// Check a tensor's HF shape (`[rows, cols]`) against the config.
    pub(crate) fn check_shape(&self, name: &str, shape: &[usize], n_vocab: usize) -> Result<(), ConvertError> {
        let (e, q, kv, ff) = (self.n_embd, self.n_head * self.head_dim, self.n_head_kv * self.head_dim, self.n_ff);
        let stem = name.trim_end_matches(".weight").trim_end_matches(".bias");
        let short = stem.rsplit('.').next().unwrap_or(stem);
        let bias = name.ends_with(".bias");
        let want: Vec<usize> = match short {
            "token_embd" | "output" => vec![n_vocab, e],
            "output_norm" | "attn_norm" | "ffn_norm" | "post_attention_norm" | "post_ffw_norm" => vec![e],
            "attn_q_norm" | "attn_k_norm" => vec![self.head_dim],
            "attn_q" => vec![q, e],
            "attn_k" | "attn_v" => vec![kv, e],
            "attn_qkv" => vec![q + 2 * kv, e],
            "attn_output" => vec![e, q],
            "ffn_gate" => vec![ff, e],
            "ffn_up" if self.arch == Arch::Phi3 => vec![2 * ff, e],
            "ffn_up" => vec![ff, e],
            "ffn_down" => vec![e, ff],
            _ => return Ok(()),
        };
        let want = if bias { want[..1].to_vec() } else { want };
        // Gemma 3's converter cuts the embedding to the vocabulary (`n_vocab_real`); see
        // `convert()`.
        let ok = if short == "token_embd" && self.arch == Arch::Gemma3 {
            shape.len() == 2 && shape[1] == e && shape[0] >= n_vocab
        } else {
            shape == want.as_slice()
        };
        if !ok {
            return Err(ConvertError::tensor(name, format!("shape {shape:?} does not match config.json, which implies {want:?}")));
        }
        Ok(())
    }

    /// Every tensor the model needs must be there.
    pub(crate) fn check_complete<'a>(&self, names: impl Iterator<Item = &'a str>) -> Result<(), ConvertError> {
        let have: std::collections::HashSet<&str> = names.collect();
        // A missing `output.weight` means tied embeddings, for llama.cpp as for bantam.
        let mut need = vec!["token_embd.weight".to_string(), "output_norm.weight".to_string()];
        for il in 0..self.n_layer {
            let attn: &[&str] = if self.arch == Arch::Phi3 { &["attn_qkv", "attn_output"] } else { &["attn_q", "attn_k", "attn_v", "attn_output"] };
            let ffn: &[&str] = if self.arch == Arch::Phi3 { &["ffn_up", "ffn_down"] } else { &["ffn_gate", "ffn_up", "ffn_down"] };
            for s in attn.iter().chain(ffn).chain(&["attn_norm", "ffn_norm"]) {
                need.push(format!("blk.{il}.{s}.weight"));
            }
        }
        match need.iter().find(|n| !have.contains(n.as_str())) {
            Some(n) => Err(ConvertError::tensor(n, "missing from the checkpoint")),
            None => Ok(()),
        }
    }

    /// Tensors llama.cpp computes from the config: llama 3's `rope_freqs.weight`.
    pub(crate) fn extra_tensors(&self) -> Vec<(String, Vec<f32>)> {
        let rope = self.rope_full();
        if !matches!(self.arch, Arch::Llama | Arch::Granite)
            || !rope.get("rope_type").and_then(|v| v.as_str()).is_some_and(|t| t.eq_ignore_ascii_case("llama3"))
        {
            return Vec::new();
        }
        let f = |k: &str, d: f64| rope.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
        let base = f("rope_theta", 10000.0);
        let dim = self.config.get("head_dim").and_then(|v| v.as_u64()).map(|v| v as usize).unwrap_or(self.n_embd / self.n_head);
        let (factor, low, high, old) = (f("factor", 8.0), f("low_freq_factor", 1.0), f("high_freq_factor", 4.0), f("original_max_position_embeddings", 8192.0));
        let (low_wavelen, high_wavelen) = (old / low, old / high);
        // In f32 throughout, as torch computes it: 1 / base ** (arange(0, dim, 2) / dim), then
        // each factor from f32 tensors and Python scalars cast to f32.
        let (factor, low, high, old) = (factor as f32, low as f32, high as f32, old as f32);
        let factors = (0..dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0f32 / (base as f32).powf(i as f32 / dim as f32);
                let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
                if (wavelen as f64) < high_wavelen {
                    1.0
                } else if (wavelen as f64) > low_wavelen {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect();
        vec![("rope_freqs.weight".into(), factors)]
    }

    /// Apply a transform to a tensor of dims `ne` (innermost first).
    pub(crate) fn apply(&self, t: Transform, x: &mut [f32], ne: &[u64]) {
        match t {
            Transform::None => {}
            Transform::AddOne => x.iter_mut().for_each(|v| *v += 1.0),
            Transform::Permute(heads) => permute_rows(x, ne[0] as usize, heads, false),
        }
    }

    /// The inverse of [`Hparams::apply`], for [`crate::export`].
    pub(crate) fn unapply(&self, t: Transform, x: &mut [f32], ne: &[u64]) {
        match t {
            Transform::None => {}
            Transform::AddOne => x.iter_mut().for_each(|v| *v -= 1.0),
            Transform::Permute(heads) => permute_rows(x, ne[0] as usize, heads, true),
        }
    }
}

/// gguf-py's `id_to_title`: dashes become spaces and all-lowercase words are title-cased,
/// except version numbers and words starting with a digit.
fn id_to_title(id: &str) -> String {
    let title = |w: &str| {
        // Python's str.title(): a letter after a non-letter is upper-cased, others lowered.
        let mut out = String::new();
        let mut prev_letter = false;
        for ch in w.chars() {
            out.extend(if prev_letter { ch.to_lowercase().collect::<Vec<_>>() } else { ch.to_uppercase().collect() });
            prev_letter = ch.is_alphabetic();
        }
        out
    };
    let keep = |w: &str| {
        let v = w.strip_prefix('v').is_some_and(|r| !r.is_empty() && r.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())));
        v || w.starts_with(|c: char| c.is_ascii_digit())
    };
    let is_lower = |w: &str| w.chars().any(|c| c.is_alphabetic()) && !w.chars().any(|c| c.is_uppercase());
    id.trim().replace('-', " ").split_whitespace().map(|w| if is_lower(w) && !keep(w) { title(w) } else { w.to_string() }).collect::<Vec<_>>().join(" ")
}

/// gguf-py's `model_weight_count_rounded_notation` with two significant digits at least.
fn size_label(n: u64) -> String {
    let n = n as f64;
    let (x, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", x.round_ties_even() as u64).trim_start_matches('0').len();
    format!("{x:.prec$}{suffix}", prec = 2usize.saturating_sub(digits))
}

/// The values transformers' config classes supply when `config.json` leaves them out
/// (llama.cpp reads the config through `AutoConfig`, so these reach its GGUF keys).
fn apply_config_defaults(arch: Arch, config: &mut Json) {
    let Some(o) = config.as_object_mut() else { return };
    let num = |o: &serde_json::Map<String, Json>, k: &str| o.get(k).and_then(|v| v.as_u64());
    let heads = num(o, "num_attention_heads");
    let mut put = |k: &str, v: Json| {
        if o.get(k).is_none_or(|x| x.is_null()) {
            o.insert(k.into(), v);
        }
    };
    use serde_json::json;
    match arch {
        Arch::Llama | Arch::Granite => {
            put("max_position_embeddings", json!(2048));
            put("rms_norm_eps", json!(1e-6));
            put("rope_theta", json!(10000.0));
            if let Some(h) = heads {
                put("num_key_value_heads", json!(h));
            }
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            put("max_position_embeddings", json!(32768));
            put("rms_norm_eps", json!(1e-6));
            put("rope_theta", json!(10000.0));
            if arch == Arch::Qwen3 {
                put("head_dim", json!(128));
            }
            if let Some(h) = heads {
                put("num_key_value_heads", json!(h));
            }
        }
        Arch::Gemma3 => {
            put("rope_theta", json!(1_000_000.0));
            put("rope_local_base_freq", json!(10000.0));
            put("sliding_window", json!(4096));
            put("head_dim", json!(256));
            put("num_key_value_heads", json!(4));
            put("max_position_embeddings", json!(131072));
        }
        Arch::Phi3 => {
            put("original_max_position_embeddings", json!(4096));
            put("partial_rotary_factor", json!(1.0));
            put("rope_theta", json!(10000.0));
            if let Some(h) = heads {
                put("num_key_value_heads", json!(h));
            }
        }
    }
    match arch {
        Arch::Llama => {
            let h = num(o, "hidden_size").zip(num(o, "num_attention_heads")).and_then(|(e, h)| e.checked_div(h));
            if let Some(d) = h {
                if o.get("head_dim").is_none_or(|x| x.is_null()) {
                    o.insert("head_dim".into(), json!(d));
                }
            }
        }
        Arch::Granite => {
            o.remove("head_dim");
            for k in ["attention_multiplier", "embedding_multiplier", "residual_multiplier", "logits_scaling"] {
                if o.get(k).is_none_or(|x| x.is_null()) {
                    o.insert(k.into(), json!(1.0));
                }
            }
        }
        _ => {}
    }
}

/// `LlamaModel.permute`: within each head's `d` rows, row `s·d/2 + j` moves to `2j + s`
/// (or back, with `inverse`). `cols` is the row length (1 for a bias).
fn permute_rows(x: &mut [f32], cols: usize, heads: usize, inverse: bool) {
    let rows = x.len() / cols.max(1);
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return;
    }
    let d = rows / heads;
    let src = x.to_vec();
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..d / 2 {
                let hf = h * d + s * (d / 2) + j;
                let gg = h * d + 2 * j + s;
                let (to, from) = if inverse { (hf, gg) } else { (gg, hf) };
                x[to * cols..(to + 1) * cols].copy_from_slice(&src[from * cols..(from + 1) * cols]);
            }
        }
    }
}

/// The GGUF type of a tensor for `--outtype` (llama.cpp's `prepare_tensors`): vectors,
/// norms and rope factors stay F32; Q8_0 falls back to F16 where a row is not whole blocks.
pub fn out_type(name: &str, ne: &[u64], outtype: OutType) -> GgmlType {
    if ne.len() <= 1 || name.ends_with("_norm.weight") || name == "rope_freqs.weight" {
        return GgmlType::F32;
    }
    let ty = outtype.ggml();
    if ty.row_bytes(ne[0] as usize).is_none() {
        return GgmlType::F16;
    }
    ty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_size_labels_read_as_gguf_py_writes_them() {
        assert_eq!(id_to_title("smollm2_135m"), "Smollm2_135M");
        assert_eq!(id_to_title("SmolLM2-135M-Instruct"), "SmolLM2 135M Instruct");
        assert_eq!(id_to_title("qwen2.5-coder-0.5b-v1.2"), "Qwen2.5 Coder 0.5b v1.2");
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(494_032_768), "494M");
        assert_eq!(size_label(1_543_714_304), "1.5B");
        assert_eq!(size_label(268_098_176), "268M");
        assert_eq!(size_label(27_000), "27K");
    }

    #[test]
    fn the_permutation_interleaves_halves_and_inverts() {
        // Two heads of four rows, one column: HF [a0 a1 b0 b1] per head → [a0 b0 a1 b1].
        let mut x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        permute_rows(&mut x, 1, 2, false);
        assert_eq!(x, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        permute_rows(&mut x, 1, 2, true);
        assert_eq!(x, (0..8).map(|v| v as f32).collect::<Vec<_>>());
    }
}

//! GGUF → Hugging Face directory: `config.json`, `model.safetensors`, `tokenizer.json` (BPE)
//! or `tokenizer.model` (SentencePiece), and `tokenizer_config.json` — the inverse of
//! [`crate::convert()`], so a GGUF model can be handed to transformers-based tools, and a
//! round trip through both checks the converter. Quantized tensors are dequantized.

use crate::arch::{layer_names, Arch, HfArch, Hparams, Transform, GLOBAL_NAMES};
use crate::safetensors::{self, Dtype};
use crate::vocab::{self, CONTROL, USER_DEFINED};
use crate::{sentencepiece, ConvertError};
use gguf::{Array, Gguf, Value};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;

/// Write `model` as a Hugging Face directory `dir` (created if needed), with matrices in
/// `dtype`. Returns the number of tensors written.
pub fn export(model: &Gguf, dir: &Path, dtype: Dtype) -> Result<usize, ConvertError> {
    export_parts(model, dir, Some(dtype))
}

/// [`export`] without `model.safetensors`: the config and tokenizer files alone.
pub fn export_without_weights(model: &Gguf, dir: &Path) -> Result<(), ConvertError> {
    export_parts(model, dir, None).map(|_| ())
}

fn export_parts(model: &Gguf, dir: &Path, weights: Option<Dtype>) -> Result<usize, ConvertError> {
    let dtype = weights.unwrap_or(Dtype::F32);
    let a = model.metadata_str("general.architecture")?.to_string();
    let arch = Arch::from_name(&a).ok_or_else(|| ConvertError::Architecture(a.clone()))?;
    std::fs::create_dir_all(dir).map_err(|e| ConvertError::io(dir, e))?;
    let u = |k: &str| model.get(&format!("{a}.{k}")).and_then(|v| v.as_u64());
    let f = |k: &str| model.get(&format!("{a}.{k}")).and_then(|v| v.as_f64());
    let tokens: Vec<String> = match model.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        Some(Array::Str(t)) => t.clone(),
        _ => return Err(ConvertError::Tokenizer("the model has no tokenizer.ggml.tokens".into())),
    };
    let n_embd = u("embedding_length").ok_or_else(|| ConvertError::Config("no embedding_length".into()))?;
    let n_head = u("attention.head_count").ok_or_else(|| ConvertError::Config("no head_count".into()))?;
    let n_head_kv = u("attention.head_count_kv").unwrap_or(n_head);
    let head_dim = u("attention.key_length").unwrap_or(n_embd / n_head.max(1));

    let mut c = Map::new();
    c.insert("architectures".into(), json!([arch.hf_class()]));
    c.insert("model_type".into(), json!(arch.hf_model_type()));
    c.insert("hidden_size".into(), json!(n_embd));
    c.insert("intermediate_size".into(), json!(u("feed_forward_length")));
    c.insert("num_hidden_layers".into(), json!(u("block_count")));
    c.insert("num_attention_heads".into(), json!(n_head));
    c.insert("num_key_value_heads".into(), json!(n_head_kv));
    c.insert("max_position_embeddings".into(), json!(u("context_length")));
    c.insert("rms_norm_eps".into(), json!(f("attention.layer_norm_rms_epsilon").map(round_f32)));
    if let Some(t) = f("rope.freq_base") {
        c.insert("rope_theta".into(), json!(round_f32(t)));
    }
    c.insert("vocab_size".into(), json!(tokens.len()));
    c.insert("tie_word_embeddings".into(), json!(model.tensor("output.weight").is_none()));
    c.insert(
        "torch_dtype".into(),
        json!(match dtype {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
        }),
    );
    for (kind, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = model.get(key).and_then(|v| v.as_u64()) {
            c.insert(format!("{kind}_token_id"), json!(id));
        }
    }
    match arch {
        Arch::Qwen3 | Arch::Gemma3 => {
            c.insert("head_dim".into(), json!(head_dim));
        }
        Arch::Llama if u("attention.key_length").is_some() => {
            c.insert("head_dim".into(), json!(head_dim));
        }
        Arch::Granite => {
            for (hf, key) in [
                ("attention_multiplier", "attention.scale"),
                ("embedding_multiplier", "embedding_scale"),
                ("residual_multiplier", "residual_scale"),
                ("logits_scaling", "logit_scale"),
            ] {
                c.insert(hf.into(), json!(f(key).map(round_f32).unwrap_or(1.0)));
            }
        }
        Arch::Phi3 => {
            let n_rot = u("rope.dimension_count").unwrap_or(head_dim);
            c.insert("partial_rotary_factor".into(), json!((n_rot * n_head) as f64 / n_embd as f64));
            c.insert("original_max_position_embeddings".into(), json!(u("rope.scaling.original_context_length").or(u("context_length"))));
            let w = u("attention.sliding_window").unwrap_or(0);
            c.insert("sliding_window".into(), if w == 0 { Json::Null } else { json!(w) });
        }
        _ => {}
    }
    if arch == Arch::Gemma3 {
        c.insert("sliding_window".into(), json!(u("attention.sliding_window")));
        c.insert("sliding_window_pattern".into(), json!(6));
        c.insert("rope_local_base_freq".into(), json!(f("rope.freq_base_swa").map(round_f32).unwrap_or(10000.0)));
    }
    if let Some(t) = model.tensor("rope_freqs.weight") {
        let factors = f32s(model, t);
        let base = f("rope.freq_base").unwrap_or(10000.0);
        let rs = llama3_rope(&factors, base, head_dim as usize)
            .ok_or_else(|| ConvertError::tensor("rope_freqs.weight", "the factors are not llama 3's rope scaling for any usual parameters"))?;
        c.insert("rope_scaling".into(), rs);
    }
    let config = Json::Object(c);
    write_json(&dir.join("config.json"), &config)?;

    export_tokenizer(model, dir, arch, &tokens)?;
    if weights.is_none() {
        return Ok(0);
    }
    // Tensors: GGUF name → HF name through the converter's own map, inverted.
    let hp = Hparams::from_config(&config)?;
    let mut out = Vec::new();
    for t in model.tensors() {
        if t.name == "rope_freqs.weight" {
            continue;
        }
        let hf = hf_name(&t.name, arch).ok_or_else(|| ConvertError::tensor(&t.name, "has no Hugging Face name"))?;
        let mapped = hp.map_tensor(&hf)?.ok_or_else(|| ConvertError::tensor(&t.name, "has no Hugging Face name"))?;
        let mut x = f32s(model, t);
        hp.unapply(mapped.transform, &mut x, &t.dims);
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let dt = if shape.len() == 1 || mapped.transform == Transform::AddOne { Dtype::F32 } else { dtype };
        let bytes = crate::encode(&x, dt.ggml(), t.dims[0] as usize).map_err(|e| ConvertError::tensor(&t.name, e))?;
        out.push((hf, dt, shape, bytes));
    }
    let n = out.len();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::write(&dir.join("model.safetensors"), &out, &meta)?;
    Ok(n)
}

/// The f32 nearest an f64 that came from an f32, printed short (1e-5, not 9.99999974737875e-6).
fn round_f32(v: f64) -> f64 {
    let f = v as f32;
    format!("{f}").parse().unwrap_or(v)
}

/// A tensor's values, dequantized (every type's rows are whole blocks, so one call serves).
fn f32s(model: &Gguf, t: &gguf::TensorInfo) -> Vec<f32> {
    let mut out = vec![0f32; t.n_elements() as usize];
    kernels::dequant::dequantize_row(t.ggml_type, model.tensor_data(t), &mut out);
    out
}

/// The HF checkpoint name of a GGUF tensor: the converter's name tables read backwards.
fn hf_name(gguf: &str, arch: Arch) -> Option<String> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    if let Some((h, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == stem) {
        return Some(format!("{h}.{suffix}"));
    }
    let (il, short) = stem.strip_prefix("blk.")?.split_once('.')?;
    let (h, _) = layer_names(arch).into_iter().find(|(_, g)| *g == short)?;
    Some(format!("model.layers.{il}.{h}.{suffix}"))
}

/// `rope_scaling` for llama 3 rope factors: the usual parameters that reproduce them.
fn llama3_rope(factors: &[f32], base: f64, dim: usize) -> Option<Json> {
    let factor = factors.iter().copied().fold(1.0f32, f32::max) as f64;
    for old in [8192.0, 4096.0, 2048.0, 16384.0, 32768.0, 131072.0] {
        for low in [1.0, 2.0, 0.5, 4.0] {
            for high in [4.0, 8.0, 2.0, 16.0, 32.0] {
                let rs =
                    json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high, "original_max_position_embeddings": old});
                let cfg = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": dim, "num_attention_heads": 1, "num_hidden_layers": 1, "intermediate_size": 1, "rope_theta": base, "head_dim": dim, "rope_scaling": rs});
                let hp = Hparams::from_config(&cfg).ok()?;
                let got = hp.extra_tensors();
                if got.first().is_some_and(|(_, v)| v.len() == factors.len() && v.iter().zip(factors).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0))) {
                    return Some(rs);
                }
            }
        }
    }
    None
}

fn write_json(path: &Path, v: &Json) -> Result<(), ConvertError> {
    let s = serde_json::to_string_pretty(v).unwrap_or_default();
    std::fs::write(path, s + "\n").map_err(|e| ConvertError::io(path, e))
}

fn export_tokenizer(model: &Gguf, dir: &Path, arch: Arch, tokens: &[String]) -> Result<(), ConvertError> {
    let types: Vec<i32> = model
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
        .and_then(|a| a.to_i64s())
        .map(|v| v.into_iter().map(|t| t as i32).collect())
        .unwrap_or_else(|| vec![vocab::NORMAL; tokens.len()]);
    let scores: Vec<f32> = model.get("tokenizer.ggml.scores").and_then(|v| v.as_array()).and_then(|a| a.to_f32s()).unwrap_or_default();
    let kind = model.get("tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("gpt2");
    let id_of = |key: &str| model.get(key).and_then(|v| v.as_u64()).map(|v| v as usize);
    let text_of = |key: &str| id_of(key).and_then(|i| tokens.get(i)).cloned();
    let flag = |key: &str| model.get(key).and_then(|v| if let Value::Bool(b) = v { Some(*b) } else { None });

    let mut tc = Map::new();
    let mut decoder = Map::new();
    let mut added = Vec::new();
    let is_spm = kind == "llama";
    for (i, t) in tokens.iter().enumerate() {
        let ty = types.get(i).copied().unwrap_or(vocab::NORMAL);
        // SentencePiece pieces keep their scores in tokenizer.model; only tokens the
        // converter gave the added-token score go to added_tokens_decoder.
        let added_here = (ty == CONTROL || ty == USER_DEFINED) && (!is_spm || scores.get(i) == Some(&-1000.0));
        if added_here {
            let special = ty == CONTROL;
            decoder
                .insert(i.to_string(), json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": special}));
            added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special}));
        }
    }
    if let Some(b) = flag("tokenizer.ggml.add_bos_token") {
        tc.insert("add_bos_token".into(), json!(b));
    }
    if let Some(b) = flag("tokenizer.ggml.add_eos_token") {
        tc.insert("add_eos_token".into(), json!(b));
    }
    tc.insert("added_tokens_decoder".into(), Json::Object(decoder));
    for (kind, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(t) = text_of(key) {
            tc.insert(format!("{kind}_token"), json!(t));
        }
    }
    if let Some(t) = model.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        tc.insert("chat_template".into(), json!(t));
    }
    tc.insert("model_max_length".into(), json!(model.get(&format!("{}.context_length", arch.name())).and_then(|v| v.as_u64())));
    tc.insert("tokenizer_class".into(), json!(if is_spm { "GemmaTokenizer" } else { "GPT2Tokenizer" }));

    if is_spm {
        let pieces = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| sentencepiece::Piece {
                text: t.clone(),
                score: scores.get(i).copied().unwrap_or(0.0),
                kind: types.get(i).copied().unwrap_or(vocab::NORMAL),
            })
            .collect();
        let add_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
        let m = sentencepiece::Model { pieces, add_dummy_prefix: add_prefix };
        let p = dir.join("tokenizer.model");
        std::fs::write(&p, sentencepiece::write(&m)).map_err(|e| ConvertError::io(&p, e))?;
        if arch == Arch::Phi3 {
            tc.insert("tokenizer_class".into(), json!("LlamaTokenizer"));
        }
    } else {
        let pre = model.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
        let pre_json = vocab::pre_tokenizer_json(if pre == "refact" { "smollm" } else { pre })
            .ok_or_else(|| ConvertError::Tokenizer(format!("pre-tokenizer {pre:?} has no tokenizer.json form bantam knows")))?;
        let merges: Vec<String> = match model.get("tokenizer.ggml.merges").and_then(|v| v.as_array()) {
            Some(Array::Str(m)) => m.clone(),
            _ => Vec::new(),
        };
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            let ty = types.get(i).copied().unwrap_or(vocab::NORMAL);
            if ty == vocab::UNUSED && *t == format!("[PAD{i}]") {
                continue;
            }
            // Added tokens are in the BPE vocabulary too, as in published tokenizer.json files.
            vocab.insert(t.clone(), json!(i));
        }
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(false);
        let post = if add_bos {
            let bos = text_of("tokenizer.ggml.bos_token_id").unwrap_or_default();
            json!({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {}})
        } else {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        };
        let tj = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_json,
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        write_json(&dir.join("tokenizer.json"), &tj)?;
    }
    if let Some(p) = flag("tokenizer.ggml.add_space_prefix") {
        if arch != Arch::Gemma3 {
            tc.insert("add_prefix_space".into(), json!(p));
        }
    }
    write_json(&dir.join("tokenizer_config.json"), &Json::Object(tc))
}

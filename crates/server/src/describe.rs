//! What Ollama's /api/tags, /api/show and /api/ps say about a model, read from its GGUF
//! header.

use engine::loaded::CATALOG;
use gguf::{Gguf, Value};
use protocol::ollama::ModelDetails;
use std::path::{Path, PathBuf};

/// llama.cpp's `llama_ftype` names for `general.file_type`.
fn file_type_name(ft: u64) -> &'static str {
    match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => "unknown",
    }
}

/// "134.52M", "1.54B": Ollama's parameter_size.
pub fn parameter_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else {
        format!("{:.2}K", n / 1e3)
    }
}

pub fn details(file: &Gguf) -> ModelDetails {
    let family = file.metadata_str("general.architecture").unwrap_or("unknown").to_string();
    let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let quant = file.metadata_u64("general.file_type").map(file_type_name).unwrap_or("unknown");
    ModelDetails {
        parent_model: String::new(),
        format: "gguf".into(),
        families: vec![family.clone()],
        family,
        parameter_size: parameter_size(n_params),
        quantization_level: quant.into(),
    }
}

/// `model_info` of /api/show: the scalar metadata (arrays such as the vocabulary as null,
/// as Ollama shows them without `verbose`), with `general.parameter_count` added.
pub fn model_info(file: &Gguf) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in file.metadata() {
        if k == "tokenizer.chat_template" {
            continue;
        }
        let j = match v {
            Value::Str(s) => serde_json::Value::from(s.as_str()),
            Value::Bool(b) => serde_json::Value::from(*b),
            Value::Array(_) => serde_json::Value::Null,
            other => match (other.as_u64(), other.as_f64()) {
                (Some(u), _) => serde_json::Value::from(u),
                (None, Some(f)) => serde_json::Value::from(f),
                _ => serde_json::Value::Null,
            },
        };
        m.insert(k.clone(), j);
    }
    let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    m.insert("general.parameter_count".into(), n_params.into());
    m
}

/// The catalog models present in the models directory: (name, path, sha256).
pub fn installed() -> Vec<(String, PathBuf, String)> {
    let dir = engine::loaded::models_dir();
    CATALOG
        .iter()
        .map(|(name, file, sha)| (name.to_string(), dir.join(file), sha.to_string()))
        .filter(|(_, p, _)| p.is_file())
        .collect()
}

/// sha256 of a catalog file, or a digest-shaped identity of any other path.
pub fn digest(path: &Path) -> String {
    let dir = engine::loaded::models_dir();
    CATALOG
        .iter()
        .find(|(_, file, _)| dir.join(file) == path)
        .map_or_else(|| String::new(), |(_, _, sha)| sha.to_string())
}

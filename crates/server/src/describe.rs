//! What Ollama's /api/tags, /api/show and /api/ps say about a model, read from its GGUF
//! header.

use gguf::{Gguf, Value};
use protocol::ollama::ModelDetails;
use std::path::PathBuf;
use std::time::SystemTime;

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

/// A model of the store, as /api/tags and /v1/models list it.
pub struct Installed {
    pub name: String,
    pub path: PathBuf,
    /// The manifest's sha256 (hex), Ollama's `digest`.
    pub digest: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// The models in the store.
pub fn installed(store: &store::Store) -> Vec<Installed> {
    store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| {
            let path = store.blob_path(l.model_digest.as_ref()?);
            Some(Installed { name: l.name.to_string(), path, digest: l.id.hex().to_string(), size: l.size, modified: l.modified })
        })
        .collect()
}

/// The Modelfile view of a loaded or stored model: TEMPLATE, SYSTEM, PARAMETER, MESSAGE
/// and LICENSE as /api/show and `bantam show` report them.
pub struct ModelfileView {
    pub template: String,
    pub system: String,
    pub parameters: String,
    pub license: String,
    pub modelfile: String,
}

pub fn modelfile_view(name: &str, path: &std::path::Path, file: &Gguf, stored: Option<&store::Resolved>) -> ModelfileView {
    let template = stored.and_then(|r| r.template.clone()).or_else(|| file.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string));
    let system = stored.and_then(|r| r.system.clone());
    let license: Vec<String> = match stored {
        Some(r) if !r.license.is_empty() => r.license.clone(),
        _ => file.get("general.license").and_then(|v| v.as_str()).map(|s| vec![s.to_string()]).unwrap_or_default(),
    };
    let params = stored.map(|r| r.params.clone()).unwrap_or_default();
    let messages = stored.map(|r| r.messages.clone()).unwrap_or_default();
    let adapters: Vec<String> = stored.map(|r| r.adapters.iter().map(|p| p.display().to_string()).collect()).unwrap_or_default();
    ModelfileView {
        modelfile: store::modelfile::render(name, &path.display().to_string(), &adapters, template.as_deref(), system.as_deref(), &params, &messages, &license),
        parameters: store::modelfile::render_parameters(&params),
        template: template.unwrap_or_default(),
        system: system.unwrap_or_default(),
        license: license.join("\n\n"),
    }
}

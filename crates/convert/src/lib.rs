//! `bantam convert`: a Hugging Face model directory — safetensors weights (one file or
//! shards with their index), `config.json`, `tokenizer.json` and/or `tokenizer.model`,
//! `tokenizer_config.json` — becomes a GGUF file with the metadata and tensor layout that
//! llama.cpp's `convert_hf_to_gguf.py` writes, for the llama, qwen2, qwen3, gemma3, phi3 and
//! granite families; [`export()`] goes the other way, so a GGUF model can be handed to
//! Hugging Face tools (and round-trips through [`convert()`]).
//!
//! - [`safetensors`] reads and writes the weight files;
//! - [`arch`] maps `config.json` to the architecture's GGUF keys and each HF tensor to its
//!   GGUF name, with the data transforms llama.cpp applies (llama's q/k row permutation,
//!   gemma's norm offset);
//! - [`vocab`] turns the tokenizer files into `tokenizer.ggml.*` metadata;
//! - [`sentencepiece`] reads and writes `tokenizer.model`.
//!
//! The output is written to a temporary file beside the target and renamed into place only
//! when complete, so a failure (a bad tensor, a full disk) leaves nothing under its name.

pub mod arch;
pub mod export;
pub mod safetensors;
pub mod sentencepiece;
pub mod vocab;

pub use arch::Arch;
pub use export::{export, export_without_weights};

use gguf::{GgmlType, Value};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Bad { path: String, why: String },
    #[error("{dir}: no {what}")]
    Missing { dir: String, what: String },
    #[error("architecture {0:?} is not supported (llama, qwen2, qwen3, gemma3, phi3 and granite are: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, GraniteForCausalLM)")]
    Architecture(String),
    #[error("config.json: {0}")]
    Config(String),
    #[error("tensor {name}: {why}")]
    Tensor { name: String, why: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Gguf(#[from] gguf::GgufError),
}

impl ConvertError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ConvertError::Io { path: path.display().to_string(), source }
    }
    pub(crate) fn bad(path: &Path, why: impl Into<String>) -> Self {
        ConvertError::Bad { path: path.display().to_string(), why: why.into() }
    }
    pub(crate) fn tensor(name: &str, why: impl Into<String>) -> Self {
        ConvertError::Tensor { name: name.into(), why: why.into() }
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, ConvertError> {
    let s = std::fs::read(path).map_err(|e| ConvertError::io(path, e))?;
    serde_json::from_slice(&s).map_err(|e| ConvertError::bad(path, format!("not JSON: {e}")))
}

/// The type of the converted matrices (`--outtype`). Vectors (norms, biases) stay F32,
/// as llama.cpp keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
}

impl OutType {
    pub fn parse(s: &str) -> Option<OutType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Some(OutType::F32),
            "f16" => Some(OutType::F16),
            "bf16" => Some(OutType::BF16),
            "q8_0" => Some(OutType::Q8_0),
            _ => None,
        }
    }

    pub fn ggml(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// `general.file_type` (llama_ftype): ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q8_0 => 7,
            OutType::BF16 => 32,
        }
    }
}

/// `--outtype auto`, llama.cpp's default: the highest-fidelity 16-bit type for the
/// checkpoint, BF16 when its first matrix is BF16, F16 otherwise.
pub fn auto_outtype(dir: &Path) -> Result<OutType, ConvertError> {
    let ckpt = safetensors::Checkpoint::open_dir(dir)?;
    Ok(match ckpt.tensors.iter().find(|t| t.shape.len() >= 2).map(|t| t.dtype) {
        Some(safetensors::Dtype::BF16) => OutType::BF16,
        _ => OutType::F16,
    })
}

/// What [`convert()`] is asked to do beyond the directory and the output path.
#[derive(Clone, Debug)]
pub struct Options {
    pub outtype: OutType,
    /// `tokenizer.ggml.pre`, when the tokenizer's pre-tokenizer is not one [`vocab`] knows.
    pub pre: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { outtype: OutType::F16, pre: None }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Summary {
    pub arch: Arch,
    pub tensors: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub n_vocab: usize,
    pub pre: Option<String>,
}

/// One output tensor: its GGUF name, type, ne (innermost first), the source and the
/// transform to apply.
struct Planned<'a> {
    name: String,
    ty: GgmlType,
    ne: Vec<u64>,
    src: &'a safetensors::Tensor,
    transform: arch::Transform,
    size: usize,
}

/// Convert the model directory `dir` to the GGUF file `out`. `progress` is called before
/// each tensor with its name, type and index.
pub fn convert(dir: &Path, out: &Path, opts: &Options, mut progress: impl FnMut(&str, GgmlType, usize, usize)) -> Result<Summary, ConvertError> {
    let config = read_json(&dir.join("config.json")).map_err(|e| match e {
        ConvertError::Io { .. } => ConvertError::Missing { dir: dir.display().to_string(), what: "config.json".into() },
        e => e,
    })?;
    let hp = arch::Hparams::from_config(&config)?;
    let vocab = vocab::Vocab::load(dir, &hp, opts.pre.as_deref())?;
    let ckpt = safetensors::Checkpoint::open_dir(dir)?;

    let mut plan = Vec::new();
    let mut bytes_in = 0u64;
    for t in &ckpt.tensors {
        bytes_in += (t.n_elements() * t.dtype.size()) as u64;
        let Some(m) = hp.map_tensor(&t.name)? else { continue };
        hp.check_shape(&m.name, &t.shape, vocab.tokens.len())?;
        let mut ne: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        if m.name == "token_embd.weight" && hp.arch == Arch::Gemma3 {
            // Gemma3Model.modify_tensors: rows past the vocabulary are dropped.
            ne[1] = ne[1].min(vocab.tokens.len() as u64);
        }
        let ty = arch::out_type(&m.name, &ne, opts.outtype);
        let row = ne[0] as usize;
        let rows = ne[1..].iter().product::<u64>() as usize;
        let size = ty.row_bytes(row).ok_or_else(|| ConvertError::tensor(&t.name, "row length does not fit the type"))? * rows;
        plan.push(Planned { name: m.name, ty, ne, src: t, transform: m.transform, size });
    }
    hp.check_complete(plan.iter().map(|p| p.name.as_str()))?;

    // Tensors computed from the config (llama 3's rope factors), then the checkpoint's.
    let extras = hp.extra_tensors();
    let mut meta: Vec<(String, Value)> = Vec::new();
    let n_params: u64 = plan.iter().map(|p| p.ne.iter().product::<u64>()).sum::<u64>() + extras.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
    hp.metadata(&mut meta, opts.outtype, dir, n_params);
    vocab.metadata(&mut meta);

    let mut index: Vec<(&str, GgmlType, &[u64], usize)> = Vec::new();
    let extra_dims: Vec<Vec<u64>> = extras.iter().map(|(_, v)| vec![v.len() as u64]).collect();
    for ((n, v), d) in extras.iter().zip(&extra_dims) {
        index.push((n.as_str(), GgmlType::F32, d.as_slice(), v.len() * 4));
    }
    for p in &plan {
        index.push((p.name.as_str(), p.ty, p.ne.as_slice(), p.size));
    }
    let align = 32;
    let (header, offsets) = gguf::header_bytes(&meta, &index, align);

    let tmp = gguf::partial_path(out);
    let result = (|| -> Result<u64, ConvertError> {
        let file = std::fs::File::create(&tmp).map_err(|e| ConvertError::io(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let io = |e| ConvertError::io(&tmp, e);
        w.write_all(&header).map_err(io)?;
        // Data-section position; each tensor starts at its offset, zero-padded up to it.
        let mut pos = 0usize;
        let mut write_at = |w: &mut std::io::BufWriter<std::fs::File>, off: usize, data: &[u8]| -> Result<(), ConvertError> {
            w.write_all(&vec![0u8; off - pos]).map_err(io)?;
            w.write_all(data).map_err(io)?;
            pos = off + data.len();
            Ok(())
        };
        let total = extras.len() + plan.len();
        for (i, (n, v)) in extras.iter().enumerate() {
            progress(n, GgmlType::F32, i, total);
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            write_at(&mut w, offsets[i], &b)?;
        }
        for (j, p) in plan.iter().enumerate() {
            let i = extras.len() + j;
            progress(&p.name, p.ty, i, total);
            let mut x = ckpt.f32s(p.src);
            x.truncate(p.ne.iter().product::<u64>() as usize);
            hp.apply(p.transform, &mut x, &p.ne);
            let data = encode(&x, p.ty, p.ne[0] as usize).map_err(|e| ConvertError::tensor(&p.src.name, e))?;
            debug_assert_eq!(data.len(), p.size);
            write_at(&mut w, offsets[i], &data)?;
        }
        let data_end = total_data_end(&offsets, &index, align);
        write_at(&mut w, data_end, &[])?;
        w.flush().map_err(io)?;
        w.get_ref().sync_all().map_err(io)?;
        Ok((header.len() + data_end) as u64)
    })();
    let bytes_out = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ConvertError::io(out, e)
    })?;
    Ok(Summary { arch: hp.arch, tensors: index.len(), bytes_in, bytes_out, n_vocab: vocab.tokens.len(), pre: vocab.pre.clone() })
}

/// Where the data section ends: the last tensor's end, padded to the alignment.
fn total_data_end(offsets: &[usize], index: &[(&str, GgmlType, &[u64], usize)], align: usize) -> usize {
    offsets.last().zip(index.last()).map(|(o, t)| (o + t.3).div_ceil(align) * align).unwrap_or(0)
}

/// Values of rows of `row` as `ty` (F32, F16 and BF16 included), through the quantizers
/// `bantam quantize` uses.
pub(crate) fn encode(x: &[f32], ty: GgmlType, row: usize) -> Result<Vec<u8>, String> {
    let n = ty.row_bytes(row).ok_or("row length does not fit the type")? * (x.len() / row.max(1));
    let mut out = vec![0u8; n];
    kernels::weights::quantize_rows(ty, x, row, None, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

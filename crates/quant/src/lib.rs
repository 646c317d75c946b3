//! Quantize GGUF models: the tensor bytes llama-quantize writes, from the same input, for
//! the legacy and k-quant types and llama.cpp's mixes (`Q4_K_M` and friends), with or without
//! an importance matrix.
//!
//! [`plan`] decides every tensor's type (the mix rules, `--tensor-type` patterns, the
//! output and embedding overrides, shape fallbacks); [`quantize`] streams the tensors
//! through [`kernels::weights`] into a temporary file beside the output, in slabs of rows
//! spread over threads, and renames it into place only when everything is written.

pub mod ftype;
pub mod imatrix;

pub use ftype::FileType;
pub use imatrix::Imatrix;

use fancy_regex::Regex;
use gguf::{GgmlType, Gguf, TensorInfo, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{0}")]
    Gguf(#[from] gguf::GgufError),
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error("importance matrix {path}: {why}")]
    Imatrix { path: String, why: String },
    #[error("{0} is already quantized ({1}); pass --allow-requantize to quantize it again (quality suffers)")]
    Requantize(String, GgmlType),
    #[error("{0}: {1}")]
    Tensor(String, String),
    #[error("the importance matrix matches none of this model's tensors: it was made for another model")]
    ImatrixForAnotherModel,
    #[error("importance matrix entry {name} has {got} values, the tensor has {expected} columns: it was made for another model")]
    ImatrixShape { name: String, got: usize, expected: usize },
    #[error("{0} needs an importance matrix for this type (pass --imatrix)")]
    NeedsImatrix(String),
    #[error("bad --tensor-type {0:?}: {1}")]
    TensorTypePattern(String, String),
    #[error("input and output are the same file")]
    SameFile,
}

/// What to write: llama-quantize's options.
#[derive(Debug, Clone)]
pub struct Params {
    pub ftype: FileType,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type PATTERN=TYPE`, first match wins (regex search on the tensor name).
    pub tensor_types: Vec<(String, GgmlType)>,
    pub pure: bool,
    pub allow_requantize: bool,
    pub leave_output_tensor: bool,
    pub threads: usize,
    pub imatrix: Option<Imatrix>,
    /// Where the imatrix came from, recorded as `quantize.imatrix.file`.
    pub imatrix_file: Option<String>,
    /// Extra metadata to record (e.g. measured quality).
    pub extra_metadata: Vec<(String, Value)>,
    /// The input's SHA-256 when the caller already knows it (it is computed otherwise).
    pub source_sha256: Option<String>,
    /// An explicit type for each named tensor, over every rule (what `--auto` found); the
    /// tensors it does not name follow the rules.
    pub assignment: Option<std::collections::BTreeMap<String, GgmlType>>,
}

impl Params {
    pub fn new(ftype: FileType) -> Self {
        Params {
            ftype,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            pure: false,
            allow_requantize: false,
            leave_output_tensor: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            imatrix: None,
            imatrix_file: None,
            extra_metadata: Vec::new(),
            source_sha256: None,
            assignment: None,
        }
    }
}

/// One tensor's fate.
#[derive(Debug, Clone)]
pub struct Planned {
    pub info: TensorInfo,
    pub to: GgmlType,
    pub bytes_out: usize,
}

impl Planned {
    pub fn converts(&self) -> bool {
        self.info.ggml_type != self.to
    }
}

/// The facts the mixes need, from the file's metadata.
pub fn model_facts(f: &Gguf) -> Result<ftype::ModelFacts, QuantError> {
    let arch = f.metadata_str("general.architecture")?.to_string();
    let get = |k: &str| f.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64().or_else(|| first_u64(v)));
    let n_layer = get("block_count").ok_or_else(|| QuantError::Tensor(arch.clone(), "no block_count".into()))? as usize;
    let n_head = get("attention.head_count").unwrap_or(1).max(1);
    let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head).max(1);
    let n_expert = get("expert_count").unwrap_or(0) as usize;
    Ok(ftype::ModelFacts { arch, n_layer, n_gqa: (n_head / n_head_kv) as usize, n_expert })
}

fn first_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Array(a) => a.to_i64s()?.first().map(|&x| x as u64),
        _ => None,
    }
}

/// Every tensor in llama.cpp's order with the type it will get, and how many tensors fell
/// back to another type because of their shape.
pub fn plan(f: &Gguf, p: &Params) -> Result<(Vec<Planned>, usize), QuantError> {
    let facts = model_facts(f)?;
    let mut tensors: Vec<TensorInfo> = f.tensors().to_vec();
    tensors.sort_by(|a, b| ftype::llama_order(&a.name, &b.name));
    let patterns = p
        .tensor_types
        .iter()
        .map(|(pat, t)| Regex::new(pat).map(|r| (r, *t)).map_err(|e| QuantError::TensorTypePattern(pat.clone(), e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut mixer = ftype::Mixer::new(p.ftype, &facts, p.imatrix.is_some(), tensors.iter().map(|t| t.name.as_str()));
    let default = p.ftype.default_type();
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let cat = ftype::Category::of(&t.name);
        let ne0 = t.dims.first().copied().unwrap_or(1);
        let to = if !ftype::allows_quantization(&t.name, &t.dims, !p.leave_output_tensor) {
            t.ggml_type
        } else if let Some(ty) = p.assignment.as_ref().and_then(|a| a.get(&t.name)) {
            *ty
        } else if let (Some(e), ftype::Category::TokenEmbd) = (p.token_embedding_type, cat) {
            e
        } else if let (Some(o), ftype::Category::Output) = (p.output_tensor_type, cat) {
            o
        } else if default.is_quantized() {
            let manual = patterns.iter().find(|(r, _)| r.is_match(&t.name).unwrap_or(false)).map(|(_, ty)| *ty);
            let ty = match manual {
                Some(ty) => ty,
                None if p.pure => default,
                None => mixer.mix_type(&t.name, ne0, p.output_tensor_type),
            };
            mixer.fallback(ty, ne0)
        } else {
            default
        };
        if !kernels::weights::can_quantize(to) && to != t.ggml_type {
            return Err(QuantError::Tensor(t.name.clone(), format!("cannot write type {to}")));
        }
        let bytes_out = if to == t.ggml_type {
            t.size
        } else {
            to.row_bytes(t.row_len())
                .map(|r| r * t.n_rows())
                .ok_or_else(|| QuantError::Tensor(t.name.clone(), format!("rows of {} do not fit {to}", t.row_len())))?
        };
        if to != t.ggml_type && ftype::requires_imatrix(&t.name, to, p.ftype) && p.imatrix.is_none() {
            return Err(QuantError::NeedsImatrix(t.name.clone()));
        }
        out.push(Planned { info: t, to, bytes_out });
    }
    Ok((out, mixer.n_fallback))
}

/// Progress of one tensor, reported after it is written.
pub struct Progress<'a> {
    pub index: usize,
    pub count: usize,
    pub tensor: &'a Planned,
}

/// Sizes before and after.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub n_tensors: usize,
    pub n_quantized: usize,
    pub n_fallback: usize,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub n_elements: u64,
    pub file_bytes: u64,
    pub source_sha256: String,
}

/// Quantize `input` into `output` (written to a temporary file beside it, then renamed).
pub fn quantize(input: &Path, output: &Path, p: &Params, mut progress: impl FnMut(Progress<'_>)) -> Result<Summary, QuantError> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(QuantError::SameFile);
        }
    }
    let f = Gguf::open(input)?;
    let (planned, n_fallback) = plan(&f, p)?;

    // the imatrix: which entry each tensor uses, checked before anything is written
    let mut weights: Vec<Option<Vec<f32>>> = vec![None; planned.len()];
    if let Some(im) = &p.imatrix {
        let mut matched = 0;
        for (i, t) in planned.iter().enumerate() {
            let Some(e) = im.entries.get(&t.info.name) else { continue };
            matched += 1;
            if !t.converts() {
                continue;
            }
            let expected = t.info.row_len() * t.info.dims.get(2).copied().unwrap_or(1) as usize;
            if e.sums.len() != expected {
                if ftype::Category::of(&t.info.name) == ftype::Category::TokenEmbd {
                    continue;
                }
                return Err(QuantError::ImatrixShape { name: t.info.name.clone(), got: e.sums.len(), expected });
            }
            weights[i] = Some(e.weights());
        }
        if matched == 0 {
            return Err(QuantError::ImatrixForAnotherModel);
        }
    }
    for (t, w) in planned.iter().zip(&weights) {
        if t.converts() && w.is_none() && ftype::requires_imatrix(&t.info.name, t.to, p.ftype) {
            return Err(QuantError::NeedsImatrix(t.info.name.clone()));
        }
        if t.converts() && t.info.ggml_type.is_quantized() && !p.allow_requantize {
            return Err(QuantError::Requantize(t.info.name.clone(), t.info.ggml_type));
        }
    }

    // the source digest goes into the header, which is written last: hash while quantizing
    let hasher = {
        let (input, known) = (input.to_path_buf(), p.source_sha256.clone());
        std::thread::spawn(move || known.map_or_else(|| sha256_file(&input), Ok))
    };
    const DIGEST_PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let mut meta: Vec<(String, Value)> = f.metadata().to_vec();
    set(&mut meta, "general.quantization_version", Value::U32(2));
    set(&mut meta, "general.file_type", Value::U32(p.ftype.id()));
    meta.retain(|(k, _)| !matches!(k.as_str(), "split.no" | "split.count" | "split.tensors.count"));
    if let Some(im) = &p.imatrix {
        if let Some(file) = &p.imatrix_file {
            set(&mut meta, "quantize.imatrix.file", Value::Str(file.clone()));
        }
        if let Some(d) = im.datasets.first() {
            set(&mut meta, "quantize.imatrix.dataset", Value::Str(d.clone()));
        }
        set(&mut meta, "quantize.imatrix.entries_count", Value::U32(im.entries.len() as u32));
        if im.chunk_count > 0 {
            set(&mut meta, "quantize.imatrix.chunks_count", Value::U32(im.chunk_count));
        }
        set(&mut meta, "bantam.quantize.imatrix_sha256", Value::Str(hex(&Sha256::digest(im.to_gguf()))));
    }
    set(&mut meta, "bantam.quantize.source_sha256", Value::Str(DIGEST_PLACEHOLDER.into()));
    set(&mut meta, "bantam.quantize.type", Value::Str(p.ftype.name().into()));
    set(&mut meta, "bantam.quantize.pure", Value::Bool(p.pure));
    for (k, v) in &p.extra_metadata {
        set(&mut meta, k, v.clone());
    }

    let align = f.alignment();
    let infos: Vec<_> = planned.iter().map(|t| (t.info.name.as_str(), t.to, t.info.dims.as_slice(), t.bytes_out)).collect();
    let (header, offsets) = gguf::header_bytes(&meta, &infos, align);

    let tmp = gguf::partial_path(output);
    let result = (|| -> Result<Summary, QuantError> {
        let io = |e: std::io::Error| QuantError::Io { path: output.display().to_string(), why: e.to_string() };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        w.write_all(&vec![0u8; header.len()]).map_err(io)?;
        let mut written = 0usize;
        let mut summary = Summary { n_tensors: planned.len(), n_fallback, ..Default::default() };
        for (i, t) in planned.iter().enumerate() {
            let pad = offsets[i] - written;
            w.write_all(&vec![0u8; pad]).map_err(io)?;
            written += pad;
            let src = f.tensor_data(&t.info);
            if t.converts() {
                convert(t, src, weights[i].as_deref(), p.threads.max(1), &mut w)?;
                summary.n_quantized += 1;
            } else {
                w.write_all(src).map_err(io)?;
            }
            f.release(&t.info);
            written += t.bytes_out;
            summary.bytes_in += t.info.size;
            summary.bytes_out += t.bytes_out;
            summary.n_elements += t.info.n_elements();
            progress(Progress { index: i, count: planned.len(), tensor: t });
        }
        let end = written.div_ceil(align) * align;
        w.write_all(&vec![0u8; end - written]).map_err(io)?;
        let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
        summary.source_sha256 = hasher.join().map_err(|_| io(std::io::Error::other("hashing the input failed")))??;
        set(&mut meta, "bantam.quantize.source_sha256", Value::Str(summary.source_sha256.clone()));
        let (header2, _) = gguf::header_bytes(&meta, &infos, align);
        debug_assert_eq!(header2.len(), header.len());
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header2).map_err(io)?;
        file.sync_all().map_err(io)?;
        summary.file_bytes = file.metadata().map_err(io)?.len();
        Ok(summary)
    })();
    match result {
        Ok(s) => {
            std::fs::rename(&tmp, output).map_err(|e| QuantError::Io { path: output.display().to_string(), why: e.to_string() })?;
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Rows per slab: a bounded f32 buffer however large the tensor.
const SLAB_FLOATS: usize = 8 << 20;

fn convert(t: &Planned, src: &[u8], imatrix: Option<&[f32]>, threads: usize, w: &mut impl Write) -> Result<(), QuantError> {
    let n = t.info.row_len();
    let rows = t.info.n_rows();
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let rows_per_mat = (t.info.dims.get(1).copied().unwrap_or(1) as usize).max(1);
    let src_row = t.info.ggml_type.row_bytes(n).expect("indexed tensors have whole rows");
    let dst_row = t.to.row_bytes(n).expect("planned types fit the rows");
    let slab = (SLAB_FLOATS / n).max(1);
    let mut f32s = vec![0f32; slab.min(rows) * n];
    let mut out = vec![0u8; slab.min(rows) * dst_row];
    let err = |e: String| QuantError::Tensor(t.info.name.clone(), e);
    let mut r0 = 0;
    while r0 < rows {
        // a slab never crosses into the next expert's matrix, whose imatrix slice differs
        let mat = r0 / rows_per_mat;
        let r1 = (r0 + slab).min(rows).min((mat + 1) * rows_per_mat);
        let nr = r1 - r0;
        let x = &mut f32s[..nr * n];
        let y = &mut out[..nr * dst_row];
        let qw = imatrix.map(|m| &m[mat * n..(mat + 1) * n]);
        let per = nr.div_ceil(threads);
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = x
                .chunks_mut(per * n)
                .zip(y.chunks_mut(per * dst_row))
                .enumerate()
                .map(|(k, (xs, ys))| {
                    let src = &src[(r0 + k * per) * src_row..];
                    s.spawn(move || -> Result<(), String> {
                        for (j, row) in xs.chunks_exact_mut(n).enumerate() {
                            kernels::dequant::dequantize_row(t.info.ggml_type, &src[j * src_row..(j + 1) * src_row], row);
                        }
                        if let Some(bad) = xs.iter().position(|v| !v.is_finite()) {
                            return Err(format!("non-finite value at element {}", bad % n));
                        }
                        kernels::weights::quantize_rows(t.to, xs, n, qw, ys).map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("quantizer panicked".into()))).collect()
        });
        for r in results {
            r.map_err(err)?;
        }
        w.write_all(y).map_err(|e| err(e.to_string()))?;
        r0 = r1;
    }
    Ok(())
}

fn set(meta: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => meta.push((key.to_string(), v)),
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, QuantError> {
    let io = |e: std::io::Error| QuantError::Io { path: path.display().to_string(), why: e.to_string() };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).map_err(io)?;
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Quantize for `bantam create --quantize` and /api/create's `quantize`: `type_name` as
/// Ollama and llama-quantize name the types (any case), from an unquantized model only (as
/// Ollama requires). `progress(done, total)` in output bytes.
pub fn quantize_for_create(src: &Path, dst: &Path, type_name: &str, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String> {
    let ftype = FileType::parse_or_explain(type_name)?;
    let p = Params::new(ftype);
    let f = Gguf::open(src).map_err(|e| e.to_string())?;
    let (plan, _) = plan(&f, &p).map_err(|e| e.to_string())?;
    if let Some(t) = plan.iter().find(|t| t.converts() && t.info.ggml_type.is_quantized()) {
        return Err(format!("the model is already quantized ({} in {}); quantize needs an F16, BF16 or F32 model", t.info.ggml_type, t.info.name));
    }
    let total: u64 = plan.iter().map(|t| t.bytes_out as u64).sum();
    let mut done = 0u64;
    quantize(src, dst, &p, |pr| {
        done += pr.tensor.bytes_out as u64;
        progress(done, total);
    })
    .map(drop)
    .map_err(|e| e.to_string())
}

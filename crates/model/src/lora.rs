//! LoRA adapters in llama.cpp's GGUF format, applied in the forward pass per sequence.
//!
//! A file has `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`
//! and, for each adapted base matrix `W` `[rows, cols]` named `N`, two tensors:
//! `N.lora_a` `[rank, cols]` (ggml dims `[cols, rank]`) and `N.lora_b` `[rows, rank]`
//! (ggml dims `[rank, rows]`). A token's projection becomes
//!
//! ```text
//! y = W x + s · B (A x),     s = scale · alpha / rank   (scale alone when alpha is 0)
//! ```
//!
//! as llama.cpp's `build_lora_mm` computes it, with `scale` the user's `--lora-scaled`
//! factor (1 by default). `token_embd.weight` is the exception llama.cpp makes too: its
//! `lora_a` is `[n_vocab, rank]` and a token's embedding gains `s · B A[token]`.
//! Norm vectors in an adapter are ignored, as llama.cpp ignores them.
//!
//! Adapters are small (rank × (rows + cols) per matrix), so they are held as f32. Each
//! token's delta is computed on its own, in a fixed order (base product, then the adapters
//! of its sequence in order), so a token's result does not depend on its batch.

use crate::{Model, ModelError};
use gguf::{GgmlType, Gguf, GgufWriter, Value};
use kernels::pool::Pool;
use kernels::pool::SendPtr;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Why an adapter could not be used with a model.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("{path}: not a LoRA adapter ({what})")]
    NotAdapter { path: String, what: String },
    #[error("{path}: the adapter is for {adapter:?} models, the model is {model:?}")]
    Arch { path: String, adapter: String, model: String },
    #[error("{path}: tensor {name}: {why}")]
    Tensor { path: String, name: String, why: String },
}

/// Where an adapted matrix sits: its layer (`None` for `output` and `token_embd`) and its
/// name inside the layer (`attn_q`, `ffn_down`, …).
pub type Target = (Option<usize>, &'static str);

/// One adapted matrix: `A` `[rank, cols]` and `B` `[rows, rank]`, row-major f32 (the
/// file's layouts), with `B` also kept transposed for the forward pass.
#[derive(Debug, Clone)]
pub struct Pair {
    pub rank: usize,
    pub rows: usize,
    pub cols: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// `Bᵀ` `[rank, rows]`: `B t` is then `rank` contiguous axpys.
    bt: Vec<f32>,
}

impl Pair {
    pub fn new(rank: usize, rows: usize, cols: usize, a: Vec<f32>, b: Vec<f32>) -> Pair {
        assert_eq!((a.len(), b.len()), (rank * cols, rows * rank), "lora pair shapes");
        let mut bt = vec![0f32; rank * rows];
        for i in 0..rows {
            for r in 0..rank {
                bt[r * rows + i] = b[i * rank + r];
            }
        }
        Pair { rank, rows, cols, a, b, bt }
    }
}

/// A LoRA adapter read from a file and checked against its base model.
#[derive(Debug)]
pub struct Adapter {
    /// Where it was read from (for messages and identity in a server).
    pub path: String,
    pub alpha: f32,
    pairs: HashMap<Target, Pair>,
}

/// Matrices of a decoder layer an adapter may change, by their GGUF names.
pub const LAYER_TARGETS: [&str; 8] = ["attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

fn parse_target(name: &str) -> Option<Target> {
    if let Some(rest) = name.strip_prefix("blk.") {
        let (il, which) = rest.split_once('.')?;
        let which = which.strip_suffix(".weight")?;
        let il: usize = il.parse().ok()?;
        return LAYER_TARGETS.iter().find(|&&t| t == which).map(|&t| (Some(il), t));
    }
    match name {
        "output.weight" => Some((None, "output")),
        "token_embd.weight" => Some((None, "token_embd")),
        _ => None,
    }
}

fn target_name(t: &Target) -> String {
    match t {
        (Some(il), w) => format!("blk.{il}.{w}.weight"),
        (None, w) => format!("{w}.weight"),
    }
}

impl Adapter {
    /// Read `path` and check every pair against `model`'s tensors (names and shapes), as
    /// llama.cpp's `llama_adapter_lora_init` does.
    pub fn load(path: impl AsRef<Path>, model: &Model) -> Result<Adapter, LoraError> {
        let path = path.as_ref();
        Self::from_gguf(&Gguf::open(path)?, model)
    }

    pub fn from_gguf(f: &Gguf, model: &Model) -> Result<Adapter, LoraError> {
        let path = f.path().display().to_string();
        let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let not = |what: String| LoraError::NotAdapter { path: path.clone(), what };
        if s("general.type") != "adapter" {
            return Err(not(format!("general.type is {:?}, expected \"adapter\"", s("general.type"))));
        }
        if s("adapter.type") != "lora" {
            return Err(not(format!("adapter.type is {:?}, expected \"lora\"", s("adapter.type"))));
        }
        let (arch, model_arch) = (s("general.architecture"), model.file.get("general.architecture").and_then(|v| v.as_str()).unwrap_or(""));
        if arch != model_arch {
            return Err(LoraError::Arch { path, adapter: arch, model: model_arch.to_string() });
        }
        let alpha = match f.get("adapter.lora.alpha") {
            None => 0.0,
            Some(v) => v.as_f64().ok_or_else(|| not("adapter.lora.alpha is not a number".into()))? as f32,
        };
        let bad = |name: &str, why: String| LoraError::Tensor { path: path.clone(), name: name.to_string(), why };
        let mut halves: HashMap<String, [Option<&gguf::TensorInfo>; 2]> = HashMap::new();
        for t in f.tensors() {
            if let Some(base) = t.name.strip_suffix(".lora_a") {
                halves.entry(base.to_string()).or_default()[0] = Some(t);
            } else if let Some(base) = t.name.strip_suffix(".lora_b") {
                halves.entry(base.to_string()).or_default()[1] = Some(t);
            } else if !t.name.ends_with("_norm.weight") {
                return Err(bad(&t.name, "unexpected suffix (expected .lora_a or .lora_b)".into()));
            }
        }
        let mut pairs = HashMap::new();
        for (base, [a, b]) in halves {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(bad(&base, "the pair is missing one half".into()));
            };
            let target = parse_target(&base).ok_or_else(|| bad(&base, "bantam cannot adapt this tensor".into()))?;
            let w = model.file.tensor(&base).ok_or_else(|| bad(&base, "the model has no such tensor (is this adapter for another model?)".into()))?;
            if a.dims.len() != 2 || b.dims.len() != 2 {
                return Err(bad(&base, format!("lora_a {:?} and lora_b {:?} must be matrices", a.dims, b.dims)));
            }
            let (cols, rows) = (w.row_len(), w.n_rows());
            let embd = target.1 == "token_embd";
            // ggml dims: a [cols, rank], b [rank, rows]; token_embd: a [rank, n_vocab], b [rank, n_embd].
            let (rank, a_ok) = if embd { (a.dims[0] as usize, a.dims[1] as usize == rows) } else { (a.dims[1] as usize, a.dims[0] as usize == cols) };
            let b_rows = if embd { cols } else { rows };
            if !a_ok || b.dims[0] as usize != rank || b.dims[1] as usize != b_rows || rank == 0 {
                return Err(bad(&base, format!("shapes lora_a {:?}, lora_b {:?} do not fit the model's {:?}", a.dims, b.dims, w.dims)));
            }
            let read = |t: &gguf::TensorInfo| -> Result<Vec<f32>, LoraError> {
                let (n, row) = (t.n_elements() as usize, t.row_len());
                let Some(row_bytes) = t.ggml_type.row_bytes(row) else {
                    return Err(bad(&t.name, format!("type {} cannot hold rows of {row}", t.ggml_type.name())));
                };
                let mut out = vec![0f32; n];
                let bytes = f.tensor_data(t);
                for (r, o) in out.chunks_exact_mut(row).enumerate() {
                    kernels::dequant::dequantize_row(t.ggml_type, &bytes[r * row_bytes..(r + 1) * row_bytes], o);
                }
                Ok(out)
            };
            let (a_data, b_data) = (read(a)?, read(b)?);
            if a_data.iter().chain(&b_data).any(|v| !v.is_finite()) {
                return Err(bad(&base, "holds a value that is not finite".into()));
            }
            pairs.insert(target, Pair::new(rank, b_rows, if embd { rows } else { cols }, a_data, b_data));
        }
        if pairs.is_empty() {
            return Err(not("it holds no lora_a/lora_b pairs".into()));
        }
        Ok(Adapter { path, alpha, pairs })
    }

    /// An adapter from pairs (`bantam finetune`, tests).
    pub fn new(path: impl Into<String>, alpha: f32, pairs: HashMap<Target, Pair>) -> Adapter {
        Adapter { path: path.into(), alpha, pairs }
    }

    pub fn pair(&self, target: &Target) -> Option<&Pair> {
        self.pairs.get(target)
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&Target, &Pair)> {
        self.pairs.iter()
    }

    /// Parameters the adapter adds.
    pub fn n_params(&self) -> usize {
        self.pairs.values().map(|p| p.a.len() + p.b.len()).sum()
    }

    /// The multiplier of `B A x` under the user's `scale`: llama.cpp's `get_scale`.
    pub fn factor(&self, rank: usize, scale: f32) -> f32 {
        if self.alpha != 0.0 {
            scale * self.alpha / rank as f32
        } else {
            scale
        }
    }

    /// The adapter as a GGUF file in llama.cpp's layout: `arch` is the base model's
    /// `general.architecture`; tensors are written in `ty` (F32 or F16), sorted by name.
    pub fn to_gguf(&self, arch: &str, ty: GgmlType, extra: &[(&str, Value)]) -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str(arch.into()));
        w.meta("general.type", Value::Str("adapter".into()));
        w.meta("adapter.type", Value::Str("lora".into()));
        w.meta("adapter.lora.alpha", Value::F32(self.alpha));
        for (k, v) in extra {
            w.meta(k, v.clone());
        }
        let bytes = |v: &[f32]| -> Vec<u8> {
            match ty {
                GgmlType::F16 => v.iter().flat_map(|x| kernels::blocks::f32_to_f16(*x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }
        };
        let ty = if ty == GgmlType::F16 { ty } else { GgmlType::F32 };
        let mut names: Vec<(&Target, &Pair)> = self.pairs.iter().collect();
        names.sort_by_key(|(t, _)| target_name(t));
        for (t, p) in names {
            let n = target_name(t);
            if t.1 == "token_embd" {
                w.tensor(&format!("{n}.lora_a"), ty, &[p.rank as u64, p.cols as u64], bytes(&p.a));
            } else {
                w.tensor(&format!("{n}.lora_a"), ty, &[p.cols as u64, p.rank as u64], bytes(&p.a));
            }
            w.tensor(&format!("{n}.lora_b"), ty, &[p.rank as u64, p.rows as u64], bytes(&p.b));
        }
        w.to_bytes()
    }
}

/// The adapters one sequence runs with, each with its user scale, applied in order.
#[derive(Debug, Clone, Default)]
pub struct Adapters(pub Vec<(Arc<Adapter>, f32)>);

impl Adapters {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether two sets compute the same thing (the same loaded adapters, the same scales):
    /// a cache computed under one serves the other.
    pub fn same(a: Option<&Adapters>, b: Option<&Adapters>) -> bool {
        fn items(x: Option<&Adapters>) -> &[(Arc<Adapter>, f32)] {
            x.map_or(&[], |s| s.0.as_slice())
        }
        let (a, b) = (items(a), items(b));
        a.len() == b.len() && a.iter().zip(b).all(|((x, s), (y, t))| Arc::ptr_eq(x, y) && s.to_bits() == t.to_bits())
    }
}

/// `Σ a[i] b[i]`, eight lanes in a fixed order (so a result does not depend on the batch).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `y += c x`.
#[inline(always)]
fn axpy_lanes(y: &mut [f32], c: f32, x: &[f32]) {
    for (o, v) in y.iter_mut().zip(x) {
        *o += c * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], c: f32, x: &[f32]) {
    axpy_lanes(y, c, x)
}

/// Whether the AVX2 builds of the loops may run (the kernels' level, so `BANTAM_ISA` caps
/// it too).
#[cfg(target_arch = "x86_64")]
pub(crate) fn wide() -> bool {
    use kernels::dot::Isa;
    matches!(Isa::detect_cached(), Isa::Avx2 | Isa::AvxVnni | Isa::Vnni)
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: the CPU has AVX2 and FMA (checked by the kernels' detection).
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

pub(crate) fn axpy(y: &mut [f32], c: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: as in `dot`.
        return unsafe { axpy_avx2(y, c, x) };
    }
    axpy_lanes(y, c, x)
}

impl Pair {
    /// `out [rows] += f · B (A x)`, `x [cols]`.
    fn add_to(&self, x: &[f32], f: f32, out: &mut [f32]) {
        let mut t = [0f32; 256];
        let mut big = Vec::new();
        let t: &mut [f32] = if self.rank <= t.len() {
            &mut t[..self.rank]
        } else {
            big.resize(self.rank, 0.0);
            &mut big
        };
        for (r, tr) in t.iter_mut().enumerate() {
            *tr = dot(&self.a[r * self.cols..(r + 1) * self.cols], x);
        }
        self.add_b(t, f, out);
    }

    /// `out [rows] += f · B t`, `t [rank]`.
    fn add_b(&self, t: &[f32], f: f32, out: &mut [f32]) {
        for (r, &tr) in t.iter().enumerate() {
            axpy(out, f * tr, &self.bt[r * self.rows..(r + 1) * self.rows]);
        }
    }
}

impl Pair {
    /// Row `i` of the adapted matrix gains `f · (B A)[i]` (`w_row [cols]`): what merging
    /// bakes into the weights. For `token_embd` (`embd`), row `i` is token `i`'s embedding
    /// and gains `f · B A[i]`.
    pub fn merge_row(&self, i: usize, f: f32, embd: bool, w_row: &mut [f32]) {
        if embd {
            let a = &self.a[i * self.rank..(i + 1) * self.rank];
            self.add_b(a, f, w_row);
            return;
        }
        for r in 0..self.rank {
            let c = f * self.b[i * self.rank + r];
            for (w, a) in w_row.iter_mut().zip(&self.a[r * self.cols..(r + 1) * self.cols]) {
                *w += c * a;
            }
        }
    }
}

/// The adapted matrix a tensor name stands for, if an adapter may change it.
pub fn target_of(tensor: &str) -> Option<Target> {
    parse_target(tensor)
}

/// Per token of a batch, the adapters of its sequence (or none).
pub(crate) struct PerToken<'a> {
    pub sets: &'a [Option<Arc<Adapters>>],
    pub seq: &'a [usize],
}

impl PerToken<'_> {
    fn set(&self, t: usize) -> Option<&Adapters> {
        self.sets.get(self.seq[t]).and_then(|s| s.as_deref())
    }

    pub fn any(&self) -> bool {
        self.sets.iter().any(|s| s.as_ref().is_some_and(|s| !s.is_empty()))
    }

    /// `out [T, rows] += Σ f · B (A x[t])` for each token's adapters on `target`;
    /// `x [T, cols]`. Tokens are spread over the pool's threads.
    pub fn apply(&self, pool: &Pool, target: &Target, x: &[f32], cols: usize, out: &mut [f32], rows: usize) {
        let t_n = self.seq.len();
        if !self.any() || !(0..t_n).any(|t| self.set(t).is_some_and(|s| s.0.iter().any(|(a, _)| a.pair(target).is_some()))) {
            return;
        }
        // Tokens of one adapter set back to back (in batch order within it), so a set's
        // matrices are read once into cache for all its tokens of the step.
        let key = |t: usize| self.set(t).map_or(0, |s| s as *const Adapters as usize);
        let mut order: Vec<usize> = (0..t_n).filter(|&t| self.set(t).is_some()).collect();
        order.sort_by_key(|&t| (key(t), t));
        let out_ptr = SendPtr(out.as_mut_ptr());
        let n = pool.n_threads().min(order.len());
        pool.run_chunks(n, |i, n| {
            for &t in &order[Pool::range(i, n, order.len())] {
                let Some(set) = self.set(t) else { continue };
                // SAFETY: each token's output row is written by exactly one chunk.
                let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(t * rows), rows) };
                for (ad, scale) in &set.0 {
                    if let Some(p) = ad.pair(target) {
                        p.add_to(&x[t * cols..(t + 1) * cols], ad.factor(p.rank, *scale), o);
                    }
                }
            }
        });
    }

    /// Embedding rows `x [T, n_embd]` gain `f · B A[token]` where adapted.
    pub fn apply_embd(&self, tokens: &[u32], x: &mut [f32], n_embd: usize) {
        let target: Target = (None, "token_embd");
        for (t, &tok) in tokens.iter().enumerate() {
            let Some(set) = self.set(t) else { continue };
            for (ad, scale) in &set.0 {
                if let Some(p) = ad.pair(&target) {
                    let a = &p.a[tok as usize * p.rank..(tok as usize + 1) * p.rank];
                    p.add_b(a, ad.factor(p.rank, *scale), &mut x[t * n_embd..(t + 1) * n_embd]);
                }
            }
        }
    }
}

/// A deterministic adapter for `model` with `rank` on the given layer `targets` (names from
/// [`LAYER_TARGETS`] the model has), entries of A uniform in ±`a_amp`/√cols and of B in
/// ±`b_amp`/√rank, from `seed` (splitmix64): the same on every machine. `b_amp = 0` is how
/// training starts (the adapter changes nothing until it learns).
pub fn random(model: &Model, rank: usize, alpha: f32, targets: &[&str], seed: u64, a_amp: f32, b_amp: f32) -> Result<Adapter, ModelError> {
    let mut rng = crate::train::Rng(seed);
    // 24 bits: exact in f32, in [-0.5, 0.5).
    let mut next = move || rng.uniform() - 0.5;
    let mut pairs = HashMap::new();
    for il in 0..model.config.n_layer {
        for which in targets {
            let name = format!("blk.{il}.{which}.weight");
            let Some(w) = model.file.tensor(&name) else { continue };
            let (cols, rows) = (w.row_len(), w.n_rows());
            let a_s = 2.0 * a_amp / (cols as f32).sqrt();
            let b_s = 2.0 * b_amp / (rank as f32).sqrt();
            let a = (0..rank * cols).map(|_| next() * a_s).collect();
            let b = (0..rows * rank).map(|_| next() * b_s).collect();
            let which = LAYER_TARGETS.iter().find(|&&t| t == *which).ok_or_else(|| ModelError::BadConfig(format!("{which} is not an adaptable matrix")))?;
            pairs.insert((Some(il), *which), Pair::new(rank, rows, cols, a, b));
        }
    }
    if pairs.is_empty() {
        return Err(ModelError::BadConfig(format!("the model has none of the targets {targets:?}")));
    }
    Ok(Adapter::new("random", alpha, pairs))
}

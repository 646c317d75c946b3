//! `bantam merge BASE ADAPTER… -o OUT.gguf`: LoRA adapters baked into the weights, as
//! llama-export-lora does: every adapted matrix becomes `W + Σ f · B A` (written as F16
//! where the base is quantized, in the base's type otherwise); every other tensor is copied.
//! With `--quantize TYPE` the merged file is then quantized as `bantam quantize` does.

use anyhow::{bail, Context, Result};
use clap::Args;
use gguf::{Array, GgmlType, Gguf, Value};
use model::lora::{self, Adapter};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct MergeArgs {
    /// The base model: a name in the store or a GGUF file
    base: String,
    /// LoRA adapters (GGUF, llama.cpp's format), applied in order
    #[arg(required = true)]
    adapters: Vec<PathBuf>,
    /// Where to write the merged model
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// The scale of each adapter, in order (default 1)
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    adapter_scale: Vec<f32>,
    /// Quantize the merged model to this type (Q4_K_M, Q8_0, …)
    #[arg(long, value_name = "TYPE")]
    quantize: Option<String>,
    /// Worker threads for --quantize (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

pub fn main(a: MergeArgs) -> Result<()> {
    if a.adapter_scale.len() > a.adapters.len() {
        bail!("{} --adapter-scale for {} adapters", a.adapter_scale.len(), a.adapters.len());
    }
    let ftype = a.quantize.as_deref().map(quant::FileType::parse_or_explain).transpose().map_err(anyhow::Error::msg)?;
    let found = registry::find(&store::Store::open_default(), &a.base)?;
    let base = model::Model::open(&found.path).with_context(|| format!("cannot open {}", found.path.display()))?;
    let mut set = Vec::new();
    for (i, p) in a.adapters.iter().enumerate() {
        set.push((Adapter::load(p, &base)?, a.adapter_scale.get(i).copied().unwrap_or(1.0)));
    }
    let merged_path = match ftype {
        Some(_) => a.output.with_file_name(format!(".{}.merged-{}", a.output.file_name().unwrap_or_default().to_string_lossy(), std::process::id())),
        None => a.output.clone(),
    };
    let n = merge(&base.file, &set, &merged_path)?;
    eprintln!("merged {} adapter(s) into {n} tensors", set.len());
    if let Some(ft) = ftype {
        let mut p = quant::Params::new(ft);
        p.allow_requantize = true;
        if let Some(t) = a.threads {
            p.threads = t.max(1);
        }
        let r = quant::quantize(&merged_path, &a.output, &p, |_| {});
        let _ = std::fs::remove_file(&merged_path);
        let s = r?;
        eprintln!("quantized to {}: {} MiB", ft.name(), s.bytes_out >> 20);
    }
    eprintln!("wrote {}", a.output.display());
    Ok(())
}

/// Write `base` with `adapters` merged to `out` (through a temporary file beside it);
/// returns how many tensors changed.
pub fn merge(base: &Gguf, adapters: &[(Adapter, f32)], out: &Path) -> Result<usize> {
    let mut meta: Vec<(String, Value)> = base.metadata().to_vec();
    let names: Vec<String> = adapters.iter().map(|(a, s)| format!("{} (scale {s})", a.path)).collect();
    meta.retain(|(k, _)| k != "bantam.merge.adapters");
    meta.push(("bantam.merge.adapters".into(), Value::Array(Array::Str(names))));
    // Each tensor's output type and size.
    let plan: Vec<(&gguf::TensorInfo, GgmlType, usize, bool)> = base
        .tensors()
        .iter()
        .map(|t| {
            let adapted = lora::target_of(&t.name).is_some_and(|tg| adapters.iter().any(|(a, _)| a.pair(&tg).is_some()));
            let ty = match (adapted, t.ggml_type) {
                (false, ty) => ty,
                (true, GgmlType::F32) => GgmlType::F32,
                (true, _) => GgmlType::F16,
            };
            let size = if adapted { t.n_elements() as usize * if ty == GgmlType::F32 { 4 } else { 2 } } else { t.size };
            (t, ty, size, adapted)
        })
        .collect();
    let infos: Vec<_> = plan.iter().map(|(t, ty, size, _)| (t.name.as_str(), *ty, t.dims.as_slice(), *size)).collect();
    let align = base.alignment();
    let (header, offsets) = gguf::header_bytes(&meta, &infos, align);
    let tmp = gguf::partial_path(out);
    let result = (|| -> Result<usize> {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?);
        w.write_all(&header)?;
        let mut written = 0usize;
        let mut changed = 0;
        for (i, (t, ty, size, adapted)) in plan.iter().enumerate() {
            w.write_all(&vec![0u8; offsets[i] - written])?;
            written = offsets[i];
            let src = base.tensor_data(t);
            if !adapted {
                w.write_all(src)?;
            } else {
                changed += 1;
                let target = lora::target_of(&t.name).expect("adapted tensors have targets");
                let (cols, rows) = (t.row_len(), t.n_rows());
                let row_bytes = t.ggml_type.row_bytes(cols).context("row size")?;
                let mut row = vec![0f32; cols];
                for r in 0..rows {
                    kernels::dequant::dequantize_row(t.ggml_type, &src[r * row_bytes..(r + 1) * row_bytes], &mut row);
                    for (ad, scale) in adapters {
                        if let Some(p) = ad.pair(&target) {
                            p.merge_row(r, ad.factor(p.rank, *scale), target.1 == "token_embd", &mut row);
                        }
                    }
                    if *ty == GgmlType::F32 {
                        row.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))?;
                    } else {
                        row.iter().try_for_each(|v| w.write_all(&kernels::blocks::f32_to_f16(*v).to_le_bytes()))?;
                    }
                }
            }
            base.release(t);
            written += size;
        }
        let end = written.div_ceil(align) * align;
        w.write_all(&vec![0u8; end - written])?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
        Ok(changed)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

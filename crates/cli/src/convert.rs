//! `bantam convert DIR -o OUT.gguf [--outtype f32|f16|bf16|q8_0]`: a Hugging Face model
//! directory to GGUF, as llama.cpp's `convert_hf_to_gguf.py` writes it; and `bantam export
//! MODEL -o DIR`, the way back (config, safetensors and tokenizer files).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args)]
pub struct ConvertArgs {
    /// A Hugging Face model directory: config.json, *.safetensors, tokenizer files
    dir: PathBuf,
    /// Where to write the GGUF file (default: DIR/NAME-OUTTYPE.gguf)
    #[arg(short = 'o', long = "outfile", alias = "output")]
    output: Option<PathBuf>,
    /// Type of the matrices: f32, f16, bf16, q8_0, or auto (bf16 for a bf16 checkpoint,
    /// else f16); vectors stay f32
    #[arg(long, default_value = "auto")]
    outtype: String,
    /// tokenizer.ggml.pre to write when the tokenizer's pre-tokenizer is not recognised
    #[arg(long, value_name = "NAME")]
    pre: Option<String>,
}

pub fn main(a: ConvertArgs) -> Result<()> {
    if !a.dir.is_dir() {
        bail!("{} is not a directory", a.dir.display());
    }
    let outtype = match convert::OutType::parse(&a.outtype) {
        Some(t) => t,
        None if a.outtype.eq_ignore_ascii_case("auto") => convert::auto_outtype(&a.dir).with_context(|| format!("cannot convert {}", a.dir.display()))?,
        None => bail!("unknown --outtype {:?} (f32, f16, bf16, q8_0 or auto)", a.outtype),
    };
    let out = a.output.clone().unwrap_or_else(|| {
        let name = a.dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "model".into());
        a.dir.join(format!("{name}-{}.gguf", format!("{outtype:?}").to_ascii_lowercase()))
    });
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("{}: the output directory does not exist", parent.display());
        }
    }
    let tty = std::io::stderr().is_terminal();
    let opts = convert::Options { outtype, pre: a.pre.clone() };
    let s = convert::convert(&a.dir, &out, &opts, |name, ty, i, n| {
        if tty {
            eprint!("\r\x1b[K[{:>4}/{n}] {name} → {}", i + 1, ty.name());
        } else {
            eprintln!("[{:>4}/{n}] {name} → {}", i + 1, ty.name());
        }
    })
    .with_context(|| format!("cannot convert {}", a.dir.display()))?;
    if tty {
        eprintln!();
    }
    eprintln!(
        "{}: {} tensors, vocabulary {} ({}), {:.1} MiB → {:.1} MiB",
        s.arch.name(),
        s.tensors,
        s.n_vocab,
        s.pre.as_deref().unwrap_or("-"),
        s.bytes_in as f64 / 1048576.0,
        s.bytes_out as f64 / 1048576.0
    );
    eprintln!("wrote {}", out.display());
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// The model: a name in the store or a GGUF file
    model: String,
    /// The directory to write (created if needed)
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Type of the matrices in model.safetensors: f32, f16 or bf16 (quantized weights are dequantized)
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn export(a: ExportArgs) -> Result<()> {
    let dtype = match a.dtype.to_ascii_lowercase().as_str() {
        "f32" => convert::safetensors::Dtype::F32,
        "f16" => convert::safetensors::Dtype::F16,
        "bf16" => convert::safetensors::Dtype::BF16,
        d => bail!("unknown --dtype {d:?} (f32, f16 or bf16)"),
    };
    let found = registry::find(&store::Store::open_default(), &a.model)?;
    let f = gguf::Gguf::open(&found.path)?;
    let n = convert::export(&f, &a.output, dtype).with_context(|| format!("cannot export {}", found.path.display()))?;
    eprintln!("wrote {n} tensors and the tokenizer to {}", a.output.display());
    Ok(())
}

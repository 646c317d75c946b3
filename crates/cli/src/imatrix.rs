//! `bantam imatrix MODEL -f TEXT -o imatrix.gguf`: the importance matrix of a calibration
//! text, in llama-imatrix's GGUF format.

use anyhow::{Context, Result};
use clap::Args;
use kernels::pool::Pool;
use quant::imatrix::{Entry, Imatrix};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct ImatrixArgs {
    /// Model name or path to a .gguf file (ideally the unquantized one)
    model: String,
    /// Calibration text
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Output file
    #[arg(short = 'o', long = "output", default_value = "imatrix.gguf")]
    output: PathBuf,
    /// Tokens per chunk
    #[arg(short = 'c', long, default_value_t = 512)]
    ctx_size: usize,
    /// Use only the first N chunks
    #[arg(long)]
    chunks: Option<usize>,
    /// Also collect output.weight's input
    #[arg(long)]
    process_output: bool,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

pub fn main(a: ImatrixArgs) -> Result<()> {
    let text = crate::perplexity::read_text(&a.file)?;
    let lm = registry::load(&store::Store::open_default(), &a.model)?;
    let mut tokens = lm.tokenizer.encode(&text, true, false);
    if let Some(n) = a.chunks {
        tokens.truncate(n.max(2) * a.ctx_size);
    }
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let pool = Pool::new(crate::threads(a.threads));
    let n_chunks = tokens.len() / a.ctx_size.max(1);
    eprintln!("computing over {n_chunks} chunks of {} tokens", a.ctx_size);
    let t0 = Instant::now();
    let (stats, report) = engine::perplexity::imatrix(&lm.model, &pool, &tokens, a.ctx_size, bos, a.process_output, |i, ppl| {
        eprint!("[{}]{ppl:.4},", i + 1);
    })?;
    eprintln!();
    let secs = t0.elapsed().as_secs_f64();
    let mut im =
        Imatrix { datasets: vec![a.file.display().to_string()], chunk_count: report.n_chunks as u32, chunk_size: a.ctx_size as u32, ..Default::default() };
    for (name, sums, n) in stats.entries() {
        im.entries.insert(name, Entry { sums: sums.to_vec(), counts: vec![n] });
    }
    let tmp = a.output.with_file_name(format!(
        ".{}.partial-{}",
        a.output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, im.to_gguf()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.output).with_context(|| format!("writing {}", a.output.display()))?;
    println!("Final estimate: PPL = {:.4} +/- {:.5}", report.ppl, report.stderr);
    println!(
        "stored {} entries computed on {} chunks in {} ({:.1} s, {:.1} tokens/s)",
        im.entries.len(),
        im.chunk_count,
        a.output.display(),
        secs,
        (report.n_chunks * a.ctx_size) as f64 / secs
    );
    Ok(())
}

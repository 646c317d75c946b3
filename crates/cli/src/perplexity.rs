//! `bantam perplexity MODEL FILE --ctx-size N`.

use anyhow::{Context, Result};
use clap::Args;
use kernels::pool::Pool;
use std::path::PathBuf;

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model name or path to a .gguf file
    model: String,
    /// Text file to score
    file: PathBuf,
    /// Tokens per chunk
    #[arg(short = 'c', long, default_value_t = 512)]
    ctx_size: usize,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Score only the first N chunks (llama-perplexity's --chunks)
    #[arg(long)]
    chunks: Option<usize>,
    #[command(flatten)]
    cache: crate::CacheArgs,
}

pub fn main(a: PerplexityArgs) -> Result<()> {
    let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", a.file.display()))?;
    // llama-perplexity reads the file with one trailing newline removed.
    if text.ends_with('\n') {
        text.pop();
    }
    let lm = registry::load(&store::Store::open_default(), &a.model)?;
    let mut tokens = lm.tokenizer.encode(&text, true, false);
    if let Some(n) = a.chunks {
        tokens.truncate(n.max(1) * a.ctx_size);
    }
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let pool = Pool::new(crate::threads(a.threads));
    eprintln!("{} tokens, {} chunks of {}", tokens.len(), tokens.len() / a.ctx_size.max(1), a.ctx_size);
    let r = engine::perplexity::perplexity(&lm.model, &pool, &tokens, a.ctx_size, bos, a.cache.types()?)?;
    let running: Vec<String> = r.running.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
    eprintln!("{}", running.join(","));
    println!("PPL = {:.4} +/- {:.5}", r.ppl, r.stderr);
    Ok(())
}

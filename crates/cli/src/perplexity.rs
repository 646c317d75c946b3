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
    /// Compare against this base model (name or .gguf): KL divergence, Δp and the same-top
    /// rate, as llama-perplexity --kl-divergence reports them, both models run side by side
    #[arg(long = "kl-divergence", value_name = "BASE")]
    kl_divergence: Option<String>,
    #[command(flatten)]
    cache: crate::CacheArgs,
}

/// A text file as llama.cpp's `-f` reads it: UTF-8, one trailing newline removed.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

pub fn main(a: PerplexityArgs) -> Result<()> {
    let text = read_text(&a.file)?;
    let lm = registry::load(&store::Store::open_default(), &a.model)?;
    let mut tokens = lm.tokenizer.encode(&text, true, false);
    if let Some(n) = a.chunks {
        tokens.truncate(n.max(1) * a.ctx_size);
    }
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let pool = Pool::new(crate::threads(a.threads));
    eprintln!("{} tokens, {} chunks of {}", tokens.len(), tokens.len() / a.ctx_size.max(1), a.ctx_size);
    if let Some(base) = &a.kl_divergence {
        let base = registry::load(&store::Store::open_default(), base)?;
        let r = engine::perplexity::kl_divergence(&lm.model, &base.model, &pool, &tokens, a.ctx_size, bos, |i, ppl, kld| {
            eprintln!("{:4}    PPL {ppl:9.4}    KLD {kld:10.5}", i + 1);
        })?;
        print_kld(&r);
        return Ok(());
    }
    let r = engine::perplexity::perplexity(&lm.model, &pool, &tokens, a.ctx_size, bos, a.cache.types()?)?;
    let running: Vec<String> = r.running.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
    eprintln!("{}", running.join(","));
    println!("PPL = {:.4} +/- {:.5}", r.ppl, r.stderr);
    Ok(())
}

fn print_kld(r: &engine::perplexity::KldReport) {
    use engine::perplexity::KldReport as K;
    let pm = |v: (f64, f64)| format!("{:10.6} ± {:10.6}", v.0, v.1);
    println!("====== Perplexity statistics ======");
    println!("Mean PPL(Q)                   : {}", pm(r.ppl_q));
    println!("Mean PPL(base)                : {}", pm(r.ppl_base));
    println!("Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * r.cor_ln_ppl);
    println!("Mean ln(PPL(Q)/PPL(base))     : {}", pm(r.ln_ppl_ratio));
    println!("Mean PPL(Q)/PPL(base)         : {}", pm(r.ppl_ratio));
    println!("Mean PPL(Q)-PPL(base)         : {}", pm(r.ppl_diff));
    println!();
    println!("====== KL divergence statistics ======");
    println!("Mean    KLD: {}", pm(r.kld));
    let k = &r.kld_values;
    println!("Maximum KLD: {:10.6}", k[k.len() - 1]);
    for (label, f) in [("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9)] {
        println!("{label}   KLD: {:10.6}", K::percentile(k, f));
    }
    println!("Median  KLD: {:10.6}", K::median(k));
    for (label, f) in [("10.0%", 0.1), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001)] {
        println!("{label}   KLD: {:10.6}", K::percentile(k, f));
    }
    println!("Minimum KLD: {:10.6}", k[0]);
    println!();
    println!("====== Token probability statistics ======");
    println!("Mean    Δp: {:6.3} ± {:5.3} %", 100.0 * r.p_diff.0, 100.0 * r.p_diff.1);
    let p = &r.p_diff_values;
    println!("Maximum Δp: {:6.3}%", 100.0 * p[p.len() - 1]);
    for (label, f) in [("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9), ("75.0%", 0.75)] {
        println!("{label}   Δp: {:6.3}%", 100.0 * K::percentile(p, f));
    }
    println!("Median  Δp: {:6.3}%", 100.0 * K::median(p));
    for (label, f) in [("25.0%", 0.25), ("10.0%", 0.1), (" 5.0%", 0.05), (" 1.0%", 0.01), (" 0.1%", 0.001)] {
        println!("{label}   Δp: {:6.3}%", 100.0 * K::percentile(p, f));
    }
    println!("Minimum Δp: {:6.3}%", 100.0 * p[0]);
    println!("RMS Δp    : {:6.3} ± {:5.3} %", 100.0 * r.rms_p_diff.0, 100.0 * r.rms_p_diff.1);
    println!("Same top p: {:6.3} ± {:5.3} %", 100.0 * r.same_top.0, 100.0 * r.same_top.1);
}

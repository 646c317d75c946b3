//! `bantam bench`: prompt processing (one batch of `-p` tokens) and generation (`-n` tokens
//! one at a time), measured as llama-bench does: random tokens (BOS first when the model
//! adds it), a warm-up run, then `-r` runs; mean ± sample stdev of tokens/s.

use anyhow::{bail, Result};
use clap::Args;
use kernels::pool::Pool;
use model::{Batch, KvCache, Model, Scratch};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Model name or path to a .gguf file
    model: String,
    /// Prompt tokens processed in one batch (0 skips the test)
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (0 skips the test)
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Repetitions
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as u32
    }
}

fn stats(samples: &[f64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = if samples.len() > 1 { samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Seconds for one batch of `n` tokens from an empty cache.
fn run_prompt(m: &Model, pool: &Pool, bos: Option<u32>, n: usize, rng: &mut Rng, cache: &mut KvCache, s: &mut Scratch) -> Result<f64> {
    let mut b = Batch::default();
    for i in 0..n {
        let t = if i == 0 { bos.unwrap_or_else(|| rng.next(m.config.n_vocab)) } else { rng.next(m.config.n_vocab) };
        b.push(t, 0, i + 1 == n);
    }
    cache.clear();
    let t0 = Instant::now();
    m.forward(pool, &b, &mut [cache], s)?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Seconds for `n` single-token steps from an empty cache.
fn run_gen(m: &Model, pool: &Pool, bos: Option<u32>, n: usize, rng: &mut Rng, cache: &mut KvCache, s: &mut Scratch) -> Result<f64> {
    let mut b = Batch::default();
    cache.clear();
    let mut t = bos.unwrap_or_else(|| rng.next(m.config.n_vocab));
    let t0 = Instant::now();
    for _ in 0..n {
        b.clear();
        b.push(t, 0, true);
        m.forward(pool, &b, &mut [&mut *cache], s)?;
        t = rng.next(m.config.n_vocab);
    }
    Ok(t0.elapsed().as_secs_f64())
}

pub fn main(a: BenchArgs) -> Result<()> {
    if a.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    let lm = registry::load(&store::Store::open_default(), &a.model)?;
    let m = &lm.model;
    let threads = crate::threads(a.threads);
    let pool = Pool::new(threads);
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let mut cache = KvCache::new(&m.config, a.n_prompt.max(a.n_gen) + 1);
    let mut scratch = Scratch::default();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut results = Vec::new();
    for (test, n) in [("pp", a.n_prompt), ("tg", a.n_gen)] {
        if n == 0 {
            continue;
        }
        let mut samples = Vec::new();
        for r in 0..=a.repetitions {
            let secs = if test == "pp" {
                run_prompt(m, &pool, bos, n, &mut rng, &mut cache, &mut scratch)?
            } else {
                run_gen(m, &pool, bos, n, &mut rng, &mut cache, &mut scratch)?
            };
            if r > 0 {
                samples.push(n as f64 / secs); // run 0 warms up
            }
        }
        let (mean, sd) = stats(&samples);
        results.push(serde_json::json!({
            "model": lm.name, "file_size": m.file.file_size(), "n_params": m.n_params(),
            "test": format!("{test}{n}"), "n_prompt": if test == "pp" { n } else { 0 }, "n_gen": if test == "tg" { n } else { 0 },
            "threads": threads, "repetitions": a.repetitions, "avg_ts": mean, "stddev_ts": sd, "samples_ts": samples,
            "isa": kernels::dot::Isa::detect_cached().as_str(), "cpu_info": kernels::dot::cpu_model(),
        }));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("| model | size | threads | test | t/s |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        for r in &results {
            println!(
                "| {} | {:.2} MiB | {} | {} | {:.2} ± {:.2} |",
                r["model"].as_str().unwrap_or(""),
                r["file_size"].as_f64().unwrap_or(0.0) / 1048576.0,
                threads,
                r["test"].as_str().unwrap_or(""),
                r["avg_ts"].as_f64().unwrap_or(0.0),
                r["stddev_ts"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

//! `bantam bench`: prompt processing (`-p` tokens in batches of `-ub`) and generation (`-n`
//! tokens one at a time), each after `-d` tokens already in the cache, measured as
//! llama-bench does: random tokens (BOS first when the model adds it), a warm-up run, then
//! `-r` runs; mean ± sample stdev of tokens/s. The depth is filled before each run, untimed.

use anyhow::{bail, Result};
use clap::Args;
use kernels::pool::Pool;
use model::{Batch, KvCache, Model, Scratch};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Model name or path to a .gguf file
    model: String,
    /// Prompt tokens, comma-separated for several tests (0 skips the test)
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    n_prompt: Vec<usize>,
    /// Tokens generated one at a time, comma-separated for several tests (0 skips the test)
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    n_gen: Vec<usize>,
    /// Tokens already in the cache when a test starts, comma-separated for several depths
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    n_depth: Vec<usize>,
    /// Most prompt tokens per forward pass (llama-bench's n_ubatch)
    #[arg(long = "ubatch-size", visible_alias = "ub", default_value_t = 512)]
    ubatch: usize,
    #[command(flatten)]
    cache: crate::CacheArgs,
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

/// Random tokens, BOS first when the model adds it and the cache is empty.
fn random_tokens(m: &Model, bos: Option<u32>, n: usize, at_start: bool, rng: &mut Rng) -> Vec<u32> {
    (0..n).map(|i| if i == 0 && at_start { bos.unwrap_or_else(|| rng.next(m.config.n_vocab)) } else { rng.next(m.config.n_vocab) }).collect()
}

/// Append `tokens` to the cache in batches of `ubatch`, logits for the last one.
fn feed(m: &Model, pool: &Pool, tokens: &[u32], ubatch: usize, cache: &mut KvCache, s: &mut Scratch) -> Result<()> {
    let mut b = Batch::default();
    for (ci, chunk) in tokens.chunks(ubatch.max(1)).enumerate() {
        b.clear();
        for (i, &t) in chunk.iter().enumerate() {
            b.push(t, 0, ci * ubatch + i + 1 == tokens.len());
        }
        m.forward(pool, &b, &mut [&mut *cache], s)?;
    }
    Ok(())
}

/// Empty the cache, then put `depth` random tokens in it.
#[allow(clippy::too_many_arguments)]
fn fill(m: &Model, pool: &Pool, bos: Option<u32>, depth: usize, ubatch: usize, rng: &mut Rng, cache: &mut KvCache, s: &mut Scratch) -> Result<()> {
    cache.clear();
    let tokens = random_tokens(m, bos, depth, true, rng);
    feed(m, pool, &tokens, ubatch, cache, s)
}

/// Seconds for `n` prompt tokens after `depth` tokens (untimed) in the cache.
#[allow(clippy::too_many_arguments)]
fn run_prompt(
    m: &Model,
    pool: &Pool,
    bos: Option<u32>,
    depth: usize,
    n: usize,
    ubatch: usize,
    rng: &mut Rng,
    cache: &mut KvCache,
    s: &mut Scratch,
) -> Result<f64> {
    fill(m, pool, bos, depth, ubatch, rng, cache, s)?;
    let tokens = random_tokens(m, bos, n, depth == 0, rng);
    let t0 = Instant::now();
    feed(m, pool, &tokens, ubatch, cache, s)?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Seconds for `n` single-token steps after `depth` tokens (untimed) in the cache.
#[allow(clippy::too_many_arguments)]
fn run_gen(
    m: &Model,
    pool: &Pool,
    bos: Option<u32>,
    depth: usize,
    n: usize,
    ubatch: usize,
    rng: &mut Rng,
    cache: &mut KvCache,
    s: &mut Scratch,
) -> Result<f64> {
    fill(m, pool, bos, depth, ubatch, rng, cache, s)?;
    let mut b = Batch::default();
    let mut t = random_tokens(m, bos, 1, depth == 0, rng)[0];
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
    if a.ubatch == 0 {
        bail!("--ubatch-size must be at least 1");
    }
    let lm = registry::load(&store::Store::open_default(), &a.model)?;
    let m = &lm.model;
    let threads = crate::threads(a.threads);
    let pool = Pool::new(threads);
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let types = a.cache.types()?;
    let longest = a.n_depth.iter().max().unwrap_or(&0) + a.n_prompt.iter().chain(&a.n_gen).max().unwrap_or(&0) + 1;
    let mut cache = KvCache::with_types(&m.config, longest, types)?;
    let mut scratch = Scratch::default();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut results = Vec::new();
    let tests = a.n_prompt.iter().map(|&n| ("pp", n)).chain(a.n_gen.iter().map(|&n| ("tg", n)));
    for (test, n) in tests.filter(|&(_, n)| n > 0) {
        for &depth in &a.n_depth {
            let mut samples = Vec::new();
            for r in 0..=a.repetitions {
                let secs = if test == "pp" {
                    run_prompt(m, &pool, bos, depth, n, a.ubatch, &mut rng, &mut cache, &mut scratch)?
                } else {
                    run_gen(m, &pool, bos, depth, n, a.ubatch, &mut rng, &mut cache, &mut scratch)?
                };
                if r > 0 {
                    samples.push(n as f64 / secs); // run 0 warms up
                }
            }
            let (mean, sd) = stats(&samples);
            let name = if depth > 0 { format!("{test}{n} @ d{depth}") } else { format!("{test}{n}") };
            results.push(serde_json::json!({
                "model": lm.name, "file_size": m.file.file_size(), "n_params": m.n_params(),
                "test": name, "n_prompt": if test == "pp" { n } else { 0 }, "n_gen": if test == "tg" { n } else { 0 }, "n_depth": depth,
                "n_ubatch": a.ubatch, "type_k": types.k.as_str(), "type_v": types.v.as_str(),
                "threads": threads, "repetitions": a.repetitions, "avg_ts": mean, "stddev_ts": sd, "samples_ts": samples,
                "isa": kernels::dot::Isa::detect_cached().as_str(), "cpu_info": kernels::dot::cpu_model(),
            }));
        }
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

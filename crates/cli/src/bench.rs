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
    /// Run with this LoRA adapter (GGUF) applied, scale 1 (repeatable)
    #[arg(long, value_name = "FILE")]
    adapter: Vec<std::path::PathBuf>,
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

/// What every measured run uses: the model, the threads, the cache and the token source.
struct Runner<'a> {
    m: &'a Model,
    pool: Pool,
    bos: Option<u32>,
    ubatch: usize,
    rng: Rng,
    cache: KvCache,
    s: Scratch,
    adapters: Option<std::sync::Arc<model::Adapters>>,
}

impl Runner<'_> {
    /// Random tokens, BOS first when the model adds it and the cache is empty.
    fn tokens(&mut self, n: usize) -> Vec<u32> {
        let at_start = self.cache.is_empty();
        let (bos, n_vocab) = (self.bos, self.m.config.n_vocab);
        (0..n).map(|i| if i == 0 && at_start { bos.unwrap_or_else(|| self.rng.next(n_vocab)) } else { self.rng.next(n_vocab) }).collect()
    }

    /// Append `tokens` to the cache in batches of `ubatch`, logits for the last one.
    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        let mut b = Batch::default();
        for (ci, chunk) in tokens.chunks(self.ubatch).enumerate() {
            b.clear();
            for (i, &t) in chunk.iter().enumerate() {
                b.push(t, 0, ci * self.ubatch + i + 1 == tokens.len());
            }
            b.adapters.push(self.adapters.clone());
            self.m.forward(&self.pool, &b, &mut [&mut self.cache], &mut self.s)?;
        }
        Ok(())
    }

    /// Empty the cache, then put `depth` random tokens in it (untimed).
    fn fill(&mut self, depth: usize) -> Result<()> {
        self.cache.clear();
        let tokens = self.tokens(depth);
        self.feed(&tokens)
    }

    /// Seconds for `n` prompt tokens after `depth` tokens in the cache.
    fn prompt(&mut self, depth: usize, n: usize) -> Result<f64> {
        self.fill(depth)?;
        let tokens = self.tokens(n);
        let t0 = Instant::now();
        self.feed(&tokens)?;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Seconds for `n` single-token steps after `depth` tokens in the cache.
    fn generate(&mut self, depth: usize, n: usize) -> Result<f64> {
        self.fill(depth)?;
        let mut b = Batch::default();
        let mut t = self.tokens(1)[0];
        let t0 = Instant::now();
        for _ in 0..n {
            b.clear();
            b.push_generated(t, 0, true);
            b.adapters.push(self.adapters.clone());
            self.m.forward(&self.pool, &b, &mut [&mut self.cache], &mut self.s)?;
            t = self.rng.next(self.m.config.n_vocab);
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

pub fn main(a: BenchArgs) -> Result<()> {
    if a.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    if a.ubatch == 0 {
        bail!("--ubatch-size must be at least 1");
    }
    let mut found = registry::find(&store::Store::open_default(), &a.model)?;
    found.defaults.adapters.extend(a.adapter.iter().map(|p| (p.clone(), 1.0)));
    let lm = found.load()?;
    let m = &lm.model;
    let threads = crate::threads(a.threads);
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let types = a.cache.types()?;
    let longest = a.n_depth.iter().max().unwrap_or(&0) + a.n_prompt.iter().chain(&a.n_gen).max().unwrap_or(&0) + 1;
    let cache = KvCache::with_pass(&m.config, longest, types, a.ubatch)?;
    let mut run = Runner {
        m,
        pool: Pool::new(threads),
        bos,
        ubatch: a.ubatch,
        rng: Rng(0x9E3779B97F4A7C15),
        cache,
        s: Scratch::default(),
        adapters: lm.adapters.clone(),
    };
    let mut results = Vec::new();
    let tests = a.n_prompt.iter().map(|&n| ("pp", n)).chain(a.n_gen.iter().map(|&n| ("tg", n)));
    for (test, n) in tests.filter(|&(_, n)| n > 0) {
        for &depth in &a.n_depth {
            let mut samples = Vec::new();
            for r in 0..=a.repetitions {
                let secs = if test == "pp" { run.prompt(depth, n)? } else { run.generate(depth, n)? };
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
                "adapters": lm.defaults.adapters.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
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

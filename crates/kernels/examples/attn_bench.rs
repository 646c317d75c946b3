//! Attention speed over a deep f16 cache, as JSON lines: for each catalog model's head
//! shape, a prompt (`--prompt` 512 tokens after `--depth` 4096 already cached) and one
//! decoded token at the same depth, on every SIMD instruction set this CPU has; `ms` is the best
//! of `--reps` runs of one layer, `ns_per_row_key` that time per (query head, key) pair.
//!
//! `cargo run --release -p kernels --example attn_bench [-- --depth 4096 --prompt 512 --threads 2 --reps 5 --only prompt|decode]`

use kernels::attention::{attention, CacheType, KvView, Scratch, Shape};
use kernels::dot::Isa;
use kernels::pool::Pool;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default);
    let (depth, prompt, threads, reps) = (flag("--depth", 4096), flag("--prompt", 512), flag("--threads", 2), flag("--reps", 5));
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1).cloned());
    let cpu = kernels::dot::cpu_model();
    let pool = Pool::new(threads);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    // (model, n_head, n_head_kv, head_dim)
    for (model, n_head, n_kv, hd) in [("smollm2:135m", 9, 3, 64), ("qwen2.5-coder:0.5b", 14, 2, 64), ("gemma3:270m", 4, 1, 256)] {
        let shape = Shape { n_head, n_head_kv: n_kv, head_dim: hd, head_dim_v: hd, scale: 1.0 / (hd as f32).sqrt(), window: None };
        let len = depth + prompt;
        let kvd = n_kv * hd;
        let t = CacheType::F16;
        let (mut k, mut v) = (vec![0u8; len * t.row_bytes(kvd)], vec![0u8; len * t.row_bytes(kvd)]);
        let mut row = vec![0f32; kvd];
        for p in 0..len {
            row.iter_mut().for_each(|x| *x = next() * 3.0);
            t.store(&row, &mut k[p * t.row_bytes(kvd)..][..t.row_bytes(kvd)]);
            row.iter_mut().for_each(|x| *x = next());
            t.store(&row, &mut v[p * t.row_bytes(kvd)..][..t.row_bytes(kvd)]);
        }
        let q: Vec<f32> = (0..prompt * n_head * hd).map(|_| next()).collect();
        let view = KvView { k: &k, v: &v, k_type: t, v_type: t, rows: len };
        let kv = |_| view;
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
            let mut scratch = Scratch::default();
            for (work, n) in [("prompt", prompt), ("decode", 1)] {
                if only.as_ref().is_some_and(|o| o != work) {
                    continue;
                }
                let seq = vec![0; n];
                let pos: Vec<usize> = (depth..depth + n).collect();
                let mut out = vec![0f32; n * n_head * hd];
                let mut best = f64::MAX;
                for _ in 0..reps {
                    let t0 = Instant::now();
                    attention(&pool, isa, &shape, &q[..n * n_head * hd], &seq, &pos, &kv, &mut out, &mut scratch);
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                let pairs: usize = pos.iter().map(|p| (p + 1) * n_head).sum();
                println!(
                    "{{\"model\":\"{model}\",\"work\":\"{work}\",\"tokens\":{n},\"depth\":{depth},\"isa\":\"{}\",\"threads\":{threads},\"ms\":{:.3},\"ns_per_row_key\":{:.3},\"cpu\":\"{cpu}\"}}",
                    isa.as_str(),
                    best * 1e3,
                    best * 1e9 * threads as f64 / pairs as f64
                );
            }
        }
    }
}

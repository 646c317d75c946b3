//! Memory read bandwidth, the bound on generation speed (each generated token reads every
//! weight once): a buffer far larger than the caches summed by 1..=N threads, best of 5, as
//! JSON lines `{"threads", "gb_per_s", "cpu_info"}`.
//!
//! `cargo run --release -p kernels --example membw [-- --mib 1024 --threads 2]`

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default);
    let (mib, max_threads) = (flag("--mib", 1024), flag("--threads", std::thread::available_parallelism().map_or(1, |n| n.get())));
    let cpu = kernels::dot::cpu_model();
    let buf: Vec<u64> = (0..mib * 1024 * 1024 / 8).map(|i| i as u64).collect();
    for threads in 1..=max_threads {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            let parts = buf.chunks(buf.len().div_ceil(threads));
            let sum: u64 = std::thread::scope(|s| {
                let hs: Vec<_> = parts.map(|p| s.spawn(move || sum_words(p))).collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).fold(0, u64::wrapping_add)
            });
            std::hint::black_box(sum);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{{\"threads\": {threads}, \"mib\": {mib}, \"gb_per_s\": {:.1}, \"cpu_info\": {cpu:?}}}", (buf.len() * 8) as f64 / best / 1e9);
    }
}

/// Eight independent sums, so the loop is bound by loads, not by one addition chain.
fn sum_words(p: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in p.chunks_exact(8) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

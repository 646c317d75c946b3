//! Dot-product speed of every weight type on every instruction set this CPU has, as JSON
//! lines: `{"type", "isa", "rows": 1 | 4, "ns_per_row", "gb_per_s"}` for a row of `--cols`
//! (4096) weights against one quantized activation row (`rows` 1), or against four at once
//! with the four-row kernel where the type has one (`kernel` "x4", ns per activation row),
//! or as prompt tiles of several weight rows against four activation rows (`kernel`
//! "tile", ns per weight row and activation row, the rows unpacked and the activation scales
//! converted beforehand, as the matmul does once for all its tokens); the best of 5 runs of `--reps` rows.
//!
//! `cargo run --release -p kernels --example dot_bench [-- --cols 4096 --reps 20000]`

use gguf::GgmlType;
use kernels::dot::{dot4_fn, dot_fn, tile_fn, ActType, Isa};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default);
    let (cols, reps) = (flag("--cols", 4096), flag("--reps", 20000));
    let cpu = kernels::dot::cpu_model();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    use GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
        let Some(bytes) = ty.row_bytes(cols) else { continue };
        // Random blocks, with each block's f16 scales (its first bytes, or Q2_K/Q3_K/Q6_K's
        // trailing d) made small and finite.
        let mut w: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
        let scale_at: &[usize] = match ty {
            Q4_0 | Q5_0 | Q8_0 => &[0],
            Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
            Q2_K => &[80, 82],
            Q3_K => &[108],
            Q6_K => &[208],
            _ => &[],
        };
        for b in 0..bytes / ty.block_bytes() {
            for &o in scale_at {
                w[b * ty.block_bytes() + o..][..2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
            }
        }
        let at = ActType::of(ty);
        let x: Vec<f32> = (0..cols).map(|_| next() as f32 / u32::MAX as f32 - 0.5).collect();
        let mut a = vec![0u32; at.row_bytes(cols).div_ceil(4)];
        // SAFETY: u32 storage viewed as bytes, for the activation row's alignment.
        let ab = unsafe { std::slice::from_raw_parts_mut(a.as_mut_ptr() as *mut u8, a.len() * 4) };
        let ab = &mut ab[..at.row_bytes(cols)];
        at.quantize(&x, ab);
        for isa in Isa::available() {
            let f = dot_fn(ty, isa);
            let one = best_of(reps, || f(std::hint::black_box(&w), std::hint::black_box(ab)));
            let four = dot4_fn(ty, isa).map(|f4| best_of(reps, || f4(std::hint::black_box(&w), [ab, ab, ab, ab]).iter().sum()) / 4.0);
            let tile = tile_fn(ty, isa).map(|k| {
                let wt = w.repeat(k.rows);
                let mut p = vec![kernels::dot::Unpacked::default(); wt.len() / k.block_bytes * k.slots];
                (k.unpack)(&wt, &mut p);
                let mut sc = Vec::new();
                kernels::dot::ActScales::extend(k.act, [ab, ab, ab, ab], &mut sc);
                let s = best_of(reps.div_ceil(k.rows), || (k.f)(std::hint::black_box(&p), [ab, ab, ab, ab], &sc).iter().flatten().sum());
                s / (4 * k.rows) as f64
            });
            for (kernel, rows, secs) in [("one", 1, Some(one)), ("x4", 4, four), ("tile", 4, tile)] {
                let Some(secs) = secs else { continue };
                println!(
                    "{{\"type\": \"{ty}\", \"isa\": \"{}\", \"kernel\": \"{kernel}\", \"rows\": {rows}, \"cols\": {cols}, \"ns_per_row\": {:.1}, \"gb_per_s\": {:.2}, \"cpu_info\": {:?}}}",
                    isa.as_str(),
                    secs * 1e9,
                    bytes as f64 / secs / 1e9,
                    cpu
                );
            }
        }
    }
}

/// Seconds per call of `f`, the best of 5 runs of `reps` calls.
fn best_of(reps: usize, mut f: impl FnMut() -> f32) -> f64 {
    let mut best = f64::INFINITY;
    let mut sink = 0f32;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            sink += f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    std::hint::black_box(sink);
    best
}

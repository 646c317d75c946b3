//! GFLOPS of `kernels::sgemm` on one thread at the shapes of LoRA training (256 tokens;
//! a block of 16 weight rows against every token, as `model::train` calls it). JSON lines.
//! `cargo run --release -p kernels --example sgemm_bench`
use kernels::dot::Isa;
use kernels::sgemm::{nn_acc, nt, Strided, StridedMut};
use std::time::Instant;

fn main() {
    let isa = Isa::detect();
    let toks = 256;
    for (rows, cols) in [(576, 576), (1536, 576), (576, 1536), (896, 896), (4864, 896)] {
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let x: Vec<f32> = (0..toks * cols).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let dy: Vec<f32> = (0..toks * rows).map(|i| ((i * 15_485_863) % 1000) as f32 / 1000.0 - 0.5).collect();
        let flops = 2.0 * (rows * cols * toks) as f64;
        let rb = std::env::var("RB").map_or(16, |v| v.parse().unwrap());
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let mut out = vec![0f32; toks * rows];
        let fwd = best(&mut || {
            for r0 in (0..rows).step_by(rb) {
                let (o, ldo) = (&mut out[r0..], rows);
                nt(isa, cols, Strided::new(&w[r0 * cols..], cols), rb.min(rows - r0), Strided::new(&x, cols), toks, StridedMut::new(o, ldo));
            }
        });
        let mut dx = vec![0f32; toks * cols];
        let bwd = best(&mut || {
            for r0 in (0..rows).step_by(rb) {
                nn_acc(isa, cols, Strided::new(&w[r0 * cols..], cols), rb.min(rows - r0), Strided::new(&dy[r0..], rows), toks, StridedMut::new(&mut dx, cols));
            }
        });
        println!(
            "{{\"isa\":\"{}\",\"rows\":{rows},\"cols\":{cols},\"tokens\":{toks},\"nt_gflops\":{:.1},\"nn_acc_gflops\":{:.1}}}",
            isa.as_str(),
            flops / fwd / 1e9,
            flops / bwd / 1e9
        );
    }
}

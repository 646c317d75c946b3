//! Prompt-token products through the two paths of `kernels::matmul::matmul_split`, one
//! thread: the integer tiles (activations quantized to 8 bits) against the dense path (16
//! rows dequantized to f32 at a time, then `sgemm::nt`), at the shapes of the catalog
//! models. JSON lines, GFLOPS-equivalent (2·rows·cols·tokens per call).
//! `cargo run --release -p kernels --example dense_bench [TOKENS] [TYPE,...]`
use gguf::GgmlType;
use kernels::dot::Isa;
use kernels::matmul::{matmul_split, ActBuf, QMatrix};
use kernels::pool::Pool;
use std::time::Instant;

fn main() {
    let isa = Isa::detect();
    let pool = Pool::new(1);
    let toks: usize = std::env::args().nth(1).map_or(128, |v| v.parse().expect("tokens"));
    let prompt = vec![true; toks];
    let only: Option<Vec<GgmlType>> = std::env::args().nth(2).map(|v| v.split(',').map(|t| GgmlType::parse(t).expect("a type name")).collect());
    let all = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];
    for ty in only.unwrap_or(all.to_vec()) {
        for (rows, cols) in [(4864usize, 896usize), (896, 4864), (2048, 768)] {
            if !cols.is_multiple_of(ty.block_len()) {
                continue;
            }
            let wf: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
            let mut q = vec![0u8; ty.row_bytes(cols).expect("whole blocks") * rows];
            kernels::weights::quantize_rows(ty, &wf, cols, None, &mut q).expect("quantizable");
            let x: Vec<f32> = (0..toks * cols).map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect();
            let mut out = vec![0f32; toks * rows];
            let mut act = ActBuf::default();
            let mut time = |dense: bool| {
                let w = QMatrix::new(ty, rows, cols, &q, isa).expect("shape").with_dense_prompts(dense);
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        matmul_split(&pool, &mut [(&w, &mut out[..])], &x, toks, &prompt, &mut act);
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let (tq, td) = (time(false), time(true));
            let fl = 2.0 * (rows * cols * toks) as f64;
            println!(
                "{{\"isa\":\"{}\",\"type\":\"{ty}\",\"rows\":{rows},\"cols\":{cols},\"tokens\":{toks},\"tiles_gflops\":{:.1},\"dense_gflops\":{:.1},\"dense_speedup\":{:.2}}}",
                isa.as_str(),
                fl / tq / 1e9,
                fl / td / 1e9,
                tq / td
            );
        }
    }
}

//! CPU kernels of bantam: ggml's quantized block formats, their dequantization, the
//! activation quantizers, dot products (scalar and AVX2, chosen at run time), the batched
//! quantized matmul, the element-wise ops of the forward pass, and the worker pool.
//!
//! ```
//! use kernels::{dot::Isa, matmul::{matmul, ActBuf, QMatrix}, pool::Pool, quantize};
//! let w: Vec<f32> = (0..2 * 32).map(|i| i as f32 / 64.0).collect();
//! let q = quantize::quantize_weights_q8_0(&w);
//! let m = QMatrix::new(gguf::GgmlType::Q8_0, 2, 32, kernels::blocks::block_bytes(&q), Isa::detect()).unwrap();
//! let mut out = vec![0.0; 2];
//! matmul(&Pool::new(1), &m, &[1.0; 32], 1, &mut ActBuf::default(), &mut out);
//! assert!((out[0] - w[..32].iter().sum::<f32>()).abs() < 0.05);
//! ```

pub mod attention;
pub mod blocks;
pub mod dequant;
pub mod dot;
pub mod gemm;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quantize;
pub mod sgemm;
pub mod weights;

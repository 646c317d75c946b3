//! Shared by the round-trip tests: scratch directories and comparisons of GGUF files.
#![allow(dead_code)]

use gguf::{Gguf, Value};
use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("bantam-convert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every tensor's values, dequantized.
pub fn values(f: &Gguf, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("{}: no tensor {name}", f.path().display()));
    let mut out = vec![0f32; t.n_elements() as usize];
    kernels::dequant::dequantize_row(t.ggml_type, f.tensor_data(t), &mut out);
    out
}

/// The converted file holds the same tensors as the original, value for value (bit for
/// bit: the round trip goes through f32 and applies exact transforms).
pub fn same_tensors(orig: &Gguf, back: &Gguf) {
    let mut a: Vec<&str> = orig.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut b: Vec<&str> = back.tensors().iter().map(|t| t.name.as_str()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "tensor names differ");
    for t in orig.tensors() {
        let u = back.tensor(&t.name).unwrap();
        assert_eq!(t.dims, u.dims, "{}: dims", t.name);
        let (x, y) = (values(orig, &t.name), values(back, &t.name));
        // Rope factors are computed from config.json again, in f32 as llama.cpp's converter
        // does; a file made another way (the synthetic llama's generator works in f64) may
        // differ in the last bit.
        let ulp = if t.name == "rope_freqs.weight" { 1 } else { 0 };
        let bad = x.iter().zip(&y).position(|(p, q)| p.to_bits().abs_diff(q.to_bits()) > ulp);
        assert!(bad.is_none(), "{}: value {} is {} after the round trip, {} before", t.name, bad.unwrap(), y[bad.unwrap()], x[bad.unwrap()]);
    }
}

/// The tokenizer metadata that decides tokenization and chat formatting is the same.
pub fn same_tokenizer(orig: &Gguf, back: &Gguf) {
    for k in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.chat_template",
    ] {
        assert_eq!(orig.get(k), back.get(k), "{k} differs");
    }
    // The pre-tokenizer: the same name, or one of llama.cpp's aliases of the same regexes.
    let pre = |f: &Gguf| f.get("tokenizer.ggml.pre").and_then(Value::as_str).map(|p| if p == "refact" { "smollm".to_string() } else { p.to_string() });
    assert_eq!(pre(orig), pre(back), "tokenizer.ggml.pre differs");
}

/// The architecture keys of the original are in the converted file with the same values
/// (the converter may write more, as llama.cpp's does).
pub fn same_hparams(orig: &Gguf, back: &Gguf) {
    let arch = orig.metadata_str("general.architecture").unwrap().to_string();
    assert_eq!(back.metadata_str("general.architecture").unwrap(), arch);
    for (k, v) in orig.metadata() {
        if !k.starts_with(&format!("{arch}.")) || k.ends_with(".rope.dimension_count") && back.get(k).is_none() {
            continue;
        }
        let w = back.get(k).unwrap_or_else(|| panic!("{k} is missing after the round trip"));
        match (v.as_f64(), w.as_f64()) {
            (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{k}: {x} became {y}"),
            _ => assert_eq!(v, w, "{k}"),
        }
    }
}

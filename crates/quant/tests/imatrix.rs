//! `bantam imatrix` against llama-imatrix on the same model and text: smollm2:135m made F16
//! (byte for byte llama-quantize's F16, see llama_quantize.rs), the GPL-3 text
//! (Debian's), 4 chunks of 512. `tests/data/smollm2-imatrix-blk01.gguf` is llama-imatrix's
//! result for the first two blocks (scripts/quantize-reference.sh).
//!
//! The statistics are collected exactly (the first matrices' inputs, before any arithmetic
//! that differs between the two engines, agree to float rounding); deeper entries differ as
//! the forward passes do: llama.cpp rounds activations to f16 for F16 weights and accumulates
//! attention values in f16, bantam keeps f32.

use engine::{Defaults, LoadedModel};
use kernels::pool::Pool;
use quant::{FileType, Imatrix, Params};
use std::path::Path;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn smollm2_imatrix_matches_llama_imatrix() {
    let dir = std::env::temp_dir().join(format!("bantam-imatrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = store::model_file("smollm2:135m").expect("smollm2:135m must be pulled (scripts/test.sh does)");
    let f16 = dir.join("smollm2-f16.gguf");
    let mut p = Params::new(FileType::F16);
    p.allow_requantize = true;
    quant::quantize(&src, &f16, &p, |_| {}).unwrap();
    let lm = LoadedModel::load("smollm2-f16", f16, Defaults::default()).unwrap();
    let text = std::fs::read("/usr/share/common-licenses/GPL-3").expect("Debian's base-files has the GPL-3 text");
    let mut text = String::from_utf8(text).unwrap();
    if text.ends_with('\n') {
        text.pop();
    }
    let tokens = lm.tokenizer.encode(&text, true, false);
    let tokens = &tokens[..4 * 512];
    let bos = if lm.tokenizer.add_bos() { lm.tokenizer.bos() } else { None };
    let (stats, report) = engine::perplexity::imatrix(&lm.model, &Pool::new(2), tokens, 512, bos, false, |_, _| {}).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // llama-imatrix printed PPL = 18.2014 over these chunks
    assert!((report.ppl / 18.2014 - 1.0).abs() < 1e-3, "ppl {}", report.ppl);
    let want = Imatrix::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2-imatrix-blk01.gguf")).unwrap();
    assert_eq!(want.entries.len(), 14);
    let ours: std::collections::BTreeMap<String, (Vec<f32>, u64)> = stats.entries().map(|(n, s, c)| (n, (s.to_vec(), c))).collect();
    assert_eq!(ours.len(), 30 * 7, "one entry per matrix of every block");
    for (name, e) in &want.entries {
        let (sums, count) = &ours[name];
        assert_eq!(vec![*count], e.counts, "{name}: tokens");
        let rel: Vec<f64> = sums.iter().zip(&e.sums).map(|(&a, &b)| ((a as f64 - b as f64) / b as f64).abs()).collect();
        let (med, max) = (median(rel.clone()), rel.iter().cloned().fold(0.0, f64::max));
        eprintln!("{name}: relative difference median {med:.2e}, max {max:.2e}");
        let first = name.starts_with("blk.0.attn_") && !name.contains("output");
        let (med_bound, max_bound) = if first { (2e-6, 1e-5) } else { (5e-4, 1e-2) };
        assert!(med <= med_bound && max <= max_bound, "{name}: median {med:.2e} (bound {med_bound:.0e}), max {max:.2e} (bound {max_bound:.0e})");
    }
}

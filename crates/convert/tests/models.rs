//! The round trip on real files: each synthetic model (one per family: llama with llama 3
//! rope factors, qwen2, qwen3, gemma3, phi3, granite) and each catalog model, exported to a
//! Hugging Face directory and converted back, has the same tensors (bit for bit, through
//! f32), the same tokenizer and the same architecture keys, and computes the same logits.
//! The models come from scripts/fetch-models.sh; a missing one fails the test.

mod common;

use common::{same_hparams, same_tensors, same_tokenizer, Scratch};
use convert::safetensors::Dtype;
use convert::{Options, OutType};
use gguf::Gguf;
use kernels::pool::Pool;
use model::{Batch, KvCache, Model, Scratch as Work};
use std::path::{Path, PathBuf};

/// llama.cpp's converter names a BPE pre-tokenizer by the sha256 of the ids its test text
/// tokenizes to; bantam's tokenizer gives the same ids for the catalog's vocabularies.
#[test]
fn the_test_text_hashes_as_llama_cpp_lists_it() {
    for (name, pre, hash) in [
        ("smollm2:135m", "smollm", "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"),
        ("qwen2.5-coder:0.5b", "qwen2", "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea"),
    ] {
        let s = Scratch::new(&format!("hash-{pre}"));
        let hf = s.path().join("hf");
        convert::export_without_weights(&Gguf::open(catalog(name)).unwrap(), &hf).unwrap();
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
        let hp = convert::arch::Hparams::from_config(&config).unwrap();
        let v = convert::vocab::Vocab::load(&hf, &hp, None).unwrap();
        assert_eq!(v.chkhsh(pre).as_deref(), Some(hash), "{name}");
        assert_eq!(v.pre.as_deref(), Some(pre), "{name}");
    }
}

fn round_trip(path: &Path, tag: &str) {
    assert!(path.exists(), "{} is missing: run scripts/fetch-models.sh", path.display());
    let s = Scratch::new(tag);
    let orig = Gguf::open(path).unwrap();
    let hf = s.path().join("hf");
    convert::export(&orig, &hf, Dtype::F32).unwrap();
    let out = s.path().join("back.gguf");
    convert::convert(&hf, &out, &Options { outtype: OutType::F32, pre: None }, |_, _, _, _| {}).unwrap();
    let back = Gguf::open(&out).unwrap();
    same_tensors(&orig, &back);
    same_tokenizer(&orig, &back);
    same_hparams(&orig, &back);
    drop(back);

    // Same model, same numbers: the logits of a prompt agree.
    let (a, b) = (Model::open(path).unwrap(), Model::open(&out).unwrap());
    assert_eq!(a.config, b.config, "{tag}: the configurations differ");
    let text = "The quick brown fox jumps over the lazy dog.";
    let ids = tokenizer::Tokenizer::from_gguf(&a.file).unwrap().encode(text, true, false);
    let logits = |m: &Model| {
        let pool = Pool::new(2);
        let mut cache = KvCache::new(&m.config, ids.len() + 1);
        let mut batch = Batch::default();
        for (i, &t) in ids.iter().enumerate() {
            batch.push(t, 0, i + 1 == ids.len());
        }
        m.forward(&pool, &batch, &mut [&mut cache], &mut Work::default()).unwrap().to_vec()
    };
    assert_eq!(ids, tokenizer::Tokenizer::from_gguf(&b.file).unwrap().encode(text, true, false));
    let (la, lb) = (logits(&a), logits(&b));
    if orig.tensors().iter().any(|t| t.ggml_type.is_quantized()) {
        // A quantized original multiplies with 8-bit activations, the F32 file does not: the
        // logits then agree as a whole (correlation) and in their top token, not bit for bit.
        let n = la.len() as f64;
        let mean = |l: &[f32]| l.iter().map(|&v| v as f64).sum::<f64>() / n;
        let (ma, mb) = (mean(&la), mean(&lb));
        let cov: f64 = la.iter().zip(&lb).map(|(&x, &y)| (x as f64 - ma) * (y as f64 - mb)).sum();
        let var = |l: &[f32], m: f64| l.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>();
        let r = cov / (var(&la, ma) * var(&lb, mb)).sqrt();
        assert!(r > 0.995, "{tag}: logits correlate at only {r}");
    } else {
        assert_eq!(la, lb, "{tag}: the logits differ");
    }
    let argmax = |l: &[f32]| l.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|(i, _)| i);
    assert_eq!(argmax(&la), argmax(&lb), "{tag}: the next token differs");
}

fn synthetic(arch: &str) -> PathBuf {
    store::default_root().join("synthetic").join(format!("{arch}.gguf"))
}

fn catalog(name: &str) -> PathBuf {
    store::model_file(name).unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models.sh"))
}

#[test]
fn synthetic_llama_round_trips() {
    round_trip(&synthetic("llama"), "syn-llama");
}
#[test]
fn synthetic_qwen2_round_trips() {
    round_trip(&synthetic("qwen2"), "syn-qwen2");
}
#[test]
fn synthetic_qwen3_round_trips() {
    round_trip(&synthetic("qwen3"), "syn-qwen3");
}
#[test]
fn synthetic_gemma3_round_trips() {
    round_trip(&synthetic("gemma3"), "syn-gemma3");
}
#[test]
fn synthetic_phi3_round_trips() {
    round_trip(&synthetic("phi3"), "syn-phi3");
}
#[test]
fn synthetic_granite_round_trips() {
    round_trip(&synthetic("granite"), "syn-granite");
}
#[test]
fn smollm2_round_trips() {
    round_trip(&catalog("smollm2:135m"), "smollm2");
}
#[test]
fn gemma3_round_trips() {
    round_trip(&catalog("gemma3:270m"), "gemma3");
}
#[test]
fn qwen25_coder_round_trips() {
    round_trip(&catalog("qwen2.5-coder:0.5b"), "qwen25");
}

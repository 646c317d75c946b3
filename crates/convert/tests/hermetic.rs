//! The converter on models written here (no downloads): a tiny model exported to a Hugging
//! Face directory and converted back is the same model; bad directories get clear errors
//! and leave nothing under the output name.

mod common;

use common::{same_hparams, same_tensors, same_tokenizer, Scratch};
use convert::safetensors::Dtype;
use convert::{ConvertError, Options, OutType};
use gguf::{Gguf, GgufWriter, Value};
use std::path::Path;

/// The tiny test model with a pre-tokenizer Hugging Face can spell (`smollm`), as a file.
fn tiny(dir: &Path, arch: &'static str) -> Gguf {
    let spec = model::tiny::TinySpec { arch, ..Default::default() };
    let f = Gguf::from_vec("tiny", model::tiny::tiny_model(&spec)).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        let v = if k == "tokenizer.ggml.pre" { Value::Str("smollm".into()) } else { v.clone() };
        w.meta(k, v);
    }
    for t in f.tensors() {
        w.tensor(&t.name, t.ggml_type, &t.dims, f.tensor_data(t).to_vec());
    }
    let p = dir.join(format!("tiny-{arch}.gguf"));
    std::fs::write(&p, w.to_bytes()).unwrap();
    Gguf::open(&p).unwrap()
}

fn convert(dir: &Path, out: &Path, outtype: OutType) -> Result<convert::Summary, ConvertError> {
    convert::convert(dir, out, &Options { outtype, pre: None }, |_, _, _, _| {})
}

#[test]
fn a_tiny_model_survives_export_and_convert() {
    let s = Scratch::new("tiny");
    for arch in ["llama", "qwen2"] {
        let orig = tiny(s.path(), arch);
        let hf = s.path().join(format!("hf-{arch}"));
        convert::export(&orig, &hf, Dtype::F32).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            assert!(hf.join(f).is_file(), "{arch}: export wrote no {f}");
        }
        let out = s.path().join(format!("back-{arch}.gguf"));
        let sum = convert(&hf, &out, OutType::F32).unwrap();
        assert_eq!(sum.pre.as_deref(), Some("smollm"));
        let back = Gguf::open(&out).unwrap();
        same_tensors(&orig, &back);
        same_tokenizer(&orig, &back);
        same_hparams(&orig, &back);
        assert_eq!(back.get("general.file_type").and_then(Value::as_u64), Some(0));
        // The converted file runs, and tokenizes as the original does.
        let a = tokenizer::Tokenizer::from_gguf(&orig).unwrap();
        let b = tokenizer::Tokenizer::from_gguf(&back).unwrap();
        for text in ["the theater", "Hello, world! 123", "<|im_start|>user\nhi<|im_end|>"] {
            assert_eq!(a.encode(text, true, true), b.encode(text, true, true), "{arch}: {text:?}");
        }
        // The converted file loads wherever the original does (the tiny qwen2 has no biases,
        // so neither loads as a model).
        assert_eq!(model::Model::open(orig.path()).is_ok(), model::Model::open(&out).is_ok(), "{arch}");
    }
    assert!(model::Model::open(s.path().join("back-llama.gguf")).is_ok());
}

#[test]
fn each_outtype_writes_its_types() {
    let s = Scratch::new("outtype");
    let orig = tiny(s.path(), "llama");
    let hf = s.path().join("hf");
    convert::export(&orig, &hf, Dtype::BF16).unwrap();
    for (ot, want, ft) in [(OutType::F16, gguf::GgmlType::F16, 1), (OutType::BF16, gguf::GgmlType::BF16, 32), (OutType::Q8_0, gguf::GgmlType::Q8_0, 7)] {
        let out = s.path().join(format!("{ot:?}.gguf"));
        convert(&hf, &out, ot).unwrap();
        let f = Gguf::open(&out).unwrap();
        assert_eq!(f.get("general.file_type").and_then(Value::as_u64), Some(ft));
        for t in f.tensors() {
            let expect = if t.dims.len() == 1 { gguf::GgmlType::F32 } else { want };
            assert_eq!(t.ggml_type, expect, "{ot:?}: {}", t.name);
        }
        model::Model::open(&out).unwrap();
    }
    // BF16 export then BF16 convert keeps the bits of the exported matrices.
    let back = Gguf::open(s.path().join("BF16.gguf")).unwrap();
    let exported = convert::safetensors::Checkpoint::open_dir(&hf).unwrap();
    let t = exported.get("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(exported.bytes(t), back.tensor_data(back.tensor("blk.0.ffn_down.weight").unwrap()));
}

/// Run a conversion that must fail; the error must mention `needle` and nothing may be
/// left under the output name or beside it.
fn fails(dir: &Path, needle: &str) {
    let out = dir.join("out.gguf");
    let e = convert(dir, &out, OutType::F16).expect_err("the conversion should fail").to_string();
    assert!(e.contains(needle), "error {e:?} does not mention {needle:?}");
    assert!(!out.exists(), "a file was left under the output name");
    let stray: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out.gguf"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn bad_directories_get_clear_errors_and_leave_nothing() {
    let s = Scratch::new("bad");
    let orig = tiny(s.path(), "llama");
    let fresh = |name: &str| {
        let d = s.path().join(name);
        convert::export(&orig, &d, Dtype::F16).unwrap();
        d
    };
    let d = fresh("arch");
    edit_json(&d.join("config.json"), |c| c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]));
    fails(&d, "GPTNeoXForCausalLM");

    let d = fresh("no-tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    fails(&d, "tokenizer.json");

    let d = fresh("shape");
    edit_json(&d.join("config.json"), |c| c["intermediate_size"] = serde_json::json!(96));
    fails(&d, "does not match config.json");

    // A vocabulary the embedding does not cover (config.json pads it past the rows).
    let d = fresh("vocab");
    edit_json(&d.join("config.json"), |c| c["vocab_size"] = serde_json::json!(320));
    fails(&d, "implies [320, 64]");

    let d = fresh("layers");
    edit_json(&d.join("config.json"), |c| c["num_hidden_layers"] = serde_json::json!(3));
    fails(&d, "missing from the checkpoint");

    let d = fresh("longrope");
    edit_json(&d.join("config.json"), |c| c["rope_scaling"] = serde_json::json!({"type": "longrope", "long_factor": [1.0, 2.0], "short_factor": [1.0, 1.0]}));
    fails(&d, "LongRoPE");

    let d = fresh("no-config");
    std::fs::remove_file(d.join("config.json")).unwrap();
    fails(&d, "config.json");

    let d = fresh("no-weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    fails(&d, "model.safetensors");

    let d = fresh("truncated");
    let st = d.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    fails(&d, "outside the data");

    let d = fresh("garbage");
    std::fs::write(d.join("model.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    fails(&d, "runs past the end");

    let d = fresh("pre");
    edit_json(&d.join("tokenizer.json"), |t| t["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"}));
    fails(&d, "--pre");
    // Naming the pre-tokenizer lets it through.
    let out = d.join("named.gguf");
    convert::convert(&d, &out, &Options { outtype: OutType::F16, pre: Some("gpt-2".into()) }, |_, _, _, _| {}).unwrap();
    assert_eq!(Gguf::open(&out).unwrap().get("tokenizer.ggml.pre").and_then(Value::as_str), Some("gpt-2"));

    let d = fresh("unknown-tensor");
    let ck = convert::safetensors::Checkpoint::open_dir(&d).unwrap();
    let mut ts: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        ck.tensors.iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), ck.bytes(t).to_vec())).collect();
    drop(ck);
    ts.push(("model.layers.0.mlp.experts.0.weight".into(), Dtype::F32, vec![2], vec![0; 8]));
    convert::safetensors::write(&d.join("model.safetensors"), &ts, &Default::default()).unwrap();
    fails(&d, "experts");
}

#[test]
fn sharded_checkpoints_read_through_their_index() {
    let s = Scratch::new("shards");
    let orig = tiny(s.path(), "llama");
    let d = s.path().join("hf");
    convert::export(&orig, &d, Dtype::F32).unwrap();
    let ck = convert::safetensors::Checkpoint::open_dir(&d).unwrap();
    let ts: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = ck.tensors.iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), ck.bytes(t).to_vec())).collect();
    drop(ck);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let (a, b) = ts.split_at(ts.len() / 2);
    let mut map = serde_json::Map::new();
    for (part, list) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        convert::safetensors::write(&d.join(part), list, &Default::default()).unwrap();
        for t in list {
            map.insert(t.0.clone(), serde_json::json!(part));
        }
    }
    std::fs::write(d.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    let out = s.path().join("back.gguf");
    convert(&d, &out, OutType::F32).unwrap();
    same_tensors(&orig, &Gguf::open(&out).unwrap());

    // A shard named outside the directory is refused.
    std::fs::write(d.join("model.safetensors.index.json"), serde_json::json!({"weight_map": {"x": "../model-00001-of-00002.safetensors"}}).to_string())
        .unwrap();
    fails(&d, "not a file name");
}

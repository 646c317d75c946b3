//! `bantam quantize` writes the tensor bytes llama-quantize writes (llama.cpp 0c1e570, the
//! tree in the llama-cpp-python 0.3.36 sdist) from the same input, for every file type,
//! with and without an importance matrix, and with the per-tensor options.
//!
//! `tests/data/llama-quantize.json` holds llama-quantize's result for each run: how many
//! tensors of each type, and one SHA-256 over every tensor in name order (name, NUL, type
//! name, NUL, data), so one digest pins every byte of every tensor. `scripts/quantize-reference.sh` regenerates it
//! (it builds llama-quantize, which CI never does) from the sources this test writes:
//! - `tiny`: the tiny model shaped so that every rule of the mixes is exercised (256 wide for
//!   the k-quants, eight layers, four query heads per KV head), converted to F32, with a
//!   synthetic importance matrix covering every matrix;
//! - `smollm2`: smollm2:135m (Q4_1) converted to F16, which must itself match llama-quantize's
//!   F16, with llama-imatrix's matrix for the first two blocks (`smollm2-imatrix-blk01.gguf`).

use gguf::{GgmlType, Gguf};
use quant::imatrix::Entry;
use quant::{FileType, Imatrix, Params};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const REFERENCE: &str = include_str!("data/llama-quantize.json");

fn tiny_spec() -> model::tiny::TinySpec {
    model::tiny::TinySpec { n_embd: 256, n_layer: 8, n_head: 8, n_head_kv: 2, n_ff: 512, ..Default::default() }
}

/// Deterministic importance weights for every matrix of the tiny model.
fn tiny_imatrix(f: &Gguf) -> Imatrix {
    let mut im = Imatrix { datasets: vec!["synthetic".into()], chunk_count: 1, chunk_size: 512, ..Default::default() };
    for t in f.tensors().iter().filter(|t| t.name.starts_with("blk.") && t.dims.len() == 2) {
        let n = t.row_len();
        let sums = (0..n).map(|i| 1.0 + ((i * 37 + t.name.len() * 11) % 101) as f32 * 0.5).collect();
        im.entries.insert(t.name.clone(), Entry { sums, counts: vec![512] });
    }
    im
}

/// Write the sources: returns (tiny F32, tiny imatrix, smollm2 F16 or None when `real` is false).
fn sources(dir: &Path, real: bool) -> (PathBuf, PathBuf, Option<PathBuf>) {
    std::fs::create_dir_all(dir).unwrap();
    let tiny_q8 = dir.join("tiny-q8_0.gguf");
    std::fs::write(&tiny_q8, model::tiny::tiny_model(&tiny_spec())).unwrap();
    let tiny = dir.join("tiny-f32.gguf");
    let mut p = Params::new(FileType::F32);
    p.allow_requantize = true;
    quant::quantize(&tiny_q8, &tiny, &p, |_| {}).unwrap();
    let im = dir.join("tiny-imatrix.gguf");
    std::fs::write(&im, tiny_imatrix(&Gguf::open(&tiny).unwrap()).to_gguf()).unwrap();
    let smol = real.then(|| {
        let src = store::model_file("smollm2:135m").expect("smollm2:135m must be pulled (scripts/test.sh does)");
        let out = dir.join("smollm2-f16.gguf");
        let mut p = Params::new(FileType::F16);
        p.allow_requantize = true;
        quant::quantize(&src, &out, &p, |_| {}).unwrap();
        out
    });
    (tiny, im, smol)
}

/// Type counts and the digest of every tensor, as scripts/gguf-digests.py computes them.
fn digest(path: &Path) -> (BTreeMap<String, u64>, String) {
    let f = Gguf::open(path).unwrap();
    let mut tensors: Vec<_> = f.tensors().iter().collect();
    tensors.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut h = Sha256::new();
    let mut types = BTreeMap::new();
    for t in tensors {
        h.update(t.name.as_bytes());
        h.update([0]);
        h.update(t.ggml_type.name().as_bytes());
        h.update([0]);
        h.update(f.tensor_data(t));
        *types.entry(t.ggml_type.name().to_string()).or_insert(0) += 1;
    }
    (types, hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Params from llama-quantize's arguments as the reference file records them.
fn params(args: &[String], imatrix: Option<&Path>) -> Params {
    let (flags, ftype) = args.split_at(args.len() - 1);
    let mut p = Params::new(FileType::parse(&ftype[0]).unwrap());
    p.threads = 2;
    let mut it = flags.iter();
    while let Some(a) = it.next() {
        let mut val = || GgmlType::parse(it.next().unwrap()).unwrap();
        match a.as_str() {
            "--pure" => p.pure = true,
            "--leave-output-tensor" => p.leave_output_tensor = true,
            "--allow-requantize" => p.allow_requantize = true,
            "--output-tensor-type" => p.output_tensor_type = Some(val()),
            "--token-embedding-type" => p.token_embedding_type = Some(val()),
            "--tensor-type" => {
                let (pat, ty) = it.next().unwrap().split_once('=').unwrap();
                p.tensor_types.push((pat.to_string(), GgmlType::parse(ty).unwrap()));
            }
            other => panic!("reference uses an option this test does not know: {other}"),
        }
    }
    if let Some(path) = imatrix {
        p.imatrix = Some(Imatrix::load(path).unwrap());
    }
    p
}

fn check(model: &str) {
    let reference: Json = serde_json::from_str(REFERENCE).unwrap();
    let dir = std::env::temp_dir().join(format!("bantam-quant-{model}-{}", std::process::id()));
    let (tiny, tiny_im, smol) = sources(&dir, model == "smollm2");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (src, im) = match model {
        "tiny" => (tiny, tiny_im),
        _ => (smol.unwrap(), data.join("smollm2-imatrix-blk01.gguf")),
    };
    let runs: Vec<&Json> = reference["runs"].as_array().unwrap().iter().filter(|r| r["model"] == model).collect();
    assert!(runs.len() >= 10, "reference has {} runs for {model}", runs.len());
    let mut failures = Vec::new();
    for run in runs {
        let args: Vec<String> = run["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let label = format!("{model} {}{}", if run["imatrix"].as_bool().unwrap() { "--imatrix " } else { "" }, args.join(" "));
        let (types, sha) = if args == ["SOURCE"] {
            digest(&src)
        } else {
            let out = dir.join("out.gguf");
            let p = params(&args, run["imatrix"].as_bool().unwrap().then_some(im.as_path()));
            quant::quantize(&src, &out, &p, |_| {}).unwrap_or_else(|e| panic!("{label}: {e}"));
            digest(&out)
        };
        let want_types: BTreeMap<String, u64> = serde_json::from_value(run["types"].clone()).unwrap();
        if types != want_types {
            failures.push(format!("{label}: tensor types {types:?}, llama-quantize wrote {want_types:?}"));
        } else if sha != run["sha256"].as_str().unwrap() {
            failures.push(format!("{label}: tensor bytes differ from llama-quantize's (compare with scripts/gguf-diff.py)"));
        } else {
            eprintln!("{label}: identical ({types:?})");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn tiny_model_every_type_matches_llama_quantize() {
    check("tiny");
}

#[test]
fn smollm2_matches_llama_quantize() {
    check("smollm2");
}

/// Writes the sources for `scripts/quantize-reference.sh` into `$QUANT_REF_DIR`.
#[test]
#[ignore]
fn write_reference_sources() {
    let dir = PathBuf::from(std::env::var("QUANT_REF_DIR").expect("QUANT_REF_DIR"));
    sources(&dir, true);
}

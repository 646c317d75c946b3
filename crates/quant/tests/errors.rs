//! Bad input to `quant::quantize` is an error that names the problem, and nothing is left
//! under the output name (the file is written beside it and renamed only when complete).

use quant::imatrix::Entry;
use quant::{FileType, Imatrix, Params, QuantError};
use std::path::{Path, PathBuf};

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(tag: &str) -> (Dir, PathBuf) {
    let d = std::env::temp_dir().join(format!("bantam-quant-err-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let spec = model::tiny::TinySpec { n_embd: 256, n_ff: 512, ..Default::default() };
    let q8 = d.join("tiny-q8.gguf");
    std::fs::write(&q8, model::tiny::tiny_model(&spec)).unwrap();
    let f32 = d.join("tiny-f32.gguf");
    let mut p = Params::new(FileType::F32);
    p.allow_requantize = true;
    quant::quantize(&q8, &f32, &p, |_| {}).unwrap();
    (Dir(d), f32)
}

fn no_leftovers(dir: &Path) {
    let names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.') && n != "out.gguf"), "left behind: {names:?}");
}

#[test]
fn requantizing_needs_the_flag() {
    let (d, _) = setup("requant");
    let e = quant::quantize(&d.0.join("tiny-q8.gguf"), &d.0.join("out.gguf"), &Params::new(FileType::Q4_K_M), |_| {}).unwrap_err();
    assert!(matches!(e, QuantError::Requantize(..)), "{e}");
    assert!(e.to_string().contains("--allow-requantize"), "{e}");
    no_leftovers(&d.0);
}

#[test]
fn an_imatrix_for_another_model_is_refused() {
    let (d, src) = setup("imatrix");
    let mut p = Params::new(FileType::Q4_K_M);
    let mut im = Imatrix::default();
    im.entries.insert("blk.0.attn_q.weight".into(), Entry { sums: vec![1.0; 896], counts: vec![10] });
    p.imatrix = Some(im);
    let e = quant::quantize(&src, &d.0.join("out.gguf"), &p, |_| {}).unwrap_err();
    assert!(matches!(e, QuantError::ImatrixShape { .. }), "{e}");
    let mut im = Imatrix::default();
    im.entries.insert("model.layers.0.self_attn.q_proj.weight".into(), Entry { sums: vec![1.0; 256], counts: vec![10] });
    p.imatrix = Some(im);
    let e = quant::quantize(&src, &d.0.join("out.gguf"), &p, |_| {}).unwrap_err();
    assert!(matches!(e, QuantError::ImatrixForAnotherModel), "{e}");
    no_leftovers(&d.0);
}

#[test]
fn q2_k_s_without_an_imatrix_is_refused() {
    let (d, src) = setup("q2ks");
    let e = quant::quantize(&src, &d.0.join("out.gguf"), &Params::new(FileType::Q2_K_S), |_| {}).unwrap_err();
    assert!(matches!(e, QuantError::NeedsImatrix(_)), "{e}");
    no_leftovers(&d.0);
}

#[test]
fn corrupt_and_missing_inputs_and_bad_outputs_are_errors() {
    let (d, src) = setup("corrupt");
    let bytes = std::fs::read(&src).unwrap();
    let cut = d.0.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let p = Params::new(FileType::Q8_0);
    assert!(quant::quantize(&cut, &d.0.join("out.gguf"), &p, |_| {}).is_err());
    assert!(quant::quantize(&d.0.join("missing.gguf"), &d.0.join("out.gguf"), &p, |_| {}).is_err());
    let e = quant::quantize(&src, &d.0.join("no/such/dir/out.gguf"), &p, |_| {}).unwrap_err();
    assert!(matches!(e, QuantError::Io { .. }), "{e}");
    assert!(matches!(quant::quantize(&src, &src, &p, |_| {}).unwrap_err(), QuantError::SameFile));
    let mut p = Params::new(FileType::Q4_0);
    p.tensor_types.push(("attn_q(".into(), gguf::GgmlType::Q8_0));
    assert!(matches!(quant::quantize(&src, &d.0.join("out.gguf"), &p, |_| {}).unwrap_err(), QuantError::TensorTypePattern(..)));
    std::fs::remove_file(&cut).unwrap();
    no_leftovers(&d.0);
}

#[test]
fn an_imatrix_round_trips_through_its_file() {
    let mut im = Imatrix { datasets: vec!["code.txt".into()], chunk_count: 3, chunk_size: 512, ..Default::default() };
    im.entries.insert("blk.0.ffn_down.weight".into(), Entry { sums: vec![0.5, 2.0, 0.0, 8.0], counts: vec![4] });
    let d = std::env::temp_dir().join(format!("bantam-imatrix-rt-{}.gguf", std::process::id()));
    std::fs::write(&d, im.to_gguf()).unwrap();
    let back = Imatrix::load(&d).unwrap();
    std::fs::remove_file(&d).unwrap();
    assert_eq!(back, im);
    assert_eq!(back.entries["blk.0.ffn_down.weight"].weights(), vec![0.125, 0.5, 0.0, 2.0]);
}

//! Greedy continuations against llama.cpp's (../shared/reference/*/greedy.json), from the
//! reference prompt ids, so only the forward pass is under test here.
//!
//! Rule (after vLLM's for comparing two implementations): ids must match exactly up to the
//! first divergence; there, both sides must see a near-tie between the two tokens: the
//! reference's top-1/top-2 gap is under `TIE`, and our logit for the reference's token is
//! within `TIE` of our top-1. After a legitimate divergence the rest of the continuation is
//! not compared.
//!
//! `TIE` is measured, not chosen: the logits of our scalar and AVX2 kernels differ by up to
//! ~0.25 on gemma3 (its large activations amplify rounding), and ours differ from llama.cpp's
//! by up to ~1.5 there (0.2 on qwen2.5, 0.8 on smollm2) while perplexities agree within
//! 0.5%. A reference gap smaller than the distance our logits keep from llama.cpp's on the
//! same model is not evidence of a bug, so `TIE` is 0.6 (smollm2 under the aarch64 kernels
//! diverges where the reference's gap is 0.53).
//! docs/BENCHMARKS.md lists each divergence.

use kernels::pool::Pool;
use model::{Batch, KvCache, Model, Scratch};
use serde_json::Value;
use std::path::PathBuf;

/// Largest top-1/top-2 gap at which a divergence is accepted as a near-tie.
const TIE: f64 = 0.6;

fn model_path(name: &str) -> PathBuf {
    store::model_file(name).unwrap_or_else(|e| panic!("{e}: run `bantam pull` for the test models (scripts/test.sh does)"))
}

fn reference(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference").join(name).join("greedy.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn top2(l: &[f32]) -> ((usize, f32), (usize, f32)) {
    let mut a = (0, f32::NEG_INFINITY);
    let mut b = (0, f32::NEG_INFINITY);
    for (i, &v) in l.iter().enumerate() {
        if v > a.1 {
            b = a;
            a = (i, v);
        } else if v > b.1 {
            b = (i, v);
        }
    }
    (a, b)
}

fn check(name: &str) {
    let m = Model::open(model_path(name)).unwrap();
    let pool = Pool::new(2);
    let mut failures = Vec::new();
    let mut max_err = 0f64;
    for case in reference(name).as_array().unwrap() {
        let prompt: Vec<u32> = case["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let steps = case["steps"].as_array().unwrap();
        let mut cache = KvCache::new(&m.config, prompt.len() + want.len() + 1);
        let mut scratch = Scratch::default();
        let mut batch = Batch::default();
        for (i, &t) in prompt.iter().enumerate() {
            batch.push(t, 0, i + 1 == prompt.len());
        }
        let mut got = Vec::new();
        for (i, &w) in want.iter().enumerate() {
            let logits = m.forward(&pool, &batch, &mut [&mut cache], &mut scratch).unwrap();
            let ((id, lg), (id2, lg2)) = top2(logits);
            let st = &steps[i];
            let (ref_logit, ref_gap) = (st["logit"].as_f64().unwrap(), st["logit"].as_f64().unwrap() - st["top2_logit"].as_f64().unwrap());
            max_err = max_err.max((logits[w as usize] as f64 - ref_logit).abs());
            if id as u32 != w {
                let our_gap = (lg - logits[w as usize]) as f64;
                let ok = ref_gap < TIE && our_gap < TIE;
                let msg = format!(
                    "{name} {:?} step {i}: ours {id} ({lg:.4}, runner-up {id2} {lg2:.4}), reference {w} ({ref_logit:.4}, gap {ref_gap:.4}) — {}",
                    case["prompt"].as_str().unwrap(),
                    if ok { "near-tie, accepted" } else { "DIVERGENCE" }
                );
                eprintln!("{msg}");
                if !ok {
                    failures.push(msg);
                }
                break;
            }
            got.push(id as u32);
            batch.clear();
            batch.push_generated(id as u32, 0, true);
        }
        eprintln!("{name} {:?}: {} of {} tokens identical", case["prompt"].as_str().unwrap(), got.len(), want.len());
    }
    eprintln!("{name}: max |logit - reference| before divergence: {max_err:.4}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    check("smollm2-135m");
}

#[test]
fn gemma3_greedy_matches_llama_cpp() {
    check("gemma3-270m");
}

#[test]
fn qwen25_greedy_matches_llama_cpp() {
    check("qwen2.5-coder-0.5b");
}

//! Perplexity against llama-perplexity's (../shared/reference/*/perplexity.json), from the
//! reference token ids: within 1% (relative) at both context sizes.

use engine::perplexity::perplexity;
use kernels::pool::Pool;
use model::Model;
use serde_json::Value;
use std::path::PathBuf;

fn model_path(name: &str) -> PathBuf {
    store::model_file(name).unwrap_or_else(|e| panic!("{e}: run `bantam pull` for the test models (scripts/test.sh does)"))
}

fn check(name: &str, bos: Option<u32>) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference").join(name).join("perplexity.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let tokens: Vec<u32> = r["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let m = Model::open(model_path(name)).unwrap();
    let pool = Pool::new(2);
    for run in r["runs"].as_array().unwrap() {
        let n_ctx = run["n_ctx"].as_u64().unwrap() as usize;
        let want = run["ppl"].as_f64().unwrap();
        let got = perplexity(&m, &pool, &tokens, n_ctx, bos, Default::default()).unwrap();
        let rel = (got.ppl - want).abs() / want;
        eprintln!("{name} ctx {n_ctx}: PPL {:.4} +/- {:.4}, llama.cpp {want:.4} ({:+.3}%)", got.ppl, got.stderr, 100.0 * (got.ppl - want) / want);
        assert_eq!(got.n_scored as u64, run["n_scored_tokens"].as_u64().unwrap());
        assert!(rel < 0.01, "{name} ctx {n_ctx}: {} vs {want}", got.ppl);
    }
}

#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    check("smollm2-135m", None);
}

#[test]
fn gemma3_perplexity_matches_llama_cpp() {
    check("gemma3-270m", Some(2));
}

#[test]
fn qwen25_perplexity_matches_llama_cpp() {
    check("qwen2.5-coder-0.5b", None);
}

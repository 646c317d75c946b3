//! Long contexts on a real model (smollm2:135m, trained to 8K): perplexity at a 2048-token
//! context with a q8_0 K and V cache within 0.5% of the f16 cache's, and a needle placed at
//! the start, middle and end of a long filler text retrieved by greedy decoding with either
//! cache. The text is the GPL-3 licence (Debian's `/usr/share/common-licenses/GPL-3`).

use engine::perplexity::perplexity;
use engine::template::ChatMessage;
use engine::{Defaults, LoadedModel};
use kernels::pool::Pool;
use model::{Batch, CacheType, CacheTypes, KvCache, Scratch};

const TEXT: &str = "/usr/share/common-licenses/GPL-3";
const NEEDLE: &str = "The secret number is 48213.";

fn load() -> LoadedModel {
    let path = store::model_file("smollm2:135m").expect("smollm2:135m must be pulled (scripts/test.sh does)");
    LoadedModel::load("smollm2:135m", path, Defaults::default()).unwrap()
}

fn text() -> String {
    std::fs::read_to_string(TEXT).unwrap_or_else(|e| panic!("{TEXT}: {e} (Debian's base-files package has it)"))
}

fn types(t: CacheType) -> CacheTypes {
    CacheTypes { k: t, v: t }
}

#[test]
fn q8_0_cache_perplexity_is_within_half_a_percent_of_f16() {
    let lm = load();
    let tokens = lm.tokenizer.encode(&text(), true, false);
    assert!(tokens.len() >= 2 * 2048, "{} tokens", tokens.len());
    let tokens = &tokens[..2 * 2048];
    let pool = Pool::new(2);
    let f16 = perplexity(&lm.model, &pool, tokens, 2048, None, types(CacheType::F16)).unwrap().ppl;
    let q8 = perplexity(&lm.model, &pool, tokens, 2048, None, types(CacheType::Q8_0)).unwrap().ppl;
    let q4 = perplexity(&lm.model, &pool, tokens, 2048, None, types(CacheType::Q4_0)).unwrap().ppl;
    eprintln!("smollm2 ctx 2048: PPL f16 {f16:.4}, q8_0 {q8:.4} ({:+.3}%), q4_0 {q4:.4} ({:+.3}%)", 100.0 * (q8 / f16 - 1.0), 100.0 * (q4 / f16 - 1.0));
    assert!((q8 / f16 - 1.0).abs() < 0.005, "q8_0 {q8} vs f16 {f16}");
    // q4_0 costs more: on this text llama-perplexity measures +8.5% (20.63 against 19.02,
    // both with its Hadamard rotation); it must still be a working cache, not noise.
    assert!((q4 / f16 - 1.0).abs() < 0.1, "q4_0 {q4} vs f16 {f16}");
}

/// Paragraphs of the filler, repeated up to about `n_tokens`, with the needle after the
/// `frac` share of them and the question at the end.
fn haystack(lm: &LoadedModel, n_tokens: usize, frac: f64) -> Vec<u32> {
    let text = text();
    let paras: Vec<String> = text.split("\n\n").map(|p| p.trim().replace('\n', " ")).filter(|p| !p.is_empty()).collect();
    let mut body: Vec<&str> = Vec::new();
    let mut n = 0;
    for p in paras.iter().cycle() {
        if n >= n_tokens {
            break;
        }
        n += lm.tokenizer.encode(p, false, false).len() + 1;
        body.push(p);
    }
    body.insert((body.len() as f64 * frac) as usize, NEEDLE);
    let question = "What is the secret number mentioned in the text above? Answer with the number only.";
    let prompt = format!("{}\n\n{question}", body.join("\n\n"));
    lm.chat_prompt(&[ChatMessage::new("user", &prompt)], None).unwrap()
}

/// Greedy decoding of up to `n` tokens after `prompt` (read in batches of 512).
fn greedy(lm: &LoadedModel, prompt: &[u32], n: usize, cache: CacheTypes) -> String {
    let m = &lm.model;
    let pool = Pool::new(2);
    let mut kv = KvCache::with_types(&m.config, prompt.len() + n, cache).unwrap();
    let mut s = Scratch::default();
    let mut b = Batch::default();
    let mut out = Vec::new();
    let mut next = 0;
    for (ci, chunk) in prompt.chunks(512).enumerate() {
        b.clear();
        for (i, &t) in chunk.iter().enumerate() {
            b.push(t, 0, ci * 512 + i + 1 == prompt.len());
        }
        let logits = m.forward(&pool, &b, &mut [&mut kv], &mut s).unwrap();
        if !logits.is_empty() {
            next = argmax(logits);
        }
    }
    for _ in 0..n {
        if lm.tokenizer.is_eog(next) {
            break;
        }
        out.push(next);
        b.clear();
        b.push(next, 0, true);
        next = argmax(m.forward(&pool, &b, &mut [&mut kv], &mut s).unwrap());
    }
    lm.tokenizer.decode(&out, false)
}

fn argmax(l: &[f32]) -> u32 {
    l.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0 as u32
}

#[test]
fn a_needle_is_found_anywhere_in_a_long_prompt() {
    let lm = load();
    let mut misses = Vec::new();
    for (n_tokens, fracs, cache) in [(7000, &[0.1, 0.9][..], CacheType::F16), (7000, &[0.5][..], CacheType::Q8_0), (2000, &[0.5][..], CacheType::Q4_0)] {
        for &frac in fracs {
            let prompt = haystack(&lm, n_tokens, frac);
            let answer = greedy(&lm, &prompt, 24, types(cache));
            eprintln!("{} tokens, needle at {frac}, {cache} cache: {answer:?}", prompt.len());
            if !answer.contains("48213") {
                misses.push(format!("{} tokens, needle at {frac}, {cache}: {answer:?}", prompt.len()));
            }
        }
    }
    assert!(misses.is_empty(), "needle not retrieved: {misses:#?}");
}

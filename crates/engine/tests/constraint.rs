//! Constrained decoding on a real model: the mask lets through exactly the tokens that
//! can continue the grammar, and generation under it always matches.

use engine::{Grammar, LoadedModel};
use std::sync::OnceLock;

fn smollm2() -> &'static LoadedModel {
    static LM: OnceLock<LoadedModel> = OnceLock::new();
    LM.get_or_init(|| {
        let path = store::model_file("smollm2:135m").expect("smollm2:135m must be pulled (scripts/test.sh does)");
        LoadedModel::load("smollm2:135m", path, engine::Defaults::default()).unwrap()
    })
}

/// Token ids the grammar allows first, as text.
fn first_tokens(g: &Grammar) -> Vec<String> {
    let lm = smollm2();
    let mut c = lm.constrain(g).unwrap();
    let n = lm.model.config.n_vocab;
    let logits = vec![0.0f32; n];
    let mut out = Vec::new();
    c.apply(&logits, &mut out).unwrap();
    let mut allowed: Vec<String> = (0..n as u32).filter(|&i| out[i as usize].is_finite()).map(|i| lm.tokenizer.decode(&[i], true)).collect();
    allowed.sort();
    allowed
}

#[test]
fn choice_mask_allows_only_prefixes_of_the_choices() {
    let allowed = first_tokens(&Grammar::Choice(vec!["yes".into(), "no".into()]));
    assert!(!allowed.is_empty());
    for t in &allowed {
        assert!("yes".starts_with(t.as_str()) || "no".starts_with(t.as_str()), "{t:?} is allowed but starts neither choice: {allowed:?}");
    }
    assert!(allowed.contains(&"yes".to_string()) && allowed.contains(&"no".to_string()), "{allowed:?}");
}

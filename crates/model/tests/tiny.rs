//! Fast end-to-end checks of the forward pass on the tiny deterministic model.

use kernels::pool::Pool;
use model::tiny::{tiny_model, TinySpec};
use model::{Batch, KvCache, Model, ModelError, Scratch};

fn model() -> Model {
    Model::from_gguf(gguf::Gguf::from_vec("tiny.gguf", tiny_model(&TinySpec::default())).unwrap()).unwrap()
}

/// Logits of the last token of each prompt, run alone.
fn alone(m: &Model, pool: &Pool, prompt: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::new(&m.config, 64);
    let mut b = Batch::default();
    for (i, &t) in prompt.iter().enumerate() {
        b.push(t, 0, i + 1 == prompt.len());
    }
    m.forward(pool, &b, &mut [&mut cache], &mut Scratch::default()).unwrap().to_vec()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + x.abs()))
}

#[test]
fn batching_sequences_together_changes_nothing() {
    let m = model();
    let pool = Pool::new(2);
    let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[9, 8], &[100, 50, 25, 12, 6, 3, 1]];
    let want: Vec<Vec<f32>> = prompts.iter().map(|p| alone(&m, &pool, p)).collect();
    // Interleave the three prompts in one batch.
    let mut caches: Vec<KvCache> = (0..3).map(|_| KvCache::new(&m.config, 64)).collect();
    let mut b = Batch::default();
    let longest = prompts.iter().map(|p| p.len()).max().unwrap();
    for i in 0..longest {
        for (s, p) in prompts.iter().enumerate() {
            if i < p.len() {
                b.push(p[i], s, i + 1 == p.len());
            }
        }
    }
    let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
    let got = m.forward(&pool, &b, &mut refs, &mut Scratch::default()).unwrap().to_vec();
    // Logits come out in batch order: prompt 1 ends first (i=1), then 0 (i=4), then 2.
    let nv = m.config.n_vocab;
    let order = [1usize, 0, 2];
    for (k, &s) in order.iter().enumerate() {
        assert!(close(&got[k * nv..(k + 1) * nv], &want[s]), "sequence {s} differs when batched");
    }
}

#[test]
fn incremental_decode_equals_one_batch() {
    let m = model();
    let pool = Pool::new(1);
    let prompt = [5u32, 17, 33, 2, 200, 41];
    let want = alone(&m, &pool, &prompt);
    let mut cache = KvCache::new(&m.config, 64);
    let mut s = Scratch::default();
    let mut last = Vec::new();
    for &t in &prompt {
        let mut b = Batch::default();
        b.push(t, 0, true);
        last = m.forward(&pool, &b, &mut [&mut cache], &mut s).unwrap().to_vec();
    }
    assert!(close(&last, &want));
    assert_eq!(cache.len(), prompt.len());
}

#[test]
fn thread_count_does_not_change_results() {
    let m = model();
    let p = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let one = alone(&m, &Pool::new(1), &p);
    let three = alone(&m, &Pool::new(3), &p);
    assert!(close(&one, &three));
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let m = model();
    let pool = Pool::new(1);
    let mut cache = KvCache::new(&m.config, 4);
    let mut s = Scratch::default();
    let mut b = Batch::default();
    b.push(u32::MAX, 0, true);
    assert!(matches!(m.forward(&pool, &b, &mut [&mut cache], &mut s), Err(ModelError::BadBatch(_))));
    b.clear();
    b.push(1, 7, true);
    assert!(matches!(m.forward(&pool, &b, &mut [&mut cache], &mut s), Err(ModelError::BadBatch(_))));
    b.clear();
    for _ in 0..5 {
        b.push(1, 0, true);
    }
    assert!(matches!(m.forward(&pool, &b, &mut [&mut cache], &mut s), Err(ModelError::ContextFull { capacity: 4 })));
}

#[test]
fn truncated_model_files_fail_cleanly() {
    let bytes = tiny_model(&TinySpec::default());
    for cut in [0, 3, 8, 24, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        let r = gguf::Gguf::from_vec("cut.gguf", bytes[..cut].to_vec()).map_err(ModelError::from).and_then(Model::from_gguf);
        let e = r.err().unwrap_or_else(|| panic!("truncation at {cut} accepted"));
        assert!(e.to_string().contains("cut.gguf"), "{e}");
    }
}

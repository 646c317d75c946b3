//! The decode hot path — a forward step of one token and sampling its logits — allocates
//! nothing per token once its buffers have reached their working size. A counting global
//! allocator watches three windows of 64 steps after a warm-up, on the tiny deterministic
//! model with 2 threads. It counts every thread, so a one-time lazy initialisation in the
//! standard library (a worker parking for the first time, which on a loaded machine may
//! come late) can land in any window; the fewest of the three is what the steps themselves
//! allocate. An allocation per step would show up 64 times in every window.

use engine::sampler::{Sampler, SamplingParams};
use kernels::pool::Pool;
use model::tiny::{tiny_model, TinySpec};
use model::{Batch, KvCache, Model, Scratch};
mod counting;

use counting::{Counting, ALLOCS, COUNTING};
use std::sync::atomic::Ordering;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decode_steps_do_not_allocate() {
    let m = Model::from_gguf(gguf::Gguf::from_vec("tiny.gguf", tiny_model(&TinySpec::default())).unwrap()).unwrap();
    let pool = Pool::new(2);
    let mut cache = KvCache::new(&m.config, 256);
    let mut scratch = Scratch::default();
    let mut sampler = Sampler::new(SamplingParams { seed: 3, ..SamplingParams::default() }, m.config.n_vocab);
    let mut history: Vec<u32> = Vec::with_capacity(256);
    let mut batch = Batch::default();
    let mut tok = 1u32;
    let mut step = |count: bool, tok: &mut u32, history: &mut Vec<u32>| {
        batch.clear();
        batch.push(*tok, 0, true);
        COUNTING.store(count, Ordering::SeqCst);
        let logits = m.forward(&pool, &batch, &mut [&mut cache], &mut scratch).unwrap();
        *tok = sampler.sample(logits, history);
        history.push(*tok);
        COUNTING.store(false, Ordering::SeqCst);
    };
    for _ in 0..8 {
        step(false, &mut tok, &mut history);
    }
    let mut windows = Vec::new();
    for _ in 0..3 {
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..64 {
            step(true, &mut tok, &mut history);
        }
        windows.push(ALLOCS.load(Ordering::SeqCst) - before);
    }
    let n = windows.iter().copied().min().unwrap_or(0);
    assert!(n < 4, "the decode loop allocated {n} times in 64 steps (windows: {windows:?})");
}

//! The engine loop that the server and `bantam run` drive allocates per decoded token only
//! what goes out with the token (a test of its own, so that no other test's threads run
//! while it counts).

mod counting;

use counting::{Counting, ALLOCS, COUNTING};
use engine::sampler::SamplingParams;
use model::tiny::{tiny_model, TinySpec};
use std::sync::atomic::Ordering;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The same loop as the server and `bantam run` drive it: a stream on the engine thread.
/// Per decoded token the engine allocates the text of the token's event and the step's list
/// of cache references, and the channel a block per 32 events; nothing else. Two requests
/// that differ only in length are counted whole (the engine runs ahead of any reader), and
/// the difference, 128 tokens, is held to 2.5 allocations per token (about 1.8 measured),
/// which catches anything that allocates per token on top of those.
#[test]
fn engine_steps_allocate_only_the_events() {
    use engine::{EngineHandle, EngineOptions, Event, GenerateParams, LoadedModel, Request, SharedPool};
    let dir = std::env::temp_dir().join(format!("bantam-no-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_model(&TinySpec::default())).unwrap();
    let lm = std::sync::Arc::new(LoadedModel::load("tiny", path, Default::default()).unwrap());
    let h = EngineHandle::spawn(
        lm.clone(),
        EngineOptions { max_parallel: 1, max_queue: 1, n_ctx: 256, budget: Default::default(), cache: Default::default() },
        SharedPool::new(2),
    )
    .unwrap();
    // The stream must not end by itself.
    let no_eog: Vec<(u32, f32)> = (0..lm.model.config.n_vocab as u32).filter(|&t| lm.tokenizer.is_eog(t)).map(|t| (t, -1e4)).collect();
    let run = |n: usize| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let params = GenerateParams { sampling: SamplingParams { seed: 5, ..SamplingParams::default() }, num_predict: Some(n), stop: Vec::new() };
        let mut req = Request::new(vec![1, 2, 3], params, tx);
        req.logit_bias = no_eog.clone();
        COUNTING.store(true, Ordering::SeqCst);
        let before = ALLOCS.load(Ordering::SeqCst);
        h.submit(req).unwrap();
        let mut tokens = 0;
        loop {
            match rx.blocking_recv() {
                Some(Event::Token { .. }) => tokens += 1,
                Some(Event::Done { .. }) => break,
                other => panic!("{other:?}"),
            }
        }
        let n_allocs = ALLOCS.load(Ordering::SeqCst) - before;
        COUNTING.store(false, Ordering::SeqCst);
        assert_eq!(tokens, n);
        n_allocs
    };
    run(200);
    let (short, long) = (run(40), run(168));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{short} allocations for 40 tokens, {long} for 168");
    assert!(long.saturating_sub(short) <= 5 * 128 / 2, "the engine allocated {} times for 128 more decoded tokens", long - short);
    assert!(long > short, "the count saw no tokens");
}

//! The engine thread on a real model (smollm2:135m): a greedy request gives the same text
//! in a one-slot engine (what `bantam run` uses) as beside seven others, with its prompt
//! read in small chunks next to running streams, and again from the prefix cache. A dropped
//! receiver frees its slot; embeddings run in chunks beside streams. On gemma3:270m, slots
//! whose sliding-window layers keep rings answer as whole caches do.

use engine::generate::{FinishReason, GenerateParams};
use engine::sampler::SamplingParams;
use engine::scheduler::Budget;
use engine::template::ChatMessage;
use engine::{Defaults, EngineHandle, EngineOptions, Event, LoadedModel, Request, SharedPool, Usage};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain what a CPU does in one sentence.",
    "What colour is the sky on a clear day?",
    "Name a famous physicist.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
];

fn load() -> Arc<LoadedModel> {
    let path = store::model_file("smollm2:135m").expect("smollm2:135m must be pulled (scripts/test.sh does)");
    Arc::new(LoadedModel::load("smollm2:135m", path, Defaults::default()).unwrap())
}

fn prompt(lm: &LoadedModel, text: &str) -> Vec<u32> {
    lm.chat_prompt(&[ChatMessage::new("user", text)], None).unwrap()
}

fn params(n: usize) -> GenerateParams {
    GenerateParams { sampling: SamplingParams::greedy(), num_predict: Some(n), stop: Vec::new() }
}

fn engine(lm: &Arc<LoadedModel>, budget: Budget) -> EngineHandle {
    EngineHandle::spawn(lm.clone(), EngineOptions { max_parallel: 8, max_queue: 8, n_ctx: 1024, budget, cache: Default::default() }, SharedPool::new(2))
        .unwrap()
}

fn submit(h: &EngineHandle, prompt: Vec<u32>, n: usize) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    h.submit(Request::new(prompt, params(n), tx)).unwrap();
    rx
}

fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> (String, Usage) {
    let mut text = String::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { text: t, .. } => text += &t,
            Event::Done { text: t, usage } => return (text + &t, usage),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("the engine hung up without Done");
}

/// The answer of a one-slot engine, as `bantam run` gets it.
fn alone(lm: &Arc<LoadedModel>, prompt: &[u32], n: usize) -> String {
    alone_with(lm, prompt, n, None)
}

fn alone_with(lm: &Arc<LoadedModel>, prompt: &[u32], n: usize, constraint: Option<engine::Constraint>) -> String {
    let h = EngineHandle::spawn(
        lm.clone(),
        EngineOptions { max_parallel: 1, max_queue: 0, n_ctx: 1024, budget: Budget::default(), cache: Default::default() },
        SharedPool::new(2),
    )
    .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut req = Request::new(prompt.to_vec(), params(n), tx);
    req.constraint = constraint;
    h.submit(req).unwrap();
    collect(rx).0
}

#[test]
fn same_tokens_alone_beside_seven_others_and_from_the_prefix_cache() {
    let lm = load();
    let target = prompt(&lm, PROMPTS[3]);
    let reference = alone(&lm, &target, 32);
    assert!(!reference.is_empty());
    let h = engine(&lm, Budget::default());

    let (text, usage) = collect(submit(&h, target.clone(), 32));
    assert_eq!(text, reference, "eight slots vs one");
    assert_eq!(usage.prompt_tokens, target.len());
    // Either the limit or an end-of-generation token ended it, and the figures say which.
    assert!(usage.eval_count <= 32);
    assert_eq!(usage.finish, if usage.eval_count == 32 { FinishReason::Length } else { FinishReason::Stop });

    // All eight at once: the target's answer does not change.
    let rxs: Vec<_> = PROMPTS.iter().map(|p| submit(&h, prompt(&lm, p), 32)).collect();
    let answers: Vec<(String, Usage)> = rxs.into_iter().map(collect).collect();
    assert_eq!(answers[3].0, reference, "under load");
    for (i, (t, _)) in answers.iter().enumerate() {
        assert!(!t.is_empty(), "prompt {i} got no text");
    }
    // The target ran before: its prompt comes from a slot's cache.
    assert!(answers[3].1.cached_tokens >= target.len() - 1, "cached {} of {}", answers[3].1.cached_tokens, target.len());
    assert!(h.stats.prefix_hit_tokens.load(Ordering::Relaxed) > 0);
}

/// The ids a request generated, with its figures.
fn collect_ids(mut rx: mpsc::UnboundedReceiver<Event>) -> (Vec<u32>, Usage) {
    let mut ids = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { id, .. } => ids.push(id),
            Event::Done { usage, .. } => return (ids, usage),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
    panic!("the engine hung up without Done");
}

/// A second turn whose prompt holds the first turn's answer token for token answers as it
/// does in a fresh engine, although the first turn's generated tokens sit in the cache: where
/// prompt tokens and generated ones are computed differently, the cache serves the second
/// prompt only up to the first prompt's end; otherwise the answer is reused too.
#[test]
fn a_second_turn_answers_the_same_whether_the_first_is_cached_or_not() {
    let lm = load();
    let first = prompt(&lm, PROMPTS[0]);
    let h = engine(&lm, Budget::default());
    let (answer, _) = collect_ids(submit(&h, first.clone(), 24));
    assert!(!answer.is_empty());
    let mut second = first.clone();
    second.extend_from_slice(&answer);
    second.extend(prompt(&lm, PROMPTS[2]).into_iter().skip(1));
    let (warm, usage) = collect_ids(submit(&h, second.clone(), 24));
    let cold = collect_ids(submit(&engine(&lm, Budget::default()), second.clone(), 24)).0;
    assert_eq!(warm, cold, "the second turn depends on what the cache held");
    let (cached, read) = (usage.cached_tokens, first.len());
    if lm.model.prompt_tokens_differ() {
        assert_eq!(cached, read, "cached {cached} of a first prompt of {read}");
    } else {
        assert!(cached > read, "cached {cached}: the first answer was not reused");
    }
}

#[test]
fn a_long_prompt_read_in_chunks_beside_running_streams_gives_the_same_answer() {
    let lm = load();
    let long_text = format!("{} Summarise the text above in one sentence.", "The quick brown fox jumps over the lazy dog. ".repeat(40));
    let long = prompt(&lm, &long_text);
    assert!(long.len() > 300, "{}", long.len());
    let reference = alone(&lm, &long, 16);
    // A budget of 16 tokens per step while others decode: the prompt takes many steps.
    let h = engine(&lm, Budget { busy: 16, idle: 64 });
    let others: Vec<_> = PROMPTS[..3].iter().map(|p| submit(&h, prompt(&lm, p), 48)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let (text, usage) = collect(submit(&h, long.clone(), 16));
    assert_eq!(text, reference);
    assert_eq!(usage.prompt_tokens, long.len());
    for rx in others {
        assert!(!collect(rx).0.is_empty());
    }
    assert!(h.stats.steps.load(Ordering::Relaxed) > 20);
}

#[test]
fn a_dropped_receiver_frees_its_slot_within_a_step() {
    let lm = load();
    let h = engine(&lm, Budget::default());
    let mut rx = submit(&h, prompt(&lm, PROMPTS[1]), 100_000);
    // Wait for the first token, then walk away.
    match rx.blocking_recv() {
        Some(Event::Token { .. }) => {}
        Some(other) => panic!("unexpected {other:?}"),
        None => panic!("hung up"),
    }
    assert_eq!(h.stats.running.load(Ordering::Relaxed), 1);
    drop(rx);
    let t = Instant::now();
    while h.stats.running.load(Ordering::Relaxed) != 0 || !h.is_idle() {
        assert!(t.elapsed() < Duration::from_secs(2), "the sequence kept running for nobody");
        std::thread::sleep(Duration::from_millis(5));
    }
    let generated = h.stats.generated_tokens.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.stats.generated_tokens.load(Ordering::Relaxed), generated, "still generating after cancel");
}

#[test]
fn a_full_queue_refuses_and_a_bad_request_fails_alone() {
    let lm = load();
    let h = EngineHandle::spawn(
        lm.clone(),
        EngineOptions { max_parallel: 1, max_queue: 1, n_ctx: 256, budget: Budget::default(), cache: Default::default() },
        SharedPool::new(2),
    )
    .unwrap();
    let a = submit(&h, prompt(&lm, PROMPTS[0]), 8);
    let b = submit(&h, prompt(&lm, PROMPTS[1]), 8);
    let (tx, _rx) = mpsc::unbounded_channel();
    let third = h.submit(Request::new(prompt(&lm, PROMPTS[2]), params(8), tx));
    assert!(matches!(third, Err(engine::SubmitError::Overloaded { .. })), "{third:?}");
    assert!(!collect(a).0.is_empty());
    assert!(!collect(b).0.is_empty());
    // Too long for the context: refused when submitted, the engine carries on.
    let (tx, _rx) = mpsc::unbounded_channel();
    let long = h.submit(Request::new(vec![1; 300], params(8), tx));
    assert!(matches!(long, Err(engine::SubmitError::Invalid(engine::EngineError::PromptTooLong { n_prompt: 300, n_ctx: 256 }))), "{long:?}");
    // With truncate, the prompt's end is kept and the answer comes.
    let (tx, rx) = mpsc::unbounded_channel();
    let mut req = Request::new([prompt(&lm, PROMPTS[0]), vec![1; 300]].concat(), params(8), tx);
    req.truncate = true;
    h.submit(req).unwrap();
    let (_, usage) = collect(rx);
    assert_eq!(usage.prompt_tokens, 192, "three quarters of the context are kept");
    assert!(!collect(submit(&h, prompt(&lm, PROMPTS[0]), 8)).0.is_empty());
}

#[test]
fn logprobs_are_normalised_and_the_greedy_token_is_the_top_one() {
    let lm = load();
    let h = engine(&lm, Budget::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut req = Request::new(prompt(&lm, PROMPTS[0]), params(6), tx);
    req.logprobs = Some(5);
    h.submit(req).unwrap();
    let mut seen = 0;
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { id, logprob: Some(lp), .. } => {
                seen += 1;
                assert_eq!(lp.token.id, id);
                assert_eq!(lp.top.len(), 5);
                assert_eq!(lp.top[0].id, id, "greedy picks the most likely token");
                assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
                let mass: f32 = lp.top.iter().map(|c| c.logprob.exp()).sum();
                assert!(lp.token.logprob <= 0.0 && mass <= 1.0 + 1e-4, "{mass}");
            }
            Event::Token { .. } => panic!("logprobs missing"),
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(seen, 6);
}

/// A constrained request in the batch: its output follows its grammar and is the same as
/// a one-slot engine's under the same grammar, and its neighbours' answers do not
/// change (masks are computed beside the forward pass, on the side).
#[test]
fn constrained_sequences_beside_plain_ones() {
    use engine::Grammar;
    let lm = load();
    let schema = serde_json::json!({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 30}, "confident": {"type": "boolean"}}, "required": ["answer", "confident"], "additionalProperties": false});
    let g = Grammar::JsonSchema(schema);
    let json_prompt = prompt(&lm, "What is the capital of France? Answer as JSON.");
    let solo = alone_with(&lm, &json_prompt, 64, Some(lm.constrain(&g).unwrap()));
    let v: serde_json::Value = serde_json::from_str(&solo).unwrap_or_else(|e| panic!("{e}: {solo:?}"));
    assert!(v["answer"].is_string() && v["confident"].is_boolean(), "{solo}");
    let plain: Vec<String> = PROMPTS[..3].iter().map(|p| alone(&lm, &prompt(&lm, p), 24)).collect();

    let h = engine(&lm, Budget::default());
    let mut rxs: Vec<_> = PROMPTS[..3].iter().map(|p| submit(&h, prompt(&lm, p), 24)).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let constraint = Some(lm.constrain(&g).unwrap());
    let mut req = Request::new(json_prompt, params(64), tx);
    req.constraint = constraint;
    h.submit(req).unwrap();
    rxs.push(rx);
    let outs: Vec<(String, Usage)> = rxs.into_iter().map(collect).collect();
    for (k, reference) in plain.iter().enumerate() {
        assert_eq!(&outs[k].0, reference, "plain request {k} changed beside a constrained one");
    }
    assert_eq!(outs[3].0, solo, "the constrained answer differs in the batch");
    assert_eq!(outs[3].1.finish, FinishReason::Stop);
}

/// A 256-input embedding request beside a running stream: the stream's tokens keep coming
/// (the embedding rides in the decode steps instead of stalling them), and the vectors equal
/// those computed with the engine otherwise idle.
///
/// The stream's median and mean inter-token times stay within 2x of what they were before
/// the embedding (the engine lets embedding add at most `EMBED_SHARE`, 0.5, of the stream's
/// step time on average, so about 1.5x is expected; a single step carrying embedding tokens
/// may take up to about 2x).
#[test]
fn embeddings_ride_beside_a_stream_without_stalling_it() {
    use engine::request::EmbedRequest;
    let lm = load();
    let h = EngineHandle::spawn(
        lm.clone(),
        EngineOptions { max_parallel: 2, max_queue: 2, n_ctx: 8192, budget: Budget::default(), cache: Default::default() },
        SharedPool::new(2),
    )
    .unwrap();
    let inputs: Vec<Vec<u32>> = (0..256).map(|i| lm.tokenizer.encode(&format!("City {i} is mild."), true, true)).collect();
    let embed = |inputs: Vec<Vec<u32>>| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        h.embed(EmbedRequest { inputs, reply: tx }).unwrap();
        rx
    };
    // Reference vectors, the engine otherwise idle.
    let alone = embed(inputs.clone()).blocking_recv().unwrap().unwrap();
    assert_eq!(alone.len(), 256);

    // A stream that does not end by itself: its end-of-generation tokens are ruled out.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut req = Request::new(prompt(&lm, PROMPTS[1]), params(100_000), tx);
    req.logit_bias = (0..lm.model.config.n_vocab as u32).filter(|&t| lm.tokenizer.is_eog(t)).map(|t| (t, -1e4)).collect();
    h.submit(req).unwrap();
    let mut next_gap = || {
        let t = Instant::now();
        match rx.blocking_recv() {
            Some(Event::Token { .. }) => t.elapsed(),
            other => panic!("the stream ended: {other:?}"),
        }
    };
    for _ in 0..8 {
        next_gap();
    }
    let mut before: Vec<Duration> = (0..64).map(|_| next_gap()).collect();
    let mut reply = embed(inputs);
    let mut during = Vec::new();
    let beside = loop {
        during.push(next_gap());
        if let Ok(r) = reply.try_recv() {
            break r.unwrap();
        }
        assert!(during.len() < 100_000, "the embedding never finished");
    };
    let median = |v: &mut [Duration]| {
        v.sort();
        v[v.len() / 2]
    };
    // The stream's steps slow as its context grows, so the pace it is held to is measured
    // on both sides of the embedding: the mean of the two medians.
    let mut after: Vec<Duration> = (0..64).map(|_| next_gap()).collect();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let pace = (median(&mut before) + median(&mut after)) / 2;
    let pace_mean = (mean(&before) + mean(&after)) / 2;
    let mean_d = mean(&during);
    let max_d = *during.iter().max().unwrap();
    let d = median(&mut during);
    eprintln!("inter-token time without embedding: median {pace:?}, mean {pace_mean:?}; beside a 256-input embedding: median {d:?}, mean {mean_d:?}, max {max_d:?} over {} tokens", during.len());
    assert!(during.len() >= 16, "the embedding took only {} tokens of the stream", during.len());
    assert!(d <= pace * 2, "median inter-token time {d:?} while embedding, {pace:?} without");
    assert!(mean_d <= pace_mean * 2, "mean inter-token time {mean_d:?} while embedding, {pace_mean:?} without");
    for (x, y) in alone.iter().zip(&beside) {
        let dot: f32 = x.iter().zip(y).map(|(a, b)| a * b).sum();
        assert!(dot > 0.9999, "an embedding changed beside the stream: cosine {dot}");
    }
    drop(rx);
}

/// gemma3:270m's sliding-window layers (512 positions): with prompt steps of 64 tokens the
/// slots keep rings of 576 rows for them, and answer as an engine with a row per position
/// (steps of 512 in a context of 1024). The prefix cache serves a conversation's
/// continuation from a ring, and recomputes a prompt that shares only an early prefix with a
/// long one the ring has moved past.
#[test]
fn sliding_window_rings_answer_as_whole_caches_and_bound_the_prefix_cache() {
    let path = store::model_file("gemma3:270m").expect("gemma3:270m must be pulled (scripts/test.sh does)");
    let lm = Arc::new(LoadedModel::load("gemma3:270m", path, Defaults::default()).unwrap());
    assert_eq!(lm.model.config.sliding_window, Some(512));
    let (steps, whole_steps) = (Budget { busy: 16, idle: 64 }, Budget::default());
    assert!(lm.kv_bytes(Default::default(), 1024, steps.most()) < lm.kv_bytes(Default::default(), 1024, whole_steps.most()) * 2 / 3);

    let filler = "The committee met on Tuesday to review the budget, the schedule and the plans for the new library. ".repeat(34);
    let long = prompt(&lm, &format!("{filler}\nWhat did the committee review? Answer in one sentence."));
    let early = prompt(&lm, "The committee met on Tuesday. Who met?");
    assert!(long.len() > 640 && long.len() < 900, "the prompt ({} tokens) must outrun a ring of 576", long.len());
    assert!(long.iter().zip(&early).take_while(|(a, b)| a == b).count() > 4, "the two prompts share a beginning");

    let (ring, whole) = (engine(&lm, steps), engine(&lm, whole_steps));
    let (answer, _) = collect_ids(submit(&ring, long.clone(), 12));
    assert!(!answer.is_empty());
    assert_eq!(answer, collect_ids(submit(&whole, long.clone(), 12)).0, "a ring answered differently from a whole cache");

    // A continuation of the conversation reuses the ring's cache.
    let mut next = long.clone();
    next.extend_from_slice(&answer);
    next.extend(prompt(&lm, "And when?").into_iter().skip(1));
    let (again, usage) = collect_ids(submit(&ring, next.clone(), 12));
    assert!(usage.cached_tokens >= long.len() - 1, "cached {} of {}", usage.cached_tokens, long.len());
    assert_eq!(again, collect_ids(submit(&whole, next, 12)).0);

    // A prompt sharing only the beginning cannot start from a ring that moved past it.
    let (short, usage) = collect_ids(submit(&ring, early.clone(), 12));
    assert_eq!(usage.cached_tokens, 0, "a ring served {} tokens whose window it overwrote", usage.cached_tokens);
    assert_eq!(short, collect_ids(submit(&engine(&lm, whole_steps), early, 12)).0);
}

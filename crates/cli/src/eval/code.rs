//! `bantam eval --kind code`: HumanEval / MBPP prompts, the stops that end a completion,
//! the sandboxed test runs, and pass@k.

use super::data::{CodeTests, Gold, Item};
use super::sandbox::{Assemble, Job, Limits, Sandbox, Verdict};
use engine::template::ChatMessage;
use engine::LoadedModel;

/// How a code item is put to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptStyle {
    /// EvalPlus's instruct prompt: the problem in a fenced block, the answer begun for the
    /// model ("Below is a Python script …```python"), its code extracted and sanitised. A
    /// model without a chat template gets the raw prompt, as EvalPlus gives it.
    Evalplus,
    /// The raw prompt, continued (HumanEval's original harness): the program is the prompt
    /// and the completion.
    Complete,
}

pub const INSTRUCTION: &str = "Please provide a self-contained Python script that solves the following problem in a markdown code block:";
pub const RESPONSE: &str = "Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:";

/// EvalPlus's end-of-code strings, and those of a direct completion of each dataset.
const EOS: &[&str] = &["<|endoftext|>", "<|endofmask|>", "</s>", "\nif __name__", "\ndef main(", "\nprint("];
const HUMANEVAL_EOS: &[&str] = &["\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert "];
const MBPP_EOS: &[&str] = &["\n\"\"\"", "\nassert"];

/// How one model is prompted for code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Chat with the answer begun (EvalPlus); code extracted.
    Instruct,
    /// Chat with the user's `--prompt`; code extracted.
    Chat,
    /// The raw prompt continued; the program is prompt + completion.
    Direct,
}

impl Mode {
    pub fn of(style: PromptStyle, has_template: bool, user_prompt: bool) -> Mode {
        match (style, has_template, user_prompt) {
            (PromptStyle::Complete, _, _) | (PromptStyle::Evalplus, false, false) => Mode::Direct,
            (_, _, true) => Mode::Chat,
            (PromptStyle::Evalplus, true, false) => Mode::Instruct,
        }
    }

    pub fn assemble(self) -> Assemble {
        if self == Mode::Direct {
            Assemble::Append
        } else {
            Assemble::Extract
        }
    }

    /// Where a completion of `tests`'s item ends.
    pub fn stops(self, tests: &CodeTests) -> Vec<String> {
        let extra: &[&str] = match self {
            Mode::Direct if tests.test.contains("def check(") => HUMANEVAL_EOS,
            Mode::Direct => MBPP_EOS,
            Mode::Instruct => &["\n```\n"],
            Mode::Chat => &[],
        };
        EOS.iter().chain(extra).map(|s| s.to_string()).collect()
    }
}

/// What a prompt style sends, for the summary.
pub fn describe(style: PromptStyle) -> String {
    match style {
        PromptStyle::Evalplus => format!("evalplus: user \"{INSTRUCTION}\\n```\\n{{input}}\\n```\\n\", assistant begun \"{RESPONSE}\\n```python\\n\""),
        PromptStyle::Complete => "complete: {input}".to_string(),
    }
}

/// The instruct conversation of one problem: the user's request and the assistant's
/// answer begun.
pub fn instruct_messages(system: Option<&str>, prompt: &str) -> Vec<ChatMessage> {
    let mut m = Vec::new();
    if let Some(s) = system {
        m.push(ChatMessage::new("system", s));
    }
    m.push(ChatMessage::new("user", format!("{INSTRUCTION}\n```\n{}\n```\n", prompt.trim())));
    m.push(ChatMessage::new("assistant", format!("{RESPONSE}\n```python\n")));
    m
}

/// The prompt token ids of one problem for a local model.
pub fn prompt(lm: &LoadedModel, mode: Mode, system: Option<&str>, chat: impl FnOnce() -> Vec<ChatMessage>, it: &Item) -> anyhow::Result<Vec<u32>> {
    Ok(match mode {
        Mode::Direct => lm.tokenizer.encode(&it.input, true, false),
        Mode::Instruct => lm.continue_prompt(&instruct_messages(system, &it.input))?.unwrap_or_else(|| lm.tokenizer.encode(&it.input, true, false)),
        Mode::Chat => lm.chat_prompt(&chat(), None)?,
    })
}

/// Run every (item, completion) pair's tests in the sandbox, `workers` at a time.
pub fn check_all(sandbox: &Sandbox, jobs: &[(&Item, &str)], mode: Mode, workers: usize) -> Vec<Verdict> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((item, completion)) = jobs.get(j) else { break };
                let verdict = match &item.gold {
                    Gold::Tests(t) => {
                        sandbox.run(&Job { assemble: mode.assemble(), prompt: &item.input, completion, test: &t.test, entry_point: &t.entry_point })
                    }
                    _ => Verdict { passed: false, reason: Some("not a code item".into()), solution: String::new() },
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push((j, verdict));
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort_by_key(|(j, _)| *j);
    out.into_iter().map(|(_, v)| v).collect()
}

/// The sandbox's limits from the command line: a timeout from 0.1 s to a day, at least
/// 64 MiB of memory (Python does not start in less).
pub fn limits(timeout_s: f64, memory_mib: u64) -> anyhow::Result<Limits> {
    if !(0.1..=86_400.0).contains(&timeout_s) {
        anyhow::bail!("--test-timeout {timeout_s}: expected seconds from 0.1 to 86400");
    }
    if !(64..=1 << 30).contains(&memory_mib) {
        anyhow::bail!("--test-memory {memory_mib}: expected MiB from 64 to 1073741824");
    }
    Ok(Limits { timeout: std::time::Duration::from_secs_f64(timeout_s), memory_mib, output_mib: 1 })
}

/// The unbiased estimator of pass@k (Chen et al. 2021) for one problem with `n` samples of
/// which `c` pass: 1 - C(n-c, k) / C(n, k), as a stable product.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    if k == 1 {
        return c as f64 / n as f64;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_binomial_form() {
        let binom = |n: u64, k: u64| (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
        for (n, c, k) in [(10, 3, 1), (10, 3, 5), (20, 0, 10), (20, 20, 10), (200, 17, 100), (5, 1, 5)] {
            let want = if n - c < k { 1.0 } else { 1.0 - binom((n - c) as u64, k as u64) / binom(n as u64, k as u64) };
            assert!((pass_at_k(n, c, k) - want).abs() < 1e-9, "{n} {c} {k}");
        }
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::of(PromptStyle::Evalplus, true, false), Mode::Instruct);
        assert_eq!(Mode::of(PromptStyle::Evalplus, false, false), Mode::Direct);
        assert_eq!(Mode::of(PromptStyle::Evalplus, true, true), Mode::Chat);
        assert_eq!(Mode::of(PromptStyle::Complete, true, true), Mode::Direct);
        let he = CodeTests { test: "def check(candidate):\n    assert candidate(1)\n".into(), entry_point: "f".into() };
        assert!(Mode::Direct.stops(&he).contains(&"\ndef ".to_string()));
        assert!(Mode::Instruct.stops(&he).contains(&"\n```\n".to_string()));
    }
}

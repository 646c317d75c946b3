//! The `bantam` binary end to end: on the tiny deterministic model (fast) and on the real
//! smollm2 model against llama.cpp's greedy reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bantam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bantam")).args(args).stdin(Stdio::null()).output().expect("run bantam")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "bantam failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn tiny() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bantam-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("tiny.gguf");
    if !p.exists() {
        std::fs::write(&p, model::tiny::tiny_model(&model::tiny::TinySpec::default())).unwrap();
    }
    p
}

fn real(name: &str) -> PathBuf {
    store::model_file(name).unwrap_or_else(|e| panic!("{e}: run `bantam pull` for the test models (scripts/test.sh does)"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let m = tiny();
    let ids: Vec<u32> = serde_json::from_str(&stdout(&bantam(&["tokenize", s(&m), "the cat"]))).unwrap();
    assert!(!ids.is_empty());
    let args: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let mut a = vec!["detokenize", s(&m)];
    a.extend(args.iter().map(|x| x.as_str()));
    assert_eq!(stdout(&bantam(&a)).trim_end_matches('\n'), "the cat");
    // --special turns <|im_start|> into one token.
    let special: Vec<u32> = serde_json::from_str(&stdout(&bantam(&["tokenize", s(&m), "<|im_start|>", "--special"]))).unwrap();
    assert_eq!(special.len(), 1);
    let plain: Vec<u32> = serde_json::from_str(&stdout(&bantam(&["tokenize", s(&m), "<|im_start|>"]))).unwrap();
    assert!(plain.len() > 1);
}

#[test]
fn greedy_run_is_deterministic_and_seeded_sampling_repeats() {
    let m = tiny();
    let greedy = |extra: &[&str]| {
        let mut a = vec!["run", s(&m), "hello there", "-n", "12", "-t", "1"];
        a.extend_from_slice(extra);
        stdout(&bantam(&a))
    };
    assert_eq!(greedy(&["--temperature", "0"]), greedy(&["--temperature", "0"]));
    assert_eq!(greedy(&["--seed", "7"]), greedy(&["--seed", "7"]));
    let outs: std::collections::HashSet<String> = (0..6).map(|i| greedy(&["--seed", &i.to_string(), "--temperature", "1.5"])).collect();
    assert!(outs.len() > 1, "different seeds gave the same output every time");
}

#[test]
fn verbose_prints_ollama_style_timings() {
    let m = tiny();
    let o = bantam(&["run", s(&m), "hi", "-n", "4", "--temperature", "0", "--verbose"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for field in ["load duration:", "prompt eval count:", "prompt eval rate:", "eval count:", "eval rate:"] {
        assert!(err.contains(field), "missing {field:?} in {err}");
    }
    assert!(err.contains("eval count:           4 token(s)"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let o = bantam(&["run", "no-such-model:7b", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model 'no-such-model:7b' not found"));
    let o = bantam(&["run", "../../etc/passwd", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    let o = bantam(&["show", "/nonexistent/x.gguf"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let m = tiny();
    let o = bantam(&["detokenize", s(&m), "999999"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside the vocabulary"));
    let o = bantam(&["run", s(&m), "hi", "--temperature", "NaN"]);
    assert_eq!(o.status.code(), Some(1));
    let bad = std::env::temp_dir().join(format!("bantam-bad-{}.gguf", std::process::id()));
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00trunc").unwrap();
    let o = bantam(&["run", s(&bad), "hi"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.contains(s(&bad)), "{err}");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let m = tiny();
    let long = "word ".repeat(100);
    let o = bantam(&["run", s(&m), &long, "--raw", "--ctx-size", "16"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("the context holds 16"), "{err}");
}

#[test]
fn show_and_bench_and_perplexity_run() {
    let m = tiny();
    let out = stdout(&bantam(&["show", s(&m)]));
    assert!(out.contains("architecture        llama") && out.contains("chat template       yes"), "{out}");
    let j: serde_json::Value = serde_json::from_str(&stdout(&bantam(&["bench", s(&m), "-p", "8", "-n", "4", "-r", "2", "--json", "-t", "1"]))).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert!(j[0]["avg_ts"].as_f64().unwrap() > 0.0);
    let text = std::env::temp_dir().join(format!("bantam-ppl-{}.txt", std::process::id()));
    std::fs::write(&text, "the cat sat on the mat and then the other cat sat there too\n".repeat(4)).unwrap();
    let out = stdout(&bantam(&["perplexity", s(&m), s(&text), "-c", "16", "-t", "1"]));
    assert!(out.starts_with("PPL = "), "{out}");
}

#[test]
fn stop_strings_end_the_answer_and_are_not_printed() {
    let m = tiny();
    let full = stdout(&bantam(&["run", s(&m), "hello", "-n", "24", "--temperature", "0", "--raw"]));
    // Stop at the first character of the output after a few characters: the answer must
    // end before it.
    let chars: Vec<char> = full.trim_end_matches('\n').chars().collect();
    if chars.len() > 4 {
        let stop: String = chars[3..5].iter().collect();
        let out = stdout(&bantam(&["run", s(&m), "hello", "-n", "24", "--temperature", "0", "--raw", "--stop", &stop]));
        let out = out.trim_end_matches('\n');
        assert!(!out.contains(&stop), "{out:?} contains the stop string {stop:?}");
        assert!(full.starts_with(out), "{out:?} is not a prefix of {full:?}");
    }
}

/// Largest top-1/top-2 gap of llama.cpp's logits at which a greedy divergence is accepted
/// as a near-tie: `model/tests/greedy.rs`'s `TIE`, where its measurement is explained.
const TIE: f64 = 0.6;

/// The whole path (tokenizer, forward pass, greedy sampling, streaming detokenizer) on the
/// real smollm2 model reproduces llama.cpp's greedy continuation up to its first near-tie
/// (a step whose top two logits are within `TIE`, where rounding may legitimately pick
/// either). The case is the reference's with the longest run before one.
#[test]
fn smollm2_greedy_text_matches_llama_cpp() {
    let m = real("smollm2-135m");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/smollm2-135m/greedy.json")).unwrap())
            .unwrap();
    let before_tie = |case: &serde_json::Value| {
        let steps = case["steps"].as_array().unwrap();
        let gap = |st: &serde_json::Value| st["logit"].as_f64().unwrap() - st["top2_logit"].as_f64().unwrap();
        steps.iter().position(|st| gap(st) < TIE).unwrap_or(steps.len()).min(48)
    };
    let case = r.as_array().unwrap().iter().max_by_key(|c| before_tie(c)).unwrap();
    let n = before_tie(case);
    assert!(n >= 8, "every case has a near-tie too early to be useful");
    let ids: Vec<String> = case["ids"].as_array().unwrap()[..n].iter().map(|v| v.to_string()).collect();
    let mut a = vec!["detokenize", s(&m)];
    a.extend(ids.iter().map(|x| x.as_str()));
    let want = stdout(&bantam(&a));
    let prompt = case["prompt"].as_str().unwrap();
    let out = stdout(&bantam(&["run", s(&m), prompt, "--raw", "--temperature", "0", "--repeat-penalty", "1", "-n", &n.to_string(), "-t", "2"]));
    assert_eq!(out, want, "{prompt:?}, {n} tokens");
}

#[test]
fn smollm2_chat_template_answers() {
    let m = real("smollm2-135m");
    let out = stdout(&bantam(&["run", s(&m), "What is 2+2? Answer with one number.", "--temperature", "0", "-n", "16", "--system", "You are terse."]));
    assert!(!out.trim().is_empty());
    assert!(!out.contains("<|im_end|>") && !out.contains("<|im_start|>"), "{out}");
}

#[test]
fn serve_refuses_a_public_address_without_a_key() {
    let out = bantam(&["serve", "--host", "0.0.0.0", "--port", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-key") && err.contains("--no-auth"), "{err}");
}

#[test]
fn serve_refuses_routes_it_cannot_keep() {
    let dir = std::env::temp_dir().join(format!("bantam-cli-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let routes = dir.join("routes.toml");
    let cases = [
        ("[routes.a]\npolicy = \"cascade\"\nlocal = \"m\"\n", "needs an upstream"),
        ("[keys.k]\nkey_env = \"BANTAM_CLI_TEST_UNSET_KEY\"\n", "BANTAM_CLI_TEST_UNSET_KEY is not set"),
        ("[keys.k]\nkey_env = \"HOME\"\nbudget_per_day = 1.0\n", "--ledger"),
    ];
    for (text, want) in cases {
        std::fs::write(&routes, text).unwrap();
        let out = bantam(&["serve", "--port", "0", "--routes", s(&routes)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{text:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bantam run` and `bantam serve` drive one engine: on smollm2 they give the same text, the
/// same token count and the same finish reason, greedy and seeded, with and without a
/// grammar.
#[test]
fn run_and_serve_give_the_same_answers() {
    real("smollm2:135m");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = Command::new(env!("CARGO_BIN_EXE_bantam"))
        .args(["serve", "--port", &port.to_string(), "-t", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bantam serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);
    let base = format!("http://127.0.0.1:{port}");
    let t = std::time::Instant::now();
    while ureq::get(&base).call().is_err() {
        assert!(t.elapsed().as_secs() < 30, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let prompt = "Name three colours of the rainbow.";
    let schema = tiny().with_file_name("colour.schema.json");
    std::fs::write(&schema, r#"{"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]}"#).unwrap();
    let cases: [(&[&str], serde_json::Value); 4] = [
        (&["--temperature", "0", "-n", "24"], serde_json::json!({"options": {"temperature": 0, "num_predict": 24}})),
        (&["--temperature", "0.9", "--seed", "42", "-n", "24"], serde_json::json!({"options": {"temperature": 0.9, "seed": 42, "num_predict": 24}})),
        (&["--temperature", "0", "-n", "40", "--format", "json"], serde_json::json!({"options": {"temperature": 0, "num_predict": 40}, "format": "json"})),
        (
            &["--temperature", "0.7", "--seed", "5", "-n", "200", "--format", s(&schema)],
            serde_json::json!({"options": {"temperature": 0.7, "seed": 5, "num_predict": 200}, "format": {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]}}),
        ),
    ];
    for (args, body) in cases {
        let mut a = vec!["run", "smollm2:135m", prompt, "--verbose", "-t", "2"];
        a.extend_from_slice(args);
        let o = bantam(&a);
        let text = stdout(&o);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let err = String::from_utf8_lossy(&o.stderr);
        let field = |name: &str| err.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().trim_end_matches(" token(s)").to_string()).unwrap_or_default();
        let mut body = body;
        body["model"] = "smollm2:135m".into();
        body["stream"] = false.into();
        body["messages"] = serde_json::json!([{"role": "user", "content": prompt}]);
        let mut resp = ureq::post(&format!("{base}/api/chat")).header("content-type", "application/json").send(body.to_string()).unwrap();
        let r: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(r["message"]["content"].as_str().unwrap(), text, "text differs for {args:?}");
        assert_eq!(r["eval_count"].to_string(), field("eval count:"), "token count differs for {args:?}");
        assert_eq!(r["done_reason"].as_str().unwrap(), field("done reason:"), "finish reason differs for {args:?}");
    }
}

/// `run --think` / `--no-think` / `--hidethinking` on a tiny model that carries Qwen3's chat
/// template, made to write a reasoning block and an answer by a regular expression.
#[test]
fn run_splits_a_thinking_models_reasoning_from_its_answer() {
    let p = tiny().with_file_name("tiny-thinker.gguf");
    let spec = model::tiny::TinySpec { chat_template: include_str!("../../engine/tests/data/qwen3.jinja"), ctx: 512, ..Default::default() };
    std::fs::write(&p, model::tiny::tiny_model(&spec)).unwrap();
    let regex = r"<think>\nTwo and two make four\.\n</think>\n\nFour\.";
    let run = |flags: &[&str]| {
        let mut a = vec!["run", s(&p), "What is 2+2?", "--temperature", "0", "-n", "64", "--regex", regex];
        a.extend_from_slice(flags);
        stdout(&bantam(&a))
    };
    // Not a terminal: the reasoning is framed as `ollama run` frames it.
    assert_eq!(run(&["--think"]), "Thinking...\nTwo and two make four.\n...done thinking.\n\nFour.\n");
    assert_eq!(run(&["--think", "--hidethinking"]), "Four.\n");
    assert_eq!(run(&["--no-think"]), "Four.\n");
    assert_eq!(run(&["--think=false"]), "Four.\n");
    // Without either flag the text is the model's own.
    assert_eq!(run(&[]), "<think>\nTwo and two make four.\n</think>\n\nFour.\n");
    let o = bantam(&["run", s(&p), "hi", "--think=max"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--think"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The tiny model shaped for the k-quants (256 wide), as F32: a source `quantize` accepts.
fn tiny_f32(dir: &Path) -> PathBuf {
    let q8 = dir.join("tiny256-q8.gguf");
    let spec = model::tiny::TinySpec { n_embd: 256, n_layer: 4, n_head: 8, n_head_kv: 2, n_ff: 512, ..Default::default() };
    std::fs::write(&q8, model::tiny::tiny_model(&spec)).unwrap();
    let f32 = dir.join("tiny256-f32.gguf");
    stdout(&bantam(&["quantize", "--allow-requantize", s(&q8), s(&f32), "F32"]));
    f32
}

fn mean_kld(out: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with("Mean    KLD:")).unwrap_or_else(|| panic!("no KLD in {out}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn quantize_imatrix_and_kl_divergence_end_to_end() {
    let dir = std::env::temp_dir().join(format!("bantam-cli-quant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = tiny_f32(&dir);
    let text = "/usr/share/common-licenses/GPL-3";
    let im = dir.join("imatrix.gguf");
    let out = stdout(&bantam(&["imatrix", s(&src), "-f", text, "-o", s(&im), "--chunks", "2", "-t", "2"]));
    assert!(out.contains("stored 28 entries computed on 2 chunks"), "{out}");
    let q = dir.join("q4km.gguf");
    let out = stdout(&bantam(&["quantize", "--imatrix", s(&im), s(&src), s(&q), "q4_k_m", "2"]));
    assert!(out.contains("quant size"), "{out}");
    let kld = mean_kld(&stdout(&bantam(&["perplexity", s(&q), text, "--chunks", "2", "--kl-divergence", s(&src)])));
    assert!(kld > 0.0 && kld < 0.05, "Q4_K_M KLD {kld}");
    // bad input: a quantized source without --allow-requantize, an unknown type, nothing left behind
    let e = bantam(&["quantize", s(&q), s(&dir.join("x.gguf")), "Q8_0"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("--allow-requantize"));
    let e = bantam(&["quantize", s(&src), s(&dir.join("x.gguf")), "Q9_K"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("unknown quantization type"));
    assert!(!dir.join("x.gguf").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quantize_auto_writes_the_smallest_file_under_the_bar() {
    let dir = std::env::temp_dir().join(format!("bantam-cli-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = tiny_f32(&dir);
    let text = "/usr/share/common-licenses/GPL-3";
    let bar = 0.03;
    let auto = dir.join("auto.gguf");
    let out = stdout(&bantam(&["quantize", s(&src), s(&auto), "--auto", "--max-kld", &bar.to_string(), "--calibration", text]));
    assert!(out.contains("wrote"), "{out}");
    // measured again, independently, on the same text: under the bar
    let kld = mean_kld(&stdout(&bantam(&["perplexity", s(&auto), text, "--chunks", "2", "--kl-divergence", s(&src)])));
    assert!(kld <= bar, "auto file KLD {kld} over {bar}");
    // and no larger than the smallest uniform mix that meets the bar
    let mut smallest_passing = u64::MAX;
    for t in ["Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"] {
        let q = dir.join(format!("{t}.gguf"));
        stdout(&bantam(&["quantize", s(&src), s(&q), t]));
        let k = mean_kld(&stdout(&bantam(&["perplexity", s(&q), text, "--chunks", "2", "--kl-divergence", s(&src)])));
        if k <= bar {
            smallest_passing = smallest_passing.min(std::fs::metadata(&q).unwrap().len());
        }
    }
    // (the auto file records how it was made: a few hundred bytes more metadata)
    let size = std::fs::metadata(&auto).unwrap().len();
    assert!(size <= smallest_passing + 4096, "auto {size} bytes, smallest passing mix {smallest_passing}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `export` writes a Hugging Face directory (of the synthetic qwen3) and `convert` reads it
/// back: the default `--outtype auto` gives F16 matrices for an F32 checkpoint, and the file
/// runs.
#[test]
fn export_and_convert_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("bantam-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hf = dir.join("hf");
    let m = store::default_root().join("synthetic").join("qwen3.gguf");
    assert!(m.exists(), "{} is missing: run scripts/fetch-models.sh", m.display());
    stdout(&bantam(&["export", s(&m), "-o", s(&hf)]));
    let out = dir.join("back.gguf");
    let o = bantam(&["convert", s(&hf), "-o", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = gguf::Gguf::open(&out).unwrap();
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ggml_type, gguf::GgmlType::F16);
    assert_eq!(f.get("general.file_type").and_then(|v| v.as_u64()), Some(1));
    let o = bantam(&["run", s(&out), "hello", "--num-predict", "4", "--temperature", "0", "--raw"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Not a directory, an unknown type: clear errors, nothing written.
    let e = bantam(&["convert", s(&m), "-o", s(&dir.join("x.gguf"))]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("not a directory"));
    let e = bantam(&["convert", s(&hf), "-o", s(&dir.join("x.gguf")), "--outtype", "q4_0"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("unknown --outtype"));
    assert!(!dir.join("x.gguf").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--auto --task`: every candidate is also held to a `bantam eval` task; the file written
/// scores no worse on it than the input (a drop of 0%), re-measured independently, records
/// the measurement, and is no smaller than the file the KLD bar alone picks.
#[test]
fn quantize_auto_holds_the_task_accuracy() {
    let dir = std::env::temp_dir().join(format!("bantam-cli-auto-task-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = tiny_f32(&dir);
    let text = "/usr/share/common-licenses/GPL-3";
    let items = dir.join("items.jsonl");
    let mut lines = String::new();
    for (i, w) in ["the cat", "a dog", "the the", "in her", "cat in", "dog er", "her the", "in in", "the dog", "a cat", "er er", "the in"].iter().enumerate() {
        lines.push_str(&format!("{{\"input\": \"{w}\", \"label\": \"{}\"}}\n", if i % 3 == 0 { "he" } else { "in" }));
    }
    std::fs::write(&items, lines).unwrap();
    let args = "--kind classify --labels he,in --parallel 2";
    let plain = dir.join("plain.gguf");
    stdout(&bantam(&["quantize", s(&src), s(&plain), "--auto", "--max-kld", "0.2", "--calibration", text]));
    let held = dir.join("held.gguf");
    let o = bantam(&[
        "quantize",
        s(&src),
        s(&held),
        "--auto",
        "--max-kld",
        "0.2",
        "--calibration",
        text,
        "--task",
        s(&items),
        "--task-args",
        args,
        "--max-accuracy-drop",
        "0%",
    ]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && out.contains("accuracy"), "{out}\n{err}");
    assert!(err.contains("input accuracy"), "{err}");
    // Measured again, apart from the search.
    let acc = |m: &Path| {
        let json = dir.join("check.json");
        let mut a = vec!["eval", s(&items), "--models", s(m), "--json", s(&json)];
        a.extend(args.split_whitespace());
        stdout(&bantam(&a));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v["models"][0]["accuracy"].as_f64().unwrap()
    };
    let (input, chosen) = (acc(&src), acc(&held));
    assert!(chosen >= input - 1e-9, "accuracy {chosen} below the input's {input}");
    let f = gguf::Gguf::open(&held).unwrap();
    let recorded = f.get("bantam.quantize.auto.task_accuracy").and_then(|v| v.as_f64()).expect("task accuracy recorded");
    assert!((recorded - chosen).abs() < 1e-6, "recorded {recorded}, measured {chosen}");
    assert!(std::fs::metadata(&held).unwrap().len() + 4096 >= std::fs::metadata(&plain).unwrap().len());
    // The flags hang together: --task needs --max-accuracy-drop, and a drop is a percentage.
    let e = bantam(&["quantize", s(&src), s(&dir.join("x.gguf")), "--auto", "--calibration", text, "--task", s(&items)]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("--max-accuracy-drop"));
    let e = bantam(&["quantize", s(&src), s(&dir.join("x.gguf")), "--auto", "--calibration", text, "--task", s(&items), "--max-accuracy-drop", "150%"]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("between 0% and 100%"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --adapter` applies a LoRA adapter, and `merge` bakes the same adapter into the
/// weights: the merged model's logits are the adapted model's up to the merged matrices'
/// F16 rounding, and both differ from the base.
#[test]
fn merge_bakes_an_adapter_into_the_weights() {
    use kernels::pool::Pool;
    use model::{Batch, KvCache, Model, Scratch};
    use std::sync::Arc;
    let base_path = real("smollm2:135m");
    let base = Model::open(&base_path).unwrap();
    let dir = std::env::temp_dir().join(format!("bantam-cli-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let adapter = model::lora::random(&base, 8, 16.0, &["attn_q", "attn_v", "attn_output", "ffn_up", "ffn_down"], 5, 1.0, 0.3).unwrap();
    let file = dir.join("adapter.gguf");
    std::fs::write(&file, adapter.to_gguf("llama", gguf::GgmlType::F16, &[])).unwrap();
    let merged = dir.join("merged.gguf");
    stdout(&bantam(&["merge", s(&base_path), s(&file), "--adapter-scale", "1.5", "-o", s(&merged)]));

    let prompt = [504u32, 3575, 282, 4649, 314, 7042, 30, 198];
    let pool = Pool::new(2);
    let logits = |m: &Model, set: Option<Arc<model::Adapters>>| {
        let mut cache = KvCache::new(&m.config, 16);
        let (mut scratch, mut batch) = (Scratch::default(), Batch::default());
        for (i, &t) in prompt.iter().enumerate() {
            batch.push(t, 0, i + 1 == prompt.len());
        }
        batch.adapters.push(set);
        m.forward(&pool, &batch, &mut [&mut cache], &mut scratch).unwrap().to_vec()
    };
    let loaded = Arc::new(model::Adapter::load(&file, &base).unwrap());
    let adapted = logits(&base, Some(Arc::new(model::Adapters(vec![(loaded, 1.5)]))));
    let plain = logits(&base, None);
    let baked = logits(&Model::open(&merged).unwrap(), None);
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let argmax = |l: &[f32]| l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    eprintln!("merged vs adapter: {:.4}; adapter vs base: {:.4}", diff(&baked, &adapted), diff(&adapted, &plain));
    assert!(diff(&adapted, &plain) > 1.0, "the adapter should move the logits");
    assert!(diff(&baked, &adapted) < 0.25 * diff(&adapted, &plain), "the merged model is not the adapted one");
    assert_eq!(argmax(&baked), argmax(&adapted));

    // `run --adapter` gives the text the merged model gives where their logits agree, and
    // a wrong adapter is refused with its reason.
    let run = |m: &str, extra: &[&str]| {
        let mut a = vec!["run", m, "The capital of France is", "--raw", "-n", "4", "--temperature", "0"];
        a.extend_from_slice(extra);
        stdout(&bantam(&a))
    };
    assert_eq!(run(s(&base_path), &["--adapter", s(&file), "--adapter-scale", "1.5"]), run(s(&merged), &[]));
    let wrong = dir.join("wrong.gguf");
    std::fs::write(&wrong, adapter.to_gguf("qwen2", gguf::GgmlType::F16, &[])).unwrap();
    let o = bantam(&["run", s(&base_path), "hi", "--adapter", s(&wrong)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("qwen2"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `finetune` trains an adapter that lowers the held-out loss, the same seed gives the same
/// file, the adapter loads in `run`, and bad data is refused with its line.
#[test]
fn finetune_learns_and_repeats() {
    let m = tiny();
    let dir = std::env::temp_dir().join(format!("bantam-cli-finetune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.jsonl");
    let mut lines = String::new();
    for i in 0..40 {
        let who = ["cat", "dog", "the", "hello", "there"][i % 5];
        lines.push_str(&serde_json::json!({"messages": [{"role": "user", "content": format!("greet {who}")}, {"role": "assistant", "content": format!("hello {who} hello")}]}).to_string());
        lines.push('\n');
    }
    lines.push_str(&serde_json::json!({"prompt": "the cat", "completion": " sat there"}).to_string());
    std::fs::write(&data, lines).unwrap();
    let train = |out: &Path| {
        let o = bantam(&[
            "finetune",
            s(&m),
            s(&data),
            "-o",
            s(out),
            "--epochs",
            "3",
            "--lr",
            "5e-3",
            "--rank",
            "4",
            "--ctx",
            "96",
            "--batch",
            "2",
            "--seed",
            "3",
            "-t",
            "2",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let (a, b) = (dir.join("a.gguf"), dir.join("b.gguf"));
    let log = train(&a);
    train(&b);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "the same seed wrote another adapter");
    // "validation loss X → Y" on the last line.
    let last = log.lines().rev().find(|l| l.contains("validation loss")).unwrap();
    let nums: Vec<f64> = last.split(['(', ')', ' ', ';']).filter_map(|w| w.parse().ok()).collect();
    let (before, after) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    assert!(after < 0.8 * before, "validation loss {before} → {after}: {log}");
    stdout(&bantam(&["run", s(&m), "greet cat", "-n", "4", "--temperature", "0", "--adapter", s(&a)]));
    // A run that went on from a checkpoint ends where the uninterrupted run ends: with
    // dropout and gradient checkpointing on, a checkpoint every 10 steps.
    let flags =
        ["--epochs", "3", "--lr", "5e-3", "--rank", "4", "--ctx", "48", "--batch", "1", "--seed", "9", "-t", "2", "--dropout", "0.1", "--grad-checkpoint"];
    let (full, resumed) = (dir.join("full.gguf"), dir.join("resumed.gguf"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec!["finetune", s(&m), s(&data), "-o", s(out)];
        args.extend_from_slice(&flags);
        args.extend_from_slice(extra);
        let o = bantam(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let log = run(&full, &["--save-every", "10"]);
    let ckpt = dir.join("full.gguf.ckpt");
    let log2 = run(&resumed, &["--resume", s(&ckpt)]);
    let at: usize = log2.split("at step ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).expect(&log2);
    assert!(at >= 10 && at.is_multiple_of(10), "{log2}");
    assert_eq!(std::fs::read(&full).unwrap(), std::fs::read(&resumed).unwrap(), "resumed run differs: {log}\n{log2}");
    // --eval scores the base and the adapter side by side.
    let items = dir.join("items.jsonl");
    std::fs::write(&items, "{\"input\": \"greet cat\", \"label\": \"cat\"}\n{\"input\": \"greet dog\", \"label\": \"dog\"}\n").unwrap();
    let o = bantam(&[
        "finetune",
        s(&m),
        s(&data),
        "-o",
        s(&b),
        "--epochs",
        "1",
        "--rank",
        "2",
        "--eval",
        s(&items),
        "--eval-args",
        "--kind classify --labels cat,dog",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("accuracy") && err.contains("points"), "{err}");
    // A learning rate far too high: the run stops at the first non-finite loss and writes
    // nothing over the output.
    let diverged = dir.join("diverged.gguf");
    let o = bantam(&["finetune", s(&m), s(&data), "-o", s(&diverged), "--epochs", "4", "--lr", "1e30", "--batch", "1"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("diverged"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!diverged.exists());
    let refused = |text: &str, extra: &[&str], why: &str| {
        std::fs::write(&data, text).unwrap();
        let mut args = vec!["finetune", s(&m), s(&data), "-o", s(&a)];
        args.extend_from_slice(extra);
        let o = bantam(&args);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(why), "{why}: {}", String::from_utf8_lossy(&o.stderr));
    };
    refused("{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n", &[], ":2: not JSON");
    refused("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", &[], ":1: nothing to learn");
    refused("{\"prompt\": \"a\"}\n", &[], "needs \"messages\"");
    refused("{\"prompt\": \"a\", \"completion\": \"b\"}\n", &["--rank", "0"], "--rank");
    refused("{\"prompt\": \"a\", \"completion\": \"b\"}\n", &["--alpha", "0"], "--alpha");
    // An adapter for another model is refused when it is loaded.
    let e = bantam(&["run", s(&m), "hi", "--adapter", s(&real("smollm2:135m"))]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("not a LoRA adapter"), "{}", String::from_utf8_lossy(&e.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

//! A thinking model through both APIs, in process: a model that carries Qwen3's published
//! chat template, created in a scratch store through `/api/create`: the tiny deterministic
//! model (hermetic), and the synthetic qwen3 model of `../shared/reference/synthetic` (the
//! qwen3 architecture, with the template added). Their weights are random, so a regular
//! expression (vLLM's `guided_regex`) makes them write a reasoning block and an answer;
//! what each API returns of them is checked.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server::{app, AppState, ServeConfig};
use tower::ServiceExt;

const QWEN3: &str = include_str!("../../engine/tests/data/qwen3.jinja");
const MODEL: &str = "tiny-thinker";
/// What the model is made to write: a reasoning block, then the answer.
const OUTPUT: &str = r"<think>\nTwo and two make four\.\n</think>\n\nFour\.";

/// A scratch directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("bantam-thinking-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which model thinks.
#[derive(Clone, Copy)]
enum Weights {
    Tiny,
    SyntheticQwen3,
}

/// The synthetic qwen3 model (made by scripts/fetch-models.sh) with Qwen3's chat template.
fn synthetic_qwen3_with_template() -> Vec<u8> {
    let path = store::default_root().join("synthetic").join("qwen3.gguf");
    let f = gguf::Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e}: run scripts/fetch-models.sh", path.display()));
    let mut w = gguf::GgufWriter::new();
    for (k, v) in f.metadata().iter().filter(|(k, _)| k != "general.alignment" && k != "tokenizer.chat_template") {
        w.meta(k, v.clone());
    }
    w.meta("tokenizer.chat_template", gguf::Value::Str(QWEN3.into()));
    for t in f.tensors() {
        w.tensor(&t.name, t.ggml_type, &t.dims, f.tensor_data(t).to_vec());
    }
    w.to_bytes()
}

async fn server(tag: &str, weights: Weights) -> (Router, Scratch) {
    let dir = Scratch::new(tag);
    let gguf = dir.path().join("tiny-thinker.gguf");
    let bytes = match weights {
        Weights::Tiny => model::tiny::tiny_model(&model::tiny::TinySpec { chat_template: QWEN3, ctx: 512, ..Default::default() }),
        Weights::SyntheticQwen3 => synthetic_qwen3_with_template(),
    };
    std::fs::write(&gguf, bytes).unwrap();
    let c = ServeConfig { store: store::Store::new(dir.path()), threads: 2, ..Default::default() };
    let app = app(AppState::new(c));
    let r = post(&app, "/api/create", json!({"model": MODEL, "from": gguf.to_str().unwrap(), "stream": false})).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    (app, dir)
}

async fn post(app: &Router, uri: &str, body: Value) -> (StatusCode, String) {
    let req = Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0, "max_tokens": 64, "guided_regex": OUTPUT});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// The `data:` payloads of an SSE body, without the closing `[DONE]`.
fn sse(body: &str) -> Vec<Value> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[tokio::test]
async fn openai_returns_reasoning_content_beside_the_answer() {
    openai_reasoning(Weights::Tiny, "openai-tiny").await;
}

#[tokio::test]
async fn openai_reasoning_on_the_synthetic_qwen3_model() {
    openai_reasoning(Weights::SyntheticQwen3, "openai-qwen3").await;
}

async fn openai_reasoning(weights: Weights, tag: &str) {
    let (app, _dir) = server(tag, weights).await;
    let (status, body) = post(&app, "/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let m = &serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], "Two and two make four.", "{body}");
    assert_eq!(m["content"], "Four.", "{body}");

    // Streamed: reasoning deltas, then content deltas; together the same answer.
    let (status, body) = post(&app, "/v1/chat/completions", chat(json!({"stream": true}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (mut reasoning, mut content) = (String::new(), String::new());
    for chunk in sse(&body) {
        let d = &chunk["choices"][0]["delta"];
        reasoning += d["reasoning_content"].as_str().unwrap_or("");
        assert!(d["reasoning_content"].is_null() || content.is_empty(), "reasoning after the answer began: {body}");
        content += d["content"].as_str().unwrap_or("");
    }
    assert_eq!((reasoning.as_str(), content.as_str()), ("Two and two make four.", "Four."));

    // Thinking turned off (vLLM's switch, or OpenAI's reasoning_effort): the template
    // closes an empty block in the prompt, and reasoning the model still writes is dropped.
    for off in [json!({"chat_template_kwargs": {"enable_thinking": false}}), json!({"reasoning_effort": "none"})] {
        let (status, body) = post(&app, "/v1/chat/completions", chat(off)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let m = &serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"];
        assert!(m.get("reasoning_content").is_none(), "{body}");
        assert_eq!(m["content"], "Four.", "{body}");
        let usage = &serde_json::from_str::<Value>(&body).unwrap()["usage"];
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    }
    let (status, body) = post(&app, "/v1/chat/completions", chat(json!({"reasoning_effort": "extreme"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("reasoning_effort"), "{body}");
}

#[tokio::test]
async fn ollama_lists_the_thinking_capability_and_takes_think() {
    let (app, _dir) = server("ollama", Weights::Tiny).await;
    let (status, body) = post(&app, "/api/show", json!({"model": MODEL})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let caps = serde_json::from_str::<Value>(&body).unwrap()["capabilities"].clone();
    assert!(caps.as_array().unwrap().contains(&json!("thinking")), "{caps}");
    // `think` switches the template's thinking: the prompt grows by the empty block when off.
    let prompt_tokens = |think: Value| {
        let app = app.clone();
        async move {
            let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "think": think, "stream": false, "options": {"num_predict": 1}});
            let (status, body) = post(&app, "/api/chat", body).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()["prompt_eval_count"].as_u64().unwrap()
        }
    };
    assert!(prompt_tokens(json!(false)).await > prompt_tokens(json!(true)).await);
    let (status, body) = post(&app, "/api/chat", json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "think": "max"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("think"), "{body}");
}

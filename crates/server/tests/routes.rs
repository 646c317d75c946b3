//! Every route, in process (no socket), against the real smollm2:135m: answers, stream
//! framing, and each kind of bad input in each API's own error shape.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::{config, get, post, send, Reply};
use serde_json::{json, Value};
use server::{app, AppState, ServeConfig};
use std::time::Duration;
use tower::ServiceExt;

const MODEL: &str = "smollm2:135m";

fn server(c: ServeConfig) -> Router {
    app(AppState::new(c))
}

fn ollama_error(r: &Reply, status: StatusCode, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json();
    let msg = e["error"].as_str().unwrap_or_else(|| panic!("not Ollama's error shape: {e}"));
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

fn openai_error(r: &Reply, status: StatusCode, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json();
    let msg = e["error"]["message"].as_str().unwrap_or_else(|| panic!("not OpenAI's error shape: {e}"));
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    assert!(e["error"]["type"].is_string());
    assert!(e["error"].get("param").is_some() && e["error"].get("code").is_some());
}

fn greedy(n: usize) -> Value {
    json!({"temperature": 0, "num_predict": n})
}

#[tokio::test]
async fn health_version_and_listing() {
    let app = server(config());
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(send(&app, Method::HEAD, "/", Body::empty(), &[]).await.status, StatusCode::OK);
    assert_eq!(get(&app, "/health").await.json(), json!({"status": "ok"}));
    assert!(get(&app, "/api/version").await.json()["version"].is_string());
    let tags = get(&app, "/api/tags").await.json();
    let m = tags["models"].as_array().unwrap().iter().find(|m| m["name"] == MODEL).expect("smollm2 listed");
    assert_eq!(m["details"]["family"], "llama");
    assert_eq!(m["details"]["format"], "gguf");
    assert!(m["size"].as_u64().unwrap() > 50 << 20);
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    let models = get(&app, "/v1/models").await.json();
    assert_eq!(models["object"], "list");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == MODEL && m["object"] == "model"));
    assert_eq!(get(&app, "/v1/models/smollm2:135m").await.json()["id"], MODEL);
    openai_error(&get(&app, "/v1/models/nope:1b").await, StatusCode::NOT_FOUND, "not found");
    let show = post(&app, "/api/show", json!({"model": MODEL})).await.json();
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    assert!(show["template"].as_str().unwrap().contains("im_start"));
    assert_eq!(show["details"]["quantization_level"], "Q4_1");
    ollama_error(&post(&app, "/api/show", json!({"model": "nope"})).await, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn generate_and_chat_stream_the_same_text_as_one_reply() {
    let app = server(config());
    let one = post(&app, "/api/generate", json!({"model": MODEL, "prompt": "Why is the sky blue?", "stream": false, "options": greedy(12)})).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    let one = one.json();
    assert_eq!(one["done"], true);
    assert_eq!(one["done_reason"], "length");
    assert_eq!(one["eval_count"], 12);
    assert!(one["prompt_eval_count"].as_u64().unwrap() > 5);
    assert!(one["total_duration"].as_u64().unwrap() >= one["eval_duration"].as_u64().unwrap());
    assert!(one["context"].as_array().unwrap().len() > 12);
    let text = one["response"].as_str().unwrap();
    assert!(!text.is_empty());

    let stream = post(&app, "/api/generate", json!({"model": MODEL, "prompt": "Why is the sky blue?", "options": greedy(12)})).await;
    assert_eq!(stream.headers[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> = stream.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() > 2);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    assert_eq!(lines.last().unwrap()["done"], true);
    let joined: String = lines.iter().map(|l| l["response"].as_str().unwrap()).collect();
    assert_eq!(joined, text);

    let msgs = json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]);
    let chat = post(&app, "/api/chat", json!({"model": MODEL, "messages": msgs, "stream": false, "options": greedy(10)})).await.json();
    assert_eq!(chat["message"]["role"], "assistant");
    let content = chat["message"]["content"].as_str().unwrap().to_string();
    let lines = post(&app, "/api/chat", json!({"model": MODEL, "messages": msgs, "options": greedy(10)})).await.text();
    let parts: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let joined: String = parts.iter().map(|p| p["message"]["content"].as_str().unwrap()).collect();
    assert_eq!(joined, content);
    assert_eq!(parts.last().unwrap()["done"], true);
    assert!(parts.last().unwrap()["eval_count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn openai_chat_and_completion_with_sse_usage_and_logprobs() {
    let app = server(config());
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 2});
    let r = post(&app, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = r.json();
    assert_eq!(r["object"], "chat.completion");
    let content = r["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let lp = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!lp.is_empty() && lp.iter().all(|t| t["logprob"].as_f64().unwrap() <= 0.0 && t["top_logprobs"].as_array().unwrap().len() == 2));
    let u = &r["usage"];
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()));

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let s = post(&app, "/v1/chat/completions", sbody).await;
    assert!(s.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
    let text = s.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").expect("data: framing")).collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks.iter().filter_map(|c| c["choices"].get(0)).filter_map(|c| c["delta"]["content"].as_str()).collect();
    assert_eq!(joined, content);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], u["completion_tokens"]);

    let c = post(
        &app,
        "/v1/completions",
        json!({"model": MODEL, "prompt": ["The capital of France is", "One, two,"], "max_tokens": 4, "temperature": 0, "n": 2, "echo": true, "logprobs": 1}),
    )
    .await
    .json();
    let choices = c["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert!(choices[0]["text"].as_str().unwrap().starts_with("The capital of France is"));
    assert!(choices[2]["text"].as_str().unwrap().starts_with("One, two,"));
    // Greedy: both samples of one prompt agree.
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    let l = &choices[0]["logprobs"];
    assert_eq!(l["tokens"].as_array().unwrap().len(), l["token_logprobs"].as_array().unwrap().len());
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let app = server(config());
    let e = post(&app, "/api/embed", json!({"model": MODEL, "input": ["hello", "world"]})).await.json();
    let v = e["embeddings"].as_array().unwrap();
    assert_eq!(v.len(), 2);
    let norm: f64 = v[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-3);
    let old = post(&app, "/api/embeddings", json!({"model": MODEL, "prompt": "hello"})).await.json();
    assert_eq!(old["embedding"].as_array().unwrap().len(), 576);
    let f = post(&app, "/v1/embeddings", json!({"model": MODEL, "input": "hello"})).await.json();
    assert_eq!(f["data"][0]["embedding"].as_array().unwrap().len(), 576);
    assert_eq!(f["data"][0]["embedding"], v[0], "one input, one vector, whichever API");
    let b = post(&app, "/v1/embeddings", json!({"model": MODEL, "input": ["hello"], "encoding_format": "base64"})).await.json();
    assert_eq!(b["data"][0]["embedding"].as_str().unwrap().len(), 3072); // 576 f32 = 2304 bytes
    let d = post(&app, "/api/embed", json!({"model": MODEL, "input": "hello", "dimensions": 8})).await.json();
    assert_eq!(d["embeddings"][0].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn bad_input_gets_each_apis_error_shape() {
    let app = server(config());
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // Malformed JSON and wrong types.
    let r = send(&app, Method::POST, "/api/chat", "{\"model\": ", &[]).await;
    ollama_error(&r, StatusCode::BAD_REQUEST, "invalid request body");
    let r = send(&app, Method::POST, "/v1/chat/completions", "not json", &[]).await;
    openai_error(&r, StatusCode::BAD_REQUEST, "invalid request body");
    ollama_error(&post(&app, "/api/chat", json!({"model": MODEL, "messages": "hi"})).await, StatusCode::BAD_REQUEST, "invalid");
    ollama_error(
        &post(&app, "/api/generate", json!({"model": MODEL, "prompt": "x", "options": {"temperature": "hot"}})).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    // Unknown models, and path tricks in names.
    ollama_error(&post(&app, "/api/chat", json!({"model": "nope:7b", "messages": msgs})).await, StatusCode::NOT_FOUND, "model 'nope:7b' not found");
    openai_error(&post(&app, "/v1/chat/completions", json!({"model": "nope:7b", "messages": msgs})).await, StatusCode::NOT_FOUND, "model 'nope:7b' not found");
    for name in ["../../etc/passwd", "/etc/passwd", "..", "a/../../b.gguf"] {
        let r = post(&app, "/api/generate", json!({"model": name, "prompt": "x"})).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{name}: {}", r.text());
    }
    ollama_error(&post(&app, "/api/generate", json!({"prompt": "x"})).await, StatusCode::BAD_REQUEST, "model is required");
    // Empty messages (OpenAI), absurd options.
    openai_error(&post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": []})).await, StatusCode::BAD_REQUEST, "messages");
    ollama_error(
        &post(&app, "/api/generate", json!({"model": MODEL, "prompt": "x", "options": {"num_predict": -5}})).await,
        StatusCode::BAD_REQUEST,
        "num_predict",
    );
    ollama_error(&post(&app, "/api/generate", json!({"model": MODEL, "prompt": "x", "options": {"top_p": 7}})).await, StatusCode::BAD_REQUEST, "top_p");
    openai_error(
        &post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": msgs, "temperature": 9})).await,
        StatusCode::BAD_REQUEST,
        "temperature",
    );
    openai_error(&post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": msgs, "max_tokens": -1})).await, StatusCode::BAD_REQUEST, "max_tokens");
    openai_error(
        &post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": msgs, "logit_bias": {"x": 1}})).await,
        StatusCode::BAD_REQUEST,
        "logit_bias",
    );
    openai_error(&post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": msgs, "n": 0})).await, StatusCode::BAD_REQUEST, "n must be");
    // Structured-output requests that name no valid format or schema.
    ollama_error(&post(&app, "/api/chat", json!({"model": MODEL, "messages": msgs, "format": "yaml"})).await, StatusCode::BAD_REQUEST, "format");
    ollama_error(&post(&app, "/api/chat", json!({"model": MODEL, "messages": msgs, "format": {"type": "strin"}})).await, StatusCode::BAD_REQUEST, "strin");
    openai_error(
        &post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": msgs, "response_format": {"type": "xml"}})).await,
        StatusCode::BAD_REQUEST,
        "response_format",
    );
    // A prompt longer than the context: its length and the limit, no silent truncation...
    let long = "word ".repeat(1000);
    let r = post(&app, "/api/generate", json!({"model": MODEL, "prompt": long, "raw": true})).await;
    ollama_error(&r, StatusCode::BAD_REQUEST, "context holds 512");
    assert!(r.json()["error"].as_str().unwrap().starts_with("the prompt has 10"), "{}", r.text());
    let r = post(&app, "/v1/completions", json!({"model": MODEL, "prompt": long})).await;
    openai_error(&r, StatusCode::BAD_REQUEST, "context holds 512");
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    // ...unless the request asks for it.
    let r = post(&app, "/api/generate", json!({"model": MODEL, "prompt": long, "raw": true, "truncate": true, "stream": false, "options": greedy(2)})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Unknown fields are ignored; the server still answers.
    let r = post(&app, "/api/chat", json!({"model": MODEL, "messages": msgs, "stream": false, "options": greedy(2), "mystery": 1})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Out-of-vocabulary token ids.
    openai_error(&post(&app, "/v1/completions", json!({"model": MODEL, "prompt": [1, 99999999]})).await, StatusCode::BAD_REQUEST, "vocabulary");
    openai_error(&post(&app, "/detokenize", json!({"model": MODEL, "tokens": [99999999]})).await, StatusCode::BAD_REQUEST, "vocabulary");
}

#[tokio::test]
async fn body_limit_is_413() {
    let mut c = config();
    c.max_body = 1024;
    let app = server(c);
    let big = json!({"model": MODEL, "prompt": "x".repeat(4096)});
    let r = post(&app, "/api/generate", big.clone()).await;
    ollama_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "");
    openai_error(&post(&app, "/v1/completions", big).await, StatusCode::PAYLOAD_TOO_LARGE, "");
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    let mut c = config();
    c.limits.engine.max_parallel = 1;
    c.limits.engine.max_queue = 0;
    let app = server(c);
    // A long stream holds the only slot while we ask again.
    let long = app
        .clone()
        .oneshot(
            Request::post("/api/generate")
                .body(Body::from(json!({"model": MODEL, "prompt": "Tell a long story.", "options": {"num_predict": 400}}).to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let r = post(&app, "/v1/completions", json!({"model": MODEL, "prompt": "hi", "max_tokens": 2})).await;
    openai_error(&r, StatusCode::SERVICE_UNAVAILABLE, "busy");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    ollama_error(&post(&app, "/api/generate", json!({"model": MODEL, "prompt": "hi"})).await, StatusCode::SERVICE_UNAVAILABLE, "busy");
    drop(long); // the client goes away: its slot frees within a step
    let t = std::time::Instant::now();
    loop {
        let r = post(&app, "/api/generate", json!({"model": MODEL, "prompt": "hi", "stream": false, "options": greedy(2)})).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "slot not freed: {}", r.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn api_key_guards_every_route_but_health() {
    let mut c = config();
    c.api_key = Some("s3cret".into());
    let app = server(c);
    assert_eq!(get(&app, "/").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/health").await.status, StatusCode::OK);
    ollama_error(&get(&app, "/api/tags").await, StatusCode::UNAUTHORIZED, "API key");
    openai_error(&get(&app, "/v1/models").await, StatusCode::UNAUTHORIZED, "API key");
    assert_eq!(get(&app, "/metrics").await.status, StatusCode::UNAUTHORIZED);
    let wrong = send(&app, Method::GET, "/v1/models", Body::empty(), &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = send(&app, Method::GET, "/v1/models", Body::empty(), &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_allows_loopback_origins_only_by_default() {
    let app = server(config());
    let pre = |origin: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method(Method::OPTIONS)
                .uri("/api/chat")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(pre("http://localhost:3000").await.as_deref(), Some("http://localhost:3000"));
    assert_eq!(pre("http://evil.example").await, None);
    let mut c = config();
    c.origins = vec!["https://app.example.com".into()];
    let app = server(c);
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/chat")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body(Body::empty())
        .unwrap();
    assert!(app.oneshot(req).await.unwrap().headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn keep_alive_zero_unloads_and_ps_lists_loaded_models() {
    let app = server(config());
    let r = post(&app, "/api/generate", json!({"model": MODEL})).await.json();
    assert_eq!(r["done_reason"], "load");
    let ps = get(&app, "/api/ps").await.json();
    let m = &ps["models"][0];
    assert_eq!(m["name"], MODEL);
    assert_eq!(m["context_length"], 512);
    assert!(m["size"].as_u64().unwrap() > 0 && m["expires_at"].is_string());
    let r = post(&app, "/api/generate", json!({"model": MODEL, "keep_alive": 0})).await.json();
    assert_eq!(r["done_reason"], "unload");
    assert_eq!(get(&app, "/api/ps").await.json()["models"], json!([]));
    ollama_error(&post(&app, "/api/generate", json!({"model": MODEL, "prompt": "x", "keep_alive": "soon"})).await, StatusCode::BAD_REQUEST, "keep_alive");
}

#[tokio::test]
async fn max_loaded_models_evicts_the_least_recently_used_idle_one() {
    let mut c = config();
    c.limits.max_loaded = 1;
    let app = server(c);
    post(&app, "/api/generate", json!({"model": MODEL})).await;
    post(&app, "/api/generate", json!({"model": "gemma3:270m"})).await;
    let ps = get(&app, "/api/ps").await.json();
    let names: Vec<&str> = ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["gemma3:270m"]);
    // A memory budget too small for any model: a clear refusal.
    let mut c = config();
    c.limits.max_memory = 1 << 20;
    let r = post(&server(c), "/api/generate", json!({"model": MODEL, "prompt": "x"})).await;
    ollama_error(&r, StatusCode::INTERNAL_SERVER_ERROR, "memory budget");
}

#[tokio::test]
async fn tokenize_detokenize_and_metrics() {
    let app = server(config());
    let t = post(&app, "/tokenize", json!({"model": MODEL, "content": "Hello world"})).await.json();
    let ids = t["tokens"].clone();
    assert!(ids.as_array().unwrap().len() >= 2);
    let back = post(&app, "/detokenize", json!({"model": MODEL, "tokens": ids})).await.json();
    assert_eq!(back["content"], "Hello world");
    let p = post(&app, "/tokenize", json!({"model": MODEL, "content": "Hello", "with_pieces": true})).await.json();
    assert_eq!(p["tokens"][0]["piece"], "Hello");
    // Twice the same prompt: the second comes from the prefix cache.
    for _ in 0..2 {
        post(&app, "/api/generate", json!({"model": MODEL, "prompt": "Count to three.", "stream": false, "options": greedy(3)})).await;
    }
    let m = get(&app, "/metrics").await;
    assert!(m.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    let text = m.text();
    for needle in [
        "bantam_requests_total{route=\"/api/generate\",status=\"200\"} 2",
        "bantam_requests_total{route=\"/tokenize\",status=\"200\"} 2",
        "bantam_generated_tokens_total{model=\"smollm2:135m\"} 6",
        "bantam_queue_depth{model=\"smollm2:135m\"} 0",
        "bantam_running_sequences{model=\"smollm2:135m\"} 0",
        "bantam_prefix_cache_hits_total{model=\"smollm2:135m\"} 1",
        "bantam_kv_cache_usage_ratio{model=\"smollm2:135m\"}",
        "bantam_model_load_seconds{model=\"smollm2:135m\"}",
        "bantam_tokens_per_second{model=\"smollm2:135m\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_assistant_message_is_continued() {
    let app = server(config());
    let messages = json!([{"role": "user", "content": "Count from 1 to 10, separated by commas."}, {"role": "assistant", "content": "1, 2, 3,"}]);
    let r = post(&app, "/v1/chat/completions", json!({"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text = r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(text.trim_start().starts_with('4'), "the answer goes on from the assistant's words: {text:?}");
    let r = post(&app, "/api/chat", json!({"model": MODEL, "messages": messages, "stream": false, "options": {"num_predict": 6, "temperature": 0}})).await;
    assert_eq!(r.json()["message"]["content"].as_str().unwrap(), text, "both APIs continue alike");
}

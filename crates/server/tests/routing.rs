//! Routes against a real upstream: a second bantam server on loopback, both on the real
//! smollm2:135m, and upstreams that misbehave on purpose (refusing connections, hanging,
//! answering 500 or garbage, closing mid-stream). Every answer says how it was served; no
//! fault reaches the client; the ledger's books balance; keys never leak.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{config, post, send, Reply};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server::route::{RouteFile, Router};
use server::{app, AppState};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const MODEL: &str = "smollm2:135m";

/// A bantam server on a loopback port; its OpenAI base URL.
async fn upstream_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app(AppState::new(config()))).await.unwrap() });
    format!("http://{addr}/v1")
}

/// Read one HTTP request (headers and a Content-Length body); returns the body.
async fn read_request(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return String::new();
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return String::from_utf8_lossy(&buf[end + 4..]).into_owned();
        }
    }
}

/// An upstream that misbehaves: `hang`, `500`, `garbage` or `cut` (a stream closed after
/// its first words; a whole answer cut short).
async fn faulty(kind: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let body = read_request(&mut s).await;
                let stream = body.contains("\"stream\":true");
                let reply: String = match kind {
                    "hang" => {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    }
                    "500" => {
                        let b = r#"{"error":{"message":"boom","type":"server_error"}}"#;
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                            b.len()
                        )
                    }
                    "garbage" => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: close\r\n\r\n<html>oops</".into(),
                    "cut" if stream => {
                        let chunk = json!({"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "The sky"}, "finish_reason": null}]});
                        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {chunk}\n\n")
                    }
                    _ => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\nconnection: close\r\n\r\n{\"choices\": [".into(),
                };
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

/// A loopback URL where nothing listens.
fn refusing() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

/// Routes on the upstream `big`: `up` (always upstream), `always` (a cascade that always
/// escalates: no entropy is below 0) and `never` (a cascade with no thresholds).
fn three_routes() -> String {
    format!(
        r#"
        [routes.up]
        policy = "upstream"
        local = "{MODEL}"
        upstream = "big"
        [routes.always]
        policy = "cascade"
        local = "{MODEL}"
        upstream = "big"
        escalate = {{ max_entropy = -1.0 }}
        [routes.never]
        policy = "cascade"
        local = "{MODEL}"
        upstream = "big"
        "#
    )
}

fn router(toml: &str) -> Router {
    Router::new(RouteFile::parse(toml, "test").unwrap()).unwrap()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "temperature": 0, "max_tokens": 12, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

fn ollama_chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "options": {"temperature": 0, "num_predict": 12}, "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
}

/// The text, the `bantam` field of the last chunk, and the usage of an OpenAI stream.
fn openai_stream(r: &Reply) -> (String, Value, Value) {
    let text = r.text();
    let events: Vec<&str> =
        text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("framing: {e:?}"))).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let mut content = String::new();
    let (mut routed, mut usage) = (Value::Null, Value::Null);
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        if let Some(c) = v.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            content += c;
        }
        if v.get("bantam").is_some() {
            routed = v["bantam"].clone();
        }
        if v.get("usage").is_some_and(|u| !u.is_null()) {
            usage = v["usage"].clone();
        }
    }
    (content, routed, usage)
}

/// The text and the last line of an Ollama stream.
fn ollama_stream(r: &Reply) -> (String, Value) {
    let lines: Vec<Value> = r.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let content = lines.iter().filter_map(|l| l.pointer("/message/content").and_then(Value::as_str)).collect();
    (content, lines.last().unwrap().clone())
}

fn served(r: &Reply) -> &str {
    r.headers.get("x-bantam-route").map(|v| v.to_str().unwrap()).unwrap_or_else(|| panic!("no x-bantam-route header: {}", r.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_and_say_how_they_were_served() {
    let up = upstream_server().await;
    let routes = three_routes();
    let routes = router(&format!(
        r#"
        [upstreams.big]
        url = "{up}"
        model = "{MODEL}"
        [routes.loc]
        policy = "local"
        local = "{MODEL}"
        {routes}
        [routes.words]
        policy = "cascade"
        local = "{MODEL}"
        upstream = "big"
        escalate = {{ patterns = ["(?i)\\bsky\\b"] }}
        "#
    ));
    let app = app(AppState::new(config()).with_router(routes));
    // The model named directly: the reference text, served locally.
    let direct = post(&app, "/v1/chat/completions", chat(MODEL, false)).await;
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.text());
    assert_eq!(served(&direct), "local");
    assert!(direct.json().get("bantam").is_none(), "no route, no extension field");
    let want = direct.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!want.is_empty());
    // Ollama's request carries only its own options upstream: the upstream samples with its
    // OpenAI defaults (no repeat penalty), so an upstream answer is the OpenAI one.
    let direct = post(&app, "/api/chat", ollama_chat(MODEL, false)).await;
    let want_ollama = direct.json()["message"]["content"].as_str().unwrap().to_string();

    for (route, how, escalated) in
        [("loc", "local", false), ("up", "upstream", false), ("always", "upstream", true), ("never", "local", false), ("words", "upstream", true)]
    {
        // OpenAI, whole.
        let r = post(&app, "/v1/chat/completions", chat(route, false)).await;
        assert_eq!(r.status, StatusCode::OK, "{route}: {}", r.text());
        assert_eq!(served(&r), how, "{route}");
        let v = r.json();
        assert_eq!(
            (v["bantam"]["route"].as_str(), v["bantam"]["served"].as_str(), v["bantam"]["escalated"].as_bool()),
            (Some(route), Some(how), Some(escalated)),
            "{v}"
        );
        assert_eq!(v["model"], route, "the response names the model asked for");
        // Greedy on the same weights: the upstream's answer is the local one, token for token.
        assert_eq!(v["choices"][0]["message"]["content"], want.as_str(), "{route}");
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0 && v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
        if escalated {
            let reason = v["bantam"]["reason"].as_str().unwrap();
            assert!(reason.starts_with("entropy") || reason.starts_with("pattern"), "{reason}");
        }
        // OpenAI, streamed.
        let r = post(&app, "/v1/chat/completions", chat(route, true)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, how), "{route}");
        let (text, routed, usage) = openai_stream(&r);
        assert_eq!(text, want, "{route}");
        assert_eq!(routed["served"], how, "{route}");
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{route}: {usage}");
        // Ollama, whole and streamed.
        let want = if how == "local" { &want_ollama } else { &want };
        let r = post(&app, "/api/chat", ollama_chat(route, false)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, how), "{route}: {}", r.text());
        let v = r.json();
        assert_eq!((v["message"]["content"].as_str(), v["bantam"]["served"].as_str()), (Some(want.as_str()), Some(how)), "{route}: {v}");
        assert!(v["eval_count"].as_u64().unwrap() > 0);
        let r = post(&app, "/api/chat", ollama_chat(route, true)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, how), "{route}");
        let (text, last) = ollama_stream(&r);
        assert_eq!((text.as_str(), last["done"].as_bool(), last["bantam"]["served"].as_str()), (want.as_str(), Some(true), Some(how)), "{route}: {last}");
    }

    // Completions go upstream too.
    let r = post(&app, "/v1/completions", json!({"model": "up", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0})).await;
    let d = post(&app, "/v1/completions", json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0})).await;
    assert_eq!((r.status, served(&r)), (StatusCode::OK, "upstream"), "{}", r.text());
    assert_eq!(r.json()["choices"][0]["text"], d.json()["choices"][0]["text"]);
    // An empty Ollama request loads a route's local model, as it does a model.
    let r = post(&app, "/api/generate", json!({"model": "always", "prompt": ""})).await;
    assert_eq!((r.status, r.json()["done_reason"].as_str()), (StatusCode::OK, Some("load")), "{}", r.text());
    // Routes are listed as models.
    let models = send(&app, Method::GET, "/v1/models", Body::empty(), &[]).await.json();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "always" && m["owned_by"] == "route"), "{models}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_consistency_escalates_when_samples_disagree() {
    let up = upstream_server().await;
    // `wild`: four samples at temperature 2 must all say what the answer says; `tame`: half
    // of four samples at temperature 0.01 (the greedy answer, but for a near-tie) must.
    let routes = router(&format!(
        r#"
        [upstreams.big]
        url = "{up}"
        model = "{MODEL}"
        [routes.wild]
        policy = "cascade"
        local = "{MODEL}"
        upstream = "big"
        escalate = {{ min_agreement = 1.0, samples = 4, sample_temperature = 2.0 }}
        [routes.tame]
        policy = "cascade"
        local = "{MODEL}"
        upstream = "big"
        escalate = {{ min_agreement = 0.5, samples = 4, sample_temperature = 0.01 }}
        "#
    ));
    let app = app(AppState::new(config()).with_router(routes));
    let direct = post(&app, "/v1/chat/completions", chat(MODEL, false)).await.json();
    let want = direct["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    for (route, how) in [("wild", "upstream"), ("tame", "local")] {
        let r = post(&app, "/v1/chat/completions", chat(route, false)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, how), "{route}: {}", r.text());
        let v = r.json();
        assert_eq!(v["choices"][0]["message"]["content"], want.as_str(), "{route}");
        // The samples' tokens are not the client's: usage is the answer's alone.
        let counts = |u: &Value| (u["prompt_tokens"].clone(), u["completion_tokens"].clone());
        assert_eq!(counts(&v["usage"]), counts(&direct["usage"]), "{route}");
        if how == "upstream" {
            let reason = v["bantam"]["reason"].as_str().unwrap();
            assert!(reason.starts_with("agreement ") && reason.ends_with("< 1"), "{reason}");
        }
        // A stream waits for the whole answers, then goes out as one answer would.
        let r = post(&app, "/v1/chat/completions", chat(route, true)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, how), "{route}");
        let (text, routed, usage) = openai_stream(&r);
        assert_eq!((text.as_str(), routed["served"].as_str()), (want.as_str(), Some(how)), "{route}");
        assert_eq!(counts(&usage), counts(&direct["usage"]), "{route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_never_reach_the_client() {
    for kind in ["refused", "hang", "500", "garbage", "cut"] {
        let url = if kind == "refused" { refusing() } else { faulty(kind).await };
        let routes = router(&format!(
            "[upstreams.bad]\nurl = \"{url}\"\nmodel = \"m\"\ntimeout = 1.5\nconnect_timeout = 1.5\nretries = 1\nbackoff_ms = 10\n\
             [routes.up]\npolicy = \"upstream\"\nlocal = \"{MODEL}\"\nupstream = \"bad\"\n"
        ));
        let app = app(AppState::new(config()).with_router(routes));
        let r = post(&app, "/v1/chat/completions", chat("up", false)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, "fallback"), "{kind}: {}", r.text());
        let v = r.json();
        assert!(v["bantam"]["reason"].as_str().unwrap().starts_with("upstream"), "{kind}: {v}");
        assert!(!v["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{kind}");

        let r = post(&app, "/v1/chat/completions", chat("up", true)).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}");
        let (text, routed, usage) = openai_stream(&r);
        assert_eq!(routed["served"], "fallback", "{kind}: {routed}");
        assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{kind}");
        if kind == "cut" {
            // The upstream's first words went out; the local model finished the answer.
            assert_eq!(served(&r), "upstream");
            assert!(text.starts_with("The sky") && text.len() > "The sky".len(), "{text:?}");
            assert_eq!(routed["reason"], "upstream closed mid-stream");
        } else {
            assert_eq!(served(&r), "fallback", "{kind}");
            assert!(!text.is_empty());
        }
        let r = post(&app, "/api/chat", ollama_chat("up", false)).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, "fallback"), "{kind}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_skips_the_upstream_and_a_pool_routes_around_a_dead_replica() {
    let hang = faulty("hang").await;
    let routes = router(&format!(
        "[upstreams.slow]\nurl = \"{hang}\"\nmodel = \"m\"\ntimeout = 1\nretries = 0\nbreaker_failures = 1\nbreaker_cooldown = 600\n\
         [routes.up]\npolicy = \"upstream\"\nlocal = \"{MODEL}\"\nupstream = \"slow\"\n"
    ));
    let svc = app(AppState::new(config()).with_router(routes));
    let _ = post(&svc, "/api/chat", ollama_chat(MODEL, false)).await; // load the local model first
    let t = Instant::now();
    let r = post(&svc, "/api/chat", ollama_chat("up", false)).await;
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.json()["bantam"]["reason"], "upstream timeout");
    let t = Instant::now();
    let r = post(&svc, "/api/chat", ollama_chat("up", false)).await;
    assert_eq!(r.json()["bantam"]["reason"], "upstream circuit open");
    assert!(t.elapsed() < Duration::from_millis(900), "the breaker let a request wait on the upstream: {:?}", t.elapsed());

    let up = upstream_server().await;
    let routes = router(&format!(
        "[upstreams.pool]\nreplicas = [\"{}\", \"{up}\"]\nmodel = \"{MODEL}\"\nretries = 2\nbackoff_ms = 1\nhealth_interval = 0\n\
         [routes.up]\npolicy = \"upstream\"\nlocal = \"{MODEL}\"\nupstream = \"pool\"\n",
        refusing()
    ));
    let svc = app(AppState::new(config()).with_router(routes));
    for i in 0..4 {
        let body = json!({"model": "up", "stream": false, "max_tokens": 4, "messages": [{"role": "user", "content": format!("Count to {i}")}]});
        let r = post(&svc, "/v1/chat/completions", body).await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, "upstream"), "{}", r.text());
    }
}

/// Read a streamed response's first frame, then hang up.
async fn hang_up_after_first_chunk(app: &axum::Router, uri: &str, body: Value, headers: &[(&str, &str)]) {
    let mut req = Request::builder().method(Method::POST).uri(uri).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut b = resp.into_body();
    let first = b.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_balances_and_keys_stay_secret() {
    const SECRET: &str = "sk-test-3f9a71c2e5";
    std::env::set_var("BANTAM_TEST_TEAM_KEY", SECRET);
    std::env::set_var("BANTAM_TEST_BROKE_KEY", "sk-broke-0000");
    std::env::set_var("BANTAM_TEST_THRIFTY_KEY", "sk-thrifty-1111");
    std::env::set_var("BANTAM_TEST_UPSTREAM_KEY", "sk-upstream-2222");
    let up = upstream_server().await;
    let routes = three_routes();
    let file = format!(
        r#"
        local_cost_per_hour = 3.6
        [upstreams.big]
        url = "{up}"
        model = "{MODEL}"
        api_key_env = "BANTAM_TEST_UPSTREAM_KEY"
        price_input = 100.0
        price_output = 200.0
        {routes}
        [keys.team]
        key_env = "BANTAM_TEST_TEAM_KEY"
        [keys.broke]
        key_env = "BANTAM_TEST_BROKE_KEY"
        budget_per_day = 0
        [keys.thrifty]
        key_env = "BANTAM_TEST_THRIFTY_KEY"
        budget_per_day = 0
        over_budget = "local"
        "#
    );
    let routes = router(&file);
    assert!(!format!("{routes:?}").contains(SECRET) && !format!("{routes:?}").contains("sk-upstream"), "{routes:?}");
    let dir = std::env::temp_dir().join(format!("bantam-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ledger.db");
    let _ = std::fs::remove_file(&path);
    let state = AppState::new(config()).with_router(routes).with_ledger(server::ledger::Ledger::open(&path).unwrap());
    let app = app(state.clone());
    let auth = format!("Bearer {SECRET}");
    let h = [("authorization", auth.as_str())];

    // Without a key: 401. Past a budget: 429, or local answers only.
    let r = post(&app, "/v1/chat/completions", chat("up", false)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, Method::POST, "/v1/chat/completions", chat("up", false).to_string(), &[("authorization", "Bearer sk-broke-0000")]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    let r = send(&app, Method::POST, "/api/chat", ollama_chat("up", false).to_string(), &[("authorization", "Bearer sk-broke-0000")]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.json()["error"].as_str().unwrap().contains("budget"));
    let r = send(&app, Method::POST, "/v1/chat/completions", chat("up", false).to_string(), &[("authorization", "Bearer sk-thrifty-1111")]).await;
    assert_eq!((r.status, served(&r)), (StatusCode::OK, "local"));

    // A mix of routes, APIs and streaming; every usage the clients were told is summed.
    let (mut prompt, mut completion, mut answered) = (0u64, 0u64, 0u64);
    for route in ["up", "always", "never", MODEL] {
        for stream in [false, true] {
            let r = send(&app, Method::POST, "/v1/chat/completions", chat(route, stream).to_string(), &h).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let u = if stream { openai_stream(&r).2 } else { r.json()["usage"].clone() };
            prompt += u["prompt_tokens"].as_u64().unwrap();
            completion += u["completion_tokens"].as_u64().unwrap();
            let r = send(&app, Method::POST, "/api/chat", ollama_chat(route, stream).to_string(), &h).await;
            let last = if stream { ollama_stream(&r).1 } else { r.json() };
            prompt += last["prompt_eval_count"].as_u64().unwrap();
            completion += last["eval_count"].as_u64().unwrap();
            answered += 2;
        }
    }
    // Clients that hang up mid-stream.
    for route in ["up", "never", MODEL] {
        hang_up_after_first_chunk(&app, "/v1/chat/completions", chat(route, true), &h).await;
    }
    state.ledger.as_ref().unwrap().close();
    // /metrics counts what the ledger books.
    let m = send(&app, Method::GET, "/metrics", Body::empty(), &h).await.text();
    assert!(m.contains("bantam_generation_requests_total{model=\"always\",served=\"upstream\",status=\"ok\"} 4"), "{m}");
    assert!(m.contains("bantam_escalations_total{model=\"always\",served=\"upstream\",status=\"ok\"} 4"), "{m}");
    assert!(m.contains("bantam_upstream_replica_up{upstream=\"big\""), "{m}");
    assert!(!m.contains(SECRET) && !m.contains("sk-upstream"));

    let all = server::ledger::summary(&path, "all", None).unwrap().pop().unwrap();
    // 2 refused by budget (the 401 never reached a handler), 1 local-only, the mix, 3 hang-ups.
    assert_eq!(all.requests, 2 + 1 + answered + 3, "{all:?}");
    assert_eq!((all.ok, all.cancelled, all.errors), (1 + answered, 3, 2), "{all:?}");
    let team = server::ledger::summary(&path, "key", None).unwrap().into_iter().find(|t| t.group == "team").unwrap();
    assert_eq!((team.ok, team.prompt_tokens, team.completion_tokens), (answered, prompt, completion), "the books: {team:?}");
    assert_eq!(team.escalated, 4, "the always-escalating route, four ways");
    assert!(team.cost > 0.0 && team.upstream_cost > team.cost && team.saved > 0.0, "{team:?}");
    let by_served = server::ledger::summary(&path, "served", None).unwrap();
    assert!(by_served.iter().any(|t| t.group == "upstream" && t.ok == 8), "{by_served:?}");

    let bytes = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    for secret in [SECRET, "sk-upstream-2222", "sk-broke-0000"] {
        assert!(!bytes.windows(secret.len()).chain(wal.windows(secret.len())).any(|w| w == secret.as_bytes()), "{secret} is in the ledger");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_structured_output_travel_upstream() {
    let up = upstream_server().await;
    let routes = three_routes();
    let routes = router(&format!("[upstreams.big]\nurl = \"{up}\"\nmodel = \"{MODEL}\"\n{routes}"));
    let app = app(AppState::new(config()).with_router(routes));
    let schema = json!({"type": "object", "properties": {"colour": {"type": "string", "enum": ["blue", "red"]}}, "required": ["colour"]});
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for route in ["up", "always"] {
        let r = post(
            &app,
            "/v1/chat/completions",
            json!({"model": route, "max_tokens": 30, "temperature": 0,
            "messages": [{"role": "user", "content": "What colour is the sky?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
        )
        .await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, "upstream"), "{}", r.text());
        let v: Value = serde_json::from_str(r.json()["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert!(v["colour"] == "blue" || v["colour"] == "red", "{v}");

        let r = post(
            &app,
            "/v1/chat/completions",
            json!({"model": route, "max_tokens": 40, "temperature": 0, "tools": tools, "tool_choice": "required",
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}),
        )
        .await;
        assert_eq!((r.status, served(&r)), (StatusCode::OK, "upstream"), "{}", r.text());
        let v = r.json();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
        let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "get_weather");
        assert!(serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap()["city"].is_string(), "{call}");
        // Ollama's shape, from the same upstream answer.
        let r = post(
            &app,
            "/api/chat",
            json!({"model": route, "stream": false, "tools": tools, "options": {"num_predict": 40, "temperature": 0},
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

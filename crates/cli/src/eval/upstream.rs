//! Upstream models in `bantam eval`: an OpenAI-compatible endpoint (another bantam, vLLM,
//! llama-server, a hosted API) scored on the same items through `/v1/chat/completions`
//! (`/v1/completions` for a raw code prompt), priced from its per-million-token prices.

use super::data::Kind;
use super::Answer;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::Instant;

/// `--upstream NAME=URL,model=…,key-env=…,price=IN/OUT`.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    /// The chat completions endpoint.
    pub url: String,
    pub model: String,
    /// The API key, read from the environment variable `key-env` names.
    pub key: Option<String>,
    /// $ per million prompt and completion tokens.
    pub price_in: f64,
    pub price_out: f64,
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Upstream> {
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let Some((name, url)) = head.split_once('=') else { bail!("--upstream {s:?}: expected NAME=URL,model=…,price=IN/OUT") };
        let base = url.trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") {
            base.to_string()
        } else if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let mut u = Upstream { name: name.to_string(), url, model: name.to_string(), key: None, price_in: 0.0, price_out: 0.0 };
        for p in parts {
            let (k, v) = p.split_once('=').with_context(|| format!("--upstream {name}: {p:?} is not key=value"))?;
            match k {
                "model" => u.model = v.to_string(),
                "key-env" => u.key = Some(std::env::var(v).with_context(|| format!("--upstream {name}: ${v} is not set"))?),
                "price" => {
                    let (i, o) = v.split_once('/').with_context(|| format!("--upstream {name}: price is IN/OUT in $ per million tokens"))?;
                    u.price_in = i.parse().with_context(|| format!("--upstream {name}: price {i:?} is not a number"))?;
                    u.price_out = o.parse().with_context(|| format!("--upstream {name}: price {o:?} is not a number"))?;
                }
                other => bail!("--upstream {name}: unknown key {other:?} (model, key-env, price)"),
            }
        }
        Ok(u)
    }

    /// What an answer with these token counts costs.
    pub fn cost(&self, prompt_tokens: usize, completion_tokens: usize) -> f64 {
        (prompt_tokens as f64 * self.price_in + completion_tokens as f64 * self.price_out) / 1e6
    }
}

/// Every request body (`messages`, or a raw `prompt` for the completions endpoint, with its
/// sampling fields) sent to the endpoint, `parallel` at a time. Classification answers are
/// matched to a label (case and surrounding punctuation ignored); an extraction asks for
/// JSON with the schema (`response_format` `json_schema`). A conversation that ends with an
/// assistant message asks the server to continue it, where the server can (llama-server
/// does; vLLM with `continue_final_message`).
pub fn answer_all(u: &Upstream, bodies: Vec<Value>, kind: Kind, labels: &[String], schema: Option<&Value>, parallel: usize) -> Vec<Answer> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let progress = std::sync::Mutex::new(super::Progress::new(&u.name, bodies.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let mut body = body.clone();
                body["model"] = json!(u.model);
                if let (Kind::Extract, Some(schema)) = (kind, schema) {
                    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "extraction", "schema": schema}});
                }
                let answer = ask(u, &body, kind, labels);
                results.lock().unwrap_or_else(|e| e.into_inner()).push((i, answer));
                progress.lock().unwrap_or_else(|e| e.into_inner()).tick();
            });
        }
    });
    let mut out = results.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, a)| a).collect()
}

/// One streamed chat completion (`stream_options.include_usage` for the token counts): the
/// time to the first content is its TTFT.
fn ask(u: &Upstream, body: &Value, kind: Kind, labels: &[String]) -> Answer {
    let started = Instant::now();
    let mut answer = Answer::new(String::new(), 0);
    let mut body = body.clone();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let raw = body.get("prompt").is_some();
    let url = if raw { u.url.replace("/chat/completions", "/completions") } else { u.url.clone() };
    let mut req = ureq::post(&url).header("content-type", "application/json");
    if let Some(k) = &u.key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut text = String::new();
    let mut first = None;
    let read = req.send(body.to_string()).map_err(|e| e.to_string()).and_then(|mut r| {
        use std::io::BufRead;
        for line in std::io::BufReader::new(r.body_mut().as_reader()).lines() {
            let line = line.map_err(|e| e.to_string())?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| format!("a stream event is not JSON: {e}"))?;
            if let Some(e) = v.get("error") {
                return Err(e.to_string());
            }
            let choice = &v["choices"][0];
            if let Some(piece) = choice["delta"]["content"].as_str().or(choice["text"].as_str()).filter(|p| !p.is_empty()) {
                first.get_or_insert_with(|| started.elapsed());
                text += piece;
            }
            if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
                answer.prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                answer.completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0) as usize;
            }
        }
        Ok(())
    });
    answer.latency = started.elapsed();
    answer.ttft = first.unwrap_or(answer.latency);
    if let Err(e) = read {
        answer.error = Some(format!("{url}: {e}"));
    }
    if kind == Kind::Code {
        answer.prediction = text;
        return answer;
    }
    let text = text.trim().to_string();
    answer.prediction = match kind {
        Kind::Classify => {
            let t = text.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace()).to_lowercase();
            labels.iter().find(|l| l.to_lowercase() == t).cloned().unwrap_or(text)
        }
        _ => text,
    };
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let u = Upstream::parse("api=https://example.com/v1,model=gpt-x,price=0.15/0.6").unwrap();
        assert_eq!((u.url.as_str(), u.model.as_str(), u.price_in, u.price_out), ("https://example.com/v1/chat/completions", "gpt-x", 0.15, 0.6));
        assert_eq!(Upstream::parse("b=http://127.0.0.1:8080").unwrap().url, "http://127.0.0.1:8080/v1/chat/completions");
        assert!((u.cost(1_000_000, 500_000) - 0.45).abs() < 1e-12);
        assert!(Upstream::parse("nourl").is_err());
        assert!(Upstream::parse("a=http://x,price=1").is_err());
        assert!(Upstream::parse("a=http://x,colour=red").is_err());
    }
}

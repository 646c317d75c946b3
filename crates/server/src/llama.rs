//! llama-server's extras: /tokenize, /detokenize, /health and /metrics.

use crate::error::{parse_json, ApiError, JsonBody, OpenAiError};
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
}

#[derive(Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    #[serde(default)]
    content: String,
    /// llama-server's default: no BOS.
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    model: Option<String>,
    #[serde(default)]
    tokens: Vec<u32>,
}

/// The model a request names, else the server's default, else the only one loaded.
fn model_name(state: &AppState, given: Option<String>) -> Result<String, ApiError> {
    if let Some(m) = given.filter(|m| !m.is_empty()).or_else(|| state.config.default_model.clone()) {
        return Ok(m);
    }
    let loaded = state.models.snapshot();
    match loaded.as_slice() {
        [(name, ..)] => Ok(name.clone()),
        _ => Err(ApiError::bad_request("model is required (no default model is set)").with_param("model")),
    }
}

async fn tokenize(State(state): State<AppState>, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: TokenizeRequest = parse_json(body)?;
    let lease = state.models.acquire(&model_name(&state, req.model)?, None).await?;
    let tok = &lease.handle.model.tokenizer;
    let ids = tok.encode(&req.content, req.add_special, true);
    let tokens: Vec<serde_json::Value> = if req.with_pieces {
        ids.iter()
            .map(|&id| {
                let bytes = tok.token_to_piece(id, true);
                match String::from_utf8(bytes) {
                    Ok(s) => json!({"id": id, "piece": s}),
                    Err(e) => json!({"id": id, "piece": e.into_bytes()}),
                }
            })
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

async fn detokenize(State(state): State<AppState>, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: DetokenizeRequest = parse_json(body)?;
    let lease = state.models.acquire(&model_name(&state, req.model)?, None).await?;
    let n_vocab = lease.handle.model.model.config.n_vocab;
    if let Some(&t) = req.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::bad_request(format!("token id {t} is outside the vocabulary ({n_vocab})")).with_param("tokens").into());
    }
    Ok(Json(json!({ "content": lease.handle.model.tokenizer.decode(&req.tokens, false) })).into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&state)).into_response()
}

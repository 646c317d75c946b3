//! Ollama's model-management routes: /api/pull (NDJSON status lines), /api/delete,
//! /api/copy, /api/create, and /api/blobs/:digest for the files a create refers to.
//! The store does the work on a blocking thread; these handlers translate.

use crate::error::{parse_json, ApiError, JsonBody, OllamaError};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, head, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use protocol::ollama as api;
use std::io::Write;
use store::{Digest, Modelfile, Progress, StoreError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/pull", post(pull))
        .route("/api/delete", delete(remove))
        .route("/api/copy", post(copy))
        .route("/api/create", post(create))
        .route("/api/blobs/{digest}", head(blob_exists).post(upload_blob))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Http { status: 404, .. } => StatusCode::NOT_FOUND,
            StoreError::InvalidName { .. }
            | StoreError::InvalidDigest(_)
            | StoreError::UnknownSource(_)
            | StoreError::Modelfile { .. }
            | StoreError::Unsupported(_)
            | StoreError::Quantize(_)
            | StoreError::NotGguf { .. }
            | StoreError::MissingAdapter { .. }
            | StoreError::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
            StoreError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// A status line as Ollama writes it: blob progress as `pulling <digest prefix>` with
/// `digest`, `total` and `completed`.
fn status_line(p: Progress) -> api::ProgressResponse {
    match p {
        Progress::Status(status) => api::ProgressResponse { status, ..Default::default() },
        Progress::Step { status, total, completed } => api::ProgressResponse { status, digest: None, total: Some(total), completed: Some(completed) },
        Progress::Bytes { part, digest, total, completed } => {
            let id = digest.map(|d| d.to_string()).unwrap_or(part);
            let short = id.strip_prefix("sha256:").map_or(id.as_str(), |h| &h[..12.min(h.len())]).to_string();
            api::ProgressResponse { status: format!("pulling {short}"), digest: Some(id), total: Some(total), completed: Some(completed) }
        }
    }
}

/// Run a store job on a blocking thread, streaming its progress as NDJSON (ending with
/// `{"error": …}` if it fails) or, with `stream: false`, answering once it is done.
async fn run_job<F>(stream: bool, job: F) -> Result<Response, OllamaError>
where
    F: FnOnce(&mut dyn FnMut(Progress)) -> Result<(), StoreError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let task = tokio::task::spawn_blocking(move || job(&mut |p| drop(tx.send(p))));
    if !stream {
        task.await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        return Ok(Json(api::ProgressResponse { status: "success".into(), ..Default::default() }).into_response());
    }
    let progress = tokio_stream_of(rx).map(|p| serde_json::to_string(&status_line(p)).unwrap_or_default());
    let end = futures_util::stream::once(async move {
        match task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(serde_json::json!({ "error": e.to_string() }).to_string()),
            Err(e) => Some(serde_json::json!({ "error": e.to_string() }).to_string()),
        }
    })
    .filter_map(|l| async move { l });
    let body = Body::from_stream(progress.chain(end).map(|mut l| {
        l.push('\n');
        Ok::<_, std::convert::Infallible>(l)
    }));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn tokio_stream_of<T: Send + 'static>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn model_field(model: String, name: String) -> Result<String, ApiError> {
    let m = if model.is_empty() { name } else { model };
    if m.is_empty() {
        return Err(ApiError::bad_request("model is required").with_param("model"));
    }
    Ok(m)
}

async fn pull(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::PullRequest = parse_json(body)?;
    let model = model_field(req.model, req.name)?;
    // Parse before streaming, so a bad or unknown name is a plain 400/404.
    let store = state.store.clone();
    store::Source::parse(&model, &store)?;
    run_job(req.stream != Some(false), move |progress| store::pull(&store, &model, &store::PullOptions::default(), progress).map(drop)).await
}

async fn remove(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::DeleteRequest = parse_json(body)?;
    let model = model_field(req.model, req.name)?;
    let store = state.store.clone();
    let name =
        tokio::task::spawn_blocking(move || store.remove(&model)).await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    state.models.unload(&name.to_string());
    Ok(StatusCode::OK.into_response())
}

async fn copy(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::CopyRequest = parse_json(body)?;
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.copy(&req.source, &req.destination))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(StatusCode::OK.into_response())
}

async fn create(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::CreateRequest = parse_json(body)?;
    let model = model_field(req.model, req.name)?;
    store::ModelName::parse(&model)?;
    let quantize = req.quantize.filter(|q| !q.is_empty());
    if let Some(q) = &quantize {
        quant::FileType::parse_or_explain(q).map_err(|e| ApiError::bad_request(e).with_param("quantize"))?;
    }
    let store = state.store.clone();
    let mut mf = match &req.modelfile {
        Some(text) if !text.trim().is_empty() => Modelfile::parse(text)?,
        _ => Modelfile::default(),
    };
    if let Some(from) = req.from.filter(|f| !f.is_empty()) {
        mf.from = Some(from);
    }
    if let Some(files) = &req.files {
        // The one GGUF file the client uploaded to /api/blobs.
        let (file, digest) = files
            .iter()
            .find(|(f, _)| f.ends_with(".gguf"))
            .or(files.iter().next())
            .ok_or_else(|| ApiError::bad_request("files is empty").with_param("files"))?;
        let digest = Digest::parse(digest)?;
        let path = store.blob_path(&digest);
        if !path.is_file() {
            return Err(ApiError::bad_request(format!("blob {digest} for {file} has not been uploaded (POST /api/blobs/{digest})")).into());
        }
        mf.from = Some(path.display().to_string());
    }
    // LoRA adapters the client uploaded to /api/blobs: {"file name": "sha256:…"}.
    for (file, digest) in req.adapters.iter().flatten() {
        let digest = Digest::parse(digest)?;
        let path = store.blob_path(&digest);
        if !path.is_file() {
            return Err(ApiError::bad_request(format!("blob {digest} for adapter {file} has not been uploaded (POST /api/blobs/{digest})"))
                .with_param("adapters")
                .into());
        }
        mf.adapters.push(path.display().to_string());
    }
    if let Some(t) = req.template {
        mf.template = Some(t);
    }
    if let Some(s) = req.system {
        mf.system = Some(s);
    }
    if let Some(p) = &req.parameters {
        mf.set_params_json(p).map_err(|e| ApiError::bad_request(e).with_param("parameters"))?;
    }
    if let Some(ms) = req.messages {
        mf.messages = ms.into_iter().map(|m| store::modelfile::Message { role: m.role, content: m.content }).collect();
    }
    if let Some(l) = req.license {
        mf.license = l.into_vec();
    }
    if mf.from.is_none() {
        return Err(ApiError::bad_request("neither 'from' nor 'files' was specified").into());
    }
    run_job(req.stream != Some(false), move |progress| {
        let root = store.root().to_path_buf();
        let run = |src: &std::path::Path, dst: &std::path::Path, progress: &mut dyn FnMut(u64, u64)| {
            quant::quantize_for_create(src, dst, quantize.as_deref().unwrap_or_default(), progress)
        };
        let q = quantize.as_deref().map(|type_name| store::Quantize { type_name, run: &run });
        store.create_quantized(&model, &mf, store::FromPaths::Within(&root), q, progress).map(drop)
    })
    .await
}

async fn blob_exists(State(state): State<AppState>, Path(digest): Path<String>) -> Result<Response, OllamaError> {
    let digest = Digest::parse(&digest)?;
    let found = state.store.blob_path(&digest).is_file();
    Ok(if found { StatusCode::OK } else { StatusCode::NOT_FOUND }.into_response())
}

/// Receive a blob, verify it hashes to its name, and only then put it in the store.
async fn upload_blob(State(state): State<AppState>, Path(digest): Path<String>, body: Body) -> Result<Response, OllamaError> {
    let digest = Digest::parse(&digest)?;
    let store = state.store.clone();
    let dest = store.blob_path(&digest);
    if dest.is_file() {
        return Ok(StatusCode::OK.into_response());
    }
    store.ensure_dir(&store.blobs_dir())?;
    let tmp = store.blobs_dir().join(format!("upload-{}-{}-partial", digest.hex(), std::process::id()));
    let result = async {
        let mut file = store::create_file(&tmp)?;
        let mut hasher = store::Sha256Stream::default();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StoreError::Network { url: "upload".into(), detail: e.to_string() })?;
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(|e| StoreError::io(&tmp, e))?;
        }
        let got = hasher.finish();
        if got != digest {
            return Err(StoreError::DigestMismatch { what: "the uploaded blob".into(), expected: digest.to_string(), got: got.to_string() });
        }
        file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ApiError::from(e).into());
    }
    Ok(StatusCode::CREATED.into_response())
}

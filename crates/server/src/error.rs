//! One error type for every route, rendered in the shape of the API that was called:
//! Ollama's `{"error": "..."}` or OpenAI's `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::{EngineError, SubmitError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's machine-readable `code` (e.g. `model_not_found`).
    pub code: Option<&'static str>,
    pub param: Option<std::borrow::Cow<'static, str>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), code: None, param: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message).with_code("model_not_found")
    }
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    pub fn with_param(mut self, param: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 | 400 | 413 | 422 => "invalid_request_error",
            503 => "server_busy",
            _ => "server_error",
        }
    }

    fn finish(&self, mut r: Response) -> Response {
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }

    pub fn ollama(self) -> Response {
        let body = protocol::ollama::ErrorResponse { error: self.message.clone() };
        self.finish((self.status, axum::Json(body)).into_response())
    }

    pub fn openai(self) -> Response {
        let body = protocol::openai::ErrorResponse {
            error: protocol::openai::ErrorBody {
                message: self.message.clone(),
                kind: self.openai_type().to_string(),
                param: self.param.as_deref().map(str::to_string),
                code: self.code.map(str::to_string),
            },
        };
        self.finish((self.status, axum::Json(body)).into_response())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::PromptTooLong { .. } => ApiError::bad_request(e.to_string()).with_code("context_length_exceeded"),
            EngineError::Sampler(engine::sampler::SamplerError::InvalidParam { field, .. }) => ApiError::bad_request(e.to_string()).with_param(*field),
            EngineError::BadRequest(_) | EngineError::Template(_) => ApiError::bad_request(e.to_string()),
            EngineError::Tokenizer(_) => ApiError::bad_request(e.to_string()),
            EngineError::Grammar(_) => ApiError::bad_request(e.to_string()).with_code("invalid_grammar"),
            EngineError::Cancelled | EngineError::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            EngineError::Model(_) | EngineError::Gguf(_) | EngineError::Adapter(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(e) => e.into(),
            e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).with_code("server_busy"),
        }
    }
}

/// An error answered in Ollama's shape.
pub struct OllamaError(pub ApiError);
/// An error answered in OpenAI's shape.
pub struct OpenAiError(pub ApiError);

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        self.0.ollama()
    }
}
impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.openai()
    }
}
impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(e: E) -> Self {
        OllamaError(e.into())
    }
}
impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        OpenAiError(e.into())
    }
}

/// A request body as routes take it: the bytes, or why they could not be read (too large).
pub type JsonBody = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// Parse a JSON body into `T`: a body over the size limit is 413, anything else that is
/// not the expected JSON is 400 naming what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: JsonBody) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes)).map_err(|e| {
        // A value of the wrong shape inside a field names it: the message says where,
        // `param` which field. Broken JSON is the body's fault, wherever it broke.
        let field = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) if e.inner().is_data() => Some(key.clone()),
            _ => None,
        };
        let inner = e.inner().to_string();
        match field {
            Some(f) if inner.starts_with("invalid ") => ApiError::bad_request(inner).with_param(f),
            Some(f) => ApiError::bad_request(format!("invalid {}: {inner}", e.path())).with_param(f),
            None => ApiError::bad_request(format!("invalid request body: {inner}")),
        }
    })
}

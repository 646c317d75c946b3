/// Why an engine request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    ModelNotFound(String),
    #[error(transparent)]
    Store(store::StoreError),
    #[error("invalid grammar: {0}")]
    Grammar(String),
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the prompt has {n_prompt} tokens but the context holds {n_ctx}")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
}

impl From<store::StoreError> for EngineError {
    fn from(e: store::StoreError) -> EngineError {
        match e {
            store::StoreError::NotFound { .. } | store::StoreError::InvalidName { .. } => EngineError::ModelNotFound(e.to_string()),
            e => EngineError::Store(e),
        }
    }
}

/// Why an engine request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(transparent)]
    Adapter(#[from] model::LoraError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid grammar: {0}")]
    Grammar(String),
    #[error("the request was cancelled")]
    Cancelled,
    /// No model could answer (a route's upstream and its local fallback both failed).
    #[error("{0}")]
    Unavailable(String),
    #[error("the prompt has {n_prompt} tokens but the context holds {n_ctx}")]
    PromptTooLong { n_prompt: usize, n_ctx: usize },
}

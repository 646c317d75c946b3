//! The engine: a loaded model with its tokenizer and chat template, generation with
//! sampling and stop rules, and perplexity. Wire formats live elsewhere; the engine speaks
//! in tokens, text and domain events.

mod error;
pub mod generate;
pub mod loaded;
pub mod perplexity;
pub mod sampler;
pub mod stop;
pub mod template;

pub use error::EngineError;
pub use generate::{FinishReason, GenerateParams, GenerateStats, Sequence};
pub use loaded::{resolve_model, LoadedModel};

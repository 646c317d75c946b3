//! The engine: a loaded model with its tokenizer and chat template, generation with
//! sampling and stop rules, and perplexity. Wire formats live elsewhere; the engine speaks
//! in tokens, text and domain events.

pub mod constraint;
mod error;
pub mod generate;
pub mod loaded;
pub mod perplexity;
pub mod request;
pub mod sampler;
pub mod scheduler;
pub mod stop;
pub mod template;
pub mod tools;
pub mod worker;

pub use constraint::{Constraint, Grammar};
pub use error::EngineError;
pub use generate::{FinishReason, GenerateParams, GenerateStats, Sequence};
pub use loaded::{canonical_name, resolve_model, resolve_served_model, LoadedModel};
pub use request::{Event, Request, SubmitError, Usage};
pub use worker::{EngineHandle, EngineOptions, EngineStats};

//! The engine: a loaded model with its tokenizer and chat template, generation with
//! sampling and stop rules, and perplexity. Wire formats live elsewhere; the engine speaks
//! in tokens, text and domain events.

pub mod constraint;
mod error;
pub mod generate;
pub mod loaded;
pub mod options;
pub mod perplexity;
pub mod request;
pub mod sampler;
pub mod scheduler;
pub mod stop;
pub mod template;
pub mod thinking;
pub mod tools;
pub mod worker;

pub use constraint::{Constraint, Grammar};
pub use error::EngineError;
pub use generate::{FinishReason, GenerateParams};
pub use loaded::LoadedModel;
pub use options::{Defaults, Options};
pub use request::{Confidence, Event, Request, SubmitError, Usage};
pub use worker::{Canceller, EngineHandle, EngineOptions, EngineStats, SharedPool};

//! Arbitrary bytes as the JSON body of every request the server accepts: each request type
//! of `protocol` (Ollama's `/api/*`, OpenAI's `/v1/*`) and the types they nest must give a
//! value or an error, never a panic. What parses is serialized back where the type can be
//! (the server echoes messages and options).
//!
//! Run: `cargo fuzz run request_parse` (see `fuzz/README.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{ollama, openai, OneOrMany};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn parse<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    serde_json::from_slice::<T>(data).ok()
}

fn round_trip<T: DeserializeOwned + Serialize>(data: &[u8]) {
    if let Some(v) = parse::<T>(data) {
        let text = serde_json::to_string(&v).expect("a parsed value serializes");
        // What we write we can read back.
        serde_json::from_str::<T>(&text).expect("a serialized value parses");
    }
}

fuzz_target!(|data: &[u8]| {
    // Ollama
    let _ = parse::<ollama::GenerateRequest>(data);
    let _ = parse::<ollama::ChatRequest>(data);
    let _ = parse::<ollama::EmbedRequest>(data);
    let _ = parse::<ollama::EmbeddingsRequest>(data);
    let _ = parse::<ollama::ShowRequest>(data);
    let _ = parse::<ollama::PullRequest>(data);
    let _ = parse::<ollama::DeleteRequest>(data);
    let _ = parse::<ollama::CopyRequest>(data);
    let _ = parse::<ollama::CreateRequest>(data);
    round_trip::<ollama::Options>(data);
    round_trip::<ollama::Message>(data);
    round_trip::<Vec<ollama::Message>>(data);
    if let Some(v) = parse::<OneOrMany<String>>(data) {
        let _ = v.into_vec();
    }

    // OpenAI
    let _ = parse::<openai::ChatCompletionRequest>(data);
    let _ = parse::<openai::CompletionRequest>(data);
    let _ = parse::<openai::EmbeddingRequest>(data);
    let _ = parse::<openai::ChatMessage>(data);
    let _ = parse::<openai::Sampling>(data);
    let _ = parse::<openai::StreamOptions>(data);
    let _ = parse::<openai::Prompt>(data);
    let _ = parse::<openai::EmbeddingInput>(data);
    round_trip::<openai::Content>(data);
    round_trip::<openai::ContentPart>(data);
});

/// Why a vocabulary could not be loaded from GGUF metadata. Encoding and decoding never
/// fail: every text has a tokenization and every id a (possibly empty) piece.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("metadata key {key} is missing")]
    MissingKey { key: String },
    #[error("metadata key {key} is invalid: {problem}")]
    InvalidMetadata { key: String, problem: String },
    #[error("unsupported tokenizer model {0:?} (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece)")]
    UnsupportedModel(String),
    #[error("unknown pre-tokenizer {name:?} (llama.cpp refuses it too); supported: {known}")]
    UnknownPreTokenizer { name: String, known: String },
    #[error("duplicate token {text:?} at ids {first} and {second}")]
    DuplicateToken { text: String, first: u32, second: u32 },
    #[error("pre-tokenizer pattern {pattern:?} does not compile: {message}")]
    Regex { pattern: String, message: String },
    #[error("{flag} is true, but {id_key} is not set")]
    MissingSpecialToken { flag: &'static str, id_key: &'static str },
}

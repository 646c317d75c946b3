use std::path::{Path, PathBuf};

/// Why a GGUF file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a usable GGUF file: {problem}")]
    Format { path: PathBuf, problem: String },
    #[error("{path}: metadata key {key} is missing")]
    MissingKey { path: PathBuf, key: String },
}

impl GgufError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        GgufError::Io { path: path.to_path_buf(), source }
    }
}

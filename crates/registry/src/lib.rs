//! Between the store and the engine: a model's name (or a path to a GGUF file) becomes the
//! file and the [`engine::Defaults`] its Modelfile gives, and then a loaded model. The engine
//! knows nothing of names or of where files live; the store knows nothing of engines.
//!
//! ```text
//! cli, server ──► registry ──► store      (names, manifests, blobs)
//!                     └──────► engine     (LoadedModel::load(name, path, Defaults))
//! ```

use engine::template::ChatMessage;
use engine::{Defaults, EngineError, LoadedModel, Options};
use std::path::{Path, PathBuf};
use store::{looks_like_path, Store, StoreError};

/// Why a model could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such model (a name the store lacks, a path that is no file or lies outside the
    /// models directory for a server).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> RegistryError {
        match e {
            StoreError::NotFound { .. } | StoreError::InvalidName { .. } => RegistryError::NotFound(e.to_string()),
            e => RegistryError::Store(e),
        }
    }
}

/// A model found: its file, its defaults and, for a store name, the store's record.
#[derive(Debug, Clone)]
pub struct Found {
    /// The name it is known by once loaded (`smollm2` → `smollm2:135m`; a path as given).
    pub name: String,
    pub path: PathBuf,
    pub defaults: Defaults,
    pub record: Option<store::Resolved>,
}

impl Found {
    /// Load the model (weights mapped, tokenizer and template built).
    pub fn load(self) -> Result<LoadedModel, RegistryError> {
        Ok(LoadedModel::load(&self.name, self.path, self.defaults)?)
    }
}

/// The engine's view of a Modelfile.
pub fn defaults(r: &store::Resolved) -> Defaults {
    Defaults {
        options: Options::from_parameters(&r.params),
        system: r.system.clone(),
        messages: r.messages.iter().map(|m| ChatMessage::new(m.role.as_str(), m.content.as_str())).collect(),
        template: r.template.clone(),
        adapters: r.adapters.iter().map(|p| (p.clone(), 1.0)).collect(),
    }
}

/// Find a model: a path to an existing file, or a name in `store` (`smollm2`,
/// `smollm2:latest` and `smollm2:135m` all mean the catalog model).
pub fn find(store: &Store, name: &str) -> Result<Found, RegistryError> {
    if looks_like_path(name) {
        let path = Path::new(name);
        if !path.is_file() {
            return Err(RegistryError::NotFound(format!("model file {name} does not exist")));
        }
        return Ok(Found { name: name.to_string(), path: path.to_path_buf(), defaults: Defaults::default(), record: None });
    }
    let r = store.resolve(name)?;
    Ok(Found { name: r.name.to_string(), path: r.model.clone(), defaults: defaults(&r), record: Some(r) })
}

/// [`find`] as a server does it: a path must lie inside the store's directory (after
/// resolving `..` and links), so a request cannot make the server open arbitrary files.
pub fn find_served(store: &Store, name: &str) -> Result<Found, RegistryError> {
    if !looks_like_path(name) {
        return find(store, name);
    }
    let not_found = || RegistryError::NotFound(format!("model '{name}' not found"));
    let dir = store.root().canonicalize().map_err(|_| not_found())?;
    let path = Path::new(name);
    let full = if path.is_absolute() { path.to_path_buf() } else { dir.join(path) };
    match full.canonicalize() {
        Ok(p) if p.starts_with(&dir) && p.is_file() => Ok(Found { name: name.to_string(), path: p, defaults: Defaults::default(), record: None }),
        _ => Err(not_found()),
    }
}

/// Find and load a model.
pub fn load(store: &Store, name: &str) -> Result<LoadedModel, RegistryError> {
    find(store, name)?.load()
}

/// The name a model is known by once loaded: its name in the store with the tag, the
/// catalog's name for an alias, or the name as given.
pub fn canonical_name(store: &Store, name: &str) -> String {
    if looks_like_path(name) {
        return name.to_string();
    }
    match store.locate(name) {
        Some(n) => n.to_string(),
        None => match store::catalog::lookup(name) {
            Some(e) => e.name.to_string(),
            None => store::ModelName::parse(name).map_or_else(|_| name.to_string(), |n| n.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_path_stays_inside_the_store() {
        let dir = std::env::temp_dir().join(format!("bantam-registry-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("inside")).unwrap();
        std::fs::write(dir.join("inside/m.gguf"), b"GGUF").unwrap();
        let outside = std::env::temp_dir().join(format!("bantam-registry-outside-{}.gguf", std::process::id()));
        std::fs::write(&outside, b"GGUF").unwrap();
        let store = Store::new(dir.join("inside"));
        assert!(find_served(&store, "m.gguf").is_ok());
        assert!(matches!(find_served(&store, "../../x.gguf"), Err(RegistryError::NotFound(_))));
        assert!(matches!(find_served(&store, outside.to_str().unwrap()), Err(RegistryError::NotFound(_))));
        // A command-line client may name any file.
        assert!(find(&store, outside.to_str().unwrap()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&outside);
    }
}

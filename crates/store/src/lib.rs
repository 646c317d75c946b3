//! The model store: content-addressed blobs plus one manifest per `name:tag`, in the layout
//! of Ollama's (`blobs/sha256-<hex>`, `manifests/<namespace>/<model>/<tag>`).
//!
//! ```text
//! $BANTAM_MODELS (default ~/.bantam/models)
//!   blobs/sha256-<hex>            a model file, template, system prompt, parameters, …
//!   blobs/sha256-<hex>-partial    a download in progress (resumed by the next pull)
//!   manifests/library/smollm2/135m
//!   manifests/hf.co/org/repo/Q4_K_M
//!   locks/                        one lock file per blob a pull is fetching or has not yet
//!                                 named in a manifest (removed when the pull lets go)
//!   pypi/                         wheels of a pull from the package index, until it ends
//! ```
//!
//! Invariants: a blob's file name is the sha256 of its content (it is renamed into place
//! only after it verified); a manifest is written (atomically) only after every blob it
//! names is in place; names and digests are validated before they touch the file system.

pub mod catalog;
mod create;
mod error;
pub mod manifest;
pub mod modelfile;
mod name;
pub mod pull;
mod wheel;

pub use catalog::{CatalogEntry, CATALOG};
pub use create::{FromPaths, Quantize};
pub use error::StoreError;
pub use manifest::{Layer, Manifest};
pub use modelfile::Modelfile;
pub use name::{Digest, ModelName, DEFAULT_TAG};
pub use pull::{pull, Progress, PullOptions, Source};

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The store directory: `$BANTAM_MODELS`, or `~/.bantam/models`.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BANTAM_MODELS") {
        return d.into();
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".bantam").join("models")
}

/// The GGUF file of a model of the default store, by name (`smollm2:135m`) or by the file
/// stem tests use (`smollm2-135m`).
pub fn model_file(name: &str) -> Result<PathBuf, StoreError> {
    let name = match name.rsplit_once('-') {
        Some((family, size)) if !name.contains(':') && catalog::lookup(&format!("{family}:{size}")).is_some() => format!("{family}:{size}"),
        _ => name.to_string(),
    };
    Ok(Store::open_default().resolve(&name)?.model)
}

/// Whether a model reference is a file path rather than a store name: it ends in `.gguf`,
/// starts with `.`, `/` or `~`, or has a separator but is no valid name.
pub fn looks_like_path(name: &str) -> bool {
    name.ends_with(".gguf") || name.starts_with(['.', '/', '~']) || (name.contains(['/', std::path::MAIN_SEPARATOR]) && ModelName::parse(name).is_err())
}

/// A store rooted at one directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A model of the store, resolved: its manifest and the contents of its small layers.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: ModelName,
    pub manifest: Manifest,
    /// sha256 of the manifest file: the model's ID (`ollama list` shows its first 12 digits).
    pub id: Digest,
    /// The GGUF file.
    pub model: PathBuf,
    pub model_digest: Digest,
    /// LoRA adapter files (GGUF), in the order they apply.
    pub adapters: Vec<PathBuf>,
    pub config: manifest::Config,
    pub template: Option<String>,
    pub system: Option<String>,
    /// PARAMETER lines as a JSON object (a repeated parameter, like `stop`, is an array).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// MESSAGE lines: `[{"role": …, "content": …}]`.
    pub messages: Vec<modelfile::Message>,
    pub license: Vec<String>,
    pub modified: SystemTime,
}

/// One row of `bantam list`.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: ModelName,
    pub id: Digest,
    pub size: u64,
    pub modified: SystemTime,
    pub model_digest: Option<Digest>,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn open_default() -> Store {
        Store::new(default_root())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.file_name())
    }

    fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    fn manifest_path(&self, name: &ModelName) -> PathBuf {
        self.manifests_dir().join(name.manifest_path())
    }

    /// The manifest of `name` and its digest, if the store has it.
    pub fn manifest(&self, name: &ModelName) -> Result<Option<(Manifest, Digest, SystemTime)>, StoreError> {
        let path = self.manifest_path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let modified = fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadManifest { name: name.to_string(), why: e.to_string() })?;
        Ok(Some((manifest, Digest::of_bytes(&bytes), modified)))
    }

    /// The name a user's name refers to in this store: the name itself when the store has
    /// it, else the catalog name it is an alias of (`smollm2` → `smollm2:135m`).
    pub fn find(&self, name: &str) -> Result<ModelName, StoreError> {
        ModelName::parse(name)?;
        self.locate(name).ok_or_else(|| self.not_found(name))
    }

    /// [`Store::find`] without the suggestions an error carries (no directory walk).
    pub fn locate(&self, name: &str) -> Option<ModelName> {
        let parsed = ModelName::parse(name).ok()?;
        if self.manifest_path(&parsed).is_file() {
            return Some(parsed);
        }
        let canonical = ModelName::parse(catalog::lookup(name)?.name).ok()?;
        self.manifest_path(&canonical).is_file().then_some(canonical)
    }

    /// "not found", with the names in the store and in the catalog that look like it.
    pub fn not_found(&self, name: &str) -> StoreError {
        let mut suggestions = catalog::close_matches(name);
        if let Ok(listed) = self.list() {
            let lower = name.to_ascii_lowercase();
            for l in listed {
                let n = l.name.to_string();
                if name::edit_distance(&lower, &n.to_ascii_lowercase()) <= 3 && !suggestions.contains(&n) {
                    suggestions.push(n);
                }
            }
        }
        StoreError::NotFound { name: name.to_string(), suggestions }
    }

    /// Resolve a name to its model file and settings. The model blob's size is checked
    /// (a truncated blob is refused); its content was verified when it was stored.
    pub fn resolve(&self, name: &str) -> Result<Resolved, StoreError> {
        let name = self.find(name)?;
        let (manifest, id, modified) = self.manifest(&name)?.ok_or_else(|| self.not_found(&name.to_string()))?;
        let bad = |why: String| StoreError::BadManifest { name: name.to_string(), why };
        let layer = manifest.layer(manifest::MEDIA_MODEL).ok_or_else(|| bad("it has no model layer".into()))?;
        let model = self.blob_path(&layer.digest);
        match fs::metadata(&model) {
            Ok(m) if m.len() == layer.size => {}
            Ok(m) => return Err(bad(format!("blob {} has {} bytes, the manifest says {}", layer.digest, m.len(), layer.size))),
            Err(_) => return Err(bad(format!("blob {} is missing", layer.digest))),
        }
        let text = |media: &str| -> Result<Option<String>, StoreError> {
            match manifest.layer(media) {
                Some(l) => Ok(Some(self.read_small_blob(&l.digest)?)),
                None => Ok(None),
            }
        };
        let config = self.config(&manifest);
        let params = match text(manifest::MEDIA_PARAMS)? {
            Some(s) => serde_json::from_str(&s).map_err(|e| bad(format!("parameters: {e}")))?,
            None => Default::default(),
        };
        let messages = match text(manifest::MEDIA_MESSAGES)? {
            Some(s) => serde_json::from_str(&s).map_err(|e| bad(format!("messages: {e}")))?,
            None => Vec::new(),
        };
        let license =
            manifest.layers.iter().filter(|l| l.media_type == manifest::MEDIA_LICENSE).map(|l| self.read_small_blob(&l.digest)).collect::<Result<_, _>>()?;
        let mut adapters = Vec::new();
        for l in manifest.layers.iter().filter(|l| l.media_type == manifest::MEDIA_ADAPTER) {
            let p = self.blob_path(&l.digest);
            if !p.is_file() {
                return Err(bad(format!("adapter blob {} is missing", l.digest)));
            }
            adapters.push(p);
        }
        Ok(Resolved {
            adapters,
            template: text(manifest::MEDIA_TEMPLATE)?,
            system: text(manifest::MEDIA_SYSTEM)?,
            model_digest: layer.digest.clone(),
            model,
            name,
            id,
            config,
            params,
            messages,
            license,
            modified,
            manifest,
        })
    }

    /// A manifest's config blob (empty when unreadable: it only records the source).
    pub fn config(&self, m: &Manifest) -> manifest::Config {
        fs::read(self.blob_path(&m.config.digest)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn read_small_blob(&self, d: &Digest) -> Result<String, StoreError> {
        let path = self.blob_path(d);
        let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        if Digest::of_bytes(&bytes) != *d {
            return Err(StoreError::DigestMismatch { what: path.display().to_string(), expected: d.to_string(), got: Digest::of_bytes(&bytes).to_string() });
        }
        String::from_utf8(bytes).map_err(|_| StoreError::BadManifest { name: d.to_string(), why: "a text layer is not UTF-8".into() })
    }

    /// Every model in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        let dir = self.manifests_dir();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&d, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    let Some(name) = path.strip_prefix(&dir).ok().and_then(ModelName::from_manifest_path) else { continue };
                    if let Ok(Some((m, id, modified))) = self.manifest(&name) {
                        let model_digest = m.layer(manifest::MEDIA_MODEL).map(|l| l.digest.clone());
                        out.push(Listed { name, id, size: m.size(), modified, model_digest });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Store `bytes` as a blob (for small layers: templates, parameters, …).
    pub fn put_bytes(&self, media_type: &str, bytes: &[u8]) -> Result<Layer, StoreError> {
        let digest = Digest::of_bytes(bytes);
        let path = self.blob_path(&digest);
        if !path.is_file() || fs::read(&path).map(|b| b != bytes).unwrap_or(true) {
            self.write_atomic(&path, bytes)?;
        }
        Ok(Layer { media_type: media_type.to_string(), digest, size: bytes.len() as u64 })
    }

    /// Copy a local file into the store (hashing it on the way) and return its layer.
    pub fn import_file(&self, path: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Layer, StoreError> {
        let mut src = fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        let total = src.metadata().map_err(|e| StoreError::io(path, e))?.len();
        self.ensure_dir(&self.blobs_dir())?;
        let tmp = self.blobs_dir().join(format!("import-{}-partial", std::process::id()));
        let result = (|| {
            let mut out = create_file(&tmp)?;
            let mut hasher = Sha256Stream::default();
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0u64;
            let label = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            loop {
                let n = src.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
                if n == 0 {
                    break;
                }
                if done == 0 && !buf[..n.min(4)].starts_with(b"GGUF") {
                    return Err(StoreError::NotGguf { what: path.display().to_string() });
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| StoreError::io(&tmp, e))?;
                done += n as u64;
                progress(Progress::Bytes { part: label.clone(), digest: None, total, completed: done });
            }
            out.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
            let digest = hasher.finish();
            let dest = self.blob_path(&digest);
            fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
            Ok(Layer { media_type: manifest::MEDIA_MODEL.to_string(), digest, size: done })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Move a file already under the blobs directory into the store under its digest.
    pub fn adopt_blob(&self, path: &Path, media_type: &str) -> Result<Layer, StoreError> {
        let (digest, size) = hash_file(path)?;
        let dest = self.blob_path(&digest);
        fs::rename(path, &dest).map_err(|e| StoreError::io(&dest, e))?;
        Ok(Layer { media_type: media_type.to_string(), digest, size })
    }

    /// Write `name`'s manifest; every blob it names must already be in the store.
    pub fn write_manifest(&self, name: &ModelName, m: &Manifest) -> Result<Digest, StoreError> {
        for l in m.blobs() {
            if !self.blob_path(&l.digest).is_file() {
                return Err(StoreError::BadManifest { name: name.to_string(), why: format!("blob {} is not in the store", l.digest) });
            }
        }
        let bytes = serde_json::to_vec(m).expect("a manifest serialises");
        self.write_atomic(&self.manifest_path(name), &bytes)?;
        Ok(Digest::of_bytes(&bytes))
    }

    /// Remove a model's manifest, then every blob no other manifest uses.
    pub fn remove(&self, name: &str) -> Result<ModelName, StoreError> {
        let name = self.find(name)?;
        let path = self.manifest_path(&name);
        fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        // Empty directories left behind (manifests/library/smollm2) go too.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.manifests_dir() || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        self.collect_garbage()?;
        Ok(name)
    }

    /// Delete blobs that no manifest refers to (not partial downloads), and lock files
    /// nobody holds.
    ///
    /// A pull holds the lock of a blob (`locks/sha256-<hex>.lock`) from before it fetches
    /// it until the manifest naming it is written, so a blob whose lock is held is skipped.
    /// The others are locked before they are deleted, and the manifests are read again
    /// with the locks held: a pull may have written its manifest and let go of the lock
    /// between the first reading and the locking.
    pub fn collect_garbage(&self) -> Result<(), StoreError> {
        let used = self.used_blobs()?;
        let Ok(entries) = fs::read_dir(self.blobs_dir()) else { return Ok(()) };
        let unused: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| Digest::parse(name).is_ok() && !used.contains(name))
            .collect();
        // In batches, so that a store full of garbage does not run out of file descriptors.
        for batch in unused.chunks(256) {
            let mut locked = Vec::new();
            for name in batch {
                locked.extend(self.try_lock_key(name)?);
            }
            if locked.is_empty() {
                continue;
            }
            let used = self.used_blobs()?;
            for lock in locked {
                if !used.contains(lock.key()) {
                    let _ = fs::remove_file(self.blobs_dir().join(lock.key()));
                }
            }
        }
        // Lock files a killed pull left: taking one that nobody holds and letting it go
        // removes it.
        if let Ok(entries) = fs::read_dir(self.locks_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(key) = name.strip_suffix(".lock") {
                    let _ = self.try_lock_key(key);
                }
            }
        }
        Ok(())
    }

    /// File names of the blobs some manifest refers to.
    fn used_blobs(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut used = std::collections::HashSet::new();
        for l in self.list()? {
            if let Some((m, _, _)) = self.manifest(&l.name)? {
                used.extend(m.blobs().map(|b| b.digest.file_name()));
            }
        }
        Ok(used)
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Take the lock of `key` (a blob's file name, or a download's key), waiting while
    /// another pull holds it.
    pub(crate) fn lock_key(&self, key: &str) -> Result<KeyLock, StoreError> {
        Ok(self.acquire(key, true)?.expect("a waiting lock is always taken"))
    }

    /// Take the lock of `key` if nobody holds it.
    pub(crate) fn try_lock_key(&self, key: &str) -> Result<Option<KeyLock>, StoreError> {
        self.acquire(key, false)
    }

    fn acquire(&self, key: &str, wait: bool) -> Result<Option<KeyLock>, StoreError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let dir = self.locks_dir();
        self.ensure_dir(&dir)?;
        let path = dir.join(format!("{key}.lock"));
        loop {
            let file = fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o644).open(&path).map_err(|e| StoreError::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) if wait => file.lock().map_err(|e| StoreError::io(&path, e))?,
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
            }
            // The holder before us removes the file as it lets go: a lock on a file no
            // longer in the directory excludes nobody, so open the path again.
            let ours = file.metadata().map_err(|e| StoreError::io(&path, e))?;
            match fs::metadata(&path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => return Ok(Some(KeyLock { key: key.to_string(), path, _file: file })),
                _ => continue,
            }
        }
    }

    /// Give a model a second name; the blobs are shared, so this costs one small file.
    pub fn copy(&self, src: &str, dst: &str) -> Result<ModelName, StoreError> {
        let dst = ModelName::parse(dst)?;
        let src = self.find(src)?;
        let (m, _, _) = self.manifest(&src)?.ok_or_else(|| self.not_found(&src.to_string()))?;
        self.write_manifest(&dst, &m)?;
        Ok(dst)
    }

    /// Hash a blob and compare with its name. A blob that does not match is deleted.
    pub fn verify_blob(&self, d: &Digest) -> Result<bool, StoreError> {
        let path = self.blob_path(d);
        match hash_file(&path) {
            Ok((got, _)) if got == *d => Ok(true),
            Ok(_) => {
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                Ok(false)
            }
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Create a directory (and its parents) writable only by its owner.
    pub fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|e| StoreError::io(dir, e))
    }

    /// Write a file by writing a temporary file beside it and renaming it over.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().expect("store paths have a parent");
        self.ensure_dir(dir)?;
        let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
        let result = (|| {
            let mut f = create_file(&tmp)?;
            f.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
            f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
            fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// A held lock of `locks/`: a pull holds one per blob from before it fetches the blob until
/// the manifest naming it is written, and garbage collection skips blobs whose lock is held.
/// Letting go removes the file (while it is still held, so the next holder, which checks
/// that its lock is on the file in the directory, is never fooled), so lock files do not
/// pile up.
pub(crate) struct KeyLock {
    key: String,
    path: PathBuf,
    _file: fs::File,
}

impl KeyLock {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Runs before the file is closed, which lets go of the lock.
        let _ = fs::remove_file(&self.path);
    }
}

/// Create (truncate) a file that is readable by all and writable only by its owner.
pub fn create_file(path: &Path) -> Result<fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(path).map_err(|e| StoreError::io(path, e))
}

/// sha256 and length of a file.
pub fn hash_file(path: &Path) -> Result<(Digest, u64), StoreError> {
    let mut f = fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut hasher = Sha256Stream::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finish(), n_total))
}

/// sha256 of bytes that arrive in pieces.
#[derive(Default)]
pub struct Sha256Stream(sha2::Sha256);

impl Sha256Stream {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    pub fn finish(self) -> Digest {
        Digest::from_hex(&name::hex(&sha2::Digest::finalize(self.0))).expect("a sha256 is 64 hex digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_locks_exclude_and_survive_the_file_being_removed() {
        let dir = std::env::temp_dir().join(format!("bantam-key-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        let path = dir.join("locks").join("k.lock");

        let first = store.lock_key("k").unwrap();
        assert!(path.is_file());
        assert!(store.try_lock_key("k").unwrap().is_none(), "a held lock must refuse a second holder");

        // A waiter blocks on the file `first` holds; when `first` lets go the file is gone,
        // and the waiter must lock the new file at the path rather than the removed one.
        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || store.lock_key("k").unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
        let second = waiter.join().unwrap();
        assert!(path.is_file(), "the holder's file is the one in the directory");
        assert!(store.try_lock_key("k").unwrap().is_none(), "the waiter, now holding, must exclude others");
        drop(second);
        assert!(!path.exists(), "letting go removes the lock file");
        let third = store.try_lock_key("k").unwrap();
        assert!(third.is_some());
        drop(third);
        let _ = fs::remove_dir_all(&dir);
    }
}

//! Read GGUF files (versions 2 and 3) through mmap, and write small ones.
//!
//! A [`Gguf`] owns the mapped file, its metadata ([`Value`]) and the tensor index
//! ([`TensorInfo`]). Every offset and length in the file is checked before use, so a
//! truncated, bit-flipped or hostile file fails with a [`GgufError`] that names the file
//! and the problem; it never panics or reads out of bounds.
//!
//! ```no_run
//! let file = gguf::Gguf::open("model.gguf")?;
//! println!("{}", file.metadata_str("general.architecture")?);
//! for t in file.tensors() {
//!     println!("{} {:?} {:?}", t.name, t.ggml_type, t.dims);
//! }
//! # Ok::<(), gguf::GgufError>(())
//! ```

mod error;
mod parse;
mod types;
mod value;
mod write;

pub use error::GgufError;
pub use parse::{parse_header, Header};
pub use types::GgmlType;
pub use value::{Array, Value};
pub use write::{header_bytes, partial_path, GgufWriter};

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One tensor of the index: name, type, shape (ggml order: `dims[0]` is the row length)
/// and the byte range of its data inside the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    pub dims: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    pub offset: usize,
    /// Size of the data in bytes.
    pub size: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
}

/// Backing bytes of an open file.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open GGUF file.
pub struct Gguf {
    path: PathBuf,
    bytes: Bytes,
    header: Header,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf").field("path", &self.path).field("tensors", &self.header.tensors.len()).finish()
    }
}

impl Gguf {
    /// Map and index a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io(&path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(&path, e))?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only; a model file changed underneath a running process
            // is outside what we can defend against (as for every mmap-based loader).
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::io(&path, e))?)
        };
        Self::from_bytes(path, bytes)
    }

    /// Index a file already in memory (tests, fuzzing).
    pub fn from_vec(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<Self, GgufError> {
        Self::from_bytes(name.into(), Bytes::Owned(data))
    }

    fn from_bytes(path: PathBuf, bytes: Bytes) -> Result<Self, GgufError> {
        let header = parse_header(bytes.as_slice()).map_err(|p| GgufError::Format { path: path.clone(), problem: p })?;
        let by_name = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(Gguf { path, bytes, header, by_name })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.header.version
    }
    /// Alignment of tensor data (`general.alignment`, 32 by default).
    pub fn alignment(&self) -> usize {
        self.header.alignment
    }
    pub fn file_size(&self) -> usize {
        self.bytes.as_slice().len()
    }
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn bad(&self, problem: String) -> GgufError {
        GgufError::Format { path: self.path.clone(), problem }
    }

    pub fn metadata_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(s),
            Some(v) => Err(self.bad(format!("metadata {key} is {}, expected a string", v.type_name()))),
            None => Err(GgufError::MissingKey { path: self.path.clone(), key: key.to_string() }),
        }
    }

    /// An integer value of any width, as u64 (negative values are an error).
    pub fn metadata_u64(&self, key: &str) -> Result<u64, GgufError> {
        match self.get(key) {
            Some(v) => v.as_u64().ok_or_else(|| self.bad(format!("metadata {key} is {}, expected an unsigned integer", v.type_name()))),
            None => Err(GgufError::MissingKey { path: self.path.clone(), key: key.to_string() }),
        }
    }

    pub fn metadata_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.get(key) {
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| self.bad(format!("metadata {key} is {}, expected a number", v.type_name()))),
            None => Err(GgufError::MissingKey { path: self.path.clone(), key: key.to_string() }),
        }
    }

    pub fn metadata_bool(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => v.as_u64().map(|x| x != 0),
            None => None,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The bytes of a tensor; bounds were checked when the file was indexed.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.data(t.offset, t.size)
    }

    /// `size` bytes at absolute `offset` (a range taken from a [`TensorInfo`]).
    pub fn data(&self, offset: usize, size: usize) -> &[u8] {
        &self.bytes.as_slice()[offset..offset + size]
    }

    /// Drop a tensor's pages from this process's resident memory once it has been read
    /// (they come back from the page cache if read again), so a pass over every tensor
    /// stays near one tensor resident. A hint: failures are ignored.
    pub fn release(&self, t: &TensorInfo) {
        #[cfg(unix)]
        if let Bytes::Mapped(m) = &self.bytes {
            const PAGE: usize = 4096;
            let start = t.offset.div_ceil(PAGE) * PAGE;
            let end = ((t.offset + t.size) / PAGE) * PAGE;
            if end > start {
                // SAFETY: the map is a read-only shared file mapping: MADV_DONTNEED only drops
                // resident pages, and later reads fault the same file bytes back in.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
        #[cfg(not(unix))]
        let _ = t;
    }
}

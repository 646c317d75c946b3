//! Read GGUF files (versions 2 and 3) through mmap, or read whole into huge pages to run
//! them ([`Gguf::open_resident`]), and write small ones.
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
    /// The file mapped: pages come from the page cache as they are read.
    Mapped(memmap2::Mmap),
    /// The file read whole into anonymous memory advised for transparent huge pages
    /// ([`Gguf::open_resident`]).
    Resident(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) | Bytes::Resident(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Whether [`Gguf::open_resident`] reads a file of `len` bytes into memory: where the
/// kernel gives madvised memory transparent huge pages (`thp`, the text of
/// `/sys/kernel/mm/transparent_hugepage/enabled`), the file takes at most half the memory
/// available (`available` bytes), and `BANTAM_MMAP` (`mmap_setting`) does not ask for the
/// mapping.
fn resident_pays(len: u64, thp: Option<&str>, available: Option<u64>, mmap_setting: Option<&str>) -> bool {
    let huge = thp.is_some_and(|t| t.contains("[always]") || t.contains("[madvise]"));
    let fits = available.is_some_and(|a| len <= a / 2);
    let mapped = mmap_setting.is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    huge && fits && !mapped && len > 0
}

/// The file at `path` (`len` bytes) read into anonymous memory advised for huge pages,
/// except the byte ranges `holes`, widened to whole 4 KiB pages, which are mapped from the
/// file at the same offsets (`MAP_FIXED` over the anonymous pages): the same bytes, read
/// from the page cache only where touched.
#[cfg(target_os = "linux")]
fn read_resident(path: &Path, len: usize, mut holes: Vec<(usize, usize)>) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    const PAGE: usize = 4096;
    let file = File::open(path)?;
    let mut m = memmap2::MmapOptions::new().len(len).map_anon()?;
    // A hint: without it the copy still works, on small pages.
    let _ = m.advise(memmap2::Advice::HugePage);
    let mut pages: Vec<(usize, usize)> = Vec::new();
    holes.sort_unstable();
    for (start, end) in holes {
        let (s, e) = (start / PAGE * PAGE, end.div_ceil(PAGE).saturating_mul(PAGE).min(len.div_ceil(PAGE) * PAGE));
        match pages.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => pages.push((s, e)),
        }
    }
    let mut at = 0;
    for &(s, e) in pages.iter().chain(std::iter::once(&(len, len))) {
        let s = s.min(len);
        if s > at {
            file.read_exact_at(&mut m[at..s], at as u64)?;
        }
        at = at.max(e.min(len));
    }
    for (s, e) in pages {
        // SAFETY: [s, e) lies inside the anonymous mapping `m` (page-aligned, rounded up to
        // the mapping's own page-rounded length), which this function owns; MAP_FIXED
        // replaces those pages with a private read-only view of the same file bytes, and
        // `m`'s unmapping later covers them too.
        let p = unsafe {
            libc::mmap(
                m.as_mut_ptr().add(s) as *mut libc::c_void,
                e - s,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                s as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(Bytes::Resident(m.make_read_only()?))
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn memory_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = s.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?;
    kb.parse::<u64>().ok().map(|kb| kb * 1024)
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

    /// Open a model file to run it: where the kernel has transparent huge pages, the file is
    /// read into anonymous memory advised for them, so that a decode step, which streams
    /// every weight once, walks 2 MiB pages instead of 4 KiB ones (fewer TLB misses:
    /// generation 7–16% faster on the catalog models, docs/BENCHMARKS.md "Huge pages").
    /// The tensors `sparse` names (from the indexed file: those read a few rows at a time,
    /// such as a token embedding that is not also the output projection) stay mapped from
    /// the file inside that memory, so they cost resident memory only for the rows read, as
    /// with a mapping. Elsewhere, for a file larger than half the memory available, or with
    /// `BANTAM_MMAP=1`, the whole file is mapped as by [`Gguf::open`].
    pub fn open_resident(path: impl AsRef<Path>, sparse: impl FnOnce(&Gguf) -> Vec<String>) -> Result<Self, GgufError> {
        let mapped = Self::open(path)?;
        #[cfg(target_os = "linux")]
        {
            let len = mapped.bytes.as_slice().len() as u64;
            let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok();
            let setting = std::env::var("BANTAM_MMAP").ok();
            if resident_pays(len, thp.as_deref(), memory_available(), setting.as_deref()) {
                let holes: Vec<(usize, usize)> = sparse(&mapped).iter().filter_map(|n| mapped.tensor(n)).map(|t| (t.offset, t.offset + t.size)).collect();
                let bytes = read_resident(&mapped.path, len as usize, holes).map_err(|e| GgufError::io(&mapped.path, e))?;
                return Ok(Gguf { bytes, ..mapped });
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = sparse;
        Ok(mapped)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_read_into_memory_only_where_huge_pages_pay() {
        let gib = 1u64 << 30;
        let madvise = Some("always [madvise] never\n");
        assert!(resident_pays(gib / 2, madvise, Some(4 * gib), None));
        assert!(resident_pays(gib / 2, Some("[always] madvise never"), Some(4 * gib), Some("0")));
        // No transparent huge pages: the copy would gain nothing over the mapping.
        assert!(!resident_pays(gib / 2, Some("always madvise [never]"), Some(4 * gib), None));
        assert!(!resident_pays(gib / 2, None, Some(4 * gib), None));
        // Larger than half the memory available, or unknown: mapped, so it can be paged.
        assert!(!resident_pays(3 * gib, madvise, Some(4 * gib), None));
        assert!(!resident_pays(gib / 2, madvise, None, None));
        // Asked for the mapping.
        assert!(!resident_pays(gib / 2, madvise, Some(4 * gib), Some("1")));
        assert!(!resident_pays(0, madvise, Some(4 * gib), None));
    }

    #[test]
    fn a_resident_file_reads_as_the_mapped_one() {
        let dir = std::env::temp_dir().join(format!("gguf-resident-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        // Three tensors of 5000 f32 (not whole pages), the middle one left mapped.
        let data = |k: u32| -> Vec<u8> { (0..5000u32).flat_map(|i| (i as f32 + k as f32 * 1e4).to_le_bytes()).collect() };
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str("llama".into()));
        for k in 0..3 {
            w.tensor(&format!("t{k}"), GgmlType::F32, &[5000], data(k));
        }
        std::fs::write(&path, w.to_bytes()).unwrap();
        let mapped = Gguf::open(&path).unwrap();
        let hole = mapped.tensor("t1").map(|t| (t.offset, t.offset + t.size)).unwrap();
        let len = mapped.bytes.as_slice().len();
        // Directly, so the copy is tested whether or not this kernel has huge pages.
        let copies = [read_resident(&path, len, vec![hole]).unwrap(), read_resident(&path, len, vec![]).unwrap()];
        for copy in &copies {
            assert!(matches!(copy, Bytes::Resident(_)));
            assert_eq!(copy.as_slice(), mapped.bytes.as_slice());
        }
        let resident = Gguf::open_resident(&path, |g| vec![g.tensors()[1].name.clone(), "absent".into()]).unwrap();
        for k in 0..3 {
            let t = resident.tensor(&format!("t{k}")).unwrap();
            assert_eq!(resident.tensor_data(t), data(k).as_slice());
        }
        assert_eq!(resident.metadata_str("general.architecture").unwrap(), "llama");
        // Releasing pages is for mapped files; a resident copy keeps its bytes.
        let t = resident.tensor("t0").unwrap();
        resident.release(t);
        assert_eq!(resident.tensor_data(t), data(0).as_slice());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

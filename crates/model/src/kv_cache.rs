//! The key/value cache of one sequence: per layer, K `[capacity, n_head_kv * head_dim]` and
//! V `[capacity, n_head_kv * head_dim_v]`, each position a row of its [`CacheType`]'s bytes
//! (f16 by default, as llama.cpp's; q8_0 or q4_0 as its `-ctk` / `-ctv`).
//! One zeroed mapping holds every layer (`[layer][K rows, V rows]`), so pages are committed
//! only as positions fill; a cache of [`HUGE_MIN`] bytes or more asks for transparent huge
//! pages, since a deep cache is read whole for every token and 4 KiB pages would cost a TLB
//! miss every few positions (its pages are then committed 2 MiB at a time).

use crate::config::Config;
use crate::ModelError;
pub use kernels::attention::CacheType;
use kernels::attention::KvView;

/// Caches this large or larger ask for transparent huge pages.
pub const HUGE_MIN: usize = 32 << 20;

pub struct KvCache {
    buf: Region,
    n_layer: usize,
    k_type: CacheType,
    v_type: CacheType,
    /// Bytes of one position's K and V row.
    k_row: usize,
    v_row: usize,
    len: usize,
    capacity: usize,
}

/// The cache types of K and V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheTypes {
    pub k: CacheType,
    pub v: CacheType,
}

impl CacheTypes {
    /// Whether a model's heads can be stored in these types (quantized blocks hold 32
    /// elements of one head).
    pub fn check(self, c: &Config) -> Result<(), ModelError> {
        for (t, dim, what) in [(self.k, c.head_dim, "K"), (self.v, c.head_dim_v, "V")] {
            if dim % t.block_len() != 0 {
                return Err(ModelError::CacheType(format!(
                    "a {what} cache of type {t} needs a head size divisible by {}, this model's is {dim}",
                    t.block_len()
                )));
            }
        }
        Ok(())
    }

    /// Bytes of K and V for one token across all layers.
    pub fn bytes_per_token(self, c: &Config) -> usize {
        c.n_layer * (self.k.row_bytes(c.kv_dim()) + self.v.row_bytes(c.v_dim()))
    }
}

impl KvCache {
    /// An f16 cache of `capacity` positions.
    pub fn new(c: &Config, capacity: usize) -> KvCache {
        KvCache::with_types(c, capacity, CacheTypes::default()).expect("every head size fits f16")
    }

    /// A cache of `capacity` positions with K and V stored as `types`.
    pub fn with_types(c: &Config, capacity: usize, types: CacheTypes) -> Result<KvCache, ModelError> {
        types.check(c)?;
        let (k_row, v_row) = (types.k.row_bytes(c.kv_dim()), types.v.row_bytes(c.v_dim()));
        Ok(KvCache {
            buf: Region::zeroed(c.n_layer * capacity * (k_row + v_row)),
            n_layer: c.n_layer,
            k_type: types.k,
            v_type: types.v,
            k_row,
            v_row,
            len: 0,
            capacity,
        })
    }

    pub fn types(&self) -> CacheTypes {
        CacheTypes { k: self.k_type, v: self.v_type }
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Forget everything (positions restart at 0).
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Keep only the first `n` positions (prefix reuse).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }
    /// Make this cache hold the first `n` positions of `src` (a prefix another sequence
    /// computed): positions this cache already shares with it (`self.len()` of them, the
    /// caller's claim) are kept, the rest copied. Both caches must be of one model.
    pub fn copy_prefix_from(&mut self, src: &KvCache, n: usize) {
        let n = n.min(src.len).min(self.capacity);
        let from = self.len.min(n);
        let (kd, vd) = (self.k_row, self.v_row);
        assert!(kd == src.k_row && vd == src.v_row && self.types() == src.types() && self.n_layer == src.n_layer, "caches of different models");
        for l in 0..self.n_layer {
            let (ks, vs) = (src.k_range(l), src.v_range(l));
            let (kr, vr) = (self.k_range(l), self.v_range(l));
            let dst = self.buf.as_mut_slice();
            dst[kr][from * kd..n * kd].copy_from_slice(&src.buf.as_slice()[ks][from * kd..n * kd]);
            dst[vr][from * vd..n * vd].copy_from_slice(&src.buf.as_slice()[vs][from * vd..n * vd]);
        }
        self.len = n;
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= self.capacity);
        self.len = n;
    }

    /// Store the K and V rows `[kv_dim]`, `[v_dim]` of `layer` at `pos`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (kd, vd) = (self.k_row, self.v_row);
        let (kr, vr) = (self.k_range(layer), self.v_range(layer));
        let buf = self.buf.as_mut_slice();
        self.k_type.store(k, &mut buf[kr][pos * kd..(pos + 1) * kd]);
        self.v_type.store(v, &mut buf[vr][pos * vd..(pos + 1) * vd]);
    }

    fn k_range(&self, layer: usize) -> std::ops::Range<usize> {
        let start = layer * self.capacity * (self.k_row + self.v_row);
        start..start + self.capacity * self.k_row
    }

    fn v_range(&self, layer: usize) -> std::ops::Range<usize> {
        let start = layer * self.capacity * (self.k_row + self.v_row) + self.capacity * self.k_row;
        start..start + self.capacity * self.v_row
    }

    /// K `[positions, kv_dim]` and V `[positions, v_dim]` of a layer.
    pub(crate) fn layer(&self, layer: usize) -> KvView<'_> {
        let buf = self.buf.as_slice();
        KvView { k: &buf[self.k_range(layer)], v: &buf[self.v_range(layer)], k_type: self.k_type, v_type: self.v_type }
    }

    /// Bytes reserved (not necessarily committed).
    pub fn reserved_bytes(&self) -> usize {
        self.capacity * (self.k_row + self.v_row) * self.n_layer
    }
}

/// Zeroed bytes that commit pages only when written: an anonymous mapping (2 MiB-aligned and
/// marked for huge pages from [`HUGE_MIN`] bytes) on Linux, a zeroed `Vec` elsewhere or if
/// the mapping fails.
enum Region {
    #[cfg(target_os = "linux")]
    Mapped {
        base: *mut u8,
        map_len: usize,
        data: *mut u8,
        len: usize,
    },
    Heap(Vec<u8>),
}

// SAFETY: the mapping is owned by the region, like a Vec's buffer.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    fn zeroed(len: usize) -> Region {
        #[cfg(target_os = "linux")]
        if len > 0 {
            const HUGE: usize = 2 << 20;
            let huge = len >= HUGE_MIN;
            let map_len = len + if huge { HUGE } else { 0 };
            // SAFETY: a fresh private anonymous mapping; checked for failure.
            let base = unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
            if base != libc::MAP_FAILED {
                let base = base as *mut u8;
                let skip = if huge { (HUGE - base as usize % HUGE) % HUGE } else { 0 };
                // SAFETY: `skip + len <= map_len`.
                let data = unsafe { base.add(skip) };
                if huge {
                    // SAFETY: a range of our own mapping; a refusal only costs speed.
                    unsafe { libc::madvise(data as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
                }
                return Region::Mapped { base, map_len, data, len };
            }
        }
        Region::Heap(vec![0u8; len])
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            // SAFETY: `len` bytes of our mapping, alive as long as `self`.
            #[cfg(target_os = "linux")]
            Region::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts(*data, *len) },
            Region::Heap(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: as above, borrowed mutably through `self`.
            #[cfg(target_os = "linux")]
            Region::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts_mut(*data, *len) },
            Region::Heap(v) => v,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Region::Mapped { base, map_len, .. } = *self {
            // SAFETY: the mapping made in `zeroed`, unmapped once.
            unsafe { libc::munmap(base as *mut libc::c_void, map_len) };
        }
    }
}

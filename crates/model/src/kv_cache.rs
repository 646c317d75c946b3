//! The key/value cache of one sequence: per layer, K `[rows, n_head_kv * head_dim]` and
//! V `[rows, n_head_kv * head_dim_v]`, each position a row of its [`CacheType`]'s bytes
//! (f16 by default, as llama.cpp's; q8_0 or q4_0 as its `-ctk` / `-ctv`).
//!
//! A full-attention layer has a row per position (`rows = capacity`). A sliding-window
//! layer (gemma3's local layers) needs only the last `window` positions, so where that is
//! shorter than the capacity it keeps a ring of `window + pass` rows, rounded up to
//! attention blocks: position `p` lives in row `p % rows`, and one forward pass may add up
//! to `pass` positions of the sequence without overwriting a key its tokens still see (as
//! llama.cpp's SWA cache holds `n_swa + n_ubatch` cells). Attention reads the same values
//! either way, so a ring changes memory, not results.
//!
//! One zeroed mapping holds every layer (`[layer][K rows, V rows]`), so pages are committed
//! only as positions fill; a cache of [`HUGE_MIN`] bytes or more asks for transparent huge
//! pages, since a deep cache is read whole for every token and 4 KiB pages would cost a TLB
//! miss every few positions (its pages are then committed 2 MiB at a time).

use crate::config::Config;
use crate::ModelError;
pub use kernels::attention::CacheType;
use kernels::attention::{KvView, KB};

/// Caches this large or larger ask for transparent huge pages.
pub const HUGE_MIN: usize = 32 << 20;

/// Positions one forward pass may add to a sequence by default (llama.cpp's n_ubatch, and
/// the engine's prompt step): what a sliding-window ring leaves room for beyond its window.
pub const DEFAULT_PASS: usize = 512;

pub struct KvCache {
    buf: Region,
    k_type: CacheType,
    v_type: CacheType,
    /// Bytes of one position's K and V row.
    k_row: usize,
    v_row: usize,
    /// Rows of each layer (the capacity, or a sliding-window layer's ring).
    rows: Vec<usize>,
    /// Where each layer's K rows start; its V rows follow them.
    offset: Vec<usize>,
    len: usize,
    capacity: usize,
    /// Most positions one forward pass may add (`usize::MAX` without rings).
    pass: usize,
    /// One past the highest position written since the cache was last empty: a ring still
    /// holds the positions from `high - rows` on.
    high: usize,
    /// The smallest window among the ring layers (0 without rings).
    window: usize,
}

/// The cache types of K and V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheTypes {
    pub k: CacheType,
    pub v: CacheType,
}

/// Rows of layer `il` for a cache of `capacity` positions and passes of up to `pass`
/// positions.
fn layer_rows(c: &Config, il: usize, capacity: usize, pass: usize) -> usize {
    match c.sliding_window.filter(|_| c.swa_layers[il]) {
        Some(w) => capacity.min(w.saturating_add(pass).div_ceil(KB).saturating_mul(KB)),
        None => capacity,
    }
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
        c.n_layer * self.layer_row_bytes(c)
    }

    fn layer_row_bytes(self, c: &Config) -> usize {
        self.k.row_bytes(c.kv_dim()) + self.v.row_bytes(c.v_dim())
    }

    /// Bytes of a cache of `capacity` positions with passes of up to `pass` positions
    /// ([`KvCache::with_pass`]): sliding-window layers count their rings only.
    pub fn cache_bytes(self, c: &Config, capacity: usize, pass: usize) -> usize {
        (0..c.n_layer).map(|il| layer_rows(c, il, capacity, pass.max(1))).sum::<usize>() * self.layer_row_bytes(c)
    }
}

impl KvCache {
    /// An f16 cache of `capacity` positions.
    pub fn new(c: &Config, capacity: usize) -> KvCache {
        KvCache::with_types(c, capacity, CacheTypes::default()).expect("every head size fits f16")
    }

    /// A cache of `capacity` positions with K and V stored as `types`, for passes of up to
    /// [`DEFAULT_PASS`] positions.
    pub fn with_types(c: &Config, capacity: usize, types: CacheTypes) -> Result<KvCache, ModelError> {
        KvCache::with_pass(c, capacity, types, DEFAULT_PASS)
    }

    /// A cache of `capacity` positions whose forward passes add up to `pass` positions each
    /// (what its sliding-window rings leave room for).
    pub fn with_pass(c: &Config, capacity: usize, types: CacheTypes, pass: usize) -> Result<KvCache, ModelError> {
        types.check(c)?;
        let (k_row, v_row) = (types.k.row_bytes(c.kv_dim()), types.v.row_bytes(c.v_dim()));
        let rows: Vec<usize> = (0..c.n_layer).map(|il| layer_rows(c, il, capacity, pass.max(1))).collect();
        let mut offset = Vec::with_capacity(c.n_layer);
        let mut total = 0;
        for &r in &rows {
            offset.push(total);
            total += r * (k_row + v_row);
        }
        let ring = rows.iter().any(|&r| r < capacity);
        Ok(KvCache {
            buf: Region::zeroed(total),
            k_type: types.k,
            v_type: types.v,
            k_row,
            v_row,
            rows,
            offset,
            len: 0,
            capacity,
            pass: if ring { pass.max(1) } else { usize::MAX },
            high: 0,
            window: if ring { c.sliding_window.unwrap_or(0) } else { 0 },
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
    /// Most positions of this sequence one forward pass may add.
    pub fn max_pass(&self) -> usize {
        self.pass
    }
    /// Forget everything (positions restart at 0).
    pub fn clear(&mut self) {
        self.len = 0;
        self.high = 0;
    }

    /// How many of the first `n` positions this cache can keep: `n` (or its length, if
    /// shorter), or 0 where a sliding-window ring has already overwritten keys that the
    /// position after them would see.
    pub fn keepable(&self, n: usize) -> usize {
        let n = n.min(self.len);
        let ring_min = self.rows.iter().copied().filter(|&r| r < self.capacity).min();
        match ring_min {
            Some(r) if self.high.saturating_sub(r) > (n + 1).saturating_sub(self.window) => 0,
            _ => n,
        }
    }

    /// Keep only the first `n` positions (prefix reuse), or none where a ring cannot keep
    /// them ([`KvCache::keepable`]); returns the positions kept.
    pub fn truncate(&mut self, n: usize) -> usize {
        let keep = self.keepable(n);
        if keep == 0 {
            self.clear();
        }
        self.len = keep;
        keep
    }

    /// Make this cache hold the first `n` positions of `src` (a prefix another sequence
    /// computed): positions this cache already shares with it (`self.len()` of them, the
    /// caller's claim, which must be keepable) are kept, the rest copied. Both caches must
    /// be of one model and one pass size, and `n` keepable in `src`.
    pub fn copy_prefix_from(&mut self, src: &KvCache, n: usize) {
        let n = n.min(src.len).min(self.capacity);
        let from = self.len.min(n);
        let (kd, vd) = (self.k_row, self.v_row);
        assert!(kd == src.k_row && vd == src.v_row && self.types() == src.types() && self.rows == src.rows, "caches of different models or pass sizes");
        debug_assert!(src.keepable(n) == n, "copying positions a ring no longer holds");
        for l in 0..self.rows.len() {
            let rows = self.rows[l];
            // A ring holds the last `rows` positions; a position's row is the same in both.
            let first = from.max(n.saturating_sub(rows));
            let (ks, vs) = (src.k_range(l), src.v_range(l));
            let (kr, vr) = (self.k_range(l), self.v_range(l));
            let dst = self.buf.as_mut_slice();
            let srcb = src.buf.as_slice();
            let mut p = first;
            while p < n {
                // Positions p .. end sit in consecutive rows.
                let (r0, end) = (p % rows, n.min(p - p % rows + rows));
                let r1 = r0 + (end - p);
                dst[kr.clone()][r0 * kd..r1 * kd].copy_from_slice(&srcb[ks.clone()][r0 * kd..r1 * kd]);
                dst[vr.clone()][r0 * vd..r1 * vd].copy_from_slice(&srcb[vs.clone()][r0 * vd..r1 * vd]);
                p = end;
            }
        }
        self.len = n;
        self.high = self.high.max(n);
    }

    pub(crate) fn set_len(&mut self, n: usize) {
        debug_assert!(n <= self.capacity);
        self.len = n;
        self.high = self.high.max(n);
    }

    /// Store the K and V rows `[kv_dim]`, `[v_dim]` of `layer` at `pos`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (kd, vd) = (self.k_row, self.v_row);
        let row = pos % self.rows[layer];
        let (kr, vr) = (self.k_range(layer), self.v_range(layer));
        let buf = self.buf.as_mut_slice();
        self.k_type.store(k, &mut buf[kr][row * kd..(row + 1) * kd]);
        self.v_type.store(v, &mut buf[vr][row * vd..(row + 1) * vd]);
    }

    fn k_range(&self, layer: usize) -> std::ops::Range<usize> {
        let start = self.offset[layer];
        start..start + self.rows[layer] * self.k_row
    }

    fn v_range(&self, layer: usize) -> std::ops::Range<usize> {
        let start = self.offset[layer] + self.rows[layer] * self.k_row;
        start..start + self.rows[layer] * self.v_row
    }

    /// K `[rows, kv_dim]` and V `[rows, v_dim]` of a layer (position `p` in row `p % rows`).
    pub(crate) fn layer(&self, layer: usize) -> KvView<'_> {
        let buf = self.buf.as_slice();
        KvView { k: &buf[self.k_range(layer)], v: &buf[self.v_range(layer)], k_type: self.k_type, v_type: self.v_type, rows: self.rows[layer] }
    }

    /// Bytes reserved (not necessarily committed).
    pub fn reserved_bytes(&self) -> usize {
        self.rows.iter().sum::<usize>() * (self.k_row + self.v_row)
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

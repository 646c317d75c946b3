//! The key/value cache of one sequence: per layer, K `[capacity, n_head_kv * head_dim]` and
//! V `[capacity, n_head_kv * head_dim_v]`, each position a row of its [`CacheType`]'s bytes
//! (f16 by default, as llama.cpp's; q8_0 or q4_0 as its `-ctk` / `-ctv`).
//! Memory is requested zeroed, so pages are committed only as positions fill.

use crate::config::Config;
use crate::ModelError;
pub use kernels::attention::CacheType;
use kernels::attention::KvView;

pub struct KvCache {
    k: Vec<Vec<u8>>,
    v: Vec<Vec<u8>>,
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
            k: (0..c.n_layer).map(|_| vec![0u8; capacity * k_row]).collect(),
            v: (0..c.n_layer).map(|_| vec![0u8; capacity * v_row]).collect(),
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
        assert!(kd == src.k_row && vd == src.v_row && self.types() == src.types() && self.k.len() == src.k.len(), "caches of different models");
        for (dst, s) in self.k.iter_mut().zip(&src.k) {
            dst[from * kd..n * kd].copy_from_slice(&s[from * kd..n * kd]);
        }
        for (dst, s) in self.v.iter_mut().zip(&src.v) {
            dst[from * vd..n * vd].copy_from_slice(&s[from * vd..n * vd]);
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
        self.k_type.store(k, &mut self.k[layer][pos * kd..(pos + 1) * kd]);
        self.v_type.store(v, &mut self.v[layer][pos * vd..(pos + 1) * vd]);
    }

    /// K `[positions, kv_dim]` and V `[positions, v_dim]` of a layer.
    pub(crate) fn layer(&self, layer: usize) -> KvView<'_> {
        KvView { k: &self.k[layer], v: &self.v[layer], k_type: self.k_type, v_type: self.v_type }
    }

    /// Bytes reserved (not necessarily committed).
    pub fn reserved_bytes(&self) -> usize {
        self.capacity * (self.k_row + self.v_row) * self.k.len()
    }
}

//! The key/value cache of one sequence: per layer, K `[capacity, n_head_kv * head_dim]` and
//! V `[capacity, n_head_kv * head_dim_v]` in f16 (as llama.cpp's default cache type).
//! Memory is requested zeroed, so pages are committed only as positions fill.

use crate::config::Config;

pub struct KvCache {
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    kv_dim: usize,
    v_dim: usize,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(c: &Config, capacity: usize) -> KvCache {
        KvCache {
            k: (0..c.n_layer).map(|_| vec![0u16; capacity * c.kv_dim()]).collect(),
            v: (0..c.n_layer).map(|_| vec![0u16; capacity * c.v_dim()]).collect(),
            kv_dim: c.kv_dim(),
            v_dim: c.v_dim(),
            len: 0,
            capacity,
        }
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
        let (kd, vd) = (self.kv_dim, self.v_dim);
        assert!(kd == src.kv_dim && vd == src.v_dim && self.k.len() == src.k.len(), "caches of different models");
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

    /// K and V rows of `layer` at `pos`, for writing.
    pub(crate) fn slot_mut(&mut self, layer: usize, pos: usize) -> (&mut [u16], &mut [u16]) {
        let (kd, vd) = (self.kv_dim, self.v_dim);
        (&mut self.k[layer][pos * kd..(pos + 1) * kd], &mut self.v[layer][pos * vd..(pos + 1) * vd])
    }

    /// K `[positions, kv_dim]` and V `[positions, v_dim]` of a layer.
    pub(crate) fn layer(&self, layer: usize) -> (&[u16], &[u16]) {
        (&self.k[layer], &self.v[layer])
    }

    pub fn kv_dims(&self) -> (usize, usize) {
        (self.kv_dim, self.v_dim)
    }

    /// Bytes reserved (not necessarily committed).
    pub fn reserved_bytes(&self) -> usize {
        2 * self.capacity * (self.kv_dim + self.v_dim) * self.k.len()
    }
}

//! Quantized matrix times a batch of activation rows: `out[t, r] = W[r, :] · x[t, :]`.
//!
//! The activations are quantized once per call into the weight type's [`ActType`]; rows of
//! W are split across the pool's threads, and each thread walks its rows in tiles so a
//! tile of weights stays in cache while every token of the batch passes over it.

use crate::dot::{dot4_fn, dot_fn, tile_fn, ActScales, ActType, Dot4Fn, DotFn, Isa, TileKernel, Unpacked, MAX_TILE_ROWS};
use crate::gemm;
use crate::pool::Pool;
use crate::pool::SendPtr;
use crate::sgemm::{Strided, StridedMut};
use gguf::GgmlType;

/// A weight matrix `[rows, cols]` (row-major, `cols` contiguous) in a ggml type, borrowed
/// from the mapped file.
#[derive(Clone, Copy)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    dot: DotFn,
    dot4: Option<Dot4Fn>,
    tile: Option<TileKernel>,
    row_bytes: usize,
    isa: Isa,
    dense: bool,
    gemm: bool,
}

impl<'a> QMatrix<'a> {
    /// `data` must be exactly `rows` rows of `cols` elements of `ty`; returns `None` if not.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8], isa: Isa) -> Option<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        let gemm = crate::gemm::supported(ty, isa) && prompt_setting("BANTAM_GEMM_PROMPTS", &GEMM_SET) != Some(false);
        (row_bytes * rows == data.len()).then_some(QMatrix {
            ty,
            rows,
            cols,
            data,
            dot: dot_fn(ty, isa),
            dot4: dot4_fn(ty, isa),
            tile: tile_fn(ty, isa),
            row_bytes,
            isa,
            dense: dense_default(ty, isa, gemm),
            gemm,
        })
    }

    /// The matrix with its prompt path chosen: dense (`true`) or quantized.
    pub fn with_dense_prompts(self, dense: bool) -> Self {
        QMatrix { dense, ..self }
    }

    /// Whether prompt tokens take [`matmul_split`]'s dense path with this matrix.
    pub fn dense_prompts(&self) -> bool {
        self.dense
    }

    /// The matrix with the int8 prompt path ([`crate::gemm`]) on or off, where its type
    /// and level have one.
    pub fn with_gemm_prompts(self, on: bool) -> Self {
        QMatrix { gemm: on && crate::gemm::supported(self.ty, self.isa), ..self }
    }

    /// Whether prompt tokens that do not take the dense path take the int8 one.
    pub fn gemm_prompts(&self) -> bool {
        self.gemm
    }

    /// Whether prompt tokens take another path than generated ones with this matrix (the
    /// dense or the int8 one), so that the two kinds of token get different bits.
    pub fn prompts_differ(&self) -> bool {
        self.dense || self.gemm
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize row `r` into `out` (`cols` elements).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        crate::dequant::dequantize_row(self.ty, self.row(r), out)
    }
}

/// Where the level has no integer dot-product instruction (x86's AVX2 level), the float
/// types and the quantized types without the int8 prompt path (`gemm`: Q2_K, Q3_K, or all
/// of them with `BANTAM_GEMM_PROMPTS=0`) multiply faster as f32 rows (dequantized 16 at a
/// time with the level's vector unit) against f32 activations than through the integer
/// tiles (docs/BENCHMARKS.md, "Dense prompts"). `BANTAM_DENSE_PROMPTS=0` turns the dense
/// path off, `=1` on at every level (before the int8 path).
fn dense_default(ty: GgmlType, isa: Isa, gemm: bool) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
        && match prompt_setting("BANTAM_DENSE_PROMPTS", &DENSE_SET) {
            Some(on) => on,
            None => isa == Isa::Avx2 && !gemm,
        }
}

/// Scratch for quantized activations, grown on demand and reused (no allocation per call
/// once it has reached its working size). One slot per activation type, so matrices of
/// different types can share one input.
#[derive(Default)]
pub struct ActBuf {
    slots: [ActSlot; 4],
}

#[derive(Default)]
struct ActSlot {
    words: Vec<u64>,
    /// The blocks' scales of each whole group of four rows, group after group (the prompt
    /// tiles' [`ActScales`]).
    scales: Vec<ActScales>,
    /// Every block's [`gemm::ActEntry`], row after row (the int8 prompt path's).
    entries: Vec<gemm::ActEntry>,
}

fn slot_index(at: ActType) -> usize {
    match at {
        ActType::F32 => 0,
        ActType::Q8_0 => 1,
        ActType::Q8_1 => 2,
        ActType::Q8K => 3,
    }
}

impl ActSlot {
    /// Quantize `x` (`[n, cols]`) into this slot; returns the bytes of the `n` rows.
    fn fill(&mut self, pool: &Pool, at: ActType, x: &[f32], n: usize, cols: usize) {
        let arb = at.row_bytes(cols);
        let len = arb * n;
        if self.words.len() * 8 < len {
            self.words.resize(len.div_ceil(8), 0);
        }
        // SAFETY: u64 storage viewed as bytes (8-aligned, so any block type fits).
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, len) };
        if n >= 8 {
            let p = bytes.as_mut_ptr() as usize;
            pool.run(|i, nt| {
                for t in Pool::range(i, nt, n) {
                    // SAFETY: each thread writes its own activation rows.
                    let dst = unsafe { std::slice::from_raw_parts_mut((p as *mut u8).add(t * arb), arb) };
                    at.quantize(&x[t * cols..(t + 1) * cols], dst);
                }
            });
        } else {
            for t in 0..n {
                at.quantize(&x[t * cols..(t + 1) * cols], &mut bytes[t * arb..(t + 1) * arb]);
            }
        }
        self.scales.clear();
        let row = |t: usize| &bytes[t * arb..(t + 1) * arb];
        for t in (0..n / 4 * 4).step_by(4) {
            ActScales::extend(at, [row(t), row(t + 1), row(t + 2), row(t + 3)], &mut self.scales);
        }
    }

    /// The [`gemm::ActEntry`]s of the `n` rows [`ActSlot::fill`] wrote.
    fn fill_entries(&mut self, pool: &Pool, at: ActType, n: usize, cols: usize) {
        let (arb, blocks) = (at.row_bytes(cols), cols / crate::blocks::QK);
        self.entries.resize(n * blocks, gemm::ActEntry::default());
        // SAFETY: as in `fill`; `fill` wrote n rows.
        let bytes = unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, arb * n) };
        let p = SendEntries(self.entries.as_mut_ptr());
        pool.run(|i, nt| {
            let ts = Pool::range(i, nt, n);
            // SAFETY: each thread writes the entries of its own rows.
            let out = unsafe { std::slice::from_raw_parts_mut(p.get().add(ts.start * blocks), ts.len() * blocks) };
            gemm::act_entries(at, &bytes[ts.start * arb..ts.end * arb], arb, out);
        });
    }

    fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: as in `fill`; `len` bytes were written there.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, len) }
    }
}

static DENSE_SET: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
static GEMM_SET: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// A prompt-path switch (`BANTAM_DENSE_PROMPTS`, `BANTAM_GEMM_PROMPTS`: `0` or `1`), read
/// once.
fn prompt_setting(var: &str, set: &std::sync::OnceLock<Option<bool>>) -> Option<bool> {
    *set.get_or_init(|| match std::env::var(var).as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    })
}

/// Most matrices [`matmul_many`] takes in one pass.
pub const MAX_JOBS: usize = 4;

/// Rows of W a thread handles per tile.
const TILE: usize = 16;

/// Rows the dense path dequantizes at a time: a thread holds `[DENSE_ROWS, cols]` of them
/// and their products `[n, DENSE_ROWS]`.
pub const DENSE_ROWS: usize = TILE;

/// `out[t * w.rows + r] = W[r] · x[t]` for `t < n`. x: `[n, w.cols]`, out: `[n, w.rows]`.
pub fn matmul(pool: &Pool, w: &QMatrix, x: &[f32], n: usize, act: &mut ActBuf, out: &mut [f32]) {
    matmul_many(pool, &mut [(w, out)], x, n, act)
}

/// Several matrices applied to one input in one parallel pass (Q, K and V; gate and up):
/// the input is quantized once per activation type and the rows of all matrices are split
/// across the threads together, so a decode step waits on one job instead of several.
/// x: `[n, cols]`; each output `[n, rows_i]`.
pub fn matmul_many(pool: &Pool, jobs: &mut [(&QMatrix, &mut [f32])], x: &[f32], n: usize, act: &mut ActBuf) {
    matmul_split(pool, jobs, x, n, &[], act)
}

/// The matrices of one pass, each with where its output starts.
type Parts<'a> = [Option<(QMatrix<'a>, SendPtr)>; MAX_JOBS];

/// [`matmul_many`] over a batch of two kinds of token: `prompt[t]` marks a token read from
/// a request (a prompt, or an input to embed), the others were generated (`prompt` empty:
/// none is a prompt token). Prompt tokens take the dense path with the matrices that have
/// one ([`QMatrix::dense_prompts`]): f32 rows, dequantized 16 at a time, against the f32
/// activations through [`crate::sgemm::nt`]; or the int8 one ([`QMatrix::gemm_prompts`],
/// [`crate::gemm`]); everything else the quantized path. Both paths
/// give a token the same bits in any batch, so a token's products depend on its kind and
/// never on what it is batched with.
/// x: `[n, cols]`; each output `[n, rows_i]`.
pub fn matmul_split(pool: &Pool, jobs: &mut [(&QMatrix, &mut [f32])], x: &[f32], n: usize, prompt: &[bool], act: &mut ActBuf) {
    let Some(cols) = jobs.first().map(|(w, _)| w.cols) else { return };
    assert_eq!(x.len(), n * cols, "activation shape");
    assert!(prompt.is_empty() || prompt.len() == n, "one kind per token");
    assert!(jobs.len() <= MAX_JOBS, "at most {MAX_JOBS} matrices per pass");
    for (w, out) in jobs.iter() {
        assert_eq!(w.cols, cols, "matrices sharing an input must have the same columns");
        assert_eq!(out.len(), n * w.rows, "output shape");
    }
    let kind = |t: usize| prompt.get(t).copied().unwrap_or(false);
    let mut t0 = 0;
    while t0 < n {
        // A run of tokens of one kind: [t0, t1).
        let mut t1 = t0 + 1;
        while t1 < n && kind(t1) == kind(t0) {
            t1 += 1;
        }
        let (mut quantized, mut dense, mut gemm): (Parts, Parts, Parts) = ([None; MAX_JOBS], [None; MAX_JOBS], [None; MAX_JOBS]);
        for (i, (w, out)) in jobs.iter_mut().enumerate() {
            let part = Some((**w, SendPtr(out[t0 * w.rows..].as_mut_ptr())));
            if kind(t0) && w.dense_prompts() {
                dense[i] = part;
            } else if kind(t0) && w.gemm_prompts() {
                gemm[i] = part;
            } else {
                quantized[i] = part;
            }
        }
        let xs = &x[t0 * cols..t1 * cols];
        if quantized.iter().any(Option::is_some) {
            quantized_pass(pool, &quantized, xs, t1 - t0, cols, act);
        }
        if dense.iter().any(Option::is_some) {
            dense_pass(pool, &dense, xs, t1 - t0, cols);
        }
        if gemm.iter().any(Option::is_some) {
            gemm_pass(pool, &gemm, xs, t1 - t0, cols, act);
        }
        t0 = t1;
    }
}

/// The quantized path: the input quantized once per activation type, the rows of all
/// matrices split across the threads together.
fn quantized_pass(pool: &Pool, parts: &Parts, x: &[f32], n: usize, cols: usize, act: &mut ActBuf) {
    let mut filled = [false; 4];
    for (w, _) in parts.iter().flatten() {
        let at = ActType::of(w.ty);
        let k = slot_index(at);
        if !filled[k] {
            act.slots[k].fill(pool, at, x, n, cols);
            filled[k] = true;
        }
    }
    let total: usize = parts.iter().flatten().map(|(w, _)| w.rows).sum();
    let act = &*act;
    // Several chunks per thread, so threads that run sooner take more of them; chunks are
    // whole groups of MAX_TILE_ROWS rows, so the prompt tiles line up with them.
    let n_chunks = (total / TILE).clamp(1, 4 * pool.n_threads());
    let units = total.div_ceil(MAX_TILE_ROWS);
    pool.run_chunks(n_chunks, |i, nc| {
        let units = Pool::range(i, nc, units);
        let range = units.start * MAX_TILE_ROWS..(units.end * MAX_TILE_ROWS).min(total);
        let mut base = 0;
        for (w, optr) in parts.iter().flatten() {
            let (lo, hi) = (range.start.max(base), range.end.min(base + w.rows));
            if lo < hi {
                let at = ActType::of(w.ty);
                let slot = &act.slots[slot_index(at)];
                let arb = at.row_bytes(cols);
                rows_times_acts(w, slot.bytes(arb * n), &slot.scales, arb, n, lo - base..hi - base, *optr);
            }
            base += w.rows;
        }
    });
}

thread_local! {
    /// A thread's dequantized rows `[TILE, cols]` and their products `[n, TILE]` for the
    /// dense path, reused from call to call.
    static DENSE: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The dense path: each thread takes TILE rows at a time, dequantizes them once and
/// multiplies them with every token (`sgemm::nt`, whose sums have one order whatever the
/// tile, so a token's result does not depend on the batch).
fn dense_pass(pool: &Pool, parts: &Parts, x: &[f32], n: usize, cols: usize) {
    let total: usize = parts.iter().flatten().map(|(w, _)| w.rows).sum();
    let n_chunks = (total / TILE).clamp(1, 4 * pool.n_threads());
    let units = total.div_ceil(TILE);
    pool.run_chunks(n_chunks, |i, nc| {
        let units = Pool::range(i, nc, units);
        let range = units.start * TILE..(units.end * TILE).min(total);
        DENSE.with_borrow_mut(|(panel, prod)| {
            let mut base = 0;
            for (w, optr) in parts.iter().flatten() {
                let (lo, hi) = (range.start.max(base) - base, range.end.min(base + w.rows).saturating_sub(base));
                for r0 in (lo..hi).step_by(TILE) {
                    let nr = TILE.min(hi - r0);
                    fit_len(panel, nr * cols);
                    fit_len(prod, n * nr);
                    for r in 0..nr {
                        crate::dequant::dequantize_row_isa(w.ty, w.isa, w.row(r0 + r), &mut panel[r * cols..(r + 1) * cols]);
                    }
                    crate::sgemm::nt(w.isa, cols, Strided::new(panel, cols), nr, Strided::new(x, cols), n, StridedMut::new(prod, nr));
                    for (t, p) in prod[..n * nr].chunks_exact(nr).enumerate() {
                        // SAFETY: rows r0..r0 + nr are in this thread's range and t < n, so
                        // the elements are in bounds and no other thread writes them.
                        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), optr.0.add(t * w.rows + r0), nr) };
                    }
                }
                base += w.rows;
            }
        });
    });
}

/// The entries' buffer, shared by the pool's threads, each writing its own rows' part.
#[derive(Clone, Copy)]
struct SendEntries(*mut gemm::ActEntry);
// SAFETY: dereferenced only at disjoint offsets by different threads, inside the pool run
// that `fill_entries` waits for.
unsafe impl Send for SendEntries {}
unsafe impl Sync for SendEntries {}

impl SendEntries {
    fn get(self) -> *mut gemm::ActEntry {
        self.0
    }
}

thread_local! {
    /// A thread's repacked group of rows for the int8 prompt path, reused from call to call.
    static GEMM_PANEL: std::cell::RefCell<gemm::Panel> = std::cell::RefCell::new(gemm::Panel::default());
}

/// The int8 prompt path ([`crate::gemm`]): the input quantized once per activation type
/// with each block's [`gemm::ActEntry`]; each thread repacks [`gemm::GROUP`] rows at a time
/// and multiplies them with every token, [`gemm::TOKENS`] at a time.
fn gemm_pass(pool: &Pool, parts: &Parts, x: &[f32], n: usize, cols: usize, act: &mut ActBuf) {
    let blocks = cols / crate::blocks::QK;
    let mut filled = [false; 4];
    for (w, _) in parts.iter().flatten() {
        let at = gemm::act_type(w.ty);
        let k = slot_index(at);
        if !filled[k] {
            act.slots[k].fill(pool, at, x, n, cols);
            act.slots[k].fill_entries(pool, at, n, cols);
            filled[k] = true;
        }
    }
    let total: usize = parts.iter().flatten().map(|(w, _)| w.rows).sum();
    let units = total.div_ceil(gemm::GROUP);
    let n_chunks = units.clamp(1, 4 * pool.n_threads());
    let act = &*act;
    pool.run_chunks(n_chunks, |i, nc| {
        let units = Pool::range(i, nc, units);
        let range = units.start * gemm::GROUP..(units.end * gemm::GROUP).min(total);
        GEMM_PANEL.with_borrow_mut(|panel| {
            let mut base = 0;
            for (w, optr) in parts.iter().flatten() {
                let (lo, hi) = (range.start.max(base) - base, range.end.min(base + w.rows).saturating_sub(base));
                let at = gemm::act_type(w.ty);
                let slot = &act.slots[slot_index(at)];
                let arb = at.row_bytes(cols);
                let acts = gemm::Acts { at, bytes: slot.bytes(arb * n), arb, entries: &slot.entries[..n * blocks], blocks };
                let mut r0 = lo;
                while r0 < hi {
                    let nr = gemm::GROUP.min(hi - r0);
                    panel.pack(w.ty, w.isa, &w.data[r0 * w.row_bytes..(r0 + nr) * w.row_bytes], blocks);
                    let mut out = [[0.0; gemm::GROUP]; gemm::TOKENS];
                    for t0 in (0..n).step_by(gemm::TOKENS) {
                        let nt = gemm::TOKENS.min(n - t0);
                        gemm::products(w.ty, w.isa, panel, &acts, t0, nt, &mut out);
                        for (t, o) in out[..nt].iter().enumerate() {
                            // SAFETY: rows r0..r0 + nr are in this thread's range and
                            // t0 + t < n, so the elements are in bounds and no other
                            // thread writes them.
                            unsafe {
                                let dst = optr.0.add((t0 + t) * w.rows + r0);
                                if nr == gemm::GROUP {
                                    // A whole group: a copy of known size, inlined.
                                    std::ptr::copy_nonoverlapping(o.as_ptr(), dst, gemm::GROUP)
                                } else {
                                    std::ptr::copy_nonoverlapping(o.as_ptr(), dst, nr)
                                }
                            };
                        }
                    }
                    r0 += nr;
                }
                base += w.rows;
            }
        });
    });
}

fn fit_len(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Rows ahead of the one being multiplied that a single-token pass (decode) asks the cache
/// for: generation streams every weight once per token, and where the kernels are not far
/// from the memory bound the hardware prefetcher alone leaves them waiting (measured in
/// docs/BENCHMARKS.md, "AMD EPYC Zen 2"; 2 to 16 rows ahead measure the same).
const PREFETCH_ROWS: usize = 4;

/// Ask for `len` bytes of `data` from `start` (clipped to `data`) to be brought into cache.
#[inline]
fn prefetch(data: &[u8], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (start + len).min(data.len());
        let mut o = start;
        while o < end {
            // SAFETY: o < data.len(); a prefetch reads nothing and cannot fault.
            unsafe { std::arch::x86_64::_mm_prefetch(data.as_ptr().add(o) as *const i8, std::arch::x86_64::_MM_HINT_T0) };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start, len);
}

thread_local! {
    /// A thread's unpacked rows for the prompt tiles, reused from call to call.
    static PANEL: std::cell::RefCell<Vec<Unpacked>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The products of rows `range` of `w` with all `n` activation rows, TILE rows at a time:
/// groups of four tokens through the type's prompt tile kernel (several rows at once, the
/// chunk's rows unpacked once for all the groups) or its four-row kernel, the rest one by
/// one. Every path gives a pair the same bits, so a token's result does not depend on the
/// batch it is in.
fn rows_times_acts(w: &QMatrix, abytes: &[u8], scales: &[ActScales], arb: usize, n: usize, range: std::ops::Range<usize>, optr: SendPtr) {
    let rows = w.rows;
    let act = |t: usize| &abytes[t * arb..(t + 1) * arb];
    // SAFETY (every write): r is in this thread's range and t < n, so the element is in
    // bounds and no other thread writes it.
    let put = |t: usize, r: usize, v: f32| unsafe { *optr.0.add(t * rows + r) = v };
    let blocks = w.row_bytes / w.ty.block_bytes();
    let mut r0 = range.start;
    while r0 < range.end {
        let r1 = (r0 + TILE).min(range.end);
        let mut t = 0;
        if w.tile.is_some() || w.dot4.is_some() {
            // Rows r0..tiled go through the tile kernel, the rest through dot4.
            let tiled = match w.tile {
                Some(tile) if n >= 4 => r0 + (r1 - r0) / tile.rows * tile.rows,
                _ => r0,
            };
            PANEL.with_borrow_mut(|panel| {
                if let (Some(tile), true) = (w.tile, tiled > r0) {
                    panel.resize((tiled - r0) * blocks * tile.slots, Unpacked::default());
                    (tile.unpack)(&w.data[r0 * w.row_bytes..tiled * w.row_bytes], panel);
                }
                while t + 4 <= n {
                    let a = [act(t), act(t + 1), act(t + 2), act(t + 3)];
                    if let Some(tile) = w.tile {
                        // The activations' scales where the tile reads them (not the k-quants').
                        let sc = scales.get(t / 4 * blocks..(t / 4 + 1) * blocks).unwrap_or_default();
                        let row_slots = blocks * tile.slots;
                        for r in (r0..tiled).step_by(tile.rows) {
                            let p = &panel[(r - r0) * row_slots..(r - r0 + tile.rows) * row_slots];
                            let v = (tile.f)(p, a, sc);
                            for (k, vk) in v.iter().take(tile.rows).enumerate() {
                                for (j, &x) in vk.iter().enumerate() {
                                    put(t + j, r + k, x);
                                }
                            }
                        }
                    }
                    for r in tiled..r1 {
                        let v = match w.dot4 {
                            Some(dot4) => dot4(w.row(r), a),
                            None => a.map(|aj| (w.dot)(w.row(r), aj)),
                        };
                        for (j, x) in v.into_iter().enumerate() {
                            put(t + j, r, x);
                        }
                    }
                    t += 4;
                }
            });
        }
        for t in t..n {
            for r in r0..r1 {
                if t == 0 {
                    // No tile or four-token pass read these rows: stream them ahead.
                    prefetch(w.data, (r + PREFETCH_ROWS) * w.row_bytes, w.row_bytes);
                }
                put(t, r, (w.dot)(w.row(r), act(t)));
            }
        }
        r0 = r1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::quantize_weights_q8_0;

    /// A token's products do not depend on the batch it is in: prompt tiles, four-row
    /// kernels and single rows give it the same bits (what deterministic serving rests on).
    #[test]
    fn a_tokens_products_are_the_same_bits_in_any_batch() {
        use GgmlType::*;
        let (rows, cols, n) = (44, 512, 11);
        let mut rng = crate::dot::tests::Lcg(21);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f32()).collect();
        for (ty, isa) in
            [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K].into_iter().flat_map(|ty| Isa::available().into_iter().map(move |i| (ty, i)))
        {
            let data: Vec<u8> = (0..rows).flat_map(|_| crate::dot::tests::random_row(ty, cols, &mut rng)).collect();
            let w = QMatrix::new(ty, rows, cols, &data, isa).unwrap();
            let pool = Pool::new(2);
            let mut all = vec![0f32; n * rows];
            matmul(&pool, &w, &x, n, &mut ActBuf::default(), &mut all);
            for (start, len) in [(0, 1), (3, 1), (10, 1), (2, 4), (1, 5), (5, 6)] {
                let mut part = vec![0f32; len * rows];
                matmul(&pool, &w, &x[start * cols..(start + len) * cols], len, &mut ActBuf::default(), &mut part);
                for (i, (a, b)) in part.iter().zip(&all[start * rows..]).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{ty} {isa:?}: token {} row {} in a batch of {len}", start + i / rows, i % rows);
                }
            }
        }
    }

    /// A batch of both kinds of token: prompt tokens through the dense path give the same
    /// bits in any batch and any mix (and as many threads), generated ones the same bits as
    /// the quantized path alone; both are near the exact product.
    #[test]
    fn split_batches_keep_each_kinds_bits() {
        use GgmlType::*;
        let (rows, cols, n) = (37, 256, 10);
        let mut rng = crate::dot::tests::Lcg(5);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f32()).collect();
        let kinds: Vec<bool> = (0..n).map(|t| t % 3 != 1).collect();
        for (ty, isa) in
            [F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K].into_iter().flat_map(|ty| Isa::available().into_iter().map(move |i| (ty, i)))
        {
            let data: Vec<u8> = (0..rows).flat_map(|_| crate::dot::tests::random_row(ty, cols, &mut rng)).collect();
            let w = QMatrix::new(ty, rows, cols, &data, isa).unwrap().with_dense_prompts(true);
            let mut wf = vec![0f32; rows * cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut wf[r * cols..(r + 1) * cols]);
            }
            let mut all = vec![0f32; n * rows];
            matmul_split(&Pool::new(2), &mut [(&w, &mut all[..])], &x, n, &kinds, &mut ActBuf::default());
            let mut quantized = vec![0f32; n * rows];
            matmul(&Pool::new(1), &w, &x, n, &mut ActBuf::default(), &mut quantized);
            for t in 0..n {
                // The token alone, as a prompt token or a generated one, on one thread.
                let mut one = vec![0f32; rows];
                matmul_split(&Pool::new(1), &mut [(&w, &mut one[..])], &x[t * cols..(t + 1) * cols], 1, &kinds[t..t + 1], &mut ActBuf::default());
                let want = if kinds[t] { &one[..] } else { &quantized[t * rows..(t + 1) * rows] };
                for r in 0..rows {
                    let got = all[t * rows + r];
                    assert_eq!(got.to_bits(), one[r].to_bits(), "{ty} {isa:?}: token {t} row {r} alone");
                    assert_eq!(got.to_bits(), want[r].to_bits(), "{ty} {isa:?}: token {t} row {r} by kind");
                    let terms = (0..cols).map(|k| wf[r * cols + k] as f64 * x[t * cols + k] as f64);
                    let (exact, mass): (f64, f64) = (terms.clone().sum(), terms.map(f64::abs).sum());
                    // f32 sums against the activations quantized to 8 bits.
                    let tol = if kinds[t] { 1e-5 } else { 2e-2 } * mass;
                    assert!((got as f64 - exact).abs() < tol, "{ty} {isa:?}: token {t} row {r}: {got} vs {exact}");
                }
            }
        }
    }

    /// The int8 prompt path in a batch of both kinds: a prompt token's products are
    /// [`gemm::products_scalar`]'s bits alone, in any batch and on any number of threads;
    /// generated tokens keep the quantized path's bits.
    #[test]
    fn int8_prompts_keep_each_kinds_bits() {
        use GgmlType::*;
        let levels: Vec<Isa> = [Isa::Avx2, Isa::Vnni].into_iter().filter(|&isa| gemm::supported(Q4_0, isa)).collect();
        if levels.is_empty() {
            eprintln!("no AVX2 on this CPU: the int8 prompt path is not used here");
            return;
        }
        let (rows, cols, n) = (45, 512, 21);
        let mut rng = crate::dot::tests::Lcg(17);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f32()).collect();
        let kinds: Vec<bool> = (0..n).map(|t| t % 5 != 2).collect();
        for (ty, isa) in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K].into_iter().flat_map(|ty| levels.iter().map(move |&isa| (ty, isa))) {
            let data: Vec<u8> = (0..rows).flat_map(|_| crate::dot::tests::random_row(ty, cols, &mut rng)).collect();
            let w = QMatrix::new(ty, rows, cols, &data, isa).unwrap().with_dense_prompts(false).with_gemm_prompts(true);
            assert!(w.gemm_prompts());
            let at = gemm::act_type(ty);
            let mut a = vec![0u8; at.row_bytes(cols)];
            let mut quantized = vec![0f32; n * rows];
            matmul(&Pool::new(1), &w, &x, n, &mut ActBuf::default(), &mut quantized);
            for threads in [1, 2, 3] {
                let mut all = vec![0f32; n * rows];
                // Two matrices in one pass (the second a copy), so groups cross a boundary.
                let mut again = vec![0f32; n * rows];
                matmul_split(&Pool::new(threads), &mut [(&w, &mut all[..]), (&w, &mut again[..])], &x, n, &kinds, &mut ActBuf::default());
                assert_eq!(all, again);
                for t in 0..n {
                    at.quantize(&x[t * cols..(t + 1) * cols], &mut a);
                    for r in 0..rows {
                        let got = all[t * rows + r];
                        let want = if kinds[t] { gemm::products_scalar(ty, w.row(r), &a) } else { quantized[t * rows + r] };
                        assert_eq!(got.to_bits(), want.to_bits(), "{ty} at {} on {threads} threads: token {t} row {r}", isa.as_str());
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_matches_naive() {
        let (rows, cols, n) = (37, 64, 9);
        let wf: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5).collect();
        let wq = quantize_weights_q8_0(&wf);
        let bytes = crate::blocks::block_bytes(&wq);
        let w = QMatrix::new(GgmlType::Q8_0, rows, cols, bytes, Isa::detect()).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5).collect();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut out = vec![0f32; n * rows];
            matmul(&pool, &w, &x, n, &mut ActBuf::default(), &mut out);
            // The same matrix twice through matmul_many gives the same products.
            let (mut o1, mut o2) = (vec![0f32; n * rows], vec![0f32; n * rows]);
            matmul_many(&pool, &mut [(&w, &mut o1[..]), (&w, &mut o2[..])], &x, n, &mut ActBuf::default());
            assert_eq!(o1, out);
            assert_eq!(o2, out);
            for t in 0..n {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|k| wf[r * cols + k] * x[t * cols + k]).sum();
                    assert!((out[t * rows + r] - want).abs() < 0.05, "t{t} r{r}: {} vs {want}", out[t * rows + r]);
                }
            }
        }
    }
}

//! Attention of a batch of query tokens over their sequences' KV caches, computed in tiles
//! with an online softmax (flash attention on the CPU, as llama.cpp's `-fa`): no score
//! matrix is materialised beyond one block of keys per query row.
//!
//! ```text
//! job   = one query tile × one KV head: up to QT consecutive tokens of a sequence, times the
//!         `group` query heads that share the KV head → rows = tokens · group
//! chunk = KEY_CHUNK absolute key positions; a job's rows go through the chunks their
//!         causal (and sliding-window) ranges touch
//! block = KB keys of a chunk, dequantized to f32 once per job and used by every row (a
//!         job of a few rows over an f16 cache, as in decoding, converts in registers instead):
//!         S = Q·K_blockᵀ · scale for all rows (two rows × four keys per kernel step), then
//!         each row's running (max m, sum l) update and P = e^(S - m), then O += P·V_block
//!         for all rows (two rows × 32 columns per step)
//! ```
//!
//! Every chunk starts a fresh state and states combine in chunk order, so a job can run its
//! chunks one after another (prompts: many jobs) or the chunks of one job can be spread
//! over threads and combined afterwards (decoding: few jobs, a deep cache) with the same
//! arithmetic. A row's result therefore depends only on its query, its position and the
//! cache, never on the batch around it, the thread count or the schedule (tested bit for
//! bit below).

use crate::blocks::{f16_to_f32, f32_to_f16};
use crate::dot::Isa;
use crate::pool::Pool;
use crate::pool::SendPtr;
use crate::quantize::{round_even, signed_absmax};
use gguf::GgmlType;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Keys per block (dequantized together).
pub const KB: usize = 32;
/// Keys per chunk: partial states start and combine at multiples of this absolute position.
pub const KEY_CHUNK: usize = 256;
/// Most tokens of a query tile.
pub const QT: usize = 16;
/// Width of the dot-product accumulators (one AVX2 vector).
const LANES: usize = 8;
/// Floats of split-mode partial states beyond which jobs run their chunks in order instead.
const MAX_PARTIAL: usize = 1 << 22;

/// How K or V rows are stored in the cache (llama.cpp's `-ctk` / `-ctv` types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    #[default]
    F16,
    /// Blocks of 32: an f16 scale and 32 signed bytes.
    Q8_0,
    /// Blocks of 32: an f16 scale and 32 four-bit values around 8.
    Q4_0,
}

impl CacheType {
    pub const ALL: [CacheType; 3] = [CacheType::F16, CacheType::Q8_0, CacheType::Q4_0];

    /// `f16`, `q8_0` or `q4_0` (any case).
    pub fn parse(s: &str) -> Option<CacheType> {
        CacheType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheType::F16 => "f16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q4_0 => "q4_0",
        }
    }

    /// Elements per block: a head's dimension must be a multiple of it.
    pub fn block_len(self) -> usize {
        match self {
            CacheType::F16 => 1,
            CacheType::Q8_0 | CacheType::Q4_0 => 32,
        }
    }

    /// Bytes of `n` elements (`n` a multiple of [`CacheType::block_len`]).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            CacheType::F16 => 2 * n,
            CacheType::Q8_0 => n / 32 * 34,
            CacheType::Q4_0 => n / 32 * 18,
        }
    }

    /// Store `src` into `dst` (`row_bytes(src.len())` bytes), rounding as ggml's copy into a
    /// cache of this type does (`quantize_row_q8_0`, `quantize_row_q4_0_ref`).
    pub fn store(self, src: &[f32], dst: &mut [u8]) {
        match self {
            CacheType::F16 => {
                for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                    d.copy_from_slice(&f32_to_f16(s).to_le_bytes());
                }
            }
            CacheType::Q8_0 => {
                for (b, xs) in dst.chunks_exact_mut(34).zip(src.chunks_exact(32)) {
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    b[..2].copy_from_slice(&f32_to_f16(amax / 127.0).to_le_bytes());
                    for (q, v) in b[2..].iter_mut().zip(xs) {
                        *q = round_even(v * id) as i8 as u8;
                    }
                }
            }
            CacheType::Q4_0 => {
                for (b, xs) in dst.chunks_exact_mut(18).zip(src.chunks_exact(32)) {
                    let d = signed_absmax(xs) / -8.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    b[..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                    for j in 0..16 {
                        let q0 = ((xs[j] * id + 8.5) as i32).min(15) as u8;
                        let q1 = ((xs[j + 16] * id + 8.5) as i32).min(15) as u8;
                        b[2 + j] = q0 | (q1 << 4);
                    }
                }
            }
        }
    }

    /// The ggml tensor type of the same layout.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            CacheType::F16 => GgmlType::F16,
            CacheType::Q8_0 => GgmlType::Q8_0,
            CacheType::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// Read `dst.len()` elements back from `src` (exactly their bytes).
    pub fn load(self, src: &[u8], dst: &mut [f32]) {
        crate::dequant::dequantize_row(self.ggml_type(), src, dst)
    }
}

/// An orthonormal Walsh-Hadamard rotation of each block of `n` elements of `x` (`n` a power
/// of two; Sylvester's order, scaled by `1/√n`, as llama.cpp's `ggml_gen_hadamard`). It is
/// its own inverse, and rotating both `q` and `k` leaves `q·k` unchanged while spreading
/// outliers over the block, so a quantized cache loses less (llama.cpp's `attn_rot`).
pub fn rotate(x: &mut [f32], n: usize) {
    debug_assert!(n.is_power_of_two());
    let scale = 1.0 / (n as f32).sqrt();
    for b in x.chunks_exact_mut(n) {
        let mut h = 1;
        while h < n {
            for i in (0..n).step_by(2 * h) {
                for j in i..i + h {
                    let (a, c) = (b[j], b[j + h]);
                    b[j] = a + c;
                    b[j + h] = a - c;
                }
            }
            h *= 2;
        }
        b.iter_mut().for_each(|v| *v *= scale);
    }
}

impl CacheType {
    /// The block size llama.cpp rotates K heads (and queries) by before storing them in a
    /// cache of this type: none for f16; else the largest power of two from 64 that divides
    /// the head size, when 64 does.
    pub fn k_rotation(self, head_dim: usize) -> Option<usize> {
        if self == CacheType::F16 || !head_dim.is_multiple_of(64) {
            return None;
        }
        let mut n = 64;
        while head_dim.is_multiple_of(2 * n) {
            n *= 2;
        }
        Some(n)
    }

    /// The block size llama.cpp rotates V heads by (and the attention output back): 64 when
    /// it divides the head size of a quantized cache.
    pub fn v_rotation(self, head_dim_v: usize) -> Option<usize> {
        (self != CacheType::F16 && head_dim_v.is_multiple_of(64)).then_some(64)
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The heads of one layer.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Dimension of a query/key head.
    pub head_dim: usize,
    /// Dimension of a value head.
    pub head_dim_v: usize,
    /// Multiplies `q·k`.
    pub scale: f32,
    /// Sliding window: a token at position `p` sees keys `p + 1 - w ..= p`.
    pub window: Option<usize>,
}

/// One layer of one sequence's cache: K `[rows, n_head_kv · head_dim]` and V
/// `[rows, n_head_kv · head_dim_v]`, each row one position in its type's bytes. Position
/// `p` is in row `p % rows`: a cache with a row per position has `rows` above every
/// position, a sliding-window ring (a multiple of [`KB`] rows) reuses rows.
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    pub k: &'a [u8],
    pub v: &'a [u8],
    pub k_type: CacheType,
    pub v_type: CacheType,
    pub rows: usize,
}

/// A query tile of one KV head.
#[derive(Debug, Clone, Copy)]
struct Job {
    seq: usize,
    /// First batch token; the tile is tokens `t0 .. t0 + n` at positions `p0 .. p0 + n`.
    t0: usize,
    n: usize,
    p0: usize,
    g: usize,
    /// Chunks `c0 ..= c1` hold the tile's keys.
    c0: usize,
    c1: usize,
    /// Split mode: where this job's partial states start in `Scratch::partial`.
    partial: usize,
}

/// Buffers of [`attention`], reused across calls.
#[derive(Default)]
pub struct Scratch {
    jobs: Vec<Job>,
    /// Split mode: (job, chunk) pairs.
    items: Vec<(usize, usize)>,
    thread: Vec<f32>,
    partial: Vec<f32>,
}

/// Everything a job reads.
struct Ctx<'c, 'a> {
    shape: Shape,
    group: usize,
    q: &'c [f32],
    kv: &'c (dyn Fn(usize) -> KvView<'a> + Sync),
}

/// Attention of every batch token over its own sequence's cache, whose rows up to the
/// token's position are already written. `q` `[T, n_head · head_dim]`; token `t` belongs to
/// sequence `seq[t]` at position `pos[t]` (a sequence's tokens in order); `kv(s)` gives
/// sequence `s`'s layer. Writes `out` `[T, n_head · head_dim_v]`.
#[allow(clippy::too_many_arguments)]
pub fn attention<'a>(
    pool: &Pool,
    isa: Isa,
    shape: &Shape,
    q: &[f32],
    seq: &[usize],
    pos: &[usize],
    kv: &(dyn Fn(usize) -> KvView<'a> + Sync),
    out: &mut [f32],
    s: &mut Scratch,
) {
    let (hd, hdv) = (shape.head_dim, shape.head_dim_v);
    let group = shape.n_head / shape.n_head_kv;
    let t_n = seq.len();
    assert!(q.len() >= t_n * shape.n_head * hd && out.len() >= t_n * shape.n_head * hdv && pos.len() == t_n);
    // Tiles: runs of consecutive positions of one sequence, cut at QT tokens.
    s.jobs.clear();
    let mut t = 0;
    while t < t_n {
        let mut n = 1;
        while n < QT && t + n < t_n && seq[t + n] == seq[t] && pos[t + n] == pos[t] + n {
            n += 1;
        }
        let lo = window_start(shape.window, pos[t]);
        let (c0, c1) = (lo / KEY_CHUNK, (pos[t] + n - 1) / KEY_CHUNK);
        for g in 0..shape.n_head_kv {
            s.jobs.push(Job { seq: seq[t], t0: t, n, p0: pos[t], g, c0, c1, partial: 0 });
        }
        t += n;
    }
    let state = hdv + 2;
    let rows_max = QT * group;
    let per_thread = thread_floats(hd, hdv, group);
    let nt = pool.n_threads();
    if s.thread.len() < nt * per_thread {
        s.thread.resize(nt * per_thread, 0.0);
    }
    // Split mode: few jobs for the threads; their chunks are spread and combined after.
    let mut split = false;
    if nt > 1 && s.jobs.len() < 2 * nt {
        let mut total = 0;
        s.items.clear();
        for (j, job) in s.jobs.iter_mut().enumerate() {
            job.partial = total;
            total += (job.c1 - job.c0 + 1) * job.n * group * state;
            s.items.extend((job.c0..=job.c1).map(|c| (j, c)));
        }
        split = s.items.len() > s.jobs.len() && total <= MAX_PARTIAL;
        if split && s.partial.len() < total {
            s.partial.resize(total, 0.0);
        }
    }
    let ctx = Ctx { shape: *shape, group, q, kv };
    let (jobs, items) = (&s.jobs, &s.items);
    let thread = SendPtr(s.thread.as_mut_ptr());
    let partial = SendPtr(s.partial.as_mut_ptr());
    let outp = SendPtr(out.as_mut_ptr());
    // SAFETY (all three): thread slot `ti` owns its region of the scratch.
    let buf_of = |ti: usize| unsafe { std::slice::from_raw_parts_mut(thread.get().add(ti * per_thread), per_thread) };
    let next = AtomicUsize::new(0);
    if split {
        pool.run(|ti, _| {
            let buf = buf_of(ti);
            while let Some(&(j, c)) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                let job = &jobs[j];
                let len = job.n * group * state;
                // SAFETY: each (job, chunk) item owns its partial region.
                let dst = unsafe { std::slice::from_raw_parts_mut(partial.get().add(job.partial + (c - job.c0) * len), len) };
                chunk_at(isa, &ctx, job, c, dst, buf);
            }
        });
        let next = AtomicUsize::new(0);
        pool.run(|ti, _| {
            let buf = buf_of(ti);
            while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let len = job.n * group * state;
                let running = &mut buf[..len];
                empty(running, state);
                for c in job.c0..=job.c1 {
                    // SAFETY: written by the first phase; read-only now.
                    let p = unsafe { std::slice::from_raw_parts(partial.get().add(job.partial + (c - job.c0) * len), len) };
                    combine_rows(isa, running, p, state);
                }
                finish(&ctx, job, running, outp);
            }
        });
    } else {
        pool.run(|ti, _| {
            let buf = buf_of(ti);
            while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let len = job.n * group * state;
                let (running, rest) = buf.split_at_mut(rows_max * state);
                let (chunk, rest) = rest.split_at_mut(rows_max * state);
                let (running, chunk) = (&mut running[..len], &mut chunk[..len]);
                empty(running, state);
                for c in job.c0..=job.c1 {
                    chunk_at(isa, &ctx, job, c, chunk, rest);
                    combine_rows(isa, running, chunk, state);
                }
                finish(&ctx, job, running, outp);
            }
        });
    }
}

/// Floats of one thread's scratch for heads of `head_dim` / `head_dim_v` with `group` query
/// heads per KV head: a block of K and V in f32, the scores and probabilities of a tile's
/// rows, and those rows' running and chunk states.
pub fn thread_floats(head_dim: usize, head_dim_v: usize, group: usize) -> usize {
    let rows = QT * group;
    KB * (head_dim + head_dim_v) + 2 * rows * KB + 2 * rows * (head_dim_v + 2)
}

fn window_start(window: Option<usize>, p: usize) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

/// Rows with no keys yet: `m = -inf`, `l = 0`, `o = 0`. Each row is `[m, l, o..]`.
fn empty(rows: &mut [f32], state: usize) {
    for r in rows.chunks_exact_mut(state) {
        r[0] = f32::NEG_INFINITY;
        r[1..].fill(0.0);
    }
}

/// Write `o / l` of each row to its (token, head) place in the output.
fn finish(ctx: &Ctx<'_, '_>, job: &Job, rows: &[f32], out: SendPtr) {
    let hdv = ctx.shape.head_dim_v;
    for (r, st) in rows.chunks_exact(hdv + 2).enumerate() {
        let (i, hh) = (r / ctx.group, r % ctx.group);
        let h = job.g * ctx.group + hh;
        let inv = 1.0 / st[1];
        // SAFETY: (token, head) belongs to this job alone; the slice is inside `out`.
        let o = unsafe { std::slice::from_raw_parts_mut(out.get().add((job.t0 + i) * ctx.shape.n_head * hdv + h * hdv), hdv) };
        for (d, &v) in o.iter_mut().zip(&st[2..]) {
            *d = v * inv;
        }
    }
}

/// A block's K or V rows as the kernels read them.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// The block's f32 copy: row `j` at element `j · width`.
    F32(&'a [f32]),
    /// An f16 cache read in place (small jobs, where a copy would cost more than it saves):
    /// row `j` at byte `j · stride`.
    F16 { bytes: &'a [u8], stride: usize },
}

impl Rows<'_> {
    /// Elements `d .. d + N` of row `j`, in rows of `width` elements. Converting f16 is exact,
    /// so both forms give the kernels the same values.
    #[inline(always)]
    fn get<const N: usize>(self, j: usize, d: usize, width: usize) -> [f32; N] {
        match self {
            Rows::F32(f) => f[j * width + d..][..N].try_into().expect("lanes"),
            Rows::F16 { bytes, stride } => std::array::from_fn(|i| {
                let at = j * stride + 2 * (d + i);
                f16_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
            }),
        }
    }
}

/// The arithmetic one instruction-set level compiles the kernels with: the portable
/// versions by default, overridden where a level has explicit SIMD. Each level uses one
/// version of each piece for every batch, which is what keeps results batch-invariant.
trait Level: Sized {
    fn fma(a: f32, b: f32, c: f32) -> f32;
    fn load(t: CacheType, src: &[u8], dst: &mut [f32]) {
        t.load(src, dst)
    }
    /// Ask for the cache lines of `bytes` ahead of their use (a hint; no effect on results).
    fn prefetch(_bytes: &[u8]) {}
    /// See [`scores`].
    fn scores<const R: usize>(qs: [&[f32]; R], k: Rows<'_>, hd: usize, a: usize, e: usize, scale: f32, out: [&mut [f32]; R]) {
        scores::<Self, R>(qs, k, hd, a, e, scale, out)
    }
    /// `p[j] = e^(s[j] - m)` for `j` in `a..e`, zero elsewhere in the block.
    fn exps(s: &[f32], m: f32, a: usize, e: usize, p: &mut [f32]) {
        p[..a].fill(0.0);
        p[e..KB].fill(0.0);
        for (pj, &sj) in p[a..e].iter_mut().zip(&s[a..e]) {
            *pj = exp(sj - m);
        }
    }
    /// The largest of `s[a..e]`.
    fn max(s: &[f32], a: usize, e: usize) -> f32 {
        s[a..e].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
    }
    /// See [`pv`].
    fn pv<const R: usize>(o: [&mut [f32]; R], p: [&[f32]; R], v: Rows<'_>, hdv: usize, a: usize, e: usize) {
        pv::<Self, R>(o, p, v, hdv, a, e)
    }
    /// Jobs of at most this many rows read an f16 cache in place ([`Rows::F16`]) instead of
    /// copying each block to f32 first.
    const DIRECT_ROWS: usize = 0;
}

/// No fused multiply-add (the scalar level).
struct Plain;
impl Level for Plain {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Fused multiply-add in hardware (aarch64's `fmla`).
#[cfg(target_arch = "aarch64")]
struct Fused;
#[cfg(target_arch = "aarch64")]
impl Level for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// AVX2 with FMA and F16C (every x86 SIMD level).
#[cfg(target_arch = "x86_64")]
struct Avx2;
#[cfg(target_arch = "x86_64")]
impl Level for Avx2 {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn load(t: CacheType, src: &[u8], dst: &mut [f32]) {
        match t {
            // SAFETY (all): only compiled into functions with AVX2, FMA and F16C enabled.
            CacheType::F16 => unsafe { x86::load_f16(src, dst) },
            _ => t.load(src, dst),
        }
    }
    #[inline(always)]
    fn prefetch(bytes: &[u8]) {
        for at in (0..bytes.len()).step_by(64) {
            // SAFETY: a prefetch of an address inside the slice.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(bytes.as_ptr().add(at) as *const i8) };
        }
    }
    #[inline(always)]
    fn scores<const R: usize>(qs: [&[f32]; R], k: Rows<'_>, hd: usize, a: usize, e: usize, scale: f32, out: [&mut [f32]; R]) {
        if hd.is_multiple_of(8) {
            match k {
                Rows::F32(f) => unsafe { x86::scores::<x86::F32Rows, R>(qs, x86::F32Rows::new(f, hd, e), hd, a, e, scale, out) },
                Rows::F16 { bytes, stride } => unsafe { x86::scores::<x86::F16Rows, R>(qs, x86::F16Rows::new(bytes, stride, hd, e), hd, a, e, scale, out) },
            }
        } else {
            scores::<Self, R>(qs, k, hd, a, e, scale, out)
        }
    }
    #[inline(always)]
    fn exps(s: &[f32], m: f32, a: usize, e: usize, p: &mut [f32]) {
        unsafe { x86::exps(s, m, a, e, p) }
    }
    #[inline(always)]
    fn max(s: &[f32], a: usize, e: usize) -> f32 {
        unsafe { x86::max(s, a, e) }
    }
    #[inline(always)]
    fn pv<const R: usize>(o: [&mut [f32]; R], p: [&[f32]; R], v: Rows<'_>, hdv: usize, a: usize, e: usize) {
        if hdv.is_multiple_of(8) {
            match v {
                Rows::F32(f) => unsafe { x86::pv::<x86::F32Rows, R>(o, p, x86::F32Rows::new(f, hdv, e), hdv, a, e) },
                Rows::F16 { bytes, stride } => unsafe { x86::pv::<x86::F16Rows, R>(o, p, x86::F16Rows::new(bytes, stride, hdv, e), hdv, a, e) },
            }
        } else {
            pv::<Self, R>(o, p, v, hdv, a, e)
        }
    }
    const DIRECT_ROWS: usize = 8;
}

fn chunk_at(isa: Isa, ctx: &Ctx<'_, '_>, job: &Job, c: usize, st: &mut [f32], buf: &mut [f32]) {
    match isa {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Vnni => unsafe { x86::chunk(ctx, job, c, st, buf) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot | Isa::NeonI8mm => chunk::<Fused>(ctx, job, c, st, buf),
        _ => chunk::<Plain>(ctx, job, c, st, buf),
    }
}

fn combine_rows(isa: Isa, running: &mut [f32], part: &[f32], state: usize) {
    match isa {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Vnni => unsafe { x86::combine(running, part, state) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon | Isa::NeonDot | Isa::NeonI8mm => combine::<Fused>(running, part, state),
        _ => combine::<Plain>(running, part, state),
    }
}

/// Fold each row's chunk state `part` into its running state (chunks in order).
#[inline(always)]
fn combine<L: Level>(running: &mut [f32], part: &[f32], state: usize) {
    for (r, p) in running.chunks_exact_mut(state).zip(part.chunks_exact(state)) {
        if p[0] == f32::NEG_INFINITY {
            continue; // the chunk had no keys for this row
        }
        if r[0] == f32::NEG_INFINITY {
            r.copy_from_slice(p);
            continue;
        }
        let m = r[0].max(p[0]);
        let (a, b) = (exp(r[0] - m), exp(p[0] - m));
        r[0] = m;
        for (x, &y) in r[1..].iter_mut().zip(&p[1..]) {
            *x = L::fma(y, b, *x * a);
        }
    }
}

/// One chunk of a job from a fresh state: `st` `[rows, 2 + hdv]` (rows token-major, the
/// group's heads within a token).
#[inline(always)]
fn chunk<L: Level>(ctx: &Ctx<'_, '_>, job: &Job, c: usize, st: &mut [f32], buf: &mut [f32]) {
    let sh = &ctx.shape;
    let (hd, hdv, group) = (sh.head_dim, sh.head_dim_v, ctx.group);
    let state = hdv + 2;
    let qd = sh.n_head * hd;
    let rows = job.n * group;
    empty(st, state);
    let (kf, rest) = buf.split_at_mut(KB * hd);
    let (vf, rest) = rest.split_at_mut(KB * hdv);
    let (s, rest) = rest.split_at_mut(rows * KB);
    let p = &mut rest[..rows * KB];
    let view = (ctx.kv)(job.seq);
    let (kh, vh) = (view.k_type.row_bytes(hd), view.v_type.row_bytes(hdv));
    let (krow, vrow) = (kh * sh.n_head_kv, vh * sh.n_head_kv);
    let end = job.p0 + job.n; // keys below this are in the cache
    let lo_min = window_start(sh.window, job.p0);
    let c_end = ((c + 1) * KEY_CHUNK).min(end);
    // Row `r`'s query: token `r / group`, head `r % group` of the KV head's group.
    let q_of = |r: usize| &ctx.q[(job.t0 + r / group) * qd + (job.g * group + r % group) * hd..][..hd];
    let direct = rows <= L::DIRECT_ROWS && view.k_type == CacheType::F16 && view.v_type == CacheType::F16;
    let mut b0 = (c * KEY_CHUNK).max(lo_min / KB * KB);
    while b0 < c_end {
        let kn = KB.min(c_end - b0);
        // The keys of this block token `i` sees, as offsets `a..e` into the block.
        let range = |i: usize| {
            let p_i = job.p0 + i;
            (window_start(sh.window, p_i).max(b0).saturating_sub(b0), (p_i + 1).min(b0 + kn).saturating_sub(b0))
        };
        // Every row's scores and products span the union of the tokens' ranges.
        let (mut lo, mut hi) = (KB, 0);
        for i in 0..job.n {
            let (a, e) = range(i);
            if a < e {
                (lo, hi) = (lo.min(a), hi.max(e));
            }
        }
        if lo >= hi {
            b0 += KB;
            continue;
        }
        // The next block's rows (of this chunk or the next) while this one computes.
        for at in b0 + KB..(b0 + 2 * KB).min(end) {
            let at = at % view.rows;
            L::prefetch(&view.k[at * krow + job.g * kh..][..kh]);
            L::prefetch(&view.v[at * vrow + job.g * vh..][..vh]);
        }
        // The block's rows: consecutive, since a ring's rows are a multiple of KB.
        let r0 = b0 % view.rows;
        let (kr, vr) = if direct {
            (Rows::F16 { bytes: &view.k[r0 * krow + job.g * kh..], stride: krow }, Rows::F16 { bytes: &view.v[r0 * vrow + job.g * vh..], stride: vrow })
        } else {
            for j in lo..hi {
                let at = r0 + j;
                L::load(view.k_type, &view.k[at * krow + job.g * kh..][..kh], &mut kf[j * hd..(j + 1) * hd]);
                L::load(view.v_type, &view.v[at * vrow + job.g * vh..][..vh], &mut vf[j * hdv..(j + 1) * hdv]);
            }
            (Rows::F32(kf), Rows::F32(vf))
        };
        // S = Q·Kᵀ · scale over keys lo..hi, two rows at a time.
        let mut r = 0;
        while r < rows {
            let s_r = &mut s[r * KB..];
            if r + 1 < rows {
                let (s0, s1) = s_r.split_at_mut(KB);
                L::scores::<2>([q_of(r), q_of(r + 1)], kr, hd, lo, hi, sh.scale, [s0, &mut s1[..KB]]);
                r += 2;
            } else {
                L::scores::<1>([q_of(r)], kr, hd, lo, hi, sh.scale, [&mut s_r[..KB]]);
                r += 1;
            }
        }
        // Each row's softmax step over its own keys; P is zero outside them.
        for r in 0..rows {
            let (a, e) = range(r / group);
            let pr = &mut p[r * KB..(r + 1) * KB];
            if a < e {
                step::<L>(&mut st[r * state..(r + 1) * state], &s[r * KB..(r + 1) * KB], pr, a, e);
            } else {
                pr.fill(0.0);
            }
        }
        // O += P·V over keys lo..hi, two rows at a time.
        let mut r = 0;
        while r < rows {
            let (o_r, o_rest) = st[r * state..].split_at_mut(state);
            if r + 1 < rows {
                L::pv::<2>([&mut o_r[2..], &mut o_rest[2..state]], [&p[r * KB..], &p[(r + 1) * KB..]], vr, hdv, lo, hi);
                r += 2;
            } else {
                L::pv::<1>([&mut o_r[2..]], [&p[r * KB..]], vr, hdv, lo, hi);
                r += 1;
            }
        }
        b0 += KB;
    }
}

/// `out[r][j] = (q_r · k_j) · scale` for keys `a..e` of the block `k` `[KB, hd]`: eight
/// lane accumulators over `hd`, summed in a fixed tree, so a pair's score is the same bits
/// whichever rows and keys it is computed beside.
#[inline(always)]
fn scores<L: Level, const R: usize>(qs: [&[f32]; R], kf: Rows<'_>, hd: usize, a: usize, e: usize, scale: f32, out: [&mut [f32]; R]) {
    let full = hd / LANES * LANES;
    let mut j = a;
    while j + 4 <= e {
        let mut acc = [[[0f32; LANES]; 4]; R];
        let mut d = 0;
        while d < full {
            for u in 0..4 {
                let k: [f32; LANES] = kf.get(j + u, d, hd);
                for (acc, q) in acc.iter_mut().zip(&qs) {
                    let q: &[f32; LANES] = q[d..d + LANES].try_into().expect("lanes");
                    for l in 0..LANES {
                        acc[u][l] = L::fma(q[l], k[l], acc[u][l]);
                    }
                }
            }
            d += LANES;
        }
        for r in 0..R {
            for u in 0..4 {
                out[r][j + u] = reduce::<L>(&acc[r][u], &qs[r][full..], kf, j + u, hd) * scale;
            }
        }
        j += 4;
    }
    while j < e {
        let mut acc = [[0f32; LANES]; R];
        let mut d = 0;
        while d < full {
            let k: [f32; LANES] = kf.get(j, d, hd);
            for r in 0..R {
                let q: &[f32; LANES] = qs[r][d..d + LANES].try_into().expect("lanes");
                for l in 0..LANES {
                    acc[r][l] = L::fma(q[l], k[l], acc[r][l]);
                }
            }
            d += LANES;
        }
        for r in 0..R {
            out[r][j] = reduce::<L>(&acc[r], &qs[r][full..], kf, j, hd) * scale;
        }
        j += 1;
    }
}

/// Lane accumulators to one sum (fixed tree), then the tail of key `j` beyond the lanes
/// (`q` holds the query's tail).
#[inline(always)]
fn reduce<L: Level>(acc: &[f32; LANES], q: &[f32], k: Rows<'_>, j: usize, hd: usize) -> f32 {
    let mut s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (i, &x) in q.iter().enumerate() {
        s = L::fma(x, k.get::<1>(j, hd - q.len() + i, hd)[0], s);
    }
    s
}

/// One row's online-softmax step over keys `a..e` of a block: scores `s`, the row's state
/// `st` `[m, l, o[hdv]]` (`o` rescaled to the new maximum here, the block's products added
/// by [`pv`] after); writes the block's probabilities `p` `[KB]`, zero outside `a..e`.
#[inline(always)]
fn step<L: Level>(st: &mut [f32], s: &[f32], p: &mut [f32], a: usize, e: usize) {
    let mb = L::max(s, a, e);
    let (m, o) = st.split_at_mut(2);
    if m[0] == f32::NEG_INFINITY {
        m[0] = mb;
    } else if mb > m[0] {
        let alpha = exp(m[0] - mb);
        m[1] *= alpha;
        o.iter_mut().for_each(|x| *x *= alpha);
        m[0] = mb;
    }
    L::exps(s, m[0], a, e, p);
    // A fixed tree over the whole block (masked keys are zeros), whatever `a..e` is.
    let mut lanes = [0f32; LANES];
    for blk in p[..KB].chunks_exact(LANES) {
        for l in 0..LANES {
            lanes[l] += blk[l];
        }
    }
    m[1] += ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

/// `o_r += Σ p_r[j] v_j` over keys `a..e` of the block `v` `[KB, hdv]`, for R rows: one
/// fused chain per element, in key order (a zero `p` leaves an element as it was, so rows
/// whose own keys are fewer get the same bits as alone).
#[inline(always)]
fn pv<L: Level, const R: usize>(o: [&mut [f32]; R], p: [&[f32]; R], v: Rows<'_>, hdv: usize, a: usize, e: usize) {
    let Rows::F32(vf) = v else {
        // In place (f16): element by element, in the same order.
        for (o, p) in o.into_iter().zip(p) {
            for (j, &pj) in p.iter().enumerate().take(e).skip(a) {
                for (c, x) in o.iter_mut().enumerate().take(hdv) {
                    *x = L::fma(pj, v.get::<1>(j, c, hdv)[0], *x);
                }
            }
        }
        return;
    };
    for (o, p) in o.into_iter().zip(p) {
        let mut j = a;
        while j + 4 <= e {
            let (v0, v1, v2, v3) = (&vf[j * hdv..][..hdv], &vf[(j + 1) * hdv..][..hdv], &vf[(j + 2) * hdv..][..hdv], &vf[(j + 3) * hdv..][..hdv]);
            let (p0, p1, p2, p3) = (p[j], p[j + 1], p[j + 2], p[j + 3]);
            for (c, x) in o.iter_mut().enumerate().take(hdv) {
                *x = L::fma(p3, v3[c], L::fma(p2, v2[c], L::fma(p1, v1[c], L::fma(p0, v0[c], *x))));
            }
            j += 4;
        }
        while j < e {
            let (v, pj) = (&vf[j * hdv..][..hdv], p[j]);
            for (x, &vc) in o.iter_mut().zip(v) {
                *x = L::fma(pj, vc, *x);
            }
            j += 1;
        }
    }
}

/// `e^x` for `x <= 0` (Cephes' polynomial), from adds and multiplies alone so that it gives
/// the same bits in a vector loop or a scalar one.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12582912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut y = 1.987_569_1e-4;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 0.5;
    let y = y * r * r + r + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000); // n as an integer
    y * f32::from_bits(((k + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// f16 bits (little-endian bytes) to f32, eight at a time.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn load_f16(src: &[u8], dst: &mut [f32]) {
        let n = dst.len().min(src.len() / 2);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: 16 bytes at 2i and 8 floats at i are inside the slices.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        if i < n {
            CacheType::F16.load(&src[2 * i..2 * n], &mut dst[i..n]);
        }
    }

    /// Four scores' lane sums `[8]` each, reduced as `reduce` does:
    /// `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`, four at once.
    #[inline(always)]
    unsafe fn reduce4(acc: [__m256; 4]) -> __m128 {
        unsafe {
            let (a, b, c, d) = (half_sum(acc[0]), half_sum(acc[1]), half_sum(acc[2]), half_sum(acc[3]));
            let ab = _mm_add_ps(_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b)); // [a0+a2, b0+b2, a1+a3, b1+b3]
            let cd = _mm_add_ps(_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
            _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab))
        }
    }

    /// Eight scores' lane sums `[8]` each (`acc` A..H), reduced as `reduce` does, into one
    /// vector in the order A C E G B D F H: cross-half pairs, then lanes `0+2`, `1+3`,
    /// then the two, eight at once.
    #[inline(always)]
    unsafe fn reduce8(acc: [__m256; 8]) -> __m256 {
        unsafe {
            let half = |x: __m256, y: __m256| _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(x, y), _mm256_permute2f128_ps::<0x31>(x, y));
            let (ab, cd, ef, gh) = (half(acc[0], acc[1]), half(acc[2], acc[3]), half(acc[4], acc[5]), half(acc[6], acc[7]));
            // [sX0 sX1 sX2 sX3] → [tX0 tX1] with t0 = s0 + s2, t1 = s1 + s3.
            let u = _mm256_add_ps(_mm256_shuffle_ps::<0x44>(ab, cd), _mm256_shuffle_ps::<0xEE>(ab, cd));
            let w = _mm256_add_ps(_mm256_shuffle_ps::<0x44>(ef, gh), _mm256_shuffle_ps::<0xEE>(ef, gh));
            _mm256_add_ps(_mm256_shuffle_ps::<0x88>(u, w), _mm256_shuffle_ps::<0xDD>(u, w))
        }
    }

    /// Lanes `i + i+4`.
    #[inline(always)]
    unsafe fn half_sum(x: __m256) -> __m128 {
        unsafe { _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x)) }
    }

    /// One score's lane sum, the same tree as [`reduce4`].
    #[inline(always)]
    unsafe fn reduce1(acc: __m256) -> f32 {
        unsafe {
            let s = half_sum(acc);
            let mut v = [0f32; 4];
            _mm_storeu_ps(v.as_mut_ptr(), s);
            (v[0] + v[2]) + (v[1] + v[3])
        }
    }

    /// Where the kernels read a block's rows from, eight elements at a time.
    pub trait Src: Copy {
        /// Elements `d .. d + 8` of row `j` as f32 (the caller keeps `j` and `d + 8` inside
        /// the rows and width the source was made for).
        unsafe fn at(self, j: usize, d: usize) -> __m256;
    }

    /// The block's f32 copy.
    #[derive(Clone, Copy)]
    pub struct F32Rows {
        p: *const f32,
        width: usize,
    }

    impl F32Rows {
        /// `rows` rows of `width` elements in `f`.
        pub fn new(f: &[f32], width: usize, rows: usize) -> F32Rows {
            assert!(f.len() >= rows * width);
            F32Rows { p: f.as_ptr(), width }
        }
    }

    impl Src for F32Rows {
        #[inline(always)]
        unsafe fn at(self, j: usize, d: usize) -> __m256 {
            // SAFETY: inside the rows `new` checked (the caller's contract).
            unsafe { _mm256_loadu_ps(self.p.add(j * self.width + d)) }
        }
    }

    /// An f16 cache in place, converted in registers (exactly).
    #[derive(Clone, Copy)]
    pub struct F16Rows {
        p: *const u8,
        stride: usize,
    }

    impl F16Rows {
        /// `rows` rows of `width` f16 elements, `stride` bytes apart, in `bytes`.
        pub fn new(bytes: &[u8], stride: usize, width: usize, rows: usize) -> F16Rows {
            assert!(rows == 0 || bytes.len() >= (rows - 1) * stride + 2 * width);
            F16Rows { p: bytes.as_ptr(), stride }
        }
    }

    impl Src for F16Rows {
        #[inline(always)]
        unsafe fn at(self, j: usize, d: usize) -> __m256 {
            // SAFETY: inside the rows `new` checked (the caller's contract).
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(self.p.add(j * self.stride + 2 * d) as *const __m128i)) }
        }
    }

    /// `super::scores` for `hd % 8 == 0`: R rows against four keys at a time.
    #[inline(always)]
    pub unsafe fn scores<S: Src, const R: usize>(qs: [&[f32]; R], k: S, hd: usize, a: usize, e: usize, scale: f32, out: [&mut [f32]; R]) {
        assert!(qs.iter().all(|q| q.len() >= hd) && out.iter().all(|o| o.len() >= e));
        // SAFETY: keys below `e` of `k` (made for `e` rows of `hd`), `hd` of a query
        // (asserted).
        unsafe {
            let mut j = a;
            while j + 4 <= e {
                let mut acc = [[_mm256_setzero_ps(); 4]; R];
                let mut d = 0;
                while d < hd {
                    let k = [k.at(j, d), k.at(j + 1, d), k.at(j + 2, d), k.at(j + 3, d)];
                    for r in 0..R {
                        let q = _mm256_loadu_ps(qs[r].as_ptr().add(d));
                        for u in 0..4 {
                            acc[r][u] = _mm256_fmadd_ps(q, k[u], acc[r][u]);
                        }
                    }
                    d += 8;
                }
                if R == 2 {
                    let v =
                        _mm256_mul_ps(reduce8([acc[0][0], acc[1][0], acc[0][1], acc[1][1], acc[0][2], acc[1][2], acc[0][3], acc[1][3]]), _mm256_set1_ps(scale));
                    _mm_storeu_ps(out[0].as_ptr().add(j) as *mut f32, _mm256_castps256_ps128(v));
                    _mm_storeu_ps(out[1].as_ptr().add(j) as *mut f32, _mm256_extractf128_ps::<1>(v));
                } else {
                    for r in 0..R {
                        let v = _mm_mul_ps(reduce4(acc[r]), _mm_set1_ps(scale));
                        _mm_storeu_ps(out[r].as_ptr().add(j) as *mut f32, v);
                    }
                }
                j += 4;
            }
            while j < e {
                let mut acc = [_mm256_setzero_ps(); R];
                let mut d = 0;
                while d < hd {
                    let k = k.at(j, d);
                    for r in 0..R {
                        acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[r].as_ptr().add(d)), k, acc[r]);
                    }
                    d += 8;
                }
                for r in 0..R {
                    *(out[r].as_ptr().add(j) as *mut f32) = reduce1(acc[r]) * scale;
                }
                j += 1;
            }
        }
    }

    /// `super::exp` on eight lanes (the same operations, so the same bits).
    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        unsafe {
            let magic = _mm256_set1_ps(12582912.0);
            let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
            let t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)), magic);
            let n = _mm256_sub_ps(t, magic);
            let r = _mm256_add_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693_359_4))), _mm256_mul_ps(n, _mm256_set1_ps(2.121_944_4e-4)));
            let mut y = _mm256_set1_ps(1.987_569_1e-4);
            y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.398_199_9e-3));
            y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(8.333_452e-3));
            y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(4.166_579_6e-2));
            y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.666_666_5e-1));
            y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(0.5));
            let y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(y, r), r), r), _mm256_set1_ps(1.0));
            let k = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B40_0000));
            let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(k, _mm256_set1_epi32(127)));
            _mm256_mul_ps(y, _mm256_castsi256_ps(scale))
        }
    }

    /// `Level::exps`: whole vectors of the block, then zeros outside `a..e`.
    #[inline(always)]
    pub unsafe fn exps(s: &[f32], m: f32, a: usize, e: usize, p: &mut [f32]) {
        assert!(s.len() >= KB && p.len() >= KB);
        // SAFETY: lanes `a / 8 * 8 .. e` rounded up to 8 stay inside the block (KB = 32).
        unsafe {
            let mv = _mm256_set1_ps(m);
            let mut j = a / 8 * 8;
            while j < e {
                let x = _mm256_sub_ps(_mm256_loadu_ps(s.as_ptr().add(j)), mv);
                _mm256_storeu_ps(p.as_mut_ptr().add(j), exp8(x));
                j += 8;
            }
        }
        p[..a].fill(0.0);
        p[e..KB].fill(0.0);
    }

    /// `super::pv` for `hdv % 8 == 0`: R rows' outputs in registers, 32 columns at a time,
    /// over every key of `a..e` (the same fused chain per element, in key order).
    #[inline(always)]
    pub unsafe fn pv<S: Src, const R: usize>(o: [&mut [f32]; R], p: [&[f32]; R], v: S, hdv: usize, a: usize, e: usize) {
        assert!(o.iter().all(|o| o.len() >= hdv) && p.iter().all(|p| p.len() >= e));
        // SAFETY: rows `a..e` of `v` (made for `e` rows of `hdv`), `e` of each `p` and `hdv`
        // of each `o` (asserted).
        unsafe {
            let op = o.map(|o| o.as_mut_ptr());
            let pp = p.map(|p| p.as_ptr());
            let mut c = 0;
            while c + 32 <= hdv {
                let mut acc = [[_mm256_setzero_ps(); 4]; R];
                for r in 0..R {
                    for (u, x) in acc[r].iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(op[r].add(c + 8 * u));
                    }
                }
                for j in a..e {
                    let v = [v.at(j, c), v.at(j, c + 8), v.at(j, c + 16), v.at(j, c + 24)];
                    for r in 0..R {
                        let w = _mm256_broadcast_ss(&*pp[r].add(j));
                        for u in 0..4 {
                            acc[r][u] = _mm256_fmadd_ps(w, v[u], acc[r][u]);
                        }
                    }
                }
                for r in 0..R {
                    for (u, x) in acc[r].iter().enumerate() {
                        _mm256_storeu_ps(op[r].add(c + 8 * u), *x);
                    }
                }
                c += 32;
            }
            while c < hdv {
                let mut acc = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    acc[r] = _mm256_loadu_ps(op[r].add(c));
                }
                for j in a..e {
                    let v = v.at(j, c);
                    for r in 0..R {
                        acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*pp[r].add(j)), v, acc[r]);
                    }
                }
                for r in 0..R {
                    _mm256_storeu_ps(op[r].add(c), acc[r]);
                }
                c += 8;
            }
        }
    }

    /// `Level::max`: whole vectors inside `a..e`, then the ends one by one.
    #[inline(always)]
    pub unsafe fn max(s: &[f32], a: usize, e: usize) -> f32 {
        assert!(a < e && e <= s.len());
        // SAFETY: every load lies inside `a..e` of `s` (asserted).
        unsafe {
            let mut j = a;
            let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
            while j + 8 <= e {
                m = _mm256_max_ps(m, _mm256_loadu_ps(s.as_ptr().add(j)));
                j += 8;
            }
            let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            let mut x = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
            for &v in &s[j..e] {
                x = x.max(v);
            }
            x
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn chunk(ctx: &Ctx<'_, '_>, job: &Job, c: usize, st: &mut [f32], buf: &mut [f32]) {
        super::chunk::<Avx2>(ctx, job, c, st, buf)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn combine(running: &mut [f32], part: &[f32], state: usize) {
        super::combine::<Avx2>(running, part, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn f(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    struct Case {
        shape: Shape,
        k: Vec<u8>,
        v: Vec<u8>,
        types: (CacheType, CacheType),
        q: Vec<f32>,
    }

    fn case(n_head: usize, n_head_kv: usize, hd: usize, window: Option<usize>, len: usize, types: (CacheType, CacheType), seed: u64) -> Case {
        let mut rng = Rng(seed);
        let shape = Shape { n_head, n_head_kv, head_dim: hd, head_dim_v: hd, scale: 1.0 / (hd as f32).sqrt(), window };
        let kvd = n_head_kv * hd;
        let (mut k, mut v) = (vec![0u8; len * types.0.row_bytes(kvd)], vec![0u8; len * types.1.row_bytes(kvd)]);
        let mut row = vec![0f32; kvd];
        for p in 0..len {
            row.iter_mut().for_each(|x| *x = rng.f() * 3.0);
            types.0.store(&row, &mut k[p * types.0.row_bytes(kvd)..(p + 1) * types.0.row_bytes(kvd)]);
            row.iter_mut().for_each(|x| *x = rng.f());
            types.1.store(&row, &mut v[p * types.1.row_bytes(kvd)..(p + 1) * types.1.row_bytes(kvd)]);
        }
        let q = (0..len * n_head * hd).map(|_| rng.f() * 2.0).collect();
        Case { shape, k, v, types, q }
    }

    impl Case {
        fn view(&self) -> KvView<'_> {
            KvView { k: &self.k, v: &self.v, k_type: self.types.0, v_type: self.types.1, rows: usize::MAX }
        }

        /// Tokens `from..to` of the sequence in one batch.
        fn run(&self, pool: &Pool, isa: Isa, from: usize, to: usize) -> Vec<f32> {
            self.run_over(pool, isa, from, to, self.view())
        }

        /// Positions `0..to` written in order into a ring of `rows` rows (a later position
        /// overwriting an earlier one), as a sliding-window cache holds them.
        fn ring(&self, to: usize, rows: usize) -> (Vec<u8>, Vec<u8>) {
            let kvd = self.shape.n_head_kv * self.shape.head_dim;
            let (kb, vb) = (self.types.0.row_bytes(kvd), self.types.1.row_bytes(kvd));
            let (mut k, mut v) = (vec![0u8; rows * kb], vec![0u8; rows * vb]);
            for p in 0..to {
                let r = p % rows;
                k[r * kb..(r + 1) * kb].copy_from_slice(&self.k[p * kb..(p + 1) * kb]);
                v[r * vb..(r + 1) * vb].copy_from_slice(&self.v[p * vb..(p + 1) * vb]);
            }
            (k, v)
        }

        fn run_over(&self, pool: &Pool, isa: Isa, from: usize, to: usize, view: KvView<'_>) -> Vec<f32> {
            let sh = &self.shape;
            let n = to - from;
            let q = &self.q[from * sh.n_head * sh.head_dim..to * sh.n_head * sh.head_dim];
            let seq = vec![0; n];
            let pos: Vec<usize> = (from..to).collect();
            let mut out = vec![0f32; n * sh.n_head * sh.head_dim_v];
            let kv = |_| view;
            attention(pool, isa, sh, q, &seq, &pos, &kv, &mut out, &mut Scratch::default());
            out
        }

        /// Softmax attention in f64 over the dequantized cache.
        fn naive(&self, t: usize, h: usize) -> Vec<f64> {
            let sh = &self.shape;
            let (hd, kvd) = (sh.head_dim, sh.n_head_kv * sh.head_dim);
            let g = h / (sh.n_head / sh.n_head_kv);
            let (mut kr, mut vr) = (vec![0f32; kvd], vec![0f32; kvd]);
            let q = &self.q[t * sh.n_head * hd + h * hd..][..hd];
            let lo = window_start(sh.window, t);
            let mut w = Vec::new();
            let mut vs = Vec::new();
            for p in lo..=t {
                let (kb, vb) = (self.types.0.row_bytes(kvd), self.types.1.row_bytes(kvd));
                self.types.0.load(&self.k[p * kb..(p + 1) * kb], &mut kr);
                self.types.1.load(&self.v[p * vb..(p + 1) * vb], &mut vr);
                w.push(q.iter().zip(&kr[g * hd..]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * sh.scale as f64);
                vs.push(vr[g * hd..(g + 1) * hd].to_vec());
            }
            let m = w.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = w.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            (0..hd).map(|d| e.iter().zip(&vs).map(|(a, v)| a * v[d] as f64).sum::<f64>() / z).collect()
        }
    }

    #[test]
    fn exp_is_accurate_on_its_domain() {
        for i in 0..100_000 {
            let x = -(i as f32) * 0.00087;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= want * 3e-7 + 1e-37, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn rotation_is_orthonormal_and_its_own_inverse() {
        let mut rng = Rng(3);
        let x: Vec<f32> = (0..256).map(|_| rng.f()).collect();
        let y: Vec<f32> = (0..256).map(|_| rng.f()).collect();
        for n in [64, 128, 256] {
            let (mut a, mut b) = (x.clone(), y.clone());
            rotate(&mut a, n);
            rotate(&mut b, n);
            let dot = |u: &[f32], v: &[f32]| u.iter().zip(v).map(|(p, q)| p * q).sum::<f32>();
            assert!((dot(&a, &b) - dot(&x, &y)).abs() < 1e-4);
            rotate(&mut a, n);
            assert!(a.iter().zip(&x).all(|(p, q)| (p - q).abs() < 1e-6));
        }
        // Sylvester's order: the second row of H₂ is (1, -1).
        let mut e = vec![0f32; 64];
        e[1] = 1.0;
        rotate(&mut e, 64);
        assert!((e[0] - 0.125).abs() < 1e-7 && (e[1] + 0.125).abs() < 1e-7 && (e[2] - 0.125).abs() < 1e-7);
        assert_eq!(CacheType::Q8_0.k_rotation(64), Some(64));
        assert_eq!(CacheType::Q4_0.k_rotation(256), Some(256));
        assert_eq!(CacheType::Q4_0.k_rotation(96), None);
        assert_eq!(CacheType::F16.k_rotation(128), None);
        assert_eq!(CacheType::Q8_0.v_rotation(256), Some(64));
    }

    #[test]
    fn cache_types_round_trip() {
        let mut rng = Rng(7);
        let x: Vec<f32> = (0..128).map(|_| rng.f() * 4.0).collect();
        for (t, tol) in [(CacheType::F16, 2e-3), (CacheType::Q8_0, 4.0 / 127.0), (CacheType::Q4_0, 4.0 / 7.0)] {
            let mut bytes = vec![0u8; t.row_bytes(x.len())];
            t.store(&x, &mut bytes);
            let mut y = vec![0f32; x.len()];
            t.load(&bytes, &mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= tol, "{t}: {a} came back as {b}");
            }
            assert_eq!(CacheType::parse(&t.as_str().to_uppercase()), Some(t));
        }
    }

    #[test]
    fn matches_softmax_attention_in_f64() {
        let pool = Pool::new(2);
        for isa in Isa::available() {
            for (n_head, n_kv, hd, window, len) in
                [(4, 4, 64, None, 40), (6, 2, 64, None, 300), (4, 1, 256, None, 70), (3, 1, 72, Some(37), 90), (7, 1, 64, Some(300), 600)]
            {
                for types in [(CacheType::F16, CacheType::F16), (CacheType::Q8_0, CacheType::Q4_0)] {
                    if hd % 32 != 0 && types.0 != CacheType::F16 {
                        continue;
                    }
                    let c = case(n_head, n_kv, hd, window, len, types, 11 + len as u64);
                    let got = c.run(&pool, isa, 0, len);
                    for t in [0, 1, len / 2, len - 1] {
                        for h in 0..n_head {
                            let want = c.naive(t, h);
                            let row = &got[t * n_head * hd + h * hd..][..hd];
                            for (d, (&g, &w)) in row.iter().zip(&want).enumerate() {
                                assert!((g as f64 - w).abs() < 2e-5 + 1e-4 * w.abs(), "{isa:?} {types:?} t{t} h{h} d{d}: {g} vs {w}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_tokens_attention_is_the_same_bits_in_any_batch() {
        for isa in Isa::available() {
            for (n_head, n_kv, hd, window, len) in [(9, 3, 64, None, 700), (4, 1, 256, Some(100), 300), (14, 2, 64, None, 530), (3, 1, 72, Some(37), 140)] {
                let c = case(n_head, n_kv, hd, window, len, (CacheType::F16, CacheType::F16), 5);
                let whole = c.run(&Pool::new(2), isa, 0, len);
                let row = n_head * hd;
                // Alone (decode: split mode), in odd batches, on one thread.
                for (from, to, threads) in [(len - 1, len, 2), (len - 1, len, 1), (len - 7, len, 2), (100, 133, 1), (17, 18, 2), (0, 5, 2)] {
                    let part = c.run(&Pool::new(threads), isa, from, to);
                    assert!(part == whole[from * row..to * row], "{isa:?} tokens {from}..{to} on {threads} threads differ from the whole batch");
                }
            }
        }
    }

    /// A sliding-window layer read from a ring of `window + pass` rows (rounded up to
    /// blocks) that has overwritten older positions gives the same bits as the whole cache,
    /// for passes of 1 up to `pass` tokens, f16 and quantized.
    #[test]
    fn a_window_read_from_a_ring_is_the_same_bits() {
        for isa in Isa::available() {
            for (n_head, n_kv, hd, window, len) in [(4, 1, 256, 100, 300), (3, 1, 72, 37, 140), (4, 2, 64, 8, 200)] {
                for types in [(CacheType::F16, CacheType::F16), (CacheType::Q8_0, CacheType::Q4_0)] {
                    if hd % 32 != 0 && types.0 != CacheType::F16 {
                        continue;
                    }
                    let c = case(n_head, n_kv, hd, Some(window), len, types, 9);
                    let row = n_head * hd;
                    let whole = c.run(&Pool::new(2), isa, 0, len);
                    for pass in [1, 5, 16, 40] {
                        let rows = (window + pass).div_ceil(KB) * KB;
                        for to in [len, len - 3, rows + 1, 2 * rows + pass / 2].into_iter().filter(|&to| to <= len) {
                            let from = to.saturating_sub(pass);
                            let (k, v) = c.ring(to, rows);
                            let view = KvView { k: &k, v: &v, k_type: types.0, v_type: types.1, rows };
                            let got = c.run_over(&Pool::new(2), isa, from, to, view);
                            assert!(
                                got == whole[from * row..to * row],
                                "{isa:?} {types:?} window {window}, ring of {rows}: tokens {from}..{to} differ from the whole cache's"
                            );
                        }
                    }
                }
            }
        }
    }
}

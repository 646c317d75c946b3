//! A hostile header must not make the parser allocate much more than the file's size: every
//! `Vec` sized from a count read in the file is bounded by what the remaining bytes can hold.
//!
//! A counting global allocator records the largest single allocation made on the test's
//! thread while a file is parsed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping
// touches only const-initialised, allocation-free thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Parse `bytes`, expect an error, and return the largest single allocation made meanwhile.
fn largest_allocation_parsing(bytes: Vec<u8>) -> usize {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = gguf::Gguf::from_vec("hostile.gguf", bytes);
    TRACKING.with(|t| t.set(false));
    assert!(r.is_err(), "a hostile file parsed");
    drop(r);
    LARGEST.with(|l| l.get())
}

const FILE_LEN: usize = 4096;

/// `GGUF`, version 3, the two counts, then `body`, padded to `FILE_LEN` bytes with 0xff
/// (never a valid bool, string length or type id, so the parse must fail somewhere).
fn file(n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b.extend(body);
    assert!(b.len() <= FILE_LEN);
    b.resize(FILE_LEN, 0xff);
    b
}

/// One metadata pair `key` holding an array of `n` elements of GGUF type `elem_ty`.
fn array_kv(elem_ty: u32, n: u64) -> Vec<u8> {
    let key = b"hostile.array";
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend(key);
    b.extend(9u32.to_le_bytes()); // value type: array
    b.extend(elem_ty.to_le_bytes());
    b.extend(n.to_le_bytes());
    b
}

fn hostile_files() -> Vec<(String, Vec<u8>)> {
    let big = 1u64 << 40;
    // Counts just under the bytes left: the old parser took every element to need one byte.
    let near = FILE_LEN as u64 - 64;
    let mut v = vec![
        ("n_tensors = 2^40".to_string(), file(big, 0, &[])),
        ("n_kv = 2^40".to_string(), file(0, big, &[])),
        ("n_tensors = bytes left".to_string(), file(near, 0, &[])),
        ("n_kv = bytes left".to_string(), file(0, near, &[])),
        // One valid metadata pair (an empty array), then tensor infos claiming to fill the file.
        ("n_tensors = bytes left, after an empty kv".to_string(), file(near, 1, &array_kv(4, 0))),
    ];
    // The largest counts the remaining bytes allow (each element at its smallest encoding):
    // accepted, so the `Vec`s are sized from them, then the 0xff padding (or, after an array
    // of numbers that fills the file, the missing tensor info) fails the parse.
    let after_counts = (FILE_LEN - 24) as u64;
    v.push(("n_tensors at the bound".to_string(), file(after_counts / 32, 0, &[])));
    v.push(("n_kv at the bound".to_string(), file(0, after_counts / 13, &[])));
    let after_array_count = after_counts - array_kv(0, 0).len() as u64;
    for (ty, min_size) in [(2u32, 2u64), (4, 4), (7, 1), (8, 8), (9, 12), (10, 8)] {
        v.push((format!("array of type {ty} with 2^40 elements"), file(0, 1, &array_kv(ty, big))));
        v.push((format!("array of type {ty} with bytes-left elements"), file(0, 1, &array_kv(ty, near))));
        v.push((format!("array of type {ty} at the bound"), file(1, 1, &array_kv(ty, after_array_count / min_size))));
    }
    v
}

#[test]
fn hostile_counts_do_not_allocate_past_a_small_multiple_of_the_file() {
    let limit = 16 * FILE_LEN + 1024;
    let mut failures = Vec::new();
    for (what, bytes) in hostile_files() {
        assert_eq!(bytes.len(), FILE_LEN);
        let largest = largest_allocation_parsing(bytes);
        if largest > limit {
            failures.push(format!("{what}: largest allocation {largest} bytes for a {FILE_LEN}-byte file"));
        }
    }
    assert!(failures.is_empty(), "allocations past {limit} bytes:\n{}", failures.join("\n"));
}

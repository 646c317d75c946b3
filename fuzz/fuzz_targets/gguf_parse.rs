//! Any byte string given to the GGUF reader, and on to the model and tokenizer loaders,
//! must give a value or an error, never a panic or an out-of-bounds read.
//!
//! Run: `cargo fuzz run gguf_parse` (from this directory; cargo-fuzz needs a nightly
//! compiler, or `RUSTC_BOOTSTRAP=1` with stable).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = gguf::Gguf::from_vec("fuzz.gguf", data.to_vec()) {
        // Every tensor's byte range was checked at indexing time: reading it cannot fail.
        for t in f.tensors() {
            assert_eq!(f.tensor_data(t).len(), t.size);
        }
        for (key, value) in f.metadata() {
            let _ = value.display_short();
            let _ = (f.metadata_u64(key), f.metadata_f32(key), f.metadata_bool(key));
        }
        let _ = tokenizer::Tokenizer::from_gguf(&f);
        let _ = model::Model::from_gguf(f);
    }
});

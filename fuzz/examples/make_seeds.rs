//! Writes the GGUF seed files of the `gguf_parse` target into `fuzz/seeds/gguf_parse/`:
//! the tiny test model, its tokenizer metadata alone, one small F32 tensor, and an empty
//! file (header only). The names end in `.bin` because the repository ignores `*.gguf`.
//!
//! Run from the repository root: `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.

use gguf::{GgmlType, Gguf, GgufWriter, Value};
use model::tiny::{tiny_model, TinySpec};

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/gguf_parse");
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let write = |name: &str, bytes: Vec<u8>| {
        Gguf::from_vec(name, bytes.clone()).unwrap_or_else(|e| panic!("seed {name} does not parse: {e}"));
        std::fs::write(dir.join(name), &bytes).expect("write a seed");
        println!("{name}: {} bytes", bytes.len());
    };

    // The smallest spec the model loader accepts: a whole model in a few kilobytes, so every
    // fuzz iteration still reaches the model and tokenizer loaders.
    let spec = TinySpec { n_embd: 32, n_layer: 1, n_head: 2, n_head_kv: 1, n_ff: 32, ctx: 64, ..TinySpec::default() };
    let model = tiny_model(&spec);
    model::Model::from_gguf(Gguf::from_vec("tiny", model.clone()).expect("tiny model parses")).expect("tiny model loads");
    write("tiny-model.bin", model.clone());

    let tiny = Gguf::from_vec("tiny", model).expect("tiny model parses");
    let mut w = GgufWriter::new();
    for (key, value) in tiny.metadata() {
        if key.starts_with("tokenizer.") {
            w.meta(key, value.clone());
        }
    }
    write("tokenizer-only.bin", w.to_bytes());

    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("llama".into())).meta("general.alignment", Value::U32(32));
    w.tensor("t", GgmlType::F32, &[4, 2], (0..8u32).flat_map(|i| (i as f32).to_le_bytes()).collect());
    write("one-tensor.bin", w.to_bytes());

    write("empty.bin", GgufWriter::new().to_bytes());
}

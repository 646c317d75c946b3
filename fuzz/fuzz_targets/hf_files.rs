//! Arbitrary bytes as the files of a Hugging Face model directory that `bantam convert`
//! parses by hand: the first byte picks a safetensors header (`convert::safetensors::index`)
//! or a SentencePiece `tokenizer.model` (`convert::sentencepiece::parse`).
//!
//! Must hold: a value or an error, never a panic; every tensor range a safetensors index
//! returns lies inside the bytes and matches its shape and dtype; a parsed SentencePiece
//! model written back parses to the same model.
//!
//! Run: `cargo fuzz run hf_files` (see `fuzz/README.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    if pick % 2 == 0 {
        if let Ok(tensors) = convert::safetensors::index(rest, 0) {
            for t in &tensors {
                assert_eq!(t.n_elements() * t.dtype.size(), t.byte_len());
                assert!(t.byte_range().end <= rest.len());
            }
        }
    } else if let Ok(m) = convert::sentencepiece::parse(rest) {
        let again = convert::sentencepiece::parse(&convert::sentencepiece::write(&m)).expect("a written model parses");
        assert_eq!(again.pieces.len(), m.pieces.len());
        assert!(again.pieces.iter().zip(&m.pieces).all(|(a, b)| a.text == b.text && a.kind == b.kind && a.score.to_bits() == b.score.to_bits()));
    }
});

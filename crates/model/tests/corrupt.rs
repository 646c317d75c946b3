//! Truncated and bit-flipped copies of a real model file fail with an error naming the file,
//! never a panic or an out-of-bounds read.

use model::{Model, ModelError};

fn real_bytes() -> Vec<u8> {
    let p = store::model_file("smollm2:135m").unwrap_or_else(|e| panic!("{e}: run `bantam pull smollm2:135m`"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn open(bytes: Vec<u8>) -> Result<Model, ModelError> {
    Model::from_gguf(gguf::Gguf::from_vec("broken.gguf", bytes)?)
}

#[test]
fn truncated_copies_of_a_real_file_fail_with_the_file_named() {
    let bytes = real_bytes();
    let header_end = gguf::parse_header(&bytes).unwrap().data_offset;
    let mut cuts: Vec<usize> = (0..64).map(|i| i * header_end / 64).collect();
    cuts.extend([header_end, header_end + 1, bytes.len() / 2, bytes.len() - 1]);
    for cut in cuts {
        let e = open(bytes[..cut].to_vec()).err().unwrap_or_else(|| panic!("truncation at {cut} accepted"));
        assert!(e.to_string().contains("broken.gguf"), "cut {cut}: {e}");
    }
}

#[test]
fn bit_flips_in_the_header_never_panic() {
    let bytes = real_bytes();
    let header_end = gguf::parse_header(&bytes).unwrap().data_offset;
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut errors = 0;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = bytes[..header_end.min(bytes.len())].to_vec();
        // Keep the data section: flip within the header, then append the original data.
        let i = (x % header_end as u64) as usize;
        b[i] ^= 1 << (x >> 60 & 7);
        b.extend_from_slice(&bytes[header_end..]);
        if open(b).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0, "no flip was detected at all");
}

#[test]
fn unsupported_tensor_type_is_named() {
    // Write a file with one F32 tensor, then patch its type id.
    let mut w = gguf::GgufWriter::new();
    w.tensor("t", gguf::GgmlType::F32, &[4], vec![0; 16]);
    let mut bytes = w.to_bytes();
    // The type id sits 8 (name len) + 1 (name) + 4 (n_dims) + 8 (dim) bytes into the infos.
    let infos = 4 + 4 + 8 + 8;
    let ty_at = infos + 8 + 1 + 4 + 8;
    bytes[ty_at..ty_at + 4].copy_from_slice(&20u32.to_le_bytes()); // IQ4_NL
    let e = gguf::Gguf::from_vec("iq.gguf", bytes).unwrap_err().to_string();
    assert!(e.contains("iq.gguf") && e.contains("unsupported type id 20"), "{e}");
}

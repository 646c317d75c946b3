//! A small GGUF writer, used to make deterministic test models.

use crate::{Array, GgmlType, Value};

/// Collects metadata and tensors, then serialises them as GGUF v3.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>,
}

const ALIGN: usize = 32;

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn meta(&mut self, key: &str, v: Value) -> &mut Self {
        self.metadata.push((key.to_string(), v));
        self
    }
    /// Add a tensor; `dims[0]` is the row length and `data` its raw bytes in `ty`'s layout.
    pub fn tensor(&mut self, name: &str, ty: GgmlType, dims: &[u64], data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.to_string(), ty, dims.to_vec(), data));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let infos: Vec<_> = self.tensors.iter().map(|(n, t, d, data)| (n.as_str(), *t, d.as_slice(), data.len())).collect();
        let (mut out, offsets) = header_bytes(&self.metadata, &infos, ALIGN);
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off, 0);
            out.extend_from_slice(data);
        }
        // ggml's reader expects the data section padded to the alignment at the end too
        out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
        out
    }
}

/// Where a writer puts a file until it is complete: `.NAME.partial-PID` beside `output`, so
/// a failure leaves nothing under the output's name and the rename at the end is atomic.
pub fn partial_path(output: &std::path::Path) -> std::path::PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.gguf".into());
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// The bytes of a GGUF v3 header: metadata, tensor index and padding up to the data
/// section, for tensors `(name, type, dims, data size)` laid out in order, each at a
/// multiple of `align`. Returns the header and each tensor's offset in the data section,
/// so a writer can stream the tensors after it (each followed by zeros to the next offset).
pub fn header_bytes(metadata: &[(String, Value)], tensors: &[(&str, GgmlType, &[u64], usize)], align: usize) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for (name, ty, dims, size) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + size).div_ceil(align) * align;
    }
    let start = out.len().div_ceil(align) * align;
    out.resize(start, 0);
    (out, offsets)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn array_type_id(a: &Array) -> u32 {
    match a {
        Array::U8(_) => 0,
        Array::I8(_) => 1,
        Array::U16(_) => 2,
        Array::I16(_) => 3,
        Array::U32(_) => 4,
        Array::I32(_) => 5,
        Array::F32(_) => 6,
        Array::Bool(_) => 7,
        Array::Str(_) => 8,
        Array::Array(_) => 9,
        Array::U64(_) => 10,
        Array::I64(_) => 11,
        Array::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&array_type_id(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, $f:expr) => {
            for x in $v {
                $f(out, x)
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v, |o: &mut Vec<u8>, x: &i8| o.push(*x as u8)),
        Array::U16(v) => each!(v, |o: &mut Vec<u8>, x: &u16| o.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |o: &mut Vec<u8>, x: &i16| o.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |o: &mut Vec<u8>, x: &u32| o.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |o: &mut Vec<u8>, x: &i32| o.extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => each!(v, |o: &mut Vec<u8>, x: &u64| o.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |o: &mut Vec<u8>, x: &i64| o.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |o: &mut Vec<u8>, x: &f32| o.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |o: &mut Vec<u8>, x: &f64| o.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(v, |o: &mut Vec<u8>, x: &bool| o.push(*x as u8)),
        Array::Str(v) => each!(v, |o: &mut Vec<u8>, x: &String| put_str(o, x)),
        Array::Array(v) => each!(v, put_array),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gguf;

    fn sample() -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str("llama".into()))
            .meta("x.u32", Value::U32(7))
            .meta("x.f32", Value::F32(0.5))
            .meta("x.bool", Value::Bool(true))
            .meta("x.arr", Value::Array(Array::Str(vec!["a".into(), "bc".into()])))
            .meta("x.nested", Value::Array(Array::Array(vec![Array::I32(vec![1, -2])])))
            .tensor("a", GgmlType::F32, &[4, 2], (0..8u32).flat_map(|i| (i as f32).to_le_bytes()).collect())
            .tensor("b", GgmlType::Q8_0, &[32], vec![1u8; 34]);
        w.to_bytes()
    }

    #[test]
    fn round_trip() {
        let f = Gguf::from_vec("sample.gguf", sample()).unwrap();
        assert_eq!(f.metadata_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.metadata_u64("x.u32").unwrap(), 7);
        assert_eq!(f.metadata_f32("x.f32").unwrap(), 0.5);
        assert_eq!(f.metadata_bool("x.bool"), Some(true));
        assert_eq!(f.get("x.nested"), Some(&Value::Array(Array::Array(vec![Array::I32(vec![1, -2])]))));
        let a = f.tensor("a").unwrap();
        assert_eq!(a.dims, vec![4, 2]);
        assert_eq!(f.tensor_data(a)[4..8], 1f32.to_le_bytes());
        assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &[1u8; 34][..]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        // cutting only the data section's end padding leaves every tensor whole
        let end = Gguf::from_vec("whole.gguf", bytes.clone()).unwrap().tensors().iter().map(|t| t.offset + t.size).max().unwrap();
        assert!(end <= bytes.len() && bytes.len().is_multiple_of(ALIGN));
        for n in 0..end {
            let e = Gguf::from_vec("cut.gguf", bytes[..n].to_vec()).err().unwrap_or_else(|| panic!("prefix {n} accepted"));
            assert!(e.to_string().starts_with("cut.gguf: "), "{e}");
        }
    }

    #[test]
    fn every_bit_flip_is_handled() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                // Must return (Ok or Err), never panic.
                let _ = Gguf::from_vec("flip.gguf", b);
            }
        }
    }

    #[test]
    fn reads_version_2() {
        // v2 has v3's layout (v3 only added big-endian files, which carry the version swapped).
        let mut b = sample();
        b[4] = 2;
        let f = Gguf::from_vec("v2.gguf", b).unwrap();
        assert_eq!(f.version(), 2);
        assert_eq!(f.metadata_u64("x.u32").unwrap(), 7);
    }

    #[test]
    fn rejects_v1_and_bad_magic() {
        let mut b = sample();
        b[4] = 1;
        assert!(Gguf::from_vec("v1.gguf", b).unwrap_err().to_string().contains("version 1"));
        let mut b = sample();
        b[0] = b'X';
        assert!(Gguf::from_vec("m.gguf", b).unwrap_err().to_string().contains("bad magic"));
    }
}

//! The GGUF header parser: a bounds-checked cursor over the file's bytes.
//!
//! Layout (little endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! then the metadata pairs, then the tensor infos, then (aligned to `general.alignment`,
//! default 32) the tensor data. Version 1 used u32 counts and is not supported.

use crate::{Array, GgmlType, TensorInfo, Value};

/// Largest element count we accept for one metadata array or string, so a flipped length
/// cannot make us allocate terabytes before noticing the file is too short.
const MAX_ELEMENTS: u64 = 1 << 28;
const MAX_DIMS: u32 = 4;
const MAX_NESTING: u32 = 4;

// Smallest on-disk size of each counted thing; a count is checked against the bytes left
// divided by these before any `Vec` is sized from it.
/// A string: its u64 length (the text may be empty).
const MIN_STRING_BYTES: usize = 8;
/// An array value: element type u32 and count u64 (it may be empty).
const MIN_ARRAY_BYTES: usize = 4 + 8;
/// A metadata pair: key string, value type u32, and a value of at least one byte.
const MIN_KV_BYTES: usize = MIN_STRING_BYTES + 4 + 1;
/// A tensor info: name string, n_dims u32, at least one u64 dim, type u32, offset u64.
const MIN_TENSOR_INFO_BYTES: usize = MIN_STRING_BYTES + 4 + 8 + 4 + 8;

/// Everything before the tensor data.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    pub data_offset: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, String>;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated: {what} needs {n} bytes at offset {} but the file has {}", self.pos, self.bytes.len()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> R<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }
    fn u8(&mut self, w: &str) -> R<u8> {
        Ok(self.array::<1>(w)?[0])
    }
    fn u16(&mut self, w: &str) -> R<u16> {
        Ok(u16::from_le_bytes(self.array(w)?))
    }
    fn u32(&mut self, w: &str) -> R<u32> {
        Ok(u32::from_le_bytes(self.array(w)?))
    }
    fn u64(&mut self, w: &str) -> R<u64> {
        Ok(u64::from_le_bytes(self.array(w)?))
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    /// Read a u64 element count and check it against what the rest of the file can hold:
    /// each element takes at least `min_size` bytes on disk. This bounds every allocation
    /// sized from a count to a small multiple of the file's size.
    fn count(&mut self, what: &str, min_size: usize) -> R<usize> {
        let n = self.u64(what)?;
        if n > MAX_ELEMENTS {
            return Err(format!("{what} is {n}, larger than any real file holds (corrupt?)"));
        }
        self.check_fits(n as usize, min_size, what)?;
        Ok(n as usize)
    }
    /// Error unless `n` elements of at least `min_size` bytes each fit in the remaining bytes.
    fn check_fits(&self, n: usize, min_size: usize, what: &str) -> R<()> {
        if n > self.remaining() / min_size {
            return Err(format!("truncated: {what} is {n} (at least {min_size} bytes each) but only {} bytes remain", self.remaining()));
        }
        Ok(())
    }
    fn string(&mut self, what: &str) -> R<String> {
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} at offset {} is not valid UTF-8", self.pos - n))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> R<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(key)?),
            1 => Value::I8(self.u8(key)? as i8),
            2 => Value::U16(self.u16(key)?),
            3 => Value::I16(self.u16(key)? as i16),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => Value::Bool(self.bool(key)?),
            8 => Value::Str(self.string(key)?),
            9 => Value::Array(self.array_value(key, depth)?),
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(format!("metadata {key} has unknown value type {t}")),
        })
    }

    fn bool(&mut self, key: &str) -> R<bool> {
        match self.u8(key)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("metadata {key} holds bool byte {b}")),
        }
    }

    fn array_value(&mut self, key: &str, depth: u32) -> R<Array> {
        if depth >= MAX_NESTING {
            return Err(format!("metadata {key} nests arrays deeper than {MAX_NESTING}"));
        }
        let ty = self.u32(key)?;
        let min_size = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => MIN_STRING_BYTES,
            10..=12 => 8,
            9 => MIN_ARRAY_BYTES,
            t => return Err(format!("metadata {key} is an array of unknown type {t}")),
        };
        let n = self.count(key, min_size)?;
        macro_rules! many {
            ($variant:ident, $f:expr) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($f(self)?);
                }
                Array::$variant(v)
            }};
        }
        Ok(match ty {
            0 => Array::U8(self.take(n, key)?.to_vec()),
            1 => Array::I8(self.take(n, key)?.iter().map(|&b| b as i8).collect()),
            2 => many!(U16, |c: &mut Self| c.u16(key)),
            3 => many!(I16, |c: &mut Self| c.u16(key).map(|x| x as i16)),
            4 => many!(U32, |c: &mut Self| c.u32(key)),
            5 => many!(I32, |c: &mut Self| c.u32(key).map(|x| x as i32)),
            6 => many!(F32, |c: &mut Self| c.u32(key).map(f32::from_bits)),
            7 => many!(Bool, |c: &mut Self| c.bool(key)),
            8 => many!(Str, |c: &mut Self| c.string(key)),
            9 => many!(Array, |c: &mut Self| c.array_value(key, depth + 1)),
            10 => many!(U64, |c: &mut Self| c.u64(key)),
            11 => many!(I64, |c: &mut Self| c.u64(key).map(|x| x as i64)),
            12 => many!(F64, |c: &mut Self| c.u64(key).map(f64::from_bits)),
            t => return Err(format!("metadata {key} is an array of unknown type {t}")),
        })
    }
}

/// Parse and validate the header of a GGUF file held in `bytes` (the whole file).
///
/// Checks: magic and version, every length, tensor types, shapes, that each tensor's
/// byte range is aligned, lies inside the file and does not overflow.
pub fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.take(4, "magic").map_err(|_| format!("file is {} bytes, too short for a GGUF header", bytes.len()))?;
    if magic != b"GGUF" {
        return Err(format!("bad magic {magic:02x?}, expected \"GGUF\""));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
    }
    let n_tensors = c.count("tensor count", MIN_TENSOR_INFO_BYTES)?;
    let n_kv = c.count("metadata count", MIN_KV_BYTES)?;

    let mut metadata = Vec::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&key)?;
        let v = c.value(ty, &key, 0)?;
        metadata.push((key, v));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => 32,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
            _ => return Err(format!("general.alignment {v:?} is not a power of two")),
        },
    };

    c.check_fits(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor count")?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut rel = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"))?;
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("tensor {name} has {n_dims} dimensions"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let ty_id = c.u32(&name)?;
        let ggml_type = GgmlType::from_id(ty_id).ok_or_else(|| format!("tensor {name} has unsupported type id {ty_id}"))?;
        let offset = c.u64(&name)?;
        let n: u64 = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("tensor {name} shape {dims:?} overflows"))?;
        if n == 0 {
            return Err(format!("tensor {name} has an empty shape {dims:?}"));
        }
        if dims[0] % ggml_type.block_len() as u64 != 0 {
            return Err(format!("tensor {name}: row length {} is not a multiple of the {} block length {}", dims[0], ggml_type, ggml_type.block_len()));
        }
        let size = (n / ggml_type.block_len() as u64)
            .checked_mul(ggml_type.block_bytes() as u64)
            .filter(|&s| s <= bytes.len() as u64)
            .ok_or_else(|| format!("tensor {name} ({dims:?} {ggml_type}) is larger than the file"))?;
        if offset % alignment as u64 != 0 {
            return Err(format!("tensor {name} offset {offset} is not aligned to {alignment}"));
        }
        rel.push(offset);
        tensors.push(TensorInfo { name, ggml_type, dims, offset: 0, size: size as usize });
    }
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    for (t, off) in tensors.iter_mut().zip(rel) {
        let start = (data_offset as u64).checked_add(off);
        let end = start.and_then(|s| s.checked_add(t.size as u64));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => t.offset = s as usize,
            _ => {
                return Err(format!(
                    "truncated: tensor {} needs bytes up to {} but the file has {}",
                    t.name,
                    end.map_or("overflow".to_string(), |e| e.to_string()),
                    bytes.len()
                ))
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(format!("tensor {} appears twice", t.name));
        }
    }
    Ok(Header { version, metadata, tensors, alignment, data_offset })
}

//! The safetensors format: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the data. A model directory holds one
//! `model.safetensors` or shards listed by `model.safetensors.index.json`.

use crate::ConvertError;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The element types a converter meets in published checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    pub fn ggml(self) -> gguf::GgmlType {
        match self {
            Dtype::F32 => gguf::GgmlType::F32,
            Dtype::F16 => gguf::GgmlType::F16,
            Dtype::BF16 => gguf::GgmlType::BF16,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

/// One tensor of a checkpoint: where its bytes are.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    /// Outermost dimension first, as PyTorch writes it: `[rows, cols]` for a matrix.
    pub shape: Vec<usize>,
    file: usize,
    begin: usize,
    end: usize,
}

impl Tensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Where the tensor's bytes lie in its file.
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.begin..self.end
    }

    pub fn byte_len(&self) -> usize {
        self.end - self.begin
    }
}

/// Every tensor of a model directory, over its mapped files: files sorted by name and,
/// within a file, tensors sorted by name (the order llama.cpp's converter writes them in).
pub struct Checkpoint {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    pub tensors: Vec<Tensor>,
}

impl Checkpoint {
    /// Open `dir/model.safetensors`, or the shards `dir/model.safetensors.index.json` lists.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            let v = crate::read_json(&index)?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ConvertError::bad(&index, "no \"weight_map\" object"))?;
            let mut names: Vec<&str> = Vec::new();
            for f in map.values() {
                let f = f.as_str().ok_or_else(|| ConvertError::bad(&index, "a weight_map value is not a file name"))?;
                if !names.contains(&f) {
                    names.push(f);
                }
            }
            names.sort();
            let mut out = Vec::new();
            for n in names {
                let p = Path::new(n);
                if p.components().count() != 1 || p.is_absolute() {
                    return Err(ConvertError::bad(&index, format!("shard {n:?} is not a file name in the model directory")));
                }
                out.push(dir.join(p));
            }
            out
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            return Err(ConvertError::Missing { dir: dir.display().to_string(), what: "model.safetensors or model.safetensors.index.json".into() });
        };
        let mut c = Checkpoint { maps: Vec::new(), tensors: Vec::new() };
        for p in files {
            c.add_file(&p)?;
        }
        let mut seen = std::collections::HashSet::new();
        for t in &c.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(ConvertError::bad(dir, format!("tensor {} appears in two shards", t.name)));
            }
        }
        Ok(c)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), ConvertError> {
        let file = File::open(path).map_err(|e| ConvertError::io(path, e))?;
        // SAFETY: read-only map of a file the converter only reads.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ConvertError::io(path, e))?;
        let idx = self.maps.len();
        let here = index(&map, idx).map_err(|why| ConvertError::bad(path, why))?;
        self.tensors.extend(here);
        self.maps.push((path.to_path_buf(), map));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn bytes(&self, t: &Tensor) -> &[u8] {
        &self.maps[t.file].1[t.begin..t.end]
    }

    /// The tensor's values widened to f32 (exact for all three dtypes).
    pub fn f32s(&self, t: &Tensor) -> Vec<f32> {
        let mut out = vec![0f32; t.n_elements()];
        kernels::dequant::dequantize_row(t.dtype.ggml(), self.bytes(t), &mut out);
        out
    }
}

/// The tensors of one safetensors file's bytes (`file` tags them with the file's index),
/// sorted by name as llama.cpp's converter visits them; every range is checked against the
/// file's length and the dtype's size.
pub fn index(map: &[u8], file: usize) -> Result<Vec<Tensor>, String> {
    if map.len() < 8 {
        return Err("shorter than a safetensors header".into());
    }
    let n = u64::from_le_bytes(map[..8].try_into().unwrap_or_default());
    let start = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&s| s <= map.len())
        .ok_or_else(|| format!("header length {n} runs past the end of the file"))?;
    let header: serde_json::Value = serde_json::from_slice(&map[8..start]).map_err(|e| format!("header is not JSON: {e}"))?;
    let obj = header.as_object().ok_or("header is not a JSON object")?;
    let data_len = map.len() - start;
    let mut here = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |why: String| format!("tensor {name}: {why}");
        let dt = v.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        let dtype = Dtype::parse(dt).ok_or_else(|| bad(format!("dtype {dt:?} is not supported (F32, F16 and BF16 are)")))?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect())
            .ok_or_else(|| bad("no shape".into()))?;
        let off: Vec<usize> = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect())
            .filter(|o: &Vec<usize>| o.len() == 2)
            .ok_or_else(|| bad("no data_offsets".into()))?;
        let n_el = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape overflows".into()))?;
        if off[0] > off[1] || off[1] > data_len {
            return Err(bad(format!("bytes {}..{} lie outside the data ({data_len} bytes)", off[0], off[1])));
        }
        if n_el.checked_mul(dtype.size()) != Some(off[1] - off[0]) {
            return Err(bad(format!(
                "shape {shape:?} of {} needs {} bytes, the file gives {}",
                dtype.name(),
                n_el.saturating_mul(dtype.size()),
                off[1] - off[0]
            )));
        }
        if shape.is_empty() || shape.len() > 4 {
            return Err(bad(format!("{} dimensions", shape.len())));
        }
        here.push(Tensor { name: name.clone(), dtype, shape, file, begin: start + off[0], end: start + off[1] });
    }
    // llama.cpp's converter visits a file's tensors sorted by name.
    here.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(here)
}

/// Write a safetensors file of `(name, dtype, shape, bytes)`, in that order, with the
/// header padded by spaces to a multiple of 8 bytes as the reference writer does.
pub fn write(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], metadata: &BTreeMap<String, String>) -> Result<(), ConvertError> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).unwrap_or_default());
    }
    let mut off = 0usize;
    for (name, dt, shape, data) in tensors {
        header.insert(name.clone(), serde_json::json!({"dtype": dt.name(), "shape": shape, "data_offsets": [off, off + data.len()]}));
        off += data.len();
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap_or_default();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(File::create(path).map_err(|e| ConvertError::io(path, e))?);
    let mut put = |b: &[u8]| f.write_all(b).map_err(|e| ConvertError::io(path, e));
    put(&(h.len() as u64).to_le_bytes())?;
    put(&h)?;
    for (_, _, _, data) in tensors {
        put(data)?;
    }
    f.flush().map_err(|e| ConvertError::io(path, e))
}

//! Importance matrices in llama.cpp's GGUF format (`llama-imatrix -o imatrix.gguf`).
//!
//! For each weight matrix the file holds `NAME.in_sum2` (F32, `[n_cols, n_mat]`: the sum
//! over the calibration tokens of each input column's squared activation) and
//! `NAME.counts` (F32, `[1, n_mat]`: how many tokens were summed), plus
//! `general.type = "imatrix"`, `imatrix.datasets`, `imatrix.chunk_count` and
//! `imatrix.chunk_size`. The quantizer's weights are `in_sum2 / counts`.

use crate::QuantError;
use gguf::{Array, GgmlType, Gguf, GgufWriter, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One matrix's accumulated statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// `[n_mat][n_cols]` sums of squared activations.
    pub sums: Vec<f32>,
    /// Tokens summed, per matrix (one for dense weights).
    pub counts: Vec<u64>,
}

impl Entry {
    /// The quantizer's weights: mean squared activation per column (1 where nothing was seen).
    pub fn weights(&self) -> Vec<f32> {
        let n_mat = self.counts.len().max(1);
        let n = self.sums.len() / n_mat;
        let mut out = vec![1f32; self.sums.len()];
        for (m, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                // as llama-quantize: both read back as f32 from the file, then divided
                let cf = c as f32;
                for i in 0..n {
                    out[m * n + i] = self.sums[m * n + i] / cf;
                }
            }
        }
        out
    }
}

/// An importance matrix: entries by weight name, with where it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imatrix {
    pub entries: BTreeMap<String, Entry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
}

impl Imatrix {
    pub fn load(path: &Path) -> Result<Self, QuantError> {
        let bad = |why: String| QuantError::Imatrix { path: path.display().to_string(), why };
        let f = Gguf::open(path).map_err(|e| bad(e.to_string()))?;
        if f.get("general.type").and_then(|v| v.as_str()) != Some("imatrix") {
            return Err(bad("not an importance matrix (general.type is not \"imatrix\")".into()));
        }
        let datasets = match f.get("imatrix.datasets") {
            Some(Value::Array(Array::Str(v))) => v.clone(),
            _ => Vec::new(),
        };
        let chunk_count = f.get("imatrix.chunk_count").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let chunk_size = f.get("imatrix.chunk_size").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let mut entries = BTreeMap::new();
        let f32s = |name: &str| -> Result<(Vec<f32>, Vec<u64>), QuantError> {
            let t = f.tensor(name).ok_or_else(|| bad(format!("{name} is missing")))?;
            if t.ggml_type != GgmlType::F32 {
                return Err(bad(format!("{name} is {}, not F32", t.ggml_type)));
            }
            let v = f.tensor_data(t).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok((v, t.dims.clone()))
        };
        for t in f.tensors() {
            let Some(name) = t.name.strip_suffix(".in_sum2") else { continue };
            let (sums, dims) = f32s(&t.name)?;
            let (counts, cdims) = f32s(&format!("{name}.counts"))?;
            let n_mat = dims.get(1).copied().unwrap_or(1);
            if cdims.iter().product::<u64>() != n_mat || counts.iter().any(|c| !c.is_finite() || *c < 0.0) {
                return Err(bad(format!("{name}.counts does not match {name}.in_sum2")));
            }
            if sums.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("{name} holds non-finite values")));
            }
            let entry = Entry { sums, counts: counts.iter().map(|&c| c as u64).collect() };
            entries.insert(name.to_string(), entry);
        }
        if entries.is_empty() {
            return Err(bad("holds no entries".into()));
        }
        Ok(Imatrix { entries, datasets, chunk_count, chunk_size })
    }

    /// The file, as llama-imatrix writes it (entries sorted by name).
    pub fn to_gguf(&self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.meta("general.type", Value::Str("imatrix".into()))
            .meta("imatrix.datasets", Value::Array(Array::Str(self.datasets.clone())))
            .meta("imatrix.chunk_count", Value::U32(self.chunk_count))
            .meta("imatrix.chunk_size", Value::U32(self.chunk_size));
        for (name, e) in &self.entries {
            let n_mat = e.counts.len().max(1);
            let n = e.sums.len() / n_mat;
            let sums: Vec<u8> = e.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            let counts: Vec<u8> = e.counts.iter().flat_map(|&c| (c as f32).to_le_bytes()).collect();
            w.tensor(&format!("{name}.in_sum2"), GgmlType::F32, &[n as u64, n_mat as u64], sums);
            w.tensor(&format!("{name}.counts"), GgmlType::F32, &[1, n_mat as u64], counts);
        }
        w.to_bytes()
    }
}

//! File types (llama.cpp's `llama_ftype`): a default tensor type plus, for the k-quant
//! mixes, rules that give some tensors more bits.

use gguf::GgmlType;

/// What `bantam quantize` can write, numbered as `general.file_type` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q2_K_S,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// Every file type with its name, in llama-quantize's order of listing.
pub const ALL: [(FileType, &str); 18] = [
    (FileType::Q4_0, "Q4_0"),
    (FileType::Q4_1, "Q4_1"),
    (FileType::Q5_0, "Q5_0"),
    (FileType::Q5_1, "Q5_1"),
    (FileType::Q2_K, "Q2_K"),
    (FileType::Q2_K_S, "Q2_K_S"),
    (FileType::Q3_K_S, "Q3_K_S"),
    (FileType::Q3_K_M, "Q3_K_M"),
    (FileType::Q3_K_L, "Q3_K_L"),
    (FileType::Q4_K_S, "Q4_K_S"),
    (FileType::Q4_K_M, "Q4_K_M"),
    (FileType::Q5_K_S, "Q5_K_S"),
    (FileType::Q5_K_M, "Q5_K_M"),
    (FileType::Q6_K, "Q6_K"),
    (FileType::Q8_0, "Q8_0"),
    (FileType::F16, "F16"),
    (FileType::BF16, "BF16"),
    (FileType::F32, "F32"),
];

impl FileType {
    /// Parse a name in any case, llama-quantize's aliases (`Q3_K`, `Q4_K`, `Q5_K` for the
    /// `_M` mixes) or the numeric id.
    pub fn parse(s: &str) -> Option<Self> {
        let up = s.to_ascii_uppercase();
        let alias = match up.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            other => other,
        };
        if let Some((t, _)) = ALL.iter().find(|(_, n)| *n == alias) {
            return Some(*t);
        }
        let id: u32 = up.parse().ok()?;
        ALL.iter().map(|(t, _)| *t).find(|t| t.id() == id)
    }

    /// [`FileType::parse`], or an error message that lists the supported types.
    pub fn parse_or_explain(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|(_, n)| *n).collect();
            format!("unsupported quantization type {s:?}; supported: {}", names.join(", "))
        })
    }

    pub fn name(self) -> &'static str {
        ALL.iter().find(|(t, _)| *t == self).map(|(_, n)| *n).expect("every type is listed")
    }

    /// `general.file_type` as llama.cpp numbers it.
    pub fn id(self) -> u32 {
        use FileType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            Q2_K_S => 21,
            BF16 => 32,
        }
    }

    /// The tensor type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use FileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K | Q2_K_S => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Broad tensor roles the mixes treat differently (`tensor_category` in llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    TokenEmbd,
    AttnQ,
    AttnK,
    AttnV,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

impl Category {
    pub fn of(name: &str) -> Self {
        use Category::*;
        if name == "output.weight" {
            return Output;
        }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
            return TokenEmbd;
        }
        for (pat, c) in [
            ("attn_qkv.weight", AttnQkv),
            ("attn_kv_b.weight", AttnKvB),
            ("attn_v.weight", AttnV),
            ("attn_k.weight", AttnK),
            ("attn_q.weight", AttnQ),
            ("attn_output.weight", AttnOutput),
            ("ffn_up", FfnUp),
            ("ffn_gate", FfnGate),
            ("ffn_down", FfnDown),
        ] {
            if name.contains(pat) {
                return c;
            }
        }
        Other
    }

    fn is_attn_v(self) -> bool {
        matches!(self, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
    }
}

/// The model facts the mixes look at.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    pub arch: String,
    pub n_layer: usize,
    /// Query heads per KV head.
    pub n_gqa: usize,
    pub n_expert: usize,
}

impl ModelFacts {
    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
    /// llama.cpp gives 70B llamas (80 layers, grouped KV) more bits in `attn_v`.
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_gqa > 1
    }
}

/// Whether llama-quantize would quantize this tensor at all (`tensor_allows_quantization`):
/// 2-D and up, named `…weight`, not a norm, not one of the small special tables.
pub fn allows_quantization(name: &str, dims: &[u64], quantize_output: bool) -> bool {
    let n_dims = dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    if n_dims < 2 || !name.ends_with("weight") || name.contains("_norm.weight") {
        return false;
    }
    if !quantize_output && name == "output.weight" {
        return false;
    }
    const KEEP: [&str; 31] = [
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if KEEP.iter().any(|k| name.contains(k)) {
        return false;
    }
    !matches!(name, "position_embd.weight" | "token_types.weight")
        && !name.contains("sam.pos_embd")
        && !name.contains("sam.neck.")
        && !name.contains("sam.net_")
}

/// The per-file state of the mix rules: counters advance as tensors are visited in
/// llama.cpp's order (see [`llama_order`]).
pub struct Mixer<'a> {
    pub ftype: FileType,
    pub facts: &'a ModelFacts,
    pub has_imatrix: bool,
    pub has_tied_embeddings: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    /// How many tensors fell back to another type for their shape.
    pub n_fallback: usize,
}

impl<'a> Mixer<'a> {
    /// `names` are all tensor names of the file.
    pub fn new<'n>(ftype: FileType, facts: &'a ModelFacts, has_imatrix: bool, names: impl Iterator<Item = &'n str>) -> Self {
        let (mut n_attention_wv, mut tied) = (0, true);
        for n in names {
            let c = Category::of(n);
            if c.is_attn_v() {
                n_attention_wv += 1;
            }
            if c == Category::Output {
                tied = false;
            }
        }
        Mixer { ftype, facts, has_imatrix, has_tied_embeddings: tied, n_attention_wv, i_attention_wv: 0, i_ffn_down: 0, n_fallback: 0 }
    }

    /// The mix's type for a quantizable tensor (`llama_tensor_get_type_impl`), starting from
    /// the file's default type.
    pub fn mix_type(&mut self, name: &str, ne0: u64, output_type: Option<GgmlType>) -> GgmlType {
        use Category as C;
        use FileType as F;
        use GgmlType as G;
        let ft = self.ftype;
        let facts = self.facts;
        let mut t = ft.default_type();
        let cat = Category::of(name);
        let use_more_bits = |i: usize, n: usize| i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2;
        if cat == C::Output || (self.has_tied_embeddings && cat == C::TokenEmbd) {
            if let Some(o) = output_type {
                t = o;
            } else if facts.is_falcon() || !ne0.is_multiple_of(t.block_len() as u64) {
                t = G::Q8_0;
            } else if t != G::Q8_0 {
                t = G::Q6_K;
            }
        } else if cat == C::TokenEmbd {
            // the mixes here keep the default type for untied embeddings
        } else if cat.is_attn_v() {
            let gqa4 = facts.n_gqa >= 4;
            match ft {
                F::Q2_K => t = if gqa4 { G::Q4_K } else { G::Q3_K },
                F::Q2_K_S if gqa4 => t = G::Q4_K,
                F::Q3_K_M => t = if self.i_attention_wv < 2 { G::Q5_K } else { G::Q4_K },
                F::Q3_K_L => t = G::Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(self.i_attention_wv, self.n_attention_wv) => t = G::Q6_K,
                F::Q4_K_S if self.i_attention_wv < 4 => t = G::Q5_K,
                _ => {}
            }
            if facts.is_70b() && matches!(t, G::Q3_K | G::Q4_K) {
                t = G::Q5_K;
            }
            if facts.n_expert == 8 {
                t = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == C::AttnK {
            if facts.n_expert == 8 {
                t = G::Q8_0;
            }
        } else if cat == C::FfnDown {
            let (i, n) = if facts.n_expert > 1 { (layer_of(name).unwrap_or(self.i_ffn_down), facts.n_layer) } else { (self.i_ffn_down, facts.n_layer) };
            match ft {
                F::Q2_K => t = G::Q3_K,
                F::Q2_K_S if i < n / 8 => t = G::Q4_K,
                F::Q3_K_M => {
                    t = if i < n / 16 {
                        G::Q5_K
                    } else if !facts.is_falcon() || use_more_bits(i, n) {
                        G::Q4_K
                    } else {
                        G::Q3_K
                    }
                }
                F::Q3_K_L => t = if facts.is_falcon() { G::Q4_K } else { G::Q5_K },
                F::Q4_K_M => {
                    if facts.is_falcon() {
                        t = if i < n / 16 {
                            G::Q6_K
                        } else if use_more_bits(i, n) {
                            G::Q5_K
                        } else {
                            G::Q4_K
                        };
                    } else if use_more_bits(i, n) {
                        t = G::Q6_K;
                    }
                }
                F::Q5_K_M if use_more_bits(i, n) => t = G::Q6_K,
                F::Q4_K_S if !facts.is_falcon() && i < n / 8 => t = G::Q5_K,
                F::Q4_0 | F::Q5_0 if self.has_imatrix && i < n / 8 => {
                    t = if ft == F::Q4_0 { G::Q4_1 } else { G::Q5_1 };
                }
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == C::AttnOutput {
            if !facts.is_falcon() {
                if facts.n_expert == 8 {
                    if matches!(ft, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M) {
                        t = G::Q5_K;
                    }
                } else {
                    match ft {
                        F::Q2_K => t = G::Q3_K,
                        F::Q3_K_M => t = G::Q4_K,
                        F::Q3_K_L => t = G::Q5_K,
                        _ => {}
                    }
                }
            } else if ft == F::Q3_K_L {
                t = G::Q4_K;
            }
        } else if cat == C::AttnQkv {
            match ft {
                F::Q3_K_M | F::Q3_K_L => t = G::Q4_K,
                F::Q4_K_M => t = G::Q5_K,
                F::Q5_K_M => t = G::Q6_K,
                _ => {}
            }
        }
        t
    }

    /// A type the row length allows (`tensor_type_fallback`): 256-blocks step down to a
    /// 32-block type, and F16 when even that does not divide the rows.
    pub fn fallback(&mut self, t: GgmlType, ne0: u64) -> GgmlType {
        use GgmlType as G;
        if ne0.is_multiple_of(t.block_len() as u64) {
            return t;
        }
        self.n_fallback += 1;
        let f = match t {
            G::Q2_K | G::Q3_K => G::Q4_0,
            G::Q4_K => G::Q5_0,
            G::Q5_K => G::Q5_1,
            G::Q6_K => G::Q8_0,
            other => other,
        };
        if ne0.is_multiple_of(f.block_len() as u64) {
            f
        } else {
            G::F16
        }
    }
}

/// Whether a tensor of this type in this file type needs an importance matrix
/// (`tensor_requires_imatrix`): only the Q2_K tensors of a Q2_K_S file.
pub fn requires_imatrix(name: &str, t: GgmlType, ftype: FileType) -> bool {
    if Category::of(name) == Category::TokenEmbd || name == "output.weight" {
        return false;
    }
    t == GgmlType::Q2_K && ftype == FileType::Q2_K_S
}

/// The block number of `blk.N.…`.
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's tensor order (`weight_name_comparer`): tensors outside the blocks first,
/// then block by block, by name within each. The mix counters advance in this order.
pub fn llama_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = layer_of(a).map_or(-1, |l| l as i64);
    let lb = layer_of(b).map_or(-1, |l| l as i64);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        assert_eq!(FileType::parse("q4_k_m"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("Q4_K"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("15"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::parse("bf16"), Some(FileType::BF16));
        assert_eq!(FileType::parse("IQ2_XXS"), None);
        for (t, n) in ALL {
            assert_eq!(FileType::parse(n), Some(t));
            assert_eq!(t.name(), n);
        }
    }

    #[test]
    fn order_puts_globals_first_then_blocks_numerically() {
        let mut v = vec!["blk.10.attn_q.weight", "output_norm.weight", "blk.2.ffn_up.weight", "blk.2.attn_k.weight", "token_embd.weight"];
        v.sort_by(|a, b| llama_order(a, b));
        assert_eq!(v, ["output_norm.weight", "token_embd.weight", "blk.2.attn_k.weight", "blk.2.ffn_up.weight", "blk.10.attn_q.weight"]);
    }

    #[test]
    fn q4_k_m_gives_more_bits_where_llama_cpp_does() {
        let facts = ModelFacts { arch: "llama".into(), n_layer: 8, n_gqa: 3, n_expert: 0 };
        let names: Vec<String> = (0..8).map(|i| format!("blk.{i}.attn_v.weight")).collect();
        let mut m = Mixer::new(FileType::Q4_K_M, &facts, false, names.iter().map(|s| s.as_str()));
        let got: Vec<_> = names.iter().map(|n| m.mix_type(n, 512, None)).collect();
        // use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2
        use GgmlType::*;
        assert_eq!(got, [Q6_K, Q4_K, Q4_K, Q6_K, Q4_K, Q4_K, Q6_K, Q6_K]);
        // tied embeddings get the output's treatment: Q6_K, or Q8_0 when rows are not whole
        // 256-blocks of the default type
        assert_eq!(m.mix_type("token_embd.weight", 512, None), Q6_K);
        assert_eq!(m.mix_type("token_embd.weight", 576, None), Q8_0);
        assert_eq!(m.fallback(Q6_K, 576), Q8_0);
        assert_eq!(m.fallback(Q4_K, 96), Q5_0);
        assert_eq!(m.fallback(Q4_K, 100), F16);
        assert!(allows_quantization("blk.0.attn_q.weight", &[64, 64], true));
        assert!(!allows_quantization("blk.0.attn_norm.weight", &[64], true));
        assert!(!allows_quantization("blk.0.attn_q.weight", &[64, 1], true));
    }
}

//! A tiny deterministic model for fast end-to-end tests: a real GGUF file (written with
//! [`gguf::GgufWriter`]) with pseudo-random Q8_0 weights, a byte-level BPE vocabulary of the
//! 256 bytes plus a few merges and an end-of-text token, and a chat template. Same seed,
//! same bytes.

use gguf::{Array, GgmlType, GgufWriter, Value};
use kernels::blocks::block_bytes;
use kernels::quantize::quantize_weights_q8_0;

/// Shape of the tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: &'static str,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub ctx: usize,
    pub seed: u64,
    /// The Jinja chat template the file carries.
    pub chat_template: &'static str,
}

/// ChatML, the tiny model's default chat template.
pub const CHATML: &str =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec { arch: "llama", n_embd: 64, n_layer: 2, n_head: 4, n_head_kv: 2, n_ff: 128, ctx: 256, seed: 1, chat_template: CHATML }
    }
}

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest are shifted
/// past 255.
fn byte_token(b: u8) -> String {
    let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable {
        return char::from(b).to_string();
    }
    let shifted = (0..=255u8).filter(|&x| !((33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174)).position(|x| x == b).unwrap_or(0);
    char::from_u32(256 + shifted as u32).map(String::from).unwrap_or_default()
}

/// The bytes of the tiny model's GGUF file.
pub fn tiny_model(spec: &TinySpec) -> Vec<u8> {
    let mut rng = Rng(spec.seed);
    let mut tokens: Vec<String> = (0..=255u8).map(byte_token).collect();
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|endoftext|>".into());
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    // Pad to a multiple of 32 so every row is whole blocks and shapes stay simple.
    while !tokens.len().is_multiple_of(32) {
        tokens.push(format!("<|unused{}|>", tokens.len()));
    }
    let n_vocab = tokens.len();
    let types: Vec<i32> = tokens.iter().map(|t| if t.starts_with("<|") { 3 } else { 1 }).collect();
    let eot = tokens.iter().position(|t| t == "<|endoftext|>").unwrap_or(0) as u32;
    let im_end = tokens.iter().position(|t| t == "<|im_end|>").unwrap_or(0) as u32;

    let a = spec.arch;
    let hd = spec.n_embd / spec.n_head;
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str(a.into()))
        .meta("general.name", Value::Str("tiny".into()))
        .meta(&format!("{a}.context_length"), Value::U32(spec.ctx as u32))
        .meta(&format!("{a}.embedding_length"), Value::U32(spec.n_embd as u32))
        .meta(&format!("{a}.block_count"), Value::U32(spec.n_layer as u32))
        .meta(&format!("{a}.feed_forward_length"), Value::U32(spec.n_ff as u32))
        .meta(&format!("{a}.attention.head_count"), Value::U32(spec.n_head as u32))
        .meta(&format!("{a}.attention.head_count_kv"), Value::U32(spec.n_head_kv as u32))
        .meta(&format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .meta(&format!("{a}.rope.freq_base"), Value::F32(10000.0))
        .meta("tokenizer.ggml.model", Value::Str("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::Str("default".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens)))
        .meta("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .meta("tokenizer.ggml.merges", Value::Array(Array::Str(merges.iter().map(|s| s.to_string()).collect())))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(eot))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(im_end))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .meta("tokenizer.chat_template", Value::Str(spec.chat_template.into()));
    let mut mat = |w: &mut GgufWriter, name: &str, cols: usize, rows: usize, scale: f32| {
        let v: Vec<f32> = (0..cols * rows).map(|_| rng.f32() * scale).collect();
        w.tensor(name, GgmlType::Q8_0, &[cols as u64, rows as u64], block_bytes(&quantize_weights_q8_0(&v)).to_vec());
    };
    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|i| (1.0f32 + 0.01 * (i % 7) as f32).to_le_bytes()).collect() };
    let (ne, kv) = (spec.n_embd, spec.n_head_kv * hd);
    mat(&mut w, "token_embd.weight", ne, n_vocab, 1.0);
    // Untied and small, so the next-token distribution is broad enough for sampling tests.
    mat(&mut w, "output.weight", ne, n_vocab, 2.0 / (ne as f32).sqrt());
    w.tensor("output_norm.weight", GgmlType::F32, &[ne as u64], ones(ne));
    for il in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        w.tensor(&n("attn_norm.weight"), GgmlType::F32, &[ne as u64], ones(ne));
        w.tensor(&n("ffn_norm.weight"), GgmlType::F32, &[ne as u64], ones(ne));
        let s = 1.0 / (ne as f32).sqrt();
        mat(&mut w, &n("attn_q.weight"), ne, ne, s);
        mat(&mut w, &n("attn_k.weight"), ne, kv, s);
        mat(&mut w, &n("attn_v.weight"), ne, kv, s);
        mat(&mut w, &n("attn_output.weight"), ne, ne, s);
        mat(&mut w, &n("ffn_gate.weight"), ne, spec.n_ff, s);
        mat(&mut w, &n("ffn_up.weight"), ne, spec.n_ff, s);
        mat(&mut w, &n("ffn_down.weight"), spec.n_ff, ne, 1.0 / (spec.n_ff as f32).sqrt());
    }
    w.to_bytes()
}

//! SentencePiece's `tokenizer.model`: a protobuf `ModelProto` whose field 1 repeats
//! `SentencePiece { piece = 1 (string), score = 2 (float), type = 3 (enum) }` and whose
//! field 3 is the `NormalizerSpec` (`add_dummy_prefix = 3`). Only what a converter needs is
//! read; the writer emits a minimal model of the same shape.

/// One vocabulary entry. `kind` uses SentencePiece's numbering, which is also GGUF's
/// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
/// 6 byte.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub pieces: Vec<Piece>,
    /// `normalizer_spec.add_dummy_prefix` (SentencePiece's default: true).
    pub add_dummy_prefix: bool,
}

enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The fields of one protobuf message, in order.
fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let f = match key & 7 {
            0 => Field::Varint(varint(b, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|&p| p <= b.len()).ok_or("truncated fixed64")?;
                Field::Fixed64
            }
            2 => {
                let n = usize::try_from(varint(b, &mut pos)?).map_err(|_| "length overflows")?;
                let end = pos.checked_add(n).filter(|&e| e <= b.len()).ok_or("a length runs past the end")?;
                let s = &b[pos..end];
                pos = end;
                Field::Bytes(s)
            }
            5 => {
                let end = pos.checked_add(4).filter(|&e| e <= b.len()).ok_or("truncated fixed32")?;
                let v = u32::from_le_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
                pos = end;
                Field::Fixed32(v)
            }
            w => return Err(format!("wire type {w} is not used by sentencepiece models")),
        };
        out.push((key >> 3, f));
    }
    Ok(out)
}

/// Parse a `tokenizer.model`.
pub fn parse(b: &[u8]) -> Result<Model, String> {
    let mut m = Model { pieces: Vec::new(), add_dummy_prefix: true };
    for (num, f) in fields(b)? {
        match (num, f) {
            (1, Field::Bytes(p)) => {
                let mut piece = Piece { text: String::new(), score: 0.0, kind: 1 };
                for (n, f) in fields(p)? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => piece.text = String::from_utf8(s.to_vec()).map_err(|_| format!("piece {} is not UTF-8", m.pieces.len()))?,
                        (2, Field::Fixed32(v)) => piece.score = f32::from_bits(v),
                        (3, Field::Varint(v)) => piece.kind = i32::try_from(v).map_err(|_| "bad piece type")?,
                        _ => {}
                    }
                }
                m.pieces.push(piece);
            }
            (3, Field::Bytes(spec)) => {
                for (n, f) in fields(spec)? {
                    if let (3, Field::Varint(v)) = (n, f) {
                        m.add_dummy_prefix = v != 0;
                    }
                }
            }
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err("no pieces".into());
    }
    Ok(m)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Serialize a model: its pieces, a `TrainerSpec` naming the unigram model with byte
/// fallback, and the normalizer's `add_dummy_prefix`.
pub fn write(m: &Model) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &m.pieces {
        let mut e = Vec::new();
        put_bytes(&mut e, 1, p.text.as_bytes());
        put_varint(&mut e, 2 << 3 | 5);
        e.extend_from_slice(&p.score.to_bits().to_le_bytes());
        put_varint(&mut e, 3 << 3);
        put_varint(&mut e, p.kind as u64);
        put_bytes(&mut out, 1, &e);
    }
    // TrainerSpec: model_type = 3 (field 3) is BPE; 1 is unigram. byte_fallback = 35.
    let mut trainer = Vec::new();
    put_varint(&mut trainer, 3 << 3);
    put_varint(&mut trainer, 1);
    put_varint(&mut trainer, 35 << 3);
    put_varint(&mut trainer, 1);
    put_bytes(&mut out, 2, &trainer);
    let mut norm = Vec::new();
    put_varint(&mut norm, 3 << 3);
    put_varint(&mut norm, u64::from(m.add_dummy_prefix));
    put_bytes(&mut out, 3, &norm);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_survives_writing_and_reading() {
        let m = Model {
            pieces: vec![
                Piece { text: "<unk>".into(), score: 0.0, kind: 2 },
                Piece { text: "▁the".into(), score: -1.5, kind: 1 },
                Piece { text: "<0x0A>".into(), score: 0.0, kind: 6 },
            ],
            add_dummy_prefix: false,
        };
        assert_eq!(parse(&write(&m)).unwrap(), m);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let b = write(&Model { pieces: vec![Piece { text: "abc".into(), score: 1.0, kind: 1 }], add_dummy_prefix: true });
        for n in 1..b.len() {
            let _ = parse(&b[..n]);
        }
        assert!(parse(&b[..b.len() - 1]).is_err());
        assert!(parse(&[]).is_err());
    }
}

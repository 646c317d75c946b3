//! Model names and blob digests, validated before they touch the file system.
//!
//! A name is `[host/][namespace/]model[:tag]` as in Ollama; every part is made of ASCII
//! letters, digits, `.`, `-` and `_`, starts with a letter or digit, and is never `.` or
//! `..`, so a name can only ever address a file below `manifests/`.

use crate::StoreError;
use std::fmt;
use std::path::PathBuf;

/// The tag a name without one gets.
pub const DEFAULT_TAG: &str = "latest";
/// The namespace a one-part name lives in, as Ollama's `library/`.
const DEFAULT_NAMESPACE: &str = "library";

/// A validated model name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    /// One to three path parts: `model`, `namespace/model` or `host/namespace/model`.
    parts: Vec<String>,
    tag: String,
}

impl ModelName {
    pub fn parse(name: &str) -> Result<ModelName, StoreError> {
        let bad = |why| StoreError::InvalidName { name: name.to_string(), why };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > 256 {
            return Err(bad("it is longer than 256 characters"));
        }
        if name.starts_with('/') || name.contains('\\') {
            return Err(bad("a name is not a path"));
        }
        // The tag follows the last ':' after the last '/' (a host may carry a port).
        let (path, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
            _ => (name, DEFAULT_TAG),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 3 {
            return Err(bad("a name has at most three parts: host/namespace/model"));
        }
        for p in parts.iter().copied().chain([tag]) {
            if p.is_empty() {
                return Err(bad("a part of it is empty"));
            }
            if p == "." || p == ".." || p.contains("..") {
                return Err(bad("'..' is not allowed in names"));
            }
            if !p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad("each part must start with a letter, digit or '_'"));
            }
            if !p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
                return Err(bad("only letters, digits, '.', '-' and '_' are allowed in each part"));
            }
        }
        Ok(ModelName { parts: parts.iter().map(|s| s.to_string()).collect(), tag: tag.to_string() })
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The name without its tag (`hf.co/org/repo`, `smollm2`).
    pub fn model(&self) -> String {
        self.parts.join("/")
    }

    /// The manifest's path relative to `manifests/`: `library/smollm2/135m`.
    pub fn manifest_path(&self) -> PathBuf {
        let mut p = PathBuf::new();
        if self.parts.len() == 1 {
            p.push(DEFAULT_NAMESPACE);
        }
        for part in &self.parts {
            p.push(part);
        }
        p.push(&self.tag);
        p
    }

    /// The name a manifest path (relative to `manifests/`) stands for.
    pub fn from_manifest_path(rel: &std::path::Path) -> Option<ModelName> {
        let parts: Vec<&str> = rel.iter().map(|s| s.to_str()).collect::<Option<_>>()?;
        let (tag, path) = parts.split_last()?;
        let path = match path {
            [ns, model] if *ns == DEFAULT_NAMESPACE => vec![*model],
            p => p.to_vec(),
        };
        ModelName::parse(&format!("{}:{tag}", path.join("/"))).ok()
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.parts.join("/"), self.tag)
    }
}

/// A validated blob digest: `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, StoreError> {
        let hex = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("sha256-")).ok_or_else(|| StoreError::InvalidDigest(s.to_string()))?;
        Digest::from_hex(hex).map_err(|_| StoreError::InvalidDigest(s.to_string()))
    }

    /// From 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<Digest, StoreError> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::InvalidDigest(hex.to_string()));
        }
        Ok(Digest(hex.to_ascii_lowercase()))
    }

    pub fn of_bytes(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(hex(&sha2::Sha256::digest(bytes)))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The blob's file name: `sha256-<hex>` (no ':' so it is a valid file name everywhere).
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Levenshtein distance, for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_default_tag_and_namespace() {
        let n = ModelName::parse("smollm2").unwrap();
        assert_eq!(n.to_string(), "smollm2:latest");
        assert_eq!(n.manifest_path(), PathBuf::from("library/smollm2/latest"));
        let n = ModelName::parse("hf.co/org/repo:Q4_K_M").unwrap();
        assert_eq!(n.manifest_path(), PathBuf::from("hf.co/org/repo/Q4_K_M"));
        assert_eq!(ModelName::from_manifest_path(&n.manifest_path()), Some(n));
        let n = ModelName::parse("qwen2.5-coder:0.5b").unwrap();
        assert_eq!(ModelName::from_manifest_path(&n.manifest_path()), Some(n));
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in ["", "../x", "a/../b", "/etc/passwd", "a\\b", "..", "a:..", "a/b/c/d", "a:b/c", "x:", "a//b", "-rf", "a b", "a\0b", "ü"] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn digests_are_sha256_and_64_hex() {
        let h = "ab".repeat(32);
        assert_eq!(Digest::parse(&format!("sha256:{h}")).unwrap().hex(), h);
        assert_eq!(Digest::parse(&format!("sha256-{}", h.to_uppercase())).unwrap().hex(), h);
        for bad in [format!("sha256:{}", &h[1..]), format!("md5:{h}"), format!("sha256:../{}", &h[3..]), h.clone(), format!("sha256:{h}0")] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("smolm2:135m", "smollm2:135m"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }
}

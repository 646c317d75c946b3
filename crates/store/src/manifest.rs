//! Manifests: which blobs make up a model, in the layout of Ollama's (an OCI image manifest
//! whose layers are typed by media type).

use crate::name::Digest;
use serde::{Deserialize, Serialize};

pub const MEDIA_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_MODEL: &str = "application/vnd.ollama.image.model";
pub const MEDIA_TEMPLATE: &str = "application/vnd.ollama.image.template";
pub const MEDIA_SYSTEM: &str = "application/vnd.ollama.image.system";
pub const MEDIA_PARAMS: &str = "application/vnd.ollama.image.params";
pub const MEDIA_MESSAGES: &str = "application/vnd.ollama.image.messages";
pub const MEDIA_LICENSE: &str = "application/vnd.ollama.image.license";
/// A LoRA adapter in GGUF, applied over the model layer (one layer per adapter, in order).
pub const MEDIA_ADAPTER: &str = "application/vnd.ollama.image.adapter";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// The config blob: where the model came from and what it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub model_format: String,
    /// The pull source (`pypi:…`, `hf.co/…`, a URL) or the `FROM` of a Modelfile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl Manifest {
    pub fn new(config: Layer, layers: Vec<Layer>) -> Manifest {
        Manifest { schema_version: 2, media_type: MEDIA_MANIFEST.to_string(), config, layers }
    }

    /// The layer of a media type (the last one, if there are several).
    pub fn layer(&self, media_type: &str) -> Option<&Layer> {
        self.layers.iter().rev().find(|l| l.media_type == media_type)
    }

    /// Every blob it refers to, config included.
    pub fn blobs(&self) -> impl Iterator<Item = &Layer> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Total size of its blobs, as `ollama list` shows it.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

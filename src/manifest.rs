//! Manifests, indexes and image configs, with media-type detection that
//! tolerates registries which label manifests loosely.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::platform::Platform;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Sent on every manifest GET, most preferred first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index we read.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Most layers an image may have (Docker's own limit is 127 on overlay).
pub const MAX_LAYERS: usize = 1000;
/// Most entries an index may list.
pub const MAX_INDEX_ENTRIES: usize = 1000;
/// Indexes followed inside an index before we give up.
pub const MAX_INDEX_DEPTH: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn parsed_digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest).map_err(|e| e.context("descriptor"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    fs_layers: Option<serde_json::Value>,
}

#[derive(Clone, Debug)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug)]
pub struct Index {
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug)]
pub enum Parsed {
    Image(Box<ImageManifest>),
    Index(Index),
}

fn is_index_type(t: &str) -> bool {
    t == DOCKER_LIST || t == OCI_INDEX
}

fn is_image_type(t: &str) -> bool {
    t == DOCKER_MANIFEST || t == OCI_MANIFEST
}

/// `Application/JSON; charset=utf-8` -> `application/json`.
pub fn bare_media_type(header: &str) -> String {
    header
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Detect the kind of manifest: body `mediaType` first, then the
/// Content-Type header, then the structure (`manifests` vs `config`+`layers`).
pub fn parse(body: &[u8], content_type: Option<&str>, what: &str) -> Result<Parsed> {
    let raw: RawManifest = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::Registry,
            format!("manifest for {what} is not valid JSON: {e}"),
        )
    })?;
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("manifest for {what} is Docker schema1, which is not supported"),
        ));
    }
    let header = content_type.map(bare_media_type).filter(|t| !t.is_empty());
    if let Some(h) = &header {
        if h == DOCKER_SCHEMA1 || h == DOCKER_SCHEMA1_SIGNED {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("manifest for {what} is Docker schema1 ({h}), which is not supported"),
            ));
        }
    }
    let structural = if raw.manifests.is_some() {
        Some(OCI_INDEX)
    } else if raw.config.is_some() && raw.layers.is_some() {
        Some(OCI_MANIFEST)
    } else {
        None
    };
    let known = |t: &String| is_index_type(t) || is_image_type(t);
    let declared = raw.media_type.clone().filter(|t| !t.is_empty());
    let media_type = match (&declared, &header) {
        (Some(t), _) => t.clone(),
        (None, Some(h)) if known(h) => h.clone(),
        _ => structural.map(str::to_string).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("manifest for {what} has an unknown type"),
            )
        })?,
    };
    // A body that contradicts the type it claims is refused rather than guessed.
    let conflict = |other: &str| {
        Error::new(
            ErrorKind::Registry,
            crate::error::printable(&format!(
                "media type conflict for {what}: declared {media_type} but {other}"
            )),
        )
    };
    if let (Some(h), Some(d)) = (&header, &declared) {
        if known(h) && is_index_type(h) != is_index_type(d) {
            return Err(conflict(&format!("Content-Type says {h}")));
        }
    }
    if is_index_type(&media_type) {
        let manifests = raw
            .manifests
            .ok_or_else(|| conflict("the body has no manifests"))?;
        if manifests.len() > MAX_INDEX_ENTRIES {
            return Err(too_many(
                what,
                "index entries",
                manifests.len(),
                MAX_INDEX_ENTRIES,
            ));
        }
        Ok(Parsed::Index(Index {
            media_type,
            manifests,
        }))
    } else if is_image_type(&media_type) {
        match (raw.config, raw.layers) {
            (Some(_), Some(layers)) if layers.len() > MAX_LAYERS => {
                Err(too_many(what, "layers", layers.len(), MAX_LAYERS))
            }
            (Some(config), Some(layers)) if raw.manifests.is_none() => {
                Ok(Parsed::Image(Box::new(ImageManifest {
                    media_type,
                    config,
                    layers,
                })))
            }
            _ => Err(conflict("the body is not an image manifest")),
        }
    } else {
        Err(Error::new(
            ErrorKind::Unsupported,
            crate::error::printable(&format!(
                "manifest for {what} has unsupported media type {media_type}"
            )),
        ))
    }
}

fn too_many(what: &str, things: &str, n: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("manifest for {what} lists {n} {things}, more than the {max} we accept"),
    )
}

fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("vnd.docker.reference.type"));
    let unknown = d.platform.as_ref().is_some_and(|p| p.os == "unknown");
    annotated || unknown
}

/// Pick the entry for `want`: the best rank (exact variant before an arm
/// fallback, exact Windows build before none named), then the newest
/// os.version, then the smallest digest, so the order of the entries never
/// changes the choice. A nested index without a platform is followed only
/// when no image matches.
pub fn select_platform<'a>(
    index: &'a Index,
    want: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    let version = |d: &Descriptor| -> Vec<u64> {
        let v = d.platform.as_ref().and_then(|p| p.os_version.clone());
        let v = v.unwrap_or_default();
        v.split('.')
            .map(|n| n.parse::<u64>().unwrap_or(0))
            .collect()
    };
    let candidates = index.manifests.iter().filter(|d| !is_attestation(d));
    let ranked = candidates.filter_map(|d| match &d.platform {
        Some(p) => want.rank(p).map(|r| (r, d)),
        None if is_index_type(&d.media_type) => Some((u32::MAX, d)),
        None => None,
    });
    let best = ranked.min_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then_with(|| version(b).cmp(&version(a)))
            .then_with(|| a.digest.cmp(&b.digest))
    });
    best.map(|(_, d)| d).ok_or_else(|| {
        let mut available: Vec<String> = index
            .manifests
            .iter()
            .filter(|d| !is_attestation(d))
            .filter_map(|d| d.platform.as_ref().map(|p| p.normalized().to_string()))
            .collect();
        available.dedup();
        // A hostile index may list a thousand entries: name the first few.
        const SHOWN: usize = 20;
        let more = available.len().saturating_sub(SHOWN);
        available.truncate(SHOWN);
        let mut list = if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        };
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        Error::new(
            ErrorKind::NotFound,
            crate::error::printable(&format!(
                "no manifest for platform {want} in {what}; available: {list}"
            )),
        )
    })
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

/// The platform an image config declares, when it declares one.
pub fn config_platform(config: &[u8]) -> Option<Platform> {
    let c: ConfigPlatform = serde_json::from_slice(config).ok()?;
    Some(Platform {
        os: c.os?,
        architecture: c.architecture?,
        variant: c.variant,
        os_version: None,
    })
}

/// The diffIDs the config promises, in layer order.
pub fn config_diff_ids(config: &[u8], what: &str) -> Result<Vec<String>> {
    let raw: RawConfig = serde_json::from_slice(config).map_err(|e| {
        Error::new(
            ErrorKind::Registry,
            format!("config of {what} is not valid JSON: {e}"),
        )
    })?;
    Ok(raw.rootfs.map(|r| r.diff_ids).unwrap_or_default())
}

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The OCI media type for a Docker layer type (others pass unchanged).
fn oci_layer_type(t: &str) -> &str {
    match t {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        other => other,
    }
}

/// The image as an OCI manifest, for the OCI layout. A Docker schema2
/// manifest is rewritten (as `skopeo copy` to `oci:` does): same config and
/// layer blobs, OCI media types, so a new manifest digest. OCI manifests
/// are kept byte for byte.
pub fn as_oci(image: &ImageManifest) -> Option<Vec<u8>> {
    if image.media_type != DOCKER_MANIFEST {
        return None;
    }
    let retype = |d: &Descriptor, t: &str| Descriptor {
        media_type: t.to_string(),
        ..d.clone()
    };
    let layers: Vec<Descriptor> = image
        .layers
        .iter()
        .map(|l| retype(l, oci_layer_type(&l.media_type)))
        .collect();
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": retype(&image.config, OCI_CONFIG),
        "layers": layers,
    });
    Some(serde_json::to_vec(&doc).expect("manifest serialises"))
}

/// How a layer blob is encoded, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerEncoding {
    Gzip,
    Zstd,
    Plain,
}

pub fn layer_encoding(media_type: &str) -> Result<LayerEncoding> {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(LayerEncoding::Gzip),
        // Docker's type is not in any spec, but BuildKit emits it.
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(LayerEncoding::Zstd),
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(LayerEncoding::Plain),
        other => Err(Error::new(
            ErrorKind::Unsupported,
            crate::error::printable(&format!("unsupported layer media type {other}")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESC: &str = r#"{"mediaType":"x","digest":"sha256:00","size":1}"#;

    fn image_body(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|t| format!(r#""mediaType":"{t}","#))
            .unwrap_or_default();
        format!(r#"{{"schemaVersion":2,{mt}"config":{DESC},"layers":[{DESC}]}}"#)
    }

    #[test]
    fn detection_order() {
        let b = image_body(Some(OCI_MANIFEST));
        assert!(matches!(
            parse(b.as_bytes(), Some("text/plain"), "r"),
            Ok(Parsed::Image(_))
        ));
        let b = image_body(None);
        assert!(matches!(
            parse(b.as_bytes(), None, "r"),
            Ok(Parsed::Image(_))
        ));
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{DESC}]}}"#);
        let ct = "Application/Vnd.Oci.Image.Index.v1+json; charset=utf-8";
        assert!(matches!(
            parse(idx.as_bytes(), Some(ct), "r"),
            Ok(Parsed::Index(_))
        ));
        assert!(matches!(
            parse(idx.as_bytes(), None, "r"),
            Ok(Parsed::Index(_))
        ));
    }

    #[test]
    fn conflicts_and_schema1() {
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{DESC}]}}"#);
        let e = parse(idx.as_bytes(), Some(OCI_MANIFEST), "r").unwrap_err();
        assert!(e.message.contains("media type conflict"), "{}", e.message);
        let s1 = r#"{"schemaVersion":1,"fsLayers":[]}"#;
        let e = parse(s1.as_bytes(), Some(DOCKER_SCHEMA1_SIGNED), "r").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.contains("schema1"));
    }
}

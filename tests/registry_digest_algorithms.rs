//! Digest algorithms: sha256 and sha512 end to end, anything else UNSUPPORTED.
//!
//! What the real registry (Debian's docker-registry, distribution 2.8) does with sha512, as
//! these tests rely on: it takes blob uploads named `sha512:...` (it checks them, stores them
//! by sha256 and serves them under both names), and manifests whose config and layers are
//! sha512. It does not serve a manifest by a sha512 digest (404; a PUT by one is refused
//! with DIGEST_INVALID), so pulling `@sha512:` goes through the fault front, which answers
//! for the registry there (`digests_pull_by_sha512_manifest_digest` shows the 404 first).

mod common;
mod registry_kit;

use std::path::Path;
use std::process::Command;

use common::capi;
use common::fixtures::{self, Env};
use registry_kit::{assert_nothing_written, options};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha512};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::digest::{digest_with, Algorithm};
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{Compression, Format, ImageSpec, Layer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Two gzip layers and a plain one, named by sha512 throughout (diff_ids too when asked).
fn sha512_image(diff_ids: bool, format: Format) -> ImageSpec {
    let plain = Layer::tar_of_dir_with("/etc", 128 << 10, Compression::None);
    ImageSpec::new(vec![
        Layer::random(48 << 10, 51),
        fixtures::real_files(&["/usr/share/doc"], 256 << 10),
        plain,
    ])
    .format(format)
    .digest_algorithm(Algorithm::Sha512, diff_ids)
}

/// Files under blobs/sha512, each checked to hash to its own name.
fn sha512_blobs(store: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(store.join("blobs/sha512")) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for e in dir {
        let path = e.unwrap().path();
        let hex = format!("{:x}", Sha512::digest(std::fs::read(&path).unwrap()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, hex, "{} is corrupt", path.display());
        names.push(format!("sha512:{name}"));
    }
    names
}

fn skopeo_raw_manifest(store: &Path, reference: &str) -> Value {
    let target = format!("oci:{}:{reference}", store.display());
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", &target])
        .output()
        .expect("skopeo must be installed (.ci/run installs it)");
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn digests_sha512_image_pulls_into_blobs_sha512() {
    let env = Env::new();
    let pushed = env.push("fx/app", "512", &sha512_image(true, Format::Oci));
    assert!(pushed.config_digest.starts_with("sha512:"));

    let (out, _) = capi::pull(options(&env, "fx/app:512"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.unwrap();
    assert_eq!(json["config_digest"], pushed.config_digest.as_str());
    for (got, want) in json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&pushed.layers)
    {
        assert_eq!(got["digest"], want.digest.as_str());
        assert!(want.diff_id.starts_with("sha512:"), "{}", want.diff_id);
        assert_eq!(
            got["diff_id"],
            want.diff_id.as_str(),
            "diffID checked in sha512"
        );
    }

    // Config and layers land under blobs/sha512/ and hash to their names; the manifest, named
    // by the registry's sha256, under blobs/sha256/.
    let mut want: Vec<String> = pushed.layers.iter().map(|l| l.digest.clone()).collect();
    want.push(pushed.config_digest.clone());
    want.sort();
    let mut have = sha512_blobs(env.store());
    have.sort();
    assert_eq!(have, want);
    fixtures::assert_blobs_verify(env.store());
    assert!(registry_kit::has_blob(env.store(), &pushed.manifest_digest));
    assert!(fixtures::leftovers(env.store()).is_empty());

    // skopeo reads the layout back (index.json, the manifest, its sha512 descriptors).
    // Its full `inspect` is not used: Debian's skopeo hashes a config with sha256 whatever
    // its descriptor says, and so refuses any sha512 config ("Download config.json digest
    // sha256:... does not match expected sha512:...").
    let reference = env.reference("fx/app:512");
    let raw = skopeo_raw_manifest(env.store(), &reference);
    assert_eq!(raw["config"]["digest"], pushed.config_digest.as_str());
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = pushed.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, want);

    // A second pull finds everything in place.
    let (again, _) = capi::pull(options(&env, "fx/app:512"));
    assert_eq!(again.code, vic_result::Ok, "{}", again.message);
    assert_eq!(again.json.unwrap()["up_to_date"], true);
}

#[test]
fn digests_sha512_blobs_with_sha256_diff_ids_in_a_docker_image() {
    let env = Env::new();
    let pushed = env.push("fx/app", "mixed", &sha512_image(false, Format::Docker));
    let (out, _) = capi::pull(options(&env, "fx/app:mixed"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.unwrap();
    for (got, want) in json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&pushed.layers)
    {
        assert!(want.digest.starts_with("sha512:") && want.diff_id.starts_with("sha256:"));
        assert_eq!(got["diff_id"], want.diff_id.as_str());
    }
    assert_eq!(sha512_blobs(env.store()).len(), 4);
    // The OCI rewrite of the Docker manifest keeps the sha512 descriptors.
    let raw = skopeo_raw_manifest(env.store(), &env.reference("fx/app:mixed"));
    assert_eq!(raw["mediaType"], OCI_MANIFEST);
    assert_eq!(raw["layers"][0]["digest"], pushed.layers[0].digest.as_str());
}

#[test]
fn digests_corrupt_sha512_layer_is_a_digest_mismatch() {
    let env = Env::new();
    let pushed = env.push("fx/app", "512", &sha512_image(true, Format::Oci));
    let bad = pushed.layers[1].digest.clone();
    env.proxy.corrupt(&bad, 1000, None);

    let (out, _) = capi::pull(options(&env, "fx/app:512"));
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(
        out.message.contains(&bad),
        "names the sha512 digest: {}",
        out.message
    );
    assert!(out.message.contains("got sha512:"), "{}", out.message);
    assert!(!sha512_blobs(env.store()).contains(&bad));
    assert!(fixtures::leftovers(env.store()).is_empty());
    assert!(!env
        .store()
        .join(".vicpull/verified")
        .join(format!("sha512-{}", &bad[7..]))
        .exists());
    assert_eq!(fixtures::named_images(env.store()), 0);
    // One full re-download is allowed for a mismatch, then it is final.
    assert_eq!(env.proxy.count_gets(&bad), 2);
}

#[test]
fn digests_other_algorithms_are_unsupported() {
    let env = Env::new();
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(4096, 52)]),
    );

    // In the reference: refused before anything is fetched.
    for digest in [format!("sha384:{}", "ab".repeat(48)), "md5:00".to_string()] {
        let o = options(&env, &format!("fx/app@{digest}"));
        let (code, msg) = capi::start(&o).err().expect("start must fail");
        assert_eq!(code, vic_result::Unsupported, "{msg}");
        assert!(msg.contains("only sha256 and sha512"), "{msg}");
    }

    // In a manifest the registry sends: a layer named by md5.
    let mut m: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    m["layers"][0]["digest"] = json!("md5:0123456789abcdef0123456789abcdef");
    let ct = [("Content-Type", pushed.manifest_media_type.as_str())];
    let body = m.to_string();
    let rule = env
        .proxy
        .respond(Match::Manifest("1".into()), 200, &ct, body.as_bytes(), None);
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Unsupported, "{}", out.message);
    assert!(
        out.message
            .contains("\"md5\" is not supported (only sha256 and sha512)"),
        "{}",
        out.message
    );
    env.proxy.remove_rule(rule);

    // In the config: a sha384 diffID cannot be checked, so the pull says so.
    let spec = ImageSpec::new(vec![
        Layer::random(4096, 53).with_diff_id(&format!("sha384:{}", "cd".repeat(48)))
    ]);
    env.push("fx/app", "2", &spec);
    let (out, _) = capi::pull(options(&env, "fx/app:2"));
    assert_eq!(out.code, vic_result::Unsupported, "{}", out.message);
    assert!(
        out.message.contains("diffID") && out.message.contains("sha384"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
    assert!(sha512_blobs(env.store()).is_empty());
}

#[test]
fn digests_pull_by_sha512_manifest_digest() {
    let env = Env::new();
    let pushed = env.push("fx/app", "512", &sha512_image(true, Format::Oci));
    let by512 = digest_with(Algorithm::Sha512, &pushed.manifest_bytes);

    // The registry itself does not answer to a sha512 manifest digest.
    let path = format!("/v2/fx/app/manifests/{by512}");
    let accept = [("Accept", OCI_MANIFEST)];
    let direct =
        vicpull_testkit::http::request(env.registry.addr(), "GET", &path, &accept, &[]).unwrap();
    assert_eq!(direct.status, 404, "{}", direct.text());

    // The front answers for it, with the registry's sha256 Docker-Content-Digest, as a
    // registry that does serve sha512 names would.
    let headers = [
        ("Content-Type", OCI_MANIFEST),
        ("Docker-Content-Digest", pushed.manifest_digest.as_str()),
    ];
    let m = Match::Manifest(by512.clone());
    env.proxy
        .respond(m.clone(), 200, &headers, &pushed.manifest_bytes, None);
    let (out, _) = capi::pull(options(&env, &format!("fx/app@{by512}")));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.unwrap();
    assert_eq!(json["digest"], by512.as_str());
    assert_eq!(json["manifest_digest"], by512.as_str());
    let stored = env.store().join("blobs/sha512").join(&by512[7..]);
    assert_eq!(std::fs::read(stored).unwrap(), pushed.manifest_bytes);
    let raw = skopeo_raw_manifest(env.store(), &env.reference(&format!("fx/app@{by512}")));
    assert_eq!(raw["config"]["digest"], pushed.config_digest.as_str());

    // Bytes that are not what the sha512 names fail, whatever the header says.
    let env = Env::new();
    let pushed = env.push("fx/app", "512", &sha512_image(true, Format::Oci));
    let mut other = pushed.manifest_bytes.clone();
    other.push(b'\n');
    let header = digest_with(Algorithm::Sha512, &other);
    let headers = [
        ("Content-Type", OCI_MANIFEST),
        ("Docker-Content-Digest", header.as_str()),
    ];
    env.proxy.respond(m, 200, &headers, &other, None);
    let (out, _) = capi::pull(options(&env, &format!("fx/app@{by512}")));
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(
        out.message
            .contains(&format!("expected {by512} (pulled by digest)")),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

//! End-to-end pulls through the C ABI from a real CNCF registry on
//! 127.0.0.1, with a counting fault proxy in front of it.

mod common;

use common::capi::{self, Ev};
use common::fixtures::{self, assert_blobs_verify, index_json, leftovers, named_images, Env};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};
use vicpull::ffi::result::vic_result;
use vicpull::progress::Kind;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{push_index, Format, ImageSpec, Layer, Platform};

fn kinds_for(events: &[Ev], digest: &str) -> Vec<Kind> {
    events
        .iter()
        .filter(|e| e.layer.as_deref() == Some(digest))
        .map(|e| e.kind)
        .collect()
}

/// Collapse runs of Downloading so the order of distinct steps is visible.
fn steps(kinds: &[Kind]) -> Vec<Kind> {
    let mut out: Vec<Kind> = Vec::new();
    for k in kinds {
        if out.last() != Some(k) || *k != Kind::Downloading {
            out.push(*k);
        }
    }
    out.retain(|k| *k != Kind::Waiting);
    out
}

#[test]
fn pulls_real_image_into_oci_layout_that_skopeo_reads() {
    let env = Env::new();
    let spec = fixtures::app_image();
    let pushed = env.push("fx/app", "1", &spec);

    let (out, events) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.expect("result JSON");
    let store = env.store();

    // Result JSON: digests, diffIDs in order, the store path.
    assert_eq!(json["manifest_digest"], pushed.manifest_digest.as_str());
    assert_eq!(json["config_digest"], pushed.config_digest.as_str());
    let config: serde_json::Value = serde_json::from_slice(&pushed.config_bytes).unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), pushed.layers.len());
    for (i, (got, want)) in layers.iter().zip(&pushed.layers).enumerate() {
        assert_eq!(got["digest"], want.digest.as_str());
        assert_eq!(got["size"], want.size);
        assert_eq!(got["media_type"], want.media_type.as_str());
        assert_eq!(got["diff_id"], config["rootfs"]["diff_ids"][i]);
    }

    // Store: every blob hashes to its name, nothing left in ingest, the
    // index names the full reference.
    assert_blobs_verify(store);
    assert!(leftovers(store).is_empty(), "{:?}", leftovers(store));
    let index = index_json(store);
    let reference = env.reference("fx/app:1");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        reference.as_str()
    );
    // A Docker schema2 image is named in its OCI form (as skopeo copy does).
    assert_eq!(entry["digest"], json["stored_manifest_digest"]);
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_ne!(json["stored_manifest_digest"], json["manifest_digest"]);

    // One GET per blob.
    for l in &pushed.layers {
        assert_eq!(env.proxy.count_gets(&l.digest), 1, "GETs of {}", l.digest);
    }

    // Docker's progress wording and order, per layer and for the image.
    for l in &pushed.layers {
        let s = steps(&kinds_for(&events, &l.digest));
        assert_eq!(
            s,
            [
                Kind::PullingFsLayer,
                Kind::Downloading,
                Kind::VerifyingChecksum,
                Kind::DownloadComplete,
                Kind::PullComplete
            ],
            "layer {}",
            l.digest
        );
    }
    let completes: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == Kind::PullComplete)
        .map(|e| e.layer.as_deref().unwrap())
        .collect();
    let order: Vec<&str> = pushed.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(
        completes, order,
        "Pull complete must go parent before child"
    );
    let last_dl = events.iter().filter(|e| e.kind == Kind::Downloading).fold(
        std::collections::HashMap::new(),
        |mut m, e| {
            m.insert(e.layer.clone().unwrap(), (e.current, e.total));
            m
        },
    );
    for (d, (cur, total)) in &last_dl {
        assert_eq!(cur, total, "the last byte of {d} must be reported");
    }
    assert_eq!(events[0].kind, Kind::PullingFrom);
    assert_eq!(events[0].message, "1: Pulling from fx/app");
    let tail: Vec<&Ev> = events.iter().rev().take(2).collect();
    assert_eq!(
        tail[1].message,
        format!("Digest: {}", pushed.manifest_digest)
    );
    assert_eq!(
        tail[0].message,
        format!("Status: Downloaded newer image for {reference}")
    );

    // skopeo and umoci read the layout.
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
    let raw: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(raw["config"]["digest"], pushed.config_digest.as_str());
    let raw_layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let want_layers: Vec<&str> = pushed.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(raw_layers, want_layers, "skopeo reads back our layers");
    let o = Command::new("skopeo")
        .args(["inspect", &target])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(store)
        .output()
        .expect("umoci must be installed (.ci/run installs it)");
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&reference));

    // A second pull downloads nothing and says so.
    env.proxy.clear_log();
    let (out, events) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for l in &pushed.layers {
        assert_eq!(kinds_for(&events, &l.digest), [Kind::AlreadyExists]);
    }
    let blob_gets = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 0, "second pull must not GET any blob");
    let status = &events.last().unwrap().message;
    assert_eq!(
        status,
        &format!("Status: Image is up to date for {reference}")
    );
    assert_eq!(out.json.unwrap()["bytes_downloaded"], 0);
}

#[test]
fn s17_same_digest_twice_in_one_manifest_is_one_transfer() {
    let env = Env::new();
    let la = fixtures::real_files(&["/usr/share/doc"], 256 << 10);
    let lb = Layer::random(300 << 10, 3);
    let e = Layer::empty_gzip();
    let spec = ImageSpec::new(vec![
        la.clone(),
        e.clone(),
        lb.clone(),
        e.clone(),
        la.clone(),
    ]);
    let pushed = env.push("fx/dup", "1", &spec);

    let t0 = Instant::now();
    let (out, events) = capi::pull(env.options("fx/dup:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(10));
    for d in [la.digest(), lb.digest(), e.digest()] {
        assert_eq!(env.proxy.count_gets(d), 1, "GETs of {d}");
        assert_eq!(
            kinds_for(&events, d)
                .iter()
                .filter(|k| **k == Kind::PullComplete)
                .count(),
            1
        );
    }
    let blobs = fixtures::blob_files(env.store()).len();
    assert_eq!(
        blobs,
        3 + 3,
        "3 layers, config, registry manifest and its OCI form"
    );
    let layers = out.json.unwrap()["layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), 5, "the layer chain keeps all 5 positions");
    let diffs: Vec<&str> = layers
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        diffs[1],
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    );
    assert_eq!(diffs[0], diffs[4]);
    assert_eq!(pushed.layers.len(), 5);
}

#[test]
fn s20_corrupt_blob_fails_with_digest_mismatch_and_writes_nothing() {
    let env = Env::new();
    let spec = fixtures::app_image();
    let pushed = env.push("fx/app", "1", &spec);
    let bad = pushed.layers[3].digest.clone();
    env.proxy.corrupt(&bad, 12_345, None);

    let mut opts = env.options("fx/app:1");
    opts["max_attempts"] = 3.into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(
        out.message.contains(&bad),
        "the error names the blob: {}",
        out.message
    );
    let hex = bad.trim_start_matches("sha256:");
    assert!(
        !env.store().join("blobs/sha256").join(hex).exists(),
        "corrupt blob stored"
    );
    assert!(
        leftovers(env.store()).is_empty(),
        "{:?}",
        leftovers(env.store())
    );
    assert_eq!(named_images(env.store()), 0);
    assert!(!env
        .store()
        .join("blobs/sha256")
        .join(pushed.manifest_digest.trim_start_matches("sha256:"))
        .exists());
    // One full re-download is allowed, then the mismatch is final.
    assert_eq!(env.proxy.count_gets(&bad), 2);
}

#[test]
fn cancel_during_big_layer_is_prompt_and_keeps_only_a_resumable_partial() {
    let env = Env::new();
    let big = Layer::random(8 << 20, 11);
    let spec = ImageSpec::new(vec![fixtures::real_files(&["/etc"], 64 << 10), big.clone()]);
    env.push("fx/big", "1", &spec);
    env.proxy.throttle(Match::blob(big.digest()), 1 << 20, None);

    let p = capi::start(&env.options("fx/big:1")).unwrap();
    let t0 = Instant::now();
    while !p.events().iter().any(|e| {
        e.layer.as_deref() == Some(big.digest()) && e.kind == Kind::Downloading && e.current > 0
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "download never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !capi::leftovers_empty(env.store()),
        "a temp file exists mid-download"
    );
    let t1 = Instant::now();
    p.cancel();
    p.cancel(); // idempotent
    let out = p.wait(Duration::from_secs(10));
    assert_eq!(out.code, vic_result::Cancelled, "{}", out.message);
    assert!(
        t1.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        t1.elapsed()
    );
    // No temp or lock file is left; only the resumable partial of the big
    // layer stays in the ingest area (a later pull resumes from it).
    let hex = big.digest().trim_start_matches("sha256:");
    let names: Vec<String> = leftovers(env.store())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [format!("{hex}.partial")],
        "ingest holds more than the partial"
    );
    assert!(!env.store().join("blobs/sha256").join(hex).exists());
}

#[test]
fn selects_platform_from_index_and_lists_choices_when_none_match() {
    let env = Env::new();
    let child = |seed| ImageSpec::new(vec![Layer::random(64 << 10, seed)]).format(Format::Oci);
    let idx = push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[
            (child(1), Platform::new("linux", "amd64")),
            (child(2), Platform::new("linux", "arm64")),
            (child(3), Platform::new("linux", "arm").variant("v7")),
        ],
        Format::Oci,
    );
    let mut opts = env.options("fx/multi:1");
    opts["platform"] = "linux/arm64/v8".into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.unwrap();
    assert_eq!(json["digest"], idx.digest.as_str());
    assert_eq!(
        json["manifest_digest"],
        idx.children[1].manifest_digest.as_str()
    );
    assert_eq!(json["platform"], "linux/arm64");
    let arm64_layer = &idx.children[1].layers[0].digest;
    assert_eq!(env.proxy.count_gets(arm64_layer), 1);
    assert_eq!(env.proxy.count_gets(&idx.children[0].layers[0].digest), 0);

    let mut opts = env.options("fx/multi:1");
    opts["platform"] = "linux/riscv64".into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::NotFound);
    for p in ["linux/amd64", "linux/arm64", "linux/arm/v7", &idx.digest] {
        assert!(out.message.contains(p), "{p} missing from: {}", out.message);
    }
}

#[test]
fn pull_by_digest_verifies_the_manifest() {
    let env = Env::new();
    let spec = ImageSpec::new(vec![Layer::random(32 << 10, 5)]);
    let pushed = env.push("fx/bydigest", "1", &spec);
    let (out, _) = capi::pull(env.options(&format!("fx/bydigest@{}", pushed.manifest_digest)));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let refname = format!("fx/bydigest@{}", pushed.manifest_digest);
    let names: HashSet<String> = index_json(env.store())["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    assert!(names.contains(&env.reference(&refname)), "{names:?}");
}

#[test]
fn missing_tag_is_not_found_naming_the_manifest() {
    let env = Env::new();
    let (out, _) = capi::pull(env.options("fx/nothing:here"));
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(out.message.contains("fx/nothing:here"), "{}", out.message);
}

#[test]
fn explicit_platform_that_a_single_manifest_image_does_not_match_is_not_found() {
    let env = Env::new();
    let spec = ImageSpec::new(vec![Layer::random(16 << 10, 3)]);
    env.push("fx/single", "1", &spec);
    let mut opts = env.options("fx/single:1");
    opts["platform"] = "windows/s390x".into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(out.message.contains("linux/amd64"), "{}", out.message);
    // Without a platform option the host's is not enforced on it, and the
    // result names the image's own platform.
    let (out, _) = capi::pull(env.options("fx/single:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.unwrap()["platform"], "linux/amd64");
}

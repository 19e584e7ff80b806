//! The registry fixture and the push helpers, checked with an independent client (reqwest).

use std::thread;

use reqwest::blocking::Client;
use vicpull_testkit::{
    push_image, push_index, sha256_digest, Format, ImageSpec, Layer, Platform, Registry,
    RegistryOptions,
};

fn client() -> Client {
    // no_proxy: a proxy from the environment must never see loopback test traffic.
    Client::builder().no_proxy().build().unwrap()
}

fn get(c: &Client, url: &str, accept: &str) -> (u16, Option<String>, Vec<u8>) {
    let resp = c.get(url).header("Accept", accept).send().unwrap();
    let status = resp.status().as_u16();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().into());
    (status, digest, resp.bytes().unwrap().to_vec())
}

#[test]
fn pushed_image_reads_back_with_the_same_digests() {
    let reg = Registry::start();
    let a = Layer::random(200 * 1024, 1);
    let b = Layer::tar_of_dir("/usr/share/doc", 256 * 1024);
    let spec = ImageSpec::new(vec![a.clone(), b.clone(), a.clone()]);
    let pushed = push_image(reg.addr(), "kit/app", "v1", &spec);
    assert_eq!(pushed.layers.len(), 3);
    assert_eq!(pushed.layers[0], pushed.layers[2]);

    let c = client();
    let url = format!("{}/v2/kit/app/manifests/v1", reg.url());
    let (status, digest, body) = get(&c, &url, Format::Docker.manifest_media_type());
    assert_eq!(status, 200);
    assert_eq!(digest.as_deref(), Some(pushed.manifest_digest.as_str()));
    assert_eq!(sha256_digest(&body), pushed.manifest_digest);
    assert_eq!(body, pushed.manifest_bytes);

    let blob = |d: &str| get(&c, &format!("{}/v2/kit/app/blobs/{d}", reg.url()), "*/*").2;
    assert_eq!(
        sha256_digest(&blob(&pushed.config_digest)),
        pushed.config_digest
    );
    for l in [&a, &b] {
        assert_eq!(blob(l.digest()), l.blob());
    }

    // Same inputs, same digest: pushing again under another tag changes nothing.
    let again = push_image(reg.addr(), "kit/app", "v2", &spec);
    assert_eq!(again.manifest_digest, pushed.manifest_digest);
}

#[test]
fn pushed_index_lists_children_by_platform() {
    let reg = Registry::start();
    let amd = ImageSpec::new(vec![Layer::random(1000, 2)]).format(Format::Oci);
    let arm = ImageSpec::new(vec![Layer::random(1000, 3), Layer::empty_gzip()])
        .format(Format::Oci)
        .platform(Platform::new("linux", "arm64").variant("v8"));
    let children = [
        (amd, Platform::new("linux", "amd64")),
        (arm, Platform::new("linux", "arm64").variant("v8")),
    ];
    let index = push_index(reg.addr(), "kit/multi", "latest", &children, Format::Oci);

    let c = client();
    let url = format!("{}/v2/kit/multi/manifests/latest", reg.url());
    let (status, digest, body) = get(&c, &url, Format::Oci.index_media_type());
    assert_eq!(status, 200);
    assert_eq!(digest.as_deref(), Some(index.digest.as_str()));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let entries = json["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["platform"]["variant"], "v8");
    assert_eq!(
        entries[1]["digest"],
        index.children[1].manifest_digest.as_str()
    );

    let child = &index.children[1].manifest_digest;
    let url = format!("{}/v2/kit/multi/manifests/{child}", reg.url());
    let (status, _, body) = get(&c, &url, Format::Oci.manifest_media_type());
    assert_eq!(status, 200);
    assert_eq!(&sha256_digest(&body), child);
}

#[test]
fn registry_outlives_the_thread_that_started_it() {
    // PR_SET_PDEATHSIG follows the forking thread; the kit forks from a keeper thread so a
    // registry handed to another thread (or kept in a static) keeps running.
    let reg = thread::spawn(Registry::start).join().unwrap();
    thread::sleep(std::time::Duration::from_millis(200));
    let resp = client().get(format!("{}/v2/", reg.url())).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let dir = reg.dir().to_path_buf();
    drop(reg);
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
}

#[test]
fn access_log_records_blob_gets_only_when_asked() {
    let blob_get = |reg: &Registry, digest: &str| {
        let url = format!("{}/v2/logged/blobs/{digest}", reg.url());
        assert_eq!(client().get(url).send().unwrap().status().as_u16(), 200);
        // The line is written as the handler returns, a moment after the body went out.
        let want = format!("\"GET /v2/logged/blobs/{digest} HTTP/1.1\" 200");
        (0..100).any(|_| {
            thread::sleep(std::time::Duration::from_millis(10));
            reg.log().contains(&want)
        })
    };
    let layer = Layer::random(4096, 3);
    let spec = ImageSpec::new(vec![layer.clone()]);

    let logged = Registry::start_with(RegistryOptions::new().access_log(true));
    push_image(logged.addr(), "logged", "v1", &spec);
    assert!(blob_get(&logged, layer.digest()), "log:\n{}", logged.log());

    let quiet = Registry::start();
    push_image(quiet.addr(), "logged", "v1", &spec);
    assert!(!blob_get(&quiet, layer.digest()), "log:\n{}", quiet.log());
}

//! Test kit for vicpull: a real registry on loopback, deterministic images pushed into it,
//! and a fault-injecting HTTP proxy to put between the library and the registry.
//!
//! Nothing here talks to anything but loopback addresses.
//!
//! ```no_run
//! use vicpull_testkit::proxy::CutMode;
//! use vicpull_testkit::{push_image, FaultProxy, ImageSpec, Layer, Registry};
//!
//! let registry = Registry::start();
//! let layer = Layer::random(1 << 20, 1);
//! let spec = ImageSpec::new(vec![layer.clone(), Layer::empty_gzip(), layer.clone()]);
//! let image = push_image(registry.addr(), "demo/app", "v1", &spec);
//!
//! let proxy = FaultProxy::start(registry.addr());
//! proxy.cut(layer.digest(), 4096, CutMode::Rst, Some(1));
//! // ... pull `{proxy.addr()}/demo/app@{image.manifest_digest}` with the library, then:
//! assert!(proxy.count_gets(layer.digest()) >= 2);
//! ```

pub mod bench;
pub mod digest;
pub mod forward;
pub mod http;
pub mod image;
pub mod proxy;
pub mod registry;
pub mod rng;
pub mod stub;
mod tempdir;
mod wire;

pub use digest::sha256_digest;
pub use forward::ForwardProxy;
pub use image::{
    push_image, push_index, Compression, Format, ImageSpec, Layer, LayerInfo, Platform,
    PushedImage, PushedIndex,
};
pub use proxy::FaultProxy;
pub use registry::{Registry, RegistryOptions};
pub use stub::{Reply, Stub, StubRequest};
pub use tempdir::TempDir;

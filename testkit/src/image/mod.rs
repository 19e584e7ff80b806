//! Deterministic test images, built from real files or seeded bytes, and pushing them.

mod layer;
mod push;
mod spec;
pub mod tarball;

pub use layer::{Compression, Layer};
pub use push::{
    push_blob, push_blob_as, push_image, push_index, put_manifest, LayerInfo, PushedImage,
    PushedIndex,
};
pub use spec::{index_bytes, Format, ImageSpec, Platform};

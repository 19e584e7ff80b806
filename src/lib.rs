//! vicpull: pull container images from Docker / OCI registries into an OCI
//! image layout, with a C ABI for hypervisor and VM tooling.
//!
//! The core (`reference` .. `pull`) knows nothing of C; `ffi` only converts.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod options;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod secrets;
pub mod store;
pub mod transfer;
pub mod verify;

pub mod ffi;

pub use error::{Error, ErrorKind};
pub use options::PullOptions;
pub use pull::{PullHandle, PullResult};

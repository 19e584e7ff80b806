//! The tokio runtime owned by the library. Hosts never see it: C entry points
//! spawn onto it and return.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built on first use. Two workers at least, so a layer
/// being hashed never stalls every other transfer.
pub fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("vicpull-rt")
            .enable_all()
            .build()
            // Without a runtime nothing can work; the FFI panic guard turns
            // this into VIC_RESULT_INTERNAL for the caller.
            .expect("vicpull: cannot build the tokio runtime")
    })
}

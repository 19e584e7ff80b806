//! The C ABI. Each module is one C object family; the core never sees C
//! types. Every export wraps its body in `panic::guard`, checks its pointers,
//! and documents ownership, blocking and threads for the generated header.
//!
//! Text leaves the library one way only: copied into a caller buffer
//! (`buf`, `len`, `out_n`), see `text::copy_out`.

pub mod callbacks;
pub mod log;
pub mod panic;
pub mod pull;
pub mod result;
pub mod store;
pub mod text;
pub mod version;

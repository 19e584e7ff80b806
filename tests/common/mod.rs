pub mod capi;
pub mod fixtures;

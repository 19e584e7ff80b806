//! Gzip through flate2 and zlib-rs: pure Rust, the default backend.

use super::limits::{write_through, TarSink};
use flate2::write::MultiGzDecoder;

pub(super) struct Gunzip(MultiGzDecoder<TarSink>);

impl Gunzip {
    pub(super) fn new(sink: TarSink) -> Gunzip {
        Gunzip(MultiGzDecoder::new(sink))
    }

    /// Inflate `chunk` into the sink, telling it how much input each call
    /// consumed (see `TarSink::feed`).
    pub(super) fn write_all(&mut self, chunk: &[u8]) -> Result<(), String> {
        write_through(&mut self.0, |d| d.get_mut(), chunk, "gzip")
    }

    pub(super) fn sink(&self) -> &TarSink {
        self.0.get_ref()
    }

    /// Check that the last member ended cleanly, and hash what is left.
    pub(super) fn end(&mut self) -> Result<(), String> {
        self.0.try_finish().map_err(|e| e.to_string())
    }

    /// The sink, once the last member has ended cleanly.
    pub(super) fn finish(self) -> Result<TarSink, String> {
        self.0.finish().map_err(|e| e.to_string())
    }
}

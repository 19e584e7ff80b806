//! Zstd through libzstd's streaming decoder. Every frame of the stream is
//! decoded, as for multi-member gzip, and a truncated frame is an error.

use super::limits::{write_through, TarSink};
use zstd::stream::write::Decoder;

pub(super) struct Unzstd(Box<Decoder<'static, TarSink>>);

impl Unzstd {
    /// Err only when libzstd cannot start a decoder (out of memory).
    pub(super) fn new(sink: TarSink) -> Result<Unzstd, String> {
        Decoder::new(sink)
            .map(|d| Unzstd(Box::new(d)))
            .map_err(|e| format!("cannot start a zstd decoder: {e}"))
    }

    /// Inflate `chunk` into the sink, telling it how much input each call
    /// consumed (see `TarSink::feed`).
    pub(super) fn write_all(&mut self, chunk: &[u8]) -> Result<(), String> {
        write_through(&mut self.0, |d| d.get_mut(), chunk, "zstd")
    }

    pub(super) fn sink(&self) -> &TarSink {
        self.0.get_ref()
    }

    /// Check that the last frame ended cleanly, and hash what is left.
    pub(super) fn end(&mut self) -> Result<(), String> {
        self.0.do_finish().map_err(|e| e.to_string())
    }

    /// The sink, once the last frame has ended cleanly.
    pub(super) fn finish(self) -> Result<TarSink, String> {
        self.0.finish().map_err(|e| e.to_string())
    }
}

//! Gzip through Intel ISA-L's stateful inflate (igzip), for the `isal`
//! feature. isa-l does the deflate blocks, the header and the trailer
//! (CRC-32 and length); this side chains the members of a multi-member
//! stream, as MultiGzDecoder does, and keeps every call bounded.
//!
//! isal-sys's bindings were generated from isa-l 2.31; Debian 12's 2.30 has
//! the same inflate_state layout (checked field by field with offsetof).

use super::limits::TarSink;
use isal_sys::igzip_lib as isal;
use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
use std::io::Write;
use std::ptr;

/// Inflated bytes per call. isa-l decodes straight into a buffer this
/// big, and copies only its 32 KiB window out of it after each call.
const OUT: usize = 128 * 1024;

pub(super) struct Gunzip {
    /// About 85 KiB (window and tables): on the heap, never moved.
    state: Box<isal::inflate_state>,
    /// The header of the current member, parsed here rather than by
    /// isal_inflate: that one forgets the header's flags when the header
    /// is split between two chunks, and then misreads FEXTRA, FNAME,
    /// FCOMMENT or FHCRC (gzip_header_fields_split_anywhere shows it).
    header: isal::isal_gzip_header,
    out: Box<[u8]>,
    sink: TarSink,
}

// SAFETY: the raw pointers in `state` and `header` point into nothing
// between calls (next_in and next_out are set before each isal_inflate
// and cleared after it; the header's name buffers are always null), and
// isa-l keeps no thread-local state, so the decoder may move to another
// thread. It is never shared: every method takes &mut self.
unsafe impl Send for Gunzip {}

impl Gunzip {
    pub(super) fn new(sink: TarSink) -> Gunzip {
        let layout = Layout::new::<isal::inflate_state>();
        // SAFETY: the layout is not zero-sized; zeroed memory is a valid
        // inflate_state (integers, arrays and raw pointers), which
        // isal_inflate_init then sets up; the Box frees it with the same
        // layout.
        let mut state = unsafe {
            let p = alloc_zeroed(layout).cast::<isal::inflate_state>();
            if p.is_null() {
                handle_alloc_error(layout);
            }
            isal::isal_inflate_init(p);
            Box::from_raw(p)
        };
        state.crc_flag = isal::ISAL_GZIP;
        Gunzip {
            state,
            header: new_header(),
            out: vec![0; OUT].into_boxed_slice(),
            sink,
        }
    }

    pub(super) fn write_all(&mut self, mut chunk: &[u8]) -> Result<(), String> {
        while !chunk.is_empty() {
            if self.member_ended() {
                // The bytes after a member are the next member.
                // SAFETY: `state` was set up by isal_inflate_init.
                unsafe { isal::isal_inflate_reset(&mut *self.state) };
                self.header = new_header();
            }
            let len = chunk.len().min(u32::MAX as usize);
            self.state.next_in = chunk.as_ptr().cast_mut();
            self.state.avail_in = len as u32;
            let result = self.inflate();
            let used = len - self.state.avail_in as usize;
            self.state.next_in = ptr::null_mut();
            self.state.avail_in = 0;
            result?;
            chunk = &chunk[used..];
        }
        Ok(())
    }

    pub(super) fn sink(&self) -> &TarSink {
        &self.sink
    }

    /// Check that the last member ended cleanly (isa-l hands out all it
    /// inflated in each call, so nothing is left to hash).
    pub(super) fn end(&mut self) -> Result<(), String> {
        if self.member_ended() {
            Ok(())
        } else {
            Err("unexpected end of gzip stream".to_string())
        }
    }

    /// The sink, once the last member has ended cleanly.
    pub(super) fn finish(mut self) -> Result<TarSink, String> {
        self.end().map(|()| self.sink)
    }

    fn member_ended(&self) -> bool {
        self.state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH
    }

    /// Take the input set in `state` until it is used up or the member
    /// ends; hash what comes out.
    fn inflate(&mut self) -> Result<(), String> {
        if self.state.wrapper_flag == 0 {
            // SAFETY: next_in/avail_in describe a live slice; the header
            // has no name, comment or extra buffers to write to.
            let before = self.state.avail_in;
            let ret = unsafe { isal::isal_read_gzip_header(&mut *self.state, &mut self.header) };
            self.sink.feed((before - self.state.avail_in) as usize);
            if ret < 0 {
                return Err(message(ret));
            }
            if self.state.wrapper_flag == 0 {
                // The header goes on in the next chunk: isa-l kept what
                // it needs and took all the input.
                return match self.state.avail_in {
                    0 => Ok(()),
                    _ => Err(message(ret)),
                };
            }
        }
        loop {
            let before = self.state.avail_in;
            self.state.next_out = self.out.as_mut_ptr();
            self.state.avail_out = OUT as u32;
            // SAFETY: next_in/avail_in describe a live slice and
            // next_out/avail_out the whole of `out`; isa-l reads and
            // writes only within them.
            let ret = unsafe { isal::isal_inflate(&mut *self.state) };
            let made = OUT - self.state.avail_out as usize;
            self.state.next_out = ptr::null_mut();
            self.state.avail_out = 0;
            // The output below came from exactly this input (see
            // TarSink::feed).
            self.sink.feed((before - self.state.avail_in) as usize);
            // A sink over its inflate limit refuses: stop right there.
            self.sink
                .write_all(&self.out[..made])
                .map_err(|e| e.to_string())?;
            if ret < 0 {
                return Err(message(ret));
            }
            if self.member_ended() || (made < OUT && self.state.avail_in == 0) {
                return Ok(());
            }
            if made == 0 && self.state.avail_in == before {
                // Room to write and input to read, yet nothing moved:
                // stop rather than spin on bytes isa-l will not take.
                return Err("gzip stream makes no progress".to_string());
            }
        }
    }
}

fn new_header() -> isal::isal_gzip_header {
    // SAFETY: zeroed memory is a valid isal_gzip_header (integers and
    // null pointers), which isal_gzip_header_init then fills in.
    unsafe {
        let mut h: isal::isal_gzip_header = std::mem::zeroed();
        isal::isal_gzip_header_init(&mut h);
        h
    }
}

/// isa-l's error codes (igzip_lib.h), in words like zlib's.
fn message(code: i32) -> String {
    let what = match code {
        isal::ISAL_INVALID_BLOCK => "invalid deflate block",
        isal::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
        isal::ISAL_INVALID_LOOKBACK => "invalid deflate distance too far back",
        isal::ISAL_INVALID_WRAPPER => "invalid gzip header",
        isal::ISAL_UNSUPPORTED_METHOD => "gzip header names an unknown compression method",
        isal::ISAL_INCORRECT_CHECKSUM => "corrupt gzip stream: checksum or length mismatch",
        _ => return format!("isa-l inflate failed with code {code}"),
    };
    what.to_string()
}

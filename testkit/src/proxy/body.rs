//! Sending a response body to the client with faults applied, and ending connections.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{self, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::rules::{CutMode, Plan};
use super::state::{LogSlot, Shared};

/// Throttled bodies go out in pieces of about 1/20 s, so the rate is smooth at any size.
const PIECES_PER_SEC: u64 = 20;
const MAX_PIECE: usize = 64 * 1024;

/// How a body ends early.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Cut(CutMode),
    Stall,
}

/// Writes body bytes to the client, framed as the client expects, with the plan's faults.
pub(crate) struct BodySink<'a> {
    out: &'a mut TcpStream,
    chunked: bool,
    /// Blob offset of the first body byte: the start of a 206 answer's Content-Range.
    base: u64,
    /// Body bytes written so far.
    sent: u64,
    corrupt: Vec<u64>,
    throttle: Option<u64>,
    stop: Option<(u64, Stop)>,
    started: Instant,
    shared: &'a Arc<Shared>,
    slot: LogSlot,
}

impl<'a> BodySink<'a> {
    pub fn new(
        out: &'a mut TcpStream,
        chunked: bool,
        base: u64,
        plan: &Plan,
        shared: &'a Arc<Shared>,
        slot: LogSlot,
    ) -> BodySink<'a> {
        let cut = plan.cut.map(|(after, mode)| (after, Stop::Cut(mode)));
        let stall = plan.stall.map(|after| (after, Stop::Stall));
        // When both apply, whichever comes first in the body wins.
        let stop = match (cut, stall) {
            (Some(c), Some(s)) => Some(if s.0 < c.0 { s } else { c }),
            (c, s) => c.or(s),
        };
        BodySink {
            out,
            chunked,
            base,
            sent: 0,
            corrupt: plan.corrupt.clone(),
            throttle: plan.throttle,
            stop,
            started: Instant::now(),
            shared,
            slot,
        }
    }

    /// Sends `data`. Returns false once a cut or stall has ended the connection; the caller
    /// must then drop it without writing anything more.
    pub async fn send(&mut self, data: &mut [u8]) -> io::Result<bool> {
        let at = self.base + self.sent;
        for &off in &self.corrupt {
            if off >= at && off - at < data.len() as u64 {
                data[(off - at) as usize] ^= 0xff;
            }
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            if let Some((after, stop)) = self.stop {
                if self.sent >= after {
                    self.end(stop).await;
                    return Ok(false);
                }
            }
            let mut n = rest.len().min(MAX_PIECE);
            if let Some(bps) = self.throttle {
                n = n.min((bps / PIECES_PER_SEC).max(1) as usize);
            }
            if let Some((after, _)) = self.stop {
                n = n.min((after - self.sent) as usize);
            }
            let (piece, tail) = rest.split_at(n);
            self.write(piece).await?;
            rest = tail;
            if let Some(bps) = self.throttle {
                let due = Duration::from_secs_f64(self.sent as f64 / bps as f64);
                sleep_until(self.started + due).await;
            }
        }
        // Cut as soon as the point is reached instead of waiting for more upstream data.
        if let Some((after, stop)) = self.stop {
            if self.sent >= after {
                self.end(stop).await;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends the body. A pending cut or stall still happens here (a body shorter than the cut
    /// point ends with the connection); otherwise the chunked terminator is sent.
    /// Returns false if the connection was ended.
    pub async fn finish(mut self) -> io::Result<bool> {
        if let Some((_, stop)) = self.stop {
            self.end(stop).await;
            return Ok(false);
        }
        if self.chunked {
            self.out.write_all(b"0\r\n\r\n").await?;
        }
        self.out.flush().await?;
        Ok(true)
    }

    async fn write(&mut self, piece: &[u8]) -> io::Result<()> {
        // Counted before writing so a test that has just read the bytes sees them logged.
        self.shared.add_bytes(self.slot, piece.len() as u64);
        self.sent += piece.len() as u64;
        if self.chunked {
            self.out
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
            self.out.write_all(piece).await?;
            self.out.write_all(b"\r\n").await
        } else {
            self.out.write_all(piece).await
        }
    }

    async fn end(&mut self, stop: Stop) {
        match stop {
            Stop::Cut(mode) => hang_up(self.out, mode).await,
            Stop::Stall => stall(self.out).await,
        }
    }
}

/// Ends the connection: with RST after what was written has reached the peer, or with FIN.
pub(crate) async fn hang_up(s: &mut TcpStream, mode: CutMode) {
    match mode {
        CutMode::Rst => {
            let _ = s.flush().await;
            wait_unacked(s).await;
            // Closing with a zero linger sends RST instead of FIN; the close happens when the
            // caller drops the stream, right after this returns.
            let _ = s.set_zero_linger();
        }
        CutMode::Fin => close_gracefully(s).await,
    }
}

/// Sends FIN, then reads until the peer closes too (at most 2 s), so unread request bytes
/// do not turn the close into a RST.
pub(crate) async fn close_gracefully(s: &mut TcpStream) {
    let _ = s.flush().await;
    let _ = s.shutdown().await;
    let mut scratch = [0u8; 4096];
    let drain = async { while matches!(s.read(&mut scratch).await, Ok(n) if n > 0) {} };
    let _ = timeout(Duration::from_secs(2), drain).await;
}

/// Holds the connection open, sending nothing, until the client goes away.
async fn stall(s: &mut TcpStream) {
    let _ = s.flush().await;
    let mut scratch = [0u8; 4096];
    while matches!(s.read(&mut scratch).await, Ok(n) if n > 0) {}
}

/// Waits (at most 2 s) until the kernel has no unacknowledged bytes for this socket.
/// SO_LINGER 0 discards unsent data, so without this a cut "after K bytes" could deliver less.
async fn wait_unacked(s: &TcpStream) {
    for _ in 0..200 {
        let mut queued: libc::c_int = 0;
        // SAFETY: the fd belongs to `s`, which is alive for the whole call; TIOCOUTQ (SIOCOUTQ
        // for TCP) writes a single c_int through the pointer we pass.
        let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc != 0 || queued == 0 {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

//! Where an export writes: 64 KiB chunks handed to the HTTP response through a bounded
//! channel, so memory stays constant whatever the size, and a client that goes away (or
//! stops reading) stops the work.

use std::io::{self, Write};
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Size of one chunk handed to the response.
pub const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the writer and the socket: at most ~512 KiB per export.
pub const IN_FLIGHT: usize = 8;
/// A client that takes no chunk for this long is treated as gone.
pub const STALL: Duration = Duration::from_secs(60);

pub type Chunk = Result<Bytes, io::Error>;

/// The error a write returns when the client is gone; see [`is_disconnect`].
fn disconnected() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
}

pub fn is_disconnect(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// A bounded channel: the sink for the export thread and the body stream for the response.
pub fn channel() -> (Sink, impl Stream<Item = Chunk> + 'static) {
    let (tx, rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (Sink::new(tx, Handle::current()), body)
}

/// Buffered writer over the channel. Counts and hashes (SHA-256) everything written. The
/// last chunk stays buffered until [`Sink::release`], so that the export can be audited
/// before the client has all of it.
pub struct Sink {
    tx: mpsc::Sender<Chunk>,
    rt: Handle,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

impl Sink {
    fn new(tx: mpsc::Sender<Chunk>, rt: Handle) -> Self {
        Self {
            tx,
            rt,
            buf: Vec::with_capacity(CHUNK + 4096),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Must run off the async workers (the export thread): it blocks while the client is
    /// slower than the database.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hasher.update(&self.buf);
        self.bytes += self.buf.len() as u64;
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        let tx = &self.tx;
        let sent = self
            .rt
            .block_on(async { tokio::time::timeout(STALL, tx.send(Ok(Bytes::from(chunk)))).await });
        match sent {
            Ok(Ok(())) => Ok(()),
            // closed (the response was dropped) or stalled
            _ => Err(disconnected()),
        }
    }

    /// True once the response is gone: checked between batches to stop early.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Bytes written so far and the SHA-256 (hex) of them, buffered part included.
    pub fn summary(&self) -> (u64, String) {
        let mut h = self.hasher.clone();
        h.update(&self.buf);
        (
            self.bytes + self.buf.len() as u64,
            hex::encode(h.finalize()),
        )
    }

    /// Sends the last buffered chunk: the response then ends normally.
    pub fn release(mut self) -> io::Result<()> {
        self.send()
    }

    /// Ends the response with an error: the client sees a broken transfer, never a file
    /// that looks complete.
    pub fn fail(self, why: &str) {
        let err = io::Error::other(why.to_owned());
        let tx = self.tx;
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(STALL, tx.send(Err(err))).await });
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write(data).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

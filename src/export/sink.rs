//! Where an export writes: 64 KiB chunks handed to the HTTP response through a bounded
//! channel, so memory stays constant whatever the size, and a client that goes away (or
//! stops reading) stops the work. The command line writes the same chunks to a file
//! ([`Sink::writer`]).

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

/// A file's write error is a failure, never "the client went away", even a broken pipe
/// (`--out` on a pipe that closed).
fn not_a_disconnect(e: io::Error) -> io::Error {
    if is_disconnect(&e) {
        io::Error::other(e.to_string())
    } else {
        e
    }
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
    target: Target,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

/// Where the chunks go.
enum Target {
    /// the HTTP response
    Channel { tx: mpsc::Sender<Chunk>, rt: Handle },
    /// a file (the command line): never "disconnected"; write errors stop the export
    Writer(Box<dyn Write + Send>),
}

impl Sink {
    fn new(tx: mpsc::Sender<Chunk>, rt: Handle) -> Self {
        Self::with_target(Target::Channel { tx, rt })
    }

    /// A sink that writes its chunks to `w` (e.g. a file), on the calling thread.
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        Self::with_target(Target::Writer(Box::new(w)))
    }

    fn with_target(target: Target) -> Self {
        Self {
            target,
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
        let (tx, rt) = match &mut self.target {
            Target::Channel { tx, rt } => (tx, rt),
            Target::Writer(w) => {
                w.write_all(&self.buf).map_err(not_a_disconnect)?;
                self.buf.clear();
                return Ok(());
            }
        };
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        let sent = rt
            .block_on(async { tokio::time::timeout(STALL, tx.send(Ok(Bytes::from(chunk)))).await });
        match sent {
            Ok(Ok(())) => Ok(()),
            // closed (the response was dropped) or stalled
            _ => Err(disconnected()),
        }
    }

    /// True once the response is gone: checked between batches to stop early.
    pub fn is_closed(&self) -> bool {
        match &self.target {
            Target::Channel { tx, .. } => tx.is_closed(),
            Target::Writer(_) => false,
        }
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

    /// Sends the last buffered chunk: the response then ends normally (a file is flushed).
    pub fn release(mut self) -> io::Result<()> {
        self.send()?;
        match &mut self.target {
            Target::Channel { .. } => Ok(()),
            Target::Writer(w) => w.flush().map_err(not_a_disconnect),
        }
    }

    /// Ends the response with an error: the client sees a broken transfer, never a file
    /// that looks complete. (A file sink just stops: its owner discards the file.)
    pub fn fail(self, why: &str) {
        let Target::Channel { tx, rt } = self.target else {
            return;
        };
        let err = io::Error::other(why.to_owned());
        let _ = rt.block_on(async { tokio::time::timeout(STALL, tx.send(Err(err))).await });
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

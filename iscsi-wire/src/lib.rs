//! PDUs on an async byte stream, shared by the target and the initiator.
//!
//! [`PduReader`] decodes whole PDUs, its buffer growing only as far as the
//! decoder asks (which the negotiated MaxRecvDataSegmentLength bounds); on
//! request it hands over a large data segment still on the socket, which
//! [`Segment::to_file`] splices into a file without it passing through our
//! memory. [`PduWriter`] sends each PDU as its encoded header, its data
//! segment and its trailer (padding, data digest) with vectored writes; a
//! [`Payload`] held in [`Bytes`](bytes::Bytes) is never copied on its way to
//! the socket, one stored in a file ([`FileRange`]) goes with `sendfile`, one
//! read ahead into a pipe ([`PipeChunk`]) with `splice`. PDUs queue up to a
//! batch, so that small ones share a system call.
//!
//! # Layout
//!
//! - `reader`: [`PduReader`], [`Frame`], [`ReadError`].
//! - `blocking`: [`Blocking`], the reader lent to a blocking job that moves
//!   one large data segment after another without the reactor.
//! - `writer`: [`PduWriter`].
//! - [`payload`]: [`Payload`], a data segment wherever its bytes are.
//! - [`splice`]: pipes, `sendfile` and `splice`; what may block on a disk is
//!   only done by blocking functions, which callers run off the reactor.
//!
//! The protocol itself (encoding, digests, framing) is `iscsi-proto`'s;
//! this crate only moves the bytes. It also holds [`shutdown_signal`], the
//! one other piece of async plumbing both programs need.

mod blocking;
pub mod payload;
mod reader;
pub mod splice;
mod writer;

pub use blocking::Blocking;
pub use payload::Payload;
pub use reader::{Frame, PduReader, ReadError};
pub use splice::{FileRange, PipeChunk, PipePool, PooledPipe, Segment};
pub use writer::PduWriter;

use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A stream PDUs travel on, and the TCP socket under it if it is one: zero
/// copy needs the socket itself.
pub trait Socket {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Socket for OwnedReadHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Socket for OwnedWriteHalf {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Socket for tokio::io::DuplexStream {}

impl Socket for &[u8] {}

/// Completes on SIGINT or SIGTERM: how a service is asked to stop cleanly.
/// Never completes if the handlers cannot be installed.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

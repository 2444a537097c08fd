//! A data segment wherever its bytes are: in memory, stored in a file, or
//! waiting in a pipe. The writer sends each kind its own way.

use crate::splice::{FileRange, PipeChunk};
use bytes::Bytes;
use std::io;

/// One PDU's data segment.
#[derive(Debug, Clone)]
pub enum Payload {
    /// In memory: written with the header in one vectored write.
    Bytes(Bytes),
    /// Stored as they are in a file (a raw image, an uncompressed qcow2
    /// cluster): sent with `sendfile`, never read into memory.
    File(FileRange),
    /// Read ahead from a file into a pipe, off the reactor: spliced into
    /// the socket.
    Pipe(PipeChunk),
}

impl Payload {
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::File(f) => f.len(),
            Self::Pipe(p) => p.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `range` of the segment. A pipe's bytes come out in order only, so
    /// the slices of a [`Payload::Pipe`] must be sent in the order they
    /// were cut, each once, and cover it from its start.
    #[must_use]
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            Self::Bytes(b) => Self::Bytes(b.slice(range)),
            Self::File(f) => Self::File(f.slice(range)),
            Self::Pipe(p) => Self::Pipe(p.cut(range.len())),
        }
    }

    /// The bytes in memory, read from where they are if need be (for a
    /// data digest, or a stream that is not a socket). Reading a file
    /// blocks.
    pub fn into_bytes(self) -> io::Result<Bytes> {
        match self {
            Self::Bytes(b) => Ok(b),
            Self::File(f) => f.read(),
            Self::Pipe(p) => p.read(),
        }
    }
}

/// The state machines cut payloads into PDUs: a pipe's slices come out in
/// the order they are cut, which is the order the machines send them in.
impl iscsi_proto::segment::Segment for Payload {
    fn len(&self) -> usize {
        Payload::len(self)
    }

    fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Payload::slice(self, range)
    }
}

impl Default for Payload {
    fn default() -> Self {
        Self::Bytes(Bytes::new())
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self::Bytes(b)
    }
}

impl From<FileRange> for Payload {
    fn from(f: FileRange) -> Self {
        Self::File(f)
    }
}

impl From<PipeChunk> for Payload {
    fn from(p: PipeChunk) -> Self {
        Self::Pipe(p)
    }
}

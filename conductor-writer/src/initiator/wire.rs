//! PDUs on the socket, initiator side: a reader task that decodes, and a
//! writer that sends header, payload and trailer with vectored writes so
//! that write data is never copied.

use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder, Framing};
use iscsi_proto::pdu::{Header, Pdu};
use std::io::{self, IoSlice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Reads whole PDUs from the target.
#[derive(Debug)]
pub(crate) struct PduReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
}

impl PduReader {
    pub(crate) fn new(half: OwnedReadHalf) -> Self {
        Self {
            half,
            buf: BytesMut::with_capacity(256 * 1024),
            decoder: Decoder::new(Direction::FromTarget),
        }
    }

    pub(crate) fn set_framing(&mut self, framing: Framing) {
        self.decoder.set_framing(framing);
    }

    pub(crate) async fn next(&mut self) -> io::Result<Pdu> {
        loop {
            match self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                Decoded::Pdu(pdu) => return Ok(pdu),
                Decoded::NeedMore(n) => {
                    self.buf.reserve(n.max(64 * 1024));
                    if self.half.read_buf(&mut self.buf).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the target closed the connection",
                        ));
                    }
                }
            }
        }
    }
}

/// Queues PDUs and writes them in vectored batches.
#[derive(Debug)]
pub(crate) struct PduWriter {
    half: OwnedWriteHalf,
    encoder: Encoder,
    /// Encoded headers and trailers, in one growing buffer.
    scratch: BytesMut,
    /// The batch: slices of `scratch` and payloads, in wire order.
    parts: Vec<Bytes>,
    queued: usize,
}

/// Flush once this much is queued.
const BATCH: usize = 1 << 20;

impl PduWriter {
    pub(crate) fn new(half: OwnedWriteHalf) -> Self {
        Self {
            half,
            encoder: Encoder::new(),
            scratch: BytesMut::with_capacity(16 * 1024),
            parts: Vec::new(),
            queued: 0,
        }
    }

    pub(crate) fn set_framing(&mut self, framing: Framing) {
        self.encoder.set_framing(framing);
    }

    /// Queue `header` with `data` as its data segment.
    pub(crate) async fn queue(&mut self, header: &Header, data: Bytes) -> io::Result<()> {
        self.encoder
            .encode_header(header, data.len(), &mut self.scratch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.parts.push(self.scratch.split().freeze());
        let trailer = self.encoder.trailer(&data);
        self.queued += data.len() + 48;
        if !data.is_empty() {
            self.parts.push(data);
        }
        if !trailer.as_slice().is_empty() {
            self.scratch.extend_from_slice(trailer.as_slice());
            self.parts.push(self.scratch.split().freeze());
        }
        if self.queued >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, pdu: &Pdu) -> io::Result<()> {
        self.queue(&pdu.header, pdu.data.clone()).await?;
        self.flush().await
    }

    /// Write everything queued.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        let mut first = 0;
        let mut offset = 0;
        while first < self.parts.len() {
            let slices: Vec<IoSlice<'_>> = self.parts[first..]
                .iter()
                .enumerate()
                .map(|(i, p)| IoSlice::new(if i == 0 { &p[offset..] } else { p }))
                .take(64)
                .collect();
            let mut written = self.half.write_vectored(&slices).await?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the connection accepts no more data",
                ));
            }
            while first < self.parts.len() && written > 0 {
                let left = self.parts[first].len() - offset;
                if written >= left {
                    written -= left;
                    first += 1;
                    offset = 0;
                } else {
                    offset += written;
                    written = 0;
                }
            }
        }
        self.parts.clear();
        self.queued = 0;
        Ok(())
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.half.shutdown().await;
    }
}

//! Queueing PDUs and writing them in batches.

use crate::Socket;
use crate::payload::Payload;
use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Encoder, Framing};
use iscsi_proto::pdu::Header;
use std::io::{self, IoSlice};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Queues PDUs and writes them in vectored batches; data held in a file or
/// a pipe goes from there straight into the socket.
#[derive(Debug)]
pub struct PduWriter<W> {
    half: W,
    encoder: Encoder,
    /// Encoded headers and trailers, in one growing buffer.
    scratch: BytesMut,
    /// The batch: slices of `scratch` and payloads, in wire order.
    parts: Vec<Payload>,
    queued: usize,
}

/// Flush once this much is queued.
const BATCH: usize = 1 << 20;

/// Zero bytes to pad a data segment to a multiple of four.
const PADDING: [u8; 3] = [0; 3];

impl<W: AsyncWrite + Socket + Unpin> PduWriter<W> {
    pub fn new(half: W) -> Self {
        Self {
            half,
            encoder: Encoder::new(),
            scratch: BytesMut::with_capacity(16 * 1024),
            parts: Vec::new(),
            queued: 0,
        }
    }

    pub fn set_framing(&mut self, framing: Framing) {
        self.encoder.set_framing(framing);
    }

    /// Whether a payload held in a file or a pipe goes out as it is. When
    /// not (a data digest must be computed over the bytes, or the stream is
    /// not a TCP socket), [`PduWriter::queue`] reads it into memory, which
    /// for a file blocks: such payloads are better made as bytes.
    #[must_use]
    pub fn zero_copy(&self) -> bool {
        !self.encoder.framing().data_digest && self.half.tcp().is_some()
    }

    /// Queue `header` with `data` as its data segment.
    pub async fn queue(&mut self, header: &Header, data: impl Into<Payload>) -> io::Result<()> {
        let mut data = data.into();
        if !matches!(data, Payload::Bytes(_)) && !self.zero_copy() {
            data = Payload::Bytes(data.into_bytes()?);
        }
        self.encoder
            .encode_header(header, data.len(), &mut self.scratch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.parts.push(Payload::Bytes(self.scratch.split().freeze()));
        match &data {
            Payload::Bytes(bytes) => self.scratch.extend_from_slice(self.encoder.trailer(bytes).as_slice()),
            // No data digest here (see `zero_copy`): padding only.
            other => self
                .scratch
                .extend_from_slice(&PADDING[..other.len().next_multiple_of(4) - other.len()]),
        }
        self.queued += data.len() + 48;
        if !data.is_empty() {
            self.parts.push(data);
        }
        if !self.scratch.is_empty() {
            self.parts.push(Payload::Bytes(self.scratch.split().freeze()));
        }
        if self.queued >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queue one PDU held in memory and write everything queued.
    pub async fn send(&mut self, pdu: &iscsi_proto::pdu::Pdu) -> io::Result<()> {
        self.queue(&pdu.header, pdu.data.clone()).await?;
        self.flush().await
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        let parts = std::mem::take(&mut self.parts);
        let mut at = 0;
        while at < parts.len() {
            let run = parts[at..]
                .iter()
                .take_while(|p| matches!(p, Payload::Bytes(_)))
                .count();
            if run > 0 {
                self.write_all(&parts[at..at + run]).await?;
                at += run;
                continue;
            }
            let socket = self.half.tcp().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "zero-copy data on a stream that is not a socket",
                )
            })?;
            match &parts[at] {
                Payload::File(range) => range.send(socket).await?,
                Payload::Pipe(chunk) => chunk.send(socket).await?,
                Payload::Bytes(_) => {}
            }
            at += 1;
        }
        self.queued = 0;
        Ok(())
    }

    /// Write `parts` (all in memory) with vectored writes.
    async fn write_all(&mut self, parts: &[Payload]) -> io::Result<()> {
        let bytes: Vec<&Bytes> = parts
            .iter()
            .filter_map(|p| match p {
                Payload::Bytes(b) => Some(b),
                _ => None,
            })
            .collect();
        let mut first = 0;
        let mut offset = 0;
        while first < bytes.len() {
            let slices: Vec<IoSlice<'_>> = bytes[first..]
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
            while first < bytes.len() && written > 0 {
                let left = bytes[first].len() - offset;
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
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.half.shutdown().await;
    }
}

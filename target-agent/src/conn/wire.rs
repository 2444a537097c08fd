//! PDUs on the socket: a reader that buffers only what the framing allows,
//! and a writer that batches.

use super::ConnError;
use bytes::BytesMut;
use iscsi_proto::codec::{Decoded, Decoder, Direction, Encoder, Framing};
use iscsi_proto::pdu::Pdu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Reads whole PDUs. The buffer grows only as far as the decoder asks,
/// which is bounded by the negotiated MaxRecvDataSegmentLength.
#[derive(Debug)]
pub(crate) struct PduReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
}

impl PduReader {
    pub(crate) fn new(half: OwnedReadHalf, direction: Direction) -> Self {
        Self {
            half,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: Decoder::new(direction),
        }
    }

    pub(crate) fn set_framing(&mut self, framing: Framing) {
        self.decoder.set_framing(framing);
    }

    /// The next PDU. A PDU-scoped decode error is returned (the PDU was
    /// consumed; the caller may answer with a Reject and go on).
    pub(crate) async fn next(&mut self) -> Result<Pdu, ConnError> {
        loop {
            match self.decoder.decode(&mut self.buf)? {
                Decoded::Pdu(pdu) => return Ok(pdu),
                Decoded::NeedMore(n) => {
                    self.buf.reserve(n.max(16 * 1024));
                    if self.half.read_buf(&mut self.buf).await? == 0 {
                        return Err(ConnError::Eof);
                    }
                }
            }
        }
    }
}

/// Writes PDUs, several per system call when they queue up.
#[derive(Debug)]
pub(crate) struct PduWriter {
    half: OwnedWriteHalf,
    encoder: Encoder,
    buf: BytesMut,
}

/// Flush once this much is batched.
const BATCH: usize = 512 * 1024;

impl PduWriter {
    pub(crate) fn new(half: OwnedWriteHalf) -> Self {
        Self {
            half,
            encoder: Encoder::new(),
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    pub(crate) fn set_framing(&mut self, framing: Framing) {
        self.encoder.set_framing(framing);
    }

    /// Add a PDU to the batch; flushes when the batch is large.
    pub(crate) async fn queue(&mut self, pdu: &Pdu) -> Result<(), ConnError> {
        self.encoder
            .encode(pdu, &mut self.buf)
            .map_err(|e| ConnError::Protocol(format!("cannot encode {:?}: {e}", pdu.header.opcode())))?;
        if self.buf.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Queue and flush one PDU.
    pub(crate) async fn send(&mut self, pdu: &Pdu) -> Result<(), ConnError> {
        self.queue(pdu).await?;
        self.flush().await
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.half.shutdown().await;
    }
}

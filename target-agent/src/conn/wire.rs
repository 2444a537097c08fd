//! PDUs on the socket: a reader that buffers only what the framing allows;
//! the writer is `iscsi-wire`'s (batched, vectored, payloads not copied).

use super::ConnError;
use bytes::BytesMut;
use iscsi_proto::codec::{Decoded, Decoder, Direction, Framing};
use iscsi_proto::pdu::Pdu;
use tokio::io::AsyncReadExt;
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

/// The shared vectored writer over this connection's write half: Data-In
/// payloads go to the socket without being copied.
pub(crate) type PduWriter = iscsi_wire::PduWriter<OwnedWriteHalf>;

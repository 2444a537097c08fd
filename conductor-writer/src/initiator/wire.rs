//! PDUs on the socket, initiator side: a reader task that decodes; the
//! writer is `iscsi-wire`'s, which never copies write data.

use bytes::BytesMut;
use iscsi_proto::codec::{Decoded, Decoder, Direction, Framing};
use iscsi_proto::pdu::Pdu;
use std::io;
use tokio::io::AsyncReadExt;
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

/// The shared vectored writer, over this socket's write half.
pub(crate) type PduWriter = iscsi_wire::PduWriter<OwnedWriteHalf>;

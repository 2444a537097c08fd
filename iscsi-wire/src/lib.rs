//! PDUs on an async byte stream, shared by the target and the initiator.
//!
//! [`PduReader`] decodes whole PDUs, its buffer growing only as far as the
//! decoder asks (which the negotiated MaxRecvDataSegmentLength bounds).
//! [`PduWriter`] sends each PDU as its encoded header, its data segment
//! and its trailer (padding, data digest) with vectored writes: a payload
//! held in [`Bytes`] is never copied on its way to the socket. PDUs queue
//! up to a batch, so that small ones share a system call.
//!
//! The protocol itself (encoding, digests, framing) is `iscsi-proto`'s;
//! this crate only moves the bytes. It also holds [`shutdown_signal`], the
//! one other piece of async plumbing both programs need.

use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{DecodeError, Decoded, Decoder, Direction, Encoder, Framing};
use iscsi_proto::pdu::{Header, Pdu};
use std::io::{self, IoSlice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why no PDU came.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a valid PDU; its scope says whether the stream
    /// goes on (the PDU was consumed) or is lost.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Eof,
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => e,
            ReadError::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection"),
            ReadError::Decode(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Reads whole PDUs.
#[derive(Debug)]
pub struct PduReader<R> {
    half: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    /// PDUs coming in `direction` (what the peer is).
    pub fn new(half: R, direction: Direction) -> Self {
        Self {
            half,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: Decoder::new(direction),
        }
    }

    pub fn set_framing(&mut self, framing: Framing) {
        self.decoder.set_framing(framing);
    }

    /// The next PDU. After a PDU-scoped decode error the PDU is consumed:
    /// the caller may answer with a Reject and read on.
    pub async fn next(&mut self) -> Result<Pdu, ReadError> {
        loop {
            match self.decoder.decode(&mut self.buf)? {
                Decoded::Pdu(pdu) => return Ok(pdu),
                Decoded::NeedMore(n) => {
                    self.buf.reserve(n.max(64 * 1024));
                    if self.half.read_buf(&mut self.buf).await? == 0 {
                        return Err(ReadError::Eof);
                    }
                }
            }
        }
    }
}

/// Queues PDUs and writes them in vectored batches.
#[derive(Debug)]
pub struct PduWriter<W> {
    half: W,
    encoder: Encoder,
    /// Encoded headers and trailers, in one growing buffer.
    scratch: BytesMut,
    /// The batch: slices of `scratch` and payloads, in wire order.
    parts: Vec<Bytes>,
    queued: usize,
}

/// Flush once this much is queued.
const BATCH: usize = 1 << 20;

impl<W: AsyncWrite + Unpin> PduWriter<W> {
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

    /// Queue `header` with `data` as its data segment.
    pub async fn queue(&mut self, header: &Header, data: Bytes) -> io::Result<()> {
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

    pub async fn send(&mut self, pdu: &Pdu) -> io::Result<()> {
        self.queue(&pdu.header, pdu.data.clone()).await?;
        self.flush().await
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
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

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.half.shutdown().await;
    }
}

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
mod tests {
    use super::*;
    use iscsi_proto::pdu::{DataIn, Residual};
    use iscsi_proto::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};

    fn data_in(n: u32, len: usize) -> Pdu {
        let header = DataIn {
            final_: true,
            ack: false,
            status: None,
            residual: Residual::None,
            lun: Lun::from_index(1),
            itt: Itt(n),
            ttt: Ttt::RESERVED,
            stat_sn: StatSn(0),
            exp_cmd_sn: CmdSn(0),
            max_cmd_sn: CmdSn(0),
            data_sn: DataSn(0),
            buffer_offset: 0,
        };
        Pdu::with_data(header, Bytes::from(vec![n as u8; len]))
    }

    /// What the writer sends the reader gets back: the same PDUs, in order,
    /// with digests on, through a pipe too small to take a batch in one
    /// write; then the end of the stream.
    #[tokio::test]
    async fn what_is_written_is_read_back() {
        let framing = Framing {
            header_digest: true,
            data_digest: true,
            max_data_segment_len: 1 << 20,
        };
        let (client, server) = tokio::io::duplex(4096);
        let mut writer = PduWriter::new(client);
        writer.set_framing(framing);
        let pdus: Vec<Pdu> = (0..40).map(|n| data_in(n, (n as usize * 7919) % 70_000 + 1)).collect();
        let expected = pdus.clone();
        let send = tokio::spawn(async move {
            for pdu in &pdus {
                writer.queue(&pdu.header, pdu.data.clone()).await.expect("queue");
            }
            writer.shutdown().await;
        });
        let mut reader = PduReader::new(server, Direction::FromTarget);
        reader.set_framing(framing);
        for want in expected {
            assert_eq!(reader.next().await.expect("a PDU"), want);
        }
        assert!(matches!(reader.next().await, Err(ReadError::Eof)));
        send.await.expect("writer");
    }

    /// A corrupted header digest is a decode error, not a PDU.
    #[tokio::test]
    async fn a_bad_header_digest_is_an_error() {
        let framing = Framing {
            header_digest: true,
            data_digest: false,
            max_data_segment_len: 1 << 20,
        };
        let mut encoder = Encoder::new();
        encoder.set_framing(framing);
        let mut bytes = BytesMut::new();
        encoder.encode(&data_in(1, 10), &mut bytes).expect("encode");
        bytes[50] ^= 1;
        let mut reader = PduReader::new(&bytes[..], Direction::FromTarget);
        reader.set_framing(framing);
        assert!(matches!(reader.next().await, Err(ReadError::Decode(_))));
    }
}

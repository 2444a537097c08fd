//! PDUs on an async byte stream, shared by the target and the initiator.
//!
//! [`PduWriter`] sends each PDU as its encoded header, its data segment
//! and its trailer (padding, data digest) with vectored writes: a payload
//! held in [`Bytes`] is never copied on its way to the socket. PDUs queue
//! up to a batch, so that small ones share a system call.
//!
//! The protocol itself (encoding, digests, framing) is `iscsi-proto`'s;
//! this crate only moves the bytes.

use bytes::{Bytes, BytesMut};
use iscsi_proto::codec::{Encoder, Framing};
use iscsi_proto::pdu::{Header, Pdu};
use std::io::{self, IoSlice};
use tokio::io::{AsyncWrite, AsyncWriteExt};

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

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi_proto::codec::{Decoded, Decoder, Direction};
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

    /// What the writer sends decodes back to the same PDUs, in order, with
    /// digests on, through a pipe too small to take a batch in one write.
    #[tokio::test]
    async fn what_is_written_decodes_back() {
        let framing = Framing {
            header_digest: true,
            data_digest: true,
            max_data_segment_len: 1 << 20,
        };
        let (client, mut server) = tokio::io::duplex(4096);
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
        let mut bytes = BytesMut::new();
        server.read_buf_to_end(&mut bytes).await;
        send.await.expect("writer");
        let mut decoder = Decoder::new(Direction::FromTarget);
        decoder.set_framing(framing);
        for want in expected {
            match decoder.decode(&mut bytes).expect("valid") {
                Decoded::Pdu(got) => assert_eq!(got, want),
                Decoded::NeedMore(n) => panic!("short by {n}"),
            }
        }
        assert!(bytes.is_empty());
    }

    trait ReadToEnd {
        async fn read_buf_to_end(&mut self, buf: &mut BytesMut);
    }

    impl ReadToEnd for tokio::io::DuplexStream {
        async fn read_buf_to_end(&mut self, buf: &mut BytesMut) {
            use tokio::io::AsyncReadExt;
            while self.read_buf(buf).await.expect("read") > 0 {}
        }
    }
}

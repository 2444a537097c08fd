//! Framing: bytes to PDUs and back, with padding and optional CRC32C digests.
//!
//! The decoder is incremental: it looks at what has arrived, says how many
//! more bytes it needs, and only then splits a whole PDU off the buffer. The
//! data segment length a peer announces is checked against the negotiated
//! MaxRecvDataSegmentLength before the caller is asked to buffer anything, so
//! a peer cannot make us allocate more than we agreed to.

use crate::digest;
use crate::error::Scope;
use crate::pdu::{BHS_LEN, Bhs, Header, Opcode, Pdu, PduError, RejectReason, field};
use bytes::{BufMut, Bytes, BytesMut};

/// The RFC 7143 default MaxRecvDataSegmentLength, which also applies to every
/// login PDU (section 13.12).
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

/// The largest data segment the 24-bit length field can describe.
pub const MAX_DATA_SEGMENT_LENGTH: u32 = (1 << 24) - 1;

const DIGEST_LEN: usize = 4;

/// Which side's PDUs a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A target decodes what initiators send.
    FromInitiator,
    /// An initiator decodes what targets send.
    FromTarget,
}

/// Per-connection framing settings, from the login negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub header_digest: bool,
    pub data_digest: bool,
    /// For decoding: our MaxRecvDataSegmentLength. For encoding: the peer's.
    pub max_data_segment_len: u32,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            header_digest: false,
            data_digest: false,
            max_data_segment_len: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
        }
    }
}

impl Framing {
    /// The same framing with the segment limit no larger than the 24-bit
    /// length field can say.
    #[must_use]
    pub fn clamped(self) -> Self {
        Self {
            max_data_segment_len: self.max_data_segment_len.min(MAX_DATA_SEGMENT_LENGTH),
            ..self
        }
    }
}

/// The outcome of one decoding step.
#[derive(Debug)]
pub enum Decoded {
    /// A whole PDU, split off the front of the buffer.
    Pdu(Pdu),
    /// At least this many more bytes are needed; nothing was consumed.
    NeedMore(usize),
}

/// A PDU's header, decoded ahead of its data segment (see [`Decoder::head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub header: Header,
    /// Bytes of BHS, AHS and header digest at the front of the buffer.
    pub header_len: usize,
    /// The data segment's length.
    pub data_len: usize,
    /// Padding after the data segment, to a multiple of four bytes.
    pub padding: usize,
}

/// Where the parts of one PDU lie on the wire.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// BHS and AHS.
    header_len: usize,
    header_digest: bool,
    data_len: usize,
    /// A data digest follows the (padded) segment.
    data_digest: bool,
}

impl Layout {
    /// Where the data segment starts.
    fn header_end(&self) -> usize {
        self.header_len + if self.header_digest { DIGEST_LEN } else { 0 }
    }

    /// The whole PDU's length.
    fn total(&self) -> usize {
        self.header_end() + self.data_len.next_multiple_of(4) + if self.data_digest { DIGEST_LEN } else { 0 }
    }
}

/// Why a PDU could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The header digest does not match. The lengths in the header cannot be
    /// trusted, so the stream is lost (RFC 7143 7.8: discard or close).
    #[error("header digest mismatch on {:?}", Opcode::of(bhs))]
    HeaderDigest { bhs: Box<Bhs> },
    /// The peer announced a data segment larger than we agreed to receive.
    #[error(
        "{:?} data segment of {len} bytes exceeds MaxRecvDataSegmentLength {max}",
        Opcode::of(bhs)
    )]
    DataSegmentTooLong { bhs: Box<Bhs>, len: u32, max: u32 },
    /// The data digest does not match; the PDU was consumed and dropped.
    /// `header` tells the caller which task it belonged to.
    #[error("data digest mismatch on {:?}", Opcode::of(bhs))]
    DataDigest { bhs: Box<Bhs>, header: Option<Header> },
    /// The framing was sound but the header is not acceptable; the PDU was
    /// consumed.
    #[error("rejected {:?}: {error}", Opcode::of(bhs))]
    Pdu { bhs: Box<Bhs>, error: PduError },
}

impl DecodeError {
    /// What must be abandoned: the connection when the stream is out of
    /// sync, only the PDU otherwise.
    #[must_use]
    pub fn scope(&self) -> Scope {
        match self {
            Self::HeaderDigest { .. } | Self::DataSegmentTooLong { .. } => Scope::Connection,
            Self::DataDigest { .. } | Self::Pdu { .. } => Scope::Pdu,
        }
    }

    /// The offending header, which a Reject PDU carries back as its data.
    #[must_use]
    pub fn bhs(&self) -> &Bhs {
        match self {
            Self::HeaderDigest { bhs }
            | Self::DataSegmentTooLong { bhs, .. }
            | Self::DataDigest { bhs, .. }
            | Self::Pdu { bhs, .. } => bhs,
        }
    }

    /// The Reject reason a target answers with (RFC 7143 11.17.1). A header
    /// digest error is never answered: the header cannot be trusted.
    #[must_use]
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            Self::HeaderDigest { .. } => None,
            Self::DataSegmentTooLong { .. } => Some(RejectReason::PROTOCOL_ERROR),
            Self::DataDigest { .. } => Some(RejectReason::DATA_DIGEST_ERROR),
            Self::Pdu { error, .. } => Some(error.reject_reason()),
        }
    }
}

/// Decodes one direction of a connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    direction: Direction,
    framing: Framing,
}

impl Decoder {
    /// A decoder with login-time framing: no digests, 8 KiB data segments.
    #[must_use]
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            framing: Framing::default(),
        }
    }

    /// Switch to negotiated framing (after the final Login Response).
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing.clamped();
    }

    /// The framing in force.
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Try to split one PDU off the front of `buf`.
    ///
    /// On `NeedMore(n)` nothing was consumed; the caller reads at least `n`
    /// more bytes. `n` never exceeds one PDU within the negotiated limits.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        let Some(bhs) = buf.get(..BHS_LEN) else {
            return Ok(Decoded::NeedMore(BHS_LEN - buf.len()));
        };
        let mut head = [0u8; BHS_LEN];
        head.copy_from_slice(bhs);
        let layout = self.layout(&head)?;
        let total = layout.total();
        if buf.len() < total {
            return Ok(Decoded::NeedMore(total - buf.len()));
        }
        self.check_header_digest(&head, buf, &layout)?;

        let frame = buf.split_to(total).freeze();
        let ahs = &frame[BHS_LEN..layout.header_len];
        let data_start = layout.header_end();
        let padded = layout.data_len.next_multiple_of(4);
        let parsed = self.parse_header(&head, ahs);

        if layout.data_digest {
            let expected = digest::crc32c(&frame[data_start..data_start + padded]);
            if digest_at(&frame, data_start + padded) != expected {
                return Err(DecodeError::DataDigest {
                    bhs: Box::new(head),
                    header: parsed.ok(),
                });
            }
        }
        let header = parsed.map_err(|error| DecodeError::Pdu {
            bhs: Box::new(head),
            error,
        })?;
        Ok(Decoded::Pdu(Pdu {
            header,
            data: frame.slice(data_start..data_start + layout.data_len),
        }))
    }

    /// The header of the PDU at the front of `buf`, when it has arrived
    /// whole and sound and its data segment can be moved without the
    /// decoder: a non-empty segment within our limit, and no data digest to
    /// check (a segment that must be checked goes through
    /// [`Decoder::decode`]). This is how a caller sends write data straight
    /// into a file instead of through memory.
    ///
    /// `None` leaves everything, errors included, to [`Decoder::decode`].
    /// Nothing is consumed: the caller drops [`Head::header_len`] bytes,
    /// then takes [`Head::data_len`] bytes of data and [`Head::padding`]
    /// bytes of padding from the stream.
    #[must_use]
    pub fn head(&self, buf: &[u8]) -> Option<Head> {
        let bhs: &Bhs = buf.get(..BHS_LEN)?.try_into().ok()?;
        let layout = self.layout(bhs).ok()?;
        if layout.data_digest || layout.data_len == 0 || buf.len() < layout.header_end() {
            return None;
        }
        self.check_header_digest(bhs, buf, &layout).ok()?;
        let header = self.parse_header(bhs, &buf[BHS_LEN..layout.header_len]).ok()?;
        Some(Head {
            header,
            header_len: layout.header_end(),
            data_len: layout.data_len,
            padding: layout.data_len.next_multiple_of(4) - layout.data_len,
        })
    }

    /// How many bytes the header part (BHS, AHS, header digest) of the PDU
    /// whose BHS is `bhs` takes: what to read before [`Decoder::head`] can
    /// answer.
    #[must_use]
    pub fn header_len(&self, bhs: &Bhs) -> usize {
        BHS_LEN + usize::from(bhs[field::TOTAL_AHS_LEN]) * 4 + if self.framing.header_digest { DIGEST_LEN } else { 0 }
    }

    /// Where the parts of the PDU whose BHS is `bhs` lie, with the announced
    /// data segment length checked against our limit before anything is
    /// buffered.
    fn layout(&self, bhs: &Bhs) -> Result<Layout, DecodeError> {
        let data_len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]);
        if data_len > self.framing.max_data_segment_len {
            return Err(DecodeError::DataSegmentTooLong {
                bhs: Box::new(*bhs),
                len: data_len,
                max: self.framing.max_data_segment_len,
            });
        }
        Ok(Layout {
            header_len: BHS_LEN + usize::from(bhs[field::TOTAL_AHS_LEN]) * 4,
            header_digest: self.framing.header_digest,
            data_len: data_len as usize,
            data_digest: self.framing.data_digest && data_len > 0,
        })
    }

    /// `buf` holds at least the header part of `layout`.
    fn check_header_digest(&self, bhs: &Bhs, buf: &[u8], layout: &Layout) -> Result<(), DecodeError> {
        if layout.header_digest && digest_at(buf, layout.header_len) != digest::crc32c(&buf[..layout.header_len]) {
            return Err(DecodeError::HeaderDigest { bhs: Box::new(*bhs) });
        }
        Ok(())
    }

    fn parse_header(&self, bhs: &Bhs, ahs: &[u8]) -> Result<Header, PduError> {
        let opcode = Opcode::of(bhs);
        let expected_side = self.direction == Direction::FromInitiator;
        if opcode.is_initiator() != expected_side {
            return Err(PduError::UnsupportedOpcode(opcode));
        }
        Header::parse(bhs, ahs)
    }
}

fn digest_at(buf: &[u8], at: usize) -> u32 {
    let mut wire = [0u8; DIGEST_LEN];
    wire.copy_from_slice(&buf[at..at + DIGEST_LEN]);
    digest::from_wire(wire)
}

/// Why a PDU could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The data segment is larger than the peer's MaxRecvDataSegmentLength.
    #[error("data segment of {len} bytes exceeds the peer's MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong { len: usize, max: u32 },
}

/// What follows a data segment on the wire: padding and the data digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    bytes: [u8; 3 + DIGEST_LEN],
    len: usize,
}

impl Trailer {
    /// The trailer bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Encodes PDUs for one direction of a connection.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    framing: Framing,
}

impl Encoder {
    /// An encoder with login-time framing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Switch to negotiated framing; `max_data_segment_len` is the peer's
    /// MaxRecvDataSegmentLength.
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing.clamped();
    }

    /// The framing in force.
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Append the whole PDU to `out` (header, data, padding, digests).
    pub fn encode(&self, pdu: &Pdu, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_header(&pdu.header, pdu.data.len(), out)?;
        out.put_slice(&pdu.data);
        out.put_slice(self.trailer(&pdu.data).as_slice());
        Ok(())
    }

    /// Append the header part (BHS, AHS, header digest) for a PDU whose data
    /// segment is `data_len` bytes long. With [`Encoder::trailer`] this lets
    /// a caller send the data from its own buffer with a vectored write.
    pub fn encode_header(&self, header: &Header, data_len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
        let max = self.framing.max_data_segment_len;
        let len = u32::try_from(data_len)
            .ok()
            .filter(|&l| l <= max)
            .ok_or(EncodeError::DataSegmentTooLong { len: data_len, max })?;
        let start = out.len();
        let mut bhs = [0u8; BHS_LEN];
        header.emit(&mut bhs, len);
        out.reserve(BHS_LEN + header.ahs_len() + DIGEST_LEN);
        out.put_slice(&bhs);
        header.emit_ahs(out);
        if self.framing.header_digest {
            let crc = digest::crc32c(&out[start..]);
            out.put_slice(&digest::to_wire(crc));
        }
        Ok(())
    }

    /// Padding and data digest for `data`.
    #[must_use]
    pub fn trailer(&self, data: &[u8]) -> Trailer {
        let mut t = Trailer {
            bytes: [0; 3 + DIGEST_LEN],
            len: data.len().next_multiple_of(4) - data.len(),
        };
        if self.framing.data_digest && !data.is_empty() {
            let crc = digest::crc32c_append(digest::crc32c(data), &t.bytes[..t.len]);
            t.bytes[t.len..t.len + DIGEST_LEN].copy_from_slice(&digest::to_wire(crc));
            t.len += DIGEST_LEN;
        }
        t
    }

    /// The whole PDU as one buffer.
    pub fn to_bytes(&self, pdu: &Pdu) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(BHS_LEN + pdu.data.len() + 16);
        self.encode(pdu, &mut out)?;
        Ok(out.freeze())
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;

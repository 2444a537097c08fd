//! iSCSI PDUs (RFC 7143 section 11).
//!
//! Every PDU starts with a 48-byte Basic Header Segment (BHS). Its common
//! fields are named in [`field`]; each PDU type has its own file with an owned,
//! validated header value (`parse` from a BHS, `emit` into one) and the
//! offsets of its opcode-specific fields. [`Header`] is the sum of them all and
//! [`Pdu`] pairs a header with its data segment.
//!
//! Headers hold no lengths: the data segment length, the AHS length and the
//! digests are the codec's business (see [`crate::codec`]).

mod async_msg;
mod data_in;
mod data_out;
mod login;
mod logout;
mod nop;
mod r2t;
mod reject;
mod scsi_command;
mod scsi_response;
mod snack;
mod task_mgmt;
mod text;

pub use async_msg::{AsyncEvent, AsyncMessage};
pub use data_in::DataIn;
pub use data_out::DataOut;
pub use login::{Cid, Isid, LoginRequest, LoginResponse, LoginStatus, Stage, Tsih};
pub use logout::{LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode};
pub use nop::{NopIn, NopOut};
pub use r2t::R2t;
pub use reject::{Reject, RejectReason};
pub use scsi_command::{ScsiCommand, TaskAttribute};
pub use scsi_response::{Residual, ScsiResponse, ServiceResponse, sense_of_segment, sense_segment};
pub use snack::{Snack, SnackType};
pub use task_mgmt::{TaskFunction, TaskMgmtRequest, TaskMgmtResponse, TmfResponse};
pub use text::{TextRequest, TextResponse};

use bytes::Bytes;
use core::fmt;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// A raw Basic Header Segment.
pub type Bhs = [u8; BHS_LEN];

/// Offsets of the fields every BHS shares (RFC 7143 section 11.2.1).
pub mod field {
    /// A byte range within the BHS.
    pub type Field = core::ops::Range<usize>;

    /// Byte 0: `.I` bit (initiator PDUs), then the 6-bit opcode.
    pub const OPCODE: usize = 0;
    /// Byte 1: the F bit and opcode-specific flags.
    pub const FLAGS: usize = 1;
    /// Byte 4: total AHS length in 4-byte words.
    pub const TOTAL_AHS_LEN: usize = 4;
    /// Bytes 5-7: data segment length, 24 bits, without padding.
    pub const DATA_SEGMENT_LEN: Field = 5..8;
    /// Bytes 8-15: LUN or opcode-specific.
    pub const LUN: Field = 8..16;
    /// Bytes 16-19: Initiator Task Tag.
    pub const ITT: Field = 16..20;

    /// Bit 6 of byte 0: immediate delivery (initiator PDUs only).
    pub const IMMEDIATE_BIT: u8 = 0x40;
    /// Low 6 bits of byte 0.
    pub const OPCODE_MASK: u8 = 0x3f;
    /// Bit 7 of byte 1: final PDU of a sequence (or the constant 1 bit).
    pub const FINAL_BIT: u8 = 0x80;
}

/// An iSCSI opcode: an open set, so an unknown value is data, not a panic.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const NOP_OUT: Self = Self(0x00);
    pub const SCSI_COMMAND: Self = Self(0x01);
    pub const TASK_MGMT_REQUEST: Self = Self(0x02);
    pub const LOGIN_REQUEST: Self = Self(0x03);
    pub const TEXT_REQUEST: Self = Self(0x04);
    pub const DATA_OUT: Self = Self(0x05);
    pub const LOGOUT_REQUEST: Self = Self(0x06);
    pub const SNACK: Self = Self(0x10);
    pub const NOP_IN: Self = Self(0x20);
    pub const SCSI_RESPONSE: Self = Self(0x21);
    pub const TASK_MGMT_RESPONSE: Self = Self(0x22);
    pub const LOGIN_RESPONSE: Self = Self(0x23);
    pub const TEXT_RESPONSE: Self = Self(0x24);
    pub const DATA_IN: Self = Self(0x25);
    pub const LOGOUT_RESPONSE: Self = Self(0x26);
    pub const R2T: Self = Self(0x31);
    pub const ASYNC_MESSAGE: Self = Self(0x32);
    pub const REJECT: Self = Self(0x3f);

    /// The opcode of a BHS.
    #[must_use]
    pub const fn of(bhs: &Bhs) -> Self {
        Self(bhs[field::OPCODE] & field::OPCODE_MASK)
    }

    /// Initiator opcodes are 0x00-0x1f, target opcodes 0x20-0x3f
    /// (RFC 7143 section 11.2.1.2).
    #[must_use]
    pub const fn is_initiator(self) -> bool {
        self.0 < 0x20
    }

    /// The opcode's name in RFC 7143, if it has one.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NOP_OUT => "NOP-Out",
            Self::SCSI_COMMAND => "SCSI Command",
            Self::TASK_MGMT_REQUEST => "Task Management Function Request",
            Self::LOGIN_REQUEST => "Login Request",
            Self::TEXT_REQUEST => "Text Request",
            Self::DATA_OUT => "SCSI Data-Out",
            Self::LOGOUT_REQUEST => "Logout Request",
            Self::SNACK => "SNACK Request",
            Self::NOP_IN => "NOP-In",
            Self::SCSI_RESPONSE => "SCSI Response",
            Self::TASK_MGMT_RESPONSE => "Task Management Function Response",
            Self::LOGIN_RESPONSE => "Login Response",
            Self::TEXT_RESPONSE => "Text Response",
            Self::DATA_IN => "SCSI Data-In",
            Self::LOGOUT_RESPONSE => "Logout Response",
            Self::R2T => "Ready To Transfer",
            Self::ASYNC_MESSAGE => "Asynchronous Message",
            Self::REJECT => "Reject",
            _ => return None,
        })
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Opcode({:#04x})", self.0),
        }
    }
}

/// What is wrong with a PDU whose framing was sound. Each maps to the Reject
/// reason the target sends back ([`PduError::reject_reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// An opcode this side does not implement or that the peer must not send.
    #[error("unsupported opcode {0:?}")]
    UnsupportedOpcode(Opcode),
    /// A field holds a value the RFC does not allow.
    #[error("invalid {field} in {opcode:?}")]
    InvalidField { opcode: Opcode, field: &'static str },
    /// Additional header segments on a PDU that has none, or a malformed one.
    #[error("invalid additional header segment in {0:?}")]
    InvalidAhs(Opcode),
}

impl PduError {
    /// RFC 7143 section 11.17.1: the reason code of the Reject PDU that
    /// answers this error.
    #[must_use]
    pub const fn reject_reason(&self) -> RejectReason {
        match self {
            Self::UnsupportedOpcode(_) => RejectReason::COMMAND_NOT_SUPPORTED,
            Self::InvalidField { .. } | Self::InvalidAhs(_) => RejectReason::INVALID_PDU_FIELD,
        }
    }
}

/// Reads and writes of big-endian BHS fields at constant offsets.
pub(crate) mod wire {
    use super::Bhs;
    use super::field::Field;
    use byteorder::{BigEndian, ByteOrder};

    pub(crate) fn u16_at(bhs: &Bhs, at: Field) -> u16 {
        BigEndian::read_u16(&bhs[at])
    }
    pub(crate) fn u32_at(bhs: &Bhs, at: Field) -> u32 {
        BigEndian::read_u32(&bhs[at])
    }
    pub(crate) fn put_u16(bhs: &mut Bhs, at: Field, v: u16) {
        BigEndian::write_u16(&mut bhs[at], v);
    }
    pub(crate) fn put_u32(bhs: &mut Bhs, at: Field, v: u32) {
        BigEndian::write_u32(&mut bhs[at], v);
    }
    pub(crate) fn lun_at(bhs: &Bhs) -> crate::Lun {
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&bhs[super::field::LUN]);
        crate::Lun(lun)
    }
    pub(crate) fn put_lun(bhs: &mut Bhs, lun: crate::Lun) {
        bhs[super::field::LUN].copy_from_slice(&lun.0);
    }
    /// Zero the reserved `ranges`: an emitter writes every byte it owns,
    /// so that a byte it forgets shows in the byte tests.
    pub(crate) fn put_reserved(bhs: &mut Bhs, ranges: &[Field]) {
        for range in ranges {
            bhs[range.clone()].fill(0);
        }
    }
}

/// The typed header of any PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(Snack),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

macro_rules! for_each_header {
    ($self:expr, $h:ident => $body:expr) => {
        match $self {
            Header::NopOut($h) => $body,
            Header::ScsiCommand($h) => $body,
            Header::TaskMgmtRequest($h) => $body,
            Header::LoginRequest($h) => $body,
            Header::TextRequest($h) => $body,
            Header::DataOut($h) => $body,
            Header::LogoutRequest($h) => $body,
            Header::Snack($h) => $body,
            Header::NopIn($h) => $body,
            Header::ScsiResponse($h) => $body,
            Header::TaskMgmtResponse($h) => $body,
            Header::LoginResponse($h) => $body,
            Header::TextResponse($h) => $body,
            Header::DataIn($h) => $body,
            Header::LogoutResponse($h) => $body,
            Header::R2t($h) => $body,
            Header::AsyncMessage($h) => $body,
            Header::Reject($h) => $body,
        }
    };
}

impl Header {
    /// Parse a BHS and its additional header segments (`ahs`, already
    /// stripped of the header digest). Only SCSI Command PDUs may carry AHS.
    pub fn parse(bhs: &Bhs, ahs: &[u8]) -> Result<Self, PduError> {
        let opcode = Opcode::of(bhs);
        if !ahs.is_empty() && opcode != Opcode::SCSI_COMMAND {
            return Err(PduError::InvalidAhs(opcode));
        }
        Ok(match opcode {
            Opcode::NOP_OUT => Self::NopOut(NopOut::parse(bhs)?),
            Opcode::SCSI_COMMAND => Self::ScsiCommand(ScsiCommand::parse(bhs, ahs)?),
            Opcode::TASK_MGMT_REQUEST => Self::TaskMgmtRequest(TaskMgmtRequest::parse(bhs)?),
            Opcode::LOGIN_REQUEST => Self::LoginRequest(LoginRequest::parse(bhs)?),
            Opcode::TEXT_REQUEST => Self::TextRequest(TextRequest::parse(bhs)?),
            Opcode::DATA_OUT => Self::DataOut(DataOut::parse(bhs)?),
            Opcode::LOGOUT_REQUEST => Self::LogoutRequest(LogoutRequest::parse(bhs)?),
            Opcode::SNACK => Self::Snack(Snack::parse(bhs)?),
            Opcode::NOP_IN => Self::NopIn(NopIn::parse(bhs)?),
            Opcode::SCSI_RESPONSE => Self::ScsiResponse(ScsiResponse::parse(bhs)?),
            Opcode::TASK_MGMT_RESPONSE => Self::TaskMgmtResponse(TaskMgmtResponse::parse(bhs)?),
            Opcode::LOGIN_RESPONSE => Self::LoginResponse(LoginResponse::parse(bhs)?),
            Opcode::TEXT_RESPONSE => Self::TextResponse(TextResponse::parse(bhs)?),
            Opcode::DATA_IN => Self::DataIn(DataIn::parse(bhs)?),
            Opcode::LOGOUT_RESPONSE => Self::LogoutResponse(LogoutResponse::parse(bhs)?),
            Opcode::R2T => Self::R2t(R2t::parse(bhs)?),
            Opcode::ASYNC_MESSAGE => Self::AsyncMessage(AsyncMessage::parse(bhs)?),
            Opcode::REJECT => Self::Reject(Reject::parse(bhs)?),
            other => return Err(PduError::UnsupportedOpcode(other)),
        })
    }

    /// Write the BHS for this header, with `data_len` in its length field and
    /// the AHS length of whatever [`Header::emit_ahs`] writes.
    pub fn emit(&self, bhs: &mut Bhs, data_len: u32) {
        // Every byte is written by the header itself (reserved ones as zero).
        for_each_header!(self, h => h.emit(bhs));
        let ahs_words = self.ahs_len() / 4;
        // ahs_len() is at most 255 words by construction (ScsiCommand caps it).
        bhs[field::TOTAL_AHS_LEN] = u8::try_from(ahs_words).unwrap_or(u8::MAX);
        let len = data_len.to_be_bytes();
        bhs[field::DATA_SEGMENT_LEN].copy_from_slice(&len[1..]);
    }

    /// Length in bytes of the additional header segments this header carries.
    #[must_use]
    pub fn ahs_len(&self) -> usize {
        match self {
            Self::ScsiCommand(c) => c.ahs_len(),
            _ => 0,
        }
    }

    /// Append the additional header segments to `out`.
    pub fn emit_ahs(&self, out: &mut impl bytes::BufMut) {
        if let Self::ScsiCommand(c) = self {
            c.emit_ahs(out);
        }
    }

    /// The opcode of this header.
    #[must_use]
    pub fn opcode(&self) -> Opcode {
        match self {
            Self::NopOut(_) => Opcode::NOP_OUT,
            Self::ScsiCommand(_) => Opcode::SCSI_COMMAND,
            Self::TaskMgmtRequest(_) => Opcode::TASK_MGMT_REQUEST,
            Self::LoginRequest(_) => Opcode::LOGIN_REQUEST,
            Self::TextRequest(_) => Opcode::TEXT_REQUEST,
            Self::DataOut(_) => Opcode::DATA_OUT,
            Self::LogoutRequest(_) => Opcode::LOGOUT_REQUEST,
            Self::Snack(_) => Opcode::SNACK,
            Self::NopIn(_) => Opcode::NOP_IN,
            Self::ScsiResponse(_) => Opcode::SCSI_RESPONSE,
            Self::TaskMgmtResponse(_) => Opcode::TASK_MGMT_RESPONSE,
            Self::LoginResponse(_) => Opcode::LOGIN_RESPONSE,
            Self::TextResponse(_) => Opcode::TEXT_RESPONSE,
            Self::DataIn(_) => Opcode::DATA_IN,
            Self::LogoutResponse(_) => Opcode::LOGOUT_RESPONSE,
            Self::R2t(_) => Opcode::R2T,
            Self::AsyncMessage(_) => Opcode::ASYNC_MESSAGE,
            Self::Reject(_) => Opcode::REJECT,
        }
    }

    /// ExpCmdSN and MaxCmdSN, which every target PDU carries
    /// (RFC 7143 4.2.2.1).
    #[must_use]
    pub fn command_window(&self) -> Option<(crate::CmdSn, crate::CmdSn)> {
        Some(match self {
            Self::NopIn(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::ScsiResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::TaskMgmtResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::LoginResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::TextResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::DataIn(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::LogoutResponse(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::R2t(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::AsyncMessage(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            Self::Reject(h) => (h.exp_cmd_sn, h.max_cmd_sn),
            _ => return None,
        })
    }

    /// The StatSN a target PDU uses up, for the initiator's ExpStatSN.
    ///
    /// R2T, Data-In without status and NOP-In pings (reserved ITT) carry the
    /// next StatSN without consuming it (RFC 7143 11.7.4, 11.8.3, 11.19.4).
    #[must_use]
    pub fn stat_sn(&self) -> Option<crate::StatSn> {
        match self {
            Self::ScsiResponse(h) => Some(h.stat_sn),
            Self::DataIn(h) if h.status.is_some() => Some(h.stat_sn),
            Self::NopIn(h) if !h.itt.is_reserved() => Some(h.stat_sn),
            Self::TaskMgmtResponse(h) => Some(h.stat_sn),
            Self::LoginResponse(h) => Some(h.stat_sn),
            Self::TextResponse(h) => Some(h.stat_sn),
            Self::LogoutResponse(h) => Some(h.stat_sn),
            Self::AsyncMessage(h) => Some(h.stat_sn),
            Self::Reject(h) => Some(h.stat_sn),
            _ => None,
        }
    }

    /// The Initiator Task Tag the PDU carries (reserved for Reject and
    /// Asynchronous Message).
    #[must_use]
    pub fn itt(&self) -> crate::Itt {
        for_each_header!(self, h => h.itt)
    }
}

/// A whole PDU: its header and its data segment (without padding or digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub header: Header,
    pub data: Bytes,
}

impl Pdu {
    /// A PDU with no data segment.
    #[must_use]
    pub fn new(header: impl Into<Header>) -> Self {
        Self {
            header: header.into(),
            data: Bytes::new(),
        }
    }

    /// A PDU with a data segment.
    #[must_use]
    pub fn with_data(header: impl Into<Header>, data: impl Into<Bytes>) -> Self {
        Self {
            header: header.into(),
            data: data.into(),
        }
    }
}

macro_rules! impl_from_header {
    ($($ty:ident),*) => {
        $(impl From<$ty> for Header {
            fn from(h: $ty) -> Self {
                Self::$ty(h)
            }
        })*
    };
}

impl_from_header!(
    NopOut,
    ScsiCommand,
    TaskMgmtRequest,
    LoginRequest,
    TextRequest,
    DataOut,
    LogoutRequest,
    Snack,
    NopIn,
    ScsiResponse,
    TaskMgmtResponse,
    LoginResponse,
    TextResponse,
    DataIn,
    LogoutResponse,
    R2t,
    AsyncMessage,
    Reject
);

#[cfg(test)]
mod proptests;

/// Shared test helpers: the smoltcp-style "construct from a 0xa5-filled
/// buffer" check and a parse/emit round trip.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// Emit `header` into a BHS pre-filled with 0xa5 and compare with
    /// `expected`: any byte the emitter forgot to write shows up as 0xa5.
    pub(crate) fn assert_emits(header: impl Into<Header>, data_len: u32, expected: &Bhs) {
        let header = header.into();
        let mut bhs = [0xa5u8; BHS_LEN];
        header.emit(&mut bhs, data_len);
        assert_eq!(&bhs[..], &expected[..], "emitted BHS differs for {header:?}");
        let parsed = Header::parse(expected, &[]).expect("expected bytes parse");
        assert_eq!(parsed, header, "parsed header differs");
    }

    /// A BHS from `(offset, bytes)` patches over zeroes.
    pub(crate) fn bhs(patches: &[(usize, &[u8])]) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        for (at, bytes) in patches {
            b[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        b
    }
}

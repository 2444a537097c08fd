//! SCSI Response (RFC 7143 section 11.4): the status of a command, with its
//! residual counts and, on CHECK CONDITION, sense data.

use super::field::*;
use super::wire::{put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::scsi::ScsiStatus;
use crate::{CmdSn, DataSn, Itt, StatSn};
use bytes::{BufMut, Bytes, BytesMut};

mod field {
    use super::super::field::Field;
    pub(super) const BIDI_OVERFLOW_BIT: u8 = 0x10;
    pub(super) const BIDI_UNDERFLOW_BIT: u8 = 0x08;
    pub(super) const OVERFLOW_BIT: u8 = 0x04;
    pub(super) const UNDERFLOW_BIT: u8 = 0x02;
    pub(super) const RESPONSE: usize = 2;
    pub(super) const STATUS: usize = 3;
    pub(super) const SNACK_TAG: Field = 20..24;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const EXP_DATA_SN: Field = 36..40;
    pub(super) const BIDI_RESIDUAL: Field = 40..44;
    pub(super) const RESIDUAL: Field = 44..48;
}
use self::field::*;

open_enum! {
    /// iSCSI service response (RFC 7143 11.4.3).
    pub struct ServiceResponse(u8) {
        COMMAND_COMPLETED = 0x00,
        TARGET_FAILURE = 0x01,
    }
}

/// A residual count with the flag that gives it meaning (RFC 7143 11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    /// The transfer was exactly as long as expected.
    #[default]
    None,
    /// The command wanted this many bytes more than the initiator expected.
    Overflow(u32),
    /// This many of the expected bytes were not transferred.
    Underflow(u32),
}

impl Residual {
    /// The residual of a transfer of `actual` bytes where `expected` were
    /// announced.
    #[must_use]
    pub fn of(expected: u32, actual: u64) -> Self {
        let expected64 = u64::from(expected);
        match actual.cmp(&expected64) {
            core::cmp::Ordering::Equal => Self::None,
            core::cmp::Ordering::Less => Self::Underflow(u32::try_from(expected64 - actual).unwrap_or(u32::MAX)),
            core::cmp::Ordering::Greater => Self::Overflow(u32::try_from(actual - expected64).unwrap_or(u32::MAX)),
        }
    }

    /// Decode from an overflow bit, an underflow bit and the count field.
    pub(crate) fn decode(over: bool, under: bool, count: u32) -> Option<Self> {
        match (over, under) {
            (false, false) => Some(Self::None),
            (true, false) => Some(Self::Overflow(count)),
            (false, true) => Some(Self::Underflow(count)),
            (true, true) => None,
        }
    }

    /// The (overflow bit, underflow bit, count) triple.
    pub(crate) fn encode(self) -> (bool, bool, u32) {
        match self {
            Self::None => (false, false, 0),
            Self::Overflow(n) => (true, false, n),
            Self::Underflow(n) => (false, true, n),
        }
    }
}

/// A SCSI Response PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    pub response: ServiceResponse,
    /// Valid only when `response` is [`ServiceResponse::COMMAND_COMPLETED`].
    pub status: ScsiStatus,
    pub residual: Residual,
    pub bidi_read_residual: Residual,
    pub itt: Itt,
    pub snack_tag: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// Number of Data-In PDUs the target sent for the command.
    pub exp_data_sn: DataSn,
}

impl ScsiResponse {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        let invalid = |field| PduError::InvalidField {
            opcode: Opcode::SCSI_RESPONSE,
            field,
        };
        // RFC 7143 11.4.1: "Bits O and U ... are mutually exclusive"; likewise o and u.
        let residual = Residual::decode(
            flags & OVERFLOW_BIT != 0,
            flags & UNDERFLOW_BIT != 0,
            u32_at(bhs, RESIDUAL),
        )
        .ok_or_else(|| invalid("O/U bits"))?;
        let bidi_read_residual = Residual::decode(
            flags & BIDI_OVERFLOW_BIT != 0,
            flags & BIDI_UNDERFLOW_BIT != 0,
            u32_at(bhs, BIDI_RESIDUAL),
        )
        .ok_or_else(|| invalid("o/u bits"))?;
        Ok(Self {
            response: ServiceResponse(bhs[RESPONSE]),
            status: ScsiStatus(bhs[STATUS]),
            residual,
            bidi_read_residual,
            itt: Itt(u32_at(bhs, ITT)),
            snack_tag: u32_at(bhs, SNACK_TAG),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            exp_data_sn: DataSn(u32_at(bhs, EXP_DATA_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        let (over, under, count) = self.residual.encode();
        let (bidi_over, bidi_under, bidi_count) = self.bidi_read_residual.encode();
        bhs[8..16].fill(0); // reserved
        bhs[OPCODE] = Opcode::SCSI_RESPONSE.0;
        bhs[FLAGS] = FINAL_BIT
            | if bidi_over { BIDI_OVERFLOW_BIT } else { 0 }
            | if bidi_under { BIDI_UNDERFLOW_BIT } else { 0 }
            | if over { OVERFLOW_BIT } else { 0 }
            | if under { UNDERFLOW_BIT } else { 0 };
        bhs[RESPONSE] = self.response.0;
        bhs[STATUS] = self.status.0;
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, SNACK_TAG, self.snack_tag);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        put_u32(bhs, EXP_DATA_SN, self.exp_data_sn.0);
        put_u32(bhs, BIDI_RESIDUAL, bidi_count);
        put_u32(bhs, RESIDUAL, count);
    }
}

/// The data segment of a SCSI Response carrying `sense` (RFC 7143 11.4.7:
/// a 2-byte SenseLength, then the sense data).
#[must_use]
pub fn sense_segment(sense: &[u8]) -> Bytes {
    let len = sense.len().min(usize::from(u16::MAX));
    let mut seg = BytesMut::with_capacity(2 + len);
    seg.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
    seg.put_slice(&sense[..len]);
    seg.freeze()
}

/// The sense data inside a SCSI Response data segment, if the segment holds
/// any; `None` when SenseLength points past the segment.
#[must_use]
pub fn sense_of_segment(data: &[u8]) -> Option<&[u8]> {
    let [hi, lo, rest @ ..] = data else { return None };
    rest.get(..usize::from(u16::from_be_bytes([*hi, *lo])))
}

#[cfg(test)]
mod tests {
    use super::super::Header;
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x21, 0x82, 0x00, 0x02, 0, 0, 0, 20]),
            (
                16,
                &[0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5],
            ),
            (44, &[0, 0, 2, 0]),
        ]);
        let rsp = ScsiResponse {
            response: ServiceResponse::COMMAND_COMPLETED,
            status: ScsiStatus::CHECK_CONDITION,
            residual: Residual::Underflow(512),
            bidi_read_residual: Residual::None,
            itt: Itt(9),
            snack_tag: 1,
            stat_sn: StatSn(2),
            exp_cmd_sn: CmdSn(3),
            max_cmd_sn: CmdSn(4),
            exp_data_sn: DataSn(5),
        };
        assert_emits(rsp, 20, &expected);
    }

    #[test]
    fn both_overflow_and_underflow_is_invalid() {
        let b = bhs(&[(0, &[0x21, 0x86])]);
        assert!(Header::parse(&b, &[]).is_err());
    }

    #[test]
    fn residual_of_transfer() {
        assert_eq!(Residual::of(512, 512), Residual::None);
        assert_eq!(Residual::of(512, 0), Residual::Underflow(512));
        assert_eq!(Residual::of(0, 4096), Residual::Overflow(4096));
    }

    #[test]
    fn sense_segment_round_trip() {
        let seg = sense_segment(&[0x70, 0, 5]);
        assert_eq!(&seg[..], &[0, 3, 0x70, 0, 5]);
        assert_eq!(sense_of_segment(&seg), Some(&[0x70, 0, 5][..]));
        assert_eq!(sense_of_segment(&[0, 9, 1]), None);
        assert_eq!(sense_of_segment(&[0]), None);
    }
}

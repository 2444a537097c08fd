//! SCSI Data-In (RFC 7143 section 11.7): read data, optionally with the
//! command's status in the last PDU ("phase collapse").

use super::field::*;
use super::scsi_response::Residual;
use super::wire::{lun_at, put_lun, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::scsi::ScsiStatus;
use crate::{CmdSn, DataSn, Itt, Lun, StatSn, Ttt};

mod field {
    use super::super::field::Field;
    pub(super) const ACK_BIT: u8 = 0x40;
    pub(super) const OVERFLOW_BIT: u8 = 0x04;
    pub(super) const UNDERFLOW_BIT: u8 = 0x02;
    pub(super) const STATUS_BIT: u8 = 0x01;
    pub(super) const STATUS: usize = 3;
    pub(super) const TTT: Field = 20..24;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const DATA_SN: Field = 36..40;
    pub(super) const BUFFER_OFFSET: Field = 40..44;
    pub(super) const RESIDUAL: Field = 44..48;
}
use self::field::*;

/// A SCSI Data-In PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIn {
    /// F: the last PDU of the sequence.
    pub final_: bool,
    /// A: the target asks for a DataACK SNACK (ErrorRecoveryLevel > 0 only).
    pub ack: bool,
    /// S: the PDU carries the command's status, and `stat_sn` and `residual`
    /// are meaningful.
    pub status: Option<ScsiStatus>,
    /// Residual flags and count; meaningful only with the S bit.
    pub residual: Residual,
    pub lun: Lun,
    pub itt: Itt,
    /// Meaningful only with the A bit (else reserved, 0xffffffff).
    pub ttt: Ttt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub data_sn: DataSn,
    pub buffer_offset: u32,
}

impl DataIn {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        let invalid = |field| PduError::InvalidField {
            opcode: Opcode::DATA_IN,
            field,
        };
        let final_ = flags & FINAL_BIT != 0;
        let has_status = flags & STATUS_BIT != 0;
        // RFC 7143 11.7.4: "If the S bit is set to 1, the F bit MUST also be set to 1."
        if has_status && !final_ {
            return Err(invalid("S bit without F bit"));
        }
        let residual = Residual::decode(
            flags & OVERFLOW_BIT != 0,
            flags & UNDERFLOW_BIT != 0,
            u32_at(bhs, RESIDUAL),
        )
        .ok_or_else(|| invalid("O/U bits"))?;
        Ok(Self {
            final_,
            ack: flags & ACK_BIT != 0,
            status: has_status.then_some(ScsiStatus(bhs[STATUS])),
            residual,
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt: Ttt(u32_at(bhs, TTT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            data_sn: DataSn(u32_at(bhs, DATA_SN)),
            buffer_offset: u32_at(bhs, BUFFER_OFFSET),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        let (over, under, count) = self.residual.encode();
        bhs[2..3].fill(0); // reserved
        bhs[OPCODE] = Opcode::DATA_IN.0;
        bhs[FLAGS] = (if self.final_ || self.status.is_some() {
            FINAL_BIT
        } else {
            0
        }) | if self.ack { ACK_BIT } else { 0 }
            | if over { OVERFLOW_BIT } else { 0 }
            | if under { UNDERFLOW_BIT } else { 0 }
            | if self.status.is_some() { STATUS_BIT } else { 0 };
        bhs[STATUS] = self.status.map_or(0, |s| s.0);
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        put_u32(bhs, DATA_SN, self.data_sn.0);
        put_u32(bhs, BUFFER_OFFSET, self.buffer_offset);
        put_u32(bhs, RESIDUAL, count);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Header;
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    fn data_in() -> DataIn {
        DataIn {
            final_: true,
            ack: false,
            status: Some(ScsiStatus::GOOD),
            residual: Residual::Overflow(7),
            lun: Lun::ZERO,
            itt: Itt(0x10),
            ttt: Ttt::RESERVED,
            stat_sn: StatSn(0x20),
            exp_cmd_sn: CmdSn(0x30),
            max_cmd_sn: CmdSn(0x40),
            data_sn: DataSn(2),
            buffer_offset: 0x4000,
        }
    }

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x25, 0x85, 0, 0, 0, 0, 2, 0]),
            (16, &[0, 0, 0, 0x10, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x20]),
            (
                28,
                &[0, 0, 0, 0x30, 0, 0, 0, 0x40, 0, 0, 0, 2, 0, 0, 0x40, 0, 0, 0, 0, 7],
            ),
        ]);
        assert_emits(data_in(), 512, &expected);
    }

    #[test]
    fn status_needs_final() {
        let b = bhs(&[(0, &[0x25, 0x01])]);
        assert!(Header::parse(&b, &[]).is_err());
        let b = bhs(&[(0, &[0x25, 0x00])]);
        assert!(Header::parse(&b, &[]).is_ok());
    }
}

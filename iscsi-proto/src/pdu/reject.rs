//! Reject (RFC 7143 section 11.17): the target refuses a PDU; the data segment
//! holds the refused PDU's header.

use super::field::*;
use super::wire::{put_reserved, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, StatSn};

mod field {
    use super::super::field::Field;
    pub(super) const REASON: usize = 2;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const DATA_SN_OR_R2T_SN: Field = 36..40;
}
use self::field::*;

open_enum! {
    /// Reject reason codes (RFC 7143 11.17.1).
    pub struct RejectReason(u8) {
        DATA_DIGEST_ERROR = 0x02,
        SNACK_REJECT = 0x03,
        PROTOCOL_ERROR = 0x04,
        COMMAND_NOT_SUPPORTED = 0x05,
        IMMEDIATE_COMMAND_REJECT = 0x06,
        TASK_IN_PROGRESS = 0x07,
        INVALID_DATA_ACK = 0x08,
        INVALID_PDU_FIELD = 0x09,
        LONG_OPERATION_REJECT = 0x0a,
        NEGOTIATION_RESET = 0x0b,
        WAITING_FOR_LOGOUT = 0x0c,
    }
}

/// A Reject PDU header. Its ITT is always the reserved value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub itt: Itt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// For a rejected SNACK: the DataSN/R2TSN to expect next; else 0.
    pub data_sn_or_r2t_sn: u32,
}

impl Reject {
    /// A Reject for `reason` with the sequence numbers to report.
    #[must_use]
    pub fn new(reason: RejectReason, stat_sn: StatSn, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn) -> Self {
        Self {
            reason,
            itt: Itt::RESERVED,
            stat_sn,
            exp_cmd_sn,
            max_cmd_sn,
            data_sn_or_r2t_sn: 0,
        }
    }

    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            reason: RejectReason(bhs[REASON]),
            itt: Itt(u32_at(bhs, ITT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            data_sn_or_r2t_sn: u32_at(bhs, DATA_SN_OR_R2T_SN),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[3..4, 8..16, 20..24, 40..48]);
        bhs[OPCODE] = Opcode::REJECT.0;
        bhs[FLAGS] = FINAL_BIT;
        bhs[REASON] = self.reason.0;
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        put_u32(bhs, DATA_SN_OR_R2T_SN, self.data_sn_or_r2t_sn);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x3f, 0x80, 0x09, 0, 0, 0, 0, 48]),
            (16, &[0xff, 0xff, 0xff, 0xff]),
            (24, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]),
        ]);
        let reject = Reject::new(RejectReason::INVALID_PDU_FIELD, StatSn(1), CmdSn(2), CmdSn(3));
        assert_emits(reject, 48, &expected);
    }
}

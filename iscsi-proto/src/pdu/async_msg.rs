//! Asynchronous Message (RFC 7143 section 11.9): target-initiated events,
//! such as a SCSI unit attention or a request to log out.

use super::field::*;
use super::wire::{lun_at, put_lun, put_reserved, put_u16, put_u32, u16_at, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, Lun, StatSn};

mod field {
    use super::super::field::Field;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const ASYNC_EVENT: usize = 36;
    pub(super) const ASYNC_VCODE: usize = 37;
    pub(super) const PARAMETER1: Field = 38..40;
    pub(super) const PARAMETER2: Field = 40..42;
    pub(super) const PARAMETER3: Field = 42..44;
}
use self::field::*;

open_enum! {
    /// Asynchronous event code (RFC 7143 11.9.1).
    pub struct AsyncEvent(u8) {
        /// Sense data in the data segment reports a SCSI asynchronous event.
        SCSI_EVENT = 0,
        /// The target asks the initiator to log out (Parameter3: seconds to do so).
        LOGOUT_REQUEST = 1,
        /// The target will drop a connection (Parameter1: CID).
        CONNECTION_DROP = 2,
        /// The target will drop all connections of the session.
        SESSION_DROP = 3,
        /// The target asks for parameter renegotiation.
        NEGOTIATION_REQUEST = 4,
        /// Every active task of the logical unit in the LUN field is being
        /// terminated (RFC 7143's FastAbort semantics).
        ALL_TASKS_TERMINATED = 5,
        VENDOR_SPECIFIC = 255,
    }
}

/// An Asynchronous Message PDU header. Its ITT is always the reserved value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: Lun,
    pub itt: Itt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub event: AsyncEvent,
    pub vcode: u8,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
}

impl AsyncMessage {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            event: AsyncEvent(bhs[ASYNC_EVENT]),
            vcode: bhs[ASYNC_VCODE],
            parameter1: u16_at(bhs, PARAMETER1),
            parameter2: u16_at(bhs, PARAMETER2),
            parameter3: u16_at(bhs, PARAMETER3),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 20..24, 44..48]);
        bhs[OPCODE] = Opcode::ASYNC_MESSAGE.0;
        bhs[FLAGS] = FINAL_BIT;
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        bhs[ASYNC_EVENT] = self.event.0;
        bhs[ASYNC_VCODE] = self.vcode;
        put_u16(bhs, PARAMETER1, self.parameter1);
        put_u16(bhs, PARAMETER2, self.parameter2);
        put_u16(bhs, PARAMETER3, self.parameter3);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x32, 0x80]),
            (8, &[0, 1]),
            (16, &[0xff, 0xff, 0xff, 0xff]),
            (24, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 7, 0, 1, 0, 2, 0, 30]),
        ]);
        let msg = AsyncMessage {
            lun: Lun::from_index(1),
            itt: Itt::RESERVED,
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(3),
            event: AsyncEvent::LOGOUT_REQUEST,
            vcode: 7,
            parameter1: 1,
            parameter2: 2,
            parameter3: 30,
        };
        assert_emits(msg, 0, &expected);
    }
}

//! Logout Request (RFC 7143 section 11.14) and Logout Response (11.15).

use super::field::*;
use super::wire::{put_reserved, put_u16, put_u32, u16_at, u32_at};
use super::{Bhs, Cid, Opcode, PduError};
use crate::{CmdSn, Itt, StatSn};

mod field {
    use super::super::field::Field;
    pub(super) const REASON_MASK: u8 = 0x7f;
    pub(super) const RESPONSE: usize = 2;
    pub(super) const CID: Field = 20..22;
    pub(super) const CMD_SN: Field = 24..28;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const TIME2WAIT: Field = 40..42;
    pub(super) const TIME2RETAIN: Field = 42..44;
}
use self::field::*;

open_enum! {
    /// Why the initiator logs out (RFC 7143 11.14.1).
    pub struct LogoutReason(u8) {
        CLOSE_SESSION = 0,
        CLOSE_CONNECTION = 1,
        REMOVE_CONNECTION_FOR_RECOVERY = 2,
    }
}

open_enum! {
    /// The target's answer to a logout (RFC 7143 11.15.1).
    pub struct LogoutResponseCode(u8) {
        CLOSED = 0,
        CID_NOT_FOUND = 1,
        RECOVERY_NOT_SUPPORTED = 2,
        CLEANUP_FAILED = 3,
    }
}

/// A Logout Request PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: Itt,
    /// The connection to close (reasons 1 and 2); reserved for reason 0.
    pub cid: Cid,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

impl LogoutRequest {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            immediate: bhs[OPCODE] & IMMEDIATE_BIT != 0,
            reason: LogoutReason(bhs[FLAGS] & REASON_MASK),
            itt: Itt(u32_at(bhs, ITT)),
            cid: Cid(u16_at(bhs, CID)),
            cmd_sn: CmdSn(u32_at(bhs, CMD_SN)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 8..16, 22..24, 32..48]);
        bhs[OPCODE] = Opcode::LOGOUT_REQUEST.0 | if self.immediate { IMMEDIATE_BIT } else { 0 };
        bhs[FLAGS] = FINAL_BIT | (self.reason.0 & REASON_MASK);
        put_u32(bhs, ITT, self.itt.0);
        put_u16(bhs, CID, self.cid.0);
        put_u32(bhs, CMD_SN, self.cmd_sn.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
    }
}

/// A Logout Response PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: LogoutResponseCode,
    pub itt: Itt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// Seconds to wait before reconnecting (recovery only).
    pub time2wait: u16,
    /// Seconds the target keeps the connection's tasks for recovery.
    pub time2retain: u16,
}

impl LogoutResponse {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            response: LogoutResponseCode(bhs[RESPONSE]),
            itt: Itt(u32_at(bhs, ITT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            time2wait: u16_at(bhs, TIME2WAIT),
            time2retain: u16_at(bhs, TIME2RETAIN),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[3..4, 8..16, 20..24, 36..40, 44..48]);
        bhs[OPCODE] = Opcode::LOGOUT_RESPONSE.0;
        bhs[FLAGS] = FINAL_BIT;
        bhs[RESPONSE] = self.response.0;
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        put_u16(bhs, TIME2WAIT, self.time2wait);
        put_u16(bhs, TIME2RETAIN, self.time2retain);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn request_bytes() {
        let expected = bhs(&[
            (0, &[0x46, 0x81]),
            (16, &[0, 0, 0, 8, 0, 2, 0, 0, 0, 0, 0, 9, 0, 0, 0, 10]),
        ]);
        let req = LogoutRequest {
            immediate: true,
            reason: LogoutReason::CLOSE_CONNECTION,
            itt: Itt(8),
            cid: Cid(2),
            cmd_sn: CmdSn(9),
            exp_stat_sn: StatSn(10),
        };
        assert_emits(req, 0, &expected);
    }

    #[test]
    fn response_bytes() {
        let expected = bhs(&[
            (0, &[0x26, 0x80, 0x02]),
            (16, &[0, 0, 0, 8]),
            (24, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]),
            (40, &[0, 2, 0, 20]),
        ]);
        let rsp = LogoutResponse {
            response: LogoutResponseCode::RECOVERY_NOT_SUPPORTED,
            itt: Itt(8),
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(3),
            time2wait: 2,
            time2retain: 20,
        };
        assert_emits(rsp, 0, &expected);
    }
}

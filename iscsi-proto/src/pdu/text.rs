//! Text Request (RFC 7143 section 11.10) and Text Response (11.11): key=value
//! exchanges in full feature phase, SendTargets discovery among them.

use super::field::*;
use super::wire::{lun_at, put_lun, put_reserved, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, Lun, StatSn, Ttt};

mod field {
    use super::super::field::Field;
    pub(super) const CONTINUE_BIT: u8 = 0x40;
    pub(super) const TTT: Field = 20..24;
    pub(super) const CMD_SN: Field = 24..28;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
}
use self::field::*;

/// A Text Request PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: Lun,
    pub itt: Itt,
    /// Reserved on the first request of an exchange; echoes the target's tag
    /// when continuing a long response.
    pub ttt: Ttt,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

impl TextRequest {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        let (final_, cont) = (flags & FINAL_BIT != 0, flags & CONTINUE_BIT != 0);
        // RFC 7143 11.10.2: "If the C bit is set to 1, the F bit MUST be set to 0."
        if final_ && cont {
            return Err(PduError::InvalidField {
                opcode: Opcode::TEXT_REQUEST,
                field: "F and C bits",
            });
        }
        Ok(Self {
            immediate: bhs[OPCODE] & IMMEDIATE_BIT != 0,
            final_,
            cont,
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt: Ttt(u32_at(bhs, TTT)),
            cmd_sn: CmdSn(u32_at(bhs, CMD_SN)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 32..48]);
        bhs[OPCODE] = Opcode::TEXT_REQUEST.0 | if self.immediate { IMMEDIATE_BIT } else { 0 };
        bhs[FLAGS] = (if self.final_ { FINAL_BIT } else { 0 }) | if self.cont { CONTINUE_BIT } else { 0 };
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, CMD_SN, self.cmd_sn.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
    }
}

/// A Text Response PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: Lun,
    pub itt: Itt,
    /// Reserved on the last response; otherwise a tag the initiator echoes to
    /// ask for the rest.
    pub ttt: Ttt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
}

impl TextResponse {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        let (final_, cont) = (flags & FINAL_BIT != 0, flags & CONTINUE_BIT != 0);
        // RFC 7143 11.11.2: "If the C bit is set to 1, the F bit MUST be set to 0."
        if final_ && cont {
            return Err(PduError::InvalidField {
                opcode: Opcode::TEXT_RESPONSE,
                field: "F and C bits",
            });
        }
        Ok(Self {
            final_,
            cont,
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt: Ttt(u32_at(bhs, TTT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 36..48]);
        bhs[OPCODE] = Opcode::TEXT_RESPONSE.0;
        bhs[FLAGS] = (if self.final_ { FINAL_BIT } else { 0 }) | if self.cont { CONTINUE_BIT } else { 0 };
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Header;
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn request_bytes() {
        let expected = bhs(&[
            (0, &[0x44, 0x80, 0, 0, 0, 0, 0, 0x10]),
            (16, &[0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 4, 0, 0, 0, 5]),
        ]);
        let req = TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: Lun::ZERO,
            itt: Itt(3),
            ttt: Ttt::RESERVED,
            cmd_sn: CmdSn(4),
            exp_stat_sn: StatSn(5),
        };
        assert_emits(req, 16, &expected);
    }

    #[test]
    fn response_bytes() {
        let expected = bhs(&[
            (0, &[0x24, 0x40, 0, 0]),
            (16, &[0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6]),
        ]);
        let rsp = TextResponse {
            final_: false,
            cont: true,
            lun: Lun::ZERO,
            itt: Itt(3),
            ttt: Ttt(9),
            stat_sn: StatSn(4),
            exp_cmd_sn: CmdSn(5),
            max_cmd_sn: CmdSn(6),
        };
        assert_emits(rsp, 0, &expected);
        assert!(Header::parse(&bhs(&[(0, &[0x24, 0xc0])]), &[]).is_err());
    }
}

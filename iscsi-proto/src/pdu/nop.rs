//! NOP-Out (RFC 7143 section 11.18) and NOP-In (section 11.19): pings in
//! either direction, and the answers to them.

use super::field::*;
use super::wire::{lun_at, put_lun, put_reserved, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, Lun, StatSn, Ttt};

mod field {
    use super::super::field::Field;
    pub(super) const TTT: Field = 20..24;
    pub(super) const CMD_SN: Field = 24..28;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
}
use self::field::*;

/// NOP-Out: an initiator ping, or the answer to a target's NOP-In.
///
/// `itt` is reserved (0xffffffff) when answering a NOP-In, in which case `ttt`
/// echoes the NOP-In's; an initiator-originated ping has a real `itt` and a
/// reserved `ttt`. Its data segment is echoed back in the NOP-In.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: Lun,
    pub itt: Itt,
    pub ttt: Ttt,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
}

impl NopOut {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        // RFC 7143 11.18.1 says a NOP-Out with a reserved ITT "MUST" have the
        // I bit set; that is the sender's duty and harmless when missed, so
        // it is not grounds for a Reject here.
        Ok(Self {
            immediate: bhs[OPCODE] & IMMEDIATE_BIT != 0,
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt: Ttt(u32_at(bhs, TTT)),
            cmd_sn: CmdSn(u32_at(bhs, CMD_SN)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 32..48]);
        bhs[OPCODE] = Opcode::NOP_OUT.0 | if self.immediate { IMMEDIATE_BIT } else { 0 };
        bhs[FLAGS] = FINAL_BIT;
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, CMD_SN, self.cmd_sn.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
    }
}

/// NOP-In: the answer to a NOP-Out ping (`itt` echoed, `ttt` reserved), or a
/// target ping asking for a NOP-Out (`itt` reserved, `ttt` chosen by the
/// target), or with both reserved a mere carrier of StatSN/MaxCmdSN updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    pub lun: Lun,
    pub itt: Itt,
    pub ttt: Ttt,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
}

impl NopIn {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
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
        bhs[OPCODE] = Opcode::NOP_IN.0;
        bhs[FLAGS] = FINAL_BIT;
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
    }

    /// Whether the target expects a NOP-Out in answer (RFC 7143 11.19.2).
    #[must_use]
    pub fn wants_reply(&self) -> bool {
        !self.ttt.is_reserved()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn nop_out_bytes() {
        let expected = bhs(&[
            (0, &[0x40, 0x80, 0, 0, 0, 0, 0, 0x10]),
            (8, &[0, 1, 0, 0, 0, 0, 0, 0]),
            (16, &[0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 9, 0, 0, 0, 3]),
        ]);
        let nop = NopOut {
            immediate: true,
            lun: Lun::from_index(1),
            itt: Itt(7),
            ttt: Ttt::RESERVED,
            cmd_sn: CmdSn(9),
            exp_stat_sn: StatSn(3),
        };
        assert_emits(nop, 16, &expected);
    }

    #[test]
    fn nop_in_bytes() {
        let expected = bhs(&[
            (0, &[0x20, 0x80]),
            (16, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5]),
            (24, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0x21]),
        ]);
        let nop = NopIn {
            lun: Lun::ZERO,
            itt: Itt::RESERVED,
            ttt: Ttt(5),
            stat_sn: StatSn(1),
            exp_cmd_sn: CmdSn(2),
            max_cmd_sn: CmdSn(0x21),
        };
        assert!(nop.wants_reply());
        assert_emits(nop, 0, &expected);
    }
}

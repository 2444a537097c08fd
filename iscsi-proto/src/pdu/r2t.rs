//! Ready To Transfer (RFC 7143 section 11.8): the target asks for a burst of
//! write data.

use super::field::*;
use super::wire::{lun_at, put_lun, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, Lun, R2tSn, StatSn, Ttt};

mod field {
    use super::super::field::Field;
    pub(super) const TTT: Field = 20..24;
    pub(super) const STAT_SN: Field = 24..28;
    pub(super) const EXP_CMD_SN: Field = 28..32;
    pub(super) const MAX_CMD_SN: Field = 32..36;
    pub(super) const R2T_SN: Field = 36..40;
    pub(super) const BUFFER_OFFSET: Field = 40..44;
    pub(super) const DESIRED_LEN: Field = 44..48;
}
use self::field::*;

/// An R2T PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: Lun,
    pub itt: Itt,
    pub ttt: Ttt,
    /// StatSN is not advanced by an R2T; it carries the next one.
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub r2t_sn: R2tSn,
    pub buffer_offset: u32,
    /// RFC 7143 11.8.4: "MUST NOT be 0 and MUST NOT exceed MaxBurstLength".
    pub desired_len: u32,
}

impl R2t {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        let desired_len = u32_at(bhs, DESIRED_LEN);
        if desired_len == 0 {
            return Err(PduError::InvalidField {
                opcode: Opcode::R2T,
                field: "Desired Data Transfer Length",
            });
        }
        Ok(Self {
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt: Ttt(u32_at(bhs, TTT)),
            stat_sn: StatSn(u32_at(bhs, STAT_SN)),
            exp_cmd_sn: CmdSn(u32_at(bhs, EXP_CMD_SN)),
            max_cmd_sn: CmdSn(u32_at(bhs, MAX_CMD_SN)),
            r2t_sn: R2tSn(u32_at(bhs, R2T_SN)),
            buffer_offset: u32_at(bhs, BUFFER_OFFSET),
            desired_len,
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        bhs[2..4].fill(0); // reserved
        bhs[OPCODE] = Opcode::R2T.0;
        bhs[FLAGS] = FINAL_BIT;
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, STAT_SN, self.stat_sn.0);
        put_u32(bhs, EXP_CMD_SN, self.exp_cmd_sn.0);
        put_u32(bhs, MAX_CMD_SN, self.max_cmd_sn.0);
        put_u32(bhs, R2T_SN, self.r2t_sn.0);
        put_u32(bhs, BUFFER_OFFSET, self.buffer_offset);
        put_u32(bhs, DESIRED_LEN, self.desired_len);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Header;
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x31, 0x80]),
            (8, &[0, 1]),
            (16, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]),
            (36, &[0, 0, 0, 6, 0, 0, 0x20, 0, 0, 4, 0, 0]),
        ]);
        let r2t = R2t {
            lun: Lun::from_index(1),
            itt: Itt(1),
            ttt: Ttt(2),
            stat_sn: StatSn(3),
            exp_cmd_sn: CmdSn(4),
            max_cmd_sn: CmdSn(5),
            r2t_sn: R2tSn(6),
            buffer_offset: 0x2000,
            desired_len: 0x4_0000,
        };
        assert_emits(r2t, 0, &expected);
        assert!(Header::parse(&bhs(&[(0, &[0x31, 0x80])]), &[]).is_err(), "zero length");
    }
}

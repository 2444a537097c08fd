//! SNACK Request (RFC 7143 section 11.16).
//!
//! At ErrorRecoveryLevel 0, which is all this implementation negotiates, a
//! target answers a SNACK with a Reject; it is parsed so that the Reject can
//! name it properly.

use super::field::*;
use super::wire::{lun_at, put_lun, put_reserved, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{Itt, Lun, StatSn};

mod field {
    use super::super::field::Field;
    pub(super) const TYPE_MASK: u8 = 0x0f;
    pub(super) const TTT_OR_SNACK_TAG: Field = 20..24;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const BEG_RUN: Field = 40..44;
    pub(super) const RUN_LENGTH: Field = 44..48;
}
use self::field::*;

open_enum! {
    /// SNACK function (RFC 7143 11.16.1).
    pub struct SnackType(u8) {
        DATA_R2T = 0,
        STATUS = 1,
        DATA_ACK = 2,
        R_DATA = 3,
    }
}

/// A SNACK Request PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snack {
    pub kind: SnackType,
    pub lun: Lun,
    pub itt: Itt,
    /// TTT for DataACK, SNACK Tag for R-Data, else reserved.
    pub ttt_or_snack_tag: u32,
    pub exp_stat_sn: StatSn,
    pub beg_run: u32,
    pub run_length: u32,
}

impl Snack {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            kind: SnackType(bhs[FLAGS] & TYPE_MASK),
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt_or_snack_tag: u32_at(bhs, TTT_OR_SNACK_TAG),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
            beg_run: u32_at(bhs, BEG_RUN),
            run_length: u32_at(bhs, RUN_LENGTH),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 24..28, 32..40]);
        bhs[OPCODE] = Opcode::SNACK.0;
        bhs[FLAGS] = FINAL_BIT | (self.kind.0 & TYPE_MASK);
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT_OR_SNACK_TAG, self.ttt_or_snack_tag);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
        put_u32(bhs, BEG_RUN, self.beg_run);
        put_u32(bhs, RUN_LENGTH, self.run_length);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x10, 0x81]),
            (8, &[0, 2]),
            (16, &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]),
            (28, &[0, 0, 0, 4]),
            (40, &[0, 0, 0, 5, 0, 0, 0, 6]),
        ]);
        let snack = Snack {
            kind: SnackType::STATUS,
            lun: Lun::from_index(2),
            itt: Itt(1),
            ttt_or_snack_tag: 0xffff_ffff,
            exp_stat_sn: StatSn(4),
            beg_run: 5,
            run_length: 6,
        };
        assert_emits(snack, 0, &expected);
    }
}

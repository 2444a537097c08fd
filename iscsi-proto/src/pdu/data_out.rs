//! SCSI Data-Out (RFC 7143 section 11.7): write data, unsolicited or in
//! answer to an R2T.

use super::field::*;
use super::wire::{lun_at, put_lun, put_reserved, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{DataSn, Itt, Lun, StatSn, Ttt};

mod field {
    use super::super::field::Field;
    pub(super) const TTT: Field = 20..24;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const DATA_SN: Field = 36..40;
    pub(super) const BUFFER_OFFSET: Field = 40..44;
}
use self::field::*;

/// A SCSI Data-Out PDU header.
///
/// `ttt` is reserved (0xffffffff) for unsolicited data and echoes the R2T's
/// tag for solicited data; `data_sn` restarts at 0 for every R2T and for the
/// unsolicited burst (RFC 7143 11.7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    /// F: the last PDU of this sequence (burst).
    pub final_: bool,
    pub lun: Lun,
    pub itt: Itt,
    pub ttt: Ttt,
    pub exp_stat_sn: StatSn,
    pub data_sn: DataSn,
    pub buffer_offset: u32,
}

impl DataOut {
    pub(crate) fn parse(bhs: &Bhs) -> Result<Self, PduError> {
        Ok(Self {
            final_: bhs[FLAGS] & FINAL_BIT != 0,
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            ttt: Ttt(u32_at(bhs, TTT)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
            data_sn: DataSn(u32_at(bhs, DATA_SN)),
            buffer_offset: u32_at(bhs, BUFFER_OFFSET),
        })
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        put_reserved(bhs, &[2..4, 24..28, 32..36, 44..48]);
        bhs[OPCODE] = Opcode::DATA_OUT.0;
        bhs[FLAGS] = if self.final_ { FINAL_BIT } else { 0 };
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, TTT, self.ttt.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
        put_u32(bhs, DATA_SN, self.data_sn.0);
        put_u32(bhs, BUFFER_OFFSET, self.buffer_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::*;

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x05, 0x80, 0, 0, 0, 0, 0x20, 0]),
            (8, &[0, 1]),
            (16, &[0, 0, 0, 1, 0, 0, 0, 2]),
            (28, &[0, 0, 0, 3]),
            (36, &[0, 0, 0, 4, 0, 1, 0, 0]),
        ]);
        let data_out = DataOut {
            final_: true,
            lun: Lun::from_index(1),
            itt: Itt(1),
            ttt: Ttt(2),
            exp_stat_sn: StatSn(3),
            data_sn: DataSn(4),
            buffer_offset: 0x1_0000,
        };
        assert_emits(data_out, 0x2000, &expected);
    }
}

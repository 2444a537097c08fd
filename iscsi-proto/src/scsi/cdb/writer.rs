//! The encoder behind `build.rs`: a fixed 16-byte CDB buffer, the SBC-3
//! field positions per CDB size, and the widening rule that picks the
//! smallest CDB able to hold a command's values.

use super::{Cdb, CdbSize, OperationCode as Op, PageControl};

const U16_MAX: u64 = u16::MAX as u64;
const U32_MAX: u64 = u32::MAX as u64;

/// The smallest size among `allowed`, starting from `preferred`, for which
/// `fits` holds; the last allowed size always fits. A preferred size the
/// command does not exist in (WRITE SAME (12), VERIFY (6)) counts as the
/// next smaller one that does, or the smallest.
pub(super) fn pick(preferred: CdbSize, allowed: &[CdbSize], fits: impl Fn(CdbSize) -> bool) -> CdbSize {
    let start = allowed
        .iter()
        .copied()
        .rfind(|&s| s <= preferred)
        .unwrap_or(CdbSize::Six);
    allowed
        .iter()
        .copied()
        .filter(|&s| s >= start)
        .find(|&s| fits(s))
        .unwrap_or(CdbSize::Sixteen)
}

/// Whether `lba`/`len` fit the fields of a (10)/(12)/(16) block CDB.
pub(super) fn fits_10_12_16(size: CdbSize, lba: u64, len: u32) -> bool {
    match size {
        CdbSize::Six => false,
        CdbSize::Ten => lba <= U32_MAX && u64::from(len) <= U16_MAX,
        CdbSize::Twelve => lba <= U32_MAX,
        CdbSize::Sixteen => true,
    }
}

pub(super) const ALL: [CdbSize; 4] = [CdbSize::Six, CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen];
pub(super) const TEN_TWELVE_SIXTEEN: [CdbSize; 3] = [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen];
pub(super) const TEN_SIXTEEN: [CdbSize; 2] = [CdbSize::Ten, CdbSize::Sixteen];

pub(super) struct Writer {
    pub(super) b: [u8; 16],
    len: usize,
}

impl Writer {
    pub(super) fn new(op: Op, len: usize) -> Self {
        let mut b = [0; 16];
        b[0] = op.0;
        Self { b, len }
    }

    pub(super) fn flag(&mut self, byte: usize, bit: u8, on: bool) {
        if on {
            self.b[byte] |= 1 << bit;
        }
    }

    pub(super) fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(d) = self.b.get_mut(at..at + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    }

    /// LBA and length at the positions SBC-3 gives each CDB size.
    pub(super) fn lba_len(&mut self, size: CdbSize, lba: u64, len: u32) {
        match size {
            CdbSize::Six => {
                let [_, _, _, _, _, hi, mid, lo] = lba.to_be_bytes();
                self.put(1, &[hi & 0x1F, mid, lo]);
                // 256 blocks is encoded as 0 (SBC-3 READ (6)).
                self.b[4] = len as u8;
            }
            CdbSize::Ten => {
                self.put(2, &(lba as u32).to_be_bytes());
                self.put(7, &(len as u16).to_be_bytes());
            }
            CdbSize::Twelve => {
                self.put(2, &(lba as u32).to_be_bytes());
                self.put(6, &len.to_be_bytes());
            }
            CdbSize::Sixteen => {
                self.put(2, &lba.to_be_bytes());
                self.put(10, &len.to_be_bytes());
            }
        }
    }

    pub(super) fn finish(self) -> Cdb {
        Cdb {
            bytes: self.b,
            len: self.len as u8,
        }
    }
}

pub(super) fn sized_op(size: CdbSize, ops: [Op; 4]) -> Op {
    match size {
        CdbSize::Six => ops[0],
        CdbSize::Ten => ops[1],
        CdbSize::Twelve => ops[2],
        CdbSize::Sixteen => ops[3],
    }
}

pub(super) fn page_control_bits(pc: PageControl) -> u8 {
    match pc {
        PageControl::Current => 0,
        PageControl::Changeable => 1,
        PageControl::Default => 2,
        PageControl::Saved => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::Op;

    #[test]
    fn widening_instead_of_truncation() {
        let six = |lba, len| ReadWrite {
            size: CdbSize::Six,
            ..ReadWrite::new(lba, len)
        };
        assert_eq!(Command::Read(six(1 << 21, 1)).build().len(), 10);
        assert_eq!(Command::Read(six(0, 0)).build().len(), 10);
        assert_eq!(Command::Read(six(0, 0x1_0000)).build().len(), 12);
        assert_eq!(Command::Read(six(1 << 32, 1)).build().len(), 16);
        let ws = WriteSame {
            lba: 0,
            number_of_blocks: 1,
            unmap: true,
            anchor: false,
            ndob: true,
            size: CdbSize::Ten,
        };
        assert_eq!(Command::WriteSame(ws).build().operation_code(), Op::WRITE_SAME_16);
        let ws12 = WriteSame {
            ndob: false,
            size: CdbSize::Twelve,
            ..ws
        };
        assert_eq!(Command::WriteSame(ws12).build().len(), 10);
        let v6 = Verify {
            lba: 1,
            verification_length: 1,
            dpo: false,
            bytchk: ByteCheck::MediumOnly,
            size: CdbSize::Six,
        };
        assert_eq!(Command::Verify(v6).build().operation_code(), Op::VERIFY_10);
    }
}

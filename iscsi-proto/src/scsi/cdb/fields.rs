//! Field decoding shared by the block commands' CDB sizes, and the
//! field checks SPC-4/SBC-3 make a device server apply.
//!
//! Every function takes the CDB as a zero-padded 16-byte array (see
//! `parse.rs`), so each access is a constant index that cannot go out of
//! bounds.

use super::{ByteCheck, CdbError, CdbSize, PageControl, ReadWrite, SyncRange, Verify, WriteAndVerify, WriteSame};

pub(super) type C = [u8; 16];

pub(super) fn be16(c: &C, at: usize) -> u16 {
    u16::from_be_bytes([c[at], c[at + 1]])
}

pub(super) fn be32(c: &C, at: usize) -> u32 {
    u32::from_be_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]])
}

pub(super) fn be64(c: &C, at: usize) -> u64 {
    (u64::from(be32(c, at)) << 32) | u64::from(be32(c, at + 4))
}

pub(super) fn bit(c: &C, byte: usize, bit: u8) -> bool {
    c[byte] & (1 << bit) != 0
}

pub(super) fn invalid(byte: u16, bit: Option<u8>) -> CdbError {
    CdbError::InvalidField { byte, bit }
}

/// RDPROTECT / WRPROTECT / VRPROTECT (byte 1, bits 7-5). This crate models
/// logical units formatted without protection information, and SBC-3 has
/// such a device server reject a non-zero value: the command "shall be
/// terminated with CHECK CONDITION status with the sense key set to ILLEGAL
/// REQUEST and the additional sense code set to INVALID FIELD IN CDB".
pub(super) fn no_protection(c: &C) -> Result<(), CdbError> {
    if c[1] >> 5 != 0 {
        return Err(invalid(1, Some(7)));
    }
    Ok(())
}

/// LBA and length positions shared by the 10/12/16-byte block commands.
pub(super) fn lba_len(c: &C, size: CdbSize) -> (u64, u32) {
    match size {
        CdbSize::Six => (
            u64::from(u32::from_be_bytes([0, c[1] & 0x1F, c[2], c[3]])),
            u32::from(c[4]),
        ),
        CdbSize::Ten => (u64::from(be32(c, 2)), u32::from(be16(c, 7))),
        CdbSize::Twelve => (u64::from(be32(c, 2)), be32(c, 6)),
        CdbSize::Sixteen => (be64(c, 2), be32(c, 10)),
    }
}

pub(super) fn read_write(c: &C, size: CdbSize) -> Result<ReadWrite, CdbError> {
    let (lba, len) = lba_len(c, size);
    if size == CdbSize::Six {
        // READ (6)/WRITE (6) have no DPO/FUA/PROTECT bits.
        return Ok(ReadWrite {
            lba,
            transfer_length: if len == 0 { 256 } else { len },
            dpo: false,
            fua: false,
            size,
        });
    }
    no_protection(c)?;
    Ok(ReadWrite {
        lba,
        transfer_length: len,
        dpo: bit(c, 1, 4),
        fua: bit(c, 1, 3),
        size,
    })
}

pub(super) fn verify(c: &C, size: CdbSize) -> Result<Verify, CdbError> {
    no_protection(c)?;
    let bytchk = match (c[1] >> 1) & 0x03 {
        0 => ByteCheck::MediumOnly,
        1 => ByteCheck::Compare,
        3 => ByteCheck::CompareSingleBlock,
        _ => return Err(invalid(1, Some(2))),
    };
    let (lba, verification_length) = lba_len(c, size);
    Ok(Verify {
        lba,
        verification_length,
        dpo: bit(c, 1, 4),
        bytchk,
        size,
    })
}

pub(super) fn write_and_verify(c: &C, size: CdbSize) -> Result<WriteAndVerify, CdbError> {
    no_protection(c)?;
    let bytchk = match (c[1] >> 1) & 0x03 {
        0 => false,
        1 => true,
        _ => return Err(invalid(1, Some(2))),
    };
    let (lba, transfer_length) = lba_len(c, size);
    Ok(WriteAndVerify {
        lba,
        transfer_length,
        dpo: bit(c, 1, 4),
        bytchk,
        size,
    })
}

pub(super) fn write_same(c: &C, size: CdbSize) -> Result<WriteSame, CdbError> {
    no_protection(c)?;
    let anchor = bit(c, 1, 4);
    let unmap = bit(c, 1, 3);
    // SBC-3 (WRITE SAME, ANCHOR and UNMAP bit relationships): UNMAP 0 with
    // ANCHOR 1 is "Error": "The device server shall terminate the command
    // with CHECK CONDITION status with the sense key set to ILLEGAL REQUEST
    // and the additional sense code set to INVALID FIELD IN CDB."
    if anchor && !unmap {
        return Err(invalid(1, Some(4)));
    }
    let (lba, number_of_blocks) = lba_len(c, size);
    Ok(WriteSame {
        lba,
        number_of_blocks,
        unmap,
        anchor,
        ndob: size == CdbSize::Sixteen && bit(c, 1, 0),
        size,
    })
}

pub(super) fn sync_range(c: &C, size: CdbSize) -> SyncRange {
    let (lba, number_of_blocks) = lba_len(c, size);
    SyncRange {
        lba,
        number_of_blocks,
        immed: bit(c, 1, 1),
        size,
    }
}

pub(super) fn page_control(v: u8) -> PageControl {
    match v & 0x03 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => PageControl::Saved,
    }
}

/// SBC-3 (READ CAPACITY): "If the PMI bit is set to zero and the LOGICAL
/// BLOCK ADDRESS field is not set to zero, then the device server shall
/// terminate the command with CHECK CONDITION status with the sense key set
/// to ILLEGAL REQUEST and the additional sense code set to INVALID FIELD IN
/// CDB." With PMI set the LBA is accepted and ignored: SBC-4 made PMI
/// obsolete and targets report the last LBA regardless.
pub(super) fn check_pmi(pmi: bool, lba: u64) -> Result<(), CdbError> {
    if !pmi && lba != 0 {
        return Err(invalid(2, None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::*;

    fn p(b: &[u8]) -> Result<Command, CdbError> {
        Command::parse(b)
    }

    #[test]
    fn read_6_zero_means_256_and_21_bit_lba() {
        let c = p(&[0x08, 0xFF, 0x12, 0x34, 0x00, 0x00]).unwrap();
        assert_eq!(
            c,
            Command::Read(ReadWrite {
                lba: 0x1F_1234,
                transfer_length: 256,
                dpo: false,
                fua: false,
                size: CdbSize::Six
            })
        );
    }

    #[test]
    fn read_10_fields() {
        let c = p(&[0x28, 0x18, 0, 0, 0x10, 0x00, 0x00, 0x00, 0x08, 0x00]).unwrap();
        assert_eq!(
            c,
            Command::Read(ReadWrite {
                lba: 0x1000,
                transfer_length: 8,
                dpo: true,
                fua: true,
                size: CdbSize::Ten
            })
        );
    }

    #[test]
    fn write_16_in_iscsi_padding() {
        let mut b = [0u8; 20];
        b[..16].copy_from_slice(&[0x8A, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 0, 0x00, 0x00]);
        b[16..].fill(0xFF); // bytes past the CDB are not looked at
        let Command::Write(w) = p(&b).unwrap() else { panic!() };
        assert_eq!((w.lba, w.transfer_length, w.fua), (0x0102030405060708, 256, true));
    }

    #[test]
    fn rejects_protection_information() {
        let e = p(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!(e, CdbError::InvalidField { byte: 1, bit: Some(7) });
    }

    #[test]
    fn bytchk_reserved_values() {
        assert_eq!(
            p(&[0x2F, 0x04, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(2) })
        );
        let Command::Verify(v) = p(&[0x2F, 0x06, 0, 0, 0, 9, 0, 0, 1, 0]).unwrap() else {
            panic!()
        };
        assert_eq!((v.lba, v.bytchk), (9, ByteCheck::CompareSingleBlock));
        assert!(p(&[0x2E, 0x06, 0, 0, 0, 0, 0, 0, 1, 0]).is_err());
    }

    #[test]
    fn write_same_anchor_requires_unmap() {
        assert_eq!(
            p(&[0x41, 0x10, 0, 0, 0, 0, 0, 0, 1, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(4) })
        );
        let mut ws16 = [0u8; 16];
        ws16[0] = 0x93;
        ws16[1] = 0x19; // ANCHOR | UNMAP | NDOB
        let Command::WriteSame(w) = p(&ws16).unwrap() else {
            panic!()
        };
        assert!(w.anchor && w.unmap && w.ndob && w.number_of_blocks == 0);
    }
}

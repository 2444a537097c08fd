//! SCSI Command (RFC 7143 section 11.3), with its additional header segments:
//! the extended CDB (11.2.1.3, type 1) and the expected bidirectional read
//! data length (type 2).

use super::field::*;
use super::wire::{lun_at, put_lun, put_u32, u32_at};
use super::{Bhs, Opcode, PduError};
use crate::{CmdSn, Itt, Lun, StatSn};
use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, Bytes};

mod field {
    use super::super::field::Field;
    pub(super) const READ_BIT: u8 = 0x40;
    pub(super) const WRITE_BIT: u8 = 0x20;
    pub(super) const ATTR_MASK: u8 = 0x07;
    pub(super) const EXPECTED_LEN: Field = 20..24;
    pub(super) const CMD_SN: Field = 24..28;
    pub(super) const EXP_STAT_SN: Field = 28..32;
    pub(super) const CDB: Field = 32..48;

    /// AHS layout: 2-byte AHSLength, 1-byte AHSType, then AHS-specific bytes.
    pub(super) const AHS_TYPE_EXTENDED_CDB: u8 = 1;
    pub(super) const AHS_TYPE_BIDI_READ_LEN: u8 = 2;
    /// The bidirectional read length AHS has a fixed AHSLength of 5.
    pub(super) const BIDI_AHS_LENGTH: u16 = 5;
}
use self::field::*;

/// The longest CDB SPC-4 defines (variable-length CDBs) is 260 bytes, so the
/// extended CDB AHS carries at most 244 of them.
pub const MAX_EXTENDED_CDB: usize = 260 - 16;

open_enum! {
    /// SAM task attribute (RFC 7143 11.3.1 "ATTR").
    pub struct TaskAttribute(u8) {
        UNTAGGED = 0,
        SIMPLE = 1,
        ORDERED = 2,
        HEAD_OF_QUEUE = 3,
        ACA = 4,
    }
}

/// A SCSI Command PDU header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows.
    pub final_: bool,
    /// R: the command reads data from the target.
    pub read: bool,
    /// W: the command writes data to the target.
    pub write: bool,
    pub attr: TaskAttribute,
    pub lun: Lun,
    pub itt: Itt,
    /// Bytes the initiator expects to transfer (for bidirectional commands,
    /// the write part).
    pub expected_len: u32,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    /// The first 16 bytes of the CDB (zero-padded when shorter).
    pub cdb: [u8; 16],
    /// CDB bytes past the 16th, from an extended CDB AHS.
    pub ext_cdb: Bytes,
    /// From the bidirectional read length AHS.
    pub bidi_read_len: Option<u32>,
}

impl ScsiCommand {
    pub(crate) fn parse(bhs: &Bhs, ahs: &[u8]) -> Result<Self, PduError> {
        let flags = bhs[FLAGS];
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&bhs[CDB]);
        let mut cmd = Self {
            immediate: bhs[OPCODE] & IMMEDIATE_BIT != 0,
            final_: flags & FINAL_BIT != 0,
            read: flags & READ_BIT != 0,
            write: flags & WRITE_BIT != 0,
            attr: TaskAttribute(flags & ATTR_MASK),
            lun: lun_at(bhs),
            itt: Itt(u32_at(bhs, ITT)),
            expected_len: u32_at(bhs, EXPECTED_LEN),
            cmd_sn: CmdSn(u32_at(bhs, CMD_SN)),
            exp_stat_sn: StatSn(u32_at(bhs, EXP_STAT_SN)),
            cdb,
            ext_cdb: Bytes::new(),
            bidi_read_len: None,
        };
        cmd.parse_ahs(ahs)?;
        Ok(cmd)
    }

    fn parse_ahs(&mut self, mut ahs: &[u8]) -> Result<(), PduError> {
        let bad = PduError::InvalidAhs(Opcode::SCSI_COMMAND);
        while !ahs.is_empty() {
            let [l0, l1, kind, ..] = *ahs else { return Err(bad) };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            let total = (3 + len).next_multiple_of(4);
            if len == 0 || total > ahs.len() {
                return Err(bad);
            }
            // AHS-specific bytes after the reserved byte at offset 3.
            let body = &ahs[4..3 + len];
            match kind {
                AHS_TYPE_EXTENDED_CDB if self.ext_cdb.is_empty() => {
                    if body.is_empty() || body.len() > MAX_EXTENDED_CDB {
                        return Err(bad);
                    }
                    self.ext_cdb = Bytes::copy_from_slice(body);
                }
                AHS_TYPE_BIDI_READ_LEN if self.bidi_read_len.is_none() => {
                    if len != usize::from(BIDI_AHS_LENGTH) {
                        return Err(bad);
                    }
                    self.bidi_read_len = Some(BigEndian::read_u32(body));
                }
                _ => return Err(bad),
            }
            ahs = &ahs[total..];
        }
        Ok(())
    }

    pub(crate) fn emit(&self, bhs: &mut Bhs) {
        bhs[2..4].fill(0); // reserved
        bhs[OPCODE] = Opcode::SCSI_COMMAND.0 | if self.immediate { IMMEDIATE_BIT } else { 0 };
        bhs[FLAGS] = (if self.final_ { FINAL_BIT } else { 0 })
            | (if self.read { READ_BIT } else { 0 })
            | (if self.write { WRITE_BIT } else { 0 })
            | (self.attr.0 & ATTR_MASK);
        put_lun(bhs, self.lun);
        put_u32(bhs, ITT, self.itt.0);
        put_u32(bhs, EXPECTED_LEN, self.expected_len);
        put_u32(bhs, CMD_SN, self.cmd_sn.0);
        put_u32(bhs, EXP_STAT_SN, self.exp_stat_sn.0);
        bhs[CDB].copy_from_slice(&self.cdb);
    }

    fn ext_cdb_emitted(&self) -> &[u8] {
        &self.ext_cdb[..self.ext_cdb.len().min(MAX_EXTENDED_CDB)]
    }

    pub(crate) fn ahs_len(&self) -> usize {
        let ext = self.ext_cdb_emitted().len();
        let ext_len = if ext == 0 { 0 } else { (4 + ext).next_multiple_of(4) };
        ext_len + if self.bidi_read_len.is_some() { 8 } else { 0 }
    }

    pub(crate) fn emit_ahs(&self, out: &mut impl BufMut) {
        let ext = self.ext_cdb_emitted();
        if !ext.is_empty() {
            // AHSLength counts the reserved byte and the CDB bytes (11.2.1.3).
            out.put_u16(u16::try_from(ext.len() + 1).unwrap_or(u16::MAX));
            out.put_u8(AHS_TYPE_EXTENDED_CDB);
            out.put_u8(0);
            out.put_slice(ext);
            out.put_bytes(0, (4 + ext.len()).next_multiple_of(4) - 4 - ext.len());
        }
        if let Some(len) = self.bidi_read_len {
            out.put_u16(BIDI_AHS_LENGTH);
            out.put_u8(AHS_TYPE_BIDI_READ_LEN);
            out.put_u8(0);
            out.put_u32(len);
        }
    }

    /// The whole CDB: the 16 bytes in the BHS followed by any extension.
    #[must_use]
    pub fn full_cdb(&self) -> Vec<u8> {
        let mut cdb = self.cdb.to_vec();
        cdb.extend_from_slice(self.ext_cdb_emitted());
        cdb
    }

    /// Put `cdb` into the header, spilling past 16 bytes into the extended
    /// CDB AHS; shorter CDBs are zero-padded.
    pub fn set_cdb(&mut self, cdb: &[u8]) {
        let head = cdb.len().min(16);
        self.cdb = [0; 16];
        self.cdb[..head].copy_from_slice(&cdb[..head]);
        self.ext_cdb = Bytes::copy_from_slice(&cdb[head..]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_emits, bhs};
    use super::super::{BHS_LEN, Header};
    use super::*;

    fn write10() -> ScsiCommand {
        let mut cmd = ScsiCommand {
            immediate: false,
            final_: false,
            read: false,
            write: true,
            attr: TaskAttribute::SIMPLE,
            lun: Lun::from_index(1),
            itt: Itt(0x11),
            expected_len: 0x2_0000,
            cmd_sn: CmdSn(0x22),
            exp_stat_sn: StatSn(0x33),
            cdb: [0; 16],
            ext_cdb: Bytes::new(),
            bidi_read_len: None,
        };
        cmd.set_cdb(&[0x2a, 0, 0, 0, 0, 8, 0, 1, 0, 0]);
        cmd
    }

    #[test]
    fn bytes() {
        let expected = bhs(&[
            (0, &[0x01, 0x21, 0, 0, 0, 0, 0x20, 0]),
            (8, &[0, 1]),
            (16, &[0, 0, 0, 0x11, 0, 2, 0, 0, 0, 0, 0, 0x22, 0, 0, 0, 0x33]),
            (32, &[0x2a, 0, 0, 0, 0, 8, 0, 1, 0, 0]),
        ]);
        assert_emits(write10(), 0x2000, &expected);
    }

    #[test]
    fn extended_cdb_and_bidi_ahs_round_trip() {
        let mut cmd = write10();
        cmd.read = true;
        cmd.bidi_read_len = Some(4096);
        let long: Vec<u8> = (0u8..32).collect();
        cmd.set_cdb(&long);
        let header = Header::from(cmd.clone());
        assert_eq!(header.ahs_len(), 20 + 8);
        let mut ahs = Vec::new();
        header.emit_ahs(&mut ahs);
        assert_eq!(&ahs[..4], &[0, 17, 1, 0]);
        assert_eq!(&ahs[20..28], &[0, 5, 2, 0, 0, 0, 0x10, 0]);
        let mut b = [0u8; BHS_LEN];
        header.emit(&mut b, 0);
        assert_eq!(b[4], 7, "TotalAHSLength in words");
        let parsed = Header::parse(&b, &ahs).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(cmd.full_cdb(), long);
    }

    #[test]
    fn malformed_ahs_is_rejected() {
        let b = bhs(&[(0, &[0x01, 0xc0])]);
        for ahs in [
            &[0u8, 0, 1, 0][..],
            &[0, 9, 1, 0, 1, 2, 3, 4],
            &[0, 4, 2, 0, 0, 0, 0, 0],
            &[0, 1],
        ] {
            assert_eq!(
                Header::parse(&b, ahs),
                Err(PduError::InvalidAhs(Opcode::SCSI_COMMAND)),
                "{ahs:?}"
            );
        }
    }
}

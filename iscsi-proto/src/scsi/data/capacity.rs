//! READ CAPACITY (10)/(16) parameter data and GET LBA STATUS data (SBC-3).

use super::{DataError, need};
use crate::scsi::be;

/// READ CAPACITY (10) data: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadCapacity10Data {
    /// RETURNED LOGICAL BLOCK ADDRESS: the last LBA, or FFFF_FFFFh when it
    /// does not fit (see [`Self::from_capacity`]).
    pub returned_lba: u32,
    pub block_length: u32,
}

impl ReadCapacity10Data {
    pub const LEN: usize = 8;

    /// From a capacity in blocks. SBC-3: "If the number of logical blocks
    /// exceeds the maximum value that is able to be specified in the
    /// RETURNED LOGICAL BLOCK ADDRESS field, the device server shall set the
    /// RETURNED LOGICAL BLOCK ADDRESS field to FFFF_FFFFh" — which tells
    /// the initiator to use READ CAPACITY (16).
    pub fn from_capacity(blocks: u64, block_length: u32) -> Self {
        let last = blocks.saturating_sub(1);
        Self {
            returned_lba: u32::try_from(last).unwrap_or(u32::MAX),
            block_length,
        }
    }

    /// Whether the initiator must issue READ CAPACITY (16) for the size.
    pub const fn needs_read_capacity_16(&self) -> bool {
        self.returned_lba == u32::MAX
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.returned_lba.to_be_bytes());
        b[4..].copy_from_slice(&self.block_length.to_be_bytes());
        b
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, Self::LEN)?;
        Ok(Self {
            returned_lba: be::u32_at(buf, 0).unwrap_or(0),
            block_length: be::u32_at(buf, 4).unwrap_or(0),
        })
    }
}

/// READ CAPACITY (16) data: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadCapacity16Data {
    /// The last LBA (capacity - 1).
    pub returned_lba: u64,
    pub block_length: u32,
    /// P_TYPE (3 bits) and PROT_EN: protection information format.
    pub p_type: u8,
    pub prot_en: bool,
    /// P_I_EXPONENT (4 bits).
    pub p_i_exponent: u8,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (4 bits): 3 for 512-byte
    /// logical blocks on 4096-byte physical blocks.
    pub logical_blocks_per_physical_block_exponent: u8,
    /// LBPME: logical block provisioning management (UNMAP etc.) enabled.
    pub lbpme: bool,
    /// LBPRZ: unmapped blocks read as zeros.
    pub lbprz: bool,
    /// LOWEST ALIGNED LOGICAL BLOCK ADDRESS (14 bits).
    pub lowest_aligned_lba: u16,
}

impl ReadCapacity16Data {
    pub const LEN: usize = 32;

    /// From a capacity in blocks; other fields zero.
    pub fn from_capacity(blocks: u64, block_length: u32) -> Self {
        Self {
            returned_lba: blocks.saturating_sub(1),
            block_length,
            ..Self::default()
        }
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.returned_lba.to_be_bytes());
        b[8..12].copy_from_slice(&self.block_length.to_be_bytes());
        b[12] = ((self.p_type & 0x07) << 1) | u8::from(self.prot_en);
        b[13] = ((self.p_i_exponent & 0x0F) << 4) | (self.logical_blocks_per_physical_block_exponent & 0x0F);
        let [hi, lo] = (self.lowest_aligned_lba & 0x3FFF).to_be_bytes();
        b[14] = (u8::from(self.lbpme) << 7) | (u8::from(self.lbprz) << 6) | hi;
        b[15] = lo;
        b
    }

    /// Parses the data; SBC-2 devices may send only the first 12 bytes, so
    /// that is the minimum and later fields default to 0.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 12)?;
        let byte = |at| be::u8_at(buf, at).unwrap_or(0);
        Ok(Self {
            returned_lba: be::u64_at(buf, 0).unwrap_or(0),
            block_length: be::u32_at(buf, 8).unwrap_or(0),
            p_type: (byte(12) >> 1) & 0x07,
            prot_en: byte(12) & 1 != 0,
            p_i_exponent: byte(13) >> 4,
            logical_blocks_per_physical_block_exponent: byte(13) & 0x0F,
            lbpme: byte(14) & 0x80 != 0,
            lbprz: byte(14) & 0x40 != 0,
            lowest_aligned_lba: u16::from_be_bytes([byte(14) & 0x3F, byte(15)]),
        })
    }
}

/// One LBA status descriptor of GET LBA STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LbaStatusDescriptor {
    pub lba: u64,
    pub number_of_blocks: u32,
    /// PROVISIONING STATUS (4 bits), see the `LbaStatusList` constants.
    pub provisioning_status: u8,
}

/// GET LBA STATUS parameter data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LbaStatusList {
    pub descriptors: Vec<LbaStatusDescriptor>,
}

impl LbaStatusList {
    /// The extent is mapped.
    pub const MAPPED: u8 = 0;
    /// The extent is deallocated.
    pub const DEALLOCATED: u8 = 1;
    /// The extent is anchored.
    pub const ANCHORED: u8 = 2;

    /// PARAMETER DATA LENGTH (n-3) then 4 reserved bytes, then 16-byte
    /// descriptors.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 16 * self.descriptors.len());
        let len = be::clamp_u32(4 + 16 * self.descriptors.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for d in &self.descriptors {
            out.extend_from_slice(&d.lba.to_be_bytes());
            out.extend_from_slice(&d.number_of_blocks.to_be_bytes());
            out.extend_from_slice(&[d.provisioning_status & 0x0F, 0, 0, 0]);
        }
        out
    }

    /// Parses the complete descriptors present; a descriptor cut off by the
    /// allocation length is dropped.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 8)?;
        let len = usize::try_from(be::u32_at(buf, 0).unwrap_or(0)).unwrap_or(usize::MAX);
        let end = buf.len().min(len.saturating_add(4));
        let body = buf.get(8..end).unwrap_or(&[]);
        let descriptors = body
            .chunks_exact(16)
            .map(|d| LbaStatusDescriptor {
                lba: be::u64_at(d, 0).unwrap_or(0),
                number_of_blocks: be::u32_at(d, 8).unwrap_or(0),
                provisioning_status: be::u8_at(d, 12).unwrap_or(0) & 0x0F,
            })
            .collect();
        Ok(Self { descriptors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capacity_10() {
        let d = ReadCapacity10Data::from_capacity(0x1_0000, 512);
        assert_eq!(d.to_bytes(), [0, 0, 0xFF, 0xFF, 0, 0, 2, 0]);
        assert_eq!(ReadCapacity10Data::parse(&d.to_bytes()), Ok(d));
        assert!(!d.needs_read_capacity_16());
        // The last LBA fits exactly at 2^32 blocks minus one...
        let d = ReadCapacity10Data::from_capacity(0xFFFF_FFFF, 512);
        assert_eq!(d.returned_lba, 0xFFFF_FFFE);
        // ...and from 2^32 blocks on the answer is FFFF_FFFFh.
        let d = ReadCapacity10Data::from_capacity(1 << 32, 4096);
        assert!(d.needs_read_capacity_16());
        assert!(ReadCapacity10Data::parse(&[0; 7]).is_err());
    }

    #[test]
    fn read_capacity_16() {
        let d = ReadCapacity16Data {
            logical_blocks_per_physical_block_exponent: 3,
            lbpme: true,
            lbprz: true,
            lowest_aligned_lba: 0x0102,
            ..ReadCapacity16Data::from_capacity(1 << 33, 512)
        };
        let b = d.to_bytes();
        assert_eq!(
            &b[..16],
            &[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 2, 0, 0x00, 0x03, 0xC1, 0x02]
        );
        assert_eq!(&b[16..], &[0; 16]);
        assert_eq!(ReadCapacity16Data::parse(&b), Ok(d));
        let short = ReadCapacity16Data::parse(&b[..12]).unwrap();
        assert_eq!(short.block_length, 512);
        assert!(!short.lbpme);
    }

    #[test]
    fn lba_status() {
        let l = LbaStatusList {
            descriptors: vec![
                LbaStatusDescriptor {
                    lba: 0,
                    number_of_blocks: 8,
                    provisioning_status: LbaStatusList::MAPPED,
                },
                LbaStatusDescriptor {
                    lba: 8,
                    number_of_blocks: 0x100,
                    provisioning_status: LbaStatusList::DEALLOCATED,
                },
            ],
        };
        let b = l.to_bytes();
        assert_eq!(b.len(), 40);
        assert_eq!(&b[..8], &[0, 0, 0, 36, 0, 0, 0, 0]);
        assert_eq!(&b[24..40], &[0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(LbaStatusList::parse(&b), Ok(l.clone()));
        assert_eq!(LbaStatusList::parse(&b[..30]).unwrap().descriptors.len(), 1);
    }
}

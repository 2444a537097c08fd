//! SBC-3 VPD pages: Block Limits (B0h), Block Device Characteristics (B1h)
//! and Logical Block Provisioning (B2h). Initiators size their I/O and
//! decide whether to send UNMAP / WRITE SAME from these.

use super::{DataError, Peripheral, VpdPage, need};
use crate::scsi::be;

/// Block Limits (B0h). Zero in a limit field means "not reported / no
/// limit", as SBC-3 defines each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockLimits {
    /// WSNZ: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 is rejected.
    pub wsnz: bool,
    pub maximum_compare_and_write_length: u8,
    pub optimal_transfer_length_granularity: u16,
    pub maximum_transfer_length: u32,
    pub optimal_transfer_length: u32,
    pub maximum_prefetch_length: u32,
    pub maximum_unmap_lba_count: u32,
    pub maximum_unmap_block_descriptor_count: u32,
    pub optimal_unmap_granularity: u32,
    /// UNMAP GRANULARITY ALIGNMENT, present when UGAVALID is set (31 bits).
    pub unmap_granularity_alignment: Option<u32>,
    pub maximum_write_same_length: u64,
}

/// SBC-3's Block Limits PAGE LENGTH: 003Ch.
const B0_LEN: usize = 0x3C;

impl BlockLimits {
    pub const PAGE_CODE: u8 = 0xB0;

    pub fn to_bytes(&self, peripheral: Peripheral) -> Vec<u8> {
        let mut b = [0u8; B0_LEN];
        // Offsets below are page offsets minus the 4-byte header.
        b[0] = u8::from(self.wsnz);
        b[1] = self.maximum_compare_and_write_length;
        b[2..4].copy_from_slice(&self.optimal_transfer_length_granularity.to_be_bytes());
        b[4..8].copy_from_slice(&self.maximum_transfer_length.to_be_bytes());
        b[8..12].copy_from_slice(&self.optimal_transfer_length.to_be_bytes());
        b[12..16].copy_from_slice(&self.maximum_prefetch_length.to_be_bytes());
        b[16..20].copy_from_slice(&self.maximum_unmap_lba_count.to_be_bytes());
        b[20..24].copy_from_slice(&self.maximum_unmap_block_descriptor_count.to_be_bytes());
        b[24..28].copy_from_slice(&self.optimal_unmap_granularity.to_be_bytes());
        if let Some(a) = self.unmap_granularity_alignment {
            b[28..32].copy_from_slice(&((a & 0x7FFF_FFFF) | 0x8000_0000).to_be_bytes());
        }
        b[32..40].copy_from_slice(&self.maximum_write_same_length.to_be_bytes());
        VpdPage::emit(peripheral, Self::PAGE_CODE, &b)
    }

    /// Parses the page; fields past the received data read as 0 (SBC-2
    /// devices send a shorter page).
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        let p = VpdPage::parse(buf, Self::PAGE_CODE)?;
        let b = p.body;
        let u32_at = |at| be::u32_at(b, at).unwrap_or(0);
        let uga = u32_at(28);
        Ok(Self {
            wsnz: be::u8_at(b, 0).is_some_and(|v| v & 1 != 0),
            maximum_compare_and_write_length: be::u8_at(b, 1).unwrap_or(0),
            optimal_transfer_length_granularity: be::u16_at(b, 2).unwrap_or(0),
            maximum_transfer_length: u32_at(4),
            optimal_transfer_length: u32_at(8),
            maximum_prefetch_length: u32_at(12),
            maximum_unmap_lba_count: u32_at(16),
            maximum_unmap_block_descriptor_count: u32_at(20),
            optimal_unmap_granularity: u32_at(24),
            unmap_granularity_alignment: (uga & 0x8000_0000 != 0).then_some(uga & 0x7FFF_FFFF),
            maximum_write_same_length: be::u64_at(b, 32).unwrap_or(0),
        })
    }
}

/// Block Device Characteristics (B1h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockDeviceCharacteristics {
    /// MEDIUM ROTATION RATE: 0 not reported, 1 non-rotating (solid state),
    /// otherwise revolutions per minute.
    pub medium_rotation_rate: u16,
    /// NOMINAL FORM FACTOR (4 bits): 0 not reported, 2h 3.5", 3h 2.5", ...
    pub nominal_form_factor: u8,
}

impl BlockDeviceCharacteristics {
    pub const PAGE_CODE: u8 = 0xB1;
    /// MEDIUM ROTATION RATE of a non-rotating medium.
    pub const NON_ROTATING: u16 = 1;

    pub fn to_bytes(&self, peripheral: Peripheral) -> Vec<u8> {
        let mut b = [0u8; 0x3C];
        b[0..2].copy_from_slice(&self.medium_rotation_rate.to_be_bytes());
        b[3] = self.nominal_form_factor & 0x0F;
        VpdPage::emit(peripheral, Self::PAGE_CODE, &b)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        let p = VpdPage::parse(buf, Self::PAGE_CODE)?;
        need(p.body, 4)?;
        Ok(Self {
            medium_rotation_rate: be::u16_at(p.body, 0).unwrap_or(0),
            nominal_form_factor: be::u8_at(p.body, 3).unwrap_or(0) & 0x0F,
        })
    }
}

/// Logical Block Provisioning (B2h), without provisioning group
/// descriptors (DP = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LogicalBlockProvisioning {
    pub threshold_exponent: u8,
    /// UNMAP is supported.
    pub lbpu: bool,
    /// WRITE SAME (16) with UNMAP is supported.
    pub lbpws: bool,
    /// WRITE SAME (10) with UNMAP is supported.
    pub lbpws10: bool,
    /// Unmapped blocks read as zeros (SBC-3 LBPRZ bit; SBC-4's 3-bit field
    /// value 001b has the same encoding).
    pub lbprz: bool,
    /// ANC_SUP: the anchored state is supported.
    pub anc_sup: bool,
    /// PROVISIONING TYPE (3 bits), see the `PROVISIONING_*` constants.
    pub provisioning_type: u8,
}

impl LogicalBlockProvisioning {
    pub const PAGE_CODE: u8 = 0xB2;
    /// Fully provisioned, or provisioning type not reported.
    pub const PROVISIONING_FULL: u8 = 0;
    /// Resource provisioned.
    pub const PROVISIONING_RESOURCE: u8 = 1;
    /// Thin provisioned.
    pub const PROVISIONING_THIN: u8 = 2;

    pub fn to_bytes(&self, peripheral: Peripheral) -> Vec<u8> {
        let flags = (u8::from(self.lbpu) << 7)
            | (u8::from(self.lbpws) << 6)
            | (u8::from(self.lbpws10) << 5)
            | (u8::from(self.lbprz) << 2)
            | (u8::from(self.anc_sup) << 1);
        let b = [self.threshold_exponent, flags, self.provisioning_type & 0x07, 0];
        VpdPage::emit(peripheral, Self::PAGE_CODE, &b)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        let p = VpdPage::parse(buf, Self::PAGE_CODE)?;
        need(p.body, 3)?;
        let [te, f, pt] = be::array(p.body, 0).unwrap_or([0; 3]);
        Ok(Self {
            threshold_exponent: te,
            lbpu: f & 0x80 != 0,
            lbpws: f & 0x40 != 0,
            lbpws10: f & 0x20 != 0,
            lbprz: f & 0x04 != 0,
            anc_sup: f & 0x02 != 0,
            provisioning_type: pt & 0x07,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_limits_bytes() {
        let bl = BlockLimits {
            wsnz: true,
            maximum_compare_and_write_length: 1,
            optimal_transfer_length_granularity: 8,
            maximum_transfer_length: 0x800,
            optimal_transfer_length: 0x100,
            maximum_prefetch_length: 0,
            maximum_unmap_lba_count: 0x40_0000,
            maximum_unmap_block_descriptor_count: 64,
            optimal_unmap_granularity: 8,
            unmap_granularity_alignment: Some(0),
            maximum_write_same_length: 0x1_0000_0000,
        };
        let b = bl.to_bytes(Peripheral::DISK);
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..8], &[0x00, 0xB0, 0x00, 0x3C, 0x01, 0x01, 0x00, 0x08]);
        assert_eq!(&b[8..12], &[0, 0, 0x08, 0]);
        assert_eq!(&b[20..24], &[0, 0x40, 0, 0]);
        assert_eq!(&b[24..28], &[0, 0, 0, 64]);
        assert_eq!(&b[32..36], &[0x80, 0, 0, 0]);
        assert_eq!(&b[36..44], &[0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(BlockLimits::parse(&b), Ok(bl));
        // A short (SBC-2 length) page parses with later fields zero.
        let short = BlockLimits::parse(&[0, 0xB0, 0, 0x0C, 0, 0, 0, 1, 0, 0, 1, 0]).unwrap();
        assert_eq!(short.maximum_transfer_length, 256);
        assert_eq!(short.maximum_unmap_lba_count, 0);
    }

    #[test]
    fn characteristics_bytes() {
        let c = BlockDeviceCharacteristics {
            medium_rotation_rate: BlockDeviceCharacteristics::NON_ROTATING,
            nominal_form_factor: 3,
        };
        let b = c.to_bytes(Peripheral::DISK);
        assert_eq!(b.len(), 64);
        assert_eq!(&b[..8], &[0, 0xB1, 0, 0x3C, 0, 1, 0, 3]);
        assert_eq!(BlockDeviceCharacteristics::parse(&b), Ok(c));
    }

    #[test]
    fn provisioning_bytes() {
        let p = LogicalBlockProvisioning {
            lbpu: true,
            lbpws: true,
            lbpws10: true,
            lbprz: true,
            provisioning_type: LogicalBlockProvisioning::PROVISIONING_THIN,
            ..Default::default()
        };
        let b = p.to_bytes(Peripheral::DISK);
        assert_eq!(b, [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        assert_eq!(LogicalBlockProvisioning::parse(&b), Ok(p));
        assert!(LogicalBlockProvisioning::parse(&b[..6]).is_err());
    }
}

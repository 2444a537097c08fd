//! The UNMAP parameter list (SBC-3): the Data-Out buffer of UNMAP.
//!
//! Target side, this is untrusted input: [`UnmapParameterList::parse`]
//! applies the length rules and [`UnmapParameterList::check`] the Block
//! Limits and capacity, both returning the sense SBC-3 names.

use super::ParameterListError;
use crate::scsi::{be, sense::Sense};

/// One UNMAP block descriptor: an extent to deallocate or anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnmapBlockDescriptor {
    pub lba: u64,
    /// SBC-3: "If the NUMBER OF LOGICAL BLOCKS is set to zero, then no LBAs
    /// shall be unmapped for this UNMAP block descriptor. This condition
    /// shall not be considered an error."
    pub number_of_blocks: u32,
}

/// The target's advertised UNMAP limits (Block Limits VPD page);
/// FFFF_FFFFh means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnmapLimits {
    pub maximum_unmap_lba_count: u32,
    pub maximum_unmap_block_descriptor_count: u32,
}

/// A decoded UNMAP parameter list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UnmapParameterList {
    pub descriptors: Vec<UnmapBlockDescriptor>,
}

const HEADER: usize = 8;
const DESCRIPTOR: usize = 16;

impl UnmapParameterList {
    /// The list an initiator sends: UNMAP DATA LENGTH (n-1), UNMAP BLOCK
    /// DESCRIPTOR DATA LENGTH (n-7), 4 reserved bytes, descriptors. Its
    /// length is the CDB's PARAMETER LIST LENGTH (descriptors beyond what a
    /// 16-bit length can carry, 4095, are not sent).
    pub fn to_bytes(&self) -> Vec<u8> {
        let max = (usize::from(u16::MAX) - HEADER) / DESCRIPTOR;
        let n = self.descriptors.len().min(max);
        let mut out = Vec::with_capacity(HEADER + DESCRIPTOR * n);
        out.extend_from_slice(&be::clamp_u16(HEADER - 2 + DESCRIPTOR * n).to_be_bytes());
        out.extend_from_slice(&be::clamp_u16(DESCRIPTOR * n).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for d in self.descriptors.iter().take(n) {
            out.extend_from_slice(&d.lba.to_be_bytes());
            out.extend_from_slice(&d.number_of_blocks.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        out
    }

    /// Decodes the Data-Out buffer of an UNMAP whose CDB had
    /// `parameter_list_length`.
    ///
    /// - SBC-3: "If the PARAMETER LIST LENGTH field is greater than zero and
    ///   less than 0008h (i.e., eight), then the device server shall
    ///   terminate the command with CHECK CONDITION status with the sense
    ///   key set to ILLEGAL REQUEST and the additional sense code set to
    ///   PARAMETER LIST LENGTH ERROR." Fewer than 8 bytes actually received
    ///   is treated the same way.
    /// - A length of 0 sends no data and unmaps nothing.
    /// - SBC-3: "If the UNMAP BLOCK DESCRIPTOR DATA LENGTH is not a multiple
    ///   of 16, then the last UNMAP block descriptor is incomplete and shall
    ///   be ignored." Descriptors cut off by the parameter list length are
    ///   likewise ignored (not an error, per the T10 reflector discussion of
    ///   February 2015).
    /// - An UNMAP DATA LENGTH too small to hold the block descriptor data
    ///   length it announces makes the list ambiguous; it is rejected as
    ///   INVALID FIELD IN PARAMETER LIST at byte 2 rather than guessing
    ///   which extents the initiator meant.
    pub fn parse(data: &[u8], parameter_list_length: u16) -> Result<Self, ParameterListError> {
        let pll = usize::from(parameter_list_length);
        if pll == 0 {
            return Ok(Self::default());
        }
        let data = data.get(..pll).unwrap_or(data);
        let (Some(data_len), Some(bd_len)) = (be::u16_at(data, 0), be::u16_at(data, 2)) else {
            return Err(ParameterListError::LengthError);
        };
        if pll < HEADER || data.len() < HEADER {
            return Err(ParameterListError::LengthError);
        }
        if usize::from(data_len) < usize::from(bd_len) + (HEADER - 2) {
            return Err(ParameterListError::InvalidField { byte: 2, bit: None });
        }
        let avail = usize::from(bd_len).min(data.len() - HEADER);
        let descriptors = data
            .get(HEADER..HEADER + avail)
            .unwrap_or(&[])
            .chunks_exact(DESCRIPTOR)
            .map(|d| UnmapBlockDescriptor {
                lba: be::u64_at(d, 0).unwrap_or(0),
                number_of_blocks: be::u32_at(d, 8).unwrap_or(0),
            })
            .collect();
        Ok(Self { descriptors })
    }

    /// Applies the Block Limits and the capacity (in blocks). SBC-3: "If the
    /// total number of logical blocks specified in the UNMAP block
    /// descriptor data exceeds the value indicated in the MAXIMUM UNMAP LBA
    /// COUNT field ... or if the number of UNMAP block descriptors exceeds
    /// the value of the MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT field ... then
    /// the device server shall terminate the command with CHECK CONDITION
    /// status with the sense key set to ILLEGAL REQUEST and the additional
    /// sense code set to INVALID FIELD IN PARAMETER LIST"; an extent past
    /// the capacity is LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub fn check(&self, limits: &UnmapLimits, capacity: u64) -> Result<(), Sense> {
        let unlimited = u32::MAX;
        let max_descriptors = limits.maximum_unmap_block_descriptor_count;
        if max_descriptors != unlimited
            && self.descriptors.len() > usize::try_from(max_descriptors).unwrap_or(usize::MAX)
        {
            return Err(Sense::invalid_field_in_parameter_list(2, None));
        }
        let mut total: u64 = 0;
        for (i, d) in self.descriptors.iter().enumerate() {
            let in_range = d
                .lba
                .checked_add(u64::from(d.number_of_blocks))
                .is_some_and(|end| end <= capacity);
            if !in_range {
                return Err(Sense::lba_out_of_range());
            }
            total = total.saturating_add(u64::from(d.number_of_blocks));
            if limits.maximum_unmap_lba_count != unlimited && total > u64::from(limits.maximum_unmap_lba_count) {
                let byte = be::clamp_u16(HEADER + DESCRIPTOR * i + 8);
                return Err(Sense::invalid_field_in_parameter_list(byte, None));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::AdditionalSense;

    fn list() -> UnmapParameterList {
        UnmapParameterList {
            descriptors: vec![
                UnmapBlockDescriptor {
                    lba: 0x1234_5678,
                    number_of_blocks: 1,
                },
                UnmapBlockDescriptor {
                    lba: 0x5A_5A5A_5A5A,
                    number_of_blocks: 0,
                },
            ],
        }
    }

    #[test]
    fn bytes_round_trip() {
        let b = list().to_bytes();
        assert_eq!(b.len(), 40);
        assert_eq!(&b[..8], &[0, 38, 0, 32, 0, 0, 0, 0]);
        assert_eq!(&b[8..24], &[0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(UnmapParameterList::parse(&b, 40), Ok(list()));
    }

    #[test]
    fn length_rules() {
        let b = list().to_bytes();
        assert_eq!(UnmapParameterList::parse(&b, 0), Ok(UnmapParameterList::default()));
        assert_eq!(UnmapParameterList::parse(&b, 7), Err(ParameterListError::LengthError));
        assert_eq!(
            UnmapParameterList::parse(&b[..5], 40),
            Err(ParameterListError::LengthError)
        );
        // Cut by the parameter list length: the complete descriptor stays.
        assert_eq!(UnmapParameterList::parse(&b, 30).unwrap().descriptors.len(), 1);
        // Descriptor data length not a multiple of 16: last one ignored.
        let mut odd = b.clone();
        odd[3] = 20;
        assert_eq!(UnmapParameterList::parse(&odd, 40).unwrap().descriptors.len(), 1);
        // UNMAP DATA LENGTH smaller than the descriptors it announces.
        let mut bad = b;
        bad[1] = 10;
        assert_eq!(
            UnmapParameterList::parse(&bad, 40),
            Err(ParameterListError::InvalidField { byte: 2, bit: None })
        );
    }

    #[test]
    fn limits_and_capacity() {
        let l = list();
        let lim = UnmapLimits {
            maximum_unmap_lba_count: u32::MAX,
            maximum_unmap_block_descriptor_count: u32::MAX,
        };
        assert_eq!(l.check(&lim, 0x100_0000_0000), Ok(()));
        let e = l.check(&lim, 0x1000_0000).unwrap_err();
        assert_eq!(e.additional_sense, AdditionalSense::LBA_OUT_OF_RANGE);
        let e = l
            .check(
                &UnmapLimits {
                    maximum_unmap_block_descriptor_count: 1,
                    ..lim
                },
                u64::MAX,
            )
            .unwrap_err();
        assert_eq!(e.additional_sense, AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST);
        let e = l
            .check(
                &UnmapLimits {
                    maximum_unmap_lba_count: 0,
                    ..lim
                },
                u64::MAX,
            )
            .unwrap_err();
        assert_eq!(e.field_pointer.unwrap().byte, 16);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                              pll in proptest::prelude::any::<u16>()) {
            if let Ok(l) = UnmapParameterList::parse(&data, pll) {
                let lim = UnmapLimits { maximum_unmap_lba_count: 100, maximum_unmap_block_descriptor_count: 2 };
                let _ = l.check(&lim, 1000);
            }
        }
    }
}

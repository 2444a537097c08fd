//! Parameter and response data: what travels in Data-In and Data-Out for
//! the commands in [`crate::scsi::cdb`].
//!
//! Each type both builds (target side) and parses (initiator side) its
//! format. Builders return the *whole* data; the one place it is cut to the
//! initiator's allocation length is [`truncate_to_allocation_length`], so
//! length fields inside always describe the full data, as SPC-4 requires.
//!
//! Parsers are tolerant where SPC-4 says data may be truncated (a short
//! allocation length) and strict where a field would otherwise be read out
//! of bounds.

mod block_vpd;
mod capacity;
mod inquiry;
mod luns;
mod mode;
mod mode_pages;
mod opcode_support;
mod opcodes;
mod reservations;
mod unmap;
mod vpd;

pub use block_vpd::{BlockDeviceCharacteristics, BlockLimits, LogicalBlockProvisioning};
pub use capacity::{LbaStatusDescriptor, LbaStatusList, ReadCapacity10Data, ReadCapacity16Data};
pub use inquiry::{Peripheral, PeripheralDeviceType, StandardInquiry, VERSION_SPC4};
pub use luns::ReportLunsData;
pub use mode::{BlockDescriptor, ModePage, ModeParameters, ModeSelectList, select_mode_pages};
pub use mode_pages::{CachingPage, ControlPage};
pub use opcode_support::{report_supported_operation_codes, usage_data};
pub use opcodes::{CommandDescriptor, CommandTimeouts, OneCommandData, SupportedOperationCodes};
pub use reservations::{
    FullStatusDescriptor, PrOutParameterList, ReadFullStatusData, ReadKeysData, ReadReservationData,
    ReportCapabilitiesData, ReservationDescriptor, iscsi_transport_id,
};
pub use unmap::{UnmapBlockDescriptor, UnmapLimits, UnmapParameterList};
pub use vpd::{
    Association, CodeSet, Designator, DesignatorType, DeviceIdentification, PROTOCOL_ISCSI, SupportedVpdPages,
    UnitSerialNumber, VpdPage, vpd_page_code,
};

use crate::scsi::sense::Sense;

/// Cuts response data to the allocation length of the CDB that asked for
/// it. SPC-4 4.2.5.6: "The device server shall terminate transfers to the
/// Data-In Buffer when the number of bytes or blocks specified by the
/// ALLOCATION LENGTH field have been transferred or when all available data
/// have been transferred, whichever is less." Length fields inside the data
/// are left describing the full data so the initiator can ask again with a
/// larger allocation.
pub fn truncate_to_allocation_length(data: &mut Vec<u8>, allocation_length: u32) {
    let limit = usize::try_from(allocation_length).unwrap_or(usize::MAX);
    data.truncate(limit);
}

/// Why response data could not be decoded (initiator side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DataError {
    /// The data ends before a field this format requires.
    #[error("data too short: {needed} bytes needed, {got} given")]
    TooShort { needed: usize, got: usize },
    /// A VPD page or mode page other than the one being parsed.
    #[error("unexpected page code {got:#04x} (expected {expected:#04x})")]
    WrongPage { expected: u8, got: u8 },
}

/// Why a parameter list from the Data-Out buffer was rejected (target
/// side); [`ParameterListError::sense`] is the response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParameterListError {
    /// PARAMETER LIST LENGTH ERROR: the list is shorter than its header.
    #[error("parameter list length error")]
    LengthError,
    /// INVALID FIELD IN PARAMETER LIST at `byte` (and `bit`).
    #[error("invalid field in parameter list at byte {byte} bit {bit:?}")]
    InvalidField { byte: u16, bit: Option<u8> },
}

impl ParameterListError {
    /// ILLEGAL REQUEST with PARAMETER LIST LENGTH ERROR, or INVALID FIELD IN
    /// PARAMETER LIST with a field pointer relative to the parameter list
    /// (C/D = 0).
    pub fn sense(&self) -> Sense {
        match *self {
            Self::LengthError => Sense::parameter_list_length_error(),
            Self::InvalidField { byte, bit } => Sense::invalid_field_in_parameter_list(byte, bit),
        }
    }
}

/// `Err(TooShort)` unless `buf` holds at least `needed` bytes.
fn need(buf: &[u8], needed: usize) -> Result<(), DataError> {
    if buf.len() < needed {
        return Err(DataError::TooShort { needed, got: buf.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::{AdditionalSense, SenseKey, be};

    #[test]
    fn truncation_is_min_of_allocation_and_available() {
        let mut v = vec![1, 2, 3, 4];
        truncate_to_allocation_length(&mut v, 10);
        assert_eq!(v, [1, 2, 3, 4]);
        truncate_to_allocation_length(&mut v, 2);
        assert_eq!(v, [1, 2]);
        truncate_to_allocation_length(&mut v, 0);
        assert!(v.is_empty());
    }

    #[test]
    fn parameter_list_error_senses() {
        let s = ParameterListError::LengthError.sense();
        assert_eq!(s.key, SenseKey::ILLEGAL_REQUEST);
        assert_eq!(s.additional_sense, AdditionalSense::PARAMETER_LIST_LENGTH_ERROR);
        let s = ParameterListError::InvalidField { byte: 2, bit: None }.sense();
        assert_eq!(s.additional_sense, AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST);
        assert!(!s.field_pointer.unwrap().cdb);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = StandardInquiry::parse(&b);
            let _ = SupportedVpdPages::parse(&b);
            let _ = UnitSerialNumber::parse(&b);
            let _ = DeviceIdentification::parse(&b);
            let _ = BlockLimits::parse(&b);
            let _ = BlockDeviceCharacteristics::parse(&b);
            let _ = LogicalBlockProvisioning::parse(&b);
            let _ = ReadCapacity10Data::parse(&b);
            let _ = ReadCapacity16Data::parse(&b);
            let _ = LbaStatusList::parse(&b);
            let _ = ReportLunsData::parse(&b);
            let _ = ReportLunsData::full_length(&b);
            let _ = ReadKeysData::parse(&b);
            let _ = ReadReservationData::parse(&b);
            let _ = ReportCapabilitiesData::parse(&b);
            let _ = ReadFullStatusData::parse(&b);
            let _ = PrOutParameterList::parse(&b, b.len() as u32);
        }

        #[test]
        fn lists_round_trip(
            luns in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..20),
            extents in proptest::collection::vec(
                (proptest::prelude::any::<u64>(), proptest::prelude::any::<u32>()), 0..20),
        ) {
            let l = ReportLunsData { luns };
            proptest::prop_assert_eq!(ReportLunsData::parse(&l.to_bytes()), Ok(l));
            let u = UnmapParameterList {
                descriptors: extents
                    .iter()
                    .map(|&(lba, number_of_blocks)| UnmapBlockDescriptor { lba, number_of_blocks })
                    .collect(),
            };
            let b = u.to_bytes();
            proptest::prop_assert_eq!(UnmapParameterList::parse(&b, be::clamp_u16(b.len())), Ok(u));
            let g = LbaStatusList {
                descriptors: extents
                    .iter()
                    .map(|&(lba, number_of_blocks)| LbaStatusDescriptor {
                        lba,
                        number_of_blocks,
                        provisioning_status: (lba % 3) as u8,
                    })
                    .collect(),
            };
            proptest::prop_assert_eq!(LbaStatusList::parse(&g.to_bytes()), Ok(g));
        }
    }
}

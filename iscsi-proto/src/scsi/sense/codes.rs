//! Sense keys and additional sense codes (SPC-4 4.5.6 and the T10
//! `asc-num.txt` list). Every value here was checked against that list.

open_enum! {
    /// The SENSE KEY: the coarse class of a CHECK CONDITION, which is what
    /// an initiator's error handling switches on first.
    ///
    /// Value 0Ch is obsolete in SPC-4 and has no name here.
    pub struct SenseKey(u8) {
        NO_SENSE = 0x0,
        RECOVERED_ERROR = 0x1,
        NOT_READY = 0x2,
        MEDIUM_ERROR = 0x3,
        HARDWARE_ERROR = 0x4,
        ILLEGAL_REQUEST = 0x5,
        UNIT_ATTENTION = 0x6,
        DATA_PROTECT = 0x7,
        BLANK_CHECK = 0x8,
        VENDOR_SPECIFIC = 0x9,
        COPY_ABORTED = 0xA,
        ABORTED_COMMAND = 0xB,
        VOLUME_OVERFLOW = 0xD,
        MISCOMPARE = 0xE,
        COMPLETED = 0xF,
    }
}

open_enum! {
    /// ADDITIONAL SENSE CODE and ADDITIONAL SENSE CODE QUALIFIER as one
    /// value, `ASC << 8 | ASCQ`, because the standard assigns meanings to
    /// the pair, not to either byte alone.
    pub struct AdditionalSense(u16) {
        NO_ADDITIONAL_SENSE_INFORMATION = 0x0000,
        PERIPHERAL_DEVICE_WRITE_FAULT = 0x0300,
        LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE = 0x0400,
        LOGICAL_UNIT_IS_IN_PROCESS_OF_BECOMING_READY = 0x0401,
        LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED = 0x0402,
        LOGICAL_UNIT_NOT_READY_MANUAL_INTERVENTION_REQUIRED = 0x0403,
        LOGICAL_UNIT_NOT_READY_FORMAT_IN_PROGRESS = 0x0404,
        LOGICAL_UNIT_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION = 0x040A,
        LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE = 0x040B,
        LOGICAL_UNIT_NOT_ACCESSIBLE_TARGET_PORT_IN_UNAVAILABLE_STATE = 0x040C,
        LOGICAL_UNIT_DOES_NOT_RESPOND_TO_SELECTION = 0x0500,
        LOGICAL_UNIT_COMMUNICATION_FAILURE = 0x0800,
        WRITE_ERROR = 0x0C00,
        WRITE_ERROR_AUTO_REALLOCATION_FAILED = 0x0C02,
        /// iSCSI: RFC 7143 11.4.7.2 "Unexpected unsolicited data".
        WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA = 0x0C0C,
        /// iSCSI: RFC 7143 11.4.7.2 "Incorrect amount of data".
        WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA = 0x0C0D,
        INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = 0x0E03,
        LOGICAL_BLOCK_GUARD_CHECK_FAILED = 0x1001,
        LOGICAL_BLOCK_APPLICATION_TAG_CHECK_FAILED = 0x1002,
        LOGICAL_BLOCK_REFERENCE_TAG_CHECK_FAILED = 0x1003,
        UNRECOVERED_READ_ERROR = 0x1100,
        /// iSCSI: RFC 7143 11.4.7.2 "SNACK rejected".
        READ_ERROR_FAILED_RETRANSMISSION_REQUEST = 0x1113,
        PARAMETER_LIST_LENGTH_ERROR = 0x1A00,
        MISCOMPARE_DURING_VERIFY_OPERATION = 0x1D00,
        INVALID_COMMAND_OPERATION_CODE = 0x2000,
        ACCESS_DENIED_NO_ACCESS_RIGHTS = 0x2002,
        LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE = 0x2100,
        INVALID_FIELD_IN_CDB = 0x2400,
        LOGICAL_UNIT_NOT_SUPPORTED = 0x2500,
        INVALID_FIELD_IN_PARAMETER_LIST = 0x2600,
        PARAMETER_NOT_SUPPORTED = 0x2601,
        PARAMETER_VALUE_INVALID = 0x2602,
        INVALID_RELEASE_OF_PERSISTENT_RESERVATION = 0x2604,
        WRITE_PROTECTED = 0x2700,
        SPACE_ALLOCATION_FAILED_WRITE_PROTECT = 0x2707,
        NOT_READY_TO_READY_CHANGE_MEDIUM_MAY_HAVE_CHANGED = 0x2800,
        POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED = 0x2900,
        POWER_ON_OCCURRED = 0x2901,
        SCSI_BUS_RESET_OCCURRED = 0x2902,
        BUS_DEVICE_RESET_FUNCTION_OCCURRED = 0x2903,
        DEVICE_INTERNAL_RESET = 0x2904,
        I_T_NEXUS_LOSS_OCCURRED = 0x2907,
        MODE_PARAMETERS_CHANGED = 0x2A01,
        RESERVATIONS_PREEMPTED = 0x2A03,
        RESERVATIONS_RELEASED = 0x2A04,
        REGISTRATIONS_PREEMPTED = 0x2A05,
        ASYMMETRIC_ACCESS_STATE_CHANGED = 0x2A06,
        CAPACITY_DATA_HAS_CHANGED = 0x2A09,
        COMMAND_SEQUENCE_ERROR = 0x2C00,
        COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = 0x2F00,
        COMMANDS_CLEARED_BY_POWER_LOSS_NOTIFICATION = 0x2F01,
        THIN_PROVISIONING_SOFT_THRESHOLD_REACHED = 0x3807,
        SAVING_PARAMETERS_NOT_SUPPORTED = 0x3900,
        MEDIUM_NOT_PRESENT = 0x3A00,
        LOGICAL_UNIT_FAILURE = 0x3E01,
        MICROCODE_HAS_BEEN_CHANGED = 0x3F01,
        INQUIRY_DATA_HAS_CHANGED = 0x3F03,
        REPORTED_LUNS_DATA_HAS_CHANGED = 0x3F0E,
        INTERNAL_TARGET_FAILURE = 0x4400,
        /// iSCSI: RFC 7143 11.4.7.2 "Protocol Service CRC error" (a digest
        /// error on Data-Out).
        PROTOCOL_SERVICE_CRC_ERROR = 0x4705,
        INVALID_MESSAGE_ERROR = 0x4900,
        DATA_PHASE_ERROR = 0x4B00,
        OVERLAPPED_COMMANDS_ATTEMPTED = 0x4E00,
        MEDIUM_REMOVAL_PREVENTED = 0x5302,
        SYSTEM_RESOURCE_FAILURE = 0x5500,
        INSUFFICIENT_RESOURCES = 0x5503,
        INSUFFICIENT_REGISTRATION_RESOURCES = 0x5504,
        FAILURE_PREDICTION_THRESHOLD_EXCEEDED = 0x5D00,
    }
}

impl AdditionalSense {
    /// The brief's shorter spelling of [`Self::NO_ADDITIONAL_SENSE_INFORMATION`].
    pub const NO_ADDITIONAL_SENSE: Self = Self::NO_ADDITIONAL_SENSE_INFORMATION;
    /// Shorter spelling of [`Self::LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE`].
    pub const LBA_OUT_OF_RANGE: Self = Self::LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE;
    /// Shorter spelling of [`Self::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED`].
    pub const POWER_ON_RESET_OR_BUS_DEVICE_RESET: Self = Self::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED;
    /// Shorter spelling of [`Self::I_T_NEXUS_LOSS_OCCURRED`].
    pub const I_T_NEXUS_LOSS: Self = Self::I_T_NEXUS_LOSS_OCCURRED;

    /// Builds the pair from its two wire bytes.
    pub const fn new(asc: u8, ascq: u8) -> Self {
        Self(((asc as u16) << 8) | ascq as u16)
    }

    /// ADDITIONAL SENSE CODE.
    pub const fn asc(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub const fn ascq(self) -> u8 {
        self.0 as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asc_ascq_split() {
        let a = AdditionalSense::REPORTED_LUNS_DATA_HAS_CHANGED;
        assert_eq!((a.asc(), a.ascq()), (0x3F, 0x0E));
        assert_eq!(AdditionalSense::new(0x24, 0x00), AdditionalSense::INVALID_FIELD_IN_CDB);
        assert_eq!(AdditionalSense::new(0x27, 0x07).0, 0x2707);
    }

    #[test]
    fn the_codes_a_block_target_needs() {
        use AdditionalSense as A;
        let expected = [
            (A::NO_ADDITIONAL_SENSE, 0x00, 0x00),
            (A::LBA_OUT_OF_RANGE, 0x21, 0x00),
            (A::INVALID_COMMAND_OPERATION_CODE, 0x20, 0x00),
            (A::INVALID_FIELD_IN_CDB, 0x24, 0x00),
            (A::INVALID_FIELD_IN_PARAMETER_LIST, 0x26, 0x00),
            (A::PARAMETER_LIST_LENGTH_ERROR, 0x1A, 0x00),
            (A::LOGICAL_UNIT_NOT_SUPPORTED, 0x25, 0x00),
            (A::POWER_ON_RESET_OR_BUS_DEVICE_RESET, 0x29, 0x00),
            (A::POWER_ON_OCCURRED, 0x29, 0x01),
            (A::BUS_DEVICE_RESET_FUNCTION_OCCURRED, 0x29, 0x03),
            (A::I_T_NEXUS_LOSS, 0x29, 0x07),
            (A::REPORTED_LUNS_DATA_HAS_CHANGED, 0x3F, 0x0E),
            (A::CAPACITY_DATA_HAS_CHANGED, 0x2A, 0x09),
            (A::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR, 0x2F, 0x00),
            (A::WRITE_ERROR, 0x0C, 0x00),
            (A::UNRECOVERED_READ_ERROR, 0x11, 0x00),
            (A::MISCOMPARE_DURING_VERIFY_OPERATION, 0x1D, 0x00),
            (A::WRITE_PROTECTED, 0x27, 0x00),
            (A::SPACE_ALLOCATION_FAILED_WRITE_PROTECT, 0x27, 0x07),
            (A::MEDIUM_NOT_PRESENT, 0x3A, 0x00),
            (A::INTERNAL_TARGET_FAILURE, 0x44, 0x00),
            (A::LOGICAL_UNIT_NOT_READY_CAUSE_NOT_REPORTABLE, 0x04, 0x00),
            (A::INVALID_MESSAGE_ERROR, 0x49, 0x00),
            (A::SAVING_PARAMETERS_NOT_SUPPORTED, 0x39, 0x00),
            (A::LOGICAL_UNIT_COMMUNICATION_FAILURE, 0x08, 0x00),
            (A::PERIPHERAL_DEVICE_WRITE_FAULT, 0x03, 0x00),
            (A::PROTOCOL_SERVICE_CRC_ERROR, 0x47, 0x05),
            (A::WRITE_ERROR_UNEXPECTED_UNSOLICITED_DATA, 0x0C, 0x0C),
            (A::WRITE_ERROR_NOT_ENOUGH_UNSOLICITED_DATA, 0x0C, 0x0D),
            (A::READ_ERROR_FAILED_RETRANSMISSION_REQUEST, 0x11, 0x13),
        ];
        for (code, asc, ascq) in expected {
            assert_eq!((code.asc(), code.ascq()), (asc, ascq), "{code:?}");
        }
    }

    #[test]
    fn sense_keys() {
        assert_eq!(SenseKey::ILLEGAL_REQUEST.0, 5);
        assert_eq!(SenseKey::UNIT_ATTENTION.0, 6);
        assert_eq!(SenseKey::MISCOMPARE.0, 0xE);
        assert_eq!(SenseKey::COMPLETED.0, 0xF);
        assert_eq!(format!("{:?}", SenseKey(0xC)), "SenseKey(0xc)");
        assert_eq!(
            format!("{:?}", AdditionalSense::INVALID_FIELD_IN_CDB),
            "INVALID_FIELD_IN_CDB"
        );
    }
}

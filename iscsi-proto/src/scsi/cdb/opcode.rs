//! Operation codes (SPC-4 operation code list / the T10 `op-num.txt` list).

open_enum! {
    /// Byte 0 of every CDB. Its top three bits are the group code, which
    /// fixes the CDB length for groups 0, 1, 2, 4 and 5 (SPC-4 4.2.5.1).
    ///
    /// Aliases for the same value (e.g. SERVICE ACTION IN (16), whose
    /// service actions include READ CAPACITY (16)) print by the first name.
    pub struct OperationCode(u8) {
        TEST_UNIT_READY = 0x00,
        REQUEST_SENSE = 0x03,
        FORMAT_UNIT = 0x04,
        REASSIGN_BLOCKS = 0x07,
        READ_6 = 0x08,
        WRITE_6 = 0x0A,
        INQUIRY = 0x12,
        MODE_SELECT_6 = 0x15,
        RESERVE_6 = 0x16,
        RELEASE_6 = 0x17,
        MODE_SENSE_6 = 0x1A,
        START_STOP_UNIT = 0x1B,
        RECEIVE_DIAGNOSTIC_RESULTS = 0x1C,
        SEND_DIAGNOSTIC = 0x1D,
        PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E,
        READ_CAPACITY_10 = 0x25,
        READ_10 = 0x28,
        WRITE_10 = 0x2A,
        WRITE_AND_VERIFY_10 = 0x2E,
        VERIFY_10 = 0x2F,
        PRE_FETCH_10 = 0x34,
        SYNCHRONIZE_CACHE_10 = 0x35,
        READ_DEFECT_DATA_10 = 0x37,
        WRITE_BUFFER = 0x3B,
        READ_BUFFER = 0x3C,
        WRITE_SAME_10 = 0x41,
        UNMAP = 0x42,
        LOG_SELECT = 0x4C,
        LOG_SENSE = 0x4D,
        MODE_SELECT_10 = 0x55,
        MODE_SENSE_10 = 0x5A,
        PERSISTENT_RESERVE_IN = 0x5E,
        PERSISTENT_RESERVE_OUT = 0x5F,
        VARIABLE_LENGTH = 0x7F,
        EXTENDED_COPY = 0x83,
        RECEIVE_COPY_RESULTS = 0x84,
        ATA_PASS_THROUGH_16 = 0x85,
        READ_16 = 0x88,
        COMPARE_AND_WRITE = 0x89,
        WRITE_16 = 0x8A,
        ORWRITE_16 = 0x8B,
        WRITE_AND_VERIFY_16 = 0x8E,
        VERIFY_16 = 0x8F,
        PRE_FETCH_16 = 0x90,
        SYNCHRONIZE_CACHE_16 = 0x91,
        WRITE_SAME_16 = 0x93,
        SERVICE_ACTION_IN_16 = 0x9E,
        SERVICE_ACTION_OUT_16 = 0x9F,
        REPORT_LUNS = 0xA0,
        ATA_PASS_THROUGH_12 = 0xA1,
        MAINTENANCE_IN = 0xA3,
        MAINTENANCE_OUT = 0xA4,
        READ_12 = 0xA8,
        WRITE_12 = 0xAA,
        WRITE_AND_VERIFY_12 = 0xAE,
        VERIFY_12 = 0xAF,
    }
}

impl OperationCode {
    /// SERVICE ACTION IN (16) service action for READ CAPACITY (16).
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
    /// SERVICE ACTION IN (16) service action for GET LBA STATUS.
    pub const SA_GET_LBA_STATUS: u8 = 0x12;
    /// MAINTENANCE IN service action for REPORT SUPPORTED OPERATION CODES.
    pub const SA_REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0C;

    /// The CDB length implied by the group code, or `None` for groups 3
    /// (reserved / variable length) and 6-7 (vendor specific), whose length
    /// the opcode alone does not tell.
    pub const fn cdb_len(self) -> Option<usize> {
        match self.0 >> 5 {
            0 => Some(6),
            1 | 2 => Some(10),
            4 => Some(16),
            5 => Some(12),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_code_lengths() {
        assert_eq!(OperationCode::READ_6.cdb_len(), Some(6));
        assert_eq!(OperationCode::READ_10.cdb_len(), Some(10));
        assert_eq!(OperationCode::MODE_SENSE_10.cdb_len(), Some(10));
        assert_eq!(OperationCode::READ_16.cdb_len(), Some(16));
        assert_eq!(OperationCode::REPORT_LUNS.cdb_len(), Some(12));
        assert_eq!(OperationCode::VARIABLE_LENGTH.cdb_len(), None);
        assert_eq!(OperationCode(0xC0).cdb_len(), None);
    }

    #[test]
    fn names() {
        assert_eq!(format!("{:?}", OperationCode::COMPARE_AND_WRITE), "COMPARE_AND_WRITE");
        assert_eq!(format!("{:?}", OperationCode(0xEE)), "OperationCode(0xee)");
    }
}

//! The SCSI status byte (SAM-5), carried in the Status field of an
//! iSCSI SCSI Response PDU when its Response field is "Command Completed at
//! Target".

open_enum! {
    /// SCSI status code.
    ///
    /// Only [`ScsiStatus::CHECK_CONDITION`] carries sense data; RFC 7143
    /// 11.4.7 has the target send it in the SCSI Response data segment.
    pub struct ScsiStatus(u8) {
        /// The command completed without error.
        GOOD = 0x00,
        /// Sense data describes why the command did not complete.
        CHECK_CONDITION = 0x02,
        /// PRE-FETCH found the requested blocks fit in the cache.
        CONDITION_MET = 0x04,
        /// The logical unit is busy; retry later.
        BUSY = 0x08,
        /// Obsolete in SAM-5 (linked commands); kept so it prints by name.
        INTERMEDIATE = 0x10,
        /// Obsolete in SAM-5 (linked commands); kept so it prints by name.
        INTERMEDIATE_CONDITION_MET = 0x14,
        /// Another I_T nexus holds a conflicting reservation.
        RESERVATION_CONFLICT = 0x18,
        /// The task set is full; retry once a command completes.
        TASK_SET_FULL = 0x28,
        /// An ACA condition exists and this command is not an ACA command.
        ACA_ACTIVE = 0x30,
        /// Aborted by another I_T nexus while TAS=1 in the Control mode page.
        TASK_ABORTED = 0x40,
    }
}

impl ScsiStatus {
    /// Whether a sense buffer accompanies this status.
    pub const fn has_sense(self) -> bool {
        self.0 == Self::CHECK_CONDITION.0
    }

    /// Whether the command may be retried unchanged: SAM-5 defines BUSY and
    /// TASK SET FULL as transient conditions of the device server, not as
    /// failures of the command.
    pub const fn is_retryable(self) -> bool {
        self.0 == Self::BUSY.0 || self.0 == Self::TASK_SET_FULL.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_sam5() {
        assert_eq!(ScsiStatus::GOOD.0, 0x00);
        assert_eq!(ScsiStatus::CHECK_CONDITION.0, 0x02);
        assert_eq!(ScsiStatus::CONDITION_MET.0, 0x04);
        assert_eq!(ScsiStatus::BUSY.0, 0x08);
        assert_eq!(ScsiStatus::RESERVATION_CONFLICT.0, 0x18);
        assert_eq!(ScsiStatus::TASK_SET_FULL.0, 0x28);
        assert_eq!(ScsiStatus::ACA_ACTIVE.0, 0x30);
        assert_eq!(ScsiStatus::TASK_ABORTED.0, 0x40);
    }

    #[test]
    fn debug_prints_name_or_value() {
        assert_eq!(format!("{:?}", ScsiStatus::CHECK_CONDITION), "CHECK_CONDITION");
        assert_eq!(format!("{:?}", ScsiStatus(0x22)), "ScsiStatus(0x22)");
        assert_eq!(ScsiStatus(0x22).name(), None);
        assert_eq!(u8::from(ScsiStatus::BUSY), 8);
        assert_eq!(ScsiStatus::from(0x28), ScsiStatus::TASK_SET_FULL);
    }

    #[test]
    fn predicates() {
        assert!(ScsiStatus::CHECK_CONDITION.has_sense());
        assert!(!ScsiStatus::GOOD.has_sense());
        assert!(ScsiStatus::BUSY.is_retryable());
        assert!(ScsiStatus::TASK_SET_FULL.is_retryable());
        assert!(!ScsiStatus::RESERVATION_CONFLICT.is_retryable());
    }
}

//! The reservation commands' CDB fields: PERSISTENT RESERVE IN and OUT
//! (SPC-4), whose service actions and reservation types are shared with
//! the parameter data in [`crate::scsi::data`].

/// PERSISTENT RESERVE IN service actions (SPC-4). 04h to 1Fh are
/// reserved and rejected by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistentReserveInAction {
    ReadKeys = 0,
    ReadReservation = 1,
    ReportCapabilities = 2,
    ReadFullStatus = 3,
}

impl PersistentReserveInAction {
    pub(super) const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::ReadKeys,
            1 => Self::ReadReservation,
            2 => Self::ReportCapabilities,
            3 => Self::ReadFullStatus,
            _ => return None,
        })
    }
}

/// PERSISTENT RESERVE OUT service actions (SPC-4). Later codes (SPC-5's
/// REPLACE LOST RESERVATION) are rejected by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistentReserveOutAction {
    Register = 0,
    Reserve = 1,
    Release = 2,
    Clear = 3,
    Preempt = 4,
    PreemptAndAbort = 5,
    RegisterAndIgnoreExistingKey = 6,
    RegisterAndMove = 7,
}

impl PersistentReserveOutAction {
    pub(super) const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Register,
            1 => Self::Reserve,
            2 => Self::Release,
            3 => Self::Clear,
            4 => Self::Preempt,
            5 => Self::PreemptAndAbort,
            6 => Self::RegisterAndIgnoreExistingKey,
            7 => Self::RegisterAndMove,
            _ => return None,
        })
    }
}

open_enum! {
    /// The TYPE of a persistent reservation (SPC-4): who may read and who
    /// may write while it is held. Carried in the PERSISTENT RESERVE OUT
    /// CDB and in PERSISTENT RESERVE IN data; 0h, 2h, 4h and 9h-Fh are
    /// reserved, which is the device server's to reject (the CDB field is
    /// ignored by some service actions).
    pub struct PersistentReservationType(u8) {
        WRITE_EXCLUSIVE = 0x1,
        EXCLUSIVE_ACCESS = 0x3,
        WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5,
        EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6,
        WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7,
        EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8,
    }
}

impl PersistentReservationType {
    /// The SCOPE value for a reservation of the whole logical unit, the
    /// only scope SPC-4 still defines.
    pub const LU_SCOPE: u8 = 0;

    /// Whether this is one of the six types SPC-4 defines.
    pub const fn is_defined(self) -> bool {
        matches!(self.0, 0x1 | 0x3 | 0x5..=0x8)
    }

    /// Write Exclusive types: anyone may read.
    pub const fn reads_shared(self) -> bool {
        matches!(self.0, 0x1 | 0x5 | 0x7)
    }

    /// Registrants Only types: every registered I_T nexus has access.
    pub const fn registrants_only(self) -> bool {
        matches!(self.0, 0x5 | 0x6)
    }

    /// All Registrants types: every registered I_T nexus is a reservation
    /// holder.
    pub const fn all_registrants(self) -> bool {
        matches!(self.0, 0x7 | 0x8)
    }

    /// The bit for this type in REPORT CAPABILITIES' PERSISTENT
    /// RESERVATION TYPE MASK (byte 4 bit 7 is bit 15 here), 0 for an
    /// undefined type.
    pub const fn type_mask_bit(self) -> u16 {
        match self.0 {
            0x1 => 1 << 9,
            0x3 => 1 << 11,
            0x5 => 1 << 13,
            0x6 => 1 << 14,
            0x7 => 1 << 15,
            0x8 => 1,
            _ => 0,
        }
    }
}

/// PERSISTENT RESERVE IN: the data asked for, up to ALLOCATION LENGTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PersistentReserveIn {
    pub service_action: PersistentReserveInAction,
    pub allocation_length: u16,
}

/// PERSISTENT RESERVE OUT: a parameter list of `parameter_list_length`
/// bytes follows as Data-Out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PersistentReserveOut {
    pub service_action: PersistentReserveOutAction,
    /// SCOPE, four bits (masked on build); only [`PersistentReservationType::LU_SCOPE`]
    /// is defined.
    pub scope: u8,
    /// TYPE, four bits (masked on build).
    pub pr_type: PersistentReservationType,
    pub parameter_list_length: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_classes() {
        let all = [1u8, 3, 5, 6, 7, 8].map(PersistentReservationType);
        assert!(all.iter().all(|t| t.is_defined()));
        assert!(!PersistentReservationType(2).is_defined());
        assert!(!PersistentReservationType(9).is_defined());
        let shared: Vec<u8> = all.iter().filter(|t| t.reads_shared()).map(|t| t.0).collect();
        assert_eq!(shared, [1, 5, 7]);
        let masks: u16 = all.iter().map(|t| t.type_mask_bit()).fold(0, |a, b| a | b);
        assert_eq!(masks, 0xEA01);
        assert_eq!(PersistentReservationType(4).type_mask_bit(), 0);
        assert_eq!(
            format!("{:?}", PersistentReservationType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS),
            "EXCLUSIVE_ACCESS_ALL_REGISTRANTS"
        );
    }
}

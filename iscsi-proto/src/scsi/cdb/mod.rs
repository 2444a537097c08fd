//! Command descriptor blocks: the SCSI commands a block target serves.
//!
//! [`Command::parse`] is what a target runs on the CDB of a SCSI Command PDU;
//! [`Command::build`] is what an initiator runs to fill it. The subset is
//! SPC-4's mandatory and commonly used commands (with SPC-2 RESERVE/RELEASE
//! and SPC-4 persistent reservations) plus SBC-3's block commands;
//! any other operation code is [`CdbError::InvalidOpcode`], which
//! [`CdbError::sense`] turns into the response SPC-4 requires.
//!
//! Reserved bits are not checked — SPC-4's "reserved" keyword lets a recipient check them but
//! does not require it, and initiators in the field do set some — while
//! fields whose values this crate cannot honour (NACA, protection
//! information, reserved code values) are rejected with a field pointer.

mod build;
mod fields;
mod info;
mod opcode;
mod parse;
mod reservation;
mod writer;

pub use opcode::OperationCode;
pub use reservation::{
    PersistentReservationType, PersistentReserveIn, PersistentReserveInAction, PersistentReserveOut,
    PersistentReserveOutAction,
};

use crate::scsi::sense::Sense;

/// The CDB length a block command came from (parse) or should preferably
/// be built as (build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CdbSize {
    Six,
    Ten,
    Twelve,
    Sixteen,
}

impl CdbSize {
    /// The CDB length in bytes.
    pub const fn cdb_len(self) -> usize {
        match self {
            Self::Six => 6,
            Self::Ten => 10,
            Self::Twelve => 12,
            Self::Sixteen => 16,
        }
    }
}

/// READ and WRITE (6), (10), (12), (16).
///
/// `size` on build is a preference: [`Command::build`] uses the smallest CDB
/// at least that large whose fields hold the values (READ (6) cannot carry
/// DPO/FUA, a zero transfer length, more than 256 blocks or an LBA above
/// 21 bits), because truncating an LBA would silently address other blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadWrite {
    pub lba: u64,
    /// TRANSFER LENGTH in logical blocks. A READ (6)/WRITE (6) field of 0
    /// parses as 256 — SBC-3: "A TRANSFER LENGTH field set to zero specifies
    /// that 256 logical blocks shall be read" — so this is always the real
    /// count; 0 means no transfer.
    pub transfer_length: u32,
    /// Disable page out: a cache retention hint.
    pub dpo: bool,
    /// Force unit access: complete only once on (or read from) the medium.
    pub fua: bool,
    pub size: CdbSize,
}

impl ReadWrite {
    /// A plain transfer, built as (10) or, when the values need it, the
    /// next larger CDB that holds them.
    pub const fn new(lba: u64, transfer_length: u32) -> Self {
        Self {
            lba,
            transfer_length,
            dpo: false,
            fua: false,
            size: CdbSize::Ten,
        }
    }
}

/// VERIFY's BYTCHK field (SBC-3 r36 and later: two bits; 10b is reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteCheck {
    /// 00b: verify the medium only; no Data-Out.
    MediumOnly,
    /// 01b: compare each block with the Data-Out buffer.
    Compare,
    /// 11b: compare every block with one block of Data-Out.
    CompareSingleBlock,
}

/// VERIFY (10), (12), (16). A `size` of `Six` builds as (10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verify {
    pub lba: u64,
    /// VERIFICATION LENGTH in logical blocks; 0 verifies nothing.
    pub verification_length: u32,
    pub dpo: bool,
    pub bytchk: ByteCheck,
    pub size: CdbSize,
}

/// WRITE AND VERIFY (10), (12), (16). A `size` of `Six` builds as (10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteAndVerify {
    pub lba: u64,
    pub transfer_length: u32,
    pub dpo: bool,
    /// BYTCHK 01b: compare what was written with the Data-Out buffer
    /// (10b and 11b are reserved for this command).
    pub bytchk: bool,
    pub size: CdbSize,
}

/// WRITE SAME (10), (16). `Six` and `Twelve` build as (10); NDOB, an LBA
/// above 32 bits or more than 65535 blocks force (16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriteSame {
    pub lba: u64,
    /// NUMBER OF LOGICAL BLOCKS, kept as sent. SBC-3: "A NUMBER OF LOGICAL
    /// BLOCKS field set to zero specifies that the device server write all
    /// the logical blocks starting with the one specified in the LOGICAL
    /// BLOCK ADDRESS field to the last logical block on the medium" (unless
    /// the Block Limits VPD page sets WSNZ, in which case 0 is an error the
    /// target reports). See [`LbaRange::to_end_of_medium`].
    pub number_of_blocks: u32,
    pub unmap: bool,
    pub anchor: bool,
    /// No Data-Out buffer: write zeros (WRITE SAME (16) only).
    pub ndob: bool,
    pub size: CdbSize,
}

/// SYNCHRONIZE CACHE and PRE-FETCH (10), (16): both name a range whose
/// count 0 means "to the last LBA". `Six`/`Twelve` build as (10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncRange {
    pub lba: u64,
    pub number_of_blocks: u32,
    /// Return status before the operation completes.
    pub immed: bool,
    pub size: CdbSize,
}

/// COMPARE AND WRITE: the Data-Out buffer holds `number_of_blocks` blocks to
/// compare followed by as many to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompareAndWrite {
    pub lba: u64,
    pub number_of_blocks: u8,
    pub dpo: bool,
    pub fua: bool,
}

/// ORWRITE (16) (SBC-3): the blocks are read, ORed with the Data-Out
/// buffer and written back, as one uninterrupted operation. The GROUP
/// NUMBER and the obsolete FUA_NV bit are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrWrite {
    pub lba: u64,
    /// TRANSFER LENGTH in logical blocks; 0 transfers and writes nothing.
    pub transfer_length: u32,
    pub dpo: bool,
    pub fua: bool,
}

/// MODE SENSE's PC field; all four values are defined (SPC-4 MODE SENSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageControl {
    Current,
    Changeable,
    Default,
    Saved,
}

/// MODE SENSE (6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeSense6 {
    /// Disable block descriptors.
    pub dbd: bool,
    pub page_control: PageControl,
    /// Six bits; 3Fh asks for all pages. Masked on build.
    pub page_code: u8,
    pub subpage_code: u8,
    pub allocation_length: u8,
}

/// MODE SENSE (10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeSense10 {
    /// Long LBA accepted: the initiator can take 16-byte block descriptors.
    pub llbaa: bool,
    pub dbd: bool,
    pub page_control: PageControl,
    pub page_code: u8,
    pub subpage_code: u8,
    pub allocation_length: u16,
}

/// MODE SELECT (6): a mode parameter list (header, optional block
/// descriptor, pages) of `parameter_list_length` bytes follows as Data-Out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeSelect6 {
    /// Page format: the parameters after the block descriptors are mode
    /// pages (SPC-4); zero means a vendor-specific format.
    pub pf: bool,
    /// Save pages: also save the pages to nonvolatile storage.
    pub sp: bool,
    pub parameter_list_length: u8,
}

/// MODE SELECT (10): as (6), with the 8-byte parameter header and a 16-bit
/// PARAMETER LIST LENGTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeSelect10 {
    pub pf: bool,
    pub sp: bool,
    pub parameter_list_length: u16,
}

/// REPORT SUPPORTED OPERATION CODES' REPORTING OPTIONS (SPC-4); 100b
/// to 111b are reserved and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportingOptions {
    /// 000b: list every supported command.
    All = 0,
    /// 001b: one command, which has no service actions.
    OneCommand = 1,
    /// 010b: one command identified by opcode and service action.
    OneServiceAction = 2,
    /// 011b: one command, with the service action if it has them.
    OneCommandOrServiceAction = 3,
}

/// REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0Ch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportSupportedOperationCodes {
    /// Return command timeouts descriptors.
    pub rctd: bool,
    pub reporting_options: ReportingOptions,
    pub requested_operation_code: OperationCode,
    pub requested_service_action: u16,
    pub allocation_length: u32,
}

/// START STOP UNIT. The 4-bit fields are masked on build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StartStopUnit {
    pub immed: bool,
    pub power_condition_modifier: u8,
    pub power_condition: u8,
    pub no_flush: bool,
    /// Load/eject the medium (with `start`).
    pub loej: bool,
    pub start: bool,
}

/// A parsed CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        /// Ask for descriptor-format sense.
        desc: bool,
        allocation_length: u8,
    },
    Inquiry {
        /// Return the VPD page `page_code` rather than standard data.
        evpd: bool,
        page_code: u8,
        allocation_length: u16,
    },
    /// READ CAPACITY (10): always 8 bytes of data.
    ReadCapacity10,
    /// READ CAPACITY (16) (SERVICE ACTION IN (16), service action 10h).
    ReadCapacity16 {
        allocation_length: u32,
    },
    Read(ReadWrite),
    Write(ReadWrite),
    Verify(Verify),
    WriteAndVerify(WriteAndVerify),
    WriteSame(WriteSame),
    Unmap {
        anchor: bool,
        parameter_list_length: u16,
    },
    SynchronizeCache(SyncRange),
    PreFetch(SyncRange),
    ModeSense6(ModeSense6),
    ModeSense10(ModeSense10),
    ModeSelect6(ModeSelect6),
    ModeSelect10(ModeSelect10),
    ReportLuns {
        select_report: u8,
        allocation_length: u32,
    },
    ReportSupportedOperationCodes(ReportSupportedOperationCodes),
    StartStopUnit(StartStopUnit),
    PreventAllowMediumRemoval {
        /// PREVENT: two bits, 00b allow, 01b prevent. Masked on build.
        prevent: u8,
    },
    /// GET LBA STATUS (SERVICE ACTION IN (16), service action 12h).
    GetLbaStatus {
        lba: u64,
        allocation_length: u32,
    },
    CompareAndWrite(CompareAndWrite),
    OrWrite(OrWrite),
    /// RESERVE (6) (SPC-2): reserve the whole logical unit for this I_T
    /// nexus. Third-party and extent reservations are refused by the parser.
    Reserve6,
    /// RELEASE (6) (SPC-2).
    Release6,
    PersistentReserveIn(PersistentReserveIn),
    PersistentReserveOut(PersistentReserveOut),
}

/// Which way a command's data moves, seen from the initiator — the R and W
/// bits of an iSCSI SCSI Command PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataDirection {
    None,
    ToDevice,
    FromDevice,
}

/// The blocks a command addresses, for a target's capacity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LbaRange {
    pub lba: u64,
    pub number_of_blocks: u64,
    /// `number_of_blocks` is 0 and, for this command, that means "through
    /// the last LBA" (WRITE SAME, SYNCHRONIZE CACHE, PRE-FETCH).
    pub to_end_of_medium: bool,
}

impl LbaRange {
    /// SBC-3's range rule: "If the logical block address plus the transfer
    /// length exceeds the capacity of the medium, then the device server
    /// shall terminate the command with CHECK CONDITION status with the
    /// sense key set to ILLEGAL REQUEST and the additional sense code set to
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE." `capacity` is in blocks (last
    /// LBA + 1).
    pub fn check(&self, capacity: u64) -> Result<(), Sense> {
        let ok = if self.to_end_of_medium {
            self.lba < capacity
        } else {
            self.lba
                .checked_add(self.number_of_blocks)
                .is_some_and(|end| end <= capacity)
        };
        if ok { Ok(()) } else { Err(Sense::lba_out_of_range()) }
    }
}

/// Why a CDB was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CdbError {
    /// Fewer bytes than the operation code's CDB length.
    #[error("CDB too short: {needed} bytes needed, {got} given")]
    TooShort { needed: usize, got: usize },
    /// An operation code this crate does not implement.
    #[error("invalid command operation code {0}")]
    InvalidOpcode(OperationCode),
    /// A field holding a value that is reserved or not supported; `bit` is
    /// the left-most bit of a sub-byte field.
    #[error("invalid field in CDB at byte {byte} bit {bit:?}")]
    InvalidField { byte: u16, bit: Option<u8> },
}

impl CdbError {
    /// The sense a device server returns for this error (SPC-4 4.5.2.4:
    /// field pointers are relative to the CDB, C/D = 1). A CDB shorter than
    /// its operation code's group length — impossible in iSCSI's 16-byte
    /// field, so only a local caller's slice — has no field to point at
    /// and maps to INVALID FIELD IN CDB without a pointer.
    pub fn sense(&self) -> Sense {
        match *self {
            Self::TooShort { got: 0, .. } | Self::InvalidOpcode(_) => Sense::invalid_command_operation_code(),
            Self::TooShort { .. } => Sense::illegal_request(crate::scsi::AdditionalSense::INVALID_FIELD_IN_CDB),
            Self::InvalidField { byte, bit } => Sense::invalid_field_in_cdb(byte, bit),
        }
    }
}

/// An encoded CDB: every command here fits in 16 bytes, so no allocation.
/// Bytes past `len()` are zero, which is what iSCSI's 16-byte CDB field
/// wants as padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cdb {
    bytes: [u8; 16],
    len: u8,
}

impl Cdb {
    /// The CDB bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&self.bytes)
    }

    /// The CDB zero-padded to 16 bytes, for the iSCSI BHS CDB field.
    pub const fn padded(&self) -> [u8; 16] {
        self.bytes
    }

    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: a CDB has at least an operation code.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub const fn operation_code(&self) -> OperationCode {
        OperationCode(self.bytes[0])
    }
}

impl AsRef<[u8]> for Cdb {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl core::fmt::Debug for Cdb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Cdb({:02x?})", self.as_bytes())
    }
}

#[cfg(test)]
mod proptests;

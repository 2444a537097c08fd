//! Sense data: why a command ended in CHECK CONDITION (SPC-4 4.5).
//!
//! [`Sense`] is the decoded meaning — key, ASC/ASCQ, INFORMATION and the
//! field pointer — independent of which of the two wire formats carries it.
//! A target picks the format from the D_SENSE bit of the Control mode page
//! (or REQUEST SENSE's DESC bit); an initiator must accept both.

mod codes;
mod wire;

pub use codes::{AdditionalSense, SenseKey};
pub use wire::{SenseBuffer, SenseError};

/// Sense-key-specific field pointer (SPC-4 4.5.2.4): which byte, and
/// optionally which bit, of the CDB or parameter list was rejected, so an
/// initiator can report the exact field rather than "invalid request".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// C/D: `true` when the error is in the CDB, `false` when it is in the
    /// parameter list sent in the Data-Out buffer.
    pub cdb: bool,
    /// BIT POINTER when BPV is set; SPC-4 has it name the left-most bit of
    /// a multi-bit field. Only 0..=7 is encodable; larger values are masked.
    pub bit: Option<u8>,
    /// FIELD POINTER: the byte offset of the field's first byte.
    pub byte: u16,
}

/// Decoded sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    pub key: SenseKey,
    pub additional_sense: AdditionalSense,
    /// INFORMATION: for a block device, the first LBA in error (MEDIUM
    /// ERROR), or the byte offset of the miscompare (MISCOMPARE). `None`
    /// when the VALID bit is clear.
    pub information: Option<u64>,
    /// Set only for ILLEGAL REQUEST, where SPC-4 defines the sense-key
    /// specific bytes as a field pointer.
    pub field_pointer: Option<FieldPointer>,
    /// Deferred error: it belongs to an earlier command (e.g. a cached
    /// write), not to the one it is reported on (response code 71h/73h).
    pub deferred: bool,
}

impl Sense {
    /// Current sense with just a key and ASC/ASCQ.
    pub const fn new(key: SenseKey, additional_sense: AdditionalSense) -> Self {
        Self {
            key,
            additional_sense,
            information: None,
            field_pointer: None,
            deferred: false,
        }
    }

    /// The same sense with INFORMATION set.
    pub const fn with_information(mut self, information: u64) -> Self {
        self.information = Some(information);
        self
    }

    /// The same sense with a field pointer set.
    pub const fn with_field_pointer(mut self, pointer: FieldPointer) -> Self {
        self.field_pointer = Some(pointer);
        self
    }

    /// The same sense marked as a deferred error.
    pub const fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// ILLEGAL REQUEST with the given ASC/ASCQ and no field pointer.
    pub const fn illegal_request(additional_sense: AdditionalSense) -> Self {
        Self::new(SenseKey::ILLEGAL_REQUEST, additional_sense)
    }

    /// SPC-4, OPERATION CODE field: "If a device server receives a CDB containing an
    /// operation code that is invalid or not supported, the command shall
    /// be terminated with CHECK CONDITION status, with the sense key set to
    /// ILLEGAL REQUEST, and the additional sense code set to INVALID COMMAND
    /// OPERATION CODE."
    pub const fn invalid_command_operation_code() -> Self {
        Self::illegal_request(AdditionalSense::INVALID_COMMAND_OPERATION_CODE)
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and `bit`,
    /// the left-most bit of the bad field, when it is narrower than a byte).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Self {
        Self::illegal_request(AdditionalSense::INVALID_FIELD_IN_CDB).with_field_pointer(FieldPointer {
            cdb: true,
            bit,
            byte,
        })
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing into the
    /// Data-Out buffer (C/D = 0).
    pub const fn invalid_field_in_parameter_list(byte: u16, bit: Option<u8>) -> Self {
        Self::illegal_request(AdditionalSense::INVALID_FIELD_IN_PARAMETER_LIST).with_field_pointer(FieldPointer {
            cdb: false,
            bit,
            byte,
        })
    }

    /// ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR.
    pub const fn parameter_list_length_error() -> Self {
        Self::illegal_request(AdditionalSense::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE: SBC-3 has
    /// every block command end this way when LBA plus length passes the
    /// capacity.
    pub const fn lba_out_of_range() -> Self {
        Self::illegal_request(AdditionalSense::LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    }

    /// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED, for a LUN with no
    /// logical unit behind it (INQUIRY is answered with peripheral qualifier
    /// 011b instead, see `data::inquiry`).
    pub const fn logical_unit_not_supported() -> Self {
        Self::illegal_request(AdditionalSense::LOGICAL_UNIT_NOT_SUPPORTED)
    }

    /// UNIT ATTENTION with the given reason (reset, capacity change, ...).
    pub const fn unit_attention(additional_sense: AdditionalSense) -> Self {
        Self::new(SenseKey::UNIT_ATTENTION, additional_sense)
    }

    /// NOT READY with the given reason.
    pub const fn not_ready(additional_sense: AdditionalSense) -> Self {
        Self::new(SenseKey::NOT_READY, additional_sense)
    }

    /// MEDIUM ERROR; INFORMATION carries the first failing LBA, as SBC-3
    /// asks for medium errors, so the initiator knows how far the transfer got.
    pub const fn medium_error(additional_sense: AdditionalSense, lba: u64) -> Self {
        Self::new(SenseKey::MEDIUM_ERROR, additional_sense).with_information(lba)
    }

    /// HARDWARE ERROR with the given reason.
    pub const fn hardware_error(additional_sense: AdditionalSense) -> Self {
        Self::new(SenseKey::HARDWARE_ERROR, additional_sense)
    }

    /// ABORTED COMMAND with the given reason (iSCSI digest errors use
    /// [`AdditionalSense::PROTOCOL_SERVICE_CRC_ERROR`]).
    pub const fn aborted_command(additional_sense: AdditionalSense) -> Self {
        Self::new(SenseKey::ABORTED_COMMAND, additional_sense)
    }

    /// DATA PROTECT / WRITE PROTECTED, for writes to a read-only LU.
    pub const fn write_protected() -> Self {
        Self::new(SenseKey::DATA_PROTECT, AdditionalSense::WRITE_PROTECTED)
    }

    /// MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION. SBC-3 (COMPARE AND
    /// WRITE, VERIFY with BYTCHK) puts the offset of the first byte that
    /// did not match into INFORMATION.
    pub const fn miscompare(offset: u64) -> Self {
        Self::new(
            SenseKey::MISCOMPARE,
            AdditionalSense::MISCOMPARE_DURING_VERIFY_OPERATION,
        )
        .with_information(offset)
    }

    /// Fixed-format bytes of this sense in a small owned buffer.
    pub fn fixed(&self) -> SenseBuffer {
        let mut b = SenseBuffer::empty();
        let n = self.emit_fixed(b.storage_mut());
        b.set_len(n);
        b
    }

    /// Descriptor-format bytes of this sense in a small owned buffer.
    pub fn descriptor(&self) -> SenseBuffer {
        let mut b = SenseBuffer::empty();
        let n = self.emit_descriptor(b.storage_mut());
        b.set_len(n);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        let s = Sense::invalid_field_in_cdb(1, Some(4));
        assert_eq!(s.key, SenseKey::ILLEGAL_REQUEST);
        assert_eq!(s.additional_sense, AdditionalSense::INVALID_FIELD_IN_CDB);
        assert_eq!(
            s.field_pointer,
            Some(FieldPointer {
                cdb: true,
                bit: Some(4),
                byte: 1
            })
        );
        let p = Sense::invalid_field_in_parameter_list(8, None);
        assert!(!p.field_pointer.unwrap().cdb);
        let m = Sense::medium_error(AdditionalSense::UNRECOVERED_READ_ERROR, 77);
        assert_eq!(m.information, Some(77));
        assert!(
            Sense::unit_attention(AdditionalSense::POWER_ON_OCCURRED)
                .deferred()
                .deferred
        );
        assert_eq!(Sense::miscompare(5).key, SenseKey::MISCOMPARE);
        assert_eq!(Sense::write_protected().key, SenseKey::DATA_PROTECT);
    }
}

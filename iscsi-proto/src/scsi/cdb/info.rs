//! What a transport or a target asks of a [`Command`] besides its fields:
//! which way data moves, how much of it, and which blocks it touches.

use super::{ByteCheck, Command, DataDirection, LbaRange, OperationCode};

impl Command {
    /// The operation code [`Command::build`] sends this command with
    /// (which, for block commands, follows the widening rule there).
    pub fn operation_code(&self) -> OperationCode {
        self.build().operation_code()
    }

    /// Bytes of data the command moves, before the 32-bit check.
    fn data_len(&self, block_size: u32) -> u64 {
        let bs = u64::from(block_size);
        let blocks = |n: u32| u64::from(n) * bs;
        match self {
            Self::TestUnitReady
            | Self::SynchronizeCache(_)
            | Self::PreFetch(_)
            | Self::StartStopUnit(_)
            | Self::PreventAllowMediumRemoval { .. }
            | Self::Reserve6
            | Self::Release6 => 0,
            Self::RequestSense { allocation_length, .. } => u64::from(*allocation_length),
            Self::Inquiry { allocation_length, .. } => u64::from(*allocation_length),
            Self::ReadCapacity10 => 8,
            Self::ReadCapacity16 { allocation_length }
            | Self::GetLbaStatus { allocation_length, .. }
            | Self::ReportLuns { allocation_length, .. } => u64::from(*allocation_length),
            Self::ReportSupportedOperationCodes(r) => u64::from(r.allocation_length),
            Self::ModeSense6(m) => u64::from(m.allocation_length),
            Self::ModeSense10(m) => u64::from(m.allocation_length),
            Self::ModeSelect6(m) => u64::from(m.parameter_list_length),
            Self::ModeSelect10(m) => u64::from(m.parameter_list_length),
            Self::Read(rw) | Self::Write(rw) => blocks(rw.transfer_length),
            Self::WriteAndVerify(w) => blocks(w.transfer_length),
            Self::Verify(v) => match v.bytchk {
                ByteCheck::MediumOnly => 0,
                ByteCheck::Compare => blocks(v.verification_length),
                ByteCheck::CompareSingleBlock if v.verification_length == 0 => 0,
                ByteCheck::CompareSingleBlock => bs,
            },
            Self::WriteSame(w) if w.ndob => 0,
            Self::WriteSame(_) => bs,
            Self::Unmap {
                parameter_list_length, ..
            } => u64::from(*parameter_list_length),
            Self::CompareAndWrite(c) => 2 * u64::from(c.number_of_blocks) * bs,
            Self::OrWrite(o) => blocks(o.transfer_length),
            Self::PersistentReserveIn(r) => u64::from(r.allocation_length),
            Self::PersistentReserveOut(r) => u64::from(r.parameter_list_length),
        }
    }

    /// The direction of the command's data, or [`DataDirection::None`] when
    /// it moves none — including when a length field is 0, since SPC-4 says
    /// of allocation lengths "An ALLOCATION LENGTH field set to zero
    /// specifies that no data shall be transferred" and SBC-3 likewise for
    /// transfer lengths.
    pub fn data_direction(&self) -> DataDirection {
        if self.data_len(1) == 0 {
            return DataDirection::None;
        }
        match self {
            Self::Write(_)
            | Self::WriteAndVerify(_)
            | Self::Verify(_)
            | Self::WriteSame(_)
            | Self::Unmap { .. }
            | Self::ModeSelect6(_)
            | Self::ModeSelect10(_)
            | Self::CompareAndWrite(_)
            | Self::OrWrite(_)
            | Self::PersistentReserveOut(_) => DataDirection::ToDevice,
            _ => DataDirection::FromDevice,
        }
    }

    /// The iSCSI Expected Data Transfer Length for this command with logical
    /// blocks of `block_size` bytes: the full transfer for block commands,
    /// the allocation or parameter list length otherwise.
    ///
    /// `None` when the length does not fit the 32-bit Expected Data Transfer
    /// Length field of the RFC 7143 SCSI Command PDU; the initiator must
    /// split such a transfer.
    pub fn expected_transfer_len(&self, block_size: u32) -> Option<u64> {
        let len = self.data_len(block_size);
        (len <= u64::from(u32::MAX)).then_some(len)
    }

    /// The number of logical blocks in the Data-In or Data-Out buffer, for
    /// commands whose data is logical blocks.
    pub fn transfer_blocks(&self) -> Option<u32> {
        match self {
            Self::Read(rw) | Self::Write(rw) => Some(rw.transfer_length),
            Self::WriteAndVerify(w) => Some(w.transfer_length),
            Self::Verify(v) => match v.bytchk {
                ByteCheck::MediumOnly => None,
                ByteCheck::Compare => Some(v.verification_length),
                ByteCheck::CompareSingleBlock => Some(u32::from(v.verification_length != 0)),
            },
            Self::WriteSame(w) => (!w.ndob).then_some(1),
            Self::CompareAndWrite(c) => Some(2 * u32::from(c.number_of_blocks)),
            Self::OrWrite(o) => Some(o.transfer_length),
            _ => None,
        }
    }

    /// The LBAs the command reads, writes or otherwise addresses, for the
    /// target's LOGICAL BLOCK ADDRESS OUT OF RANGE check.
    ///
    /// GET LBA STATUS is not here: SBC-3 checks only its starting LBA.
    pub fn lba_range(&self) -> Option<LbaRange> {
        let range = |lba: u64, n: u32, zero_is_to_end: bool| LbaRange {
            lba,
            number_of_blocks: u64::from(n),
            to_end_of_medium: zero_is_to_end && n == 0,
        };
        match self {
            Self::Read(rw) | Self::Write(rw) => Some(range(rw.lba, rw.transfer_length, false)),
            Self::Verify(v) => Some(range(v.lba, v.verification_length, false)),
            Self::WriteAndVerify(w) => Some(range(w.lba, w.transfer_length, false)),
            Self::WriteSame(w) => Some(range(w.lba, w.number_of_blocks, true)),
            Self::SynchronizeCache(s) | Self::PreFetch(s) => Some(range(s.lba, s.number_of_blocks, true)),
            Self::CompareAndWrite(c) => Some(range(c.lba, u32::from(c.number_of_blocks), false)),
            Self::OrWrite(o) => Some(range(o.lba, o.transfer_length, false)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::scsi::{AdditionalSense, Sense, SenseKey};

    #[test]
    fn directions_and_lengths() {
        let read = Command::Read(ReadWrite::new(0, 8));
        assert_eq!(read.data_direction(), DataDirection::FromDevice);
        assert_eq!(read.expected_transfer_len(512), Some(4096));
        assert_eq!(read.transfer_blocks(), Some(8));
        let empty = Command::Write(ReadWrite::new(0, 0));
        assert_eq!(empty.data_direction(), DataDirection::None);
        let big = Command::Read(ReadWrite::new(0, u32::MAX));
        assert_eq!(big.expected_transfer_len(4096), None);
        let caw = Command::CompareAndWrite(CompareAndWrite {
            lba: 1,
            number_of_blocks: 2,
            dpo: false,
            fua: false,
        });
        assert_eq!(caw.expected_transfer_len(512), Some(2048));
        assert_eq!(caw.data_direction(), DataDirection::ToDevice);
        assert_eq!(Command::ReadCapacity10.expected_transfer_len(512), Some(8));
        assert_eq!(Command::TestUnitReady.data_direction(), DataDirection::None);
        let ws = WriteSame {
            lba: 0,
            number_of_blocks: 0,
            unmap: true,
            anchor: false,
            ndob: true,
            size: CdbSize::Sixteen,
        };
        assert_eq!(Command::WriteSame(ws).data_direction(), DataDirection::None);
        let ws = WriteSame { ndob: false, ..ws };
        assert_eq!(Command::WriteSame(ws).expected_transfer_len(4096), Some(4096));
        let inq = Command::Inquiry {
            evpd: false,
            page_code: 0,
            allocation_length: 0,
        };
        assert_eq!(inq.data_direction(), DataDirection::None);
        let sel = Command::ModeSelect10(ModeSelect10 {
            pf: true,
            sp: false,
            parameter_list_length: 20,
        });
        assert_eq!(sel.data_direction(), DataDirection::ToDevice);
        assert_eq!(sel.expected_transfer_len(4096), Some(20));
        assert_eq!(sel.lba_range(), None);
        let empty = Command::ModeSelect6(ModeSelect6 {
            pf: true,
            sp: false,
            parameter_list_length: 0,
        });
        assert_eq!(empty.data_direction(), DataDirection::None);
        let orw = Command::OrWrite(OrWrite {
            lba: 10,
            transfer_length: 4,
            dpo: false,
            fua: false,
        });
        assert_eq!(orw.data_direction(), DataDirection::ToDevice);
        assert_eq!(orw.expected_transfer_len(512), Some(2048));
        assert_eq!(orw.transfer_blocks(), Some(4));
        assert_eq!(orw.lba_range().unwrap().check(13), Err(Sense::lba_out_of_range()));
        assert_eq!(Command::Reserve6.data_direction(), DataDirection::None);
        let prin = Command::PersistentReserveIn(PersistentReserveIn {
            service_action: PersistentReserveInAction::ReadKeys,
            allocation_length: 8,
        });
        assert_eq!(prin.data_direction(), DataDirection::FromDevice);
        assert_eq!(prin.expected_transfer_len(4096), Some(8));
        let prout = Command::PersistentReserveOut(PersistentReserveOut {
            service_action: PersistentReserveOutAction::Register,
            scope: 0,
            pr_type: PersistentReservationType(0),
            parameter_list_length: 24,
        });
        assert_eq!(prout.data_direction(), DataDirection::ToDevice);
        assert_eq!(prout.expected_transfer_len(512), Some(24));
        assert_eq!(prout.lba_range(), None);
    }

    #[test]
    fn lba_range_checks() {
        let r = Command::Read(ReadWrite::new(90, 10)).lba_range().unwrap();
        assert_eq!(r.check(100), Ok(()));
        let e = Command::Read(ReadWrite::new(91, 10)).lba_range().unwrap().check(100);
        let e = e.unwrap_err();
        assert_eq!(e.key, SenseKey::ILLEGAL_REQUEST);
        assert_eq!(e.additional_sense, AdditionalSense::LBA_OUT_OF_RANGE);
        let wrap = Command::Read(ReadWrite::new(u64::MAX, 2)).lba_range().unwrap();
        assert!(wrap.check(u64::MAX).is_err());
        let sync = Command::SynchronizeCache(SyncRange {
            lba: 99,
            number_of_blocks: 0,
            immed: false,
            size: CdbSize::Ten,
        });
        let r = sync.lba_range().unwrap();
        assert!(r.to_end_of_medium);
        assert_eq!(r.check(100), Ok(()));
        assert!(r.check(99).is_err());
    }

    #[test]
    fn operation_codes_follow_build() {
        let rw = ReadWrite {
            size: CdbSize::Six,
            ..ReadWrite::new(1 << 22, 1)
        };
        assert_eq!(Command::Read(rw).operation_code(), OperationCode::READ_10);
        assert_eq!(
            Command::GetLbaStatus {
                lba: 0,
                allocation_length: 24
            }
            .operation_code(),
            OperationCode::SERVICE_ACTION_IN_16
        );
    }
}

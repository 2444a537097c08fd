//! [`Command`] to CDB bytes.
//!
//! Block commands carry a preferred [`CdbSize`]; values that do not fit it
//! move the command to the next larger CDB instead of being truncated, as a
//! truncated LBA or transfer length would address other blocks than the
//! caller asked for. Small enumerated fields (page code, power condition,
//! PREVENT) are masked to their width, as the caller's value has no other
//! encoding.

use super::writer::{ALL, TEN_SIXTEEN, TEN_TWELVE_SIXTEEN, Writer, fits_10_12_16, page_control_bits, pick, sized_op};
use super::{ByteCheck, Cdb, CdbSize, Command, OperationCode as Op};

impl Command {
    /// Encodes the command. Never fails: see the module docs for how values
    /// that do not fit the preferred CDB size are handled.
    pub fn build(&self) -> Cdb {
        match self {
            Self::TestUnitReady => Writer::new(Op::TEST_UNIT_READY, 6).finish(),
            Self::RequestSense {
                desc,
                allocation_length,
            } => {
                let mut w = Writer::new(Op::REQUEST_SENSE, 6);
                w.flag(1, 0, *desc);
                w.b[4] = *allocation_length;
                w.finish()
            }
            Self::Inquiry {
                evpd,
                page_code,
                allocation_length,
            } => {
                let mut w = Writer::new(Op::INQUIRY, 6);
                w.flag(1, 0, *evpd);
                w.b[2] = *page_code;
                w.put(3, &allocation_length.to_be_bytes());
                w.finish()
            }
            Self::ReadCapacity10 => Writer::new(Op::READ_CAPACITY_10, 10).finish(),
            Self::ReadCapacity16 { allocation_length } => {
                let mut w = Writer::new(Op::SERVICE_ACTION_IN_16, 16);
                w.b[1] = Op::SA_READ_CAPACITY_16;
                w.put(10, &allocation_length.to_be_bytes());
                w.finish()
            }
            Self::GetLbaStatus { lba, allocation_length } => {
                let mut w = Writer::new(Op::SERVICE_ACTION_IN_16, 16);
                w.b[1] = Op::SA_GET_LBA_STATUS;
                w.put(2, &lba.to_be_bytes());
                w.put(10, &allocation_length.to_be_bytes());
                w.finish()
            }
            Self::Read(rw) | Self::Write(rw) => {
                let size = pick(rw.size, &ALL, |s| match s {
                    CdbSize::Six => {
                        !rw.dpo && !rw.fua && rw.lba <= 0x1F_FFFF && (1..=256).contains(&rw.transfer_length)
                    }
                    s => fits_10_12_16(s, rw.lba, rw.transfer_length),
                });
                let ops = if matches!(self, Self::Read(_)) {
                    [Op::READ_6, Op::READ_10, Op::READ_12, Op::READ_16]
                } else {
                    [Op::WRITE_6, Op::WRITE_10, Op::WRITE_12, Op::WRITE_16]
                };
                let mut w = Writer::new(sized_op(size, ops), size.cdb_len());
                if size != CdbSize::Six {
                    w.flag(1, 4, rw.dpo);
                    w.flag(1, 3, rw.fua);
                }
                w.lba_len(size, rw.lba, rw.transfer_length);
                w.finish()
            }
            Self::Verify(v) => {
                let size = pick(v.size, &TEN_TWELVE_SIXTEEN, |s| {
                    fits_10_12_16(s, v.lba, v.verification_length)
                });
                let ops = [Op::VERIFY_10, Op::VERIFY_10, Op::VERIFY_12, Op::VERIFY_16];
                let mut w = Writer::new(sized_op(size, ops), size.cdb_len());
                w.flag(1, 4, v.dpo);
                w.b[1] |= match v.bytchk {
                    ByteCheck::MediumOnly => 0,
                    ByteCheck::Compare => 0b01 << 1,
                    ByteCheck::CompareSingleBlock => 0b11 << 1,
                };
                w.lba_len(size, v.lba, v.verification_length);
                w.finish()
            }
            Self::WriteAndVerify(v) => {
                let size = pick(v.size, &TEN_TWELVE_SIXTEEN, |s| {
                    fits_10_12_16(s, v.lba, v.transfer_length)
                });
                let ops = [
                    Op::WRITE_AND_VERIFY_10,
                    Op::WRITE_AND_VERIFY_10,
                    Op::WRITE_AND_VERIFY_12,
                    Op::WRITE_AND_VERIFY_16,
                ];
                let mut w = Writer::new(sized_op(size, ops), size.cdb_len());
                w.flag(1, 4, v.dpo);
                w.flag(1, 1, v.bytchk);
                w.lba_len(size, v.lba, v.transfer_length);
                w.finish()
            }
            Self::WriteSame(ws) => {
                let size = pick(ws.size, &TEN_SIXTEEN, |s| {
                    !(ws.ndob && s == CdbSize::Ten) && fits_10_12_16(s, ws.lba, ws.number_of_blocks)
                });
                let op = sized_op(
                    size,
                    [
                        Op::WRITE_SAME_10,
                        Op::WRITE_SAME_10,
                        Op::WRITE_SAME_10,
                        Op::WRITE_SAME_16,
                    ],
                );
                let mut w = Writer::new(op, size.cdb_len());
                w.flag(1, 4, ws.anchor);
                w.flag(1, 3, ws.unmap);
                w.flag(1, 0, ws.ndob);
                w.lba_len(size, ws.lba, ws.number_of_blocks);
                w.finish()
            }
            Self::SynchronizeCache(r) | Self::PreFetch(r) => {
                let size = pick(r.size, &TEN_SIXTEEN, |s| fits_10_12_16(s, r.lba, r.number_of_blocks));
                let (ten, sixteen) = if matches!(self, Self::SynchronizeCache(_)) {
                    (Op::SYNCHRONIZE_CACHE_10, Op::SYNCHRONIZE_CACHE_16)
                } else {
                    (Op::PRE_FETCH_10, Op::PRE_FETCH_16)
                };
                let op = if size == CdbSize::Sixteen { sixteen } else { ten };
                let mut w = Writer::new(op, size.cdb_len());
                w.flag(1, 1, r.immed);
                w.lba_len(size, r.lba, r.number_of_blocks);
                w.finish()
            }
            Self::Unmap {
                anchor,
                parameter_list_length,
            } => {
                let mut w = Writer::new(Op::UNMAP, 10);
                w.flag(1, 0, *anchor);
                w.put(7, &parameter_list_length.to_be_bytes());
                w.finish()
            }
            Self::ModeSense6(m) => {
                let mut w = Writer::new(Op::MODE_SENSE_6, 6);
                w.flag(1, 3, m.dbd);
                w.b[2] = (page_control_bits(m.page_control) << 6) | (m.page_code & 0x3F);
                w.b[3] = m.subpage_code;
                w.b[4] = m.allocation_length;
                w.finish()
            }
            Self::ModeSense10(m) => {
                let mut w = Writer::new(Op::MODE_SENSE_10, 10);
                w.flag(1, 4, m.llbaa);
                w.flag(1, 3, m.dbd);
                w.b[2] = (page_control_bits(m.page_control) << 6) | (m.page_code & 0x3F);
                w.b[3] = m.subpage_code;
                w.put(7, &m.allocation_length.to_be_bytes());
                w.finish()
            }
            Self::ModeSelect6(m) => {
                let mut w = Writer::new(Op::MODE_SELECT_6, 6);
                w.flag(1, 4, m.pf);
                w.flag(1, 0, m.sp);
                w.b[4] = m.parameter_list_length;
                w.finish()
            }
            Self::ModeSelect10(m) => {
                let mut w = Writer::new(Op::MODE_SELECT_10, 10);
                w.flag(1, 4, m.pf);
                w.flag(1, 0, m.sp);
                w.put(7, &m.parameter_list_length.to_be_bytes());
                w.finish()
            }
            Self::ReportLuns {
                select_report,
                allocation_length,
            } => {
                let mut w = Writer::new(Op::REPORT_LUNS, 12);
                w.b[2] = *select_report;
                w.put(6, &allocation_length.to_be_bytes());
                w.finish()
            }
            Self::ReportSupportedOperationCodes(r) => {
                let mut w = Writer::new(Op::MAINTENANCE_IN, 12);
                w.b[1] = Op::SA_REPORT_SUPPORTED_OPERATION_CODES;
                w.b[2] = r.reporting_options as u8;
                w.flag(2, 7, r.rctd);
                w.b[3] = r.requested_operation_code.0;
                w.put(4, &r.requested_service_action.to_be_bytes());
                w.put(6, &r.allocation_length.to_be_bytes());
                w.finish()
            }
            Self::StartStopUnit(s) => {
                let mut w = Writer::new(Op::START_STOP_UNIT, 6);
                w.flag(1, 0, s.immed);
                w.b[3] = s.power_condition_modifier & 0x0F;
                w.b[4] = (s.power_condition & 0x0F) << 4;
                w.flag(4, 2, s.no_flush);
                w.flag(4, 1, s.loej);
                w.flag(4, 0, s.start);
                w.finish()
            }
            Self::PreventAllowMediumRemoval { prevent } => {
                let mut w = Writer::new(Op::PREVENT_ALLOW_MEDIUM_REMOVAL, 6);
                w.b[4] = prevent & 0x03;
                w.finish()
            }
            Self::CompareAndWrite(c) => {
                let mut w = Writer::new(Op::COMPARE_AND_WRITE, 16);
                w.flag(1, 4, c.dpo);
                w.flag(1, 3, c.fua);
                w.put(2, &c.lba.to_be_bytes());
                w.b[13] = c.number_of_blocks;
                w.finish()
            }
            Self::OrWrite(o) => {
                let mut w = Writer::new(Op::ORWRITE_16, 16);
                w.flag(1, 4, o.dpo);
                w.flag(1, 3, o.fua);
                w.put(2, &o.lba.to_be_bytes());
                w.put(10, &o.transfer_length.to_be_bytes());
                w.finish()
            }
            Self::Reserve6 => Writer::new(Op::RESERVE_6, 6).finish(),
            Self::Release6 => Writer::new(Op::RELEASE_6, 6).finish(),
            Self::PersistentReserveIn(r) => {
                let mut w = Writer::new(Op::PERSISTENT_RESERVE_IN, 10);
                w.b[1] = r.service_action as u8;
                w.put(7, &r.allocation_length.to_be_bytes());
                w.finish()
            }
            Self::PersistentReserveOut(r) => {
                let mut w = Writer::new(Op::PERSISTENT_RESERVE_OUT, 10);
                w.b[1] = r.service_action as u8;
                w.b[2] = ((r.scope & 0x0F) << 4) | (r.pr_type.0 & 0x0F);
                w.put(5, &r.parameter_list_length.to_be_bytes());
                w.finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::Op;

    fn bytes(c: Command) -> Vec<u8> {
        c.build().as_bytes().to_vec()
    }

    #[test]
    fn read_10_bytes() {
        let rw = ReadWrite {
            dpo: true,
            fua: true,
            ..ReadWrite::new(0x0102_0304, 0x0506)
        };
        assert_eq!(bytes(Command::Read(rw)), [0x28, 0x18, 1, 2, 3, 4, 0, 5, 6, 0]);
    }

    #[test]
    fn read_6_encodes_256_as_zero() {
        let rw = ReadWrite {
            size: CdbSize::Six,
            ..ReadWrite::new(0x1F_FFFF, 256)
        };
        assert_eq!(bytes(Command::Write(rw)), [0x0A, 0x1F, 0xFF, 0xFF, 0, 0]);
    }

    #[test]
    fn service_action_in_16_bytes() {
        let c = Command::GetLbaStatus {
            lba: 0x10,
            allocation_length: 0x1000,
        };
        assert_eq!(bytes(c), [0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x10, 0, 0, 0]);
        assert_eq!(
            bytes(Command::ReadCapacity16 { allocation_length: 32 }),
            [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]
        );
    }

    #[test]
    fn misc_bytes() {
        assert_eq!(
            bytes(Command::Inquiry {
                evpd: true,
                page_code: 0xB0,
                allocation_length: 0x0102
            }),
            [0x12, 1, 0xB0, 1, 2, 0]
        );
        let rsoc = ReportSupportedOperationCodes {
            rctd: true,
            reporting_options: ReportingOptions::OneServiceAction,
            requested_operation_code: Op::SERVICE_ACTION_IN_16,
            requested_service_action: 0x10,
            allocation_length: 0x200,
        };
        assert_eq!(
            bytes(Command::ReportSupportedOperationCodes(rsoc)),
            [0xA3, 0x0C, 0x82, 0x9E, 0, 0x10, 0, 0, 2, 0, 0, 0]
        );
        let caw = CompareAndWrite {
            lba: 7,
            number_of_blocks: 1,
            dpo: false,
            fua: true,
        };
        assert_eq!(
            bytes(Command::CompareAndWrite(caw)),
            [0x89, 0x08, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0]
        );
        let ms = ModeSense10 {
            llbaa: true,
            dbd: false,
            page_control: PageControl::Default,
            page_code: 0x08,
            subpage_code: 0,
            allocation_length: 0x0100,
        };
        assert_eq!(bytes(Command::ModeSense10(ms)), [0x5A, 0x10, 0x88, 0, 0, 0, 0, 1, 0, 0]);
        let sel = ModeSelect6 {
            pf: true,
            sp: false,
            parameter_list_length: 16,
        };
        assert_eq!(bytes(Command::ModeSelect6(sel)), [0x15, 0x10, 0, 0, 16, 0]);
        let sel = ModeSelect10 {
            pf: false,
            sp: true,
            parameter_list_length: 0x0118,
        };
        assert_eq!(
            bytes(Command::ModeSelect10(sel)),
            [0x55, 0x01, 0, 0, 0, 0, 0, 1, 0x18, 0]
        );
        assert_eq!(Command::TestUnitReady.build().padded(), [0; 16], "padding is zero");
        let orw = OrWrite {
            lba: 0x0102,
            transfer_length: 3,
            dpo: true,
            fua: false,
        };
        assert_eq!(
            bytes(Command::OrWrite(orw)),
            [0x8B, 0x10, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3, 0, 0]
        );
        assert_eq!(bytes(Command::Reserve6), [0x16, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(Command::Release6), [0x17, 0, 0, 0, 0, 0]);
        let prin = PersistentReserveIn {
            service_action: PersistentReserveInAction::ReportCapabilities,
            allocation_length: 0x0108,
        };
        assert_eq!(
            bytes(Command::PersistentReserveIn(prin)),
            [0x5E, 0x02, 0, 0, 0, 0, 0, 1, 8, 0]
        );
        let prout = PersistentReserveOut {
            service_action: PersistentReserveOutAction::RegisterAndIgnoreExistingKey,
            scope: 0x1F,
            pr_type: PersistentReservationType(0xF5),
            parameter_list_length: 24,
        };
        assert_eq!(
            bytes(Command::PersistentReserveOut(prout)),
            [0x5F, 0x06, 0xF5, 0, 0, 0, 0, 0, 24, 0],
            "scope and type are masked to four bits"
        );
    }
}

//! CDB bytes to [`Command`].
//!
//! The CDB is first copied into a zero-padded 16-byte array once its length
//! is known to be sufficient, so every field access (here and in
//! `fields.rs`) is a constant index into that array and cannot go out of
//! bounds.

use super::fields::{
    C, be16, be32, be64, bit, check_pmi, invalid, no_protection, page_control, read_write, sync_range, verify,
    write_and_verify, write_same,
};
use super::{
    CdbError, CdbSize, Command, CompareAndWrite, ModeSelect6, ModeSelect10, ModeSense6, ModeSense10,
    OperationCode as Op, OrWrite, PersistentReservationType, PersistentReserveIn, PersistentReserveInAction,
    PersistentReserveOut, PersistentReserveOutAction, ReportSupportedOperationCodes, ReportingOptions, StartStopUnit,
};

impl Command {
    /// Parses a CDB. `cdb` may be longer than the command (iSCSI always
    /// carries 16 bytes); the bytes past the opcode's CDB length are ignored.
    pub fn parse(cdb: &[u8]) -> Result<Command, CdbError> {
        let op = Op(*cdb.first().ok_or(CdbError::TooShort { needed: 1, got: 0 })?);
        if !supported(op) {
            return Err(CdbError::InvalidOpcode(op));
        }
        let len = op.cdb_len().ok_or(CdbError::InvalidOpcode(op))?;
        let given = cdb.get(..len).ok_or(CdbError::TooShort {
            needed: len,
            got: cdb.len(),
        })?;
        let mut c: C = [0; 16];
        for (d, s) in c.iter_mut().zip(given) {
            *d = *s;
        }
        // SAM-5 / SPC-4 CONTROL byte: "If the NACA bit is set to one but the
        // logical unit does not support ACA, the command shall be terminated
        // with CHECK CONDITION status, with the sense key set to ILLEGAL
        // REQUEST, and the additional sense code set to INVALID FIELD IN
        // CDB." Vendor-specific bits 7-6 and the obsolete LINK/FLAG bits are
        // ignored.
        let control = len - 1;
        if c.get(control).is_some_and(|b| b & 0x04 != 0) {
            return Err(invalid(control as u16, Some(2)));
        }
        parse_fields(op, &c)
    }
}

/// Whether `parse` implements `op` (service actions are checked later).
fn supported(op: Op) -> bool {
    matches!(
        op,
        Op::TEST_UNIT_READY
            | Op::REQUEST_SENSE
            | Op::INQUIRY
            | Op::READ_CAPACITY_10
            | Op::SERVICE_ACTION_IN_16
            | Op::READ_6
            | Op::READ_10
            | Op::READ_12
            | Op::READ_16
            | Op::WRITE_6
            | Op::WRITE_10
            | Op::WRITE_12
            | Op::WRITE_16
            | Op::VERIFY_10
            | Op::VERIFY_12
            | Op::VERIFY_16
            | Op::WRITE_AND_VERIFY_10
            | Op::WRITE_AND_VERIFY_12
            | Op::WRITE_AND_VERIFY_16
            | Op::WRITE_SAME_10
            | Op::WRITE_SAME_16
            | Op::UNMAP
            | Op::SYNCHRONIZE_CACHE_10
            | Op::SYNCHRONIZE_CACHE_16
            | Op::PRE_FETCH_10
            | Op::PRE_FETCH_16
            | Op::MODE_SENSE_6
            | Op::MODE_SENSE_10
            | Op::MODE_SELECT_6
            | Op::MODE_SELECT_10
            | Op::REPORT_LUNS
            | Op::MAINTENANCE_IN
            | Op::START_STOP_UNIT
            | Op::PREVENT_ALLOW_MEDIUM_REMOVAL
            | Op::COMPARE_AND_WRITE
            | Op::ORWRITE_16
            | Op::RESERVE_6
            | Op::RELEASE_6
            | Op::PERSISTENT_RESERVE_IN
            | Op::PERSISTENT_RESERVE_OUT
    )
}

fn parse_fields(op: Op, c: &C) -> Result<Command, CdbError> {
    use CdbSize::{Six, Sixteen, Ten, Twelve};
    Ok(match op {
        Op::TEST_UNIT_READY => Command::TestUnitReady,
        Op::REQUEST_SENSE => Command::RequestSense {
            desc: bit(c, 1, 0),
            allocation_length: c[4],
        },
        Op::INQUIRY => {
            // CmdDt (SPC-2) is obsolete; a device that does not support it
            // answered INVALID FIELD IN CDB, and an initiator setting it
            // expects a format we do not produce.
            if bit(c, 1, 1) {
                return Err(invalid(1, Some(1)));
            }
            let evpd = bit(c, 1, 0);
            // SPC-4 INQUIRY: "If the PAGE CODE field is not set to zero when
            // the EVPD bit is set to zero, the command shall be terminated
            // with CHECK CONDITION status, with the sense key set to ILLEGAL
            // REQUEST, and the additional sense code set to INVALID FIELD IN
            // CDB."
            if !evpd && c[2] != 0 {
                return Err(invalid(2, None));
            }
            Command::Inquiry {
                evpd,
                page_code: c[2],
                allocation_length: be16(c, 3),
            }
        }
        Op::READ_CAPACITY_10 => {
            check_pmi(bit(c, 8, 0), u64::from(be32(c, 2)))?;
            Command::ReadCapacity10
        }
        Op::SERVICE_ACTION_IN_16 => match c[1] & 0x1F {
            Op::SA_READ_CAPACITY_16 => {
                check_pmi(bit(c, 14, 0), be64(c, 2))?;
                Command::ReadCapacity16 {
                    allocation_length: be32(c, 10),
                }
            }
            Op::SA_GET_LBA_STATUS => Command::GetLbaStatus {
                lba: be64(c, 2),
                allocation_length: be32(c, 10),
            },
            _ => return Err(invalid(1, Some(4))),
        },
        Op::READ_6 => Command::Read(read_write(c, Six)?),
        Op::READ_10 => Command::Read(read_write(c, Ten)?),
        Op::READ_12 => Command::Read(read_write(c, Twelve)?),
        Op::READ_16 => Command::Read(read_write(c, Sixteen)?),
        Op::WRITE_6 => Command::Write(read_write(c, Six)?),
        Op::WRITE_10 => Command::Write(read_write(c, Ten)?),
        Op::WRITE_12 => Command::Write(read_write(c, Twelve)?),
        Op::WRITE_16 => Command::Write(read_write(c, Sixteen)?),
        Op::VERIFY_10 => Command::Verify(verify(c, Ten)?),
        Op::VERIFY_12 => Command::Verify(verify(c, Twelve)?),
        Op::VERIFY_16 => Command::Verify(verify(c, Sixteen)?),
        Op::WRITE_AND_VERIFY_10 => Command::WriteAndVerify(write_and_verify(c, Ten)?),
        Op::WRITE_AND_VERIFY_12 => Command::WriteAndVerify(write_and_verify(c, Twelve)?),
        Op::WRITE_AND_VERIFY_16 => Command::WriteAndVerify(write_and_verify(c, Sixteen)?),
        Op::WRITE_SAME_10 => Command::WriteSame(write_same(c, Ten)?),
        Op::WRITE_SAME_16 => Command::WriteSame(write_same(c, Sixteen)?),
        Op::UNMAP => Command::Unmap {
            anchor: bit(c, 1, 0),
            parameter_list_length: be16(c, 7),
        },
        Op::SYNCHRONIZE_CACHE_10 => Command::SynchronizeCache(sync_range(c, Ten)),
        Op::SYNCHRONIZE_CACHE_16 => Command::SynchronizeCache(sync_range(c, Sixteen)),
        Op::PRE_FETCH_10 => Command::PreFetch(sync_range(c, Ten)),
        Op::PRE_FETCH_16 => Command::PreFetch(sync_range(c, Sixteen)),
        Op::MODE_SENSE_6 => Command::ModeSense6(ModeSense6 {
            dbd: bit(c, 1, 3),
            page_control: page_control(c[2] >> 6),
            page_code: c[2] & 0x3F,
            subpage_code: c[3],
            allocation_length: c[4],
        }),
        Op::MODE_SENSE_10 => Command::ModeSense10(ModeSense10 {
            llbaa: bit(c, 1, 4),
            dbd: bit(c, 1, 3),
            page_control: page_control(c[2] >> 6),
            page_code: c[2] & 0x3F,
            subpage_code: c[3],
            allocation_length: be16(c, 7),
        }),
        // SP and PF are left to the device server: whether it can save
        // pages, or take a vendor-specific list, is not the CDB's business.
        Op::MODE_SELECT_6 => Command::ModeSelect6(ModeSelect6 {
            pf: bit(c, 1, 4),
            sp: bit(c, 1, 0),
            parameter_list_length: c[4],
        }),
        Op::MODE_SELECT_10 => Command::ModeSelect10(ModeSelect10 {
            pf: bit(c, 1, 4),
            sp: bit(c, 1, 0),
            parameter_list_length: be16(c, 7),
        }),
        Op::REPORT_LUNS => Command::ReportLuns {
            select_report: c[2],
            allocation_length: be32(c, 6),
        },
        Op::MAINTENANCE_IN => {
            if c[1] & 0x1F != Op::SA_REPORT_SUPPORTED_OPERATION_CODES {
                return Err(invalid(1, Some(4)));
            }
            let reporting_options = match c[2] & 0x07 {
                0 => ReportingOptions::All,
                1 => ReportingOptions::OneCommand,
                2 => ReportingOptions::OneServiceAction,
                3 => ReportingOptions::OneCommandOrServiceAction,
                _ => return Err(invalid(2, Some(2))),
            };
            Command::ReportSupportedOperationCodes(ReportSupportedOperationCodes {
                rctd: bit(c, 2, 7),
                reporting_options,
                requested_operation_code: Op(c[3]),
                requested_service_action: be16(c, 4),
                allocation_length: be32(c, 6),
            })
        }
        Op::START_STOP_UNIT => Command::StartStopUnit(StartStopUnit {
            immed: bit(c, 1, 0),
            power_condition_modifier: c[3] & 0x0F,
            power_condition: c[4] >> 4,
            no_flush: bit(c, 4, 2),
            loej: bit(c, 4, 1),
            start: bit(c, 4, 0),
        }),
        Op::PREVENT_ALLOW_MEDIUM_REMOVAL => Command::PreventAllowMediumRemoval { prevent: c[4] & 0x03 },
        Op::COMPARE_AND_WRITE => {
            no_protection(c)?;
            Command::CompareAndWrite(CompareAndWrite {
                lba: be64(c, 2),
                number_of_blocks: c[13],
                dpo: bit(c, 1, 4),
                fua: bit(c, 1, 3),
            })
        }
        Op::ORWRITE_16 => {
            // ORPROTECT: no protection information, as for WRPROTECT.
            no_protection(c)?;
            Command::OrWrite(OrWrite {
                lba: be64(c, 2),
                transfer_length: be32(c, 10),
                dpo: bit(c, 1, 4),
                fua: bit(c, 1, 3),
            })
        }
        Op::RESERVE_6 | Op::RELEASE_6 => {
            // SPC-2: third-party reservations (3RDPTY) and extents (EXTENT,
            // obsolete) are optional; a device server without them rejects
            // the bits rather than reserving something else than asked.
            if bit(c, 1, 4) {
                return Err(invalid(1, Some(4)));
            }
            if bit(c, 1, 0) {
                return Err(invalid(1, Some(0)));
            }
            if op == Op::RESERVE_6 {
                Command::Reserve6
            } else {
                Command::Release6
            }
        }
        // SPC-4: a reserved service action is INVALID FIELD IN CDB.
        Op::PERSISTENT_RESERVE_IN => Command::PersistentReserveIn(PersistentReserveIn {
            service_action: PersistentReserveInAction::from_code(c[1] & 0x1F).ok_or(invalid(1, Some(4)))?,
            allocation_length: be16(c, 7),
        }),
        Op::PERSISTENT_RESERVE_OUT => Command::PersistentReserveOut(PersistentReserveOut {
            service_action: PersistentReserveOutAction::from_code(c[1] & 0x1F).ok_or(invalid(1, Some(4)))?,
            scope: c[2] >> 4,
            pr_type: PersistentReservationType(c[2] & 0x0F),
            parameter_list_length: be32(c, 5),
        }),
        _ => return Err(CdbError::InvalidOpcode(op)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::PageControl;
    use super::*;
    use crate::scsi::{AdditionalSense, FieldPointer, SenseKey};

    fn p(b: &[u8]) -> Result<Command, CdbError> {
        Command::parse(b)
    }

    #[test]
    fn naca_points_at_control_byte() {
        let e = p(&[0x00, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(e, CdbError::InvalidField { byte: 5, bit: Some(2) });
        // Vendor bits are ignored.
        assert_eq!(p(&[0x00, 0, 0, 0, 0, 0xC0]), Ok(Command::TestUnitReady));
        let s = e.sense();
        assert_eq!(s.key, SenseKey::ILLEGAL_REQUEST);
        assert_eq!(
            s.field_pointer,
            Some(FieldPointer {
                cdb: true,
                bit: Some(2),
                byte: 5
            })
        );
    }

    #[test]
    fn inquiry_checks() {
        assert_eq!(
            p(&[0x12, 0x01, 0x83, 0x01, 0x00, 0x00]),
            Ok(Command::Inquiry {
                evpd: true,
                page_code: 0x83,
                allocation_length: 256
            })
        );
        assert_eq!(
            p(&[0x12, 0x00, 0x80, 0, 36, 0]),
            Err(CdbError::InvalidField { byte: 2, bit: None })
        );
        assert_eq!(
            p(&[0x12, 0x02, 0x00, 0, 36, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(1) })
        );
    }

    #[test]
    fn unknown_opcode_and_short_cdb() {
        let e = p(&[0xC1, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e, CdbError::InvalidOpcode(Op(0xC1)));
        assert_eq!(
            e.sense().additional_sense,
            AdditionalSense::INVALID_COMMAND_OPERATION_CODE
        );
        assert_eq!(e.sense().field_pointer, None);
        assert_eq!(p(&[0x28, 0, 0]), Err(CdbError::TooShort { needed: 10, got: 3 }));
        assert_eq!(p(&[]), Err(CdbError::TooShort { needed: 1, got: 0 }));
        assert_eq!(p(&[0x7F; 32]), Err(CdbError::InvalidOpcode(Op::VARIABLE_LENGTH)));
    }

    #[test]
    fn service_actions() {
        let mut rc16 = [0u8; 16];
        rc16[0] = 0x9E;
        rc16[1] = 0x10;
        rc16[13] = 32;
        assert_eq!(p(&rc16), Ok(Command::ReadCapacity16 { allocation_length: 32 }));
        rc16[1] = 0x11;
        assert_eq!(p(&rc16), Err(CdbError::InvalidField { byte: 1, bit: Some(4) }));
        rc16[1] = 0x10;
        rc16[9] = 1; // LBA without PMI
        assert_eq!(p(&rc16), Err(CdbError::InvalidField { byte: 2, bit: None }));
        rc16[14] = 1; // PMI
        assert!(p(&rc16).is_ok());
        let rsoc = [0xA3, 0x0C, 0x81, 0x28, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert_eq!(
            p(&rsoc),
            Ok(Command::ReportSupportedOperationCodes(ReportSupportedOperationCodes {
                rctd: true,
                reporting_options: ReportingOptions::OneCommand,
                requested_operation_code: Op::READ_10,
                requested_service_action: 0,
                allocation_length: 4096,
            }))
        );
        let bad = [0xA3, 0x0C, 0x04, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert_eq!(p(&bad), Err(CdbError::InvalidField { byte: 2, bit: Some(2) }));
    }

    #[test]
    fn reservation_commands() {
        assert_eq!(p(&[0x16, 0, 0, 0, 0, 0]), Ok(Command::Reserve6));
        assert_eq!(p(&[0x17, 0xE0, 0, 0, 0, 0]), Ok(Command::Release6));
        assert_eq!(
            p(&[0x16, 0x10, 0, 0, 0, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(4) })
        );
        assert_eq!(
            p(&[0x17, 0x01, 0, 0, 0, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(0) })
        );
        assert_eq!(
            p(&[0x5E, 0x03, 0, 0, 0, 0, 0, 0x40, 0x00, 0]),
            Ok(Command::PersistentReserveIn(PersistentReserveIn {
                service_action: PersistentReserveInAction::ReadFullStatus,
                allocation_length: 0x4000,
            }))
        );
        assert_eq!(
            p(&[0x5E, 0x04, 0, 0, 0, 0, 0, 0x40, 0x00, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(4) })
        );
        assert_eq!(
            p(&[0x5F, 0x01, 0x13, 0, 0, 0, 0, 0, 24, 0]),
            Ok(Command::PersistentReserveOut(PersistentReserveOut {
                service_action: PersistentReserveOutAction::Reserve,
                scope: 1,
                pr_type: PersistentReservationType::EXCLUSIVE_ACCESS,
                parameter_list_length: 24,
            }))
        );
        assert_eq!(
            p(&[0x5F, 0x08, 0, 0, 0, 0, 0, 0, 24, 0]),
            Err(CdbError::InvalidField { byte: 1, bit: Some(4) })
        );
    }

    #[test]
    fn orwrite_fields() {
        let mut b = [0u8; 16];
        b[0] = 0x8B;
        b[1] = 0x1A; // DPO, FUA, FUA_NV (ignored)
        b[9] = 7;
        b[13] = 2;
        b[14] = 0x1F; // GROUP NUMBER, ignored
        assert_eq!(
            p(&b),
            Ok(Command::OrWrite(OrWrite {
                lba: 7,
                transfer_length: 2,
                dpo: true,
                fua: true,
            }))
        );
        b[1] = 0x20; // ORPROTECT
        assert_eq!(p(&b), Err(CdbError::InvalidField { byte: 1, bit: Some(7) }));
    }

    #[test]
    fn mode_sense_and_misc() {
        assert_eq!(
            p(&[0x1A, 0x08, 0x7F, 0xFF, 0xFF, 0]),
            Ok(Command::ModeSense6(ModeSense6 {
                dbd: true,
                page_control: PageControl::Changeable,
                page_code: 0x3F,
                subpage_code: 0xFF,
                allocation_length: 255
            }))
        );
        assert_eq!(
            p(&[0x1B, 0x01, 0, 0x03, 0x36, 0]),
            Ok(Command::StartStopUnit(StartStopUnit {
                immed: true,
                power_condition_modifier: 3,
                power_condition: 3,
                no_flush: true,
                loej: true,
                start: false
            }))
        );
        assert_eq!(
            p(&[0x15, 0x11, 0, 0, 28, 0]),
            Ok(Command::ModeSelect6(ModeSelect6 {
                pf: true,
                sp: true,
                parameter_list_length: 28
            }))
        );
        assert_eq!(
            p(&[0x55, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x02, 0]),
            Ok(Command::ModeSelect10(ModeSelect10 {
                pf: true,
                sp: false,
                parameter_list_length: 0x0102
            }))
        );
        assert_eq!(
            p(&[0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0x04]),
            Err(CdbError::InvalidField { byte: 9, bit: Some(2) })
        );
        assert_eq!(
            p(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
            Ok(Command::Unmap {
                anchor: false,
                parameter_list_length: 24
            })
        );
    }
}

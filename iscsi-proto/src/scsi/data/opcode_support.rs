//! What this crate's CDB parser implements, as REPORT SUPPORTED OPERATION
//! CODES reports it: one table of (operation code, service action, CDB
//! usage map), kept in step with `cdb/parse.rs` by a test, and the complete
//! answer a target sends for any reporting option.

use super::{CommandDescriptor, CommandTimeouts, OneCommandData, SupportedOperationCodes};
use crate::scsi::cdb::{OperationCode, ReportSupportedOperationCodes, ReportingOptions};
use crate::scsi::sense::Sense;

impl SupportedOperationCodes {
    /// Every command [`crate::scsi::Command::parse`] accepts, for a target's
    /// "all commands" answer.
    pub fn supported_by_parser(rctd: bool) -> Self {
        let commands = TABLE
            .iter()
            .map(|(op, sa, usage)| CommandDescriptor {
                operation_code: OperationCode(*op),
                service_action: sa.map(u16::from),
                cdb_length: usage.len() as u16,
                timeouts: rctd.then_some(CommandTimeouts::default()),
            })
            .collect();
        Self { commands }
    }
}

/// The CDB usage map for a command this crate's parser implements, or
/// `None` for any other (operation code, service action).
pub fn usage_data(op: OperationCode, service_action: u16) -> Option<&'static [u8]> {
    TABLE
        .iter()
        .find(|(o, sa, _)| *o == op.0 && sa.is_none_or(|sa| u16::from(sa) == service_action))
        .map(|(_, _, usage)| *usage)
}

fn has_service_actions(op: OperationCode) -> bool {
    TABLE.iter().any(|(o, sa, _)| *o == op.0 && sa.is_some())
}

/// The complete REPORT SUPPORTED OPERATION CODES answer (before allocation
/// length truncation) describing this crate's parser. SPC-4: with REPORTING
/// OPTIONS 001b "if the requested operation code has service actions", and
/// with 010b if it has none, the command is terminated with ILLEGAL
/// REQUEST / INVALID FIELD IN CDB (pointing at REPORTING OPTIONS).
pub fn report_supported_operation_codes(req: &ReportSupportedOperationCodes) -> Result<Vec<u8>, Sense> {
    let op = req.requested_operation_code;
    let timeouts = req.rctd.then_some(CommandTimeouts::default());
    let lookup = |sa: u16| match usage_data(op, sa) {
        Some(usage) => OneCommandData {
            support: OneCommandData::SUPPORT_STANDARD,
            cdb_usage_data: usage.to_vec(),
            timeouts,
        },
        None => OneCommandData {
            support: OneCommandData::SUPPORT_NOT_SUPPORTED,
            cdb_usage_data: Vec::new(),
            timeouts: None,
        },
    };
    let bad_options = Sense::invalid_field_in_cdb(2, Some(2));
    let one = match (req.reporting_options, has_service_actions(op)) {
        (ReportingOptions::All, _) => {
            return Ok(SupportedOperationCodes::supported_by_parser(req.rctd).to_bytes());
        }
        (ReportingOptions::OneCommand, true) | (ReportingOptions::OneServiceAction, false) => {
            return Err(bad_options);
        }
        (ReportingOptions::OneCommand | ReportingOptions::OneCommandOrServiceAction, false) => lookup(0),
        (ReportingOptions::OneServiceAction | ReportingOptions::OneCommandOrServiceAction, true) => {
            lookup(req.requested_service_action)
        }
    };
    Ok(one.to_bytes())
}

const F4: u8 = 0xFF;
/// CONTROL byte usage: only NACA is evaluated (and rejected when set).
const CTL: u8 = 0x04;

/// (operation code, service action, CDB usage data) for every command the
/// parser in `cdb/parse.rs` implements; kept in step with it by the tests.
const TABLE: &[(u8, Option<u8>, &[u8])] = &[
    (0x00, None, &[0x00, 0, 0, 0, 0, CTL]),
    (0x03, None, &[0x03, 0x01, 0, 0, F4, CTL]),
    (0x08, None, &[0x08, 0x1F, F4, F4, F4, CTL]),
    (0x0A, None, &[0x0A, 0x1F, F4, F4, F4, CTL]),
    (0x12, None, &[0x12, 0x01, F4, F4, F4, CTL]),
    (0x15, None, &[0x15, 0x11, 0, 0, F4, CTL]),
    (0x16, None, &[0x16, 0, 0, 0, 0, CTL]),
    (0x17, None, &[0x17, 0, 0, 0, 0, CTL]),
    (0x1A, None, &[0x1A, 0x08, F4, F4, F4, CTL]),
    (0x1B, None, &[0x1B, 0x01, 0, 0x0F, 0xF7, CTL]),
    (0x1E, None, &[0x1E, 0, 0, 0, 0x03, CTL]),
    (0x25, None, &[0x25, 0, F4, F4, F4, F4, 0, 0, 0x01, CTL]),
    (0x28, None, &[0x28, 0x18, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x2A, None, &[0x2A, 0x18, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x2E, None, &[0x2E, 0x16, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x2F, None, &[0x2F, 0x16, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x34, None, &[0x34, 0x02, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x35, None, &[0x35, 0x02, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x41, None, &[0x41, 0x18, F4, F4, F4, F4, 0, F4, F4, CTL]),
    (0x42, None, &[0x42, 0x01, 0, 0, 0, 0, 0, F4, F4, CTL]),
    (0x55, None, &[0x55, 0x11, 0, 0, 0, 0, 0, F4, F4, CTL]),
    (0x5A, None, &[0x5A, 0x18, F4, F4, 0, 0, 0, F4, F4, CTL]),
    (0x5E, Some(0x00), &[0x5E, 0x00, 0, 0, 0, 0, 0, F4, F4, CTL]),
    (0x5E, Some(0x01), &[0x5E, 0x01, 0, 0, 0, 0, 0, F4, F4, CTL]),
    (0x5E, Some(0x02), &[0x5E, 0x02, 0, 0, 0, 0, 0, F4, F4, CTL]),
    (0x5E, Some(0x03), &[0x5E, 0x03, 0, 0, 0, 0, 0, F4, F4, CTL]),
    (0x5F, Some(0x00), &[0x5F, 0x00, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x01), &[0x5F, 0x01, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x02), &[0x5F, 0x02, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x03), &[0x5F, 0x03, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x04), &[0x5F, 0x04, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x05), &[0x5F, 0x05, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x06), &[0x5F, 0x06, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (0x5F, Some(0x07), &[0x5F, 0x07, F4, 0, 0, F4, F4, F4, F4, CTL]),
    (
        0x88,
        None,
        &[0x88, 0x18, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x89,
        None,
        &[0x89, 0x18, F4, F4, F4, F4, F4, F4, F4, F4, 0, 0, 0, F4, 0, CTL],
    ),
    (
        0x8A,
        None,
        &[0x8A, 0x18, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x8B,
        None,
        &[0x8B, 0x18, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x8E,
        None,
        &[0x8E, 0x16, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x8F,
        None,
        &[0x8F, 0x16, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x90,
        None,
        &[0x90, 0x02, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x91,
        None,
        &[0x91, 0x02, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x93,
        None,
        &[0x93, 0x19, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (
        0x9E,
        Some(0x10),
        &[0x9E, 0x10, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0x01, CTL],
    ),
    (
        0x9E,
        Some(0x12),
        &[0x9E, 0x12, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (0xA0, None, &[0xA0, 0, F4, 0, 0, 0, F4, F4, F4, F4, 0, CTL]),
    (
        0xA3,
        Some(0x0C),
        &[0xA3, 0x0C, 0x87, F4, F4, F4, F4, F4, F4, F4, 0, CTL],
    ),
    (0xA8, None, &[0xA8, 0x18, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL]),
    (0xAA, None, &[0xAA, 0x18, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL]),
    (0xAE, None, &[0xAE, 0x16, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL]),
    (0xAF, None, &[0xAF, 0x16, F4, F4, F4, F4, F4, F4, F4, F4, 0, CTL]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::{CdbError, Command};

    #[test]
    fn table_matches_parser() {
        for (op, sa, usage) in TABLE {
            assert_eq!(Some(usage.len()), OperationCode(*op).cdb_len(), "{op:#x}");
            // A CDB of zeros (plus the service action) parses: the opcode is
            // implemented.
            let mut cdb = [0u8; 16];
            cdb[0] = *op;
            cdb[1] = sa.unwrap_or(0);
            let r = Command::parse(&cdb);
            assert!(!matches!(r, Err(CdbError::InvalidOpcode(_))), "{op:#x} not parsed");
        }
        for op in 0..=255u8 {
            let mut cdb = [0u8; 16];
            cdb[0] = op;
            if Command::parse(&cdb).is_ok() && !has_service_actions(OperationCode(op)) {
                assert!(usage_data(OperationCode(op), 0).is_some(), "{op:#x} missing");
            }
        }
    }

    #[test]
    fn one_command_and_respond() {
        let req = ReportSupportedOperationCodes {
            rctd: false,
            reporting_options: ReportingOptions::OneCommand,
            requested_operation_code: OperationCode::READ_10,
            requested_service_action: 0,
            allocation_length: 512,
        };
        let b = report_supported_operation_codes(&req).unwrap();
        assert_eq!(&b[..4], &[0, 0x03, 0, 10]);
        assert_eq!(&b[4..], &[0x28, 0x18, F4, F4, F4, F4, 0, F4, F4, CTL]);
        assert_eq!(OneCommandData::parse(&b).unwrap().cdb_usage_data.len(), 10);
        let sai = ReportSupportedOperationCodes {
            requested_operation_code: OperationCode::SERVICE_ACTION_IN_16,
            ..req
        };
        assert_eq!(
            report_supported_operation_codes(&sai),
            Err(Sense::invalid_field_in_cdb(2, Some(2)))
        );
        let sai = ReportSupportedOperationCodes {
            reporting_options: ReportingOptions::OneServiceAction,
            requested_service_action: 0x12,
            rctd: true,
            ..sai
        };
        let one = OneCommandData::parse(&report_supported_operation_codes(&sai).unwrap()).unwrap();
        assert_eq!(one.support, OneCommandData::SUPPORT_STANDARD);
        assert_eq!(&one.cdb_usage_data[..2], &[0x9E, 0x12]);
        assert_eq!(one.timeouts, Some(CommandTimeouts::default()));
        let unknown = ReportSupportedOperationCodes {
            requested_operation_code: OperationCode(0xC5),
            ..req
        };
        assert_eq!(report_supported_operation_codes(&unknown).unwrap(), [0, 0x01, 0, 0]);
        let all = ReportSupportedOperationCodes {
            reporting_options: ReportingOptions::All,
            ..req
        };
        let list = SupportedOperationCodes::parse(&report_supported_operation_codes(&all).unwrap()).unwrap();
        assert_eq!(list.commands.len(), TABLE.len());
    }
}

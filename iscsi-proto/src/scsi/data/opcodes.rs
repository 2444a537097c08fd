//! REPORT SUPPORTED OPERATION CODES parameter data (SPC-4): the
//! "all commands" list and the "one command" form with its CDB usage map.
//! `opcode_support.rs` fills them in for this crate's own parser.

use super::{DataError, need};
use crate::scsi::be;
use crate::scsi::cdb::OperationCode;

/// Command timeouts descriptor (12 bytes), sent when RCTD is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CommandTimeouts {
    pub command_specific: u8,
    /// Seconds; 0 means not specified.
    pub nominal_command_processing_timeout: u32,
    /// Seconds; 0 means not specified.
    pub recommended_command_timeout: u32,
}

impl CommandTimeouts {
    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0x00, 0x0A, 0, self.command_specific]);
        out.extend_from_slice(&self.nominal_command_processing_timeout.to_be_bytes());
        out.extend_from_slice(&self.recommended_command_timeout.to_be_bytes());
    }

    /// Parses a descriptor, returning it and its total length.
    fn parse(buf: &[u8]) -> Option<(Self, usize)> {
        let len = usize::from(be::u16_at(buf, 0)?) + 2;
        buf.get(..len)?;
        Some((
            Self {
                command_specific: be::u8_at(buf, 3)?,
                nominal_command_processing_timeout: be::u32_at(buf, 4)?,
                recommended_command_timeout: be::u32_at(buf, 8)?,
            },
            len,
        ))
    }
}

/// One entry of the "all commands" list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandDescriptor {
    pub operation_code: OperationCode,
    /// The service action, for commands that have them (SERVACTV = 1).
    pub service_action: Option<u16>,
    pub cdb_length: u16,
    /// Present (CTDP = 1) when the request had RCTD set.
    pub timeouts: Option<CommandTimeouts>,
}

/// The "all commands" format (REPORTING OPTIONS 000b).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SupportedOperationCodes {
    pub commands: Vec<CommandDescriptor>,
}

impl SupportedOperationCodes {
    /// COMMAND DATA LENGTH (n-3) then 8-byte descriptors, each followed by
    /// its timeouts descriptor when it has one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        for c in &self.commands {
            out.push(c.operation_code.0);
            out.push(0);
            out.extend_from_slice(&c.service_action.unwrap_or(0).to_be_bytes());
            out.push(0);
            out.push((u8::from(c.timeouts.is_some()) << 1) | u8::from(c.service_action.is_some()));
            out.extend_from_slice(&c.cdb_length.to_be_bytes());
            if let Some(t) = &c.timeouts {
                t.emit(&mut out);
            }
        }
        let len = be::clamp_u32(out.len() - 4).to_be_bytes();
        out[..4].copy_from_slice(&len);
        out
    }

    /// Parses the complete descriptors present.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 4)?;
        let len = usize::try_from(be::u32_at(buf, 0).unwrap_or(0)).unwrap_or(usize::MAX);
        let mut rest = buf.get(4..buf.len().min(len.saturating_add(4))).unwrap_or(&[]);
        let mut commands = Vec::new();
        while let Some(d) = be::array::<8>(rest, 0) {
            let ctdp = d[5] & 0x02 != 0;
            let mut used = 8;
            let timeouts = if ctdp {
                let Some((t, n)) = rest.get(8..).and_then(CommandTimeouts::parse) else {
                    break;
                };
                used += n;
                Some(t)
            } else {
                None
            };
            commands.push(CommandDescriptor {
                operation_code: OperationCode(d[0]),
                service_action: (d[5] & 0x01 != 0).then(|| u16::from_be_bytes([d[2], d[3]])),
                cdb_length: u16::from_be_bytes([d[6], d[7]]),
                timeouts,
            });
            rest = rest.get(used..).unwrap_or(&[]);
        }
        Ok(Self { commands })
    }
}

/// The "one command" format (REPORTING OPTIONS 001b-011b).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OneCommandData {
    /// SUPPORT (3 bits), see the `SUPPORT_*` constants.
    pub support: u8,
    /// CDB USAGE DATA: byte 0 is the opcode, the service action sits in its
    /// field, and every other bit is 1 where the device server uses that
    /// CDB bit. Its length is CDB SIZE.
    pub cdb_usage_data: Vec<u8>,
    pub timeouts: Option<CommandTimeouts>,
}

impl OneCommandData {
    /// Data about the command is not currently available.
    pub const SUPPORT_NOT_AVAILABLE: u8 = 0b000;
    /// The command is not supported (no usage data).
    pub const SUPPORT_NOT_SUPPORTED: u8 = 0b001;
    /// Supported, conforming to a SCSI standard.
    pub const SUPPORT_STANDARD: u8 = 0b011;
    /// Supported, in a vendor-specific manner.
    pub const SUPPORT_VENDOR_SPECIFIC: u8 = 0b101;

    pub fn to_bytes(&self) -> Vec<u8> {
        let usage = self
            .cdb_usage_data
            .get(..usize::from(u16::MAX))
            .unwrap_or(&self.cdb_usage_data);
        let mut out = vec![0, (u8::from(self.timeouts.is_some()) << 7) | (self.support & 0x07)];
        out.extend_from_slice(&be::clamp_u16(usage.len()).to_be_bytes());
        out.extend_from_slice(usage);
        if let Some(t) = &self.timeouts {
            t.emit(&mut out);
        }
        out
    }

    /// Parses the data; usage data cut short by the allocation length is
    /// returned as far as it arrived.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 4)?;
        let b1 = be::u8_at(buf, 1).unwrap_or(0);
        let size = usize::from(be::u16_at(buf, 2).unwrap_or(0));
        let end = buf.len().min(4 + size);
        let timeouts = if b1 & 0x80 != 0 {
            buf.get(4 + size..).and_then(CommandTimeouts::parse).map(|(t, _)| t)
        } else {
            None
        };
        Ok(Self {
            support: b1 & 0x07,
            cdb_usage_data: buf.get(4..end).unwrap_or(&[]).to_vec(),
            timeouts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_commands_bytes() {
        let s = SupportedOperationCodes {
            commands: vec![
                CommandDescriptor {
                    operation_code: OperationCode::READ_10,
                    service_action: None,
                    cdb_length: 10,
                    timeouts: None,
                },
                CommandDescriptor {
                    operation_code: OperationCode::SERVICE_ACTION_IN_16,
                    service_action: Some(0x10),
                    cdb_length: 16,
                    timeouts: Some(CommandTimeouts {
                        command_specific: 0,
                        nominal_command_processing_timeout: 1,
                        recommended_command_timeout: 30,
                    }),
                },
            ],
        };
        let b = s.to_bytes();
        assert_eq!(&b[..4], &[0, 0, 0, 28]);
        assert_eq!(&b[4..12], &[0x28, 0, 0, 0, 0, 0, 0, 10]);
        assert_eq!(&b[12..20], &[0x9E, 0, 0, 0x10, 0, 0x03, 0, 16]);
        assert_eq!(&b[20..32], &[0, 0x0A, 0, 0, 0, 0, 0, 1, 0, 0, 0, 30]);
        assert_eq!(SupportedOperationCodes::parse(&b), Ok(s.clone()));
        // Truncated: only the complete first descriptor.
        assert_eq!(SupportedOperationCodes::parse(&b[..22]).unwrap().commands.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = SupportedOperationCodes::parse(&b);
            let _ = OneCommandData::parse(&b);
        }
    }
}

//! Persistent reservation data (SPC-4): the PERSISTENT RESERVE OUT
//! parameter list, the four PERSISTENT RESERVE IN formats, and the iSCSI
//! TransportID that names an initiator port in READ FULL STATUS.
//!
//! Length fields describe the whole data whatever the allocation length
//! (SPC-4 READ KEYS: "The contents of the ADDITIONAL LENGTH field are not
//! altered based on the allocation length"); the target cuts the bytes
//! with [`super::truncate_to_allocation_length`].

use super::{DataError, ParameterListError, need};
use crate::pdu::Isid;
use crate::scsi::be;
use crate::scsi::cdb::PersistentReservationType;
use crate::scsi::data::PROTOCOL_ISCSI;

/// The basic PERSISTENT RESERVE OUT parameter list (every service action
/// but REGISTER AND MOVE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PrOutParameterList {
    pub reservation_key: u64,
    pub service_action_reservation_key: u64,
    /// Specify initiator ports: a TransportID list follows byte 24.
    pub spec_i_pt: bool,
    /// Register every target port of the SCSI target device.
    pub all_tg_pt: bool,
    /// Activate persist through power loss.
    pub aptpl: bool,
}

impl PrOutParameterList {
    /// The basic list's length, and what PARAMETER LIST LENGTH must say
    /// unless SPEC_I_PT is set.
    pub const LEN: usize = 24;

    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.reservation_key.to_be_bytes());
        b[8..16].copy_from_slice(&self.service_action_reservation_key.to_be_bytes());
        b[20] = (u8::from(self.spec_i_pt) << 3) | (u8::from(self.all_tg_pt) << 2) | u8::from(self.aptpl);
        b
    }

    /// Decodes the Data-Out buffer of a PERSISTENT RESERVE OUT whose CDB
    /// had `parameter_list_length`. SPC-4: "If the SPEC_I_PT bit is set to
    /// zero, and the service action is not REGISTER AND MOVE, then the
    /// parameter list shall be 24 bytes in length and the PARAMETER LIST
    /// LENGTH field shall contain 24 (18h). If the parameter list length is
    /// not 24, then the device server shall terminate the command with
    /// CHECK CONDITION status with the sense key set to ILLEGAL REQUEST and
    /// the additional sense code set to PARAMETER LIST LENGTH ERROR." A
    /// list that says SPEC_I_PT may be longer; the TransportIDs after byte
    /// 24 are the caller's to read (or to refuse).
    pub fn parse(data: &[u8], parameter_list_length: u32) -> Result<Self, ParameterListError> {
        let pll = usize::try_from(parameter_list_length).unwrap_or(usize::MAX);
        let Some(b) = data.get(..Self::LEN).filter(|_| pll >= Self::LEN) else {
            return Err(ParameterListError::LengthError);
        };
        let flags = b[20];
        let list = Self {
            reservation_key: be::u64_at(b, 0).unwrap_or(0),
            service_action_reservation_key: be::u64_at(b, 8).unwrap_or(0),
            spec_i_pt: flags & 0x08 != 0,
            all_tg_pt: flags & 0x04 != 0,
            aptpl: flags & 0x01 != 0,
        };
        if !list.spec_i_pt && pll != Self::LEN {
            return Err(ParameterListError::LengthError);
        }
        Ok(list)
    }
}

/// READ KEYS data: the reservation key of every registered I_T nexus.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ReadKeysData {
    /// PRGENERATION: counts the PERSISTENT RESERVE OUT commands that
    /// changed the registrations.
    pub generation: u32,
    pub keys: Vec<u64>,
}

impl ReadKeysData {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 8 * self.keys.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&be::clamp_u32(8 * self.keys.len()).to_be_bytes());
        for key in &self.keys {
            out.extend_from_slice(&key.to_be_bytes());
        }
        out
    }

    /// The keys present: complete ones within both the ADDITIONAL LENGTH
    /// and the data received.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 8)?;
        let len = usize::try_from(be::u32_at(buf, 4).unwrap_or(0)).unwrap_or(usize::MAX);
        let end = buf.len().min(len.saturating_add(8));
        let keys = buf
            .get(8..end)
            .unwrap_or(&[])
            .chunks_exact(8)
            .filter_map(|k| be::u64_at(k, 0))
            .collect();
        Ok(Self {
            generation: be::u32_at(buf, 0).unwrap_or(0),
            keys,
        })
    }

    /// ADDITIONAL LENGTH as the device sent it: how many bytes of keys exist
    /// even when the allocation length cut them off.
    pub fn additional_length(buf: &[u8]) -> Option<u32> {
        be::u32_at(buf, 4)
    }
}

/// The reservation READ RESERVATION describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationDescriptor {
    /// The holder's key; SPC-4 has it zero for an all registrants type.
    pub key: u64,
    pub scope: u8,
    pub pr_type: PersistentReservationType,
}

/// READ RESERVATION data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadReservationData {
    pub generation: u32,
    pub reservation: Option<ReservationDescriptor>,
}

impl ReadReservationData {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.generation.to_be_bytes());
        match self.reservation {
            None => out.extend_from_slice(&0u32.to_be_bytes()),
            Some(r) => {
                out.extend_from_slice(&16u32.to_be_bytes());
                out.extend_from_slice(&r.key.to_be_bytes());
                out.extend_from_slice(&[0; 5]);
                out.push(((r.scope & 0x0F) << 4) | (r.pr_type.0 & 0x0F));
                out.extend_from_slice(&[0; 2]);
            }
        }
        out
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 8)?;
        let generation = be::u32_at(buf, 0).unwrap_or(0);
        if be::u32_at(buf, 4).unwrap_or(0) == 0 {
            return Ok(Self {
                generation,
                reservation: None,
            });
        }
        need(buf, 22)?;
        let scope_type = be::u8_at(buf, 21).unwrap_or(0);
        Ok(Self {
            generation,
            reservation: Some(ReservationDescriptor {
                key: be::u64_at(buf, 8).unwrap_or(0),
                scope: scope_type >> 4,
                pr_type: PersistentReservationType(scope_type & 0x0F),
            }),
        })
    }
}

/// REPORT CAPABILITIES data: what the device server's persistent
/// reservations support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReportCapabilitiesData {
    /// Replace lost reservation capable.
    pub rlr_c: bool,
    /// Compatible reservation handling: RESERVE/RELEASE follow SPC-4's
    /// exceptions to SPC-2 while registrations exist.
    pub crh: bool,
    /// Specify initiator ports capable.
    pub sip_c: bool,
    /// All target ports capable.
    pub atp_c: bool,
    /// Persist through power loss capable.
    pub ptpl_c: bool,
    /// The type mask is valid.
    pub tmv: bool,
    /// ALLOW COMMANDS (3 bits).
    pub allow_commands: u8,
    /// Persist through power loss activated.
    pub ptpl_a: bool,
    /// PERSISTENT RESERVATION TYPE MASK, see
    /// [`PersistentReservationType::type_mask_bit`].
    pub type_mask: u16,
}

impl ReportCapabilitiesData {
    pub const LEN: usize = 8;

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&(Self::LEN as u16).to_be_bytes());
        b[2] = (u8::from(self.rlr_c) << 7)
            | (u8::from(self.crh) << 4)
            | (u8::from(self.sip_c) << 3)
            | (u8::from(self.atp_c) << 2)
            | u8::from(self.ptpl_c);
        b[3] = (u8::from(self.tmv) << 7) | ((self.allow_commands & 0x07) << 4) | u8::from(self.ptpl_a);
        b[4..6].copy_from_slice(&self.type_mask.to_be_bytes());
        b
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 6)?;
        let byte = |at| be::u8_at(buf, at).unwrap_or(0);
        Ok(Self {
            rlr_c: byte(2) & 0x80 != 0,
            crh: byte(2) & 0x10 != 0,
            sip_c: byte(2) & 0x08 != 0,
            atp_c: byte(2) & 0x04 != 0,
            ptpl_c: byte(2) & 0x01 != 0,
            tmv: byte(3) & 0x80 != 0,
            allow_commands: (byte(3) >> 4) & 0x07,
            ptpl_a: byte(3) & 0x01 != 0,
            type_mask: be::u16_at(buf, 4).unwrap_or(0),
        })
    }
}

/// One registration in READ FULL STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FullStatusDescriptor {
    pub key: u64,
    pub all_tg_pt: bool,
    /// This I_T nexus holds the reservation; SCOPE and TYPE are only
    /// meaningful (and only sent) when it does.
    pub reservation_holder: bool,
    pub scope: u8,
    pub pr_type: PersistentReservationType,
    /// RELATIVE TARGET PORT IDENTIFIER of the registration's target port.
    pub relative_target_port: u16,
    /// The initiator port's TransportID (see [`iscsi_transport_id`]).
    pub transport_id: Vec<u8>,
}

/// READ FULL STATUS data: every registration and the reservation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ReadFullStatusData {
    pub generation: u32,
    pub descriptors: Vec<FullStatusDescriptor>,
}

/// Bytes of a full status descriptor before its TransportID.
const FULL_STATUS_HEADER: usize = 24;

impl ReadFullStatusData {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for d in &self.descriptors {
            body.extend_from_slice(&d.key.to_be_bytes());
            body.extend_from_slice(&[0; 4]);
            body.push((u8::from(d.all_tg_pt) << 1) | u8::from(d.reservation_holder));
            body.push(if d.reservation_holder {
                ((d.scope & 0x0F) << 4) | (d.pr_type.0 & 0x0F)
            } else {
                0
            });
            body.extend_from_slice(&[0; 4]);
            body.extend_from_slice(&d.relative_target_port.to_be_bytes());
            body.extend_from_slice(&be::clamp_u32(d.transport_id.len()).to_be_bytes());
            body.extend_from_slice(&d.transport_id);
        }
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&be::clamp_u32(body.len()).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The complete descriptors present; one cut off by the allocation
    /// length (or claiming more bytes than remain) ends the list.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 8)?;
        let len = usize::try_from(be::u32_at(buf, 4).unwrap_or(0)).unwrap_or(usize::MAX);
        let end = buf.len().min(len.saturating_add(8));
        let mut rest = buf.get(8..end).unwrap_or(&[]);
        let mut descriptors = Vec::new();
        while let Some(header) = rest.get(..FULL_STATUS_HEADER) {
            let id_len = usize::try_from(be::u32_at(header, 20).unwrap_or(0)).unwrap_or(usize::MAX);
            let Some(transport_id) = rest.get(FULL_STATUS_HEADER..FULL_STATUS_HEADER.saturating_add(id_len)) else {
                break;
            };
            let flags = header[12];
            descriptors.push(FullStatusDescriptor {
                key: be::u64_at(header, 0).unwrap_or(0),
                all_tg_pt: flags & 0x02 != 0,
                reservation_holder: flags & 0x01 != 0,
                scope: header[13] >> 4,
                pr_type: PersistentReservationType(header[13] & 0x0F),
                relative_target_port: be::u16_at(header, 18).unwrap_or(0),
                transport_id: transport_id.to_vec(),
            });
            rest = rest.get(FULL_STATUS_HEADER + id_len..).unwrap_or(&[]);
        }
        Ok(Self {
            generation: be::u32_at(buf, 0).unwrap_or(0),
            descriptors,
        })
    }
}

/// The TransportID of an iSCSI initiator port (SPC-4, FORMAT CODE 01b):
/// the iSCSI name, ",i,0x", the ISID in hexadecimal, a NUL, and padding
/// to a multiple of four bytes (at least 20 of them, as SPC-4 requires).
pub fn iscsi_transport_id(initiator_name: &str, isid: Isid) -> Vec<u8> {
    let mut port = initiator_name.as_bytes().to_vec();
    port.extend_from_slice(b",i,0x");
    for b in isid.0 {
        port.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    port.push(0);
    let padded = port.len().next_multiple_of(4).max(20);
    port.resize(padded, 0);
    let mut out = Vec::with_capacity(4 + port.len());
    out.push((0b01 << 6) | PROTOCOL_ISCSI);
    out.push(0);
    out.extend_from_slice(&be::clamp_u16(port.len()).to_be_bytes());
    out.extend_from_slice(&port);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::data::truncate_to_allocation_length;

    #[test]
    fn parameter_list_bytes_and_length_rules() {
        let list = PrOutParameterList {
            reservation_key: 0x0102_0304_0506_0708,
            service_action_reservation_key: 0x1112_1314_1516_1718,
            spec_i_pt: false,
            all_tg_pt: true,
            aptpl: true,
        };
        let b = list.to_bytes();
        assert_eq!(&b[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 0x11]);
        assert_eq!(&b[16..], &[0, 0, 0, 0, 0x05, 0, 0, 0]);
        assert_eq!(PrOutParameterList::parse(&b, 24), Ok(list));
        // Longer data than the length is not looked at...
        let mut long = b.to_vec();
        long.extend_from_slice(&[0xA5; 8]);
        assert_eq!(PrOutParameterList::parse(&long, 24), Ok(list));
        // ...but a length other than 24 is an error without SPEC_I_PT.
        assert_eq!(
            PrOutParameterList::parse(&long, 32),
            Err(ParameterListError::LengthError)
        );
        assert_eq!(
            PrOutParameterList::parse(&b[..20], 24),
            Err(ParameterListError::LengthError)
        );
        assert_eq!(PrOutParameterList::parse(&b, 0), Err(ParameterListError::LengthError));
        let sip = PrOutParameterList {
            spec_i_pt: true,
            ..list
        };
        let mut long = sip.to_bytes().to_vec();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(PrOutParameterList::parse(&long, 32), Ok(sip));
    }

    #[test]
    fn read_keys_keep_their_length_when_cut() {
        let d = ReadKeysData {
            generation: 7,
            keys: vec![0xA, 0xB],
        };
        let mut b = d.to_bytes();
        assert_eq!(&b[..8], &[0, 0, 0, 7, 0, 0, 0, 16]);
        assert_eq!(ReadKeysData::parse(&b), Ok(d));
        truncate_to_allocation_length(&mut b, 12);
        assert_eq!(ReadKeysData::additional_length(&b), Some(16));
        assert_eq!(ReadKeysData::parse(&b).unwrap().keys, Vec::<u64>::new());
        assert!(ReadKeysData::parse(&b[..7]).is_err());
    }

    #[test]
    fn read_reservation_bytes() {
        let none = ReadReservationData {
            generation: 3,
            reservation: None,
        };
        assert_eq!(none.to_bytes(), [0, 0, 0, 3, 0, 0, 0, 0]);
        assert_eq!(ReadReservationData::parse(&none.to_bytes()), Ok(none));
        let some = ReadReservationData {
            generation: 4,
            reservation: Some(ReservationDescriptor {
                key: 0x99,
                scope: 0,
                pr_type: PersistentReservationType::EXCLUSIVE_ACCESS,
            }),
        };
        let b = some.to_bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[4..8], &[0, 0, 0, 16]);
        assert_eq!(b[21], 0x03);
        assert_eq!(ReadReservationData::parse(&b), Ok(some));
    }

    #[test]
    fn report_capabilities_bytes() {
        let caps = ReportCapabilitiesData {
            crh: true,
            tmv: true,
            allow_commands: 1,
            type_mask: 0xEA01,
            ..ReportCapabilitiesData::default()
        };
        let b = caps.to_bytes();
        assert_eq!(b, [0, 8, 0x10, 0x90, 0xEA, 0x01, 0, 0]);
        assert_eq!(ReportCapabilitiesData::parse(&b), Ok(caps));
    }

    #[test]
    fn full_status_round_trip() {
        let id = iscsi_transport_id("iqn.x", Isid([0x80, 0, 0, 0, 0, 1]));
        let d = ReadFullStatusData {
            generation: 9,
            descriptors: vec![
                FullStatusDescriptor {
                    key: 1,
                    all_tg_pt: false,
                    reservation_holder: true,
                    scope: 0,
                    pr_type: PersistentReservationType::WRITE_EXCLUSIVE,
                    relative_target_port: 1,
                    transport_id: id.clone(),
                },
                FullStatusDescriptor {
                    key: 2,
                    all_tg_pt: false,
                    reservation_holder: false,
                    scope: 0,
                    pr_type: PersistentReservationType(0),
                    relative_target_port: 1,
                    transport_id: id.clone(),
                },
            ],
        };
        let b = d.to_bytes();
        assert_eq!(&b[4..8], &(2 * (24 + id.len()) as u32).to_be_bytes());
        assert_eq!((b[8 + 12], b[8 + 13]), (0x01, 0x01));
        assert_eq!(ReadFullStatusData::parse(&b), Ok(d.clone()));
        // A descriptor cut short is dropped, not misread.
        let cut = ReadFullStatusData::parse(&b[..b.len() - 1]).unwrap();
        assert_eq!(cut.descriptors, d.descriptors[..1]);
    }

    #[test]
    fn iscsi_transport_id_bytes() {
        let id = iscsi_transport_id("iqn.2024-01.a:b", Isid([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]));
        assert_eq!(id[0], 0x45, "FORMAT CODE 01b, iSCSI");
        let port = b"iqn.2024-01.a:b,i,0x80123456789a\0";
        let len = usize::from(u16::from_be_bytes([id[2], id[3]]));
        assert_eq!(len, port.len().next_multiple_of(4));
        assert_eq!(&id[4..4 + port.len()], port);
        assert_eq!(id.len(), 4 + len);
        // Short names are padded to the minimum of 20 bytes.
        let short = iscsi_transport_id("a", Isid::default());
        assert_eq!(short.len(), 4 + 20);
    }
}

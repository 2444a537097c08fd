//! Vital product data pages every SPC-4 device serves: Supported VPD Pages
//! (00h), Unit Serial Number (80h) and Device Identification (83h) — the
//! last is how multipath initiators recognise the same LU on two paths.

use super::{DataError, Peripheral, need};
use crate::scsi::be;

/// The page code of the VPD page in `buf` (byte 1), if present.
pub fn vpd_page_code(buf: &[u8]) -> Option<u8> {
    be::u8_at(buf, 1)
}

/// A VPD page's common 4-byte header and its body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VpdPage<'a> {
    pub peripheral: Peripheral,
    pub page_code: u8,
    /// The bytes after the header, limited to what both the buffer and the
    /// PAGE LENGTH field cover.
    pub body: &'a [u8],
}

impl<'a> VpdPage<'a> {
    /// Splits a VPD page, checking it is page `expected`.
    pub fn parse(buf: &'a [u8], expected: u8) -> Result<Self, DataError> {
        need(buf, 4)?;
        let [pq, page_code, hi, lo] = be::array(buf, 0).unwrap_or([0; 4]);
        if page_code != expected {
            return Err(DataError::WrongPage {
                expected,
                got: page_code,
            });
        }
        let end = buf.len().min(4 + usize::from(u16::from_be_bytes([hi, lo])));
        Ok(Self {
            peripheral: Peripheral::from_byte(pq),
            page_code,
            body: buf.get(4..end).unwrap_or(&[]),
        })
    }

    /// Header plus body, with PAGE LENGTH (n-3) set from the body (bodies
    /// over 65535 bytes are cut there, as the field cannot describe more).
    pub fn emit(peripheral: Peripheral, page_code: u8, body: &[u8]) -> Vec<u8> {
        let len = be::clamp_u16(body.len());
        let mut out = Vec::with_capacity(4 + usize::from(len));
        out.push(peripheral.to_byte());
        out.push(page_code);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body.get(..usize::from(len)).unwrap_or(body));
        out
    }
}

/// Supported VPD Pages (00h).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupportedVpdPages {
    pub peripheral: Peripheral,
    /// SPC-4 wants them "in ascending order beginning with page code 00h";
    /// `to_bytes` sorts and de-duplicates.
    pub pages: Vec<u8>,
}

impl SupportedVpdPages {
    pub const PAGE_CODE: u8 = 0x00;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut pages = self.pages.clone();
        pages.push(Self::PAGE_CODE);
        pages.sort_unstable();
        pages.dedup();
        VpdPage::emit(self.peripheral, Self::PAGE_CODE, &pages)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        let p = VpdPage::parse(buf, Self::PAGE_CODE)?;
        Ok(Self {
            peripheral: p.peripheral,
            pages: p.body.to_vec(),
        })
    }
}

/// Unit Serial Number (80h): PRODUCT SERIAL NUMBER, ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitSerialNumber {
    pub peripheral: Peripheral,
    pub serial: Vec<u8>,
}

impl UnitSerialNumber {
    pub const PAGE_CODE: u8 = 0x80;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.serial.len());
        be::put_ascii_padded(&mut body, &self.serial, self.serial.len());
        VpdPage::emit(self.peripheral, Self::PAGE_CODE, &body)
    }

    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        let p = VpdPage::parse(buf, Self::PAGE_CODE)?;
        Ok(Self {
            peripheral: p.peripheral,
            serial: p.body.to_vec(),
        })
    }
}

open_enum! {
    /// CODE SET of a designation descriptor.
    pub struct CodeSet(u8) {
        BINARY = 1,
        ASCII = 2,
        UTF8 = 3,
    }
}

open_enum! {
    /// ASSOCIATION: what the designator names.
    pub struct Association(u8) {
        LOGICAL_UNIT = 0,
        TARGET_PORT = 1,
        TARGET_DEVICE = 2,
    }
}

open_enum! {
    /// DESIGNATOR TYPE (SPC-4 Device Identification VPD page).
    pub struct DesignatorType(u8) {
        VENDOR_SPECIFIC = 0,
        T10_VENDOR_ID = 1,
        EUI_64 = 2,
        NAA = 3,
        RELATIVE_TARGET_PORT = 4,
        TARGET_PORT_GROUP = 5,
        LOGICAL_UNIT_GROUP = 6,
        MD5_LOGICAL_UNIT = 7,
        SCSI_NAME_STRING = 8,
    }
}

/// PROTOCOL IDENTIFIER for iSCSI (SPC-4 protocol identifier values).
pub const PROTOCOL_ISCSI: u8 = 0x5;

/// One designation descriptor of the Device Identification page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Designator {
    /// Meaningful only with `piv` set (4 bits).
    pub protocol_identifier: u8,
    pub code_set: CodeSet,
    /// PROTOCOL IDENTIFIER VALID; SPC-4 lets it be set only for target
    /// port and target device associations.
    pub piv: bool,
    pub association: Association,
    pub designator_type: DesignatorType,
    pub designator: Vec<u8>,
}

impl Designator {
    /// An NAA designator for the logical unit; `naa` is the 8-byte (NAA 5h
    /// IEEE Registered) or 16-byte (6h, Registered Extended) identifier,
    /// first nibble included.
    pub fn naa(naa: &[u8]) -> Self {
        Self::binary(Association::LOGICAL_UNIT, DesignatorType::NAA, naa.to_vec())
    }

    /// A T10 vendor ID based designator for the logical unit: the 8-byte
    /// T10 VENDOR IDENTIFICATION (space padded) then a vendor-specific id.
    pub fn t10_vendor_id(vendor: &str, id: &[u8]) -> Self {
        let mut d = Vec::with_capacity(8 + id.len());
        be::put_ascii_padded(&mut d, vendor.as_bytes(), 8);
        be::put_ascii_padded(&mut d, id, id.len());
        Self {
            protocol_identifier: 0,
            code_set: CodeSet::ASCII,
            piv: false,
            association: Association::LOGICAL_UNIT,
            designator_type: DesignatorType::T10_VENDOR_ID,
            designator: d,
        }
    }

    /// The iSCSI name of the target device (association target device).
    pub fn iscsi_target_device(name: &str) -> Self {
        Self::scsi_name(Association::TARGET_DEVICE, name)
    }

    /// The iSCSI target port name, `<name>,t,0x<TPGT>` (RFC 7143 / SAM-5
    /// iSCSI target port identifier), with association target port.
    pub fn iscsi_target_port(name: &str, tpgt: u16) -> Self {
        Self::scsi_name(Association::TARGET_PORT, &format!("{name},t,0x{tpgt:04x}"))
    }

    /// RELATIVE TARGET PORT IDENTIFIER for the port the command came in on.
    pub fn relative_target_port(id: u16) -> Self {
        let [hi, lo] = id.to_be_bytes();
        Self::binary(
            Association::TARGET_PORT,
            DesignatorType::RELATIVE_TARGET_PORT,
            vec![0, 0, hi, lo],
        )
    }

    /// TARGET PORT GROUP, for ALUA.
    pub fn target_port_group(group: u16) -> Self {
        let [hi, lo] = group.to_be_bytes();
        Self::binary(
            Association::TARGET_PORT,
            DesignatorType::TARGET_PORT_GROUP,
            vec![0, 0, hi, lo],
        )
    }

    fn binary(association: Association, designator_type: DesignatorType, d: Vec<u8>) -> Self {
        Self {
            protocol_identifier: 0,
            code_set: CodeSet::BINARY,
            piv: false,
            association,
            designator_type,
            designator: d,
        }
    }

    /// SCSI name string: UTF-8, null terminated and null padded so the
    /// length is a multiple of four, as SPC-4 requires of this designator.
    fn scsi_name(association: Association, name: &str) -> Self {
        let mut d = name.as_bytes().to_vec();
        d.push(0);
        while !d.len().is_multiple_of(4) {
            d.push(0);
        }
        Self {
            protocol_identifier: PROTOCOL_ISCSI,
            code_set: CodeSet::UTF8,
            piv: true,
            association,
            designator_type: DesignatorType::SCSI_NAME_STRING,
            designator: d,
        }
    }

    /// A SCSI name string designator's text, without the null padding.
    pub fn name_string(&self) -> Option<&str> {
        if self.designator_type != DesignatorType::SCSI_NAME_STRING {
            return None;
        }
        let end = self
            .designator
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.designator.len());
        core::str::from_utf8(self.designator.get(..end)?).ok()
    }

    fn emit(&self, out: &mut Vec<u8>) {
        // DESIGNATOR LENGTH is one byte; longer designators are cut.
        let d = self.designator.get(..255).unwrap_or(&self.designator);
        out.push(((self.protocol_identifier & 0x0F) << 4) | (self.code_set.0 & 0x0F));
        out.push((u8::from(self.piv) << 7) | ((self.association.0 & 0x03) << 4) | (self.designator_type.0 & 0x0F));
        out.push(0);
        out.push(be::clamp_u8(d.len()));
        out.extend_from_slice(d);
    }
}

/// Device Identification (83h).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentification {
    pub peripheral: Peripheral,
    pub designators: Vec<Designator>,
}

impl DeviceIdentification {
    pub const PAGE_CODE: u8 = 0x83;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for d in &self.designators {
            d.emit(&mut body);
        }
        VpdPage::emit(self.peripheral, Self::PAGE_CODE, &body)
    }

    /// Parses the designators; a truncated last descriptor is dropped.
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        let p = VpdPage::parse(buf, Self::PAGE_CODE)?;
        let mut rest = p.body;
        let mut designators = Vec::new();
        while let Some([b0, b1, _, len]) = be::array::<4>(rest, 0) {
            let end = 4 + usize::from(len);
            let Some(d) = rest.get(4..end) else { break };
            designators.push(Designator {
                protocol_identifier: b0 >> 4,
                code_set: CodeSet(b0 & 0x0F),
                piv: b1 & 0x80 != 0,
                association: Association((b1 >> 4) & 0x03),
                designator_type: DesignatorType(b1 & 0x0F),
                designator: d.to_vec(),
            });
            rest = rest.get(end..).unwrap_or(&[]);
        }
        Ok(Self {
            peripheral: p.peripheral,
            designators,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_pages_sorted_with_00() {
        let p = SupportedVpdPages {
            peripheral: Peripheral::DISK,
            pages: vec![0xB0, 0x83, 0x80, 0x83],
        };
        let b = p.to_bytes();
        assert_eq!(b, [0, 0, 0, 4, 0x00, 0x80, 0x83, 0xB0]);
        assert_eq!(SupportedVpdPages::parse(&b).unwrap().pages, [0, 0x80, 0x83, 0xB0]);
        assert_eq!(
            UnitSerialNumber::parse(&b),
            Err(DataError::WrongPage { expected: 0x80, got: 0 })
        );
    }

    #[test]
    fn serial_number() {
        let s = UnitSerialNumber {
            peripheral: Peripheral::DISK,
            serial: b"SN01".to_vec(),
        };
        let b = s.to_bytes();
        assert_eq!(b, [0, 0x80, 0, 4, b'S', b'N', b'0', b'1']);
        assert_eq!(UnitSerialNumber::parse(&b), Ok(s));
        // Truncated by the allocation length: the body is what arrived.
        assert_eq!(UnitSerialNumber::parse(&b[..6]).unwrap().serial, b"SN");
    }

    #[test]
    fn device_identification() {
        let page = DeviceIdentification {
            peripheral: Peripheral::DISK,
            designators: vec![
                Designator::naa(&[0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
                Designator::t10_vendor_id("RUST", b"lun0"),
                Designator::iscsi_target_port("iqn.2024-01.io.x:t", 1),
                Designator::relative_target_port(1),
            ],
        };
        let b = page.to_bytes();
        assert_eq!(&b[..4], &[0x00, 0x83, 0x00, (b.len() - 4) as u8]);
        // NAA: binary, LU association, type 3, length 16.
        assert_eq!(&b[4..8], &[0x01, 0x03, 0x00, 16]);
        // T10 vendor id: ASCII, type 1, "RUST    lun0".
        assert_eq!(&b[24..28], &[0x02, 0x01, 0x00, 12]);
        assert_eq!(&b[28..40], b"RUST    lun0");
        // iSCSI port name: protocol 5, UTF-8, PIV, target port, type 8.
        assert_eq!(&b[40..44], &[0x53, 0x98, 0x00, 28]);
        assert_eq!(&b[44..72], b"iqn.2024-01.io.x:t,t,0x0001\0");
        assert_eq!(&b[72..80], &[0x01, 0x14, 0, 4, 0, 0, 0, 1]);
        let parsed = DeviceIdentification::parse(&b).unwrap();
        assert_eq!(parsed, page);
        assert_eq!(parsed.designators[2].name_string(), Some("iqn.2024-01.io.x:t,t,0x0001"));
        assert_eq!(parsed.designators[0].name_string(), None);
        // A truncated descriptor is dropped, not misread.
        assert_eq!(DeviceIdentification::parse(&b[..30]).unwrap().designators.len(), 1);
    }

    #[test]
    fn name_padding_is_multiple_of_four() {
        for n in ["a", "ab", "abc", "abcd"] {
            let d = Designator::iscsi_target_device(n);
            assert_eq!(d.designator.len() % 4, 0);
            assert_eq!(d.name_string(), Some(n));
        }
    }
}

//! Standard INQUIRY data (SPC-4) and the peripheral byte that starts
//! it and every VPD page.

use super::{DataError, need};
use crate::scsi::be;

open_enum! {
    /// PERIPHERAL DEVICE TYPE (SPC-4).
    pub struct PeripheralDeviceType(u8) {
        DIRECT_ACCESS_BLOCK = 0x00,
        SEQUENTIAL_ACCESS = 0x01,
        PROCESSOR = 0x03,
        CD_DVD = 0x05,
        OPTICAL_MEMORY = 0x07,
        MEDIA_CHANGER = 0x08,
        STORAGE_ARRAY_CONTROLLER = 0x0C,
        ENCLOSURE_SERVICES = 0x0D,
        SIMPLIFIED_DIRECT_ACCESS = 0x0E,
        WELL_KNOWN_LOGICAL_UNIT = 0x1E,
        UNKNOWN_OR_NO_DEVICE_TYPE = 0x1F,
    }
}

/// Byte 0 of INQUIRY data and of every VPD page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peripheral {
    /// PERIPHERAL QUALIFIER (3 bits): 000b a device is connected; 011b the
    /// device server cannot support a logical unit at this LUN.
    pub qualifier: u8,
    pub device_type: PeripheralDeviceType,
}

impl Peripheral {
    /// A connected direct-access block device, what a disk target reports.
    pub const DISK: Self = Self {
        qualifier: 0,
        device_type: PeripheralDeviceType::DIRECT_ACCESS_BLOCK,
    };

    /// SPC-4 (standard INQUIRY data): for a LUN with no logical unit, the
    /// device server answers INQUIRY with qualifier 011b and device type
    /// 1Fh rather than failing the command.
    pub const NOT_SUPPORTED: Self = Self {
        qualifier: 0b011,
        device_type: PeripheralDeviceType::UNKNOWN_OR_NO_DEVICE_TYPE,
    };

    pub const fn to_byte(self) -> u8 {
        (self.qualifier << 5) | (self.device_type.0 & 0x1F)
    }

    pub const fn from_byte(b: u8) -> Self {
        Self {
            qualifier: b >> 5,
            device_type: PeripheralDeviceType(b & 0x1F),
        }
    }
}

/// VERSION 06h: the device claims SPC-4.
pub const VERSION_SPC4: u8 = 0x06;

/// Standard INQUIRY data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StandardInquiry {
    pub peripheral: Peripheral,
    /// Removable medium.
    pub rmb: bool,
    pub version: u8,
    /// Supports NACA=1 (ACA); this crate's CDB parser rejects NACA, so a
    /// target using it reports `false`.
    pub normaca: bool,
    /// Hierarchical LUN addressing in REPORT LUNS.
    pub hisup: bool,
    /// RESPONSE DATA FORMAT; SPC-4 requires 2.
    pub response_data_format: u8,
    /// TPGS (2 bits): asymmetric logical unit access support.
    pub tpgs: u8,
    /// 3PC: third-party copy (EXTENDED COPY) support.
    pub third_party_copy: bool,
    /// PROTECT: protection information support.
    pub protect: bool,
    pub multip: bool,
    /// CMDQUE: the full task management model; SAM-5 targets set it.
    pub cmdque: bool,
    /// T10 VENDOR IDENTIFICATION, space padded.
    pub vendor_identification: [u8; 8],
    /// PRODUCT IDENTIFICATION, space padded.
    pub product_identification: [u8; 16],
    /// PRODUCT REVISION LEVEL, space padded.
    pub product_revision_level: [u8; 4],
    /// VERSION DESCRIPTORs (at most 8 are sent); when non-empty the data is
    /// the 96-byte form rather than the 36-byte minimum.
    pub version_descriptors: Vec<u16>,
}

fn ascii<const N: usize>(s: &str) -> [u8; N] {
    let mut v = Vec::with_capacity(N);
    be::put_ascii_padded(&mut v, s.as_bytes(), N);
    let mut out = [b' '; N];
    for (d, s) in out.iter_mut().zip(v) {
        *d = s;
    }
    out
}

impl StandardInquiry {
    /// A SPC-4 disk with the given identification strings (truncated and
    /// space padded to 8/16/4 bytes), HiSup and CmdQue set.
    pub fn new(vendor: &str, product: &str, revision: &str) -> Self {
        Self {
            peripheral: Peripheral::DISK,
            rmb: false,
            version: VERSION_SPC4,
            normaca: false,
            hisup: true,
            response_data_format: 2,
            tpgs: 0,
            third_party_copy: false,
            protect: false,
            multip: false,
            cmdque: true,
            vendor_identification: ascii(vendor),
            product_identification: ascii(product),
            product_revision_level: ascii(revision),
            version_descriptors: Vec::new(),
        }
    }

    /// The full data (36 or 96 bytes); ADDITIONAL LENGTH is n-4.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = if self.version_descriptors.is_empty() { 36 } else { 96 };
        let mut b = vec![0u8; len];
        b[0] = self.peripheral.to_byte();
        b[1] = u8::from(self.rmb) << 7;
        b[2] = self.version;
        b[3] = (u8::from(self.normaca) << 5) | (u8::from(self.hisup) << 4) | (self.response_data_format & 0x0F);
        b[4] = (len - 5) as u8;
        b[5] = ((self.tpgs & 0x03) << 4) | (u8::from(self.third_party_copy) << 3) | u8::from(self.protect);
        b[6] = u8::from(self.multip) << 4;
        b[7] = u8::from(self.cmdque) << 1;
        b[8..16].copy_from_slice(&self.vendor_identification);
        b[16..32].copy_from_slice(&self.product_identification);
        b[32..36].copy_from_slice(&self.product_revision_level);
        for (i, d) in self.version_descriptors.iter().take(8).enumerate() {
            let at = 58 + 2 * i;
            b[at..at + 2].copy_from_slice(&d.to_be_bytes());
        }
        b
    }

    /// Parses standard INQUIRY data; the first 36 bytes are required, and
    /// version descriptors are read as far as the data and ADDITIONAL
    /// LENGTH reach (zero entries are unused slots).
    pub fn parse(buf: &[u8]) -> Result<Self, DataError> {
        need(buf, 36)?;
        let byte = |at| be::u8_at(buf, at).unwrap_or(0);
        let avail = buf.len().min(5 + usize::from(byte(4)));
        let mut version_descriptors = Vec::new();
        for i in 0..8 {
            let at = 58 + 2 * i;
            if at + 2 > avail {
                break;
            }
            match be::u16_at(buf, at) {
                Some(0) | None => {}
                Some(d) => version_descriptors.push(d),
            }
        }
        Ok(Self {
            peripheral: Peripheral::from_byte(byte(0)),
            rmb: byte(1) & 0x80 != 0,
            version: byte(2),
            normaca: byte(3) & 0x20 != 0,
            hisup: byte(3) & 0x10 != 0,
            response_data_format: byte(3) & 0x0F,
            tpgs: (byte(5) >> 4) & 0x03,
            third_party_copy: byte(5) & 0x08 != 0,
            protect: byte(5) & 0x01 != 0,
            multip: byte(6) & 0x10 != 0,
            cmdque: byte(7) & 0x02 != 0,
            vendor_identification: be::array(buf, 8).unwrap_or([b' '; 8]),
            product_identification: be::array(buf, 16).unwrap_or([b' '; 16]),
            product_revision_level: be::array(buf, 32).unwrap_or([b' '; 4]),
            version_descriptors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_inquiry_bytes() {
        let inq = StandardInquiry {
            third_party_copy: true,
            ..StandardInquiry::new("RUSTIO", "Block Device", "0.1")
        };
        let b = inq.to_bytes();
        assert_eq!(b.len(), 36);
        assert_eq!(&b[..8], &[0x00, 0x00, 0x06, 0x12, 31, 0x08, 0x00, 0x02]);
        assert_eq!(&b[8..16], b"RUSTIO  ");
        assert_eq!(&b[16..32], b"Block Device    ");
        assert_eq!(&b[32..36], b"0.1 ");
        assert_eq!(StandardInquiry::parse(&b), Ok(inq));
    }

    #[test]
    fn with_version_descriptors_and_truncation() {
        let inq = StandardInquiry {
            version_descriptors: vec![0x0460, 0x0960],
            rmb: true,
            ..StandardInquiry::new("V", "P", "R")
        };
        let b = inq.to_bytes();
        assert_eq!(b.len(), 96);
        assert_eq!(b[4], 91);
        assert_eq!(&b[58..62], &[0x04, 0x60, 0x09, 0x60]);
        assert_eq!(StandardInquiry::parse(&b), Ok(inq.clone()));
        let short = StandardInquiry::parse(&b[..60]).unwrap();
        assert_eq!(short.version_descriptors, vec![0x0460]);
        assert!(StandardInquiry::parse(&b[..35]).is_err());
    }

    #[test]
    fn peripheral_byte() {
        assert_eq!(Peripheral::NOT_SUPPORTED.to_byte(), 0x7F);
        assert_eq!(Peripheral::from_byte(0x7F), Peripheral::NOT_SUPPORTED);
        assert_eq!(Peripheral::DISK.to_byte(), 0);
    }
}

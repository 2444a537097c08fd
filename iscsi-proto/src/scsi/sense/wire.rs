//! The two sense data formats on the wire (SPC-4 4.5.2 descriptor, 4.5.3
//! fixed).
//!
//! Emitting writes at most `buf.len()` bytes: a target answering REQUEST
//! SENSE truncates to the allocation length, and SPC-4 has the additional
//! sense length still describe the whole sense data.

use super::{AdditionalSense, FieldPointer, Sense, SenseKey};
use crate::scsi::be;

/// Fixed format is always 18 bytes here: ADDITIONAL SENSE LENGTH 10 covers
/// the command-specific information, ASC/ASCQ, FRU code and the three
/// sense-key-specific bytes.
pub const FIXED_LEN: usize = 18;

/// Descriptor format header plus an information descriptor (12 bytes) and
/// a sense-key-specific descriptor (8 bytes).
pub const DESCRIPTOR_MAX_LEN: usize = 8 + 12 + 8;

const RESPONSE_FIXED_CURRENT: u8 = 0x70;
const RESPONSE_FIXED_DEFERRED: u8 = 0x71;
const RESPONSE_DESC_CURRENT: u8 = 0x72;
const RESPONSE_DESC_DEFERRED: u8 = 0x73;

const DESC_INFORMATION: u8 = 0x00;
const DESC_SENSE_KEY_SPECIFIC: u8 = 0x02;

/// Sense bytes in an owned, `Copy` buffer big enough for either format.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenseBuffer {
    bytes: [u8; DESCRIPTOR_MAX_LEN],
    len: u8,
}

impl SenseBuffer {
    pub(super) const fn empty() -> Self {
        Self {
            bytes: [0; DESCRIPTOR_MAX_LEN],
            len: 0,
        }
    }

    pub(super) fn storage_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    pub(super) fn set_len(&mut self, len: usize) {
        self.len = be::clamp_u8(len.min(DESCRIPTOR_MAX_LEN));
    }

    /// The sense bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl AsRef<[u8]> for SenseBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl core::fmt::Debug for SenseBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SenseBuffer({:02x?})", self.as_bytes())
    }
}

/// Why sense bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SenseError {
    /// Too few bytes to hold the sense key and ASC of the format named by
    /// the response code.
    #[error("sense data too short: {len} bytes")]
    TooShort { len: usize },
    /// A response code other than 70h-73h (7Fh is vendor specific).
    #[error("unknown sense response code {0:#04x}")]
    UnknownResponseCode(u8),
}

/// The three sense-key-specific bytes for a field pointer, SKSV set.
fn field_pointer_bytes(p: &FieldPointer) -> [u8; 3] {
    let mut b0 = 0x80;
    if p.cdb {
        b0 |= 0x40;
    }
    if let Some(bit) = p.bit {
        b0 |= 0x08 | (bit & 0x07);
    }
    let [hi, lo] = p.byte.to_be_bytes();
    [b0, hi, lo]
}

/// Decodes the three sense-key-specific bytes as a field pointer, which is
/// their meaning only under ILLEGAL REQUEST (SPC-4 4.5.2.4).
fn parse_field_pointer(key: SenseKey, sks: [u8; 3]) -> Option<FieldPointer> {
    if sks[0] & 0x80 == 0 || key != SenseKey::ILLEGAL_REQUEST {
        return None;
    }
    Some(FieldPointer {
        cdb: sks[0] & 0x40 != 0,
        bit: (sks[0] & 0x08 != 0).then_some(sks[0] & 0x07),
        byte: u16::from_be_bytes([sks[1], sks[2]]),
    })
}

/// Copies as much of `src` as fits into `buf`; the truncation point of
/// REQUEST SENSE and of the iSCSI SenseLength.
fn copy_prefix(src: &[u8], buf: &mut [u8]) -> usize {
    let n = src.len().min(buf.len());
    if let (Some(d), Some(s)) = (buf.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    n
}

impl Sense {
    /// Writes fixed-format sense data (response code 70h/71h) and returns
    /// the bytes written: `min(buf.len(), 18)`.
    ///
    /// SPC-4 4.5.3: INFORMATION is four bytes here, so a value that does not
    /// fit in 32 bits is sent with VALID clear; use descriptor format for
    /// LBAs above 2^32.
    pub fn emit_fixed(&self, buf: &mut [u8]) -> usize {
        let mut b = [0u8; FIXED_LEN];
        b[0] = if self.deferred {
            RESPONSE_FIXED_DEFERRED
        } else {
            RESPONSE_FIXED_CURRENT
        };
        if let Some(info) = self.information.and_then(|i| u32::try_from(i).ok()) {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key.0 & 0x0F;
        b[7] = (FIXED_LEN - 8) as u8;
        b[12] = self.additional_sense.asc();
        b[13] = self.additional_sense.ascq();
        if let Some(p) = &self.field_pointer {
            b[15..18].copy_from_slice(&field_pointer_bytes(p));
        }
        copy_prefix(&b, buf)
    }

    /// Writes descriptor-format sense data (response code 72h/73h) and
    /// returns the bytes written (at most 28).
    ///
    /// An information descriptor (type 00h) is added when INFORMATION is
    /// set — SPC-4 4.5.2.2: "The VALID bit shall be set to one" — and a
    /// sense-key-specific descriptor (type 02h) when a field pointer is.
    pub fn emit_descriptor(&self, buf: &mut [u8]) -> usize {
        let mut b = [0u8; DESCRIPTOR_MAX_LEN];
        b[0] = if self.deferred {
            RESPONSE_DESC_DEFERRED
        } else {
            RESPONSE_DESC_CURRENT
        };
        b[1] = self.key.0 & 0x0F;
        b[2] = self.additional_sense.asc();
        b[3] = self.additional_sense.ascq();
        let mut len = 8;
        if let Some(info) = self.information {
            b[len] = DESC_INFORMATION;
            b[len + 1] = 0x0A;
            b[len + 2] = 0x80;
            b[len + 4..len + 12].copy_from_slice(&info.to_be_bytes());
            len += 12;
        }
        if let Some(p) = &self.field_pointer {
            b[len] = DESC_SENSE_KEY_SPECIFIC;
            b[len + 1] = 0x06;
            b[len + 4..len + 7].copy_from_slice(&field_pointer_bytes(p));
            len += 8;
        }
        b[7] = (len - 8) as u8;
        copy_prefix(&b[..len], buf)
    }

    /// Decodes sense data in either format.
    ///
    /// Short data is tolerated down to the ASC byte: a fixed-format sense
    /// needs at least 13 bytes (through ASC; ASCQ then reads as 0), a
    /// descriptor-format sense 8. Fields beyond what both the buffer and the
    /// ADDITIONAL SENSE LENGTH cover are treated as absent, since devices
    /// and transports both truncate.
    pub fn parse(buf: &[u8]) -> Result<Sense, SenseError> {
        let too_short = SenseError::TooShort { len: buf.len() };
        let b0 = be::u8_at(buf, 0).ok_or(too_short)?;
        match b0 & 0x7F {
            code @ (RESPONSE_FIXED_CURRENT | RESPONSE_FIXED_DEFERRED) => {
                let additional = be::u8_at(buf, 7).map_or(0, usize::from);
                let avail = buf.get(..buf.len().min(8 + additional)).unwrap_or(&[]);
                let asc = be::u8_at(avail, 12).ok_or(too_short)?;
                let ascq = be::u8_at(avail, 13).unwrap_or(0);
                let key = SenseKey(be::u8_at(avail, 2).ok_or(too_short)? & 0x0F);
                let information = if b0 & 0x80 != 0 {
                    be::u32_at(avail, 3).map(u64::from)
                } else {
                    None
                };
                Ok(Sense {
                    key,
                    additional_sense: AdditionalSense::new(asc, ascq),
                    information,
                    field_pointer: be::array(avail, 15).and_then(|s| parse_field_pointer(key, s)),
                    deferred: code == RESPONSE_FIXED_DEFERRED,
                })
            }
            code @ (RESPONSE_DESC_CURRENT | RESPONSE_DESC_DEFERRED) => {
                let [_, k, asc, ascq, _, _, _, additional] = be::array(buf, 0).ok_or(too_short)?;
                let key = SenseKey(k & 0x0F);
                let end = buf.len().min(8 + usize::from(additional));
                let mut descriptors = buf.get(8..end).unwrap_or(&[]);
                let mut sense = Sense {
                    key,
                    additional_sense: AdditionalSense::new(asc, ascq),
                    information: None,
                    field_pointer: None,
                    deferred: code == RESPONSE_DESC_DEFERRED,
                };
                while let Some([kind, len]) = be::array::<2>(descriptors, 0) {
                    let total = 2 + usize::from(len);
                    let Some(d) = descriptors.get(..total) else {
                        break;
                    };
                    match kind {
                        DESC_INFORMATION if be::u8_at(d, 2).is_some_and(|v| v & 0x80 != 0) => {
                            sense.information = be::u64_at(d, 4);
                        }
                        DESC_SENSE_KEY_SPECIFIC => {
                            sense.field_pointer = be::array(d, 4).and_then(|s| parse_field_pointer(key, s));
                        }
                        _ => {}
                    }
                    descriptors = descriptors.get(total..).unwrap_or(&[]);
                }
                Ok(sense)
            }
            other => Err(SenseError::UnknownResponseCode(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_invalid_field_in_cdb() {
        let s = Sense::invalid_field_in_cdb(2, Some(7));
        let mut buf = [0xa5u8; 18];
        assert_eq!(s.emit_fixed(&mut buf), 18);
        assert_eq!(
            buf,
            [
                0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCF, 0x00, 0x02
            ]
        );
        assert_eq!(Sense::parse(&buf), Ok(s));
        assert_eq!(s.fixed().as_bytes(), &buf);
    }

    #[test]
    fn fixed_medium_error_with_information() {
        let s = Sense::medium_error(AdditionalSense::UNRECOVERED_READ_ERROR, 0x1234_5678).deferred();
        let b = s.fixed();
        assert_eq!(
            b.as_bytes(),
            &[
                0xF1, 0, 0x03, 0x12, 0x34, 0x56, 0x78, 10, 0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0
            ]
        );
        assert_eq!(Sense::parse(b.as_bytes()), Ok(s));
    }

    #[test]
    fn fixed_information_too_wide_clears_valid() {
        let s = Sense::medium_error(AdditionalSense::UNRECOVERED_READ_ERROR, 1 << 40);
        let b = s.fixed();
        assert_eq!(b.as_bytes()[0], 0x70);
        assert_eq!(&b.as_bytes()[3..7], &[0, 0, 0, 0]);
        assert_eq!(Sense::parse(b.as_bytes()).unwrap().information, None);
    }

    #[test]
    fn fixed_truncates_to_buffer() {
        let mut buf = [0xa5u8; 8];
        assert_eq!(Sense::lba_out_of_range().emit_fixed(&mut buf), 8);
        assert_eq!(buf, [0x70, 0, 5, 0, 0, 0, 0, 10]);
        assert_eq!(Sense::parse(&buf), Err(SenseError::TooShort { len: 8 }));
    }

    #[test]
    fn fixed_short_but_through_asc_is_accepted() {
        let buf = [0x70, 0, 0x06, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0x29];
        let s = Sense::parse(&buf).unwrap();
        assert_eq!(s.key, SenseKey::UNIT_ATTENTION);
        assert_eq!(s.additional_sense, AdditionalSense::new(0x29, 0));
        // ADDITIONAL SENSE LENGTH 4 ends before the ASC.
        let buf = [0x70, 0, 0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0x29, 0x07];
        assert!(Sense::parse(&buf).is_err());
    }

    #[test]
    fn descriptor_with_both_descriptors() {
        let s = Sense::invalid_field_in_parameter_list(0x0102, None).with_information(0x1_0000_0001);
        let mut buf = [0xa5u8; 40];
        let n = s.emit_descriptor(&mut buf);
        assert_eq!(n, 28);
        assert_eq!(
            &buf[..n],
            &[
                0x72, 0x05, 0x26, 0x00, 0, 0, 0, 20, // header
                0x00, 0x0A, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 1, // information
                0x02, 0x06, 0, 0, 0x80, 0x01, 0x02, 0, // sense key specific
            ]
        );
        assert_eq!(&buf[n..], &[0xa5; 12]);
        assert_eq!(Sense::parse(&buf[..n]), Ok(s));
        assert_eq!(s.descriptor().as_bytes(), &buf[..n]);
    }

    #[test]
    fn descriptor_minimal_and_deferred() {
        let s = Sense::unit_attention(AdditionalSense::CAPACITY_DATA_HAS_CHANGED).deferred();
        let b = s.descriptor();
        assert_eq!(b.as_bytes(), &[0x73, 0x06, 0x2A, 0x09, 0, 0, 0, 0]);
        assert_eq!(Sense::parse(b.as_bytes()), Ok(s));
    }

    #[test]
    fn descriptor_skips_unknown_and_truncated() {
        let buf = [
            0x72, 0x03, 0x11, 0x00, 0, 0, 0, 16, // header
            0x05, 0x02, 0xAA, 0xBB, // unknown descriptor
            0x00, 0x0A, 0x80, 0, 0, 0, // truncated information descriptor
        ];
        let s = Sense::parse(&buf).unwrap();
        assert_eq!(s.key, SenseKey::MEDIUM_ERROR);
        assert_eq!(s.information, None);
    }

    #[test]
    fn field_pointer_only_for_illegal_request() {
        // SKSV set under NOT READY means progress indication, not a pointer.
        let buf = [
            0x70, 0, 0x02, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x04, 0x04, 0, 0x80, 0x40, 0x00,
        ];
        assert_eq!(Sense::parse(&buf).unwrap().field_pointer, None);
    }

    #[test]
    fn unknown_response_code() {
        assert_eq!(Sense::parse(&[0x7F, 0, 0]), Err(SenseError::UnknownResponseCode(0x7F)));
        assert_eq!(Sense::parse(&[]), Err(SenseError::TooShort { len: 0 }));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Sense::parse(&bytes);
        }

        #[test]
        fn round_trip(key in 0u8..16, asc in proptest::prelude::any::<u16>(),
                      info in proptest::option::of(proptest::prelude::any::<u64>()),
                      fp in proptest::option::of((proptest::prelude::any::<bool>(),
                            proptest::option::of(0u8..8), proptest::prelude::any::<u16>())),
                      deferred in proptest::prelude::any::<bool>()) {
            let key = SenseKey(key);
            let fp = if key == SenseKey::ILLEGAL_REQUEST {
                fp.map(|(cdb, bit, byte)| FieldPointer { cdb, bit, byte })
            } else {
                None
            };
            let s = Sense { key, additional_sense: AdditionalSense(asc), information: info,
                            field_pointer: fp, deferred };
            proptest::prop_assert_eq!(Sense::parse(s.descriptor().as_bytes()), Ok(s));
            let fixed = Sense::parse(s.fixed().as_bytes()).unwrap();
            let info32 = info.filter(|&i| i <= u64::from(u32::MAX));
            proptest::prop_assert_eq!(fixed, Sense { information: info32, ..s });
        }
    }
}

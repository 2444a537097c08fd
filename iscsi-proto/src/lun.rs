//! Logical unit numbers as they travel in the 8-byte LUN field (SAM-5 4.6).

use core::fmt;

/// An 8-byte SCSI LUN field, kept verbatim.
///
/// Initiators address the logical unit they were given in REPORT LUNS; the
/// target decodes the single-level forms it hands out with [`Lun::index`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lun(pub [u8; 8]);

impl Lun {
    /// LUN 0, which every target must answer for (SPC-4 REPORT LUNS).
    pub const ZERO: Self = Self([0; 8]);

    /// The single-level LUN for `index`: peripheral device addressing below
    /// 256 (what libiscsi and tgt send), flat space addressing up to 16383.
    /// Larger values have no single-level form; they are clamped to 16383.
    #[must_use]
    pub const fn from_index(index: u16) -> Self {
        let mut bytes = [0u8; 8];
        if index < 256 {
            bytes[1] = index as u8;
        } else {
            let index = if index > 0x3fff { 0x3fff } else { index };
            bytes[0] = 0x40 | (index >> 8) as u8;
            bytes[1] = index as u8;
        }
        Self(bytes)
    }

    /// The logical unit index of a single-level LUN in peripheral device
    /// (bus 0) or flat space addressing; `None` for any other form.
    #[must_use]
    pub fn index(self) -> Option<u16> {
        let [b0, b1, rest @ ..] = self.0;
        if rest != [0; 6] {
            return None;
        }
        match b0 >> 6 {
            0b00 if b0 & 0x3f == 0 => Some(u16::from(b1)),
            0b01 => Some((u16::from(b0 & 0x3f) << 8) | u16::from(b1)),
            _ => None,
        }
    }

    /// The field as a big-endian 64-bit value (REPORT LUNS lists these).
    #[must_use]
    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl fmt::Debug for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index() {
            Some(i) => write!(f, "Lun({i})"),
            None => write!(f, "Lun({:#018x})", self.to_u64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_level_forms() {
        assert_eq!(Lun::from_index(1).0, [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_index(300).0, [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
        for i in [0u16, 1, 255, 256, 1000, 16383] {
            assert_eq!(Lun::from_index(i).index(), Some(i));
        }
        assert_eq!(Lun([0, 1, 0, 0, 0, 0, 0, 1]).index(), None);
        assert_eq!(Lun([0x81, 0, 0, 0, 0, 0, 0, 0]).index(), None);
        assert_eq!(Lun([0x01, 0x02, 0, 0, 0, 0, 0, 0]).index(), None, "bus 1");
    }
}

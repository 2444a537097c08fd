//! CRC32C header and data digests (RFC 7143 section 13.1).
//!
//! Kept behind these functions so the CRC implementation can be swapped for a
//! faster one without touching the codec.

/// CRC32C of `data`.
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Continue a CRC32C over more bytes (a data segment followed by its padding).
#[must_use]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, data)
}

/// The four bytes of a digest as they travel on the wire.
///
/// RFC 7143 appendix B.4 gives the CRC of 32 zero bytes as the byte sequence
/// `aa 36 91 8a`, i.e. the 32-bit value 0x8a9136aa sent least significant
/// byte first.
#[must_use]
pub const fn to_wire(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// The digest value from its four wire bytes.
#[must_use]
pub const fn from_wire(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of RFC 7143 appendix B.4.
    #[test]
    fn rfc_vectors() {
        assert_eq!(to_wire(crc32c(&[0u8; 32])), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(to_wire(crc32c(&[0xffu8; 32])), [0x43, 0xab, 0xa8, 0x62]);
        let incrementing: Vec<u8> = (0u8..32).collect();
        assert_eq!(to_wire(crc32c(&incrementing)), [0x4e, 0x79, 0xdd, 0x46]);
        let decrementing: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(to_wire(crc32c(&decrementing)), [0x5c, 0xdb, 0x3f, 0x11]);
    }

    #[test]
    fn append_equals_whole() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let (a, b) = data.split_at(333);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
    }
}

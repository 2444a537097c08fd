//! Bounds-checked big-endian field access for untrusted buffers.
//!
//! SCSI fields are big-endian and their offsets come from the standard, but
//! the buffer lengths come from the peer: every read here returns `None`
//! instead of panicking when the field is not wholly inside the buffer.

/// `N` bytes at `at`, or `None` if the buffer ends first.
pub(crate) fn array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    buf.get(at..end)?.try_into().ok()
}

pub(crate) fn u8_at(buf: &[u8], at: usize) -> Option<u8> {
    buf.get(at).copied()
}

pub(crate) fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    array(buf, at).map(u16::from_be_bytes)
}

pub(crate) fn u24_at(buf: &[u8], at: usize) -> Option<u32> {
    let [a, b, c] = array(buf, at)?;
    Some(u32::from_be_bytes([0, a, b, c]))
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    array(buf, at).map(u32::from_be_bytes)
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    array(buf, at).map(u64::from_be_bytes)
}

/// Clamps a length to a field of `max` so that a builder never wraps a
/// length field silently; callers document where this can happen.
pub(crate) fn clamp_u16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

pub(crate) fn clamp_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(crate) fn clamp_u8(len: usize) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

/// Copies `src` into a left-aligned ASCII field of `width` bytes, padded
/// with spaces and truncated when `src` is longer. Non-printable bytes
/// become spaces because SPC-4 (ASCII data fields, 4.3.1) allows only
/// printable ASCII (20h-7Eh) in these fields and initiators print them.
pub(crate) fn put_ascii_padded(out: &mut Vec<u8>, src: &[u8], width: usize) {
    let take = src.len().min(width);
    out.extend(
        src.iter()
            .take(take)
            .map(|&b| if (0x20..0x7f).contains(&b) { b } else { b' ' }),
    );
    out.resize(out.len() + (width - take), b' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u16_at(&b, 6), Some(0x0708));
        assert_eq!(u16_at(&b, 7), None);
        assert_eq!(u24_at(&b, 0), Some(0x010203));
        assert_eq!(u32_at(&b, 5), None);
        assert_eq!(u64_at(&b, 0), Some(0x0102030405060708));
        assert_eq!(u64_at(&b, usize::MAX), None);
        assert_eq!(u8_at(&b, 8), None);
    }

    #[test]
    fn ascii_padding() {
        let mut v = Vec::new();
        put_ascii_padded(&mut v, b"ab\x01", 5);
        assert_eq!(v, b"ab   ");
        v.clear();
        put_ascii_padded(&mut v, b"abcdef", 4);
        assert_eq!(v, b"abcd");
    }
}

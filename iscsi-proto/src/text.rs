//! The text format of login and text PDUs (RFC 7143 section 6.1):
//! `key=value` pairs each ended by a NUL byte, possibly spread over several
//! PDUs with the C bit, and the encodings of numbers and binary values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};

/// RFC 7143 6.1: a standard-label "MUST NOT exceed 63 characters".
pub const MAX_KEY_LEN: usize = 63;

/// RFC 7143 6.1: "If not otherwise specified, the maximum length of a
/// simple-value (not its encoded representation) is 255 bytes".
pub const MAX_SIMPLE_VALUE_LEN: usize = 255;

/// The longest value accepted at all: a 1024-byte CHAP challenge in hex
/// (RFC 7143 12.1.3 allows large binary values up to that size), with room.
pub const MAX_VALUE_LEN: usize = 4096;

/// RFC 7143 6.1: implementations "MUST support receiving at least 8192 bytes
/// of key=value data in a negotiation sequence" and 64 KiB when long
/// authentication items are in play. We accept 64 KiB and no more.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// Why a text data segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text pair without '=': {0:?}")]
    MissingEquals(String),
    #[error("invalid key name {0:?}")]
    InvalidKey(String),
    #[error("value of {key} is {len} bytes long")]
    ValueTooLong { key: String, len: usize },
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error("text negotiation data exceeds {MAX_TEXT_LEN} bytes")]
    TooLong,
    #[error("invalid binary value {0:?}")]
    InvalidBinary(String),
}

/// One `key=value` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: String,
    pub value: String,
}

impl Pair {
    #[must_use]
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Whether `key` is a standard-label (RFC 7143 6.1), or a vendor key in the
/// `X-` / `X#` forms of section 13.
///
/// A standard-label "MUST begin with a capital letter", yet RFC 7144 itself
/// defines `iSCSIProtocolLevel`; so any letter may start a key here.
#[must_use]
pub fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    let rest = rest.strip_prefix(b"#").filter(|_| first == b'X').unwrap_or(rest);
    bytes.len() <= MAX_KEY_LEN
        && first.is_ascii_alphabetic()
        && rest.iter().all(|&c| c.is_ascii_alphanumeric() || b".-+@_".contains(&c))
}

/// Parse a complete logical text data segment into pairs, in order.
///
/// Empty entries (consecutive NULs) are skipped and a missing final NUL is
/// tolerated: both are harmless, and peers differ.
pub fn parse(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    if data.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong);
    }
    let text = core::str::from_utf8(data).map_err(|_| TextError::NotUtf8)?;
    text.split('\0')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| TextError::MissingEquals(truncated(item)))?;
            if !is_valid_key(key) {
                return Err(TextError::InvalidKey(truncated(key)));
            }
            if value.len() > MAX_VALUE_LEN {
                return Err(TextError::ValueTooLong {
                    key: key.to_owned(),
                    len: value.len(),
                });
            }
            Ok(Pair::new(key, value))
        })
        .collect()
}

/// At most 80 characters of untrusted text, for error messages.
fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Serialise pairs into a data segment.
#[must_use]
pub fn encode<'a>(pairs: impl IntoIterator<Item = &'a Pair>) -> Bytes {
    let mut out = BytesMut::new();
    for pair in pairs {
        out.extend_from_slice(pair.key.as_bytes());
        out.extend_from_slice(b"=");
        out.extend_from_slice(pair.value.as_bytes());
        out.extend_from_slice(b"\0");
    }
    out.freeze()
}

/// Collects the data segments of a PDU sequence linked by the C bit into one
/// logical text data segment, refusing to grow past [`MAX_TEXT_LEN`].
#[derive(Debug, Default)]
pub struct TextAccumulator {
    buf: BytesMut,
}

impl TextAccumulator {
    /// Add one PDU's data. Returns the whole text once a PDU without the C
    /// bit (`more == false`) arrives.
    pub fn push(&mut self, data: &[u8], more: bool) -> Result<Option<Bytes>, TextError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            self.buf.clear();
            return Err(TextError::TooLong);
        }
        self.buf.extend_from_slice(data);
        Ok((!more).then(|| self.buf.split().freeze()))
    }

    /// Whether part of a text is waiting for its continuation.
    #[must_use]
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Split `text` into chunks of at most `max` bytes; every chunk but the last
/// is sent with the C bit set.
pub fn chunks(text: &Bytes, max: usize) -> impl Iterator<Item = (Bytes, bool)> + '_ {
    let max = max.max(1);
    let count = text.len().div_ceil(max).max(1);
    (0..count).map(move |i| {
        let end = ((i + 1) * max).min(text.len());
        (text.slice(i * max..end), i + 1 < count)
    })
}

/// Encode a binary value as a hex-constant (`0x...`).
#[must_use]
pub fn encode_binary(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}

/// Decode a binary value in hex (`0x`/`0X`) or base64 (`0b`/`0B`) form
/// (RFC 7143 6.1 "binary-value").
pub fn decode_binary(value: &str) -> Result<Vec<u8>, TextError> {
    let bad = || TextError::InvalidBinary(truncated(value));
    let (prefix, digits) = value.split_at_checked(2).ok_or_else(bad)?;
    match prefix {
        "0x" | "0X" => {
            if digits.is_empty() {
                return Err(bad());
            }
            let nibbles: Vec<u8> = digits
                .chars()
                .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            // An odd number of digits has an implied leading zero.
            let skip = nibbles.len() % 2;
            let mut out = Vec::with_capacity(nibbles.len().div_ceil(2));
            if skip == 1 {
                out.push(nibbles[0]);
            }
            out.extend(nibbles[skip..].chunks_exact(2).map(|p| (p[0] << 4) | p[1]));
            Ok(out)
        }
        "0b" | "0B" => BASE64.decode(digits).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Parse a numerical value: decimal, or a hex or base64 constant below 2^64
/// (RFC 7143 6.1 "regular-binary-value" / "decimal-constant").
#[must_use]
pub fn parse_number(value: &str) -> Option<u64> {
    if value.starts_with("0x") || value.starts_with("0X") || value.starts_with("0b") || value.starts_with("0B") {
        let bytes = decode_binary(value).ok()?;
        let significant = bytes.iter().skip_while(|&&b| b == 0).count();
        if significant > 8 {
            return None;
        }
        return Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
    }
    // RFC 7143 6.1 decimal-constant: no sign, no leading zeros (beyond "0").
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || (value.len() > 1 && value.starts_with('0')) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_login_text() {
        let pairs = parse(b"InitiatorName=iqn.2024-01.test:init\0SessionType=Normal\0AuthMethod=CHAP,None\0").unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2], Pair::new("AuthMethod", "CHAP,None"));
        assert_eq!(
            parse(b"A=1").unwrap(),
            vec![Pair::new("A", "1")],
            "missing last NUL tolerated"
        );
        assert_eq!(parse(b"A=\0\0").unwrap(), vec![Pair::new("A", "")]);
        assert_eq!(
            parse(b"Key=a=b\0").unwrap()[0].value,
            "a=b",
            "value is after the first '='"
        );
    }

    #[test]
    fn refuses_malformed_text() {
        assert_eq!(parse(b"NoEquals\0"), Err(TextError::MissingEquals("NoEquals".into())));
        assert!(matches!(parse(b"1abc=1\0"), Err(TextError::InvalidKey(_))));
        assert!(matches!(parse(b"Sp ace=1\0"), Err(TextError::InvalidKey(_))));
        assert!(matches!(parse(b"=1\0"), Err(TextError::InvalidKey(_))));
        let long_key = format!("K{}=1\0", "a".repeat(63));
        assert!(matches!(parse(long_key.as_bytes()), Err(TextError::InvalidKey(_))));
        let long_value = format!("K={}\0", "a".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(
            parse(long_value.as_bytes()),
            Err(TextError::ValueTooLong { .. })
        ));
        assert_eq!(parse(&[b'K', b'=', 0xff, 0]), Err(TextError::NotUtf8));
        assert!(is_valid_key("X-com.example.Key"));
        assert!(is_valid_key("X#Registered"));
        assert!(!is_valid_key("Y#Registered"));
    }

    #[test]
    fn accumulates_continued_text() {
        let mut acc = TextAccumulator::default();
        assert_eq!(acc.push(b"Target", true).unwrap(), None);
        assert!(acc.is_partial());
        let whole = acc.push(b"Name=x\0", false).unwrap().unwrap();
        assert_eq!(&whole[..], b"TargetName=x\0");
        assert!(!acc.is_partial());
        let big = vec![b'a'; MAX_TEXT_LEN];
        acc.push(&big, true).unwrap();
        assert_eq!(acc.push(b"b", false), Err(TextError::TooLong));
    }

    #[test]
    fn splits_into_chunks() {
        let text = Bytes::from_static(b"0123456789");
        let parts: Vec<_> = chunks(&text, 4).collect();
        assert_eq!(parts.len(), 3);
        assert_eq!((&parts[0].0[..], parts[0].1), (&b"0123"[..], true));
        assert_eq!((&parts[2].0[..], parts[2].1), (&b"89"[..], false));
        let empty: Vec<_> = chunks(&Bytes::new(), 4).collect();
        assert_eq!(empty, vec![(Bytes::new(), false)]);
    }

    #[test]
    fn binary_values() {
        assert_eq!(encode_binary(&[0x01, 0xab]), "0x01ab");
        assert_eq!(decode_binary("0x01AB").unwrap(), vec![0x01, 0xab]);
        assert_eq!(decode_binary("0X1ab").unwrap(), vec![0x01, 0xab]);
        assert_eq!(decode_binary("0bAav/").unwrap(), vec![0x01, 0xab, 0xff]);
        for bad in ["", "0x", "0xzz", "12", "0b!!"] {
            assert!(decode_binary(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("262144"), Some(262_144));
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("0x40000"), Some(262_144));
        assert_eq!(parse_number("0x000000000000000001"), Some(1));
        assert_eq!(parse_number("0x010000000000000000"), None);
        for bad in ["", "-1", "+1", "01", "1.5", "18446744073709551616"] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&data);
        }

        #[test]
        fn encode_then_parse_is_identity(
            pairs in proptest::collection::vec(("[A-Z][A-Za-z0-9._@+-]{0,20}", "[a-zA-Z0-9.:,=~-]{0,40}"), 0..8)
        ) {
            let pairs: Vec<Pair> = pairs.into_iter().map(|(k, v)| Pair::new(k, v)).collect();
            prop_assert_eq!(parse(&encode(&pairs)).unwrap(), pairs);
        }

        #[test]
        fn binary_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(decode_binary(&encode_binary(&bytes)).unwrap(), bytes);
        }
    }
}

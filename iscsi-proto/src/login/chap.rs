//! CHAP for iSCSI (RFC 7143 section 12.1.3, RFC 1994): the response is a
//! hash of the identifier byte, the secret and the challenge.

use core::fmt;
use md5::Md5;
use sha2::{Digest as _, Sha256};

/// A CHAP_A algorithm this implementation speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChapAlgorithm {
    /// CHAP_A=5, the only one RFC 7143 requires.
    Md5,
    /// CHAP_A=7 (SHA-256), from the IANA registry of CHAP algorithms.
    Sha256,
}

impl ChapAlgorithm {
    /// The CHAP_A code.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Md5 => 5,
            Self::Sha256 => 7,
        }
    }

    /// The algorithm for a CHAP_A code.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "5" => Some(Self::Md5),
            "7" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// Length of the hash, which is also the challenge length we send.
    #[must_use]
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha256 => 32,
        }
    }

    /// RFC 1994 section 4.1: Response = H(Identifier || secret || Challenge).
    #[must_use]
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        match self {
            Self::Md5 => Md5::new()
                .chain_update([id])
                .chain_update(secret)
                .chain_update(challenge)
                .finalize()
                .to_vec(),
            Self::Sha256 => Sha256::new()
                .chain_update([id])
                .chain_update(secret)
                .chain_update(challenge)
                .finalize()
                .to_vec(),
        }
    }

    /// Check `response` in time independent of where it differs.
    #[must_use]
    pub fn verify(self, id: u8, secret: &[u8], challenge: &[u8], response: &[u8]) -> bool {
        let expected = self.response(id, secret, challenge);
        expected.len() == response.len() && expected.iter().zip(response).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The shortest CHAP secret either end uses, in bytes: 96 bits.
///
/// RFC 7143 9.2.1, on the exchange of 12.1.3: "A compliant implementation SHOULD NOT continue
/// with the login step in which it should send a CHAP response (CHAP_R, Section 12.1.3) unless
/// it can verify that the CHAP secret is at least 96 bits or that IPsec encryption is being used
/// to protect the connection." Nothing here runs over IPsec, so both login machines hold every
/// secret they use, to answer or to check an answer, to 96 bits ([`Credentials::check`]).
pub const MIN_SECRET_LEN: usize = 12;

/// A CHAP name and secret. The secret never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub secret: Vec<u8>,
}

/// Credentials whose secret is shorter than [`MIN_SECRET_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the CHAP secret for {name:?} is {len} bytes; without IPsec RFC 7143 needs at least 12 (96 bits): use a longer secret"
)]
pub struct ShortSecret {
    pub name: String,
    pub len: usize,
}

impl Credentials {
    #[must_use]
    pub fn new(name: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            secret: secret.into(),
        }
    }

    /// Whether these credentials may be used in a CHAP exchange (see [`MIN_SECRET_LEN`]). The
    /// login machines call it before they use a secret; a program may call it earlier, to
    /// refuse a configuration at start-up.
    ///
    /// # Errors
    ///
    /// [`ShortSecret`] when the secret is shorter than 96 bits.
    pub fn check(&self) -> Result<(), ShortSecret> {
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(ShortSecret {
                name: self.name.clone(),
                len: self.secret.len(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1321 and FIPS 180-2 test vectors, fed through the CHAP layout:
    /// identifier 'a', empty secret, challenge "bc" hashes "abc".
    #[test]
    fn hashes_identifier_secret_challenge() {
        let md5 = ChapAlgorithm::Md5.response(b'a', b"", b"bc");
        assert_eq!(crate::text::encode_binary(&md5), "0x900150983cd24fb0d6963f7d28e17f72");
        let sha = ChapAlgorithm::Sha256.response(b'a', b"b", b"c");
        assert_eq!(
            crate::text::encode_binary(&sha),
            "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ChapAlgorithm::Md5.verify(b'a', b"", b"bc", &md5));
        assert!(!ChapAlgorithm::Md5.verify(b'a', b"x", b"bc", &md5));
        assert!(!ChapAlgorithm::Md5.verify(b'a', b"", b"bc", &md5[..15]));
    }

    #[test]
    fn secrets_shorter_than_96_bits_are_refused() {
        assert_eq!(Credentials::new("user", "secret-of-12").check(), Ok(()));
        assert_eq!(Credentials::new("user", vec![0u8; 16]).check(), Ok(()));
        let short = Credentials::new("user", "eleven-char").check().unwrap_err();
        assert_eq!(
            short,
            ShortSecret {
                name: "user".into(),
                len: 11
            }
        );
        assert!(short.to_string().contains("at least 12 (96 bits)"), "{short}");
        assert!(Credentials::new("user", "").check().is_err());
    }

    #[test]
    fn secret_is_not_printed() {
        let c = Credentials::new("user", "hunter2hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

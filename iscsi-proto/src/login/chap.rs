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

/// A CHAP name and secret. The secret never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub secret: Vec<u8>,
}

impl Credentials {
    #[must_use]
    pub fn new(name: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            secret: secret.into(),
        }
    }
}

/// Which side of a deploy a set of derived credentials authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployRole {
    /// The conductor's initiator, proving itself to the ramdisk's target.
    Initiator,
    /// The ramdisk's target, proving itself back (mutual CHAP).
    Target,
}

impl Credentials {
    /// CHAP credentials that both ends of a deploy derive from what they
    /// already share: the node's deployment id (on the ramdisk's kernel
    /// line and in the conductor's database) and its random deployment key.
    ///
    /// This is not part of RFC 7143; it lives here because it is the one
    /// rule both programs must apply identically. The name is the
    /// deployment id; the secret is 32 hex digits of SHA-256 over a label,
    /// the role, the key and the id, so the two directions get different
    /// secrets and the key itself never crosses the wire.
    #[must_use]
    pub fn for_deployment(deployment_id: &str, deployment_key: &str, role: DeployRole) -> Self {
        let role_label: &[u8] = match role {
            DeployRole::Initiator => b"initiator",
            DeployRole::Target => b"target",
        };
        let digest = Sha256::new()
            .chain_update(b"iscsi-deploy CHAP v1\0")
            .chain_update(role_label)
            .chain_update([0])
            .chain_update(deployment_key.as_bytes())
            .chain_update([0])
            .chain_update(deployment_id.as_bytes())
            .finalize();
        let secret: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let name = match role {
            DeployRole::Initiator => deployment_id.to_owned(),
            DeployRole::Target => format!("ramdisk-{deployment_id}"),
        };
        Self::new(name, secret.into_bytes())
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

    #[test]
    fn deployment_credentials_differ_by_role_key_and_id() {
        let i = Credentials::for_deployment("node-1", "k".repeat(32).as_str(), DeployRole::Initiator);
        let t = Credentials::for_deployment("node-1", "k".repeat(32).as_str(), DeployRole::Target);
        assert_eq!(i.name, "node-1");
        assert_eq!(t.name, "ramdisk-node-1");
        assert_eq!(i.secret.len(), 32);
        assert!(i.secret.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(i.secret, t.secret);
        let other_key = Credentials::for_deployment("node-1", "j".repeat(32).as_str(), DeployRole::Initiator);
        let other_id = Credentials::for_deployment("node-2", "k".repeat(32).as_str(), DeployRole::Initiator);
        assert_ne!(i.secret, other_key.secret);
        assert_ne!(i.secret, other_id.secret);
        // Stable: both programs, and every version of them, must agree.
        assert_eq!(
            Credentials::for_deployment("a", "b", DeployRole::Initiator).secret,
            b"4bada8570a19474c94eb4608b4737f8c"
        );
    }

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
    fn secret_is_not_printed() {
        let c = Credentials::new("user", "hunter2hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

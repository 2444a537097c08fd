//! Image checksums, as Ironic's `image_checksum` / `image_os_hash_value` give them.
//!
//! The hash covers the file as stored (the qcow2 file, not the disk it describes), so it is
//! checked over the bytes of the file before anything is written: a damaged download must
//! never reach the node's disk.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::error::SourceError;

/// How much of the file is hashed per read.
const READ_SIZE: usize = 1 << 20;

/// An expected or computed image digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-256, written `sha256:<64 hex digits>`.
    Sha256([u8; 32]),
    /// MD5, written `md5:<32 hex digits>` (Ironic's legacy `image_checksum`).
    Md5([u8; 16]),
}

impl Checksum {
    /// The algorithm's name as written before the colon.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Sha256(_) => "sha256",
            Checksum::Md5(_) => "md5",
        }
    }

    /// The digest bytes.
    pub fn digest(&self) -> &[u8] {
        match self {
            Checksum::Sha256(d) => d,
            Checksum::Md5(d) => d,
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.algorithm())?;
        self.digest().iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Checksum {
    type Err = SourceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| SourceError::InvalidChecksum {
            input: input.to_owned(),
            reason,
        };
        let Some((algorithm, hex)) = input.trim().split_once(':') else {
            let reason = match input.trim().len() {
                32 => "no algorithm given (if this is an MD5 digest, write md5:<digest>)".to_owned(),
                64 => "no algorithm given (if this is a SHA-256 digest, write sha256:<digest>)".to_owned(),
                _ => "no algorithm given".to_owned(),
            };
            return Err(invalid(reason));
        };
        match algorithm.to_ascii_lowercase().as_str() {
            "sha256" => parse_hex::<32>(hex).map(Checksum::Sha256).map_err(invalid),
            "md5" => parse_hex::<16>(hex).map(Checksum::Md5).map_err(invalid),
            other => Err(invalid(format!(
                "unknown algorithm {other:?} (sha256 and md5 are supported)"
            ))),
        }
    }
}

/// Decode exactly `N` bytes of hex, either case.
fn parse_hex<const N: usize>(hex: &str) -> Result<[u8; N], String> {
    if let Some(bad) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("{bad:?} is not a hex digit"));
    }
    if hex.len() != 2 * N {
        return Err(format!("expected {} hex digits, got {}", 2 * N, hex.len()));
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        // Both are ASCII hex digits (checked above), so this cannot fail.
        let pair = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Hash the image file as stored and compare it with `expected`.
///
/// Run this before anything is written to the target disk.
pub fn verify_checksum(path: &Path, expected: &Checksum) -> Result<(), SourceError> {
    let actual = compute_checksum(path, expected.algorithm())?;
    if actual == *expected {
        tracing::debug!(path = %path.display(), checksum = %actual, "image checksum verified");
        Ok(())
    } else {
        Err(SourceError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: *expected,
            actual,
        })
    }
}

/// Hash the whole file at `path` with the algorithm named `algorithm` (`sha256` or `md5`).
fn compute_checksum(path: &Path, algorithm: &str) -> Result<Checksum, SourceError> {
    let file = File::open(path).map_err(|e| SourceError::open(path, e))?;
    if algorithm == "md5" {
        hash_file::<Md5>(path, file).map(|d| Checksum::Md5(d.into()))
    } else {
        hash_file::<Sha256>(path, file).map(|d| Checksum::Sha256(d.into()))
    }
}

/// Feed every byte of `file` to a `D` hasher.
fn hash_file<D: Digest>(path: &Path, mut file: File) -> Result<sha2::digest::Output<D>, SourceError> {
    let mut hasher = D::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut offset = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SourceError::io(path, offset, e)),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
}

/// A digest computed over bytes as they arrive (a streamed image), in the algorithm of the
/// checksum it will be compared with.
#[derive(Debug, Clone)]
pub(crate) enum Hasher {
    Sha256(Sha256),
    Md5(Md5),
}

impl Hasher {
    pub(crate) fn for_checksum(expected: &Checksum) -> Self {
        match expected {
            Checksum::Sha256(_) => Hasher::Sha256(Sha256::new()),
            Checksum::Md5(_) => Hasher::Md5(Md5::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Checksum {
        match self {
            Hasher::Sha256(h) => Checksum::Sha256(h.finalize().into()),
            Hasher::Md5(h) => Checksum::Md5(h.finalize().into()),
        }
    }
}

//! Everything that can go wrong while opening, verifying or reading an image.
//!
//! Every message names the file and says what to do next, because it ends up in front of an
//! operator who is in the middle of a deploy. An underlying `io::Error` is printed inside the
//! message rather than exposed as `source()`, so a top-level `{:#}` does not repeat it.

use std::io;
use std::path::PathBuf;

use super::checksum::Checksum;

/// A foreign image format, recognised by its magic number, that this reader does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignFormat {
    /// qcow version 1 (same magic as qcow2, version field 1).
    Qcow1,
    /// VMware VMDK (sparse extent, COWD, or a text descriptor).
    Vmdk,
    /// Microsoft Virtual PC VHD (dynamic or fixed).
    Vhd,
    /// Microsoft Hyper-V VHDX.
    Vhdx,
    /// VirtualBox VDI.
    Vdi,
    /// QEMU Enhanced Disk.
    Qed,
    /// Parallels disk image.
    Parallels,
    /// A compressed file (gzip, xz, zstd, bzip2): the image inside it must be unpacked first.
    Compressed(&'static str),
}

impl ForeignFormat {
    /// The name an operator knows the format by.
    pub fn name(self) -> &'static str {
        match self {
            ForeignFormat::Qcow1 => "qcow (version 1)",
            ForeignFormat::Vmdk => "VMDK",
            ForeignFormat::Vhd => "VHD",
            ForeignFormat::Vhdx => "VHDX",
            ForeignFormat::Vdi => "VDI",
            ForeignFormat::Qed => "QED",
            ForeignFormat::Parallels => "Parallels",
            ForeignFormat::Compressed(kind) => kind,
        }
    }
}

/// The suggestion printed after an unsupported-format error.
fn convert_hint(format: &ForeignFormat, path: &std::path::Path) -> String {
    let p = path.display();
    match format {
        ForeignFormat::Compressed(_) => {
            format!("decompress it first (gunzip / unxz / unzstd / bunzip2) and pass the result")
        }
        _ => format!("convert it first: `qemu-img convert -O raw {p} {p}.raw`, then pass {p}.raw"),
    }
}

/// Why an image could not be opened, verified or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("image {path}: no such file; check the path (and that the image was downloaded)")]
    NotFound { path: PathBuf },

    #[error("image {path}: cannot read it: {error}; check its permissions and that it is a regular file")]
    Unreadable { path: PathBuf, error: io::Error },

    #[error("image {path}: is {what}, not a regular file or block device; pass an image file")]
    NotAFile { path: PathBuf, what: &'static str },

    #[error("image {path}: is a {} image, which is not supported; {}", format.name(), convert_hint(format, path))]
    UnsupportedFormat { path: PathBuf, format: ForeignFormat },

    #[error("image {path}: was given as qcow2 but is not a qcow2 image (no \"QFI\\xfb\" magic); use format auto or raw")]
    NotQcow2 { path: PathBuf },

    #[error("image {path}: the qcow2 image is corrupt: {detail}; run `qemu-img check {}` to see more, or rebuild the image", path.display())]
    Qcow2Corrupt { path: PathBuf, detail: String },

    #[error("image {path}: the qcow2 image uses zstd compression, which is not supported; run `qemu-img convert -O raw {} {}.raw` (or `-O qcow2 -c -o compression_type=zlib`) and pass the result", path.display(), path.display())]
    Qcow2Zstd { path: PathBuf },

    #[error("image {path}: the qcow2 image is encrypted ({method}), which is not supported; decrypt it with `qemu-img convert --object secret,... --image-opts ... -O raw` first")]
    Qcow2Encrypted { path: PathBuf, method: &'static str },

    #[error("image {path}: the qcow2 image keeps its data in an external data file, which is not supported; run `qemu-img convert -O raw {} {}.raw` and pass the result", path.display(), path.display())]
    Qcow2ExternalData { path: PathBuf },

    #[error("image {path}: the qcow2 image uses {feature}, which is not supported; run `qemu-img convert -O raw {} {}.raw` and pass the result", path.display(), path.display())]
    Qcow2Unsupported { path: PathBuf, feature: String },

    #[error("image {path}: its backing file {backing} ({resolved}) {problem}; put the backing file in place (relative names are relative to the image's directory) or run `qemu-img rebase`")]
    BackingFile { path: PathBuf, backing: String, resolved: PathBuf, problem: String },

    #[error("image {path}: checksum mismatch: expected {expected}, got {actual}; the image is damaged or not the one intended, download it again")]
    ChecksumMismatch { path: PathBuf, expected: Checksum, actual: Checksum },

    #[error("invalid checksum {input:?}: {reason}; write it as sha256:<64 hex digits> or md5:<32 hex digits>")]
    InvalidChecksum { input: String, reason: String },

    #[error("image {path}: changed while being read (it was {expected} bytes, now {actual}); do not modify an image during a deploy, then retry")]
    SizeChanged { path: PathBuf, expected: u64, actual: u64 },

    #[error("image {path}: read error at offset {offset}: {error}; check the disk or file system holding the image")]
    Io { path: PathBuf, offset: u64, error: io::Error },

    #[error("invalid image options: {reason}")]
    InvalidOptions { reason: String },
}

impl SourceError {
    /// Classify a failure to open or stat `path`.
    pub(crate) fn open(path: &std::path::Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::NotFound {
            SourceError::NotFound { path: path.to_path_buf() }
        } else {
            SourceError::Unreadable { path: path.to_path_buf(), error }
        }
    }

    /// A read failure at `offset` of `path`.
    pub(crate) fn io(path: &std::path::Path, offset: u64, error: io::Error) -> Self {
        SourceError::Io { path: path.to_path_buf(), offset, error }
    }

    /// A structural problem in a qcow2 file.
    pub(crate) fn corrupt(path: &std::path::Path, detail: impl Into<String>) -> Self {
        SourceError::Qcow2Corrupt { path: path.to_path_buf(), detail: detail.into() }
    }
}

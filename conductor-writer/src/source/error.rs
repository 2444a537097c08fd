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
    let p = if path == std::path::Path::new("-") {
        "FILE".to_owned()
    } else {
        path.display().to_string()
    };
    match format {
        ForeignFormat::Compressed(_) => {
            format!("decompress it on the way in: `bunzip2 -c {p} | conductor-writer write - URL`")
        }
        _ => format!("convert it first: `qemu-img convert -O raw {p} {p}.raw`, then pass {p}.raw"),
    }
}

/// Why an image could not be opened, verified or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The image file does not exist.
    #[error("image {path}: no such file; check the path (and that the image was downloaded)")]
    NotFound { path: PathBuf },

    /// The image file exists but cannot be opened or examined.
    #[error("image {path}: cannot read it: {error}; check its permissions and that it is a regular file")]
    Unreadable { path: PathBuf, error: io::Error },

    /// The path names a directory, character device, pipe or socket.
    #[error("image {path}: is {what}, not a regular file or block device; pass an image file")]
    NotAFile { path: PathBuf, what: &'static str },

    /// A recognised format that is not decoded here (the message says how to convert it).
    #[error("image {path}: is a {} image, which is not supported; {}", format.name(), convert_hint(format, path))]
    UnsupportedFormat { path: PathBuf, format: ForeignFormat },

    /// `FormatChoice::Qcow2` was asked for a file without the qcow2 magic.
    #[error(
        "image {path}: was given as qcow2 but is not a qcow2 image (no \"QFI\\xfb\" magic); use format auto or raw"
    )]
    NotQcow2 { path: PathBuf },

    /// The qcow2 structure is invalid (header, L1/L2 tables, truncation, or as imago reports).
    #[error("image {path}: the qcow2 image is corrupt: {detail}; run `qemu-img check {}` to see more, or rebuild the image", path.display())]
    Qcow2Corrupt { path: PathBuf, detail: String },

    /// The VMDK structure is invalid (header, footer, grain tables, compressed grains).
    #[error("image {path}: the VMDK image is corrupt: {detail}; run `qemu-img check {}` to see more, or rebuild the image", path.display())]
    VmdkCorrupt { path: PathBuf, detail: String },

    /// A VMDK variant not read here.
    #[error("image {path}: the VMDK image uses {feature}, which is not supported; run `qemu-img convert -O raw {} {}.raw` and pass the result", path.display(), path.display())]
    VmdkUnsupported { path: PathBuf, feature: String },

    /// A compressed stream (gzip, zstd, xz) that does not decode.
    #[error(
        "image {path}: the {kind} stream is corrupt at uncompressed byte {offset}: {error}; the download or the file is damaged, fetch it again"
    )]
    Decompress {
        path: PathBuf,
        kind: &'static str,
        offset: u64,
        error: io::Error,
    },

    /// An HTTP(S) request for the image failed (after any retries).
    #[error("image {url}: {reason}")]
    Http { url: String, reason: String },

    /// The checksum of an image streamed while it was written did not match: the disk holds
    /// what arrived, which is not the image intended.
    #[error(
        "image {path}: checksum mismatch: expected {expected}, got {actual} over the bytes as they streamed; THE DISK NOW HOLDS UNVERIFIED DATA (the image was written as it arrived): do not boot it, write it again from a good image (`--checksum-first` checks a download before anything is written)"
    )]
    StreamChecksumMismatch {
        path: PathBuf,
        expected: Checksum,
        actual: Checksum,
    },

    /// qcow2 and VMDK are read by offsets: not from a pipe.
    #[error(
        "image {path}: is a {format} image, which is read by offsets and cannot come from standard input; pass its path or its URL"
    )]
    NotStreamable { path: PathBuf, format: super::Format },

    /// AES or LUKS encryption (imago has no decryption; it would write ciphertext).
    #[error(
        "image {path}: the qcow2 image is encrypted ({method}), which is not supported; decrypt it first: `qemu-img convert --object secret,id=k,file=KEYFILE --image-opts driver=qcow2,file.filename={},encrypt.key-secret=k -O raw {}.raw`", path.display(), path.display()
    )]
    Qcow2Encrypted { path: PathBuf, method: &'static str },

    /// Guest data lives in a separate data file.
    #[error("image {path}: the qcow2 image keeps its data in an external data file, which is not supported; run `qemu-img convert -O raw {} {}.raw` and pass the result", path.display(), path.display())]
    Qcow2ExternalData { path: PathBuf },

    /// A qcow2 version or incompatible feature this reader does not handle.
    #[error("image {path}: the qcow2 image uses {feature}, which is not supported; run `qemu-img convert -O raw {} {}.raw` and pass the result", path.display(), path.display())]
    Qcow2Unsupported { path: PathBuf, feature: String },

    /// A backing file is missing, unreadable, of an unknown format, too deep, or loops.
    #[error(
        "image {path}: its backing file {backing} ({resolved}) {problem}; put the backing file in place (relative names are relative to the image's directory) or run `qemu-img rebase`"
    )]
    BackingFile {
        path: PathBuf,
        backing: String,
        resolved: PathBuf,
        problem: String,
    },

    /// A backing file named by an image whose backing files are refused.
    #[error(
        "image {path}: names the backing file {backing:?}, and backing files are refused here (an untrusted image could copy any local file onto the disk); flatten it first with `qemu-img convert -O qcow2 {} FLAT.qcow2`",
        path.display()
    )]
    BackingFileRefused { path: PathBuf, backing: String },

    /// The image file's digest is not the expected one.
    #[error(
        "image {path}: checksum mismatch: expected {expected}, got {actual}; the image is damaged or not the one intended, download it again"
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: Checksum,
        actual: Checksum,
    },

    /// A checksum string that does not parse.
    #[error("invalid checksum {input:?}: {reason}; write it as sha256:<64 hex digits> or md5:<32 hex digits>")]
    InvalidChecksum { input: String, reason: String },

    /// The image file's size changed between opening and reading.
    #[error(
        "image {path}: changed while being read (it was {expected} bytes, now {actual}); do not modify an image during a deploy, then retry"
    )]
    SizeChanged { path: PathBuf, expected: u64, actual: u64 },

    /// A read failed at `offset` (in the image as the disk sees it).
    #[error("image {path}: read error at offset {offset}: {error}; check the disk or file system holding the image")]
    Io {
        path: PathBuf,
        offset: u64,
        error: io::Error,
    },

    /// `OpenOptions` out of range.
    #[error("invalid image options: {reason}")]
    InvalidOptions { reason: String },
}

impl SourceError {
    /// Classify a failure to open or stat `path`.
    pub(crate) fn open(path: &std::path::Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::NotFound {
            SourceError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            SourceError::Unreadable {
                path: path.to_path_buf(),
                error,
            }
        }
    }

    /// A read failure at `offset` of `path`.
    pub(crate) fn io(path: &std::path::Path, offset: u64, error: io::Error) -> Self {
        SourceError::Io {
            path: path.to_path_buf(),
            offset,
            error,
        }
    }

    /// A structural problem in a qcow2 file.
    pub(crate) fn corrupt(path: &std::path::Path, detail: impl Into<String>) -> Self {
        SourceError::Qcow2Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

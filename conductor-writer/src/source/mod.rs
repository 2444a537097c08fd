//! Reading disk images as a stream of data and zero runs.
//!
//! Zero runs never cross the wire as data (they become cheap zeroing commands), so the reader's
//! job is to tell data from zeroes cheaply and to read as little as the format allows.
//!
//! Layout:
//! - [`detect`]: open the file, tell its format by magic; refuse foreign formats with a
//!   `qemu-img convert` hint.
//! - [`scan`]: the one [`Chunk`] producer: format extent map + zero-scan of the data read.
//! - [`raw`]: raw files and block devices; holes via `SEEK_DATA`/`SEEK_HOLE`.
//! - [`qcow2`], [`qcow2_header`]: qcow2 v2/v3 via imago, with our own header checks and
//!   backing-chain walk.
//! - [`mapped`]: stored data scanned through a memory mapping (the crate's one `unsafe`).
//! - [`memory`]: bytes in memory and runs of zeroes (partition tables, wiped metadata).
//! - [`checksum`]: `sha256:`/`md5:` digests of the image file as stored.
//! - [`error`]: [`SourceError`], one user-facing message per failure.

mod checksum;
mod detect;
mod error;
mod mapped;
mod memory;
mod qcow2;
mod qcow2_header;
mod raw;
pub(crate) mod scan;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

pub use checksum::{Checksum, verify_checksum};
pub use error::{ForeignFormat, SourceError};
pub use memory::{Memory, Zeroes};

use detect::{Detected, ImageFile, detect};

/// One piece of the image, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Image bytes to send.
    Data { offset: u64, data: bytes::Bytes },
    /// Image bytes stored as they are in a file, to be sent from there (only from a source
    /// asked to [`Source::offer_stored`]).
    Stored { offset: u64, range: iscsi_wire::FileRange },
    /// A run that reads as zeroes: never read from disk if the format says so, never sent as data.
    Zero { offset: u64, len: u64 },
}

impl Chunk {
    /// Where the chunk starts in the image.
    pub fn offset(&self) -> u64 {
        match self {
            Chunk::Data { offset, .. } | Chunk::Stored { offset, .. } | Chunk::Zero { offset, .. } => *offset,
        }
    }

    /// How many bytes of the image it covers.
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Data { data, .. } => data.len() as u64,
            Chunk::Stored { range, .. } => range.len() as u64,
            Chunk::Zero { len, .. } => *len,
        }
    }

    /// True for a chunk that covers nothing (never produced by a [`Source`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An image being read.
pub trait Source: Send + fmt::Debug {
    /// Virtual size in bytes (what the disk will hold).
    fn size(&self) -> u64;

    /// The image's format.
    fn format(&self) -> Format;

    /// The next chunk, in increasing offset order, covering [0, size) exactly once; data chunks
    /// at most `max` bytes. None at the end.
    ///
    /// `max` is rounded down to a whole number of zero granules, and is at least one granule.
    /// Each call reads at most about `max` bytes, so a long run of written zeroes may come back
    /// as several adjacent [`Chunk::Zero`]s.
    fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError>;

    /// Bytes that a full pass will yield as Data (for progress bars and summaries), if known
    /// without reading everything (e.g. allocated size), else None.
    ///
    /// An upper bound: allocated bytes that turn out to be zeroes are reported as Zero.
    fn data_hint(&self) -> Option<u64>;

    /// From now on, report data that the image stores as it is (a raw file, uncompressed qcow2
    /// clusters of an image without a backing file) as [`Chunk::Stored`], for a writer that
    /// sends it straight from the file. Sources that have no such data ignore this.
    fn offer_stored(&mut self) {}
}

/// Image formats that can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        })
    }
}

/// Which format to read an image as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FormatChoice {
    /// Tell by magic number; anything unrecognised is raw.
    #[default]
    Auto,
    /// Raw, whatever the file starts with.
    Raw,
    /// qcow2; anything else is an error.
    Qcow2,
}

/// How to open an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    pub format: FormatChoice,
    /// Zero runs are detected at this granularity (a power of two >= 512, default 4096): any
    /// aligned granule of all-zero bytes inside data is reported as Zero; chunks are aligned to
    /// it except at the image's end.
    pub zero_granularity: u32,
    /// Follow a qcow2 image's backing files. An image from an untrusted
    /// source can name any local file as its backing file, whose contents
    /// would then land on the disk: refuse them for such images.
    pub backing_files: bool,
    /// Look for zero granules inside the data the format stores. Off, only
    /// what the format knows reads as zeroes (holes, unallocated clusters)
    /// comes back as [`Chunk::Zero`]: for images whose stored zeroes must be
    /// written while their holes need not be.
    pub scan_zeroes: bool,
}

/// The largest zero granularity accepted: one granule must fit in a read buffer.
pub const MAX_ZERO_GRANULARITY: u32 = 64 << 20;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            format: FormatChoice::Auto,
            zero_granularity: 4096,
            backing_files: true,
            scan_zeroes: true,
        }
    }
}

/// Open the image at `path` for reading.
pub fn open(path: &Path, options: &OpenOptions) -> Result<Box<dyn Source>, SourceError> {
    open_with(path, options, true)
}

/// [`open`], with `seek_data` false to read raw files as if the file system had no
/// `SEEK_DATA` (for tests of that path).
pub(crate) fn open_with(path: &Path, options: &OpenOptions, seek_data: bool) -> Result<Box<dyn Source>, SourceError> {
    let granule = options.zero_granularity;
    if !granule.is_power_of_two() || !(512..=MAX_ZERO_GRANULARITY).contains(&granule) {
        return Err(SourceError::InvalidOptions {
            reason: format!("zero granularity {granule} must be a power of two from 512 to {MAX_ZERO_GRANULARITY}"),
        });
    }
    let image = ImageFile::open(path)?;
    let format = match options.format {
        FormatChoice::Raw => Format::Raw,
        FormatChoice::Auto => match detect(&image)? {
            Detected::Raw => Format::Raw,
            Detected::Qcow2 => Format::Qcow2,
            Detected::Foreign(format) => {
                return Err(SourceError::UnsupportedFormat {
                    path: path.into(),
                    format,
                });
            }
        },
        FormatChoice::Qcow2 => match detect(&image)? {
            Detected::Qcow2 => Format::Qcow2,
            Detected::Foreign(format @ ForeignFormat::Qcow1) => {
                return Err(SourceError::UnsupportedFormat {
                    path: path.into(),
                    format,
                });
            }
            _ => return Err(SourceError::NotQcow2 { path: path.into() }),
        },
    };
    tracing::debug!(path = %path.display(), %format, size = image.size, "opening image");
    Ok(match format {
        Format::Raw => {
            let mut source = raw::RawSource::new(image, granule, seek_data);
            source.chunker.scan_zeroes = options.scan_zeroes;
            Box::new(source)
        }
        Format::Qcow2 => {
            let mut source = qcow2::Qcow2Source::open(image, granule, options.backing_files)?;
            source.chunker.scan_zeroes = options.scan_zeroes;
            Box::new(source)
        }
    })
}

//! Reading disk images as a stream of data and zero runs.
//!
//! Zero runs never cross the wire as data (they become cheap zeroing commands), so the reader's
//! job is to tell data from zeroes cheaply and to read as little as the format allows.
//!
//! Layout:
//! - [`detect`]: open the file, tell its format by magic; refuse foreign formats with a
//!   `qemu-img convert` hint.
//! - [`origin`]: where an image comes from (a path, `-` for standard input, an `http(s)://`
//!   URL) and opening it as the right source.
//! - [`scan`]: the one [`Chunk`] producer: format extent map + zero-scan of the data read.
//! - [`raw`]: raw files and block devices; holes via `SEEK_DATA`/`SEEK_HOLE`.
//! - [`stream`]: raw images read once, front to back (standard input, HTTP bodies), and
//!   gzip, zstd or xz streams of them.
//! - [`qcow2`], [`qcow2_header`]: qcow2 v2/v3 via imago, with our own header checks and
//!   backing-chain walk.
//! - [`mapped`]: stored data scanned through a memory mapping (the crate's one `unsafe`).
//! - [`qcow2_tables`]: qcow2 through our own table walk, for images over HTTP and images
//!   with zstd-compressed clusters.
//! - [`vmdk`]: sparse VMDK (monolithicSparse, streamOptimized).
//! - [`access`]: files read at offsets, local or remote ([`http`]: by range requests).
//! - [`memory`]: bytes in memory and runs of zeroes (partition tables, wiped metadata).
//! - [`checksum`]: `sha256:`/`md5:` digests of the image file as stored.
//! - [`error`]: [`SourceError`], one user-facing message per failure.

mod access;
mod checksum;
mod detect;
mod error;
mod http;
mod mapped;
mod memory;
mod origin;
mod qcow2;
mod qcow2_header;
mod qcow2_tables;
mod raw;
pub(crate) mod scan;
mod stream;
#[cfg(test)]
mod tests;
mod vmdk;

use std::fmt;
use std::path::Path;

pub use checksum::{Checksum, verify_checksum};
pub use error::{ForeignFormat, SourceError};
pub use http::{download, download_to};
pub use memory::{Memory, Zeroes};
pub use origin::{Origin, Remote, open_origin};

use detect::{Detected, ImageFile, detect};
use scan::{Chunker, ExtentMap};

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

    /// False for a stream whose length shows only at its end (standard input, a compressed
    /// stream): [`Source::size`] is then `u64::MAX` until the last chunk has been read.
    fn length_known(&self) -> bool {
        true
    }

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
    Vmdk,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
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
    let granule = check_options(options)?;
    let mut image = ImageFile::open(path)?;
    let detected = match options.format {
        FormatChoice::Raw => Detected::Raw,
        _ => detect(&image)?,
    };
    let detected = choose(path, options.format, detected)?;
    tracing::debug!(path = %path.display(), ?detected, size = image.size, "opening image");
    Ok(match detected {
        Detected::Raw => {
            let mut source = raw::RawSource::new(image, granule, seek_data);
            source.chunker.scan_zeroes = options.scan_zeroes;
            Box::new(source)
        }
        Detected::Qcow2 if qcow2_header::read_header(&mut image)?.zstd => {
            let tables = qcow2_tables::Qcow2Tables::open(Box::new(image))?;
            map_source(tables.size(), tables, Format::Qcow2, granule, options)
        }
        Detected::Qcow2 => {
            let mut source = qcow2::Qcow2Source::open(image, granule, options.backing_files)?;
            source.chunker.scan_zeroes = options.scan_zeroes;
            Box::new(source)
        }
        Detected::Vmdk => {
            let vmdk = vmdk::VmdkSparse::open(Box::new(image))?;
            map_source(vmdk.size(), vmdk, Format::Vmdk, granule, options)
        }
        Detected::Compressed(kind) => {
            let input = stream::SharedInput::new(Box::new(stream::Hashed::new(image.file, path, None)));
            let mut source = stream::StreamSource::new(Vec::new(), input, path, Some(kind), None, granule)?;
            source.scan_zeroes = options.scan_zeroes;
            Box::new(source)
        }
        Detected::Foreign(format) => {
            return Err(SourceError::UnsupportedFormat {
                path: path.into(),
                format,
            });
        }
    })
}

/// The zero granularity, checked.
fn check_options(options: &OpenOptions) -> Result<u32, SourceError> {
    let granule = options.zero_granularity;
    if !granule.is_power_of_two() || !(512..=MAX_ZERO_GRANULARITY).contains(&granule) {
        return Err(SourceError::InvalidOptions {
            reason: format!("zero granularity {granule} must be a power of two from 512 to {MAX_ZERO_GRANULARITY}"),
        });
    }
    Ok(granule)
}

/// What the magic said, held against what the user asked for.
fn choose(path: &Path, choice: FormatChoice, detected: Detected) -> Result<Detected, SourceError> {
    match (choice, detected) {
        (FormatChoice::Raw, _) => Ok(Detected::Raw),
        (FormatChoice::Qcow2, Detected::Qcow2) => Ok(Detected::Qcow2),
        (FormatChoice::Qcow2, Detected::Foreign(format @ ForeignFormat::Qcow1)) => {
            Err(SourceError::UnsupportedFormat {
                path: path.into(),
                format,
            })
        }
        (FormatChoice::Qcow2, _) => Err(SourceError::NotQcow2 { path: path.into() }),
        (FormatChoice::Auto, detected) => Ok(detected),
    }
}

/// A source over a format's own extent map.
#[derive(Debug)]
struct MapSource<M> {
    chunker: Chunker<M>,
    format: Format,
}

fn map_source<M: ExtentMap + Send + 'static>(
    size: u64,
    map: M,
    format: Format,
    granule: u32,
    options: &OpenOptions,
) -> Box<dyn Source> {
    let mut chunker = Chunker::new(map, size, granule);
    chunker.scan_zeroes = options.scan_zeroes;
    Box::new(MapSource { chunker, format })
}

impl<M: ExtentMap + Send> Source for MapSource<M> {
    fn size(&self) -> u64 {
        self.chunker.size()
    }

    fn format(&self) -> Format {
        self.format
    }

    fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError> {
        self.chunker.next_chunk(max)
    }

    fn data_hint(&self) -> Option<u64> {
        None
    }
}

//! Turning a format's extent map plus the bytes of its data extents into [`Chunk`]s.
//!
//! A format says, cheaply, which ranges are known to read as zeroes (holes, unallocated and
//! zero clusters) and which must be read. Those that are read are scanned granule by granule,
//! because images are full of zeroed blocks that were written out as data (a freshly made file
//! system, a `dd if=/dev/zero`): they are reported as [`Chunk::Zero`] too, so no zero byte ever
//! crosses the wire as data.
//!
//! Every chunk starts on a granule boundary; only the last granule of the image may be short.
//!
//! Data the format stores as it is (a raw file, an uncompressed qcow2 cluster) can instead be
//! scanned through a memory mapping and reported as [`Chunk::Stored`], for a writer that sends it
//! straight from the file (see [`super::Source::offer_stored`]).

use std::fs::File;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use iscsi_wire::FileRange;

use super::Chunk;
use super::error::SourceError;
use super::mapped::Mapped;

/// What a format knows about a range without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extent {
    /// Reads as zeroes; not read.
    Zero,
    /// Must be read (and may still turn out to be zeroes).
    Data,
}

/// Where image bytes are stored as they are: `len` bytes of `file` from `host`.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) file: Arc<File>,
    pub(crate) host: u64,
    pub(crate) len: u64,
}

/// The format-specific half of a source: where the data is, and how to read it.
pub(crate) trait ExtentMap: std::fmt::Debug {
    /// The kind of the range starting at `offset` (< image size) and its length (> 0, may run
    /// past the image's end, which the caller clips).
    fn extent_at(&mut self, offset: u64) -> Result<(Extent, u64), SourceError>;

    /// Fill `buf` with the image's bytes at `offset` (the whole range lies within the image).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError>;

    /// Called once the last chunk has been produced: fail if the image changed meanwhile.
    fn finish(&mut self) -> Result<(), SourceError>;

    /// Where the image's bytes from `offset` (inside a data extent) are stored as they are, if
    /// they are: a file, the offset in it, and for how many bytes. `None` (the default) where
    /// they must be read through the format. Fails if the image changed since it was opened.
    fn stored_at(&mut self, _offset: u64) -> Result<Option<Stored>, SourceError> {
        Ok(None)
    }
}

/// Image bytes from the chunker's position on, read or mapped, not yet reported.
#[derive(Debug, Default)]
enum Window {
    #[default]
    Empty,
    Read(Bytes),
    /// Stored in `file` from `host` (the mapping's first byte); `used` bytes already reported.
    Stored {
        map: Mapped,
        file: Arc<File>,
        host: u64,
        used: usize,
    },
}

impl Window {
    fn bytes(&self) -> &[u8] {
        match self {
            Window::Empty => &[],
            Window::Read(bytes) => bytes,
            Window::Stored { map, used, .. } => &map.bytes()[*used..],
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// Report the next `len` bytes, which start at image `offset`.
    fn take(&mut self, offset: u64, len: usize) -> Chunk {
        match self {
            Window::Empty => Chunk::Data {
                offset,
                data: Bytes::new(),
            },
            Window::Read(bytes) => Chunk::Data {
                offset,
                data: bytes.split_to(len),
            },
            Window::Stored { file, host, used, .. } => {
                let range = FileRange::new(file.clone(), *host + *used as u64, len);
                *used += len;
                Chunk::Stored { offset, range }
            }
        }
    }
}

/// True if every byte of `buf` is zero.
///
/// Data granules usually hold a non-zero byte early, so a short prefix is checked first; the
/// rest is folded in blocks, which the compiler vectorises, with an exit between blocks.
#[inline]
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    const BLOCK: usize = 256;
    let (head, rest) = buf.split_at(buf.len().min(16));
    if head.iter().any(|&b| b != 0) {
        return false;
    }
    let mut blocks = rest.chunks_exact(BLOCK);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

/// Produces chunks in order for any [`ExtentMap`].
#[derive(Debug)]
pub(crate) struct Chunker<M> {
    pub(crate) map: M,
    size: u64,
    granule: u64,
    /// Next offset to report; a multiple of `granule` or `size`.
    pos: u64,
    /// Bytes already read or mapped starting at `pos`, not yet reported.
    pending: Window,
    /// Bytes read from the image so far (for tests and summaries).
    pub(crate) bytes_read: u64,
    /// Report zero granules inside data as [`Chunk::Zero`] (else only what the format knows).
    pub(crate) scan_zeroes: bool,
    /// Report stored data as [`Chunk::Stored`].
    pub(crate) offer_stored: bool,
    finished: bool,
}

impl<M: ExtentMap> Chunker<M> {
    pub(crate) fn new(map: M, size: u64, granule: u32) -> Self {
        let granule = u64::from(granule);
        Chunker {
            map,
            size,
            granule,
            pos: 0,
            pending: Window::Empty,
            bytes_read: 0,
            scan_zeroes: true,
            offer_stored: false,
            finished: false,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk; see [`super::Source::next_chunk`].
    pub(crate) fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError> {
        if self.pos >= self.size {
            if !self.finished {
                self.finished = true;
                self.map.finish()?;
            }
            return Ok(None);
        }
        // A read window is a whole number of granules and at most `max`, but never empty.
        let window = (max as u64 / self.granule).max(1) * self.granule;
        let start = self.pos;
        let mut read_this_call = 0u64;
        loop {
            if self.pending.is_empty() {
                if self.pos >= self.size {
                    break;
                }
                let zero_end = self.known_zero_end(self.pos)?;
                if zero_end > self.pos {
                    self.pos = zero_end;
                    continue;
                }
                if self.pos > start && read_this_call >= window {
                    // Bound the work of one call, so callers can show progress.
                    break;
                }
                self.fill(window)?;
                read_this_call += self.pending.bytes().len() as u64;
            }
            // `pending` starts at `pos`: take its leading zero granules into the zero run.
            let zeroes = if self.scan_zeroes {
                self.leading_granules(true)
            } else {
                0
            };
            if zeroes > 0 {
                let _ = self.pending.take(self.pos, zeroes);
                self.pos += zeroes as u64;
            }
            if !self.pending.is_empty() {
                break;
            }
        }
        if self.pos > start {
            return Ok(Some(Chunk::Zero {
                offset: start,
                len: self.pos - start,
            }));
        }
        let len = if self.scan_zeroes {
            self.leading_granules(false)
        } else {
            self.pending.bytes().len()
        };
        let chunk = self.pending.take(start, len);
        self.pos += len as u64;
        Ok(Some(chunk))
    }

    /// End of the run of whole granules from `offset` that the format says read as zeroes
    /// (`offset` itself if there is none). Does not read image data.
    fn known_zero_end(&mut self, offset: u64) -> Result<u64, SourceError> {
        let mut end = offset;
        while end < self.size {
            let (extent, len) = self.map.extent_at(end)?;
            if extent != Extent::Zero {
                break;
            }
            end = end.saturating_add(len.max(1)).min(self.size);
        }
        if end == self.size {
            return Ok(end);
        }
        // A granule that is only partly a hole is read like data.
        Ok(offset.max(end - end % self.granule))
    }

    /// Read the data that starts at `pos`: through its extent (and any data extents right
    /// after it), rounded up to a granule, within `window` bytes.
    fn fill(&mut self, window: u64) -> Result<(), SourceError> {
        let limit = self.pos.saturating_add(window).min(self.size);
        let mut end = self.pos;
        while end < limit {
            let (extent, len) = self.map.extent_at(end)?;
            let next = end.saturating_add(len.max(1));
            // Stop at a hole that holds a whole granule; smaller ones are read with the data.
            if extent == Extent::Zero && end > self.pos && (next >= self.size || self.holds_granule(end, next)) {
                break;
            }
            end = next;
        }
        let end = end.div_ceil(self.granule).saturating_mul(self.granule).min(limit);
        let len = usize::try_from(end - self.pos).map_err(|_| SourceError::InvalidOptions {
            reason: "read window does not fit in memory".into(),
        })?;
        if self.offer_stored && self.map_stored(len)? {
            return Ok(());
        }
        let mut buf = BytesMut::zeroed(len);
        self.map.read_at(self.pos, &mut buf)?;
        self.bytes_read += len as u64;
        self.pending = Window::Read(buf.freeze());
        Ok(())
    }

    /// Map the data at `pos`, at most `len` bytes of it, if the format stores it as it is in
    /// whole granules; false when it must be read instead.
    fn map_stored(&mut self, len: usize) -> Result<bool, SourceError> {
        let Some(stored) = self.map.stored_at(self.pos)? else {
            return Ok(false);
        };
        let run = stored.len.min(len as u64);
        // A run that ends inside a granule (other than the image's last) is read instead, so
        // that every chunk still starts on a granule boundary.
        let len = if self.pos + run == self.size {
            run
        } else {
            run - run % self.granule
        };
        let Ok(len @ 1..) = usize::try_from(len) else {
            return Ok(false);
        };
        match Mapped::map(&stored.file, stored.host, len) {
            Ok(map) => {
                self.bytes_read += len as u64;
                self.pending = Window::Stored {
                    map,
                    file: stored.file,
                    host: stored.host,
                    used: 0,
                };
                Ok(true)
            }
            Err(e) => {
                tracing::debug!("cannot map the image ({e}): reading it instead");
                self.offer_stored = false;
                Ok(false)
            }
        }
    }

    /// True if `[start, end)` contains a whole aligned granule.
    fn holds_granule(&self, start: u64, end: u64) -> bool {
        let first = start.div_ceil(self.granule).saturating_mul(self.granule);
        first.saturating_add(self.granule) <= end
    }

    /// Length of the leading run of `pending`'s granules that are all zero (`zero`) or each
    /// hold a non-zero byte (`!zero`).
    fn leading_granules(&self, zero: bool) -> usize {
        let granule = usize::try_from(self.granule).unwrap_or(usize::MAX);
        self.pending
            .bytes()
            .chunks(granule)
            .take_while(|g| is_zero(g) == zero)
            .map(<[u8]>::len)
            .sum()
    }
}

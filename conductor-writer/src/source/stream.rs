//! Raw images that can only be read once, front to back: standard input, an HTTP body, and
//! gzip, zstd or xz streams of a raw image (told apart by their magic), wherever they come from.
//!
//! The bytes are read in windows and scanned granule by granule like any other data, so zero
//! runs still never cross the wire as data. A stream's length is often unknown until its end
//! (a pipe, a compressed stream): such a source says so ([`Source::length_known`]), and the
//! writer checks each piece against the disk's room instead of the whole up front.
//!
//! A checksum of a stream is computed on the bytes as stored (the compressed bytes, for a
//! compressed stream), as they arrive, and compared at the end: after the data was written.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};

use super::checksum::{Checksum, Hasher};
use super::error::SourceError;
use super::scan::is_zero;
use super::{Chunk, Format, Source};

/// Where a stream's bytes come from, and what must hold once it is read: the rest of it goes
/// through the checksum, which must match.
pub(crate) trait Input: Read + Send + fmt::Debug {
    fn finish(&mut self) -> Result<(), SourceError>;
}

/// Any reader, hashed as it is read.
pub(crate) struct Hashed<R> {
    inner: R,
    path: PathBuf,
    hash: Option<(Hasher, Checksum)>,
}

impl<R> fmt::Debug for Hashed<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hashed")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Send> Hashed<R> {
    pub(crate) fn new(inner: R, path: &Path, checksum: Option<Checksum>) -> Self {
        Hashed {
            inner,
            path: path.to_path_buf(),
            hash: checksum.map(|c| (Hasher::for_checksum(&c), c)),
        }
    }
}

impl<R: Read + Send> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some((hasher, _)) = self.hash.as_mut() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R: Read + Send> Input for Hashed<R> {
    fn finish(&mut self) -> Result<(), SourceError> {
        let Some((_, expected)) = self.hash else {
            return Ok(());
        };
        // What a decoder left unread (padding, a trailer) is part of the file all the same.
        let mut rest = vec![0u8; 64 << 10];
        loop {
            match self.read(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(input_error(&self.path, 0, e)),
            }
        }
        let actual = self.hash.take().map(|(h, _)| h.finish());
        match actual {
            Some(actual) if actual != expected => Err(SourceError::StreamChecksumMismatch {
                path: self.path.clone(),
                expected,
                actual,
            }),
            _ => Ok(()),
        }
    }
}

/// The input, shared between the decoder that reads it and the source that finishes it.
#[derive(Debug, Clone)]
pub(crate) struct SharedInput(Arc<Mutex<Box<dyn Input>>>);

impl SharedInput {
    pub(crate) fn new(input: Box<dyn Input>) -> Self {
        SharedInput(Arc::new(Mutex::new(input)))
    }

    fn finish(&self) -> Result<(), SourceError> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).finish()
    }
}

impl Read for SharedInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).read(buf)
    }
}

/// What an xz stream may ask for to be decoded (`xz -9` needs 65 MiB; a header asking for
/// more is refused rather than trusted).
const XZ_MEMORY: u64 = 128 << 20;

/// A compressed stream, by magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }

    /// The decoder over `input`; concatenated members, frames and streams are all read. zstd
    /// keeps its own default bound on a frame's window (128 MiB).
    fn decoder(self, input: impl Read + Send + 'static) -> io::Result<Box<dyn Read + Send>> {
        Ok(match self {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMORY, liblzma::stream::CONCATENATED)
                    .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(input, stream))
            }
        })
    }
}

/// A failed read of the input: an HTTP failure keeps its own words.
fn input_error(path: &Path, offset: u64, error: io::Error) -> SourceError {
    if error.get_ref().is_some_and(|e| e.is::<SourceError>()) {
        if let Some(inner) = error.into_inner()
            && let Ok(source) = inner.downcast::<SourceError>()
        {
            return *source;
        }
        return SourceError::InvalidOptions {
            reason: "internal error: lost an input error".into(),
        };
    }
    SourceError::io(path, offset, error)
}

/// A raw image read once, front to back.
pub(crate) struct StreamSource {
    reader: Box<dyn Read + Send>,
    input: SharedInput,
    path: PathBuf,
    compression: Option<Compression>,
    /// The length, when known before the end.
    size: Option<u64>,
    granule: u64,
    /// Next offset to report; `pending` starts there.
    pos: u64,
    pending: Bytes,
    eof: bool,
    finished: bool,
    pub(crate) scan_zeroes: bool,
}

impl fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSource")
            .field("path", &self.path)
            .field("compression", &self.compression)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl StreamSource {
    /// A stream whose first bytes, `head`, were already read from `input` (to tell its
    /// format); `size` is its length if known (uncompressed streams only).
    pub(crate) fn new(
        head: Vec<u8>,
        input: SharedInput,
        path: &Path,
        compression: Option<Compression>,
        size: Option<u64>,
        granule: u32,
    ) -> Result<Self, SourceError> {
        let whole = io::Cursor::new(head).chain(input.clone());
        let reader: Box<dyn Read + Send> = match compression {
            None => Box::new(whole),
            Some(kind) => kind.decoder(whole).map_err(|e| SourceError::Decompress {
                path: path.to_path_buf(),
                kind: kind.name(),
                offset: 0,
                error: e,
            })?,
        };
        Ok(StreamSource {
            reader,
            input,
            path: path.to_path_buf(),
            compression,
            size: if compression.is_some() { None } else { size },
            granule: u64::from(granule),
            pos: 0,
            pending: Bytes::new(),
            eof: false,
            finished: false,
            scan_zeroes: true,
        })
    }

    /// Read until `pending` holds `window` bytes or the stream ends.
    fn fill(&mut self, window: usize) -> Result<(), SourceError> {
        if self.eof || self.pending.len() >= window {
            return Ok(());
        }
        let mut buf = BytesMut::with_capacity(window);
        buf.extend_from_slice(&self.pending);
        let mut filled = buf.len();
        buf.resize(window, 0);
        while filled < window {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e, self.pos + filled as u64)),
            }
        }
        buf.truncate(filled);
        self.pending = buf.freeze();
        if self.eof {
            let end = self.pos + self.pending.len() as u64;
            if let Some(size) = self.size
                && end != size
            {
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the stream ended after {end} of its {size} bytes"),
                );
                return Err(SourceError::io(&self.path, end, error));
            }
        }
        Ok(())
    }

    fn read_error(&self, error: io::Error, offset: u64) -> SourceError {
        match self.compression {
            Some(kind) if error.get_ref().is_none_or(|e| !e.is::<SourceError>()) => SourceError::Decompress {
                path: self.path.clone(),
                kind: kind.name(),
                offset,
                error,
            },
            _ => input_error(&self.path, offset, error),
        }
    }

    /// Bytes in `pending`'s leading granules that are all zero (`zero`) or not.
    fn leading(&self, zero: bool) -> usize {
        self.pending
            .chunks(self.granule as usize)
            .take_while(|g| is_zero(g) == zero)
            .map(<[u8]>::len)
            .sum()
    }
}

impl Source for StreamSource {
    fn size(&self) -> u64 {
        match (self.size, self.eof && self.pending.is_empty()) {
            (Some(size), _) => size,
            (None, true) => self.pos,
            (None, false) => u64::MAX,
        }
    }

    fn length_known(&self) -> bool {
        self.size.is_some() || (self.eof && self.pending.is_empty())
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError> {
        let window = (max as u64 / self.granule).max(1) * self.granule;
        let window = usize::try_from(window).unwrap_or(1 << 20);
        let start = self.pos;
        let mut read = 0usize;
        loop {
            self.fill(window)?;
            if self.pending.is_empty() {
                break;
            }
            let zeroes = if self.scan_zeroes { self.leading(true) } else { 0 };
            if zeroes == 0 {
                break;
            }
            let _ = self.pending.split_to(zeroes);
            self.pos += zeroes as u64;
            read += zeroes;
            // Bound one call's work, so callers can show progress.
            if read >= window {
                break;
            }
        }
        if self.pos > start {
            return Ok(Some(Chunk::Zero {
                offset: start,
                len: self.pos - start,
            }));
        }
        if self.pending.is_empty() {
            if !self.finished {
                self.finished = true;
                self.input.finish()?;
            }
            return Ok(None);
        }
        let len = if self.scan_zeroes {
            self.leading(false)
        } else {
            self.pending.len()
        };
        let data = self.pending.split_to(len);
        self.pos += len as u64;
        Ok(Some(Chunk::Data { offset: start, data }))
    }

    fn data_hint(&self) -> Option<u64> {
        None
    }
}

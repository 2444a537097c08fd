//! Raw images: regular files (sparse or not) and block devices.
//!
//! Holes are found with `SEEK_DATA`/`SEEK_HOLE`, so a sparse file's holes are never read. A
//! file system that cannot answer (`EINVAL`, or anything else that says "not supported") makes
//! the whole file data, which is still correct: it is read and zero-scanned.

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use super::detect::ImageFile;
use super::error::SourceError;
use super::scan::{Chunker, Extent, ExtentMap, Stored};
use super::{Chunk, Format, Source};

/// Above this many data extents, the data hint is not worth the `lseek` calls.
const HINT_MAX_EXTENTS: usize = 1 << 16;

/// A raw image: the file's bytes are the disk's bytes.
#[derive(Debug)]
pub(crate) struct RawSource {
    pub(crate) chunker: Chunker<RawExtents>,
    data_hint: Option<u64>,
}

/// The extent map of a raw file, from the file system.
#[derive(Debug)]
pub(crate) struct RawExtents {
    image: ImageFile,
    /// False once the file system said it cannot report holes.
    seek_data: bool,
    /// The last extent found, `[start, end)`: finding an extent's end can cost the file system
    /// a walk over it (tmpfs walks its page cache), so each extent is looked up once.
    last: Option<(u64, u64, Extent)>,
}

impl RawSource {
    pub(crate) fn new(image: ImageFile, granule: u32, seek_data: bool) -> Self {
        let size = image.size;
        let mut extents = RawExtents {
            image,
            seek_data,
            last: None,
        };
        let data_hint = extents.data_bytes();
        RawSource {
            chunker: Chunker::new(extents, size, granule),
            data_hint,
        }
    }

    #[cfg(test)]
    pub(crate) fn bytes_read(&self) -> u64 {
        self.chunker.bytes_read
    }
}

impl Source for RawSource {
    fn size(&self) -> u64 {
        self.chunker.size()
    }

    fn format(&self) -> Format {
        Format::Raw
    }

    fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>, SourceError> {
        self.chunker.next_chunk(max)
    }

    fn data_hint(&self) -> Option<u64> {
        self.data_hint
    }

    fn offer_stored(&mut self) {
        self.chunker.offer_stored = true;
    }
}

impl RawExtents {
    /// Seek with `whence` from `offset`; `None` means "no such offset before the end" (ENXIO).
    /// Turns `seek_data` off if the file system cannot do it.
    fn seek(&mut self, offset: u64, whence: Whence) -> Result<Option<u64>, SourceError> {
        let Ok(from) = i64::try_from(offset) else {
            return Ok(None);
        };
        match lseek(&self.image.file, from, whence) {
            Ok(to) => Ok(u64::try_from(to).ok()),
            Err(Errno::ENXIO) => Ok(None),
            Err(Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                tracing::debug!(path = %self.image.path.display(), "no SEEK_DATA here: reading the whole image");
                self.seek_data = false;
                Ok(None)
            }
            Err(e) => Err(SourceError::io(&self.image.path, offset, e.into())),
        }
    }

    /// Ask the file system for the extent at `offset`.
    fn find_extent(&mut self, offset: u64) -> Result<(Extent, u64), SourceError> {
        let to_end = self.image.size.saturating_sub(offset).max(1);
        if !self.seek_data {
            return Ok((Extent::Data, to_end));
        }
        match self.seek(offset, Whence::SeekData)? {
            // No data from here on: a hole up to the end (or the file shrank; `finish` says so).
            None if self.seek_data => Ok((Extent::Zero, to_end)),
            None => Ok((Extent::Data, to_end)),
            Some(data) if data > offset => Ok((Extent::Zero, data - offset)),
            Some(_) => match self.seek(offset, Whence::SeekHole)? {
                Some(hole) if hole > offset => Ok((Extent::Data, hole - offset)),
                _ => Ok((Extent::Data, to_end)),
            },
        }
    }

    /// Bytes in data extents (all of it without `SEEK_DATA`), or `None` if too fragmented.
    fn data_bytes(&mut self) -> Option<u64> {
        let size = self.image.size;
        let mut offset = 0;
        let mut data = 0;
        for _ in 0..HINT_MAX_EXTENTS {
            if offset >= size || !self.seek_data {
                return Some(if self.seek_data { data } else { size });
            }
            let (extent, len) = self.extent_at(offset).ok()?;
            if extent == Extent::Data {
                data += len.min(size - offset);
            }
            offset = offset.saturating_add(len.max(1));
        }
        None
    }
}

impl ExtentMap for RawExtents {
    fn extent_at(&mut self, offset: u64) -> Result<(Extent, u64), SourceError> {
        if let Some((start, end, extent)) = self.last
            && (start..end).contains(&offset)
        {
            return Ok((extent, end - offset));
        }
        let (extent, len) = self.find_extent(offset)?;
        self.last = Some((offset, offset.saturating_add(len), extent));
        Ok((extent, len))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let image = &self.image;
        let n = image
            .read_up_to(offset, buf)
            .map_err(|e| SourceError::io(&image.path, offset, e))?;
        if n < buf.len() {
            image.check_unchanged()?;
            // Same size but a short read: the device or file system lied; say where.
            let error = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read before the image's end");
            return Err(SourceError::io(&image.path, offset + n as u64, error));
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        self.image.check_unchanged()
    }

    fn stored_at(&mut self, offset: u64) -> Result<Option<Stored>, SourceError> {
        self.image.check_unchanged()?;
        Ok(Some(Stored {
            file: self.image.file.clone(),
            host: offset,
            len: self.image.size.saturating_sub(offset),
        }))
    }
}

//! An image file read at offsets, wherever it lives: a local file, or an HTTP(S) resource read
//! by range requests.
//!
//! The format readers (qcow2 tables, VMDK grain tables) only ever ask for "these bytes at this
//! offset", so one trait lets them read a local file and a remote one alike.

use std::fmt;
use std::io;
use std::path::Path;

use super::detect::ImageFile;
use super::error::SourceError;

/// A file of known size, read at offsets.
pub(crate) trait RandomAccess: Send + fmt::Debug {
    /// The file's name for messages (a path, or a URL).
    fn path(&self) -> &Path;

    /// Its size in bytes.
    fn size(&self) -> u64;

    /// Read as much of `[offset, offset + buf.len())` as the file holds; the count.
    fn read_up_to(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError>;

    /// Fail with [`SourceError::SizeChanged`] if the file changed since it was opened.
    fn check_unchanged(&mut self) -> Result<(), SourceError>;

    /// Reading is over: the last chance to fail (a file that changed, a streamed checksum
    /// that does not match).
    fn finish(&mut self) -> Result<(), SourceError> {
        self.check_unchanged()
    }

    /// Fill `buf` from `offset`; a short read is a truncated file, and says so.
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let n = self.read_up_to(offset, buf)?;
        if n < buf.len() {
            self.check_unchanged()?;
            let error = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends at {} bytes, inside data the image refers to: it is truncated",
                    self.size()
                ),
            );
            return Err(SourceError::io(self.path(), offset + n as u64, error));
        }
        Ok(())
    }
}

impl RandomAccess for ImageFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_up_to(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        ImageFile::read_up_to(self, offset, buf).map_err(|e| SourceError::io(&self.path, offset, e))
    }

    fn check_unchanged(&mut self) -> Result<(), SourceError> {
        ImageFile::check_unchanged(self)
    }
}

/// Little-endian and big-endian fields out of a header, zero where the buffer is short (the
/// caller checks lengths first).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// A table cache of at most `N` entries, least recently used out first: L2 tables, grain
/// tables. Memory is bounded by `N` tables, never by the image's size.
#[derive(Debug)]
pub(crate) struct TableCache<T> {
    entries: Vec<(u64, T)>,
    capacity: usize,
}

impl<T> TableCache<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        TableCache {
            entries: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// The table stored under `key`, loaded by `load` on a miss.
    pub(crate) fn get_or_load<E>(&mut self, key: u64, load: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            let entry = self.entries.remove(i);
            self.entries.push(entry);
        } else {
            let table = load()?;
            if self.entries.len() >= self.capacity {
                self.entries.remove(0);
            }
            self.entries.push((key, table));
        }
        let last = self.entries.len() - 1;
        Ok(&self.entries[last].1)
    }
}

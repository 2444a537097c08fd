//! The block device seam: where a logical unit's blocks live.
//!
//! [`BlockDevice`] is the one trait the SCSI layer (`lu`) talks to; it
//! deals in byte offsets and lengths (always whole logical blocks when the
//! `lu` module calls it) and plain `io::Error`s, which `lu` maps to sense
//! data in one place.
//!
//! # Layout
//!
//! - `mod.rs` — [`BlockDevice`], and the error every device gives a write
//!   to a read-only medium.
//! - `file.rs` — [`FileDevice`]: a regular file (an image) or a block device
//!   (the node's disk), with positional IO so commands can run concurrently.
//! - `mem.rs` — [`MemDevice`]: memory, with fault injection, for tests.

mod file;
mod mem;

pub use file::{FileDevice, FileOptions, OpenError};
pub use mem::MemDevice;

use std::fs::File;
use std::io;

/// Storage for one logical unit. Offsets and lengths are bytes.
pub trait BlockDevice: Send + Sync + std::fmt::Debug + 'static {
    /// Logical block size: 512 or 4096 (any power of two 512..=4096).
    fn block_size(&self) -> u32;
    fn num_blocks(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Fills `buf` entirely; reading past the end is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes completed writes durable (fdatasync).
    fn flush(&self) -> io::Result<()>;
    /// Deallocate a byte range so that it reads back as zeroes (punch hole); Err(Unsupported) if the device cannot.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether discard() is available and discarded ranges read as zeroes (advertised as LBPRZ=1).
    fn discard_zeroes(&self) -> bool;
    /// Allocation map for GET LBA STATUS: the extent starting at `offset`:
    /// (mapped, length in bytes). The default reports everything mapped.
    fn allocation(&self, offset: u64) -> io::Result<(bool, u64)> {
        let size = u64::from(self.block_size()).saturating_mul(self.num_blocks());
        Ok((true, size.saturating_sub(offset)))
    }
    /// The file whose bytes at an offset are the device's bytes at that
    /// offset, read and written through the page cache: what data can be
    /// spliced into and out of. `None` (the default) where IO must go
    /// through this trait (O_DIRECT's aligned buffers, memory).
    fn page_cache_file(&self) -> Option<&File> {
        None
    }
}

/// What a write or discard on a read-only device fails with, the same from
/// every device so that `lu` answers it with one sense code.
fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "device is read-only")
}

//! A read-only view of part of an image file through a memory mapping: how
//! stored data is scanned for zero granules without copying it out of the
//! page cache, before it is sent straight from the file.
//!
//! This is the crate's one use of `unsafe`. Mapping a file is unsafe in
//! Rust's terms for two reasons, and here is why each is acceptable:
//!
//! - Another process may change the file while it is mapped, so the bytes
//!   seen are not frozen. An image being rewritten while it is written to a
//!   disk gives garbage whichever way it is read; the scan only decides
//!   what is zero, and the bytes sent are read again from the file then.
//!   Nothing here keeps a reference across such a change in a way that
//!   breaks memory safety: the mapping stays valid memory.
//! - A file truncated under a mapping makes access past its new end raise
//!   SIGBUS, which ends the process. The image's size is checked against
//!   what it was when opened before each mapping and after the last chunk
//!   (`check_unchanged`), so a shrunken image is reported; only one that
//!   shrinks between that check and the scan can still end the process,
//!   with nothing reported as written.
//!
//! The mapping is made with `MAP_POPULATE`, so its pages are read in here,
//! on the image reader's blocking thread: the socket that later sends them
//! with `sendfile` finds them in the page cache and does not wait for a
//! disk on the async reactor.
#![allow(unsafe_code)]

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// Mappings start on a page boundary.
const PAGE: u64 = 4096;

/// `len` bytes of a file from `offset`, mapped read-only.
#[derive(Debug)]
pub(crate) struct Mapped {
    base: NonNull<u8>,
    /// Mapped bytes: from the page boundary at or before the offset.
    mapped: usize,
    /// Where the requested bytes start in the mapping.
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value alone; it is
// unmapped exactly once, on drop, so sending or sharing it between threads
// is like sending or sharing a `Box<[u8]>`.
unsafe impl Send for Mapped {}
// SAFETY: see `Send`: only shared reads through `bytes`.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Map `len` (> 0) bytes of `file` at `offset` and read them in.
    pub(crate) fn map(file: &File, offset: u64, len: usize) -> io::Result<Self> {
        let start = offset - offset % PAGE;
        let skip = usize::try_from(offset - start).map_err(io::Error::other)?;
        let mapped = NonZeroUsize::new(skip + len).ok_or_else(|| io::Error::other("nothing to map"))?;
        let at = i64::try_from(start).map_err(io::Error::other)?;
        // SAFETY: a fresh read-only mapping at an address of the
        // kernel's choosing aliases no Rust memory; its hazards (the file
        // changing or shrinking) are discussed in the module's comment.
        let base = unsafe {
            mmap(
                None,
                mapped,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE,
                file,
                at,
            )
        }?;
        Ok(Self {
            base: base.cast(),
            mapped: mapped.get(),
            skip,
            len,
        })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `base` points at `mapped` readable bytes that live until
        // drop, and `skip + len == mapped`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.skip), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `base` and `mapped` are exactly what mmap returned, and
        // no slice from `bytes` outlives `self`.
        if let Err(e) = unsafe { munmap(self.base.cast(), self.mapped) } {
            tracing::warn!("munmap: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_any_range_of_a_file() {
        let mut file = tempfile::tempfile().expect("a temporary file");
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        file.write_all(&bytes).expect("write");
        for (offset, len) in [(0, 1), (0, 20_000), (4095, 2), (4096, 8192), (12_345, 7_655)] {
            let mapped = Mapped::map(&file, offset, len).expect("map");
            assert_eq!(mapped.bytes(), &bytes[offset as usize..offset as usize + len]);
        }
        assert!(Mapped::map(&file, 0, 0).is_err());
    }
}

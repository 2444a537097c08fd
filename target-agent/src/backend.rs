//! The block device seam: where a logical unit's blocks live.
//!
//! [`BlockDevice`] is the one trait the SCSI layer (`lu`) talks to; it
//! deals in byte offsets and lengths (always whole logical blocks when the
//! `lu` module calls it) and plain `io::Error`s, which `lu` maps to sense
//! data in one place. Implementations:
//!
//! - [`FileDevice`]: a regular file (an image) or a block device (the
//!   node's disk), with positional IO so commands can run concurrently.
//! - [`MemDevice`]: memory, with fault injection, for tests.
//!
//! No `unsafe` here (the workspace denies it): the block device size comes
//! from `lseek(SEEK_END)` rather than the `BLKGETSIZE64` ioctl and the
//! logical block size from sysfs rather than `BLKSSZGET`, because nix's
//! ioctl macros generate `unsafe fn`s; O_DIRECT's aligned buffers are found
//! inside an over-allocated `Vec` instead of a custom allocation.

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::{Whence, lseek};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

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

/// How to open a [`FileDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    pub read_only: bool,
    /// O_DIRECT: bypass the page cache. Falls back to buffered IO, with a
    /// warning, where the filesystem refuses it (tmpfs).
    pub direct: bool,
    /// Logical block size; default: the block device's own, or 512.
    pub block_size: Option<u32>,
}

/// Why a [`FileDevice`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is neither a regular file nor a block device", path.display())]
    NotFileOrBlockDevice { path: PathBuf },
    #[error("block size {block_size} for {} is not supported: use 512 or 4096", path.display())]
    BlockSize { path: PathBuf, block_size: u64 },
    #[error(
        "block size {block_size} for {} is smaller than its {device}-byte logical block, which O_DIRECT cannot address: use {device} or buffered IO",
        path.display()
    )]
    BelowDeviceBlockSize {
        path: PathBuf,
        block_size: u32,
        device: u64,
    },
    #[error(
        "{} is {size} bytes, not a multiple of the {block_size}-byte block size: resize it or choose another block size",
        path.display()
    )]
    NotMultiple { path: PathBuf, size: u64, block_size: u32 },
    #[error("{} is empty: a logical unit needs at least one block", path.display())]
    Empty { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    /// `write_zeroes`: the kernel can zero ranges without writing them
    /// (`queue/write_zeroes_max_bytes` > 0), which is what punching a hole
    /// in a block device needs.
    BlockDevice {
        write_zeroes: bool,
    },
}

/// O_DIRECT buffers and offsets must be aligned; 4096 covers every logical
/// block size we accept.
const DIRECT_ALIGN: usize = 4096;
/// Bounce buffers and zero-fill writes go in pieces of this size so memory
/// stays bounded whatever the request.
const CHUNK: usize = 1 << 20;

/// A regular file or a block device.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    kind: Kind,
    block_size: u32,
    num_blocks: u64,
    read_only: bool,
    /// O_DIRECT is in effect: IO goes through aligned bounce buffers.
    direct: bool,
    /// Punching holes still works; cleared on the first EOPNOTSUPP, after
    /// which regular files are zeroed by writing.
    punch_hole: AtomicBool,
}

impl FileDevice {
    pub fn open(path: impl AsRef<Path>, options: FileOptions) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let (file, direct) = open_file(&path, options).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let file_type = meta.file_type();
        let (kind, size, device_block_size) = if file_type.is_file() {
            (Kind::File, meta.len(), None)
        } else if file_type.is_block_device() {
            let end = lseek(&file, 0, Whence::SeekEnd).map_err(|e| io_err(e.into()))?;
            let size = u64::try_from(end).map_err(|_| io_err(io::Error::from(io::ErrorKind::InvalidData)))?;
            let dev = meta.rdev();
            let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            let write_zeroes = sysfs_queue_value(major, minor, "write_zeroes_max_bytes").is_some_and(|v| v > 0);
            let lbs = sysfs_queue_value(major, minor, "logical_block_size");
            (Kind::BlockDevice { write_zeroes }, size, lbs)
        } else {
            return Err(OpenError::NotFileOrBlockDevice { path });
        };
        let block_size = match options.block_size.map(u64::from).or(device_block_size).unwrap_or(512) {
            bs @ (512 | 1024 | 2048 | 4096) => bs as u32,
            block_size => return Err(OpenError::BlockSize { path, block_size }),
        };
        // O_DIRECT cannot address less than the device's logical block.
        if let Some(device) = device_block_size.filter(|&d| direct && u64::from(block_size) < d) {
            return Err(OpenError::BelowDeviceBlockSize {
                path,
                block_size,
                device,
            });
        }
        if size == 0 {
            return Err(OpenError::Empty { path });
        }
        if !size.is_multiple_of(u64::from(block_size)) {
            return Err(OpenError::NotMultiple { path, size, block_size });
        }
        tracing::debug!(path = %path.display(), ?kind, size, block_size, direct, "opened block device");
        Ok(Self {
            file,
            path,
            kind,
            block_size,
            num_blocks: size / u64::from(block_size),
            read_only: options.read_only,
            direct,
            punch_hole: AtomicBool::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether O_DIRECT is in effect (it may have been refused).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn size(&self) -> u64 {
        self.num_blocks * u64::from(self.block_size)
    }

    /// O_DIRECT needs offsets and lengths in whole blocks.
    fn check_direct(&self, len: usize, offset: u64) -> io::Result<()> {
        let bs = u64::from(self.block_size);
        if !offset.is_multiple_of(bs) || !(len as u64).is_multiple_of(bs) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "O_DIRECT IO must be in whole logical blocks",
            ));
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; usize::try_from(len).unwrap_or(CHUNK).min(CHUNK)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(zeroes.get(..n).unwrap_or(&zeroes), offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn punch(&self, offset: u64, len: u64) -> io::Result<()> {
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&self.file, flags, off_t(offset)?, off_t(len)?).map_err(io::Error::from)
    }
}

/// Opens `path`, with O_DIRECT when asked and when it works for aligned IO.
fn open_file(path: &Path, options: FileOptions) -> io::Result<(File, bool)> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(!options.read_only);
    if options.direct {
        let mut direct = opts.clone();
        direct.custom_flags(libc::O_DIRECT);
        match direct.open(path) {
            Ok(file) => {
                // Some filesystems accept the flag at open and refuse the IO.
                let mut probe = AlignedBuf::new(DIRECT_ALIGN)?;
                match file.read_at(probe.slice_mut(DIRECT_ALIGN)?, 0) {
                    Ok(_) => return Ok((file, true)),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
        tracing::warn!(path = %path.display(), "O_DIRECT is not supported here; using buffered IO");
    }
    Ok((opts.open(path)?, false))
}

/// A sysfs queue attribute of a block device. Partitions have no `queue`
/// directory of their own: theirs is the parent disk's, one level up.
fn sysfs_queue_value(major: u64, minor: u64, name: &str) -> Option<u64> {
    let dev = format!("/sys/dev/block/{major}:{minor}");
    [format!("{dev}/queue/{name}"), format!("{dev}/../queue/{name}")]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
}

fn off_t(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "device is read-only")
}

/// A 4096-aligned window into a `Vec`, found without `unsafe` by
/// over-allocating and starting at the first aligned address.
struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> io::Result<Self> {
        let buf = vec![0u8; len + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        if start >= DIRECT_ALIGN {
            return Err(io::Error::other("cannot align an O_DIRECT buffer"));
        }
        Ok(Self { buf, start })
    }

    fn slice_mut(&mut self, len: usize) -> io::Result<&mut [u8]> {
        self.buf
            .get_mut(self.start..self.start + len)
            .ok_or_else(|| io::Error::other("O_DIRECT buffer too small"))
    }
}

impl BlockDevice for FileDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if !self.direct {
            return self.file.read_exact_at(buf, offset);
        }
        self.check_direct(buf.len(), offset)?;
        let mut bounce = AlignedBuf::new(buf.len().min(CHUNK))?;
        let mut at = offset;
        for chunk in buf.chunks_mut(CHUNK) {
            let b = bounce.slice_mut(chunk.len())?;
            self.file.read_exact_at(b, at)?;
            chunk.copy_from_slice(b);
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        if !self.direct {
            return self.file.write_all_at(buf, offset);
        }
        self.check_direct(buf.len(), offset)?;
        let mut bounce = AlignedBuf::new(buf.len().min(CHUNK))?;
        let mut at = offset;
        for chunk in buf.chunks(CHUNK) {
            let b = bounce.slice_mut(chunk.len())?;
            b.copy_from_slice(chunk);
            self.file.write_all_at(b, at)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn page_cache_file(&self) -> Option<&File> {
        (!self.direct).then_some(&self.file)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        if len == 0 {
            return Ok(());
        }
        match self.kind {
            // Linux (4.9+) zeroes a block device range on PUNCH_HOLE only
            // with a write-zeroes offload; without one it would be a slow
            // full write, which initiators do not expect of UNMAP.
            Kind::BlockDevice { write_zeroes: false } => Err(io::Error::from(io::ErrorKind::Unsupported)),
            Kind::BlockDevice { write_zeroes: true } => self.punch(offset, len),
            Kind::File if self.punch_hole.load(Ordering::Relaxed) => match self.punch(offset, len) {
                Err(e) if e.raw_os_error() == Some(Errno::EOPNOTSUPP as i32) => {
                    tracing::warn!(path = %self.path.display(), "filesystem cannot punch holes; zeroing by writing");
                    self.punch_hole.store(false, Ordering::Relaxed);
                    self.write_zeroes(offset, len)
                }
                other => other,
            },
            Kind::File => self.write_zeroes(offset, len),
        }
    }

    fn discard_zeroes(&self) -> bool {
        match self.kind {
            Kind::File => true,
            Kind::BlockDevice { write_zeroes } => write_zeroes,
        }
    }

    fn allocation(&self, offset: u64) -> io::Result<(bool, u64)> {
        let size = self.size();
        if offset >= size {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "offset past the end"));
        }
        if self.kind != Kind::File {
            return Ok((true, size - offset));
        }
        // The file position that SEEK_DATA/SEEK_HOLE move is never used for
        // IO (all IO is positional), so concurrent callers cannot disturb it.
        let extent_end = |v: libc::off_t| u64::try_from(v).unwrap_or(size).min(size);
        match lseek(&self.file, off_t(offset)?, Whence::SeekData) {
            Ok(data) if extent_end(data) <= offset => {
                let hole = lseek(&self.file, off_t(offset)?, Whence::SeekHole)?;
                Ok((true, extent_end(hole).saturating_sub(offset)))
            }
            Ok(data) => Ok((false, extent_end(data) - offset)),
            // No data at or after `offset`: a hole through the end.
            Err(Errno::ENXIO) => Ok((false, size - offset)),
            Err(e) => Err(e.into()),
        }
    }
}

/// An injected failure for the next [`MemDevice`] operation.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kind(io::ErrorKind),
    Os(i32),
}

#[derive(Debug)]
struct MemInner {
    data: Vec<u8>,
    /// Per block: written since the last discard (GET LBA STATUS).
    mapped: Vec<bool>,
    fault: Option<Fault>,
    flushes: u64,
}

/// Blocks in memory, for tests: discards zero (and deallocate) whole
/// blocks, and [`MemDevice::fail_next`] makes the next operation fail.
#[derive(Debug)]
pub struct MemDevice {
    block_size: u32,
    num_blocks: u64,
    read_only: bool,
    discard: bool,
    inner: Mutex<MemInner>,
}

impl MemDevice {
    /// A zeroed, fully deallocated device with discard support.
    pub fn new(block_size: u32, num_blocks: u64) -> Self {
        let size = usize::try_from(u64::from(block_size).saturating_mul(num_blocks)).unwrap_or(usize::MAX);
        Self {
            block_size,
            num_blocks,
            read_only: false,
            discard: true,
            inner: Mutex::new(MemInner {
                data: vec![0; size],
                mapped: vec![false; usize::try_from(num_blocks).unwrap_or(usize::MAX)],
                fault: None,
                flushes: 0,
            }),
        }
    }

    #[must_use]
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Without discard: a fully provisioned device.
    #[must_use]
    pub fn without_discard(mut self) -> Self {
        self.discard = false;
        self
    }

    /// The next read, write, flush or discard fails with `kind`.
    pub fn fail_next(&self, kind: io::ErrorKind) {
        self.lock().fault = Some(Fault::Kind(kind));
    }

    /// The next read, write, flush or discard fails with OS error `errno`
    /// (EIO has no `io::ErrorKind` of its own).
    pub fn fail_next_os(&self, errno: i32) {
        self.lock().fault = Some(Fault::Os(errno));
    }

    /// How many flushes have succeeded.
    pub fn flush_count(&self) -> u64 {
        self.lock().flushes
    }

    /// A copy of the whole contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().data.clone()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the pending fault, if any.
    fn fault(inner: &mut MemInner) -> io::Result<()> {
        match inner.fault.take() {
            None => Ok(()),
            Some(Fault::Kind(kind)) => Err(io::Error::from(kind)),
            Some(Fault::Os(errno)) => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// The byte range `offset..offset+len` inside the device, or an error.
    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let end = offset.checked_add(len).filter(|&e| e <= self.size());
        match (end, usize::try_from(offset)) {
            (Some(end), Ok(start)) => Ok(start..end as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "past the end of the device",
            )),
        }
    }

    fn size(&self) -> u64 {
        u64::from(self.block_size) * self.num_blocks
    }

    /// Blocks wholly inside `range` (for deallocation).
    fn whole_blocks(&self, range: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        let bs = self.block_size as usize;
        range.start.div_ceil(bs)..range.end / bs
    }
}

impl BlockDevice for MemDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut inner = self.lock();
        Self::fault(&mut inner)?;
        let range = self.range(offset, buf.len() as u64)?;
        let src = inner.data.get(range).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut inner = self.lock();
        Self::fault(&mut inner)?;
        if self.read_only {
            return Err(read_only_error());
        }
        let range = self.range(offset, buf.len() as u64)?;
        let bs = self.block_size as usize;
        let touched = range.start / bs..range.end.div_ceil(bs);
        inner
            .data
            .get_mut(range)
            .ok_or(io::ErrorKind::UnexpectedEof)?
            .copy_from_slice(buf);
        inner
            .mapped
            .get_mut(touched)
            .into_iter()
            .flatten()
            .for_each(|m| *m = true);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        Self::fault(&mut inner)?;
        inner.flushes += 1;
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        Self::fault(&mut inner)?;
        if self.read_only {
            return Err(read_only_error());
        }
        if !self.discard {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        let range = self.range(offset, len)?;
        let blocks = self.whole_blocks(&range);
        inner.data.get_mut(range).into_iter().flatten().for_each(|b| *b = 0);
        inner
            .mapped
            .get_mut(blocks)
            .into_iter()
            .flatten()
            .for_each(|m| *m = false);
        Ok(())
    }

    fn discard_zeroes(&self) -> bool {
        self.discard
    }

    fn allocation(&self, offset: u64) -> io::Result<(bool, u64)> {
        let inner = self.lock();
        let bs = u64::from(self.block_size);
        let first = usize::try_from(offset / bs).map_err(|_| io::ErrorKind::InvalidInput)?;
        let state = *inner.mapped.get(first).ok_or(io::ErrorKind::InvalidInput)?;
        let run = inner.mapped.iter().skip(first).take_while(|&&m| m == state).count() as u64;
        Ok((state, run * bs - offset % bs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(len).unwrap();
        f
    }

    #[test]
    fn file_read_write_flush() {
        let f = file_of(64 * 512);
        let dev = FileDevice::open(f.path(), FileOptions::default()).unwrap();
        assert_eq!((dev.block_size(), dev.num_blocks(), dev.read_only()), (512, 64, false));
        let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
        dev.write_at(&data, 512 * 3).unwrap();
        dev.flush().unwrap();
        let mut back = vec![0xa5; 1024];
        dev.read_at(&mut back, 512 * 3).unwrap();
        assert_eq!(back, data);
        // Reading past the end is an error, not a short read.
        let mut past = vec![0; 1024];
        let e = dev.read_at(&mut past, 63 * 512).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn sparse_file_allocation_and_punch() {
        let f = file_of(1 << 20);
        let dev = FileDevice::open(f.path(), FileOptions::default()).unwrap();
        assert!(dev.discard_zeroes());
        assert_eq!(dev.allocation(0).unwrap(), (false, 1 << 20));
        dev.write_at(&vec![0x5a; 64 << 10], 256 << 10).unwrap();
        dev.flush().unwrap();
        let (mapped, len) = dev.allocation(0).unwrap();
        assert!(!mapped);
        assert_eq!(len, 256 << 10);
        assert_eq!(dev.allocation(256 << 10).unwrap(), (true, 64 << 10));
        assert_eq!(dev.allocation(320 << 10).unwrap(), (false, (1 << 20) - (320 << 10)));
        // Punch the middle 16 KiB of the data.
        dev.discard(272 << 10, 16 << 10).unwrap();
        assert_eq!(dev.allocation(272 << 10).unwrap(), (false, 16 << 10));
        assert_eq!(dev.allocation(288 << 10).unwrap(), (true, 32 << 10));
        let mut back = vec![0xa5; 48 << 10];
        dev.read_at(&mut back, 256 << 10).unwrap();
        assert!(back[..16 << 10].iter().all(|&b| b == 0x5a));
        assert!(back[16 << 10..32 << 10].iter().all(|&b| b == 0));
        assert!(back[32 << 10..].iter().all(|&b| b == 0x5a));
        assert!(dev.allocation(1 << 20).is_err());
    }

    #[test]
    fn size_must_be_whole_blocks() {
        let f = file_of(4096 + 512);
        let e = FileDevice::open(
            f.path(),
            FileOptions {
                block_size: Some(4096),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(
            e,
            OpenError::NotMultiple {
                size: 4608,
                block_size: 4096,
                ..
            }
        ));
        assert!(
            e.to_string().contains("not a multiple of the 4096-byte block size"),
            "{e}"
        );
        let ok = FileDevice::open(f.path(), FileOptions::default()).unwrap();
        assert_eq!(ok.num_blocks(), 9);
        let e = FileDevice::open(
            f.path(),
            FileOptions {
                block_size: Some(520),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, OpenError::BlockSize { block_size: 520, .. }));
        assert!(matches!(
            FileDevice::open(file_of(0).path(), FileOptions::default()),
            Err(OpenError::Empty { .. })
        ));
        let e = FileDevice::open("/nonexistent/disk.img", FileOptions::default()).unwrap_err();
        assert!(matches!(&e, OpenError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            FileDevice::open(dir.path(), FileOptions::default()),
            Err(OpenError::Io { .. } | OpenError::NotFileOrBlockDevice { .. })
        ));
    }

    #[test]
    fn read_only_file_refuses_writes() {
        let f = file_of(4096);
        let dev = FileDevice::open(
            f.path(),
            FileOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(dev.read_only());
        assert_eq!(
            dev.write_at(&[1; 512], 0).unwrap_err().kind(),
            io::ErrorKind::ReadOnlyFilesystem
        );
        assert!(dev.discard(0, 512).is_err());
        let mut b = [1u8; 512];
        dev.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [0; 512]);
    }

    #[test]
    fn direct_io_through_bounce_buffers() {
        let f = file_of(4 << 20);
        let dev = FileDevice::open(
            f.path(),
            FileOptions {
                direct: true,
                block_size: Some(4096),
                ..Default::default()
            },
        )
        .unwrap();
        // Larger than one bounce chunk, from an unaligned Vec offset.
        let data: Vec<u8> = (0..(CHUNK + 8192 + 1)).map(|i| (i % 253) as u8).collect();
        dev.write_at(&data[1..], 4096).unwrap();
        let mut back = vec![0; CHUNK + 8192 + 1];
        dev.read_at(&mut back[1..], 4096).unwrap();
        assert_eq!(back[1..], data[1..]);
        if dev.is_direct() {
            assert_eq!(
                dev.write_at(&[0; 100], 0).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        dev.discard(4096, 4096).unwrap();
        let mut z = vec![1; 4096];
        dev.read_at(&mut z, 4096).unwrap();
        assert!(z.iter().all(|&b| b == 0));
    }

    #[test]
    fn mem_device_basics_and_faults() {
        let dev = MemDevice::new(512, 8);
        assert_eq!(dev.allocation(0).unwrap(), (false, 4096));
        dev.write_at(&[7; 1024], 1024).unwrap();
        assert_eq!(dev.allocation(0).unwrap(), (false, 1024));
        assert_eq!(dev.allocation(1024).unwrap(), (true, 1024));
        assert_eq!(dev.allocation(1536).unwrap(), (true, 512));
        dev.fail_next_os(libc::EIO);
        let mut b = [0u8; 512];
        assert_eq!(dev.read_at(&mut b, 1024).unwrap_err().raw_os_error(), Some(libc::EIO));
        dev.read_at(&mut b, 1024).unwrap();
        assert_eq!(b, [7; 512]);
        dev.fail_next(io::ErrorKind::StorageFull);
        assert_eq!(dev.write_at(&b, 0).unwrap_err().kind(), io::ErrorKind::StorageFull);
        // Discarding part of a block zeroes it but leaves it mapped.
        dev.discard(1024, 768).unwrap();
        assert_eq!(dev.allocation(1024).unwrap(), (false, 512));
        assert_eq!(dev.allocation(1536).unwrap(), (true, 512));
        assert_eq!(&dev.snapshot()[1024..2048], [[0; 768].as_slice(), &[7; 256]].concat());
        assert!(dev.write_at(&b, 4096).is_err());
        dev.flush().unwrap();
        assert_eq!(dev.flush_count(), 1);
        let ro = MemDevice::new(512, 1).with_read_only(true).without_discard();
        assert!(ro.write_at(&b, 0).is_err());
        assert!(!ro.discard_zeroes());
    }
}

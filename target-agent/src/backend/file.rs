//! [`FileDevice`]: the blocks of a regular file or a block device, which is
//! what the ramdisk serves. It is apart from the trait and from the memory
//! device because everything here is about what the kernel offers or
//! refuses (O_DIRECT and its alignment, hole punching, the write-zeroes
//! offload, sysfs queue attributes, SEEK_DATA/SEEK_HOLE), none of which
//! applies to blocks in memory.
//!
//! No `unsafe` here (the workspace denies it): the block device size comes
//! from `lseek(SEEK_END)` rather than the `BLKGETSIZE64` ioctl and the
//! logical block size from sysfs rather than `BLKSSZGET`, because nix's
//! ioctl macros generate `unsafe fn`s; O_DIRECT's aligned buffers are found
//! inside an over-allocated `Vec` instead of a custom allocation.

use super::{BlockDevice, read_only_error};
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::{Whence, lseek};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;

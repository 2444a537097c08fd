//! [`MemDevice`]: blocks in memory for the `lu` tests, which fail on
//! demand the way a disk can. It is apart from the file device because it
//! models the trait's contract (discards that zero, an allocation map)
//! rather than a kernel's behaviour, and tests need none of the file
//! device's system calls.

use super::{BlockDevice, read_only_error};
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

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

//! The data path: READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND
//! WRITE, ORWRITE, SYNCHRONIZE CACHE, and the one place an `io::Error`
//! becomes sense data.
//!
//! Every function here runs after `LogicalUnit::admit`, so the LBA range
//! and the transfer length (at most the advertised maximum) are already
//! checked, and the Data-Out buffer has exactly the length the CDB implies.

use super::LogicalUnit;
use iscsi_proto::scsi::{
    AdditionalSense, ByteCheck, CompareAndWrite, OrWrite, Sense, SenseKey, Verify, WriteAndVerify,
};
use std::io;

/// Which side of the medium failed, for the ASC of a MEDIUM ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Read,
    Write,
}

/// The sense for a failed device operation:
///
/// - EIO, or a read cut short by the end of the device: MEDIUM ERROR with
///   UNRECOVERED READ ERROR or WRITE ERROR and, where known, the first LBA
///   of the failed request in INFORMATION (SBC-3 has medium errors report
///   the LBA; we do not know which block inside the request failed).
/// - ENOSPC/EDQUOT (a thin file on a full filesystem): DATA PROTECT with
///   SPACE ALLOCATION FAILED WRITE PROTECT, SBC-3's answer when a thin
///   logical unit cannot allocate a block for a write.
/// - EROFS: DATA PROTECT / WRITE PROTECTED.
/// - Anything else: HARDWARE ERROR / INTERNAL TARGET FAILURE.
pub(super) fn io_error(err: &io::Error, direction: Direction, lba: Option<u64>) -> Sense {
    tracing::warn!(error = %err, ?direction, lba, "block device IO failed");
    let errno = err.raw_os_error();
    if errno == Some(libc::EIO) || err.kind() == io::ErrorKind::UnexpectedEof {
        let asc = match direction {
            Direction::Read => AdditionalSense::UNRECOVERED_READ_ERROR,
            Direction::Write => AdditionalSense::WRITE_ERROR,
        };
        let sense = Sense::new(SenseKey::MEDIUM_ERROR, asc);
        return lba.map_or(sense, |lba| sense.with_information(lba));
    }
    if matches!(errno, Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
    {
        return Sense::new(
            SenseKey::DATA_PROTECT,
            AdditionalSense::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
        );
    }
    if errno == Some(libc::EROFS) || err.kind() == io::ErrorKind::ReadOnlyFilesystem {
        return Sense::write_protected();
    }
    Sense::hardware_error(AdditionalSense::INTERNAL_TARGET_FAILURE)
}

/// Offset of the first byte where `a` and `b` differ.
pub(super) fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl LogicalUnit {
    /// Byte offset and length of `blocks` blocks at `lba` (checked by
    /// `admit`; the `Err` arm only guards the arithmetic).
    pub(super) fn byte_range(&self, lba: u64, blocks: u64) -> Result<(u64, usize), Sense> {
        let bs = u64::from(self.block_size());
        let offset = lba.checked_mul(bs);
        let len = blocks.checked_mul(bs).and_then(|l| usize::try_from(l).ok());
        match (offset, len) {
            (Some(offset), Some(len)) => Ok((offset, len)),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    pub(super) fn read(&self, lba: u64, blocks: u32) -> Result<Vec<u8>, Sense> {
        let (offset, len) = self.byte_range(lba, u64::from(blocks))?;
        let mut buf = self.buffers.take(len);
        if len > 0 {
            self.dev
                .read_at(&mut buf, offset)
                .map_err(|e| io_error(&e, Direction::Read, Some(lba)))?;
        }
        Ok(buf)
    }

    pub(super) fn write(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
        let _shared = self.shared();
        self.write_unlocked(lba, data, fua)
    }

    /// A write with the caller holding the medium lock. FUA, or a disabled
    /// write cache, makes it durable before GOOD.
    fn write_unlocked(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
        if data.is_empty() {
            return Ok(());
        }
        let (offset, _) = self.byte_range(lba, 0)?;
        self.dev
            .write_at(data, offset)
            .map_err(|e| io_error(&e, Direction::Write, Some(lba)))?;
        if fua || !self.write_cache() {
            self.flush()?;
        }
        Ok(())
    }

    /// SYNCHRONIZE CACHE (after its range check): fdatasync covers the
    /// whole device, a superset of any range.
    pub(super) fn flush(&self) -> Result<(), Sense> {
        self.dev.flush().map_err(|e| io_error(&e, Direction::Write, None))
    }

    /// WRITE AND VERIFY: write, make it durable, read it back; with BYTCHK
    /// the read-back is compared with the Data-Out buffer.
    pub(super) fn write_and_verify(&self, w: &WriteAndVerify, data: &[u8]) -> Result<(), Sense> {
        self.write(w.lba, data, true)?;
        let back = self.read(w.lba, w.transfer_length)?;
        if w.bytchk
            && let Some(offset) = first_mismatch(&back, data)
        {
            return Err(Sense::miscompare(offset as u64));
        }
        Ok(())
    }

    /// VERIFY. BYTCHK 00b: the range check was the whole job. 01b: compare
    /// with the Data-Out buffer; 11b: compare every block with its one
    /// block. SBC-3 puts "the offset from the start of the Data-Out Buffer
    /// to the first byte of data that was not equal" in INFORMATION; for
    /// 11b the offset counts through the verified blocks.
    pub(super) fn verify(&self, v: &Verify, data: &[u8]) -> Result<(), Sense> {
        let medium = match v.bytchk {
            ByteCheck::MediumOnly => return Ok(()),
            _ => self.read(v.lba, v.verification_length)?,
        };
        let mismatch = match v.bytchk {
            ByteCheck::Compare => first_mismatch(&medium, data),
            _ => medium
                .chunks(data.len().max(1))
                .enumerate()
                .find_map(|(i, block)| first_mismatch(block, data).map(|o| i * data.len() + o)),
        };
        match mismatch {
            Some(offset) => Err(Sense::miscompare(offset as u64)),
            None => Ok(()),
        }
    }

    /// COMPARE AND WRITE: the Data-Out buffer is the blocks to compare then
    /// the blocks to write. Atomic with respect to every other command that
    /// changes the medium (they hold the lock shared, this holds it alone).
    /// SBC-3: on a miscompare nothing is written and INFORMATION is "the
    /// offset from the start of the Data-Out Buffer to the first byte of
    /// data that was not equal".
    pub(super) fn compare_and_write(&self, c: &CompareAndWrite, data: &[u8]) -> Result<(), Sense> {
        if c.number_of_blocks == 0 {
            // SBC-3: zero blocks is not an error; nothing is compared.
            return Ok(());
        }
        let (compare, write) = data.split_at(data.len() / 2);
        let _exclusive = self.exclusive();
        let current = self.read(c.lba, u32::from(c.number_of_blocks))?;
        if let Some(offset) = first_mismatch(&current, compare) {
            return Err(Sense::miscompare(offset as u64));
        }
        self.write_unlocked(c.lba, write, c.fua)
    }

    /// ORWRITE (16). SBC-3 makes it one uninterrupted series of actions:
    /// read the blocks, OR them with the Data-Out buffer, write the result.
    /// Like COMPARE AND WRITE it holds the medium lock alone, so no other
    /// write lands in between.
    pub(super) fn or_write(&self, o: &OrWrite, data: &[u8]) -> Result<(), Sense> {
        if o.transfer_length == 0 {
            // SBC-3: a zero TRANSFER LENGTH is not an error; nothing is
            // read or written.
            return Ok(());
        }
        let _exclusive = self.exclusive();
        let mut blocks = self.read(o.lba, o.transfer_length)?;
        for (block, bits) in blocks.iter_mut().zip(data) {
            *block |= bits;
        }
        self.write_unlocked(o.lba, &blocks, o.fua)
    }
}

//! Capacity and logical block provisioning: READ CAPACITY (10)/(16),
//! WRITE SAME, UNMAP and GET LBA STATUS.
//!
//! The logical unit is thin provisioned (LBPME = 1) exactly when the
//! device can discard ranges so that they read back as zeroes, which also
//! sets LBPRZ; otherwise UNMAP is an unsupported command and WRITE SAME's
//! UNMAP bit an invalid field (libiscsi fails a target that accepts
//! either while reporting LBPME = 0).

use super::io::{Direction, io_error};
use super::{LogicalUnit, length_field};
use iscsi_proto::scsi::data::{
    LbaStatusDescriptor, LbaStatusList, ReadCapacity10Data, ReadCapacity16Data, UnmapLimits, UnmapParameterList,
    truncate_to_allocation_length,
};
use iscsi_proto::scsi::{Sense, WriteSame};
use std::borrow::Cow;

/// WRITE SAME writes its pattern through a buffer of at most this many
/// bytes, whatever the range.
const WRITE_SAME_BUFFER: usize = 1 << 20;
/// GET LBA STATUS returns at most this many descriptors...
const MAX_LBA_STATUS_DESCRIPTORS: usize = 64;
/// ...and asks the device about at most this many extents.
const MAX_ALLOCATION_PROBES: usize = 1024;

impl LogicalUnit {
    pub(super) fn read_capacity_10(&self) -> Vec<u8> {
        ReadCapacity10Data::from_capacity(self.capacity(), self.block_size())
            .to_bytes()
            .to_vec()
    }

    pub(super) fn read_capacity_16(&self, allocation_length: u32) -> Vec<u8> {
        let mut data = ReadCapacity16Data {
            lbpme: self.thin,
            lbprz: self.thin,
            logical_blocks_per_physical_block_exponent: self.limits.physical_block_exponent,
            ..ReadCapacity16Data::from_capacity(self.capacity(), self.block_size())
        }
        .to_bytes()
        .to_vec();
        truncate_to_allocation_length(&mut data, allocation_length);
        data
    }

    /// The blocks a WRITE SAME covers: NUMBER OF LOGICAL BLOCKS, or with 0
    /// (WSNZ = 0) every block from the LBA to the last.
    fn write_same_blocks(&self, w: &WriteSame) -> u64 {
        match w.number_of_blocks {
            0 => self.capacity().saturating_sub(w.lba),
            n => u64::from(n),
        }
    }

    /// WRITE SAME checks beyond the LBA range (already done).
    pub(super) fn admit_write_same(&self, w: &WriteSame) -> Result<(), Sense> {
        // SBC-3: ANCHOR = 1 with ANC_SUP = 0 is INVALID FIELD IN CDB.
        if w.anchor {
            return Err(Sense::invalid_field_in_cdb(1, Some(4)));
        }
        if w.unmap && !self.thin {
            return Err(Sense::invalid_field_in_cdb(1, Some(3)));
        }
        // SBC-3: "If the number of logical blocks specified to be written ...
        // exceeds the value in the MAXIMUM WRITE SAME LENGTH field ... then the
        // device server shall terminate the command with CHECK CONDITION
        // status with the sense key set to ILLEGAL REQUEST and the
        // additional sense code set to INVALID FIELD IN CDB."
        if self.write_same_blocks(w) > self.limits.max_write_same_blocks {
            return Err(length_field(w.size));
        }
        Ok(())
    }

    /// WRITE SAME. With UNMAP (or NDOB) the range is discarded and reads
    /// back as zeroes (LBPRZ), whatever the pattern: that is what Linux's
    /// target, tgtd and libiscsi's conformance tests (WriteSame10.
    /// UnmapUntilEnd sends a 0xFF block with UNMAP and expects zeroes)
    /// agree on, and initiators only ask to unmap with a zero block. Without
    /// UNMAP the pattern is written through a bounded buffer.
    pub(super) fn write_same(&self, w: &WriteSame, data: &[u8]) -> Result<(), Sense> {
        let blocks = self.write_same_blocks(w);
        let bs = self.block_size() as usize;
        let pattern: Cow<'_, [u8]> = if w.ndob {
            Cow::Owned(vec![0; bs])
        } else {
            Cow::Borrowed(data)
        };
        let _shared = self.shared();
        if w.unmap || w.ndob {
            let (offset, _) = self.byte_range(w.lba, 0)?;
            let len = blocks * bs as u64;
            self.dev
                .discard(offset, len)
                .map_err(|e| io_error(&e, Direction::Write, Some(w.lba)))?;
        } else {
            let per_buffer = (WRITE_SAME_BUFFER / bs).max(1) as u64;
            let buffer = pattern.repeat(usize::try_from(blocks.min(per_buffer)).unwrap_or(1));
            let mut lba = w.lba;
            let end = w.lba + blocks;
            while lba < end {
                let n = (end - lba).min(per_buffer);
                let (offset, len) = self.byte_range(lba, n)?;
                let chunk = buffer.get(..len).unwrap_or(&buffer);
                self.dev
                    .write_at(chunk, offset)
                    .map_err(|e| io_error(&e, Direction::Write, Some(lba)))?;
                lba += n;
            }
        }
        if !self.write_cache() {
            self.flush()?;
        }
        Ok(())
    }

    /// UNMAP: parse and check the whole list (limits and range) before
    /// discarding anything, then discard each extent.
    pub(super) fn unmap(&self, data: &[u8], parameter_list_length: u16) -> Result<(), Sense> {
        let list = UnmapParameterList::parse(data, parameter_list_length).map_err(|e| e.sense())?;
        let limits = UnmapLimits {
            maximum_unmap_lba_count: self.limits.max_unmap_blocks,
            maximum_unmap_block_descriptor_count: self.limits.max_unmap_descriptors,
        };
        list.check(&limits, self.capacity())?;
        let _shared = self.shared();
        for d in list.descriptors.iter().filter(|d| d.number_of_blocks > 0) {
            let (offset, len) = self.byte_range(d.lba, u64::from(d.number_of_blocks))?;
            self.dev
                .discard(offset, len as u64)
                .map_err(|e| io_error(&e, Direction::Write, Some(d.lba)))?;
        }
        if !self.write_cache() {
            self.flush()?;
        }
        Ok(())
    }

    /// GET LBA STATUS from the device's allocation map, starting at `lba`
    /// (the first descriptor's LBA is always the one asked for, which is
    /// what libiscsi checks). An extent boundary inside a block counts the
    /// block as mapped: a descriptor may call deallocated only blocks that
    /// are wholly so. Adjacent extents of the same state are merged.
    pub(super) fn get_lba_status(&self, lba: u64, allocation_length: u32) -> Result<Vec<u8>, Sense> {
        let bs = u64::from(self.block_size());
        let capacity = self.capacity();
        let room = usize::try_from(allocation_length.saturating_sub(8) / 16).unwrap_or(usize::MAX);
        let max_descriptors = room.clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
        let mut descriptors: Vec<LbaStatusDescriptor> = Vec::new();
        let mut block = lba;
        for _ in 0..MAX_ALLOCATION_PROBES {
            if block >= capacity {
                break;
            }
            let (mapped, len) = self
                .dev
                .allocation(block * bs)
                .map_err(|e| io_error(&e, Direction::Read, Some(block)))?;
            let whole = if mapped { len.div_ceil(bs) } else { len / bs };
            let (mapped, n) = if whole == 0 { (true, 1) } else { (mapped, whole) };
            let n = n.min(capacity - block).min(u64::from(u32::MAX));
            let status = if mapped {
                LbaStatusList::MAPPED
            } else {
                LbaStatusList::DEALLOCATED
            };
            let full = descriptors.len() == max_descriptors;
            match descriptors.last_mut() {
                Some(d)
                    if d.provisioning_status == status && u64::from(d.number_of_blocks) + n <= u64::from(u32::MAX) =>
                {
                    d.number_of_blocks += n as u32;
                }
                _ if full => break,
                _ => descriptors.push(LbaStatusDescriptor {
                    lba: block,
                    number_of_blocks: n as u32,
                    provisioning_status: status,
                }),
            }
            block += n;
        }
        let mut data = LbaStatusList { descriptors }.to_bytes();
        truncate_to_allocation_length(&mut data, allocation_length);
        Ok(data)
    }
}

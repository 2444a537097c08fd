//! READ and WRITE data moved between the socket and the backing file
//! without passing through our memory: a WRITE's data is spliced into the
//! file as it arrives, a READ's is spliced from the file into a pipe whose
//! pages then go to the socket.
//!
//! Only plain READ and WRITE qualify, on a device read and written through
//! the page cache; everything else (and every command when digests need the
//! bytes) takes the buffered path through [`LogicalUnit::execute_as`]. The
//! checks are the same ones, made before any data moves.

use super::io::{Direction, io_error};
use super::{Completion, LogicalUnit, Nexus};
use bytes::Bytes;
use iscsi_proto::scsi::Command;
use iscsi_wire::PooledPipe;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Where a WRITE's data goes in the backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub lba: u64,
    /// Byte offset of the first block.
    pub offset: u64,
    /// Bytes the command writes.
    pub len: u64,
    pub fua: bool,
}

/// What a READ reads from the backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    pub lba: u64,
    pub offset: u64,
    pub len: usize,
}

impl LogicalUnit {
    /// The checks every command passes before its data moves (reservation,
    /// write protection, LBA range, length limits); the parsed command when
    /// they pass.
    fn checked(&self, nexus: &Nexus, cdb: &[u8]) -> Option<Command> {
        let cmd = Command::parse(cdb).ok()?;
        if self.reservations().conflicts(nexus, &cmd) || self.admit(&cmd).is_err() {
            return None;
        }
        Some(cmd)
    }

    /// For a WRITE that passes its checks, on a device written through the
    /// page cache: where its data goes, so that it can be put there as it
    /// arrives. `None`: the buffered path answers (refusals included).
    pub fn placement(&self, nexus: &Nexus, cdb: &[u8]) -> Option<Placement> {
        self.dev.page_cache_file()?;
        let Command::Write(rw) = self.checked(nexus, cdb)? else {
            return None;
        };
        let (offset, len) = self.byte_range(rw.lba, u64::from(rw.transfer_length)).ok()?;
        Some(Placement {
            lba: rw.lba,
            offset,
            len: len as u64,
            fua: rw.fua,
        })
    }

    /// Put part of a placed WRITE's data into the backing file with `put`,
    /// holding the medium shared as every write does (COMPARE AND WRITE
    /// holds it alone). Blocking.
    pub fn place<T>(&self, put: impl FnOnce(&File) -> T) -> Option<T> {
        let file = self.dev.page_cache_file()?;
        let _shared = self.shared();
        Some(put(file))
    }

    /// Write the `pieces` of a placed WRITE that came in memory (`(offset
    /// in the command's data, bytes)`). Blocking.
    pub fn place_pieces(&self, placement: &Placement, pieces: &[(u64, Bytes)]) -> io::Result<()> {
        self.place(|file| {
            pieces
                .iter()
                .try_for_each(|(at, bytes)| file.write_all_at(bytes, placement.offset + at))
        })
        .unwrap_or_else(|| Err(io::Error::other("the device cannot take placed data")))
    }

    /// The answer to a placed WRITE, once all its data is in: durable first
    /// when FUA is set or the write cache is off; a failure to place it
    /// becomes sense data as any write error does. Blocking when it must
    /// flush.
    pub fn finish_placed(&self, placement: &Placement, placed: io::Result<()>) -> Completion {
        let result = placed
            .map_err(|e| io_error(&e, Direction::Write, Some(placement.lba)))
            .and_then(|()| {
                if placement.fua || !self.write_cache() {
                    self.flush()
                } else {
                    Ok(())
                }
            });
        result.map(|()| Vec::new()).into()
    }

    /// Whether [`LogicalUnit::finish_placed`] would touch the disk.
    pub fn placed_needs_flush(&self, placement: &Placement) -> bool {
        placement.fua || !self.write_cache()
    }

    /// For a READ that passes its checks, on a device read through the page
    /// cache: the bytes it reads. `None`: the buffered path answers.
    pub fn read_range(&self, nexus: &Nexus, cdb: &[u8]) -> Option<ReadRange> {
        self.dev.page_cache_file()?;
        let Command::Read(rw) = self.checked(nexus, cdb)? else {
            return None;
        };
        let (offset, len) = self.byte_range(rw.lba, u64::from(rw.transfer_length)).ok()?;
        Some(ReadRange {
            lba: rw.lba,
            offset,
            len,
        })
    }

    /// Fill `pipe` with a READ's bytes. Blocking.
    pub fn read_into(&self, range: &ReadRange, pipe: &mut PooledPipe) -> Completion {
        let Some(file) = self.dev.page_cache_file() else {
            return Completion::check_condition(io_error(
                &io::Error::other("no backing file"),
                Direction::Read,
                Some(range.lba),
            ));
        };
        match pipe.fill_from(file, range.offset, range.len) {
            Ok(()) => Completion::good(Vec::new()),
            Err(e) => Completion::check_condition(io_error(&e, Direction::Read, Some(range.lba))),
        }
    }
}

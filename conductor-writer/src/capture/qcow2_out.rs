//! Writing a qcow2 (version 3, 64 KiB clusters, 16-bit refcounts) front to back, as a capture
//! reads the disk: clusters arrive in guest order, all-zero ones are left unallocated, the rest
//! appended (whole, or zstd-compressed with `--compress`), each L2 table placed just before
//! the first cluster it maps.
//!
//! Everything is appended in increasing file order, so refcounts are kept one refcount block
//! (2 GiB of file) at a time and written as the file grows past it; the refcount blocks have
//! slots reserved up front, sized for the largest file the disk can give. Memory: one cluster,
//! one L2 table, one refcount block, and the L1 and refcount tables (8 bytes per 512 MiB of
//! disk and per 2 GiB of file): bounded by the geometry, never by the data.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::source::scan::is_zero;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Entries per L2 table, and per refcount block (16-bit refcounts).
const L2_ENTRIES: u64 = CLUSTER / 8;
const REFBLOCK_ENTRIES: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// Header length with the compression type field (and its padding).
const HEADER_LENGTH: u32 = 112;
const INCOMPATIBLE_COMPRESSION_TYPE: u64 = 1 << 3;

/// A qcow2 file being written.
#[derive(Debug)]
pub(crate) struct Qcow2Writer {
    file: File,
    size: u64,
    compress: bool,
    l1_offset: u64,
    l1: Vec<u64>,
    /// The L2 table being filled: its L1 index, its file offset, its entries.
    l2: Option<(u64, u64, Vec<u64>)>,
    reftable_offset: u64,
    reftable: Vec<u64>,
    /// The first reserved refcount block slot (a cluster index) and how many there are.
    slots: (u64, u64),
    /// The refcount block being counted: its region and its counts.
    refblock: (u64, Vec<u16>),
    /// Where the next allocation goes (bytes).
    end: u64,
    /// The guest cluster being gathered and how much of it has arrived.
    cluster: Vec<u8>,
    cluster_index: u64,
    filled: usize,
    /// Bytes of guest data stored (clusters that are not all zeroes).
    pub(crate) stored: u64,
}

fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

impl Qcow2Writer {
    /// Start a qcow2 of virtual size `size` in `file` (empty).
    pub(crate) fn new(file: File, size: u64, compress: bool) -> io::Result<Self> {
        let data_clusters = div_ceil(size, CLUSTER);
        let l1_entries = div_ceil(data_clusters, L2_ENTRIES).max(1);
        let l1_clusters = div_ceil(l1_entries * 8, CLUSTER);
        // The largest file: metadata, every data cluster and every L2 table.
        let mut slots = 1;
        let mut reftable_clusters = 1;
        loop {
            let total = 1 + reftable_clusters + l1_clusters + slots + data_clusters + l1_entries;
            let need_slots = div_ceil(total, REFBLOCK_ENTRIES);
            let need_reftable = div_ceil(need_slots * 8, CLUSTER);
            if need_slots <= slots && need_reftable <= reftable_clusters {
                break;
            }
            slots = need_slots;
            reftable_clusters = need_reftable;
        }
        let reftable_offset = CLUSTER;
        let l1_offset = reftable_offset + reftable_clusters * CLUSTER;
        let first_slot = (l1_offset + l1_clusters * CLUSTER) / CLUSTER;
        if first_slot + slots > REFBLOCK_ENTRIES {
            return Err(io::Error::other(
                "the disk is too large for one qcow2 refcount block to count the metadata",
            ));
        }
        let mut writer = Qcow2Writer {
            file,
            size,
            compress,
            l1_offset,
            l1: vec![0; l1_entries as usize],
            l2: None,
            reftable_offset,
            reftable: vec![0; (reftable_clusters * CLUSTER / 8) as usize],
            slots: (first_slot, slots),
            refblock: (0, vec![0; REFBLOCK_ENTRIES as usize]),
            end: (first_slot + slots) * CLUSTER,
            cluster: vec![0; CLUSTER as usize],
            cluster_index: 0,
            filled: 0,
            stored: 0,
        };
        // Header, refcount table and L1 table are used; the slots count once they hold a block.
        for cluster in 0..first_slot {
            writer.count(cluster)?;
        }
        Ok(writer)
    }

    /// The next `bytes` of the disk (in order).
    pub(crate) fn data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(CLUSTER as usize - self.filled);
            self.cluster[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == CLUSTER as usize {
                self.emit()?;
            }
        }
        Ok(())
    }

    /// The next `len` bytes of the disk read as zeroes (in order).
    pub(crate) fn zeroes(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 {
            if self.filled == 0 && len >= CLUSTER {
                // Whole clusters of zeroes stay unallocated.
                let whole = len / CLUSTER;
                self.cluster_index += whole;
                len -= whole * CLUSTER;
                continue;
            }
            let n = len.min(CLUSTER - self.filled as u64) as usize;
            self.cluster[self.filled..self.filled + n].fill(0);
            self.filled += n;
            len -= n as u64;
            if self.filled == CLUSTER as usize {
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Store the gathered cluster (padded with zeroes) unless it is all zeroes.
    fn emit(&mut self) -> io::Result<()> {
        self.cluster[self.filled..].fill(0);
        let index = self.cluster_index;
        self.cluster_index += 1;
        self.filled = 0;
        if is_zero(&self.cluster) {
            return Ok(());
        }
        let guest_len = (self.size - index * CLUSTER).min(CLUSTER);
        self.stored += guest_len;
        let l1_index = index / L2_ENTRIES;
        if self.l2.as_ref().is_none_or(|(i, _, _)| *i != l1_index) {
            self.flush_l2()?;
            let at = self.alloc_cluster()?;
            self.l1[l1_index as usize] = at | COPIED;
            self.l2 = Some((l1_index, at, vec![0; L2_ENTRIES as usize]));
        }
        let entry = match self.compress.then(|| zstd::bulk::compress(&self.cluster, 3)) {
            Some(Ok(packed)) if (packed.len() as u64) < CLUSTER - 512 => {
                let at = self.alloc_bytes(packed.len() as u64)?;
                self.file.write_all_at(&packed, at)?;
                // "Number of additional 512-byte sectors used for the compressed data, beyond
                // the sector containing the offset", in bits x..61, x = 62 - (cluster_bits - 8).
                let extra = (at + packed.len() as u64 - 1) / 512 - at / 512;
                COMPRESSED | (extra << (62 - (CLUSTER_BITS - 8))) | at
            }
            Some(Err(e)) => return Err(e),
            _ => {
                let at = self.alloc_cluster()?;
                self.file.write_all_at(&self.cluster, at)?;
                at | COPIED
            }
        };
        if let Some((_, _, table)) = self.l2.as_mut() {
            table[(index % L2_ENTRIES) as usize] = entry;
        }
        Ok(())
    }

    fn flush_l2(&mut self) -> io::Result<()> {
        if let Some((_, at, table)) = self.l2.take() {
            self.file.write_all_at(&be_bytes(&table), at)?;
        }
        Ok(())
    }

    /// A whole cluster at the end of the file.
    fn alloc_cluster(&mut self) -> io::Result<u64> {
        let at = self.end.next_multiple_of(CLUSTER);
        self.end = at + CLUSTER;
        self.count(at / CLUSTER)?;
        Ok(at)
    }

    /// `len` bytes at the end of the file (compressed clusters share host clusters).
    fn alloc_bytes(&mut self, len: u64) -> io::Result<u64> {
        let at = self.end;
        self.end += len;
        for cluster in at / CLUSTER..=(self.end - 1) / CLUSTER {
            self.count(cluster)?;
        }
        Ok(at)
    }

    /// One more reference to host cluster `cluster`; allocation only ever moves forward, so a
    /// refcount block is complete once a cluster past its region is counted.
    fn count(&mut self, cluster: u64) -> io::Result<()> {
        let region = cluster / REFBLOCK_ENTRIES;
        while region > self.refblock.0 {
            self.flush_refblock()?;
            self.refblock = (self.refblock.0 + 1, vec![0; REFBLOCK_ENTRIES as usize]);
        }
        let count = &mut self.refblock.1[(cluster % REFBLOCK_ENTRIES) as usize];
        *count = count.saturating_add(1);
        Ok(())
    }

    /// Write the current refcount block into its slot, if it counts anything.
    fn flush_refblock(&mut self) -> io::Result<()> {
        let (region, counts) = &self.refblock;
        if counts.iter().all(|&c| c == 0) {
            return Ok(());
        }
        if *region >= self.slots.1 {
            return Err(io::Error::other("the qcow2 file outgrew its refcount blocks"));
        }
        let at = (self.slots.0 + region) * CLUSTER;
        let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.file.write_all_at(&bytes, at)?;
        self.reftable[*region as usize] = at;
        Ok(())
    }

    /// Finish the file: the last cluster, the tables, the header. Returns the file's length.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        if self.filled > 0 {
            self.emit()?;
        }
        self.flush_l2()?;
        self.flush_refblock()?;
        // The slots holding a refcount block are referenced: count them in region 0's block
        // (which holds all slots) on disk.
        let used: Vec<u64> = (0..self.slots.1).filter(|r| self.reftable[*r as usize] != 0).collect();
        let region0 = self.reftable[0];
        for r in used {
            let slot = self.slots.0 + r;
            let at = region0 + slot * 2;
            let mut old = [0u8; 2];
            self.file.read_exact_at(&mut old, at)?;
            let count = u16::from_be_bytes(old).saturating_add(1);
            self.file.write_all_at(&count.to_be_bytes(), at)?;
        }
        self.file.write_all_at(&be_bytes(&self.l1), self.l1_offset)?;
        self.file
            .write_all_at(&be_bytes(&self.reftable), self.reftable_offset)?;
        self.file.write_all_at(&self.header(), 0)?;
        let length = self.end.next_multiple_of(512);
        self.file.set_len(length)?;
        self.file.sync_all()?;
        Ok(length)
    }

    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LENGTH as usize + 8];
        let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, b"QFI\xfb");
        put(4, &3u32.to_be_bytes());
        put(20, &CLUSTER_BITS.to_be_bytes());
        put(24, &self.size.to_be_bytes());
        put(36, &(self.l1.len() as u32).to_be_bytes());
        put(40, &self.l1_offset.to_be_bytes());
        put(48, &self.reftable_offset.to_be_bytes());
        put(56, &((self.reftable.len() as u64 * 8 / CLUSTER) as u32).to_be_bytes());
        let incompatible = if self.compress {
            INCOMPATIBLE_COMPRESSION_TYPE
        } else {
            0
        };
        put(72, &incompatible.to_be_bytes());
        put(96, &4u32.to_be_bytes());
        put(100, &HEADER_LENGTH.to_be_bytes());
        // Compression type: 0 zlib, 1 zstd (only meaningful with the incompatible bit).
        put(104, &[u8::from(self.compress)]);
        h
    }
}

fn be_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

//! qcow2 read through our own walk of its L1 and L2 tables, over any [`RandomAccess`]: an
//! image served over HTTP (read by range requests, cluster by cluster as the write needs them)
//! and images whose compressed clusters are zstd frames, which imago does not decode.
//!
//! Only what `docs/interop/qcow2.txt` in QEMU defines for a self-contained image is read:
//! standard and compressed clusters, the all-zeroes flag, unallocated clusters (zeroes, since
//! such an image has no backing file). The header checks of [`read_header`] come first, so
//! encryption, external data files and subclusters are refused before any table is read.
//!
//! Memory: the L1 table is read in 64 KiB pieces and L2 tables are kept in a small cache, so
//! what is held is bounded by the cache, never by the image's size.

use std::path::PathBuf;

use super::access::{RandomAccess, TableCache, be64};
use super::error::SourceError;
use super::qcow2_header::{Qcow2Header, read_header};
use super::scan::{Extent, ExtentMap};

/// L2 entry bits (qcow2.txt, "Standard Cluster Descriptor").
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ALL_ZEROES: u64 = 1;
/// "Bits 9-55 of host cluster offset."
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entries per cached piece of the L1 table (64 KiB).
const L1_PIECE: u64 = 8192;
/// L2 tables kept (at most 2 MiB each, with 2 MiB clusters).
const L2_CACHE: usize = 16;

/// Where a guest cluster's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cluster {
    /// Reads as zeroes: unallocated, or the all-zeroes flag.
    Zero,
    /// Stored as is at this host offset.
    Stored(u64),
    /// Compressed: `len` bytes at `offset`.
    Compressed { offset: u64, len: u64 },
}

/// The extent map of a qcow2 image read through its own tables.
#[derive(Debug)]
pub(crate) struct Qcow2Tables {
    file: Box<dyn RandomAccess>,
    path: PathBuf,
    size: u64,
    cluster_bits: u32,
    l1_size: u64,
    l1_offset: u64,
    zstd: bool,
    l1: TableCache<Vec<u64>>,
    l2: TableCache<Vec<u64>>,
    /// The last compressed cluster decoded: its host offset and its bytes.
    decoded: Option<(u64, Vec<u8>)>,
}

impl Qcow2Tables {
    /// Read and check the header of `file`; a backing file is refused (there is nothing here
    /// to resolve it against).
    pub(crate) fn open(mut file: Box<dyn RandomAccess>) -> Result<Self, SourceError> {
        let header: Qcow2Header = read_header(file.as_mut())?;
        let path = file.path().to_path_buf();
        if let Some(backing) = header.backing_file {
            return Err(SourceError::Qcow2Unsupported {
                path,
                feature: format!(
                    "a backing file ({backing:?}), which cannot be followed for an image read over HTTP \
                     or with zstd compression"
                ),
            });
        }
        Ok(Qcow2Tables {
            file,
            path,
            size: header.size,
            cluster_bits: header.cluster_bits,
            l1_size: u64::from(header.l1_size),
            l1_offset: header.l1_table_offset,
            zstd: header.zstd,
            l1: TableCache::new(4),
            l2: TableCache::new(L2_CACHE),
            decoded: None,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// L2 entries per table.
    fn l2_entries(&self) -> u64 {
        1 << (self.cluster_bits - 3)
    }

    fn corrupt(&self, detail: String) -> SourceError {
        SourceError::corrupt(&self.path, detail)
    }

    /// The L2 table offset for L1 index `index` (0: none).
    fn l1_entry(&mut self, index: u64) -> Result<u64, SourceError> {
        if index >= self.l1_size {
            return Err(self.corrupt(format!("guest cluster beyond the L1 table ({} entries)", self.l1_size)));
        }
        let piece = index / L1_PIECE;
        let (file, l1_offset, l1_size) = (&mut self.file, self.l1_offset, self.l1_size);
        let table = self.l1.get_or_load(piece, || {
            let first = piece * L1_PIECE;
            let count = (l1_size - first).min(L1_PIECE);
            read_table(file.as_mut(), l1_offset + first * 8, count)
        })?;
        Ok(table[(index % L1_PIECE) as usize] & OFFSET_MASK)
    }

    /// The L2 table at `offset`.
    fn l2_table(&mut self, offset: u64) -> Result<&Vec<u64>, SourceError> {
        let (count, file) = (self.l2_entries(), &mut self.file);
        self.l2.get_or_load(offset, || read_table(file.as_mut(), offset, count))
    }

    /// Guest cluster `index`, and how many clusters after it (within its L2 table, at most
    /// `limit`) are of the same kind: zero, or stored contiguously.
    fn cluster(&mut self, index: u64, limit: u64) -> Result<(Cluster, u64), SourceError> {
        let per_l2 = self.l2_entries();
        let l2_offset = self.l1_entry(index / per_l2)?;
        let first = index % per_l2;
        let room = (per_l2 - first).min(limit.max(1));
        if l2_offset == 0 {
            return Ok((Cluster::Zero, room));
        }
        let cluster_size = self.cluster_size();
        let file_size = self.file.size();
        let (cluster_bits, path) = (self.cluster_bits, self.path.clone());
        let table = self.l2_table(l2_offset)?;
        let decode = |entry: u64| describe(entry, cluster_bits, file_size, &path);
        let kind = decode(table[first as usize])?;
        let mut run = 1;
        while run < room {
            let next = decode(table[(first + run) as usize])?;
            let same = match (kind, next) {
                (Cluster::Zero, Cluster::Zero) => true,
                (Cluster::Stored(a), Cluster::Stored(b)) => b == a + run * cluster_size,
                _ => false,
            };
            if !same {
                break;
            }
            run += 1;
        }
        Ok((kind, run))
    }

    /// The bytes of the compressed cluster at `offset` (`len` bytes stored).
    fn decompress(&mut self, offset: u64, len: u64) -> Result<&[u8], SourceError> {
        if self.decoded.as_ref().is_none_or(|(at, _)| *at != offset) {
            // The last cluster's sectors may run past the end of the file.
            let len = len.min(self.file.size().saturating_sub(offset));
            let mut stored = vec![0u8; usize::try_from(len).unwrap_or(0)];
            self.file.read_exact_at(offset, &mut stored)?;
            let mut out = vec![0u8; self.cluster_size() as usize];
            let decoded = if self.zstd {
                zstd_cluster(&stored, &mut out)
            } else {
                deflate_cluster(&stored, &mut out)
            };
            decoded.map_err(|why| {
                self.corrupt(format!(
                    "the compressed cluster at host offset {offset} does not decompress ({why})"
                ))
            })?;
            self.decoded = Some((offset, out));
        }
        Ok(self.decoded.as_ref().map_or(&[][..], |(_, d)| &d[..]))
    }
}

/// Read `count` big-endian table entries at `offset`.
fn read_table(file: &mut dyn RandomAccess, offset: u64, count: u64) -> Result<Vec<u64>, SourceError> {
    let mut bytes = vec![0u8; usize::try_from(count * 8).unwrap_or(0)];
    file.read_exact_at(offset, &mut bytes)?;
    Ok(bytes.chunks_exact(8).map(|e| be64(e, 0)).collect())
}

/// Decode one L2 entry, checking it against the file.
fn describe(entry: u64, cluster_bits: u32, file_size: u64, path: &std::path::Path) -> Result<Cluster, SourceError> {
    let corrupt = |detail: String| Err(SourceError::corrupt(path, detail));
    if entry & COMPRESSED != 0 {
        // "x = 62 - (cluster_bits - 8)"; bits 0..x-1: host offset; bits x..61: additional
        // 512-byte sectors beyond the one holding the offset.
        let x = 62 - (cluster_bits - 8);
        let offset = entry & ((1 << x) - 1);
        let sectors = ((entry & !(COPIED | COMPRESSED)) >> x) + 1;
        let len = sectors * 512 - (offset & 511);
        if offset >= file_size {
            return corrupt(format!(
                "a compressed cluster at host offset {offset} lies beyond the end of the file ({file_size} bytes): \
                 the image is truncated"
            ));
        }
        return Ok(Cluster::Compressed { offset, len });
    }
    if entry & ALL_ZEROES != 0 {
        return Ok(Cluster::Zero);
    }
    let offset = entry & OFFSET_MASK;
    if offset == 0 {
        return Ok(Cluster::Zero);
    }
    let cluster_size = 1u64 << cluster_bits;
    if !offset.is_multiple_of(cluster_size) {
        return corrupt(format!("a data cluster's host offset {offset} is not cluster-aligned"));
    }
    if offset.saturating_add(cluster_size) > file_size {
        return corrupt(format!(
            "a data cluster at host offset {offset} runs past the end of the file ({file_size} bytes): \
             the image is truncated"
        ));
    }
    Ok(Cluster::Stored(offset))
}

/// Raw deflate (no zlib header), as QEMU writes it: the output must come out whole.
fn deflate_cluster(stored: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut inflate = flate2::Decompress::new(false);
    match inflate.decompress(stored, out, flate2::FlushDecompress::Finish) {
        Ok(_) if inflate.total_out() == out.len() as u64 => Ok(()),
        Ok(_) => Err(format!("{} bytes out of {}", inflate.total_out(), out.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// zstd, as QEMU reads it (`qcow2_zstd_decompress`): one or more frames, decoded until the
/// cluster is full; the sector padding after them is ignored; the last frame must be whole.
fn zstd_cluster(stored: &[u8], out: &mut [u8]) -> Result<(), String> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let mut decoder = Decoder::new().map_err(|e| e.to_string())?;
    let mut input = InBuffer::around(stored);
    let mut output = OutBuffer::around(out);
    let mut hint = 1;
    while output.pos() < output.capacity() {
        let (before_in, before_out) = (input.pos(), output.pos());
        hint = decoder.run(&mut input, &mut output).map_err(|e| e.to_string())?;
        if input.pos() == before_in && output.pos() == before_out {
            return Err(format!("the data ends after {} bytes of the cluster", output.pos()));
        }
    }
    if hint != 0 {
        return Err("the last frame is incomplete".into());
    }
    Ok(())
}

impl ExtentMap for Qcow2Tables {
    fn extent_at(&mut self, offset: u64) -> Result<(Extent, u64), SourceError> {
        let cluster_size = self.cluster_size();
        let index = offset >> self.cluster_bits;
        let in_cluster = offset % cluster_size;
        let left = self.size.saturating_sub(offset).div_ceil(cluster_size).max(1);
        let (kind, run) = self.cluster(index, left)?;
        let len = run * cluster_size - in_cluster;
        Ok(match kind {
            Cluster::Zero => (Extent::Zero, len),
            Cluster::Stored(_) | Cluster::Compressed { .. } => (Extent::Data, len),
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let cluster_size = self.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let in_cluster = at % cluster_size;
            let want = (buf.len() - done) as u64;
            let clusters = (in_cluster + want).div_ceil(cluster_size);
            let (kind, run) = self.cluster(at >> self.cluster_bits, clusters)?;
            let n = (run * cluster_size - in_cluster).min(want) as usize;
            let piece = &mut buf[done..done + n];
            match kind {
                Cluster::Zero => piece.fill(0),
                Cluster::Stored(host) => self.file.read_exact_at(host + in_cluster, piece)?,
                Cluster::Compressed { offset: host, len } => {
                    let n = n.min((cluster_size - in_cluster) as usize);
                    let start = in_cluster as usize;
                    let bytes = self.decompress(host, len)?;
                    buf[done..done + n].copy_from_slice(&bytes[start..start + n]);
                    done += n;
                    continue;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        self.file.finish()
    }
}

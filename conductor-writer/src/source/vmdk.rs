//! VMDK sparse extents (`KDMV`, version 1 to 3): monolithicSparse and streamOptimized, the two
//! kinds `qemu-img convert -O vmdk` makes and clouds ship, over any [`RandomAccess`].
//!
//! The layout, as QEMU's `block/vmdk.c` reads it: a 512-byte header; the grain directory (GD,
//! one little-endian u32 sector number per grain table); grain tables (GT, one u32 sector
//! number per grain, 0 for a grain never written, 1 for a zeroed grain when the header has the
//! zeroed-grain flag); grains of `granularity` sectors. streamOptimized images compress each
//! grain with zlib behind a 12-byte marker (its LBA and compressed size), and may put the
//! directory at the end (`gdOffset` all ones): the header repeated in a footer 1536 bytes
//! before the end of the file then says where it is.
//!
//! Descriptor-only VMDKs (several extent files), the older `COWD` format and ESXi's seSparse
//! are refused by [`super::detect`] with the `qemu-img convert` command. Memory: the
//! directory is read in pieces and grain tables are cached, never more than a few at a time.

use std::path::PathBuf;

use super::access::{RandomAccess, TableCache, le16, le32, le64};
use super::error::SourceError;
use super::scan::{Extent, ExtentMap};

const MAGIC: &[u8; 4] = b"KDMV";
/// Header fields, little-endian, from the start of the file (the magic included).
mod field {
    pub(super) const VERSION: usize = 4;
    pub(super) const FLAGS: usize = 8;
    pub(super) const CAPACITY: usize = 12;
    pub(super) const GRANULARITY: usize = 20;
    pub(super) const DESC_OFFSET: usize = 28;
    pub(super) const NUM_GTES_PER_GT: usize = 44;
    pub(super) const GD_OFFSET: usize = 56;
    pub(super) const COMPRESS_ALGORITHM: usize = 77;
}
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_MARKER: u32 = 1 << 17;
const COMPRESSION_DEFLATE: u16 = 1;
const GD_AT_END: u64 = u64::MAX;
const MARKER_FOOTER: u32 = 3;
const MARKER_END_OF_STREAM: u32 = 0;
/// QEMU: "L2 table size too big" past 512 entries.
const MAX_GTES: u32 = 512;
/// The largest grain read here (1 MiB; VMware and QEMU make 64 KiB grains).
const MAX_GRAIN_SECTORS: u64 = 2048;
/// Grain directory entries per cached piece, and grain tables kept.
const GD_PIECE: u64 = 16384;
const GT_CACHE: usize = 16;
/// A grain marker: the grain's LBA (u64) and its compressed size (u32).
const MARKER_LEN: usize = 12;

/// Where a grain's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grain {
    Zero,
    /// At this byte offset of the file.
    At(u64),
}

/// The extent map of a sparse VMDK.
#[derive(Debug)]
pub(crate) struct VmdkSparse {
    file: Box<dyn RandomAccess>,
    path: PathBuf,
    size: u64,
    /// Grain size in bytes.
    grain: u64,
    gtes: u64,
    gd_offset: u64,
    gd_entries: u64,
    compressed: bool,
    zero_grain: bool,
    gd: TableCache<Vec<u32>>,
    gt: TableCache<Vec<u32>>,
    /// The last compressed grain decoded: its file offset and its bytes.
    decoded: Option<(u64, Vec<u8>)>,
}

impl VmdkSparse {
    pub(crate) fn open(mut file: Box<dyn RandomAccess>) -> Result<Self, SourceError> {
        let path = file.path().to_path_buf();
        let corrupt = |detail: String| SourceError::VmdkCorrupt {
            path: path.clone(),
            detail,
        };
        let mut header = [0u8; 512];
        file.read_exact_at(0, &mut header)?;
        if &header[..4] != MAGIC {
            return Err(corrupt("no KDMV magic".into()));
        }
        if le64(&header, field::GD_OFFSET) == GD_AT_END {
            // "The footer starts at offset -1024 from the end: One sector for the footer, and
            // another one for the end-of-stream marker", after the footer marker.
            let at = file
                .size()
                .checked_sub(1536)
                .ok_or_else(|| corrupt("the directory is at the end, but the file has no footer".into()))?;
            let mut footer = [0u8; 1536];
            file.read_exact_at(at, &mut footer)?;
            let (marker, body, eos) = (&footer[..512], &footer[512..1024], &footer[1024..]);
            if &body[..4] != MAGIC
                || le32(marker, 8) != 0
                || le32(marker, 12) != MARKER_FOOTER
                || le64(eos, 0) != 0
                || le32(eos, 8) != 0
                || le32(eos, 12) != MARKER_END_OF_STREAM
            {
                return Err(corrupt(
                    "the footer is missing or invalid (a streamOptimized image cut short?)".into(),
                ));
            }
            header.copy_from_slice(body);
        }
        let version = le32(&header, field::VERSION);
        if !(1..=3).contains(&version) {
            return Err(SourceError::VmdkUnsupported {
                path,
                feature: format!("version {version}"),
            });
        }
        let flags = le32(&header, field::FLAGS);
        let capacity = le64(&header, field::CAPACITY);
        let granularity = le64(&header, field::GRANULARITY);
        let gtes = le32(&header, field::NUM_GTES_PER_GT);
        if capacity == 0 && le64(&header, field::DESC_OFFSET) != 0 {
            return Err(SourceError::VmdkUnsupported {
                path,
                feature: "a descriptor naming other extent files".into(),
            });
        }
        if granularity == 0 || !granularity.is_power_of_two() || granularity > MAX_GRAIN_SECTORS {
            return Err(corrupt(format!(
                "grain size of {granularity} sectors (a power of two up to {MAX_GRAIN_SECTORS} is read)"
            )));
        }
        if gtes == 0 || gtes > MAX_GTES {
            return Err(corrupt(format!("{gtes} entries per grain table (1 to {MAX_GTES})")));
        }
        let size = capacity
            .checked_mul(512)
            .ok_or_else(|| corrupt(format!("capacity of {capacity} sectors")))?;
        let span = u64::from(gtes) * granularity;
        let gd_entries = capacity.div_ceil(span);
        let gd_offset = le64(&header, field::GD_OFFSET).saturating_mul(512);
        if gd_entries > 0 && gd_offset.saturating_add(gd_entries * 4) > file.size() {
            return Err(corrupt(format!(
                "the grain directory ({gd_entries} entries at byte {gd_offset}) lies beyond the end of the file \
                 ({} bytes): the image is truncated",
                file.size()
            )));
        }
        let compressed = le16(&header, field::COMPRESS_ALGORITHM) == COMPRESSION_DEFLATE;
        let markers = flags & FLAG_MARKER != 0;
        if compressed && !markers {
            return Err(SourceError::VmdkUnsupported {
                path,
                feature: "compressed grains without grain markers".into(),
            });
        }
        tracing::debug!(path = %path.display(), size, grain = granularity * 512, compressed, "opened VMDK");
        Ok(VmdkSparse {
            file,
            path,
            size,
            grain: granularity * 512,
            gtes: u64::from(gtes),
            gd_offset,
            gd_entries,
            compressed,
            zero_grain: flags & FLAG_ZERO_GRAIN != 0,
            gd: TableCache::new(2),
            gt: TableCache::new(GT_CACHE),
            decoded: None,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn corrupt(&self, detail: String) -> SourceError {
        SourceError::VmdkCorrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// Grain `index`, and how many after it (in its grain table, at most `limit`) are of the
    /// same kind: zero, or uncompressed and contiguous in the file.
    fn grain(&mut self, index: u64, limit: u64) -> Result<(Grain, u64), SourceError> {
        let table = index / self.gtes;
        let first = index % self.gtes;
        let room = (self.gtes - first).min(limit.max(1));
        if table >= self.gd_entries {
            return Err(self.corrupt(format!("grain {index} is beyond the grain directory")));
        }
        let piece = table / GD_PIECE;
        let (file, gd_offset, gd_entries) = (&mut self.file, self.gd_offset, self.gd_entries);
        let gd = self.gd.get_or_load(piece, || {
            let start = piece * GD_PIECE;
            read_u32s(file.as_mut(), gd_offset + start * 4, (gd_entries - start).min(GD_PIECE))
        })?;
        let gt_sector = u64::from(gd[(table % GD_PIECE) as usize]);
        if gt_sector == 0 {
            return Ok((Grain::Zero, room));
        }
        let (file, gtes) = (&mut self.file, self.gtes);
        let gt = self
            .gt
            .get_or_load(gt_sector, || read_u32s(file.as_mut(), gt_sector * 512, gtes))?;
        let entries: Vec<u32> = gt[first as usize..(first + room) as usize].to_vec();
        let decode = |entry: u32| match entry {
            0 => Grain::Zero,
            1 if self.zero_grain => Grain::Zero,
            sector => Grain::At(u64::from(sector) * 512),
        };
        let kind = decode(entries[0]);
        let mut run = 1;
        while run < room {
            let same = match (kind, decode(entries[run as usize])) {
                (Grain::Zero, Grain::Zero) => true,
                (Grain::At(a), Grain::At(b)) => !self.compressed && b == a + run * self.grain,
                _ => false,
            };
            if !same {
                break;
            }
            run += 1;
        }
        if let Grain::At(at) = kind {
            let end = if self.compressed {
                at.saturating_add(MARKER_LEN as u64)
            } else {
                at.saturating_add(run * self.grain)
            };
            if end > self.file.size() {
                return Err(self.corrupt(format!(
                    "grain {index} at byte {at} lies beyond the end of the file ({} bytes): the image is truncated",
                    self.file.size()
                )));
            }
        }
        Ok((kind, run))
    }

    /// The bytes of the compressed grain whose marker is at `at`.
    fn inflate(&mut self, at: u64, grain_len: usize) -> Result<&[u8], SourceError> {
        if self.decoded.as_ref().is_none_or(|(offset, _)| *offset != at) {
            let mut marker = [0u8; MARKER_LEN];
            self.file.read_exact_at(at, &mut marker)?;
            let len = u64::from(le32(&marker, 8));
            // QEMU reads at most two grains' worth for one compressed grain.
            if len == 0 || len > 2 * self.grain {
                return Err(self.corrupt(format!("the compressed grain at byte {at} claims {len} bytes")));
            }
            let mut stored = vec![0u8; len as usize];
            let data_at = at + MARKER_LEN as u64;
            self.file.read_exact_at(data_at, &mut stored)?;
            let mut out = vec![0u8; self.grain as usize];
            let mut inflate = flate2::Decompress::new(true);
            let result = inflate.decompress(&stored, &mut out, flate2::FlushDecompress::Finish);
            // The last grain of a disk that is not a whole number of grains may be short.
            let produced = inflate.total_out() as usize;
            if !matches!(result, Ok(flate2::Status::StreamEnd)) || produced < grain_len {
                let why = result
                    .err()
                    .map_or_else(|| format!("{produced} bytes out"), |e| e.to_string());
                return Err(self.corrupt(format!("the compressed grain at byte {at} does not inflate ({why})")));
            }
            self.decoded = Some((at, out));
        }
        Ok(self.decoded.as_ref().map_or(&[][..], |(_, d)| &d[..]))
    }
}

/// Read `count` little-endian u32 entries at `offset`.
fn read_u32s(file: &mut dyn RandomAccess, offset: u64, count: u64) -> Result<Vec<u32>, SourceError> {
    let mut bytes = vec![0u8; usize::try_from(count * 4).unwrap_or(0)];
    file.read_exact_at(offset, &mut bytes)?;
    Ok(bytes.chunks_exact(4).map(|e| le32(e, 0)).collect())
}

impl ExtentMap for VmdkSparse {
    fn extent_at(&mut self, offset: u64) -> Result<(Extent, u64), SourceError> {
        let in_grain = offset % self.grain;
        let left = self.size.saturating_sub(offset).div_ceil(self.grain).max(1);
        let (kind, run) = self.grain(offset / self.grain, left)?;
        let len = run * self.grain - in_grain;
        Ok(match kind {
            Grain::Zero => (Extent::Zero, len),
            Grain::At(_) => (Extent::Data, len),
        })
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let in_grain = at % self.grain;
            let want = (buf.len() - done) as u64;
            let grains = (in_grain + want).div_ceil(self.grain);
            let (kind, run) = self.grain(at / self.grain, grains)?;
            let n = (run * self.grain - in_grain).min(want) as usize;
            match kind {
                Grain::Zero => buf[done..done + n].fill(0),
                Grain::At(host) if !self.compressed => {
                    self.file.read_exact_at(host + in_grain, &mut buf[done..done + n])?
                }
                Grain::At(host) => {
                    let grain_start = at - in_grain;
                    let grain_len = (self.size - grain_start).min(self.grain) as usize;
                    let start = in_grain as usize;
                    let bytes = self.inflate(host, grain_len)?;
                    buf[done..done + n].copy_from_slice(&bytes[start..start + n]);
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

//! Partition tables as bytes: MBR (msdos) and GPT, built and read in memory.
//!
//! A deploy knows the whole layout before it writes a block, so the table is
//! rendered here into the byte ranges that hold it (the start of the disk and,
//! for GPT, its last sectors) and sent like any other data. Reading is for the
//! tables already there: a whole-disk image's own table (to add a config drive
//! partition) and the node's current table (to keep its ephemeral partition).
//!
//! GPT follows UEFI 2.10 §5.3: a protective MBR, the primary header at LBA 1
//! with its entry array after it, the backup array and header in the last
//! sectors, both CRC32-protected. GUIDs are stored mixed-endian.

use uuid::Uuid;

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Msdos,
    Gpt,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Label::Msdos => "msdos",
            Label::Gpt => "gpt",
        })
    }
}

/// GPT partition type GUIDs (UEFI spec, and the Discoverable Partitions
/// Specification for the Linux ones).
pub mod gpt_type {
    use uuid::{Uuid, uuid};
    pub const EFI_SYSTEM: Uuid = uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    pub const BIOS_BOOT: Uuid = uuid!("21686148-6449-6e6f-744e-656564454649");
    pub const LINUX_DATA: Uuid = uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4");
    pub const LINUX_SWAP: Uuid = uuid!("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f");
}

/// MBR partition type bytes.
pub mod mbr_type {
    pub const LINUX: u8 = 0x83;
    pub const LINUX_SWAP: u8 = 0x82;
    pub const EFI_SYSTEM: u8 = 0xef;
    pub const FAT32_LBA: u8 = 0x0c;
    pub const GPT_PROTECTIVE: u8 = 0xee;
    pub const EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
}

/// A partition's type, in its table's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    Mbr(u8),
    Gpt(Uuid),
}

impl std::fmt::Display for PartType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartType::Mbr(t) => write!(f, "0x{t:02x}"),
            PartType::Gpt(t) => write!(f, "{t}"),
        }
    }
}

/// One partition: where it is (in logical blocks) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as the OS numbers it.
    pub number: u32,
    pub first_lba: u64,
    pub blocks: u64,
    pub kind: PartType,
    /// GPT: the unique partition GUID (nil for MBR).
    pub guid: Uuid,
    /// GPT: the partition name (empty for MBR).
    pub name: String,
    /// MBR: the active ("boot") flag. GPT: attribute bit 2, legacy BIOS bootable.
    pub bootable: bool,
    /// GPT attribute bits as found (the bootable bit is kept in `bootable`).
    pub attributes: u64,
}

impl Partition {
    /// The first block after the partition.
    #[must_use]
    pub fn end_lba(&self) -> u64 {
        self.first_lba + self.blocks
    }
}

/// Where a GPT keeps its entry arrays, and how big they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptGeometry {
    pub entry_lba: u64,
    pub entries: u32,
    pub first_usable: u64,
}

/// A whole partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub label: Label,
    pub block_size: u32,
    /// The disk's size in logical blocks.
    pub disk_blocks: u64,
    /// MBR: the disk signature at byte 440 (0 in a GPT's protective MBR, unless an image set it).
    pub disk_signature: u32,
    /// GPT: the disk GUID (nil for MBR).
    pub disk_guid: Uuid,
    pub gpt: GptGeometry,
    pub partitions: Vec<Partition>,
    /// MBR boot code (bytes 0..440), kept when a table read from an image is written back.
    pub boot_code: Vec<u8>,
}

/// Why a table cannot be read or built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("the GPT header is damaged: {0}")]
    BadGpt(&'static str),
    #[error("the partition table does not fit this {block_size}-byte-block disk: {0}", block_size = .1)]
    Geometry(String, u32),
    #[error("an MBR holds at most 4 primary partitions; this layout needs {0}")]
    TooManyPrimaries(usize),
    #[error("partition {number} ends past block {limit}, the most an MBR can address; use a GPT label")]
    MbrLimit { number: u32, limit: u64 },
    #[error("partition {0} lies outside the usable part of the disk")]
    OutOfRange(u32),
    #[error("partitions {0} and {1} overlap")]
    Overlap(u32, u32),
}

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_REVISION: u32 = 0x0001_0000;
const GPT_HEADER_SIZE: u32 = 92;
const GPT_ENTRY_SIZE: usize = 128;
const GPT_DEFAULT_ENTRIES: u32 = 128;
const ATTR_LEGACY_BOOTABLE: u64 = 1 << 2;
/// MBR fields hold 32-bit block numbers.
const MBR_MAX_BLOCKS: u64 = 1 << 32;

/// A range of bytes to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub data: Vec<u8>,
}

impl GptGeometry {
    /// The standard geometry: 128 entries right after the header.
    #[must_use]
    pub fn standard(block_size: u32) -> Self {
        let mut g = GptGeometry {
            entry_lba: 2,
            entries: GPT_DEFAULT_ENTRIES,
            first_usable: 0,
        };
        g.first_usable = 2 + g.array_blocks(block_size);
        g
    }

    fn array_blocks(&self, block_size: u32) -> u64 {
        (u64::from(self.entries) * GPT_ENTRY_SIZE as u64).div_ceil(u64::from(block_size))
    }
}

impl Table {
    /// An empty table of `label` for a disk of `disk_blocks` blocks.
    #[must_use]
    pub fn new(label: Label, block_size: u32, disk_blocks: u64, disk_signature: u32, disk_guid: Uuid) -> Self {
        Table {
            label,
            block_size,
            disk_blocks,
            disk_signature,
            disk_guid: if label == Label::Gpt { disk_guid } else { Uuid::nil() },
            gpt: GptGeometry::standard(block_size),
            partitions: Vec::new(),
            boot_code: Vec::new(),
        }
    }

    /// The first block a partition may use.
    #[must_use]
    pub fn first_usable(&self) -> u64 {
        match self.label {
            Label::Msdos => 1,
            Label::Gpt => self.gpt.first_usable,
        }
    }

    /// The first block after the last one a partition may use.
    #[must_use]
    pub fn usable_end(&self) -> u64 {
        match self.label {
            Label::Msdos => self.disk_blocks.min(MBR_MAX_BLOCKS),
            Label::Gpt => self
                .disk_blocks
                .saturating_sub(1 + self.gpt.array_blocks(self.block_size)),
        }
    }

    /// The identifier Ironic reports for a whole-disk image: `0x%08x` of
    /// the MBR signature, or the disk GUID of a GPT.
    #[must_use]
    pub fn disk_identifier(&self) -> String {
        match self.label {
            Label::Msdos => format!("0x{:08x}", self.disk_signature),
            Label::Gpt => self.disk_guid.to_string(),
        }
    }

    /// What `blkid` calls a partition's PARTUUID.
    #[must_use]
    pub fn part_uuid(&self, partition: &Partition) -> String {
        match self.label {
            Label::Msdos => format!("{:08x}-{:02x}", self.disk_signature, partition.number),
            Label::Gpt => partition.guid.to_string(),
        }
    }

    /// Check that the partitions fit the label and the disk and do not overlap.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.label == Label::Msdos && self.partitions.len() > 4 {
            return Err(TableError::TooManyPrimaries(self.partitions.len()));
        }
        let (first, end) = (self.first_usable(), self.usable_end());
        for p in &self.partitions {
            if self.label == Label::Msdos && p.end_lba() > MBR_MAX_BLOCKS {
                return Err(TableError::MbrLimit {
                    number: p.number,
                    limit: MBR_MAX_BLOCKS,
                });
            }
            if p.blocks == 0 || p.first_lba < first || p.end_lba() > end {
                return Err(TableError::OutOfRange(p.number));
            }
        }
        for (i, a) in self.partitions.iter().enumerate() {
            for b in self.partitions.iter().skip(i + 1) {
                if a.first_lba < b.end_lba() && b.first_lba < a.end_lba() {
                    return Err(TableError::Overlap(a.number, b.number));
                }
            }
        }
        Ok(())
    }

    /// The bytes that hold this table: the start of the disk (MBR, and the
    /// primary GPT) and, for GPT, the backup array and header at the end.
    pub fn encode(&self) -> Result<Vec<Extent>, TableError> {
        self.validate()?;
        let bs = self.block_size as usize;
        match self.label {
            Label::Msdos => {
                let mut sector = vec![0u8; bs];
                self.write_mbr(&mut sector);
                Ok(vec![Extent {
                    offset: 0,
                    data: sector,
                }])
            }
            Label::Gpt => {
                let array = self.gpt_array();
                let array_blocks = self.gpt.array_blocks(self.block_size);
                let last = self.disk_blocks - 1;
                let backup_array_lba = last - array_blocks;
                let primary_len = usize::try_from(self.gpt.entry_lba + array_blocks).unwrap_or(usize::MAX) * bs;
                let mut primary = vec![0u8; primary_len];
                self.write_mbr(&mut primary[..bs]);
                let header = self.gpt_header(1, last, self.gpt.entry_lba, &array);
                primary[bs..bs + header.len()].copy_from_slice(&header);
                let at = usize::try_from(self.gpt.entry_lba).unwrap_or(usize::MAX) * bs;
                primary[at..at + array.len()].copy_from_slice(&array);
                let mut backup = vec![0u8; usize::try_from(array_blocks + 1).unwrap_or(usize::MAX) * bs];
                backup[..array.len()].copy_from_slice(&array);
                let header = self.gpt_header(last, 1, backup_array_lba, &array);
                let at = backup.len() - bs;
                backup[at..at + header.len()].copy_from_slice(&header);
                let bs = u64::from(self.block_size);
                Ok(vec![
                    Extent {
                        offset: 0,
                        data: primary,
                    },
                    Extent {
                        offset: backup_array_lba * bs,
                        data: backup,
                    },
                ])
            }
        }
    }

    /// Sector 0: boot code, disk signature, four entries, 0x55AA. A GPT
    /// gets one protective entry covering the disk.
    fn write_mbr(&self, sector: &mut [u8]) {
        let code = self.boot_code.len().min(440);
        sector[..code].copy_from_slice(&self.boot_code[..code]);
        sector[440..444].copy_from_slice(&self.disk_signature.to_le_bytes());
        let entries: Vec<(bool, u8, u64, u64)> = match self.label {
            Label::Gpt => vec![(
                false,
                mbr_type::GPT_PROTECTIVE,
                1,
                (self.disk_blocks - 1).min(u64::from(u32::MAX)),
            )],
            Label::Msdos => self
                .partitions
                .iter()
                .map(|p| {
                    let t = match p.kind {
                        PartType::Mbr(t) => t,
                        PartType::Gpt(_) => mbr_type::LINUX,
                    };
                    (p.bootable, t, p.first_lba, p.blocks)
                })
                .collect(),
        };
        // Partitions keep their numbers: entry n-1 holds partition n.
        let numbers: Vec<u32> = match self.label {
            Label::Gpt => vec![1],
            Label::Msdos => self.partitions.iter().map(|p| p.number).collect(),
        };
        for (&number, (active, kind, first, blocks)) in numbers.iter().zip(entries) {
            let at = 446 + 16 * (number as usize - 1).min(3);
            let e = &mut sector[at..at + 16];
            e[0] = if active { 0x80 } else { 0 };
            e[1..4].copy_from_slice(&chs(first));
            e[4] = kind;
            e[5..8].copy_from_slice(&chs(first + blocks - 1));
            e[8..12].copy_from_slice(&u32::try_from(first).unwrap_or(u32::MAX).to_le_bytes());
            e[12..16].copy_from_slice(&u32::try_from(blocks).unwrap_or(u32::MAX).to_le_bytes());
        }
        sector[510] = 0x55;
        sector[511] = 0xaa;
    }

    fn gpt_array(&self) -> Vec<u8> {
        let mut array = vec![0u8; self.gpt.entries as usize * GPT_ENTRY_SIZE];
        for p in &self.partitions {
            let at = (p.number as usize - 1) * GPT_ENTRY_SIZE;
            let Some(e) = array.get_mut(at..at + GPT_ENTRY_SIZE) else {
                continue;
            };
            let kind = match p.kind {
                PartType::Gpt(t) => t,
                PartType::Mbr(_) => gpt_type::LINUX_DATA,
            };
            e[0..16].copy_from_slice(&kind.to_bytes_le());
            e[16..32].copy_from_slice(&p.guid.to_bytes_le());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&(p.end_lba() - 1).to_le_bytes());
            let attributes = p.attributes & !ATTR_LEGACY_BOOTABLE | if p.bootable { ATTR_LEGACY_BOOTABLE } else { 0 };
            e[48..56].copy_from_slice(&attributes.to_le_bytes());
            for (i, unit) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        array
    }

    fn gpt_header(&self, my_lba: u64, alternate_lba: u64, entry_lba: u64, array: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; GPT_HEADER_SIZE as usize];
        h[0..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&GPT_REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&GPT_HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.gpt.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&(self.usable_end() - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        h[72..80].copy_from_slice(&entry_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.gpt.entries.to_le_bytes());
        h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(array).to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Read the table at the start of a disk or image. `head` holds its
    /// first bytes (at least the MBR; for GPT through the entry array);
    /// `disk_blocks` is the size of the disk or image it came from. None if
    /// there is no table (no 0x55AA signature, or no partition at all).
    pub fn decode(head: &[u8], block_size: u32, disk_blocks: u64) -> Result<Option<Table>, TableError> {
        let Some(mbr) = head.get(..512) else {
            return Ok(None);
        };
        if mbr[510..512] != [0x55, 0xaa] {
            return Ok(None);
        }
        let mut table = Table::new(Label::Msdos, block_size, disk_blocks, le32(mbr, 440), Uuid::nil());
        table.boot_code = mbr[..440].to_vec();
        for i in 0..4 {
            let e = &mbr[446 + 16 * i..462 + 16 * i];
            let (kind, first, blocks) = (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)));
            if kind == mbr_type::GPT_PROTECTIVE {
                return Self::decode_gpt(head, block_size, disk_blocks, table.disk_signature).map(Some);
            }
            if kind == 0 || blocks == 0 {
                continue;
            }
            table.partitions.push(Partition {
                number: i as u32 + 1,
                first_lba: first,
                blocks,
                kind: PartType::Mbr(kind),
                guid: Uuid::nil(),
                name: String::new(),
                bootable: e[0] & 0x80 != 0,
                attributes: 0,
            });
        }
        Ok((!table.partitions.is_empty()).then_some(table))
    }

    fn decode_gpt(head: &[u8], block_size: u32, disk_blocks: u64, signature: u32) -> Result<Table, TableError> {
        let bs = block_size as usize;
        let h = head
            .get(bs..bs + GPT_HEADER_SIZE as usize)
            .ok_or(TableError::BadGpt("the disk is too small for a GPT header"))?;
        if &h[0..8] != GPT_SIGNATURE {
            return Err(TableError::BadGpt("no EFI PART signature at LBA 1"));
        }
        let header_size = le32(h, 12) as usize;
        let full = head
            .get(bs..bs + header_size.clamp(GPT_HEADER_SIZE as usize, bs))
            .ok_or(TableError::BadGpt("header size"))?;
        let mut check = full.to_vec();
        check[16..20].fill(0);
        if crc32fast::hash(&check) != le32(h, 16) {
            return Err(TableError::BadGpt("header CRC mismatch"));
        }
        if le32(h, 84) as usize != GPT_ENTRY_SIZE {
            return Err(TableError::BadGpt("entry size is not 128 bytes"));
        }
        let gpt = GptGeometry {
            entry_lba: le64(h, 72),
            entries: le32(h, 80),
            first_usable: le64(h, 40),
        };
        if gpt.entries == 0 || gpt.entries > 4096 || gpt.entry_lba < 2 {
            return Err(TableError::BadGpt("implausible entry array"));
        }
        let at = usize::try_from(gpt.entry_lba).unwrap_or(usize::MAX).saturating_mul(bs);
        let array = head
            .get(at..at.saturating_add(gpt.entries as usize * GPT_ENTRY_SIZE))
            .ok_or(TableError::BadGpt("the entry array lies beyond the bytes read"))?;
        if crc32fast::hash(array) != le32(h, 88) {
            return Err(TableError::BadGpt("entry array CRC mismatch"));
        }
        let mut table = Table::new(Label::Gpt, block_size, disk_blocks, signature, uuid_le(&h[56..72]));
        table.gpt = gpt;
        table.boot_code = head[..440].to_vec();
        for (i, e) in array.chunks_exact(GPT_ENTRY_SIZE).enumerate() {
            let kind = uuid_le(&e[0..16]);
            if kind.is_nil() {
                continue;
            }
            let (first, last) = (le64(e, 32), le64(e, 40));
            if last < first {
                return Err(TableError::BadGpt("a partition ends before it starts"));
            }
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let attributes = le64(e, 48);
            table.partitions.push(Partition {
                number: i as u32 + 1,
                first_lba: first,
                blocks: last - first + 1,
                kind: PartType::Gpt(kind),
                guid: uuid_le(&e[16..32]),
                name: String::from_utf16_lossy(&units),
                bootable: attributes & ATTR_LEGACY_BOOTABLE != 0,
                attributes: attributes & !ATTR_LEGACY_BOOTABLE,
            });
        }
        Ok(table)
    }

    /// The bytes to read from the start of a disk so that [`Table::decode`]
    /// sees the whole primary GPT of a standard table.
    #[must_use]
    pub fn head_len(block_size: u32) -> usize {
        let g = GptGeometry::standard(block_size);
        usize::try_from(g.first_usable).unwrap_or(34) * block_size as usize
    }

    /// The lowest free partition number.
    #[must_use]
    pub fn free_number(&self) -> Option<u32> {
        let max = match self.label {
            Label::Msdos => 4,
            Label::Gpt => self.gpt.entries,
        };
        (1..=max).find(|n| self.partitions.iter().all(|p| p.number != *n))
    }
}

/// A CHS address as MBR entries want it (255 heads, 63 sectors a track),
/// saturating at the last cylinder as partitioning tools do.
fn chs(lba: u64) -> [u8; 3] {
    let cylinder = lba / (255 * 63);
    if cylinder > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / 63) % 255;
    let sector = lba % 63 + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 8) as u8) << 6),
        cylinder as u8,
    ]
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn uuid_le(b: &[u8]) -> Uuid {
    b.try_into().map_or(Uuid::nil(), Uuid::from_bytes_le)
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

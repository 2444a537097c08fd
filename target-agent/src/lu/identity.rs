//! Who the logical unit says it is and how much one command may move: the
//! values INQUIRY, its VPD pages and READ CAPACITY report, kept apart from
//! the commands so that what is advertised and what is enforced are one.

/// Who this logical unit says it is (INQUIRY and its VPD pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// T10 VENDOR IDENTIFICATION, 8 ASCII characters (padded or cut).
    pub vendor: String,
    /// PRODUCT IDENTIFICATION, 16 characters.
    pub product: String,
    /// PRODUCT REVISION LEVEL, 4 characters.
    pub revision: String,
    /// Unit Serial Number VPD page.
    pub serial: String,
    /// The high half of the NAA 6h designator, first nibble 6 included;
    /// the low half is derived from it and the LUN (see [`Identity::naa_designator`]).
    pub naa: u64,
    /// The iSCSI target name, for the target port and target device
    /// designators.
    pub target_name: String,
    pub lun: u16,
}

impl Identity {
    /// Identity derived from the target name and LUN, stable across
    /// restarts (multipath and `/dev/disk/by-id` rely on that).
    ///
    /// There is no IEEE company ID behind this target, so the NAA 6h
    /// designator's company-ID bits are hash bits too; initiators compare
    /// designators as opaque bytes.
    pub fn new(target_name: &str, lun: u16) -> Self {
        let mut key = target_name.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&lun.to_be_bytes());
        let h = fnv1a(&key);
        Self {
            vendor: "DEPLOY".into(),
            product: "target-agent".into(),
            revision: "0.1".into(),
            serial: format!("{h:016x}"),
            naa: (0x6 << 60) | (h >> 4),
            target_name: target_name.into(),
            lun,
        }
    }

    /// The 16-byte NAA IEEE Registered Extended designator.
    pub fn naa_designator(&self) -> [u8; 16] {
        let mut key = self.naa.to_be_bytes().to_vec();
        key.extend_from_slice(&self.lun.to_be_bytes());
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&self.naa.to_be_bytes());
        d[8..].copy_from_slice(&fnv1a(&key).to_be_bytes());
        d
    }
}

/// FNV-1a: tiny and, unlike std's hasher, the same in every release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the Block Limits VPD page advertises and the commands enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// MAXIMUM TRANSFER LENGTH in blocks: also the bound on one command's
    /// data buffer, checked before anything is allocated.
    pub max_transfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH GRANULARITY (and unmap granularity), blocks.
    pub granularity_blocks: u16,
    /// MAXIMUM UNMAP LBA COUNT (per UNMAP command).
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH, blocks. At most MAXIMUM TRANSFER LENGTH:
    /// initiators (libiscsi's WRITE SAME tests among them) take a range
    /// they may WRITE SAME as one they may also WRITE in one command.
    pub max_write_same_blocks: u64,
    /// MAXIMUM COMPARE AND WRITE LENGTH, blocks.
    pub max_compare_and_write_blocks: u8,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT of READ CAPACITY (16),
    /// e.g. 3 for 512-byte logical blocks on 4096-byte physical ones.
    ///
    /// 0 by default (one logical block per physical block; OPTIMAL
    /// TRANSFER LENGTH GRANULARITY still says 4096 bytes). With 3, libiscsi
    /// 1.19 runs five more tests, and they pass, but its GetLBAStatus.
    /// UnmapSingle then fails whatever the target does: its second loop
    /// asks for the status at LBA `i + 1` and requires the first descriptor
    /// to start at `i + LBPPB`, which SBC-3 forbids (the first descriptor
    /// starts at the LBA asked for) unless LBPPB is 1.
    pub physical_block_exponent: u8,
}

/// Most bytes one READ or WRITE moves, and one WRITE SAME touches.
const MAX_TRANSFER_BYTES: u32 = 8 << 20;
/// Most bytes one UNMAP may touch: about a second of work even where
/// discard falls back to writing zeroes. With 512-byte blocks that is 2^20
/// blocks, the largest MAXIMUM UNMAP LBA COUNT libiscsi's
/// `inquiry_block_limits` test accepts as sane (other than "no limit").
const MAX_UNMAP_BYTES: u64 = 512 << 20;

impl Limits {
    pub fn for_block_size(block_size: u32) -> Self {
        let bs = block_size.max(1);
        let max_transfer_blocks = MAX_TRANSFER_BYTES / bs;
        Self {
            max_transfer_blocks,
            granularity_blocks: u16::try_from((4096 / bs).max(1)).unwrap_or(1),
            max_unmap_blocks: u32::try_from(MAX_UNMAP_BYTES / u64::from(bs)).unwrap_or(u32::MAX),
            max_unmap_descriptors: 256,
            max_write_same_blocks: u64::from(max_transfer_blocks),
            max_compare_and_write_blocks: u8::try_from(max_transfer_blocks / 2).unwrap_or(u8::MAX),
            physical_block_exponent: 0,
        }
    }
}

//! The file system at the start of a partition image, named the way `blkid` names it.
//!
//! A partition-image deploy must answer Ironic with the `root uuid` of the file system it
//! wrote (and the ESP's). Reading it back over iSCSI costs a round trip and a second parser;
//! the bytes pass through us on the way out, so we look at the partition's first
//! [`PROBE_BYTES`] before they are written. The strings must be byte-identical to what
//! `blkid -o value -s UUID` prints, because the PXE config's `root=UUID=` and the
//! instance's fstab compare them as text.

use std::fmt::Write as _;

/// A recognised file system.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsId {
    pub kind: FsKind,
    /// As `blkid` prints it; empty where blkid reports none (an all-zero UUID).
    pub uuid: String,
    /// Trailing white space trimmed, as `blkid` does; empty if none.
    pub label: String,
}

/// blkid's `TYPE` for each file system we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    Iso9660,
    Swap,
}

/// How much of the partition start `identify` looks at (the btrfs superblock is at 64 KiB).
pub const PROBE_BYTES: usize = 128 << 10;

/// Identify the file system whose first bytes are `head`; `None` if unknown or if `head`
/// is too short to hold what the file system needs.
#[must_use]
pub fn identify(head: &[u8]) -> Option<FsId> {
    ext(head)
        .or_else(|| xfs(head))
        .or_else(|| btrfs(head))
        .or_else(|| iso9660(head))
        .or_else(|| swap(head))
        .or_else(|| vfat(head))
}

fn bytes(head: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    head.get(off..off.checked_add(len)?)
}

fn array<const N: usize>(head: &[u8], off: usize) -> Option<[u8; N]> {
    bytes(head, off, N)?.try_into().ok()
}

fn le16(head: &[u8], off: usize) -> Option<u16> {
    array(head, off).map(u16::from_le_bytes)
}

fn le32(head: &[u8], off: usize) -> Option<u32> {
    array(head, off).map(u32::from_le_bytes)
}

fn be32(head: &[u8], off: usize) -> Option<u32> {
    array(head, off).map(u32::from_be_bytes)
}

/// The 16 bytes at `off` as `8-4-4-4-12` lowercase hex; empty if all zero, since blkid
/// then sets no UUID at all.
fn uuid_at(head: &[u8], off: usize) -> Option<String> {
    let raw: [u8; 16] = array(head, off)?;
    if raw == [0; 16] {
        return Some(String::new());
    }
    let mut text = String::with_capacity(36);
    for (i, b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{b:02x}");
    }
    Some(text)
}

/// blkid's label rule: the bytes up to the first NUL, trailing C `isspace` trimmed.
fn label_at(head: &[u8], off: usize, len: usize) -> Option<String> {
    let raw = bytes(head, off, len)?;
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    let end = raw
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .map_or(0, |i| i + 1);
    Some(String::from_utf8_lossy(raw.get(..end)?).into_owned())
}

fn fs_id(kind: FsKind, uuid: String, label: String) -> FsId {
    FsId { kind, uuid, label }
}

/// ext2/3/4: superblock at 1024. blkid names the kind by the features it must understand.
fn ext(head: &[u8]) -> Option<FsId> {
    const SB: usize = 1024;
    const HAS_JOURNAL: u32 = 0x4; // compat
    const JOURNAL_DEV: u32 = 0x8; // incompat: an external journal, not a file system
    const EXT2_INCOMPAT: u32 = 0x2 | 0x10; // filetype, meta_bg
    const EXT3_INCOMPAT: u32 = EXT2_INCOMPAT | 0x4; // + recover
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir (same for ext2)
    if le16(head, SB + 56)? != 0xef53 {
        return None;
    }
    let (compat, incompat, ro_compat) = (le32(head, SB + 92)?, le32(head, SB + 96)?, le32(head, SB + 100)?);
    let beyond_ext3 = incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0;
    let kind = if incompat & JOURNAL_DEV != 0 {
        return None;
    } else if beyond_ext3 {
        FsKind::Ext4
    } else if compat & HAS_JOURNAL != 0 {
        FsKind::Ext3
    } else if incompat & !EXT2_INCOMPAT == 0 {
        FsKind::Ext2
    } else {
        // Only "needs recovery" without a journal: no blkid prober claims it.
        return None;
    };
    Some(fs_id(kind, uuid_at(head, SB + 104)?, label_at(head, SB + 120, 16)?))
}

/// XFS: big-endian superblock at 0, checked like blkid does so "XFSB" alone is not enough.
fn xfs(head: &[u8]) -> Option<FsId> {
    if bytes(head, 0, 4)? != b"XFSB" {
        return None;
    }
    let block_size = be32(head, 4)?;
    let sector_size = u32::from(u16::from_be_bytes(array(head, 102)?));
    let (block_log, sector_log) = (*head.get(120)?, *head.get(121)?);
    let sane = (9..=16).contains(&block_log)
        && block_size == 1 << block_log
        && (9..=15).contains(&sector_log)
        && sector_size == 1 << sector_log
        && be32(head, 88)? > 0 // AG count
        && array::<8>(head, 8)? != [0; 8]; // data blocks
    if !sane {
        return None;
    }
    Some(fs_id(FsKind::Xfs, uuid_at(head, 32)?, label_at(head, 108, 12)?))
}

/// btrfs: primary superblock at 64 KiB.
fn btrfs(head: &[u8]) -> Option<FsId> {
    const SB: usize = 64 << 10;
    if bytes(head, SB + 0x40, 8)? != b"_BHRfS_M" {
        return None;
    }
    Some(fs_id(
        FsKind::Btrfs,
        uuid_at(head, SB + 0x20)?,
        label_at(head, SB + 0x12b, 256)?,
    ))
}

/// ISO 9660: blkid makes the UUID from the primary volume descriptor's modification
/// date, or its creation date if that is unset, as `YYYY-MM-DD-HH-MM-SS-cc`.
fn iso9660(head: &[u8]) -> Option<FsId> {
    const PVD: usize = 32 << 10;
    const SECTOR: usize = 2048;
    // blkid checks only the magic, not the descriptor type.
    if bytes(head, PVD + 1, 5)? != b"CD001" {
        return None;
    }
    let date_uuid = |off: usize| -> Option<Option<String>> {
        let d = bytes(head, PVD + off, 17)?;
        // ECMA-119 8.4.26.1: all digits '0' and a zero offset mean "not specified".
        if d.get(..16)?.iter().all(|&b| b == b'0') && d.get(16) == Some(&0) {
            return Some(None);
        }
        let mut text = Vec::with_capacity(22);
        for (i, &b) in d.get(..16)?.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10 | 12 | 14) {
                text.push(b'-');
            }
            text.push(b);
        }
        Some(Some(String::from_utf8_lossy(&text).into_owned()))
    };
    let uuid = match date_uuid(830)? {
        Some(uuid) => uuid,
        None => date_uuid(813)?.unwrap_or_default(),
    };
    let pvd_label = bytes(head, PVD + 40, 32)?;
    // Joliet: a supplementary descriptor whose UCS-2 label is used when it differs
    // from the PVD's (which may be an upper-cased, shortened copy).
    let mut label = None;
    for n in 1..=16 {
        let Some(vd) = bytes(head, PVD + n * SECTOR, SECTOR) else {
            break;
        };
        match vd.first() {
            Some(0xff) | None => break,
            Some(2) if matches!(vd.get(88..91), Some(b"%/@" | b"%/C" | b"%/E")) => {
                let joliet = vd.get(40..72)?;
                let same = joliet.chunks(2).zip(pvd_label).all(|(c, &a)| c == [0, a]);
                if !same {
                    let units = joliet
                        .chunks_exact(2)
                        .map(|c| c.iter().fold(0u16, |u, &b| u << 8 | u16::from(b)));
                    let chars = char::decode_utf16(units.take_while(|&u| u != 0));
                    label = Some(
                        chars
                            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                            .collect::<String>(),
                    );
                }
                break;
            }
            Some(_) => {}
        }
    }
    let label = match label {
        Some(l) => l
            .trim_end_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}')
            .to_owned(),
        None => label_at(head, PVD + 40, 32)?,
    };
    Some(fs_id(FsKind::Iso9660, uuid, label))
}

/// Linux swap: the signature ends the first page, whatever the page size was.
fn swap(head: &[u8]) -> Option<FsId> {
    const HDR: usize = 1024;
    // TuxOnIce keeps a swap signature too; blkid ignores those.
    if bytes(head, 0, 8)? == b"\xed\xc3\x02\xe9\x98\x56\xe5\x0c" {
        return None;
    }
    let magic = [4096, 8192, 16384, 32768, 65536].into_iter().find_map(|page: usize| {
        let m = bytes(head, page - 10, 10)?;
        (m == b"SWAPSPACE2" || m == b"SWAP-SPACE").then_some(m)
    })?;
    if magic == b"SWAP-SPACE" {
        return Some(fs_id(FsKind::Swap, String::new(), String::new())); // v0: no UUID, no label
    }
    let version = le32(head, HDR)?;
    if (version != 1 && version.swap_bytes() != 1) || le32(head, HDR + 4)? == 0 {
        return None;
    }
    // blkid's sanity check: garbage in the padding means UUID and label are not real.
    if array::<8>(head, HDR + 44 + 128)? != [0; 8] {
        return Some(fs_id(FsKind::Swap, String::new(), String::new()));
    }
    Some(fs_id(
        FsKind::Swap,
        uuid_at(head, HDR + 12)?,
        label_at(head, HDR + 28, 16)?,
    ))
}

/// FAT12/16/32. The label comes from the root directory's volume-label entry when that
/// lies within `head` (as blkid prefers), else from the boot sector; "NO NAME" is none.
fn vfat(head: &[u8]) -> Option<FsId> {
    const NO_NAME: &[u8] = b"NO NAME    ";
    let strong_magic = [
        (0x52, &b"MSWIN"[..]),
        (0x52, b"FAT32   "),
        (0x36, b"MSDOS"),
        (0x36, b"FAT1"),
        (0x36, b"FAT     "),
    ]
    .iter()
    .any(|&(off, m)| bytes(head, off, m.len()) == Some(m));
    let boot_signature = bytes(head, 510, 2)? == [0x55, 0xaa];
    let os2_pseudo = matches!(bytes(head, 0x36, 8)?, b"JFS     " | b"HPFS    ");
    if !strong_magic && (!boot_signature || os2_pseudo) {
        return None;
    }
    // All arithmetic in u64: each term is at most a u32 times a u16, so none overflows.
    let sector = u64::from(le16(head, 11)?);
    let cluster = u64::from(*head.get(13)?);
    let reserved = u64::from(le16(head, 14)?);
    let fats = u64::from(*head.get(16)?);
    let root_entries = u64::from(le16(head, 17)?);
    let media = *head.get(21)?;
    let fat16_len = u64::from(le16(head, 22)?);
    let fat32_len = u64::from(le32(head, 36)?);
    let sectors = match le16(head, 19)? {
        0 => u64::from(le32(head, 32)?),
        n => u64::from(n),
    };
    if fats == 0 || reserved == 0 || !(media == 0xf0 || media >= 0xf8) || !cluster.is_power_of_two() {
        return None;
    }
    if !sector.is_power_of_two() || !(512..=4096).contains(&sector) {
        return None;
    }
    let fat32 = fat16_len == 0 && fat32_len != 0;
    let fat_sectors = if fat32 { fat32_len } else { fat16_len } * fats;
    let root_sectors = (root_entries * 32).div_ceil(sector);
    let clusters = sectors.saturating_sub(reserved + fat_sectors + root_sectors) / cluster;
    let max_clusters = if fat32 {
        0x0fff_fff6
    } else if clusters > 0xff4 {
        0xfff4
    } else {
        0xff4
    };
    if clusters > max_clusters {
        return None;
    }
    let offset = |sectors: u64| usize::try_from(sectors * sector).ok();
    let (serial_at, label_off, root_dir, root_len) = if fat32 {
        // FAT32 keeps an FSInfo sector; blkid refuses one with a wrong signature.
        let fsinfo = offset(u64::from(le16(head, 48)?))?;
        if fsinfo != 0 && head.len() > fsinfo {
            let sig1 = bytes(head, fsinfo, 4)?;
            let sig2 = bytes(head, fsinfo + 484, 4)?;
            if !matches!(sig1, b"RRaA" | b"RRdA" | [0, 0, 0, 0]) || !matches!(sig2, b"rrAa" | [0, 0, 0, 0]) {
                return None;
            }
        }
        // The first cluster of the root directory; blkid follows the chain, we do not.
        let root_cluster = u64::from(le32(head, 44)?).checked_sub(2)?;
        let root_dir = offset(reserved + fat_sectors + root_cluster * cluster)?;
        (0x43, 0x47, root_dir, offset(cluster)?)
    } else {
        let root_len = usize::try_from(root_entries * 32).ok()?;
        (0x27, 0x2b, offset(reserved + fat_sectors)?, root_len)
    };
    // As much of the root directory as `head` holds.
    let root = head.get(root_dir..).map(|dir| dir.get(..root_len).unwrap_or(dir));
    let root_label = root.and_then(fat_volume_label);
    let label = match root_label.filter(|&l| l != NO_NAME) {
        Some(l) => l,
        None => bytes(head, label_off, 11)?,
    };
    let label = if label == NO_NAME {
        String::new()
    } else {
        label_at(label, 0, 11)?
    };
    let [s0, s1, s2, s3]: [u8; 4] = array(head, serial_at)?;
    Some(fs_id(FsKind::Vfat, format!("{s3:02X}{s2:02X}-{s1:02X}{s0:02X}"), label))
}

/// The volume-label entry of a FAT directory, as blkid finds it.
fn fat_volume_label(dir: &[u8]) -> Option<&[u8]> {
    for entry in dir.chunks_exact(32) {
        let (first, attr) = (*entry.first()?, *entry.get(11)?);
        if first == 0 {
            break; // end of directory
        }
        let cluster_hi_lo = [entry.get(20..22)?, entry.get(26..28)?];
        if first == 0xe5 || cluster_hi_lo != [[0, 0], [0, 0]] || attr & 0x3f == 0x0f {
            continue; // deleted, a file, or a long-name slot
        }
        if attr & 0x18 == 0x08 {
            return entry.get(..11); // volume id, not a directory
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;
    use std::process::Command;

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn blkid(path: &Path, tag: &str) -> String {
        let out = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", tag])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_owned()
    }

    fn head(path: &Path) -> Vec<u8> {
        let mut data = std::fs::read(path).unwrap();
        data.truncate(PROBE_BYTES);
        data
    }

    /// Make an empty (sparse) file of `size` bytes, run `mkfs` on it, and compare
    /// `identify` against blkid on the same file.
    fn check(name: &str, size: u64, mkfs: &str, kind: FsKind, label: &str) -> (Vec<u8>, FsId) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        let mut args = mkfs.split_whitespace();
        run(Command::new(args.next().unwrap()).args(args).arg(&path));
        let head = head(&path);
        let id = identify(&head).unwrap_or_else(|| panic!("{name}: not identified"));
        let want = |tag| blkid(&path, tag);
        assert_eq!(
            serde_json::to_value(id.kind).unwrap(),
            want("TYPE").as_str(),
            "{name}: TYPE"
        );
        assert_eq!(id.kind, kind, "{name}");
        assert_eq!(id.uuid, want("UUID"), "{name}: UUID");
        assert!(!id.uuid.is_empty(), "{name}: a fresh file system has a UUID");
        assert_eq!(id.label, want("LABEL"), "{name}: LABEL");
        assert_eq!(id.label, label, "{name}");
        (head, id)
    }

    #[test]
    fn ext_family() {
        // blkid names by features, not by the type mke2fs was asked for.
        let cases = [
            ("ext2", "mke2fs -q -F -t ext2 -L lbl", FsKind::Ext2, "lbl"),
            ("ext3", "mke2fs -q -F -t ext3 -L lbl", FsKind::Ext3, "lbl"),
            ("ext4", "mke2fs -q -F -t ext4 -L lbl", FsKind::Ext4, "lbl"),
            ("ext2-extents", "mke2fs -q -F -t ext2 -O extent -L x", FsKind::Ext4, "x"),
            (
                "ext4-nojournal",
                "mke2fs -q -F -t ext4 -O ^has_journal",
                FsKind::Ext4,
                "",
            ),
            (
                "ext3-nojournal",
                "mke2fs -q -F -t ext3 -O ^has_journal",
                FsKind::Ext2,
                "",
            ),
        ];
        for (name, mkfs, kind, label) in cases {
            check(name, 64 << 20, mkfs, kind, label);
        }
    }

    #[test]
    fn xfs() {
        check("xfs", 300 << 20, "mkfs.xfs -q -f -L lbl", FsKind::Xfs, "lbl");
    }

    #[test]
    fn vfat_12_16_32() {
        check("fat16", 64 << 20, "mkfs.vfat -F 16 -n LBL", FsKind::Vfat, "LBL");
        check("fat32", 64 << 20, "mkfs.vfat -F 32 -n LBL32", FsKind::Vfat, "LBL32");
        check("nolabel", 64 << 20, "mkfs.vfat -F 32", FsKind::Vfat, "");
        let (head, _) = check("fat12", 2 << 20, "mkfs.vfat -n config-2", FsKind::Vfat, "config-2");
        // The root-directory label wins over the boot sector's, as in blkid.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fat12-rootlabel");
        let mut image = head;
        image.get_mut(0x2b..0x36).unwrap().copy_from_slice(b"BOOTSECTOR ");
        std::fs::write(&path, &image).unwrap();
        let id = identify(&image).unwrap();
        assert_eq!(
            (id.label.as_str(), blkid(&path, "LABEL").as_str()),
            ("config-2", "config-2")
        );
    }

    #[test]
    fn swap() {
        check("swap", 16 << 20, "mkswap -q -L swap1", FsKind::Swap, "swap1");
    }

    #[test]
    fn iso9660() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/meta_data.json"), b"{}").unwrap();
        // "café ü" differs between the PVD (raw bytes) and Joliet (UCS-2): blkid takes Joliet's.
        let cases = [
            (false, "config-2"),
            (true, "config-2"),
            (true, "a-label-longer-than-sixteen"),
            (true, "café ü"),
        ];
        for (joliet, label) in cases {
            let path = dir.path().join(format!("{joliet}-{label}.iso"));
            let mut cmd = Command::new("genisoimage");
            cmd.args(["-quiet", "-r", "-input-charset", "utf-8", "-V", label]);
            if joliet {
                cmd.arg("-J");
            }
            cmd.arg("-o").arg(&path).arg(dir.path().join("src"));
            run(&mut cmd);
            let id = identify(&head(&path)).unwrap();
            assert_eq!(id.kind, FsKind::Iso9660);
            assert_eq!(id.uuid, blkid(&path, "UUID"), "{label}");
            assert_eq!(id.uuid.len(), "2024-01-02-03-04-05-06".len(), "{}", id.uuid);
            assert_eq!(id.label, blkid(&path, "LABEL"), "{label}");
            assert_eq!(id.label, label);
            assert_eq!(blkid(&path, "TYPE"), "iso9660");
        }
    }

    #[test]
    fn iso9660_uuid_falls_back_to_the_creation_date() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let path = dir.path().join("dates.iso");
        run(Command::new("genisoimage")
            .args(["-quiet", "-V", "x", "-o"])
            .arg(&path)
            .arg(dir.path().join("src")));
        let mut head = head(&path);
        let pvd = 32 << 10;
        head[pvd + 813..pvd + 829].copy_from_slice(b"2001020304050607"); // created
        for (modified, want) in [
            (b"2011121314151617", "2011-12-13-14-15-16-17"),
            (b"0000000000000000", "2001-02-03-04-05-06-07"),
        ] {
            head[pvd + 830..pvd + 846].copy_from_slice(modified);
            head[pvd + 846] = 0;
            std::fs::write(&path, &head).unwrap();
            assert_eq!(blkid(&path, "UUID"), want);
            assert_eq!(identify(&head).unwrap().uuid, want);
        }
    }

    #[test]
    fn btrfs_if_available() {
        if Command::new("mkfs.btrfs").arg("--version").output().is_err() {
            println!("note: mkfs.btrfs is not installed; btrfs is not compared against blkid");
            return;
        }
        check("btrfs", 300 << 20, "mkfs.btrfs -q -f -L lbl", FsKind::Btrfs, "lbl");
    }

    #[test]
    fn btrfs_by_hand() {
        let mut head = vec![0xa5; PROBE_BYTES];
        let sb = 64 << 10;
        head[sb + 0x40..sb + 0x48].copy_from_slice(b"_BHRfS_M");
        head[sb + 0x20..sb + 0x30]
            .copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8]);
        head[sb + 0x12b..sb + 0x12b + 5].copy_from_slice(b"root\0");
        let id = identify(&head).unwrap();
        assert_eq!(
            id,
            FsId {
                kind: FsKind::Btrfs,
                uuid: "12345678-9abc-def0-0102-030405060708".into(),
                label: "root".into()
            }
        );
        assert_eq!(identify(&head[..sb + 0x40]), None);
    }

    #[test]
    fn unknown_and_truncated() {
        assert_eq!(identify(&[]), None);
        assert_eq!(identify(&vec![0; PROBE_BYTES]), None);
        let (head, id) = check("trunc", 64 << 20, "mke2fs -q -F -t ext4", FsKind::Ext4, "");
        assert_eq!(identify(&head[..1024 + 56]), None);
        assert_eq!(identify(&head[..2048]), Some(id));
    }

    proptest! {
        #[test]
        fn never_panics(mut head in proptest::collection::vec(any::<u8>(), 0..PROBE_BYTES), magics in any::<u8>(), cut in any::<usize>()) {
            // Plant magics so the parsers get past their first check.
            let plant: [(usize, &[u8]); 7] = [
                (1024 + 56, b"\x53\xef"), (0, b"XFSB"), ((64 << 10) + 0x40, b"_BHRfS_M"), (32769, b"CD001"),
                (4086, b"SWAPSPACE2"), (0x36, b"FAT16   "), (510, b"\x55\xaa"),
            ];
            for (i, (off, magic)) in plant.iter().enumerate() {
                if magics & (1 << i) != 0 && head.len() >= off + magic.len() {
                    head[*off..off + magic.len()].copy_from_slice(magic);
                }
            }
            let _ = identify(&head);
            let _ = identify(&head[..cut % (head.len() + 1)]);
        }
    }
}

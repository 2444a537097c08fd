//! Checking a qcow2 header before imago sees it.
//!
//! imago decodes the clusters, but it reads past the end of a file as zeroes and does not look
//! at the encryption field, so on its own a truncated download or an encrypted image would be
//! written to the disk as zeroes or ciphertext without a word. This module reads the header
//! (qcow2 spec, `docs/interop/qcow2.txt` in QEMU) and refuses what would go wrong, with a
//! message saying what to do; it also gives the backing file's name and format, so the chain
//! is opened by us, one named file at a time.

use std::path::Path;

use super::access::{RandomAccess, be32, be64};
use super::error::SourceError;

/// Header field offsets (all big-endian).
mod field {
    pub(super) const VERSION: usize = 4;
    pub(super) const BACKING_FILE_OFFSET: usize = 8;
    pub(super) const BACKING_FILE_SIZE: usize = 16;
    pub(super) const CLUSTER_BITS: usize = 20;
    pub(super) const SIZE: usize = 24;
    pub(super) const CRYPT_METHOD: usize = 32;
    pub(super) const L1_SIZE: usize = 36;
    pub(super) const L1_TABLE_OFFSET: usize = 40;
    /// End of the version 2 header.
    pub(super) const V2_END: usize = 72;
    pub(super) const INCOMPATIBLE_FEATURES: usize = 72;
    pub(super) const HEADER_LENGTH: usize = 100;
    /// End of the fixed version 3 header.
    pub(super) const V3_END: usize = 104;
    pub(super) const COMPRESSION_TYPE: usize = 104;
}

/// Incompatible feature bits.
mod incompatible {
    pub(super) const DIRTY: u64 = 1 << 0;
    pub(super) const CORRUPT: u64 = 1 << 1;
    pub(super) const EXTERNAL_DATA_FILE: u64 = 1 << 2;
    pub(super) const COMPRESSION_TYPE: u64 = 1 << 3;
    pub(super) const EXTENDED_L2: u64 = 1 << 4;
}

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// "implementation limit of 32 MB as the maximum L1 table size" (QEMU's own limit).
const MAX_L1_ENTRIES: u32 = 32 * 1024 * 1024 / 8;
/// Offset bits of an L1 entry (bits 9-55).
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// What we need from a qcow2 header.
#[derive(Debug)]
pub(crate) struct Qcow2Header {
    pub(crate) size: u64,
    pub(crate) cluster_bits: u32,
    pub(crate) l1_size: u32,
    pub(crate) l1_table_offset: u64,
    pub(crate) backing_file: Option<String>,
    pub(crate) backing_format: Option<String>,
    /// Compressed clusters are zstd frames (`compression_type=zstd`), not raw deflate.
    pub(crate) zstd: bool,
}

/// Read and check the header of the qcow2 file `image`.
pub(crate) fn read_header(image: &mut dyn RandomAccess) -> Result<Qcow2Header, SourceError> {
    let path = &image.path().to_path_buf();
    let corrupt = |detail: String| SourceError::corrupt(path, detail);
    let mut fixed = [0u8; field::V3_END + 8];
    let got = image.read_up_to(0, &mut fixed)?;
    if got < field::V2_END {
        return Err(corrupt(format!(
            "the header is truncated (the file has only {got} bytes)"
        )));
    }
    let version = be32(&fixed, field::VERSION);
    if version != 2 && version != 3 {
        return Err(SourceError::Qcow2Unsupported {
            path: path.clone(),
            feature: format!("format version {version}"),
        });
    }
    let cluster_bits = be32(&fixed, field::CLUSTER_BITS);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(format!(
            "cluster size 2^{cluster_bits} is out of range (2^9 to 2^21)"
        )));
    }
    let cluster_size = 1usize << cluster_bits;

    // The header, its extensions and the backing file name all lie in the first cluster.
    let mut head = vec![0u8; cluster_size];
    let got = image.read_up_to(0, &mut head)?;
    head.truncate(got);

    let header_length = if version == 2 {
        field::V2_END
    } else {
        let length = be32(&head, field::HEADER_LENGTH) as usize;
        if got < field::V3_END || length < field::V3_END || length > got {
            return Err(corrupt(format!(
                "the version 3 header is truncated or its length ({length}) is invalid"
            )));
        }
        length
    };
    let incompatible = if version == 3 {
        be64(&head, field::INCOMPATIBLE_FEATURES)
    } else {
        0
    };
    let zstd = check_features(path, incompatible, &head, header_length)?;

    match be32(&head, field::CRYPT_METHOD) {
        0 => {}
        1 => {
            return Err(SourceError::Qcow2Encrypted {
                path: path.clone(),
                method: "AES",
            });
        }
        2 => {
            return Err(SourceError::Qcow2Encrypted {
                path: path.clone(),
                method: "LUKS",
            });
        }
        other => return Err(corrupt(format!("unknown encryption method {other}"))),
    }

    let header = Qcow2Header {
        size: be64(&head, field::SIZE),
        cluster_bits,
        l1_size: be32(&head, field::L1_SIZE),
        l1_table_offset: be64(&head, field::L1_TABLE_OFFSET),
        backing_file: backing_file_name(path, &head)?,
        backing_format: backing_format(path, &head, header_length)?,
        zstd,
    };
    check_l1(image, &header)?;
    Ok(header)
}

/// Refuse incompatible features we cannot (or must not) read through; true for zstd clusters.
fn check_features(path: &Path, bits: u64, head: &[u8], header_length: usize) -> Result<bool, SourceError> {
    let path = path.to_path_buf();
    let unsupported = |feature: &str| {
        Err(SourceError::Qcow2Unsupported {
            path: path.clone(),
            feature: feature.into(),
        })
    };
    if bits & incompatible::CORRUPT != 0 {
        return Err(SourceError::corrupt(
            &path,
            "QEMU has marked it corrupt (incompatible feature bit 1)",
        ));
    }
    if bits & incompatible::DIRTY != 0 {
        return Err(SourceError::corrupt(
            &path,
            "it was not closed cleanly (dirty bit set); `qemu-img check -r all` repairs it",
        ));
    }
    if bits & incompatible::EXTERNAL_DATA_FILE != 0 {
        return Err(SourceError::Qcow2ExternalData { path });
    }
    if bits & incompatible::EXTENDED_L2 != 0 {
        return unsupported("extended L2 entries (subclusters)");
    }
    let known = incompatible::DIRTY
        | incompatible::CORRUPT
        | incompatible::EXTERNAL_DATA_FILE
        | incompatible::COMPRESSION_TYPE
        | incompatible::EXTENDED_L2;
    if bits & !known != 0 {
        return unsupported(&format!("unknown incompatible features (bits {bits:#x})"));
    }
    if bits & incompatible::COMPRESSION_TYPE == 0 {
        return Ok(false);
    }
    let kind = if header_length > field::COMPRESSION_TYPE {
        head.get(field::COMPRESSION_TYPE)
    } else {
        None
    };
    match kind {
        // "0: zlib <https://www.zlib.net/>", "1: zstd <http://github.com/facebook/zstd>"
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(other) => unsupported(&format!("compression type {other}")),
        None => Err(SourceError::corrupt(
            &path,
            "the compression type bit is set but the field is missing",
        )),
    }
}

/// The backing file name, if the image has one.
fn backing_file_name(path: &Path, head: &[u8]) -> Result<Option<String>, SourceError> {
    let offset = be64(head, field::BACKING_FILE_OFFSET);
    if offset == 0 {
        return Ok(None);
    }
    let size = be32(head, field::BACKING_FILE_SIZE);
    let range = usize::try_from(offset)
        .ok()
        .and_then(|start| Some(start..start.checked_add(size as usize)?));
    let name = range.filter(|_| size <= 1023).and_then(|r| head.get(r));
    let name = name.ok_or_else(|| {
        SourceError::corrupt(
            path,
            format!("the backing file name ({size} bytes at {offset}) is outside the header"),
        )
    })?;
    String::from_utf8(name.to_vec())
        .map(Some)
        .map_err(|_| SourceError::corrupt(path, "the backing file name is not UTF-8"))
}

/// The backing format from the header extensions (`None` if not recorded).
fn backing_format(path: &Path, head: &[u8], header_length: usize) -> Result<Option<String>, SourceError> {
    let mut at = header_length;
    loop {
        let Some(ext) = head.get(at..at + 8) else {
            // Extensions may end at the end of the file without an end marker (tiny file).
            return Ok(None);
        };
        let (kind, len) = (be32(ext, 0), be32(ext, 4) as usize);
        let data = head.get(at + 8..at + 8 + len).ok_or_else(|| {
            SourceError::corrupt(path, format!("header extension {kind:#x} runs past the first cluster"))
        })?;
        match kind {
            EXT_END => return Ok(None),
            EXT_BACKING_FORMAT => {
                let name = String::from_utf8(data.to_vec())
                    .map_err(|_| SourceError::corrupt(path, "the backing format name is not UTF-8"))?;
                return Ok(Some(name));
            }
            _ => at += 8 + len.next_multiple_of(8),
        }
    }
}

/// Check that the L1 table, and every L2 table it points to, lies inside the file.
fn check_l1(image: &mut dyn RandomAccess, header: &Qcow2Header) -> Result<(), SourceError> {
    let path = image.path().to_path_buf();
    let corrupt = |detail: String| Err(SourceError::corrupt(&path, detail));
    let cluster_size = 1u64 << header.cluster_bits;
    let (l1_size, l1_offset, file_size) = (header.l1_size, header.l1_table_offset, image.size());
    // Each L2 table maps cluster_size / 8 clusters.
    let l2_span = 1u128 << (2 * header.cluster_bits - 3);
    if u128::from(l1_size) * l2_span < u128::from(header.size) {
        return corrupt(format!(
            "the L1 table ({l1_size} entries) is too small for the virtual size {}",
            header.size
        ));
    }
    if l1_size > MAX_L1_ENTRIES {
        return corrupt(format!(
            "the L1 table has {l1_size} entries (at most {MAX_L1_ENTRIES} are allowed)"
        ));
    }
    if l1_size > 0 && !l1_offset.is_multiple_of(cluster_size) {
        return corrupt(format!("the L1 table offset {l1_offset} is not cluster-aligned"));
    }
    let l1_end = l1_offset.checked_add(u64::from(l1_size) * 8);
    if l1_size > 0 && l1_end.is_none_or(|end| end > file_size) {
        return corrupt(format!(
            "the L1 table at offset {l1_offset} ({l1_size} entries) lies beyond the end of the file \
             ({file_size} bytes): the image is truncated or corrupt"
        ));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut index = 0u64;
    while index < u64::from(l1_size) {
        let at = l1_offset + index * 8;
        let want = (u64::from(l1_size) - index).min(buf.len() as u64 / 8) as usize * 8;
        let got = image.read_up_to(at, &mut buf[..want])?;
        if got < want {
            image.check_unchanged()?;
            return corrupt(format!("the L1 table at {l1_offset} could not be read whole"));
        }
        for entry in buf[..want].chunks_exact(8) {
            let l2 = be64(entry, 0) & L1_OFFSET_MASK;
            if l2 != 0 && (!l2.is_multiple_of(cluster_size) || l2.saturating_add(cluster_size) > file_size) {
                let guest = u128::from(index) * l2_span;
                return corrupt(format!(
                    "the L2 table for guest offset {guest} is at {l2}, which is unaligned or beyond the end \
                     of the file ({file_size} bytes): the image is truncated or corrupt"
                ));
            }
            index += 1;
        }
    }
    Ok(())
}

//! Corrupt and hostile qcow2 files give a `SourceError`, never a panic or a silent zero disk.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::super::{FormatChoice, OpenOptions, SourceError, open};
use super::{qemu_io, run};

/// A small v3 image with data in a few places, a compressed image, and a v2 image.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        run(
            d,
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=4096",
                "v3.qcow2",
                "1M",
            ],
        );
        qemu_io(
            d,
            "v3.qcow2",
            &["write -P 0x61 0 8k", "write -z 64k 64k", "write -P 0x62 900k 4k"],
        );
        std::fs::write(d.join("in.raw"), super::pattern(200_000, 4)).expect("write");
        run(
            d,
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=4096",
                "in.raw",
                "c.qcow2",
            ],
        );
        run(
            d,
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "compat=0.10,cluster_size=4096",
                "v2.qcow2",
                "1M",
            ],
        );
        qemu_io(d, "v2.qcow2", &["write -P 0x63 12k 8k"]);
        ["v3.qcow2", "c.qcow2", "v2.qcow2"]
            .iter()
            .map(|f| std::fs::read(d.join(f)).expect("read"))
            .collect()
    })
}

/// Open `bytes` as an image and read it (boundedly); Ok(()) if it read to the end.
fn read_all(dir: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    let path = dir.join("fuzz.qcow2");
    std::fs::write(&path, bytes).expect("write");
    let mut source = open(
        &path,
        &OpenOptions {
            format: FormatChoice::Auto,
            zero_granularity: 4096,
            ..OpenOptions::default()
        },
    )?;
    let mut read = 0u64;
    for _ in 0..10_000 {
        match source.next_chunk(1 << 20)? {
            None => return Ok(()),
            Some(chunk) => read += chunk.len(),
        }
        if read > 1 << 30 {
            break;
        }
    }
    Ok(())
}

fn corrupt_message(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = read_all(dir.path(), bytes).expect_err("corrupt image accepted");
    assert!(matches!(err, SourceError::Qcow2Corrupt { .. }), "{err}");
    err.to_string()
}

fn put_be64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn seeds_are_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seed in seeds() {
        read_all(dir.path(), seed).expect("seed image reads");
    }
}

#[test]
fn truncated_header() {
    let seed = &seeds()[0];
    for len in [4, 20, 71, 100] {
        let message = corrupt_message(&seed[..len]);
        assert!(message.contains("truncated"), "{len}: {message}");
    }
}

#[test]
fn l1_table_beyond_end_of_file() {
    let mut bytes = seeds()[0].clone();
    let beyond = (bytes.len() as u64).next_multiple_of(4096) + (1 << 20);
    put_be64(&mut bytes, 40, beyond);
    let message = corrupt_message(&bytes);
    assert!(
        message.contains("L1 table") && message.contains("beyond the end"),
        "{message}"
    );
}

#[test]
fn truncated_image_is_not_read_as_zeroes() {
    for (i, seed) in seeds().iter().enumerate() {
        // Cut the file in the middle of its last cluster.
        let message = corrupt_message(&seed[..seed.len() - 3000]);
        let compressed = i == 1;
        assert!(
            message.contains("truncated") || compressed && message.contains("decompress"),
            "{message}"
        );
    }
}

#[test]
fn dirty_and_corrupt_bits() {
    let mut bytes = seeds()[0].clone();
    bytes[79] |= 1;
    assert!(corrupt_message(&bytes).contains("qemu-img check -r all"));
    bytes[79] = 2;
    assert!(corrupt_message(&bytes).contains("marked it corrupt"));
}

#[test]
fn unknown_version_and_bad_cluster_bits() {
    let mut bytes = seeds()[0].clone();
    bytes[7] = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let err = read_all(dir.path(), &bytes).expect_err("v4");
    assert!(
        matches!(err, SourceError::Qcow2Unsupported { .. }) && err.to_string().contains("version 4"),
        "{err}"
    );
    let mut bytes = seeds()[0].clone();
    bytes[23] = 40;
    assert!(corrupt_message(&bytes).contains("cluster size"));
}

/// Header fields worth aiming at: version, backing offset/size, cluster bits, size, crypt,
/// L1 size/offset, refcount table, snapshots, features, refcount order, header length.
const FIELDS: [(usize, usize); 15] = [
    (4, 4),
    (8, 8),
    (16, 4),
    (20, 4),
    (24, 8),
    (32, 4),
    (36, 4),
    (40, 8),
    (48, 8),
    (56, 4),
    (60, 4),
    (64, 8),
    (72, 8),
    (96, 4),
    (100, 4),
];

/// Byte offsets of every L1 and L2 table entry of a seed image (4 KiB clusters).
fn table_entries(image: &[u8]) -> Vec<usize> {
    let be64 = |at: usize| u64::from_be_bytes(image[at..at + 8].try_into().expect("8 bytes"));
    let l1_size = u32::from_be_bytes(image[36..40].try_into().expect("4 bytes")) as usize;
    let l1 = be64(40) as usize;
    let mut entries: Vec<usize> = (0..l1_size).map(|i| l1 + 8 * i).collect();
    for i in 0..l1_size {
        let l2 = (be64(l1 + 8 * i) & 0x00ff_ffff_ffff_fe00) as usize;
        if l2 != 0 {
            entries.extend((0..512).map(|j| l2 + 8 * j));
        }
    }
    entries
}

/// An L1/L2 entry value: flags (copied, compressed, zero) with offsets in and out of the file.
fn table_entry() -> impl Strategy<Value = u64> {
    let flags = prop_oneof![
        Just(0u64),
        Just(1 << 63),
        Just(1 << 62),
        Just(1),
        Just(3 << 62),
        Just((1 << 63) | 1)
    ];
    let offset = interesting().prop_map(|v| v & 0x00ff_ffff_ffff_fe00);
    prop_oneof![(flags, offset).prop_map(|(f, v)| f | v), interesting()]
}

fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0),
        Just(u64::MAX),
        (0u32..64).prop_map(|b| 1u64 << b),
        (0u64..0x3_0000).prop_map(|v| v & !0xfff),
        0u64..64,
    ]
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated headers, metadata bytes and lengths of real images: an error or a full read.
    #[test]
    fn mutated_images_never_panic(
        seed in 0usize..3,
        fields in prop::collection::vec((0usize..FIELDS.len(), interesting()), 0..4),
        bytes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..24),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut image = seeds()[seed].clone();
        for (field, value) in fields {
            let (at, width) = FIELDS[field];
            image[at..at + width].copy_from_slice(&value.to_be_bytes()[8 - width..]);
        }
        for (index, byte) in bytes {
            let i = index.index(image.len());
            image[i] = byte;
        }
        if let Some(cut) = cut {
            image.truncate(cut.index(image.len()));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = read_all(dir.path(), &image);
    }

    /// L1 and L2 entries rewritten with any flags and offsets: what imago's mapping code sees.
    #[test]
    fn mutated_tables_never_panic(
        seed in 0usize..3,
        writes in prop::collection::vec((any::<prop::sample::Index>(), table_entry()), 1..6),
    ) {
        let mut image = seeds()[seed].clone();
        let entries = table_entries(&image);
        for (index, value) in writes {
            let at = entries[index.index(entries.len())];
            image[at..at + 8].copy_from_slice(&value.to_be_bytes());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = read_all(dir.path(), &image);
    }

    /// Random bytes behind the qcow2 magic and a plausible version.
    #[test]
    fn garbage_with_qcow2_magic_never_panics(
        version in 2u32..4,
        cluster_bits in 9u32..17,
        rest in prop::collection::vec(any::<u8>(), 0..20_000),
    ) {
        let mut image = b"QFI\xfb".to_vec();
        image.extend_from_slice(&version.to_be_bytes());
        image.extend_from_slice(&rest);
        if image.len() >= 24 {
            image[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = read_all(dir.path(), &image);
    }
}

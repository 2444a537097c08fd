//! Raw files: sparse, dense, odd-sized, empty, without SEEK_DATA, on a block device.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use super::super::detect::ImageFile;
use super::super::raw::RawSource;
use super::super::{Chunk, Format, FormatChoice, OpenOptions, Source, SourceError, open, open_with};
use super::{check_pass, pattern, reference};

const MIB: u64 = 1 << 20;

fn options(granule: u32) -> OpenOptions {
    OpenOptions {
        format: FormatChoice::Auto,
        zero_granularity: granule,
        ..OpenOptions::default()
    }
}

/// 10 MiB + 1234 bytes: holes, explicit zero blocks, data at odd places, a data tail.
fn sparse_file(path: &Path) -> u64 {
    let size = 10 * MIB + 1234;
    let file = File::create(path).expect("create");
    file.set_len(size).expect("set_len");
    let writes: [(u64, Vec<u8>); 6] = [
        (0, pattern(4096, 1)),                  // boot sector area
        (MIB, vec![0u8; 256 * 1024]),           // written zeroes: allocated, must become Zero
        (MIB + 256 * 1024, pattern(70_000, 2)), // data ending mid-granule
        (3 * MIB + 100, pattern(10, 3)),        // a few bytes in the middle of a hole
        (5 * MIB, pattern(300_000, 4)),         // data then written zeroes inside one extent
        (size - 700, pattern(700, 5)),          // data up to the odd end
    ];
    for (at, bytes) in &writes {
        file.write_all_at(bytes, *at).expect("write");
    }
    file.write_all_at(&vec![0u8; 64 * 1024], 5 * MIB + 100_000)
        .expect("zero inside data");
    size
}

#[test]
fn sparse_file_matches_qemu_img_at_every_granularity_and_max() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sparse.img");
    let size = sparse_file(&path);
    let expected = reference(&path, "raw");
    for granule in [512u32, 4096, 65536] {
        for max in [1, 4096, 12_345, MIB as usize, 8 * MIB as usize] {
            let mut source = open(&path, &options(granule)).expect("open");
            assert_eq!((source.size(), source.format()), (size, Format::Raw));
            let pass = check_pass(source.as_mut(), max, u64::from(granule), &expected);
            assert_eq!(pass.stored_bytes, 0, "stored data only when offered");
            // The same chunks with stored data offered: all data comes from the file.
            let mut stored = open(&path, &options(granule)).expect("open");
            stored.offer_stored();
            let from_file = check_pass(stored.as_mut(), max, u64::from(granule), &expected);
            assert_eq!(
                (from_file.data_bytes, from_file.zero_bytes, from_file.stored_bytes),
                (pass.data_bytes, pass.zero_bytes, pass.data_bytes),
                "g={granule}, max={max}"
            );
            assert!(
                pass.zero_bytes > 9 * MIB,
                "holes and written zeroes are Zero (g={granule}, max={max})"
            );
            // 4096 + 70000 + 10 + 300000 - 64 KiB + 700 bytes of real data, rounded to granules.
            let real = 4096 + 70_000 + 10 + 300_000 - 65_536 + 700;
            assert!(pass.data_bytes >= real, "all data is sent");
            assert!(
                pass.data_bytes <= real + 16 * u64::from(granule),
                "little zero data is sent"
            );
        }
    }
}

#[test]
fn holes_are_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.img");
    let file = File::create(&path).expect("create");
    file.set_len(64 << 30).expect("64 GiB sparse");
    file.write_all_at(&pattern(MIB as usize, 9), 40 << 30).expect("write");
    let mut source = RawSource::new(ImageFile::open(&path).expect("open"), 4096, true);
    assert_eq!(source.data_hint(), Some(MIB));
    let mut data = 0;
    while let Some(chunk) = source.next_chunk(4 << 20).expect("chunk") {
        if let Chunk::Data { data: d, .. } = chunk {
            data += d.len() as u64;
        }
    }
    assert_eq!(data, MIB);
    assert_eq!(source.bytes_read(), MIB, "only the data extent was read");
}

#[test]
fn without_seek_data_everything_is_read_and_scanned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sparse.img");
    let size = sparse_file(&path);
    let expected = reference(&path, "raw");
    let mut source = open_with(&path, &options(4096), false).expect("open");
    assert_eq!(source.data_hint(), Some(size), "everything counts as data");
    let pass = check_pass(source.as_mut(), MIB as usize, 4096, &expected);
    assert!(pass.zero_bytes > 9 * MIB, "zeroes are still found by scanning");
}

#[test]
fn dense_file_of_odd_size_is_all_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dense.img");
    let size = 3 * MIB as usize + 333;
    std::fs::write(&path, pattern(size, 7)).expect("write");
    let expected = reference(&path, "raw");
    let mut source = open(&path, &options(4096)).expect("open");
    assert_eq!(source.data_hint(), Some(size as u64));
    let pass = check_pass(source.as_mut(), MIB as usize, 4096, &expected);
    assert_eq!((pass.data_bytes, pass.zero_bytes, pass.chunks), (size as u64, 0, 4));
}

#[test]
fn empty_and_tiny_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").expect("write");
    let mut source = open(&empty, &options(4096)).expect("open");
    assert_eq!((source.size(), source.data_hint()), (0, Some(0)));
    assert!(source.next_chunk(4096).expect("chunk").is_none());

    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, b"x\0\0").expect("write");
    let mut source = open(&tiny, &options(512)).expect("open");
    let chunk = source.next_chunk(1).expect("chunk");
    assert_eq!(
        chunk,
        Some(Chunk::Data {
            offset: 0,
            data: bytes::Bytes::from_static(b"x\0\0")
        })
    );
    assert!(source.next_chunk(1).expect("end").is_none());

    let zeroes = dir.path().join("zeroes.img");
    std::fs::write(&zeroes, vec![0u8; 5000]).expect("write");
    let mut source = open(&zeroes, &options(4096)).expect("open");
    assert_eq!(
        source.next_chunk(1 << 20).expect("chunk"),
        Some(Chunk::Zero { offset: 0, len: 5000 })
    );
}

#[test]
fn invalid_granularity_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.img");
    std::fs::write(&path, b"data").expect("write");
    for granule in [0, 256, 1000, 4097, 1 << 30] {
        let err = open(&path, &options(granule)).expect_err("bad granularity");
        assert!(matches!(err, SourceError::InvalidOptions { .. }), "{err}");
    }
}

#[test]
fn shrinking_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shrinks.img");
    std::fs::write(&path, pattern(4 * MIB as usize, 3)).expect("write");
    let mut source = open(&path, &options(4096)).expect("open");
    source.next_chunk(MIB as usize).expect("first chunk");
    FsOpenOptions::new()
        .write(true)
        .open(&path)
        .expect("reopen")
        .set_len(MIB + 5)
        .expect("truncate");
    let err = loop {
        match source.next_chunk(MIB as usize) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a shrunk image read to the end without error"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, SourceError::SizeChanged { expected, actual, .. } if expected == 4 * MIB && actual == MIB + 5)
    );
    assert!(err.to_string().contains("changed while being read"), "{err}");
}

#[test]
fn missing_and_non_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = open(&dir.path().join("nope.img"), &options(4096)).expect_err("missing");
    assert!(
        matches!(err, SourceError::NotFound { .. }) && err.to_string().contains("nope.img"),
        "{err}"
    );
    let err = open(dir.path(), &options(4096)).expect_err("a directory");
    assert!(
        matches!(
            err,
            SourceError::NotAFile {
                what: "a directory",
                ..
            }
        ),
        "{err}"
    );
    let err = open(Path::new("/dev/null"), &options(4096)).expect_err("a char device");
    assert!(matches!(err, SourceError::NotAFile { .. }), "{err}");
}

/// A loop device over a sparse file reads like the file (its size comes from SEEK_END).
#[test]
fn block_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("backing.img");
    let size = sparse_file(&path);
    // Loop devices are whole 512-byte sectors.
    File::options()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(size - size % 512)
        .expect("trim");
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&path)
        .output();
    let Some(device) = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    else {
        eprintln!("SKIPPED block_device: losetup is not available here");
        return;
    };
    let result = std::panic::catch_unwind(|| {
        let mut source = open(Path::new(&device), &options(4096)).expect("open device");
        assert_eq!(source.size(), size - size % 512);
        check_pass(source.as_mut(), MIB as usize, 4096, &path)
    });
    let _ = Command::new("losetup").args(["--detach", &device]).status();
    let pass = result.expect("block device pass");
    assert!(pass.zero_bytes > 9 * MIB, "zeroes on a device are found by scanning");
}

#[test]
fn without_zero_scan_only_holes_are_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mkfs-like.img");
    let size = sparse_file(&path);
    let file = File::open(&path).expect("open");
    let options = OpenOptions {
        scan_zeroes: false,
        ..options(4096)
    };
    let mut source = open(&path, &options).expect("open");
    let (mut pos, mut data_bytes) = (0, 0);
    while let Some(chunk) = source.next_chunk(MIB as usize).expect("chunk") {
        assert_eq!(chunk.offset(), pos);
        if let Chunk::Data { data, .. } = &chunk {
            let mut want = vec![0u8; data.len()];
            file.read_exact_at(&mut want, pos).expect("read");
            assert!(want[..] == data[..], "data at {pos}");
            data_bytes += data.len() as u64;
        }
        pos += chunk.len();
    }
    assert_eq!(pos, size);
    // The 256 KiB of written zeroes and the 64 KiB zeroed inside data are
    // stored, so they are sent; the holes are not.
    let stored = 4096 + 256 * 1024 + 70_000 + 10 + 300_000 + 700;
    assert!(data_bytes >= stored, "stored zeroes are data: {data_bytes}");
    assert!(data_bytes <= stored + 16 * 4096, "holes are not: {data_bytes}");
}

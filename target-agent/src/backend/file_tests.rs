//! File device tests on temporary files: positional IO, holes and the
//! allocation map, the checks at open, read-only devices, and O_DIRECT
//! through bounce buffers.

use super::*;

fn file_of(len: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(len).unwrap();
    f
}

#[test]
fn file_read_write_flush() {
    let f = file_of(64 * 512);
    let dev = FileDevice::open(f.path(), FileOptions::default()).unwrap();
    assert_eq!((dev.block_size(), dev.num_blocks(), dev.read_only()), (512, 64, false));
    let data: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    dev.write_at(&data, 512 * 3).unwrap();
    dev.flush().unwrap();
    let mut back = vec![0xa5; 1024];
    dev.read_at(&mut back, 512 * 3).unwrap();
    assert_eq!(back, data);
    // Reading past the end is an error, not a short read.
    let mut past = vec![0; 1024];
    let e = dev.read_at(&mut past, 63 * 512).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn sparse_file_allocation_and_punch() {
    let f = file_of(1 << 20);
    let dev = FileDevice::open(f.path(), FileOptions::default()).unwrap();
    assert!(dev.discard_zeroes());
    assert_eq!(dev.allocation(0).unwrap(), (false, 1 << 20));
    dev.write_at(&vec![0x5a; 64 << 10], 256 << 10).unwrap();
    dev.flush().unwrap();
    let (mapped, len) = dev.allocation(0).unwrap();
    assert!(!mapped);
    assert_eq!(len, 256 << 10);
    assert_eq!(dev.allocation(256 << 10).unwrap(), (true, 64 << 10));
    assert_eq!(dev.allocation(320 << 10).unwrap(), (false, (1 << 20) - (320 << 10)));
    // Punch the middle 16 KiB of the data.
    dev.discard(272 << 10, 16 << 10).unwrap();
    assert_eq!(dev.allocation(272 << 10).unwrap(), (false, 16 << 10));
    assert_eq!(dev.allocation(288 << 10).unwrap(), (true, 32 << 10));
    let mut back = vec![0xa5; 48 << 10];
    dev.read_at(&mut back, 256 << 10).unwrap();
    assert!(back[..16 << 10].iter().all(|&b| b == 0x5a));
    assert!(back[16 << 10..32 << 10].iter().all(|&b| b == 0));
    assert!(back[32 << 10..].iter().all(|&b| b == 0x5a));
    assert!(dev.allocation(1 << 20).is_err());
}

#[test]
fn size_must_be_whole_blocks() {
    let f = file_of(4096 + 512);
    let e = FileDevice::open(
        f.path(),
        FileOptions {
            block_size: Some(4096),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(
        e,
        OpenError::NotMultiple {
            size: 4608,
            block_size: 4096,
            ..
        }
    ));
    assert!(
        e.to_string().contains("not a multiple of the 4096-byte block size"),
        "{e}"
    );
    let ok = FileDevice::open(f.path(), FileOptions::default()).unwrap();
    assert_eq!(ok.num_blocks(), 9);
    let e = FileDevice::open(
        f.path(),
        FileOptions {
            block_size: Some(520),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, OpenError::BlockSize { block_size: 520, .. }));
    assert!(matches!(
        FileDevice::open(file_of(0).path(), FileOptions::default()),
        Err(OpenError::Empty { .. })
    ));
    let e = FileDevice::open("/nonexistent/disk.img", FileOptions::default()).unwrap_err();
    assert!(matches!(&e, OpenError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        FileDevice::open(dir.path(), FileOptions::default()),
        Err(OpenError::Io { .. } | OpenError::NotFileOrBlockDevice { .. })
    ));
}

#[test]
fn read_only_file_refuses_writes() {
    let f = file_of(4096);
    let dev = FileDevice::open(
        f.path(),
        FileOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(dev.read_only());
    assert_eq!(
        dev.write_at(&[1; 512], 0).unwrap_err().kind(),
        io::ErrorKind::ReadOnlyFilesystem
    );
    assert!(dev.discard(0, 512).is_err());
    let mut b = [1u8; 512];
    dev.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0; 512]);
}

#[test]
fn direct_io_through_bounce_buffers() {
    let f = file_of(4 << 20);
    let dev = FileDevice::open(
        f.path(),
        FileOptions {
            direct: true,
            block_size: Some(4096),
            ..Default::default()
        },
    )
    .unwrap();
    // Larger than one bounce chunk, from an unaligned Vec offset.
    let data: Vec<u8> = (0..(CHUNK + 8192 + 1)).map(|i| (i % 253) as u8).collect();
    dev.write_at(&data[1..], 4096).unwrap();
    let mut back = vec![0; CHUNK + 8192 + 1];
    dev.read_at(&mut back[1..], 4096).unwrap();
    assert_eq!(back[1..], data[1..]);
    if dev.is_direct() {
        assert_eq!(
            dev.write_at(&[0; 100], 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
    dev.discard(4096, 4096).unwrap();
    let mut z = vec![1; 4096];
    dev.read_at(&mut z, 4096).unwrap();
    assert!(z.iter().all(|&b| b == 0));
}

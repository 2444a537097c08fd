//! VMDK, zstd-compressed qcow2 and compressed raw streams, as qemu-img, gzip, zstd and xz make
//! them, against `qemu-img convert -O raw` of the same image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::super::{Format, OpenOptions, SourceError, open};
use super::{check_pass, path_str, pattern, reference, run};

const MIB: u64 = 1 << 20;

/// A raw image with data, written zeroes, holes and an odd tail: 24 MiB + 3 KiB.
fn raw(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("disk.raw");
    let file = File::create(&path).expect("create");
    file.set_len(24 * MIB + 3072).expect("size");
    file.write_all_at(&pattern(3 * MIB as usize, 7), 0).expect("write");
    file.write_all_at(&vec![0u8; 2 * MIB as usize], 5 * MIB)
        .expect("write zeroes");
    file.write_all_at(&pattern(300_000, 9), 11 * MIB + 4096).expect("write");
    file.write_all_at(&pattern(5000, 3), 24 * MIB - 1928)
        .expect("write tail");
    path
}

fn converted(dir: &Path, raw: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let mut all = vec!["convert", "-f", "raw"];
    all.extend_from_slice(args);
    all.extend([path_str(raw), path_str(&out)]);
    run(dir, "qemu-img", &all);
    out
}

#[test]
fn vmdk_and_zstd_qcow2_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let raw = raw(d);
    let cases = [
        ("sparse.vmdk", vec!["-O", "vmdk"], Format::Vmdk, "vmdk"),
        (
            "stream.vmdk",
            vec!["-O", "vmdk", "-o", "subformat=streamOptimized"],
            Format::Vmdk,
            "vmdk",
        ),
        (
            "zstd.qcow2",
            vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
            Format::Qcow2,
            "qcow2",
        ),
        (
            "zstd-small.qcow2",
            vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=4096"],
            Format::Qcow2,
            "qcow2",
        ),
    ];
    for (name, args, format, qemu_format) in cases {
        let image = converted(d, &raw, name, &args);
        let expected = reference(&image, qemu_format);
        let mut source = open(&image, &OpenOptions::default()).expect(name);
        assert_eq!(source.format(), format, "{name}");
        assert_eq!(source.size(), (24 * MIB + 3072).next_multiple_of(512), "{name}");
        let pass = check_pass(source.as_mut(), 1 << 20, 4096, &expected);
        assert!(pass.data_bytes >= 3 * MIB + 300_000, "{name}: {pass:?}");
        assert!(
            pass.zero_bytes >= 18 * MIB,
            "{name}: written zeroes and holes are zero runs: {pass:?}"
        );
    }
}

#[test]
fn compressed_raw_files_read_as_their_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let raw = raw(d);
    for (tool, args, name) in [
        ("gzip", vec!["-k", "-f"], "disk.raw.gz"),
        ("zstd", vec!["-q", "-k", "-f"], "disk.raw.zst"),
        ("xz", vec!["-k", "-f", "-0"], "disk.raw.xz"),
    ] {
        let mut all = args.clone();
        all.push(path_str(&raw));
        run(d, tool, &all);
        let image = d.join(name);
        let mut source = open(&image, &OpenOptions::default()).expect(name);
        assert!(!source.length_known(), "{name}: a stream's length shows at its end");
        let pass = check_pass_stream(source.as_mut(), &raw);
        assert!(source.length_known(), "{name}");
        assert_eq!(source.size(), 24 * MIB + 3072, "{name}");
        assert!(pass >= 3 * MIB, "{name}");
    }
    // A damaged stream says which stream and where, never passes as an image.
    let mut bytes = std::fs::read(d.join("disk.raw.gz")).expect("read");
    let middle = bytes.len() / 2;
    bytes.truncate(middle);
    std::fs::write(d.join("cut.gz"), &bytes).expect("write");
    let mut source = open(&d.join("cut.gz"), &OpenOptions::default()).expect("opens");
    let err = loop {
        match source.next_chunk(1 << 20) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a cut gzip stream read to its end"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SourceError::Decompress { kind: "gzip", .. }), "{err}");
}

/// Read a stream to its end, checking each chunk against `raw`; the data bytes.
fn check_pass_stream(source: &mut dyn super::super::Source, raw: &Path) -> u64 {
    let raw = std::fs::read(raw).expect("reference");
    let (mut pos, mut data_bytes) = (0u64, 0u64);
    while let Some(chunk) = source.next_chunk(1 << 20).expect("next_chunk") {
        assert_eq!(chunk.offset(), pos);
        let len = chunk.len();
        let range = pos as usize..(pos + len) as usize;
        match chunk {
            super::super::Chunk::Data { data, .. } => {
                assert_eq!(&data[..], &raw[range], "data at {pos}");
                data_bytes += data.len() as u64;
            }
            super::super::Chunk::Stored { range: stored, .. } => {
                assert_eq!(&stored.read().expect("read")[..], &raw[range], "stored data at {pos}");
                data_bytes += stored.len() as u64;
            }
            super::super::Chunk::Zero { .. } => assert!(raw[range].iter().all(|&b| b == 0), "zeroes at {pos}"),
        }
        pos += len;
    }
    assert_eq!(pos, raw.len() as u64, "the stream covers the whole image");
    data_bytes
}

/// The first error opening or reading `image` gives (it must give one).
fn first_error(image: &Path) -> SourceError {
    let mut source = match open(image, &OpenOptions::default()) {
        Ok(source) => source,
        Err(e) => return e,
    };
    loop {
        match source.next_chunk(1 << 20) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{} read to its end", image.display()),
            Err(e) => return e,
        }
    }
}

#[test]
fn truncated_and_corrupt_vmdk_and_zstd_qcow2_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let raw = raw(d);
    for (name, args) in [
        ("sparse.vmdk", vec!["-O", "vmdk"]),
        ("stream.vmdk", vec!["-O", "vmdk", "-o", "subformat=streamOptimized"]),
        ("zstd.qcow2", vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"]),
    ] {
        let image = converted(d, &raw, name, &args);
        let bytes = std::fs::read(&image).expect("read");
        let cut = d.join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 3]).expect("write");
        let err = first_error(&cut);
        assert!(err.to_string().contains("truncated"), "{name}: {err}");
        // Garbage where the data was: compressed grains and clusters that do not decode.
        let mut garbage = bytes.clone();
        let len = garbage.len();
        garbage[len / 3..len * 2 / 3].fill(0x5a);
        let bad = d.join(format!("bad-{name}"));
        std::fs::write(&bad, &garbage).expect("write");
        if name != "sparse.vmdk" {
            let err = first_error(&bad);
            assert!(err.to_string().contains("corrupt"), "{name}: {err}");
        }
    }
}

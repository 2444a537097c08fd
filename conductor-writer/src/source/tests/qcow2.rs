//! qcow2 images made by qemu-img / qemu-io: v2 and v3, unallocated, zero, compressed and
//! backing-chain clusters.

use std::path::Path;

use super::super::detect::ImageFile;
use super::super::qcow2::Qcow2Source;
use super::super::{Format, FormatChoice, OpenOptions, Source, SourceError, open};
use super::{check_pass, have, overlay, path_str, pattern, qemu_io, reference, run};

const MIB: u64 = 1 << 20;

fn options() -> OpenOptions {
    OpenOptions {
        format: FormatChoice::Auto,
        zero_granularity: 4096,
        ..OpenOptions::default()
    }
}

/// Read `image` fully at several granularities (below, at and above the 64 KiB cluster size)
/// and `max`, checking it against `qemu-img convert`; returns the 4 KiB-granule pass.
fn check_image(image: &Path) -> super::Pass {
    let expected = reference(image, "qcow2");
    for (granule, max) in [(512, 100_000), (1 << 20, 1 << 20), (4096, 4096), (4096, 100_000)] {
        let options = OpenOptions {
            format: FormatChoice::Auto,
            zero_granularity: granule,
            ..OpenOptions::default()
        };
        let mut source = open(image, &options).expect("open");
        assert_eq!(source.format(), Format::Qcow2);
        let pass = check_pass(source.as_mut(), max, u64::from(granule), &expected);
        // Offered, stored clusters come from the file; the chunks cover the same.
        let mut stored = open(image, &options).expect("open");
        stored.offer_stored();
        let from_file = check_pass(stored.as_mut(), max, u64::from(granule), &expected);
        assert_eq!(
            (from_file.data_bytes, from_file.zero_bytes),
            (pass.data_bytes, pass.zero_bytes)
        );
    }
    let mut source = open(image, &options()).expect("open");
    check_pass(source.as_mut(), MIB as usize, 4096, &expected)
}

/// A 64 MiB image with data, written zeroes (allocated), zero clusters and unallocated space.
fn mixed_image(dir: &Path, compat: &str) -> std::path::PathBuf {
    run(
        dir,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("compat={compat}"),
            "img.qcow2",
            "64M",
        ],
    );
    qemu_io(
        dir,
        "img.qcow2",
        &[
            "write -P 0xab 0 64k",
            "write -P 0 1M 192k",
            "write -P 0x11 2M 3000",
            "write -P 0x5a 10000000 500000",
            "write -z 10240k 2M",
            "write -P 0x77 67043328 65536",
        ],
    );
    dir.join("img.qcow2")
}

#[test]
fn v3_unallocated_zero_and_data_clusters() {
    if !have("qemu-io") {
        eprintln!("SKIPPED v3_unallocated_zero_and_data_clusters: qemu-io is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = check_image(&mixed_image(dir.path(), "1.1"));
    assert!(pass.zero_bytes > 60 * MIB);
    assert!(
        pass.data_bytes < 2 * MIB,
        "written zeroes are not data: {}",
        pass.data_bytes
    );
}

#[test]
fn v2_compat_0_10() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = mixed_image(dir.path(), "0.10");
    let pass = check_image(&image);
    assert!(pass.zero_bytes > 60 * MIB);
}

#[test]
fn compressed_clusters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut raw = vec![0u8; 8 * MIB as usize];
    raw[..MIB as usize].copy_from_slice(&pattern(MIB as usize, 1));
    raw[3 * MIB as usize..3 * MIB as usize + 5000].copy_from_slice(&pattern(5000, 2));
    raw[8 * MIB as usize - 100..].copy_from_slice(&pattern(100, 3));
    std::fs::write(dir.path().join("in.raw"), &raw).expect("write");
    run(
        dir.path(),
        "qemu-img",
        &["convert", "-c", "-f", "raw", "-O", "qcow2", "in.raw", "c.qcow2"],
    );
    let image = dir.path().join("c.qcow2");
    let pass = check_image(&image);
    assert_eq!(pass.data_bytes, MIB + 8192 + 4096);
    let source = open(&image, &options()).expect("open");
    assert!(source.data_hint().is_some_and(|h| h >= pass.data_bytes));
}

#[test]
fn two_level_backing_chain_with_relative_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "base.qcow2", "32M"]);
    qemu_io(d, "base.qcow2", &["write -P 0x01 0 4M", "write -P 0x02 20M 1M"]);
    overlay(d, "base.qcow2", "mid.qcow2");
    qemu_io(
        d,
        "mid.qcow2",
        &["write -P 0x03 1M 64k", "write -z 2M 1M", "write -P 0x04 28M 64k"],
    );
    overlay(d, "mid.qcow2", "top.qcow2");
    qemu_io(d, "top.qcow2", &["write -P 0x05 3M 4096", "write -z 20M 512k"]);
    let pass = check_image(&d.join("top.qcow2"));
    // base's 4 MiB + 1 MiB, less mid's 1 MiB and top's 512 KiB of zeroes, plus mid's 64 KiB.
    assert_eq!(pass.data_bytes, 3 * MIB + 512 * 1024 + 64 * 1024);

    // Opened from another directory, relative backing names still resolve next to the image.
    let source = open(&d.join("top.qcow2"), &options()).expect("open from elsewhere");
    assert_eq!(source.size(), 32 * MIB);
}

#[test]
fn raw_backing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("base.raw"), pattern(3 * MIB as usize, 8)).expect("write");
    run(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "top.qcow2",
            "8M",
        ],
    );
    qemu_io(d, "top.qcow2", &["write -z 0 1M", "write -P 0x09 5M 4096"]);
    let pass = check_image(&d.join("top.qcow2"));
    assert_eq!(pass.data_bytes, 2 * MIB + 4096);
}

/// Preallocated clusters are allocated but read as zeroes: scanned, reported as Zero.
#[test]
fn preallocated_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for mode in ["metadata", "falloc", "full"] {
        let name = format!("{mode}.qcow2");
        run(
            d,
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("preallocation={mode}"),
                &name,
                "20M",
            ],
        );
        qemu_io(d, &name, &["write -P 0x31 7M 100k"]);
        let pass = check_image(&d.join(&name));
        assert_eq!(pass.data_bytes, 100 * 1024, "{mode}");
        let source = open(&d.join(&name), &options()).expect("open");
        assert_eq!(source.data_hint(), Some(20 * MIB), "{mode}: every cluster is allocated");
    }
}

#[test]
fn backing_files_can_be_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"]);
    overlay(d, "base.qcow2", "top.qcow2");
    let refuse = OpenOptions {
        backing_files: false,
        ..options()
    };
    let err = open(&d.join("top.qcow2"), &refuse).expect_err("refused");
    assert!(
        matches!(err, SourceError::BackingFileRefused { ref backing, .. } if backing == "base.qcow2"),
        "{err}"
    );
    assert!(err.to_string().contains("qemu-img convert"));
    open(&d.join("base.qcow2"), &refuse).expect("an image without a backing file still opens");
}

#[test]
fn missing_backing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"]);
    overlay(d, "base.qcow2", "top.qcow2");
    std::fs::remove_file(d.join("base.qcow2")).expect("rm");
    let err = open(&d.join("top.qcow2"), &options()).expect_err("missing backing");
    assert!(
        matches!(&err, SourceError::BackingFile { backing, .. } if backing == "base.qcow2"),
        "{err}"
    );
    assert!(
        err.to_string().contains("base.qcow2") && err.to_string().contains("does not exist"),
        "{err}"
    );
}

#[test]
fn backing_chain_loop_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "a.qcow2", "1M"]);
    run(
        d,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2"],
    );
    run(
        d,
        "qemu-img",
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2"],
    );
    let err = open(&d.join("b.qcow2"), &options()).expect_err("loop");
    assert!(err.to_string().contains("loops"), "{err}");
}

#[test]
fn overlong_backing_chain_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "l0.qcow2", "1M"]);
    for i in 1..=16 {
        let (below, name) = (format!("l{}.qcow2", i - 1), format!("l{i}.qcow2"));
        run(
            d,
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-b", &below, "-F", "qcow2", &name],
        );
    }
    open(&d.join("l15.qcow2"), &options()).expect("16 files are fine");
    let err = open(&d.join("l16.qcow2"), &options()).expect_err("17 files");
    assert!(err.to_string().contains("more than 16 files"), "{err}");
}

/// 8 GiB virtual, 1 MiB of data: only about the allocated bytes are read.
#[test]
fn large_sparse_image_reads_only_allocated_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "big.qcow2", "8G"]);
    qemu_io(d, "big.qcow2", &["write -P 0x42 5G 512k", "write -P 0x43 8191M 512k"]);
    let image = d.join("big.qcow2");
    let expected = reference(&image, "qcow2");
    let mut source = Qcow2Source::open(ImageFile::open(&image).expect("open"), 4096, true).expect("qcow2");
    assert_eq!(source.data_hint(), Some(MIB));
    let pass = check_pass(&mut source, 4 << 20, 4096, &expected);
    assert_eq!(pass.data_bytes, MIB);
    assert_eq!(source.bytes_read(), MIB, "nothing but the two data runs was read");
}

#[test]
fn unsupported_qcow2_features_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let create = |name: &str, opts: &[&str]| {
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend_from_slice(opts);
        args.extend([name, "4M"]);
        run(d, "qemu-img", &args);
        open(&d.join(name), &options()).expect_err(name)
    };
    let err = create(
        "luks.qcow2",
        &[
            "--object",
            "secret,id=s0,data=pw",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0",
        ],
    );
    assert!(
        matches!(err, SourceError::Qcow2Encrypted { method: "LUKS", .. }),
        "{err}"
    );
    let err = create("ext.qcow2", &["-o", "data_file=ext.data"]);
    assert!(matches!(err, SourceError::Qcow2ExternalData { .. }), "{err}");
    let err = create("l2.qcow2", &["-o", "extended_l2=on"]);
    assert!(matches!(err, SourceError::Qcow2Unsupported { .. }), "{err}");
}

#[test]
fn forced_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, "qemu-img", &["create", "-q", "-f", "qcow2", "x.qcow2", "4M"]);
    std::fs::write(d.join("x.raw"), pattern(4096, 1)).expect("write");
    let forced = |format| OpenOptions {
        format,
        zero_granularity: 4096,
        ..OpenOptions::default()
    };
    let err = open(&d.join("x.raw"), &forced(FormatChoice::Qcow2)).expect_err("raw as qcow2");
    assert!(matches!(err, SourceError::NotQcow2 { .. }), "{err}");
    let as_raw = open(&d.join("x.qcow2"), &forced(FormatChoice::Raw)).expect("qcow2 as raw");
    assert_eq!(as_raw.format(), Format::Raw);
    assert_eq!(as_raw.size(), std::fs::metadata(d.join("x.qcow2")).expect("stat").len());
    let as_qcow2 = open(&d.join("x.qcow2"), &forced(FormatChoice::Qcow2)).expect("qcow2");
    assert_eq!(as_qcow2.size(), 4 * MIB);
}

#[test]
fn foreign_formats_get_a_convert_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // A VMDK that is only a descriptor of other extent files is not read (sparse ones are).
    for (format, name, create) in [
        ("qcow", "qcow (version 1)", None),
        ("vmdk", "VMDK", Some("subformat=monolithicFlat")),
        ("vpc", "VHD", None),
        ("vhdx", "VHDX", None),
        ("vdi", "VDI", None),
        ("qed", "QED", None),
    ] {
        let file = d.join(format!("img.{format}"));
        let mut args = vec!["create", "-q", "-f", format];
        if let Some(options) = create {
            args.extend(["-o", options]);
        }
        args.extend([path_str(&file), "16M"]);
        run(d, "qemu-img", &args);
        let err = open(&file, &options()).expect_err(format);
        let message = err.to_string();
        assert!(matches!(err, SourceError::UnsupportedFormat { .. }), "{format}: {err}");
        assert!(
            message.contains(name) && message.contains("qemu-img convert -O raw"),
            "{message}"
        );
    }
}

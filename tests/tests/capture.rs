//! `conductor-writer read`: a LUN served by target-agent captured into a sparse raw file and
//! a qcow2, checked by qemu-img (compare, check) and cmp, with the disk's SHA-256.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::{Rng, conductor_writer as writer, must, output_text as text, qemu_img, seed};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use tempfile::TempDir;

const IQN: &str = "iqn.2024-01.test.capture:disk";
const MIB: u64 = 1 << 20;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn write_then_read_back_as_qcow2_and_raw() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let mut rng = Rng(seed("CAPTURE_SEED"));
    // The image: random data, a run of written zeroes, holes; as a qcow2.
    let raw = d.join("image.raw");
    let file = File::create(&raw).unwrap();
    file.set_len(40 * MIB).unwrap();
    file.write_all_at(&rng.bytes(5 * MIB as usize), 0).unwrap();
    file.write_all_at(&vec![0; 2 * MIB as usize], 6 * MIB).unwrap();
    file.write_all_at(&rng.bytes(300_000), 21 * MIB + 512).unwrap();
    let image = d.join("image.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&image)]);
    let disk = d.join("lun.img");
    File::create(&disk).unwrap().set_len(40 * MIB).unwrap();
    std::fs::write(&disk, vec![0xee; 40 * MIB as usize]).unwrap();
    let agent = TargetAgent::start(&disk, IQN);
    let url = format!("iscsi://{}/{IQN}/1", agent.addr());
    let out = writer(&["write", p(&image), &url]);
    assert!(out.status.success(), "{}", text(&out));

    let disk_sum = must("sha256sum", &[p(&disk)])[..64].to_owned();
    for (name, extra) in [
        ("back.qcow2", vec!["--format", "qcow2"]),
        (
            "packed.qcow2",
            vec!["--format", "qcow2", "--compress", "--sessions", "2"],
        ),
        ("back.raw", vec![]),
    ] {
        let output = d.join(name);
        let mut args = vec!["read", &url, p(&output), "--json"];
        args.extend_from_slice(&extra);
        let report = json(&writer(&args));
        assert_eq!(
            report["sha256"],
            disk_sum.as_str(),
            "{name}: the SHA-256 of the disk's contents"
        );
        assert_eq!(report["disk_bytes"], 40 * MIB);
        let stored = report["stored_bytes"].as_u64().unwrap();
        assert!(
            (5 * MIB..=7 * MIB).contains(&stored),
            "{name}: only data is stored: {report}"
        );
        if name.ends_with(".qcow2") {
            must("qemu-img", &["check", p(&output)]);
            let same = must("qemu-img", &["compare", p(&image), p(&output)]);
            assert!(same.contains("Images are identical"), "{same}");
        } else {
            must("cmp", &[p(&raw), p(&output)]);
            let allocated = std::fs::metadata(&output).unwrap().blocks() * 512;
            assert!(
                allocated <= 7 * MIB,
                "{name}: zero blocks are holes ({allocated} bytes allocated)"
            );
        }
        assert!(!d.join(format!("{name}.partial")).exists());
    }
    let info = must("qemu-img", &["info", p(&d.join("packed.qcow2"))]);
    assert!(info.contains("compression type: zstd"), "{info}");
    // A capture that cannot finish leaves nothing under the name.
    let out = writer(&["read", &url, p(&d.join("none/x.qcow2"))]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = writer(&["read", &url, p(&d.join("x.raw")), "--compress"]);
    assert!(
        !out.status.success() && text(&out).contains("--format qcow2"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_8_gib_lun_with_512_mib_of_data_captures_to_about_512_mib() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let mut rng = Rng(seed("CAPTURE_SEED"));
    let disk = d.join("lun.img");
    let file = File::create(&disk).unwrap();
    file.set_len(8192 * MIB).unwrap();
    // Eight 64 MiB runs of data, spread over the LUN; the rest never written.
    let run = rng.bytes(64 * MIB as usize);
    for i in 0..8u64 {
        file.write_all_at(&run, i * 1000 * MIB + 4096).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let agent = TargetAgent::start(&disk, IQN);
    let url = format!("iscsi://{}/{IQN}/1", agent.addr());
    let output = d.join("big.qcow2");
    let report = json(&writer(&[
        "read",
        &url,
        p(&output),
        "--format",
        "qcow2",
        "--json",
        "--sessions",
        "2",
    ]));
    eprintln!("{report}");
    let length = std::fs::metadata(&output).unwrap().len();
    assert!(
        (512 * MIB..=520 * MIB).contains(&length),
        "the qcow2 is {length} bytes for 512 MiB of data"
    );
    let read = report["read_bytes"].as_u64().unwrap();
    assert!(
        read < 600 * MIB,
        "unmapped ranges were not read ({read} bytes read): {report}"
    );
    assert_eq!(report["unmapped_bytes"].as_u64().unwrap() + read, 8192 * MIB);
    let same = must(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&disk), p(&output)],
    );
    assert!(same.contains("Images are identical"), "{same}");
}

#[test]
fn a_lun_that_is_not_a_whole_number_of_clusters() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let mut rng = Rng(seed("CAPTURE_SEED"));
    // 10 MiB + 12 KiB of random data: the last qcow2 cluster is partly past the disk's end.
    let disk = d.join("lun.img");
    std::fs::write(&disk, rng.bytes((10 * MIB + 12 * 1024) as usize)).unwrap();
    let agent = TargetAgent::start(&disk, IQN);
    let url = format!("iscsi://{}/{IQN}/1", agent.addr());
    for (name, extra) in [
        ("odd.qcow2", vec!["--format", "qcow2", "--compress"]),
        ("odd.raw", vec![]),
    ] {
        let output = d.join(name);
        let mut args = vec!["read", &url, p(&output), "--json"];
        args.extend_from_slice(&extra);
        let report = json(&writer(&args));
        assert_eq!(report["disk_bytes"], 10 * MIB + 12 * 1024);
        let format = if name.ends_with(".qcow2") { "qcow2" } else { "raw" };
        if format == "qcow2" {
            must("qemu-img", &["check", p(&output)]);
        }
        let info: serde_json::Value =
            serde_json::from_str(&must("qemu-img", &["info", "--output=json", "-f", format, p(&output)])).unwrap();
        assert_eq!(info["virtual-size"], 10 * MIB + 12 * 1024, "{name}");
        let same = must(
            "qemu-img",
            &["compare", "-f", "raw", "-F", format, p(&disk), p(&output)],
        );
        assert!(same.contains("Images are identical"), "{name}: {same}");
    }
}

#[test]
fn capture_from_tgtd() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let mut rng = Rng(seed("CAPTURE_SEED"));
    let disk = d.join("lun.img");
    let file = File::create(&disk).unwrap();
    file.set_len(16 * MIB).unwrap();
    file.write_all_at(&rng.bytes(MIB as usize), 3 * MIB).unwrap();
    drop(file);
    let tgtd = integration_tests::tgtd::Tgtd::start();
    tgtd.add_target(1, IQN, &disk);
    let url = format!("iscsi://{}/{IQN}/1", tgtd.addr());
    let output = d.join("tgtd.qcow2");
    let report = json(&writer(&["read", &url, p(&output), "--format", "qcow2", "--json"]));
    // tgtd reports no unmapped range: everything is read, zero blocks are still not stored.
    assert_eq!(report["read_bytes"], 16 * MIB, "{report}");
    assert_eq!(report["stored_bytes"], MIB, "{report}");
    let same = must(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", p(&disk), p(&output)],
    );
    assert!(same.contains("Images are identical"), "{same}");
}

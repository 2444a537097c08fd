//! conductor-writer's image writer onto target-agent and tgtd: raw and
//! qcow2 images (compressed clusters, a backing file) land byte for byte;
//! zero runs travel as WRITE SAME; an image larger than the disk writes
//! nothing.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use conductor_writer::disk::Disk;
use conductor_writer::initiator::Session;
use conductor_writer::source::{self, OpenOptions};
use conductor_writer::write::{WriteError, WriteOptions, write_image};
use integration_tests::agent::TargetAgent;
use integration_tests::tgtd::Tgtd;
use integration_tests::{compressed_qcow2, qemu_img};
use iscsi_proto::Lun;
use iscsi_proto::login::InitiatorConfig;
use iscsi_proto::pdu::Isid;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const IQN: &str = "iqn.2024-01.test.write:disk";
const DISK: u64 = 48 << 20;

/// A raw image: random data, explicit zero blocks and holes, an odd size.
fn raw_image(dir: &Path) -> PathBuf {
    let path = dir.join("image.raw");
    let file = std::fs::File::create(&path).unwrap();
    let size = (20 << 20) + 1234;
    file.set_len(size).unwrap();
    let mut rng = integration_tests::Rng(0x9e37_79b9);
    let mut random = |len: usize| rng.bytes(len);
    file.write_all_at(&random(3 << 20), 0).unwrap();
    file.write_all_at(&vec![0u8; 2 << 20], 5 << 20).unwrap(); // written zeroes
    file.write_all_at(&random(1 << 20), 9 << 20).unwrap();
    file.write_all_at(&random(4096 + 7), size - 4096 - 7).unwrap(); // unaligned tail
    path
}

/// A qcow2 overlay with compressed clusters over a raw-derived base.
fn qcow2_image(dir: &Path, raw: &Path) -> PathBuf {
    let base = dir.join("base.qcow2");
    compressed_qcow2(raw, &base);
    let overlay = dir.join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        overlay.to_str().unwrap(),
    ]);
    let io = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 1M 512k", "-c", "write -z 9M 64k"])
        .arg(&overlay)
        .output()
        .expect("qemu-io (Debian qemu-utils)");
    assert!(io.status.success(), "qemu-io: {}", String::from_utf8_lossy(&io.stderr));
    overlay
}

/// What the image holds, flattened by qemu-img.
fn flattened(dir: &Path, image: &Path) -> Vec<u8> {
    let out = dir.join("flat.raw");
    qemu_img(&["convert", "-O", "raw", image.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

async fn disk_at(addr: SocketAddr) -> Disk {
    let config = InitiatorConfig::new("iqn.2024-01.test.write:init", Some(IQN.into()), Isid::random([6; 6]));
    let session = Session::connect(addr, config, Duration::from_secs(10)).await.unwrap();
    Disk::probe(vec![Arc::new(session)], Lun::from_index(1)).await.unwrap()
}

async fn write_and_compare(addr: SocketAddr, backing: &Path, dir: &Path, image: &Path) {
    // Fill the disk with junk so that zero runs must really be zeroed.
    std::fs::write(backing, vec![0xee; DISK as usize]).unwrap();
    let disk = disk_at(addr).await;
    let source = source::open(image, &OpenOptions::default()).unwrap();
    let size = source.size();
    let report = write_image(&disk, source, &WriteOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.zero_bytes > 0 && report.data_bytes > 0, "{report:?}");
    assert!(
        report.data_bytes < size,
        "zero runs must not travel as data: {report:?}"
    );
    let expected = flattened(dir, image);
    let on_disk = std::fs::read(backing).unwrap();
    let end = size as usize;
    assert!(
        on_disk[..expected.len().min(end)] == expected[..expected.len().min(end)],
        "the disk differs from the image"
    );
    // Past the image (and its padded last block), the disk is untouched.
    let padded = end.div_ceil(512) * 512;
    assert!(
        on_disk[padded..].iter().all(|&b| b == 0xee),
        "bytes past the image were written"
    );
}

async fn exercise(addr: SocketAddr, backing: &Path) {
    let dir = TempDir::new().unwrap();
    let raw = raw_image(dir.path());
    write_and_compare(addr, backing, dir.path(), &raw).await;
    let qcow2 = qcow2_image(dir.path(), &raw);
    write_and_compare(addr, backing, dir.path(), &qcow2).await;

    // An image larger than the disk: refused before anything is written.
    std::fs::write(backing, vec![0xee; DISK as usize]).unwrap();
    let big = dir.path().join("big.qcow2");
    qemu_img(&["create", "-f", "qcow2", big.to_str().unwrap(), "1G"]);
    let disk = disk_at(addr).await;
    let err = write_image(
        &disk,
        source::open(&big, &OpenOptions::default()).unwrap(),
        &WriteOptions::default(),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, WriteError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"));
    assert!(std::fs::read(backing).unwrap().iter().all(|&b| b == 0xee));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_onto_target_agent() {
    let backing = tempfile::NamedTempFile::new().unwrap();
    backing.as_file().set_len(DISK).unwrap();
    let agent = TargetAgent::start(backing.path(), IQN);
    exercise(agent.addr().parse().unwrap(), backing.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_onto_tgtd() {
    let backing = tempfile::NamedTempFile::new().unwrap();
    backing.as_file().set_len(DISK).unwrap();
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, backing.path());
    exercise(tgtd.addr().parse().unwrap(), backing.path()).await;
}

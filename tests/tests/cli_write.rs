//! The `conductor-writer` command line against target-agent and tgtd: what
//! a user runs, with exit codes, messages and the disk checked after each.

// Test code: an unwrap that fails is a test that fails, with its message.
#![allow(clippy::unwrap_used)]

use integration_tests::agent::TargetAgent;
use integration_tests::tgtd::Tgtd;
use integration_tests::{compressed_qcow2, qemu_img};
use integration_tests::{conductor_writer as writer, output_text as text};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::{NamedTempFile, TempDir};

const IQN: &str = "iqn.2024-01.test.cli:disk";
const DISK: u64 = 48 << 20;
const JUNK: u8 = 0xee;

fn junk_disk() -> NamedTempFile {
    let disk = NamedTempFile::new().unwrap();
    std::fs::write(disk.path(), vec![JUNK; DISK as usize]).unwrap();
    disk
}

fn untouched(disk: &Path) -> bool {
    std::fs::read(disk).unwrap().iter().all(|&b| b == JUNK)
}

/// A raw image with data, a hole and an odd size.
fn raw_image(dir: &Path) -> PathBuf {
    let path = dir.join("image.raw");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len((12 << 20) + 100).unwrap();
    let data: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    file.write_all_at(&data, 0).unwrap();
    file.write_all_at(&data[..1 << 20], 8 << 20).unwrap();
    path
}

fn same_as_image(disk: &Path, flat: &[u8]) -> bool {
    let on_disk = std::fs::read(disk).unwrap();
    on_disk[..flat.len()] == flat[..]
}

fn url(addr: &str) -> String {
    format!("iscsi://{addr}/{IQN}/1")
}

#[test]
fn write_verify_and_refusals_against_target_agent() {
    let dir = TempDir::new().unwrap();
    let image = raw_image(dir.path());
    let flat = std::fs::read(&image).unwrap();
    let disk = junk_disk();
    let agent = TargetAgent::start(disk.path(), IQN);
    let url = url(&agent.addr());
    let image_arg = image.to_str().unwrap();

    // Everything that must fail before a block is written.
    let bad_sum = format!("sha256:{}", "0".repeat(64));
    let out = writer(&["write", image_arg, &url, "--checksum", &bad_sum]);
    assert!(
        !out.status.success() && text(&out).contains("checksum mismatch"),
        "{}",
        text(&out)
    );
    let out = writer(&[
        "write",
        image_arg,
        &format!("iscsi://{}/iqn.2024-01.test.cli:nothing/1", agent.addr()),
    ]);
    assert!(
        !out.status.success() && text(&out).contains("Target not found"),
        "{}",
        text(&out)
    );
    let big = dir.path().join("big.qcow2");
    qemu_img(&["create", "-f", "qcow2", big.to_str().unwrap(), "1G"]);
    let out = writer(&["write", big.to_str().unwrap(), &url]);
    assert!(
        !out.status.success() && text(&out).contains("nothing was written"),
        "{}",
        text(&out)
    );
    let corrupt = dir.path().join("corrupt.qcow2");
    let mut bytes = b"QFI\xfb\x00\x00\x00\x03".to_vec();
    bytes.extend(std::iter::repeat_n(0xa5u8, 200));
    std::fs::write(&corrupt, bytes).unwrap();
    let out = writer(&["write", corrupt.to_str().unwrap(), &url]);
    assert!(!out.status.success(), "{}", text(&out));
    let vhdx = dir.path().join("disk.vhdx");
    qemu_img(&["create", "-f", "vhdx", vhdx.to_str().unwrap(), "1M"]);
    let out = writer(&["write", vhdx.to_str().unwrap(), &url]);
    assert!(
        !out.status.success() && text(&out).contains("qemu-img convert"),
        "{}",
        text(&out)
    );
    let base = dir.path().join("base.qcow2");
    qemu_img(&["create", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    let top = dir.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    let out = writer(&["write", top.to_str().unwrap(), &url, "--no-backing-files"]);
    assert!(
        !out.status.success() && text(&out).contains("backing files are refused"),
        "{}",
        text(&out)
    );
    assert!(untouched(disk.path()), "a refused write changed the disk");

    // A good write, verified, with the right checksum.
    let sha = Command::new("sha256sum").arg(&image).output().unwrap();
    let sum = format!("sha256:{}", &String::from_utf8_lossy(&sha.stdout)[..64]);
    let out = writer(&["write", image_arg, &url, "--verify", "--checksum", &sum]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("wrote ") && line.contains("MiB/s") && line.contains("verified"),
        "{line}"
    );
    assert!(same_as_image(disk.path(), &flat));

    // verify catches a corrupted disk, and says where.
    let file = std::fs::OpenOptions::new().write(true).open(disk.path()).unwrap();
    file.write_all_at(&[!flat[3_000_000]], 3_000_000).unwrap();
    file.sync_all().unwrap();
    let out = writer(&["verify", image_arg, &url]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("at byte 3000000"), "{}", text(&out));

    // Several sessions at once land the same bytes.
    std::fs::write(disk.path(), vec![JUNK; DISK as usize]).unwrap();
    let out = writer(&[
        "write",
        image_arg,
        &url,
        "--sessions",
        "3",
        "--queue-depth",
        "8",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(same_as_image(disk.path(), &flat));

    // JSON and discovery.
    let out = writer(&["write", image_arg, &url, "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains("\"data_bytes\":") && json.contains("\"zero_bytes\":"),
        "{json}"
    );
    let out = writer(&["discover", &agent.addr()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(IQN), "{}", text(&out));
    let out = writer(&["inquiry", &url, "--json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"block_size\":512"),
        "{}",
        text(&out)
    );
}

#[test]
fn qcow2_onto_tgtd() {
    let dir = TempDir::new().unwrap();
    let raw = raw_image(dir.path());
    let image = dir.path().join("image.qcow2");
    compressed_qcow2(&raw, &image);
    let flat = std::fs::read(&raw).unwrap();
    let disk = junk_disk();
    let tgtd = Tgtd::start();
    tgtd.add_target(1, IQN, disk.path());
    let out = writer(&["write", image.to_str().unwrap(), &url(&tgtd.addr()), "--verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(same_as_image(disk.path(), &flat[..flat.len() / 512 * 512]));
}

#[test]
fn notify_sends_done() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = std::thread::spawn(move || writer(&["notify", "127.0.0.1", "--port", &port]));
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"done");
    assert!(out.join().unwrap().status.success());
    let closed = writer(&["notify", "127.0.0.1", "--port", "1"]);
    assert!(
        !closed.status.success() && text(&closed).contains("deploy ramdisk"),
        "{}",
        text(&closed)
    );
}
